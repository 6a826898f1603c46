// Package hostlogs keeps the logs hosts send before they are rebuilt, so a
// failed or quarantined host can be examined after the fact. Logs arrive
// over HTTP (POST /api/v1/hosts/{name}/logs) or syslog (UDP) and are kept
// under DIR/logs/<host>/ with a size cap per host: at the cap the current
// file becomes log.1.txt, replacing the previous one.
//
// It stores bytes and never interprets them beyond a syslog line's priority.
package hostlogs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/phoenixboot/phoenix/boot/httpboot"
)

// DefaultMaxBytes is the default cap of one host's current log file.
const DefaultMaxBytes = 8 << 20

// maxPost caps one HTTP upload.
const maxPost = 1 << 20

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// ErrUnknownHost is returned for logs of a host the fleet does not know.
var ErrUnknownHost = errors.New("unknown host")

// Store appends host logs under Dir. The zero value is not usable: set Dir.
type Store struct {
	// Dir is DIR/logs.
	Dir string
	// MaxBytes caps log.txt per host; at the cap it becomes log.1.txt
	// (replacing the previous one). Zero means DefaultMaxBytes.
	MaxBytes int64
	// Known reports whether a host name belongs to the fleet; nil accepts
	// any well-formed name.
	Known func(host string) bool
	// HostOf maps a syslog sender's address to a host name.
	HostOf func(ip net.IP) (string, bool)
	Log    *slog.Logger

	mu sync.Mutex
}

// Append adds data to host's log.
func (s *Store) Append(host string, data []byte) error {
	if !nameRE.MatchString(host) {
		return fmt.Errorf("host %q: bad name", host)
	}
	if s.Known != nil && !s.Known(host) {
		return fmt.Errorf("host %s: %w", host, ErrUnknownHost)
	}
	limit := s.MaxBytes
	if limit <= 0 {
		limit = DefaultMaxBytes
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := filepath.Join(s.Dir, host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cur := filepath.Join(dir, "log.txt")
	if fi, err := os.Stat(cur); err == nil && fi.Size()+int64(len(data)) > limit {
		if err := os.Rename(cur, filepath.Join(dir, "log.1.txt")); err != nil {
			return err
		}
	}
	if int64(len(data)) > limit {
		data = data[int64(len(data))-limit:]
	}
	f, err := os.OpenFile(cur, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Read returns host's kept log (previous file first), at most max bytes
// from the end.
func (s *Store) Read(host string, max int64) ([]byte, error) {
	var buf bytes.Buffer
	err := s.Copy(&buf, host, max)
	return buf.Bytes(), err
}

// Copy writes host's kept log (previous file first), at most max bytes
// from the end, to w. It streams from the files, so a slow reader holds
// two open files, not a copy of the log.
func (s *Store) Copy(w io.Writer, host string, max int64) error {
	if !nameRE.MatchString(host) {
		return fmt.Errorf("host %q: bad name", host)
	}
	// The files are opened, and their sizes taken, under the lock: a
	// rotation afterwards renames them, and the open files still read
	// what they held.
	s.mu.Lock()
	var readers []io.Reader
	var total int64
	for _, name := range []string{"log.1.txt", "log.txt"} {
		f, err := os.Open(filepath.Join(s.Dir, host, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			s.mu.Unlock()
			return err
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			s.mu.Unlock()
			return err
		}
		readers = append(readers, io.LimitReader(f, fi.Size()))
		total += fi.Size()
	}
	s.mu.Unlock()
	r := io.MultiReader(readers...)
	if max > 0 && total > max {
		if _, err := io.CopyN(io.Discard, r, total-max); err != nil {
			return err
		}
	}
	_, err := io.Copy(w, r)
	return err
}

// Register adds POST (hosts, no token: they hold none) and GET routes.
func (s *Store) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/v1/hosts/{name}/logs", s.post)
	mux.HandleFunc("GET /api/v1/hosts/{name}/logs", s.get)
}

func (s *Store) post(w http.ResponseWriter, r *http.Request) {
	if httpboot.FromBrowser(r) {
		http.Error(w, "logs come from hosts, not from web pages", http.StatusForbidden)
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPost))
	if err != nil {
		http.Error(w, "log upload too large or cut: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	stamp := fmt.Sprintf("--- %s from %s (http, %d bytes)\n", time.Now().UTC().Format(time.RFC3339), r.RemoteAddr, len(data))
	if err := s.Append(r.PathValue("name"), append([]byte(stamp), data...)); err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, ErrUnknownHost) {
			status = http.StatusNotFound
		}
		http.Error(w, err.Error(), status)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Store) get(w http.ResponseWriter, r *http.Request) {
	max, _ := strconv.ParseInt(r.URL.Query().Get("tail"), 10, 64)
	host := r.PathValue("name")
	if !nameRE.MatchString(host) {
		http.Error(w, fmt.Sprintf("host %q: bad name", host), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := s.Copy(w, host, max); err != nil && s.Log != nil {
		s.Log.Warn("host log read", "host", host, "err", err) // mid-answer: no status to give
	}
}

// ParseSyslog extracts the facility/severity priority and message of one
// RFC 3164 or RFC 5424 datagram. Anything else is kept whole with pri -1.
func ParseSyslog(b []byte) (pri int, msg []byte) {
	if len(b) < 3 || b[0] != '<' {
		return -1, b
	}
	end := -1
	for i := 1; i < len(b) && i <= 4; i++ {
		if b[i] == '>' {
			end = i
			break
		}
		if b[i] < '0' || b[i] > '9' {
			return -1, b
		}
	}
	if end < 2 {
		return -1, b
	}
	p, err := strconv.Atoi(string(b[1:end]))
	if err != nil || p > 191 {
		return -1, b
	}
	return p, b[end+1:]
}

// ServeSyslog stores syslog datagrams from pc under their sender's host
// until ctx is done; it closes pc. Datagrams from unknown senders are
// counted and dropped.
func (s *Store) ServeSyslog(ctx context.Context, pc net.PacketConn) error {
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer stop()
	buf := make([]byte, 64<<10)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("syslog: %w", err)
		}
		ua, ok := addr.(*net.UDPAddr)
		if !ok || s.HostOf == nil {
			continue
		}
		host, ok := s.HostOf(ua.IP)
		if !ok {
			if s.Log != nil {
				s.Log.Debug("syslog from unknown sender dropped", "ip", ua.IP.String())
			}
			continue
		}
		_, msg := ParseSyslog(buf[:n])
		line := append([]byte(time.Now().UTC().Format(time.RFC3339)+" "), msg...)
		if len(line) == 0 || line[len(line)-1] != '\n' {
			line = append(line, '\n')
		}
		if err := s.Append(host, line); err != nil && s.Log != nil {
			s.Log.Warn("syslog: store", "host", host, "err", err)
		}
	}
}
