package httpboot

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"regexp"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/phoenixboot/phoenix/boot/ipxe"
)

// reportBody is the JSON a booted host posts to /api/v1/report. Unknown
// fields are ignored so that newer hosts can say more to older servers.
type reportBody struct {
	MAC    string `json:"mac"`
	Digest string `json:"digest"`
	BootID string `json:"boot_id"`
	Host   string `json:"host"`
	// Error reports a failed boot: digest is then the image it tried.
	Error string `json:"error"`
}

// maxReportError bounds a failure's text: a reason, not a log.
const maxReportError = 512

var (
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	bootIDRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,64}$`)
)

// parseReport decodes and validates one report body: mac and digest are
// required, boot_id and host optional but checked when present, since all
// four end up in logs, the state store and the dashboard.
func parseReport(r io.Reader) (Report, error) {
	dec := json.NewDecoder(r)
	var b reportBody
	if err := dec.Decode(&b); err != nil {
		return Report{}, fmt.Errorf("decode report: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Report{}, errors.New("decode report: data after the JSON object")
	}
	if b.MAC == "" {
		return Report{}, errors.New("report: mac is required")
	}
	mac, err := parseMAC(b.MAC)
	if err != nil {
		return Report{}, fmt.Errorf("report: %w", err)
	}
	if b.Digest == "" {
		return Report{}, errors.New("report: digest is required")
	}
	if !digestRE.MatchString(b.Digest) {
		return Report{}, fmt.Errorf("report: bad digest %q: want sha256:<64 lowercase hex digits>", b.Digest)
	}
	if b.BootID != "" && !bootIDRE.MatchString(b.BootID) {
		return Report{}, fmt.Errorf("report: bad boot_id %q: want 1-64 of [A-Za-z0-9-]", b.BootID)
	}
	if b.Host != "" {
		if err := ipxe.CheckHost(b.Host); err != nil {
			return Report{}, fmt.Errorf("report: %w", err)
		}
	}
	if err := checkReportError(b.Error); err != nil {
		return Report{}, err
	}
	return Report{MAC: mac, Host: b.Host, Digest: b.Digest, BootID: b.BootID, Error: b.Error}, nil
}

// checkReportError accepts a failure's text only if it is short, valid
// UTF-8 and free of control characters: it reaches logs, the state store's
// events and the dashboard as it is.
func checkReportError(e string) error {
	if len(e) > maxReportError {
		return fmt.Errorf("report: error is %d bytes, at most %d", len(e), maxReportError)
	}
	if !utf8.ValidString(e) {
		return errors.New("report: error is not UTF-8")
	}
	for _, r := range e {
		if unicode.IsControl(r) {
			return fmt.Errorf("report: error holds control character %U", r)
		}
	}
	return nil
}

// FromNetworks passes to h only requests from an address inside nets
// and answers 403 to the others; with nets empty it returns h. serve puts
// the routes hosts post to without a token (reports, logs) behind it when
// the operator names the networks hosts live on (--host-networks).
func FromNetworks(nets []netip.Prefix, h http.Handler) http.Handler {
	if len(nets) == 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip, err := netip.ParseAddr(remoteIP(r))
		if err == nil {
			ip = ip.Unmap()
			for _, n := range nets {
				if n.Contains(ip) {
					h.ServeHTTP(w, r)
					return
				}
			}
		}
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "not from a host network (--host-networks)"})
	})
}

// FromBrowser reports whether r was sent by a web browser on behalf of a
// page (it carries Origin or Sec-Fetch-Site, which browsers add and
// scripts cannot remove). Routes that hosts post to without a token
// refuse such requests: otherwise any web page an operator opens could
// post forged reports or logs to phoenix through the operator's browser
// (a form or no-cors fetch needs no permission). Hosts' own clients
// (wget, curl, agents) send neither header.
func FromBrowser(r *http.Request) bool {
	return r.Header.Get("Origin") != "" || r.Header.Get("Sec-Fetch-Site") != ""
}

func (s *Server) serveReport(w http.ResponseWriter, r *http.Request) {
	log := s.log().With("ip", remoteIP(r))
	if FromBrowser(r) {
		log.Warn("report refused: sent by a web browser", "origin", r.Header.Get("Origin"))
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "reports come from hosts, not from web pages"})
		return
	}
	// The server has no ReadTimeout (it would apply to downloads' requests
	// too), so bound this body's arrival here. Not every ResponseWriter
	// supports deadlines; without one the size limit still holds.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(30 * time.Second))
	rep, err := parseReport(http.MaxBytesReader(w, r.Body, maxReportBytes))
	if err != nil {
		status := http.StatusBadRequest
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			status = http.StatusRequestEntityTooLarge
		}
		log.Warn("bad report", "err", err)
		writeJSON(w, status, map[string]string{"error": err.Error()})
		return
	}
	rep.RemoteAddr = r.RemoteAddr
	rep.Time = time.Now()
	log = log.With("mac", rep.MAC.String(), "host", rep.Host, "digest", rep.Digest, "bootid", rep.BootID)
	if rep.Error != "" {
		log = log.With("error", rep.Error)
	}
	status := "logged" // nowhere to record it: the log line is all there is
	if s.Recorder != nil {
		if err := s.Recorder.RecordReport(r.Context(), rep); err != nil {
			log.Error("record report", "err", err)
			writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "report not recorded"})
			return
		}
		status = "recorded"
	}
	if rep.Error != "" {
		log.Warn("boot failure reported")
	} else {
		log.Info("report received")
	}
	s.emit(Event{Kind: EventReport, Time: rep.Time, MAC: rep.MAC, Host: rep.Host, Digest: rep.Digest,
		BootID: rep.BootID, RemoteAddr: rep.RemoteAddr, Status: http.StatusOK, Detail: rep.Error})
	writeJSON(w, http.StatusOK, map[string]string{"status": status})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
