package fleet

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/phoenixboot/phoenix/boot/httpboot"
	"github.com/phoenixboot/phoenix/images"
)

type fakeImages map[string]images.Image

func (f fakeImages) Resolve(ref string) (images.Image, error) {
	img, ok := f[ref]
	if !ok {
		return images.Image{}, images.ErrNotFound
	}
	return img, nil
}

func TestAPIHostStates(t *testing.T) {
	hosts, err := ParseHosts([]byte(`hosts:
- {name: ready, macs: ["52:54:00:00:00:01"], image: demo:1}
- {name: drift, macs: ["52:54:00:00:00:02"], image: demo:1}
- {name: pending, macs: ["52:54:00:00:00:03"], image: demo:1}
- {name: bad, macs: ["52:54:00:00:00:04"], image: nope:1}
`))
	if err != nil {
		t.Fatal(err)
	}
	store, err := OpenStore(filepath.Join(t.TempDir(), "phoenix.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for mac, digest := range map[string]string{"52:54:00:00:00:01": "sha256:aa", "52:54:00:00:00:02": "sha256:bb"} {
		hw, _ := net.ParseMAC(mac)
		if err := store.RecordReport(context.Background(), httpboot.Report{MAC: hw, Digest: digest, Time: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	api := &API{Hosts: hosts, Store: store, Images: fakeImages{"demo:1": {Name: "demo", Version: "1", Digest: "sha256:aa"}}}
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/v1/hosts")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got []HostStatus
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ready": StateReady, "drift": StateDrift, "pending": StatePending, "bad": StateBadImage}
	if len(got) != len(want) {
		t.Fatalf("got %d hosts", len(got))
	}
	for _, h := range got {
		if h.State != want[h.Name] {
			t.Errorf("%s: state %q, want %q", h.Name, h.State, want[h.Name])
		}
	}
}

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
