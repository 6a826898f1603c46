package httpboot

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestBootFile(t *testing.T) {
	dir := t.TempDir()
	efi := filepath.Join(dir, "snponly.efi")
	os.WriteFile(efi, []byte("MZ efi program"), 0o644)
	os.WriteFile(filepath.Join(dir, "secret"), []byte("secret"), 0o600)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	var events []Event
	s := &Server{
		BootFiles: map[string]string{"snponly.efi": efi, "gone.efi": filepath.Join(dir, "gone.efi"), "sub": filepath.Join(dir, "sub")},
		OnEvent:   func(e Event) { events = append(events, e) },
	}
	h := s.Handler()
	get := func(target string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", target, nil)
		req.RemoteAddr = "10.0.0.100:1234"
		h.ServeHTTP(rec, req)
		return rec
	}

	rec := get("/ipxe/snponly.efi")
	if rec.Code != http.StatusOK || rec.Body.String() != "MZ efi program" || rec.Header().Get("Content-Type") != "application/efi" {
		t.Fatalf("GET snponly.efi: %d %q %q", rec.Code, rec.Header().Get("Content-Type"), rec.Body.String())
	}
	if len(events) != 1 || events[0].Kind != EventBootFile || events[0].Detail != "snponly.efi" || events[0].Status != 0 ||
		events[0].RemoteAddr != "10.0.0.100:1234" {
		t.Fatalf("events %+v", events)
	}

	// Only the configured names exist: nothing else in the directory, no
	// traversal, and a configured file that went away or is a directory is
	// a 404 too (with an event, so the boot timeline shows the failure).
	for _, target := range []string{"/ipxe/secret", "/ipxe/..%2fsecret", "/ipxe/../ipxe/snponly.efi", "/ipxe/", "/ipxe/gone.efi", "/ipxe/sub"} {
		events = nil
		if rec := get(target); rec.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", target, rec.Code)
		}
		for _, e := range events {
			if e.Kind != EventBootFile || e.Status != http.StatusNotFound {
				t.Errorf("GET %s: event %+v", target, e)
			}
		}
	}
	zero := httptest.NewRecorder()
	(&Server{}).Handler().ServeHTTP(zero, httptest.NewRequest("GET", "/ipxe/snponly.efi", nil))
	if zero.Code != http.StatusNotFound {
		t.Errorf("zero server: %d, want 404", zero.Code)
	}
}
