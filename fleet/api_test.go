package fleet

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), TokenFile)
	tok, err := LoadOrCreateToken(path)
	if err != nil || len(tok) != 64 {
		t.Fatalf("token %q, %v", tok, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("token mode %v", fi.Mode())
	}
	again, _ := LoadOrCreateToken(path)
	if again != tok {
		t.Fatal("token changed on reload")
	}
	// A token whose mode was lost (restored from a backup) is made private.
	os.Chmod(path, 0o644)
	if again, err := LoadOrCreateToken(path); err != nil || again != tok {
		t.Fatalf("reload of a 0644 token: %q, %v", again, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("token mode after reload %v, want 0600", fi.Mode())
	}
	h := RequireToken(tok, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	for _, tc := range []struct {
		method, auth string
		want         int
	}{
		{"GET", "", 204}, {"POST", "", 401}, {"POST", "Bearer nope", 401}, {"DELETE", "Bearer " + tok, 204},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(tc.method, "/api/v1/x", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s %q: %d, want %d", tc.method, tc.auth, rec.Code, tc.want)
		}
	}
}
