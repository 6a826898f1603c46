// Package httpboot is phoenix's boot HTTP server: it hands iPXE a per-host
// script, serves the content-addressed artifacts that script fetches (kernel,
// initrd, rootfs, disk image, with Range and HEAD), and takes the phone-home
// report a booted host sends.
//
// It does not decide which image a host should run, does not store reports
// and does not manage images: those come in through the small Hosts, Images
// and Recorder interfaces, satisfied by the fleet and the image store. It
// never buffers an artifact: blobs go from the file to the socket (sendfile
// where the platform has it), so a slow client costs a connection, not memory.
package httpboot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/phoenixboot/phoenix/images"
)

// Hosts answers which image a MAC should boot (a hosts file today, the fleet
// controller later). A known host with an empty imageRef boots from its local
// disk.
type Hosts interface {
	Lookup(mac net.HardwareAddr) (host string, imageRef string, ok bool)
}

// Images resolves image references and locates blobs (satisfied by
// *images.Store).
type Images interface {
	Resolve(ref string) (images.Image, error)
	BlobPath(digest string) (string, error)
}

// Report is what a booted host says it runs.
type Report struct {
	MAC        net.HardwareAddr
	Host       string // as the host reported it; may be empty
	Digest     string // manifest digest of the image it runs, sha256:<hex>
	BootID     string // the phoenix.bootid its script carried; may be empty
	RemoteAddr string // host:port the report came from
	Time       time.Time
	// Error, when set, says the boot failed and why (an installer that
	// could not write its disk, say): the host does not run Digest, it
	// tried to. Such a report ends the attempt at once instead of at its
	// deadline.
	Error string
}

// Recorder stores reports and discovered (unknown) MACs (satisfied by the
// fleet store).
type Recorder interface {
	RecordReport(ctx context.Context, r Report) error
	RecordDiscovered(ctx context.Context, mac net.HardwareAddr, remoteAddr string) error
}

// EventKind says what an Event is about.
type EventKind string

// Event kinds, in the order a boot produces them.
const (
	EventBootFile EventKind = "boot-file" // a UEFI HTTP boot client asked for its boot program
	EventUnknown  EventKind = "unknown"   // an unknown MAC asked for a script
	EventScript   EventKind = "script"    // a boot, local-boot or error script was served
	EventBlob     EventKind = "blob"      // a blob request was answered
	EventReport   EventKind = "report"    // a report was accepted
)

// Event is one step of a boot as seen by the server, for boot timelines.
// Fields that do not apply to a kind are zero.
type Event struct {
	Kind       EventKind
	Time       time.Time
	MAC        net.HardwareAddr
	Host       string
	Image      string // NAME:VERSION
	Digest     string // manifest digest for scripts and reports, blob digest for blobs
	BootID     string
	RemoteAddr string
	// Status is the HTTP status of the response, or 0 for a blob that was
	// handed to http.ServeContent (200, 206, 304 or 416): seeing it would
	// mean wrapping the ResponseWriter on the sendfile path.
	Status int
	Detail string // e.g. "local", the error of an error script, a blob request's Range, a boot file's name, or a failure report's error
}

// Server serves boot scripts, blobs and reports. The zero value serves only
// "unknown host" scripts and 404s for blobs; fill in Hosts and Images to boot
// anything.
type Server struct {
	// Hosts maps a MAC to its host and image; nil knows no host.
	Hosts Hosts
	// Images resolves image refs and blobs; nil has none.
	Images Images
	// Recorder stores reports and discovered MACs; nil only logs them.
	Recorder Recorder
	// BaseURL is how hosts reach this server, e.g. "http://10.99.0.1:8080",
	// used for artifact URLs and phoenix.server=. Empty means "http://" plus
	// the Host header of each request, which is right for a single address
	// but lets a client pick the name it is sent back.
	BaseURL string
	// Log receives one line per request that matters; nil discards.
	Log *slog.Logger
	// BootFiles maps the names served under /ipxe/ to files: the network
	// boot programs (iPXE binaries) UEFI HTTP boot clients fetch. Nil
	// serves none.
	BootFiles map[string]string
	// OnEvent, if set, is called synchronously for every script, boot
	// file, blob and report served, so it must be cheap and must not block.
	OnEvent func(Event)
}

const (
	maxReportBytes = 64 << 10
	// blobCacheControl: a blob's URL names its content, so it never changes.
	blobCacheControl = "public, max-age=31536000, immutable"
)

var hexRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

func (s *Server) emit(e Event) {
	if s.OnEvent == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	s.OnEvent(e)
}

// Handler returns the server's routes:
//
//	GET  /boot.ipxe?mac=MAC      the host's iPXE script
//	GET  /boot/MAC.ipxe          the same, for clients that cannot send a query
//	GET  /ipxe/FILE              a boot program for UEFI HTTP boot (BootFiles)
//	GET  /blobs/sha256/HEX       an artifact (HEAD and Range too)
//	POST /api/v1/report          a booted host's phone-home (JSON)
//	GET  /healthz                "ok"
//
// A request whose path is not clean (dot segments, doubled slashes) gets a
// 404 instead of the ServeMux's redirect, so no traversal attempt is ever
// followed anywhere.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /boot.ipxe", func(w http.ResponseWriter, r *http.Request) {
		s.serveScript(w, r, r.URL.Query().Get("mac"))
	})
	mux.HandleFunc("GET /boot/{file}", func(w http.ResponseWriter, r *http.Request) {
		mac, ok := strings.CutSuffix(r.PathValue("file"), ".ipxe")
		if !ok {
			http.NotFound(w, r)
			return
		}
		s.serveScript(w, r, mac)
	})
	mux.HandleFunc("GET /ipxe/{file}", s.serveBootFile)
	mux.HandleFunc("GET /blobs/sha256/{hex}", s.serveBlob)
	mux.HandleFunc("POST /api/v1/report", s.serveReport)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "" || p[0] != '/' || path.Clean(p) != p {
			http.NotFound(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// Serve serves s.Handler on ln until ctx is done; see ServeHandler.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return ServeHandler(ctx, ln, s.Handler(), s.log())
}

// ServeHandler serves h on ln until ctx is done, then shuts down
// gracefully, giving requests in flight 10 s before it closes their
// connections. It closes ln, and returns nil once ctx is done. phoenix
// serve runs its whole HTTP mux (boot routes, API, UI) through it.
//
// There is deliberately no WriteTimeout: it would cut a slow client's
// 1 GiB rootfs download short. Request headers must arrive within 10 s,
// so idle or stalled connections cannot pile up.
func ServeHandler(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(done)
		// ctx is already cancelled: a fresh deadline lets downloads in
		// flight finish instead of failing Shutdown at once.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("http shutdown: downloads still running were cut", "err", err)
			srv.Close()
		}
	})
	err := srv.Serve(ln) // closes ln
	if errors.Is(err, http.ErrServerClosed) {
		<-done
		return nil
	}
	stop()
	return fmt.Errorf("http serve: %w", err)
}

// baseURL is BaseURL without a trailing slash, or one built from the
// request's Host header (checked later by the script renderer).
func (s *Server) baseURL(r *http.Request) string {
	if s.BaseURL != "" {
		return strings.TrimRight(s.BaseURL, "/")
	}
	return (&url.URL{Scheme: "http", Host: r.Host}).String()
}

// parseMAC accepts only 6-byte (Ethernet) addresses in any form
// net.ParseMAC knows; iPXE's ${net0/mac} is aa:bb:cc:dd:ee:ff.
func parseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("bad mac %q: %w", s, err)
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("bad mac %q: want 6 bytes, got %d", s, len(mac))
	}
	return mac, nil
}

func newBootID() string {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand panics instead)
	return hex.EncodeToString(b[:])
}

// blobURL maps an artifact digest to the URL this server serves it at.
func blobURL(base, digest string) (string, error) {
	h, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || !hexRE.MatchString(h) {
		return "", fmt.Errorf("bad artifact digest %q", digest)
	}
	return base + "/blobs/sha256/" + h, nil
}

func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request) {
	h := r.PathValue("hex")
	digest := "sha256:" + h
	log := s.log().With("digest", digest, "ip", remoteIP(r))
	ev := Event{Kind: EventBlob, Digest: digest, RemoteAddr: r.RemoteAddr, Detail: r.Header.Get("Range")}
	f, fi, asked := s.openBlob(h, log)
	if f == nil {
		http.NotFound(w, r)
		if asked {
			ev.Status = http.StatusNotFound
			s.emit(ev)
		}
		return
	}
	defer f.Close()
	hdr := w.Header()
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("ETag", `"`+digest+`"`)
	hdr.Set("Cache-Control", blobCacheControl)
	// The *os.File goes to ServeContent unwrapped: net/http then copies it
	// with the connection's ReadFrom, which is sendfile on Linux.
	http.ServeContent(w, r, "", fi.ModTime(), f)
	s.emit(ev) // Status stays 0: see Event.Status
	log.Debug("blob served", "range", ev.Detail, "method", r.Method)
}

// openBlob opens the blob with hex digest h, or returns a nil file. asked
// reports whether the image store was asked: a name that is not a digest
// at all, or a server without images, is no missing blob of a boot.
func (s *Server) openBlob(h string, log *slog.Logger) (f *os.File, fi os.FileInfo, asked bool) {
	if !hexRE.MatchString(h) || s.Images == nil {
		return nil, nil, false
	}
	p, err := s.Images.BlobPath("sha256:" + h)
	if err != nil {
		if !errors.Is(err, images.ErrNotFound) {
			log.Warn("blob lookup failed", "err", err)
		}
		return nil, nil, true
	}
	if f, fi, err = openRegular(p); err != nil {
		log.Warn("blob unreadable", "err", err)
		return nil, nil, true
	}
	return f, fi, true
}

// openRegular opens the regular file at p for serving, with its FileInfo.
func openRegular(p string) (*os.File, os.FileInfo, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s: not a regular file", p)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

func remoteIP(r *http.Request) string { return hostOnly(r.RemoteAddr) }

// hostOnly is the address of a host:port string (the string itself when it
// has no port).
func hostOnly(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}
