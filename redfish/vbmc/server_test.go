package vbmc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// fakeSystem is an in-memory System: power and boot state without QEMU.
type fakeSystem struct {
	info SystemInfo

	mu     sync.Mutex
	power  string
	boot   BootOverride
	media  Media
	resets []string
}

func newFake(name, firmware string) *fakeSystem {
	mode := ModeLegacy
	if firmware == UEFI {
		mode = ModeUEFI
	}
	return &fakeSystem{
		info:  SystemInfo{Name: name, UUID: "00000000-0000-4000-8000-0000000000" + name[len(name)-2:], MAC: "52:54:00:00:00:01", Firmware: firmware, Memory: 512},
		power: PowerOff,
		boot:  BootOverride{Target: TargetNone, Enabled: OverrideDisabled, Mode: mode},
	}
}

func (f *fakeSystem) Info() SystemInfo { return f.info }
func (f *fakeSystem) PowerState(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.power, nil
}
func (f *fakeSystem) Reset(_ context.Context, t string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resets = append(f.resets, t)
	switch t {
	case ResetForceOff, ResetGracefulShutdown:
		f.power = PowerOff
	default:
		f.power = PowerOn
	}
	return nil
}
func (f *fakeSystem) resetLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.resets...)
}
func (f *fakeSystem) BootOverride() BootOverride {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.boot
}
func (f *fakeSystem) AllowedTargets() []string { return []string{TargetNone, TargetPxe, TargetCd} }
func (f *fakeSystem) SetBootOverride(b BootOverride) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.boot = b
	return nil
}
func (f *fakeSystem) Media() Media {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.media
}
func (f *fakeSystem) InsertMedia(_ context.Context, u string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.media.Inserted {
		return ErrMediaInserted
	}
	f.media = Media{Image: u, Inserted: true}
	return nil
}
func (f *fakeSystem) EjectMedia(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.media = Media{}
	return nil
}

const (
	testUser = "admin"
	testPass = "s3cret"
)

// newTestServer serves two fake systems on 127.0.0.1.
func newTestServer(t *testing.T) (*httptest.Server, *fakeSystem) {
	t.Helper()
	vm1 := newFake("vm01", BIOS)
	s := &Server{Systems: []System{vm1, newFake("vm02", UEFI)}, Username: testUser, Password: testPass}
	ts := httptest.NewUnstartedServer(s)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.Listener.Close()
	ts.Listener = ln
	ts.Start()
	t.Cleanup(ts.Close)
	return ts, vm1
}

type call struct {
	method, path, body string
	header             map[string]string
	noAuth             bool
}

func do(t *testing.T, ts *httptest.Server, c call) (*http.Response, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(c.method, ts.URL+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	if !c.noAuth {
		req.SetBasicAuth(testUser, testPass)
	}
	if c.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s %s: body is not JSON: %v: %s", c.method, c.path, err, b)
		}
	}
	return resp, out
}

// messageID returns the first MessageId of a Redfish error body.
func messageID(t *testing.T, body map[string]any) string {
	t.Helper()
	e, _ := body["error"].(map[string]any)
	info, _ := e["@Message.ExtendedInfo"].([]any)
	if len(info) == 0 {
		t.Fatalf("no error.@Message.ExtendedInfo in %v", body)
	}
	id, _ := info[0].(map[string]any)["MessageId"].(string)
	return strings.TrimPrefix(id, registryBase)
}

func TestAuth(t *testing.T) {
	ts, _ := newTestServer(t)
	tests := []struct {
		name   string
		c      call
		status int
	}{
		{"service root is open", call{method: "GET", path: "/redfish/v1/", noAuth: true}, 200},
		{"version document is open", call{method: "GET", path: "/redfish", noAuth: true}, 200},
		{"systems need credentials", call{method: "GET", path: "/redfish/v1/Systems", noAuth: true}, 401},
		{"wrong password", call{method: "GET", path: "/redfish/v1/Systems", noAuth: true, header: map[string]string{"Authorization": "Basic YWRtaW46bm9wZQ=="}}, 401},
		{"bogus session token", call{method: "GET", path: "/redfish/v1/Systems", noAuth: true, header: map[string]string{"X-Auth-Token": "nope"}}, 401},
		{"basic auth", call{method: "GET", path: "/redfish/v1/Systems"}, 200},
		{"reset without credentials", call{method: "POST", path: "/redfish/v1/Systems/vm01/Actions/ComputerSystem.Reset", body: `{"ResetType":"On"}`, noAuth: true}, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, ts, tt.c)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %v", resp.StatusCode, tt.status, body)
			}
			if tt.status == 401 {
				if id := messageID(t, body); id != "NoValidSession" {
					t.Errorf("MessageId %s", id)
				}
				if resp.Header.Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
			}
		})
	}
}

func TestSessions(t *testing.T) {
	ts, _ := newTestServer(t)
	resp, body := do(t, ts, call{method: "POST", path: "/redfish/v1/SessionService/Sessions", body: `{"UserName":"admin","Password":"wrong"}`, noAuth: true})
	if resp.StatusCode != 401 {
		t.Fatalf("login with a wrong password: %d %v", resp.StatusCode, body)
	}
	resp, body = do(t, ts, call{method: "POST", path: "/redfish/v1/SessionService/Sessions", body: `{"UserName":"admin"}`, noAuth: true})
	if resp.StatusCode != 400 || messageID(t, body) != "PropertyMissing" {
		t.Fatalf("login without a password: %d %v", resp.StatusCode, body)
	}
	resp, body = do(t, ts, call{method: "POST", path: "/redfish/v1/SessionService/Sessions/", body: `{"UserName":"admin","Password":"s3cret"}`, noAuth: true})
	if resp.StatusCode != 201 {
		t.Fatalf("login: %d %v", resp.StatusCode, body)
	}
	tok, loc := resp.Header.Get("X-Auth-Token"), resp.Header.Get("Location")
	if tok == "" || !strings.HasPrefix(loc, sessionsPath+"/") || body["@odata.id"] != loc {
		t.Fatalf("login: token %q location %q body %v", tok, loc, body)
	}
	auth := map[string]string{"X-Auth-Token": tok}
	if resp, _ := do(t, ts, call{method: "GET", path: "/redfish/v1/Systems/vm01", noAuth: true, header: auth}); resp.StatusCode != 200 {
		t.Fatalf("with session token: %d", resp.StatusCode)
	}
	if resp, body := do(t, ts, call{method: "GET", path: "/redfish/v1/SessionService/Sessions", noAuth: true, header: auth}); resp.StatusCode != 200 || body["Members@odata.count"] != 1.0 {
		t.Fatalf("sessions: %d %v", resp.StatusCode, body)
	}
	if resp, _ := do(t, ts, call{method: "DELETE", path: loc, noAuth: true, header: auth}); resp.StatusCode != 204 {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if resp, _ := do(t, ts, call{method: "GET", path: "/redfish/v1/Systems/vm01", noAuth: true, header: auth}); resp.StatusCode != 401 {
		t.Fatalf("after logout: %d", resp.StatusCode)
	}
}

func TestSessionTimeout(t *testing.T) {
	s := &Server{Username: testUser, Password: testPass, SessionTimeout: time.Millisecond}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("POST", sessionsPath, strings.NewReader(`{"UserName":"admin","Password":"s3cret"}`)))
	tok := w.Header().Get("X-Auth-Token")
	time.Sleep(5 * time.Millisecond)
	r := httptest.NewRequest("GET", "/redfish/v1/Systems", nil)
	r.Header.Set("X-Auth-Token", tok)
	w = httptest.NewRecorder()
	s.ServeHTTP(w, r)
	if w.Code != 401 {
		t.Fatalf("idle session still valid: %d", w.Code)
	}
}

// TestSystemGolden compares the ComputerSystem resource with
// testdata/system.golden.json (go test -update rewrites it).
func TestSystemGolden(t *testing.T) {
	ts, _ := newTestServer(t)
	resp, body := do(t, ts, call{method: "GET", path: "/redfish/v1/Systems/vm01"})
	if resp.StatusCode != 200 {
		t.Fatalf("%d %v", resp.StatusCode, body)
	}
	if resp.Header.Get("ETag") == "" || resp.Header.Get("ETag") != body["@odata.etag"] {
		t.Errorf("ETag header %q, @odata.etag %v", resp.Header.Get("ETag"), body["@odata.etag"])
	}
	got, _ := json.MarshalIndent(body, "", "  ")
	golden := filepath.Join("testdata", "system.golden.json")
	if *update {
		if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(want)) {
		t.Errorf("system resource differs from %s (-update to accept):\n%s", golden, got)
	}
}

func TestCollections(t *testing.T) {
	ts, _ := newTestServer(t)
	for _, p := range []string{"/redfish/v1/Systems", "/redfish/v1/Managers"} {
		resp, body := do(t, ts, call{method: "GET", path: p})
		if resp.StatusCode != 200 || body["Members@odata.count"] != 2.0 {
			t.Errorf("%s: %d %v", p, resp.StatusCode, body)
		}
	}
	for _, p := range []string{"/redfish/v1/Systems/nope", "/redfish/v1/Managers/nope", "/redfish/v1/Chassis", "/redfish/v1/Systems/vm01/Bios"} {
		resp, body := do(t, ts, call{method: "GET", path: p})
		if resp.StatusCode != 404 || messageID(t, body) != "ResourceMissingAtURI" {
			t.Errorf("%s: %d %v", p, resp.StatusCode, body)
		}
	}
	resp, body := do(t, ts, call{method: "DELETE", path: "/redfish/v1/Systems/vm01"})
	if resp.StatusCode != 405 || messageID(t, body) != "OperationNotAllowed" {
		t.Errorf("DELETE system: %d %v", resp.StatusCode, body)
	}
}

func TestPatchBoot(t *testing.T) {
	ts, vm := newTestServer(t)
	sysPath := "/redfish/v1/Systems/vm01"
	tests := []struct {
		name    string
		body    string
		ifMatch string // "current" sends the current ETag
		status  int
		msgID   string
		want    BootOverride
	}{
		{"pxe once", `{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once"}}`, "", 200, "",
			BootOverride{Target: TargetPxe, Enabled: OverrideOnce, Mode: ModeLegacy}},
		{"with the current etag", `{"Boot":{"BootSourceOverrideTarget":"Cd","BootSourceOverrideEnabled":"Continuous","BootSourceOverrideMode":"Legacy"}}`, "current", 200, "",
			BootOverride{Target: TargetCd, Enabled: OverrideContinuous, Mode: ModeLegacy}},
		{"stale etag", `{"Boot":{"BootSourceOverrideTarget":"Pxe"}}`, `W/"0123456789abcdef"`, 412, "PreconditionFailed",
			BootOverride{Target: TargetCd, Enabled: OverrideContinuous, Mode: ModeLegacy}},
		{"target not allowed", `{"Boot":{"BootSourceOverrideTarget":"Floppy"}}`, "", 400, "PropertyValueNotInList",
			BootOverride{Target: TargetCd, Enabled: OverrideContinuous, Mode: ModeLegacy}},
		{"mode of other firmware", `{"Boot":{"BootSourceOverrideMode":"UEFI"}}`, "", 400, "PropertyValueNotInList",
			BootOverride{Target: TargetCd, Enabled: OverrideContinuous, Mode: ModeLegacy}},
		{"unknown boot property", `{"Boot":{"BootNext":"0001"}}`, "", 400, "PropertyUnknown",
			BootOverride{Target: TargetCd, Enabled: OverrideContinuous, Mode: ModeLegacy}},
		{"read-only property", `{"PowerState":"On"}`, "", 400, "PropertyNotWritable",
			BootOverride{Target: TargetCd, Enabled: OverrideContinuous, Mode: ModeLegacy}},
		{"wrong type", `{"Boot":{"BootSourceOverrideTarget":7}}`, "", 400, "PropertyValueTypeError",
			BootOverride{Target: TargetCd, Enabled: OverrideContinuous, Mode: ModeLegacy}},
		{"malformed json", `{"Boot":`, "", 400, "MalformedJSON",
			BootOverride{Target: TargetCd, Enabled: OverrideContinuous, Mode: ModeLegacy}},
		{"http boot uri and disable", `{"Boot":{"BootSourceOverrideEnabled":"Disabled","HttpBootUri":"http://10.0.0.1/boot.ipxe"}}`, "*", 200, "",
			BootOverride{Target: TargetCd, Enabled: OverrideDisabled, Mode: ModeLegacy, HTTPBootURI: "http://10.0.0.1/boot.ipxe"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{}
			switch tt.ifMatch {
			case "":
			case "current":
				resp, _ := do(t, ts, call{method: "GET", path: sysPath})
				h["If-Match"] = resp.Header.Get("ETag")
			default:
				h["If-Match"] = tt.ifMatch
			}
			resp, body := do(t, ts, call{method: "PATCH", path: sysPath, body: tt.body, header: h})
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %v", resp.StatusCode, tt.status, body)
			}
			if tt.msgID != "" {
				if id := messageID(t, body); id != tt.msgID {
					t.Errorf("MessageId %s, want %s", id, tt.msgID)
				}
			} else {
				boot := body["Boot"].(map[string]any)
				if boot["BootSourceOverrideTarget"] != tt.want.Target {
					t.Errorf("answer shows target %v", boot["BootSourceOverrideTarget"])
				}
			}
			if got := vm.BootOverride(); got != tt.want {
				t.Errorf("override %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestETagChanges checks that an ETag read before a change no longer
// matches after it.
func TestETagChanges(t *testing.T) {
	ts, _ := newTestServer(t)
	sysPath := "/redfish/v1/Systems/vm01"
	resp, _ := do(t, ts, call{method: "GET", path: sysPath})
	old := resp.Header.Get("ETag")
	if resp, body := do(t, ts, call{method: "PATCH", path: sysPath, body: `{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once"}}`, header: map[string]string{"If-Match": old}}); resp.StatusCode != 200 {
		t.Fatalf("first PATCH: %d %v", resp.StatusCode, body)
	}
	resp, body := do(t, ts, call{method: "PATCH", path: sysPath, body: `{"Boot":{"BootSourceOverrideTarget":"Cd"}}`, header: map[string]string{"If-Match": old}})
	if resp.StatusCode != 412 {
		t.Fatalf("PATCH with the old ETag: %d %v", resp.StatusCode, body)
	}
}

func TestReset(t *testing.T) {
	ts, vm := newTestServer(t)
	action := "/redfish/v1/Systems/vm01/Actions/ComputerSystem.Reset"
	tests := []struct {
		body   string
		status int
		msgID  string
		power  string
	}{
		{`{"ResetType":"On"}`, 204, "", PowerOn},
		{`{"ResetType":"ForceOff"}`, 204, "", PowerOff},
		{`{"ResetType":"PowerCycle"}`, 204, "", PowerOn},
		{`{"ResetType":"GracefulShutdown"}`, 204, "", PowerOff},
		{`{"ResetType":"ForceRestart"}`, 204, "", PowerOn},
		{`{"ResetType":"GracefulRestart"}`, 204, "", PowerOn},
		{`{"ResetType":"Nmi"}`, 400, "ActionParameterValueNotInList", PowerOn},
		{`{"ResetType":1}`, 400, "ActionParameterValueNotInList", PowerOn},
		{`{}`, 400, "ActionParameterMissing", PowerOn},
		{`{"ResetType":"On","Delay":3}`, 400, "ActionParameterUnknown", PowerOn},
		{`[`, 400, "MalformedJSON", PowerOn},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			resp, body := do(t, ts, call{method: "POST", path: action, body: tt.body})
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %v", resp.StatusCode, tt.status, body)
			}
			if tt.msgID != "" && messageID(t, body) != tt.msgID {
				t.Errorf("MessageId %s, want %s", messageID(t, body), tt.msgID)
			}
			_, sys := do(t, ts, call{method: "GET", path: "/redfish/v1/Systems/vm01"})
			if sys["PowerState"] != tt.power {
				t.Errorf("PowerState %v, want %s", sys["PowerState"], tt.power)
			}
		})
	}
	if r := vm.resetLog(); len(r) != 6 {
		t.Errorf("backend saw %v", r)
	}
	if resp, _ := do(t, ts, call{method: "GET", path: action}); resp.StatusCode != 405 {
		t.Errorf("GET on the action: %d", resp.StatusCode)
	}
	// The allowable values are advertised where gofish looks for them.
	_, sys := do(t, ts, call{method: "GET", path: "/redfish/v1/Systems/vm01"})
	reset := sys["Actions"].(map[string]any)["#ComputerSystem.Reset"].(map[string]any)
	if reset["target"] != action || len(reset["ResetType@Redfish.AllowableValues"].([]any)) != len(ResetTypes) {
		t.Errorf("Reset action advertised as %v", reset)
	}
}

func TestVirtualMedia(t *testing.T) {
	ts, vm := newTestServer(t)
	cd := "/redfish/v1/Managers/vm01/VirtualMedia/CD1"
	_, mgr := do(t, ts, call{method: "GET", path: "/redfish/v1/Managers/vm01"})
	if mgr["VirtualMedia"].(map[string]any)["@odata.id"] != "/redfish/v1/Managers/vm01/VirtualMedia" {
		t.Fatalf("manager: %v", mgr)
	}
	_, coll := do(t, ts, call{method: "GET", path: "/redfish/v1/Managers/vm01/VirtualMedia"})
	if coll["Members"].([]any)[0].(map[string]any)["@odata.id"] != cd {
		t.Fatalf("collection: %v", coll)
	}
	steps := []struct {
		name, action, body string
		status             int
		msgID              string
		inserted           bool
	}{
		{"insert", "InsertMedia", `{"Image":"http://127.0.0.1:1/boot.iso","Inserted":true,"WriteProtected":true}`, 204, "", true},
		{"insert again", "InsertMedia", `{"Image":"http://127.0.0.1:1/other.iso"}`, 409, "ResourceInUse", true},
		{"eject", "EjectMedia", `{}`, 204, "", false},
		{"eject empty", "EjectMedia", ``, 204, "", false},
		{"file url", "InsertMedia", `{"Image":"file:///etc/shadow"}`, 400, "ActionParameterValueFormatError", false},
		{"no image", "InsertMedia", `{"Inserted":true}`, 400, "ActionParameterMissing", false},
		{"writable", "InsertMedia", `{"Image":"http://127.0.0.1:1/boot.iso","WriteProtected":false}`, 400, "ActionParameterValueNotInList", false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			resp, body := do(t, ts, call{method: "POST", path: cd + "/Actions/VirtualMedia." + st.action, body: st.body})
			if resp.StatusCode != st.status {
				t.Fatalf("status %d, want %d: %v", resp.StatusCode, st.status, body)
			}
			if st.msgID != "" && messageID(t, body) != st.msgID {
				t.Errorf("MessageId %s", messageID(t, body))
			}
			_, res := do(t, ts, call{method: "GET", path: cd})
			if res["Inserted"] != st.inserted || vm.Media().Inserted != st.inserted {
				t.Errorf("Inserted %v (backend %v), want %v", res["Inserted"], vm.Media().Inserted, st.inserted)
			}
		})
	}
}

// TestServeClosesOnCancel checks the house Serve contract.
func TestServeClosesOnCancel(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- (&Server{}).Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/redfish/v1/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return")
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("listener still open")
	}
}

// FuzzRequestBodies sends arbitrary bodies to every handler that parses
// one: whatever arrives, the answer is never a 5xx and always JSON.
func FuzzRequestBodies(f *testing.F) {
	for _, seed := range []string{
		`{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once"}}`,
		`{"ResetType":"ForceRestart"}`,
		`{"Image":"http://127.0.0.1/x.iso","Inserted":true}`,
		`{"UserName":"admin","Password":"s3cret"}`,
		`{"Boot":null}`, `null`, `[]`, `"x"`,
	} {
		f.Add(seed)
	}
	paths := []struct{ method, path string }{
		{"PATCH", "/redfish/v1/Systems/vm01"},
		{"POST", "/redfish/v1/Systems/vm01/Actions/ComputerSystem.Reset"},
		{"POST", "/redfish/v1/Managers/vm01/VirtualMedia/CD1/Actions/VirtualMedia.InsertMedia"},
		{"POST", "/redfish/v1/Managers/vm01/VirtualMedia/CD1/Actions/VirtualMedia.EjectMedia"},
		{"POST", sessionsPath},
	}
	f.Fuzz(func(t *testing.T, body string) {
		// A server per input: sessions and media must not pile up across
		// inputs (the sessions' limit answers 503 by design).
		s := &Server{Systems: []System{newFake("vm01", UEFI)}}
		for _, p := range paths {
			w := httptest.NewRecorder()
			s.ServeHTTP(w, httptest.NewRequest(p.method, p.path, strings.NewReader(body)))
			if w.Code >= 500 {
				t.Fatalf("%s %s %q: %d %s", p.method, p.path, body, w.Code, w.Body)
			}
			if w.Body.Len() > 0 && !json.Valid(w.Body.Bytes()) {
				t.Fatalf("%s %s %q: answer is not JSON: %s", p.method, p.path, body, w.Body)
			}
		}
	})
}

func TestSessionLimit(t *testing.T) {
	s := &Server{Username: testUser, Password: testPass}
	login := func() int {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest("POST", sessionsPath, strings.NewReader(`{"UserName":"admin","Password":"s3cret"}`)))
		return w.Code
	}
	for i := 0; i < maxSessions; i++ {
		if c := login(); c != 201 {
			t.Fatalf("login %d: %d", i, c)
		}
	}
	if c := login(); c != 503 {
		t.Fatalf("login over the limit: %d", c)
	}
}

// TestServeTLS: with a self-signed certificate the service speaks HTTPS;
// a client that checks certificates refuses it, one told not to (as for a
// factory-certificate BMC) gets the service root, from the certificate
// whose fingerprint SelfSignedTLS returned.
func TestServeTLS(t *testing.T) {
	conf, fp, err := SelfSignedTLS("bmc.example")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go (&Server{TLS: conf}).Serve(ctx, ln)
	url := "https://" + ln.Addr().String() + "/redfish/v1/"
	if _, err := http.Get(url); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a checking client accepted the self-signed certificate: %v", err)
	}
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the point of the test
	resp, err := insecure.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("status %d, TLS %v", resp.StatusCode, resp.TLS != nil)
	}
	sum := sha256.Sum256(resp.TLS.PeerCertificates[0].Raw)
	if got := strings.ReplaceAll(fmt.Sprintf("% X", sum[:]), " ", ":"); got != fp {
		t.Errorf("served certificate %s, want fingerprint %s", got, fp)
	}
	if names := resp.TLS.PeerCertificates[0].DNSNames; !slices.Contains(names, "bmc.example") {
		t.Errorf("certificate names %v lack bmc.example", names)
	}
}

// slowOverride holds each SetBootOverride a moment, as a Machine does
// while an ISO is being inserted.
type slowOverride struct{ *fakeSystem }

func (s slowOverride) SetBootOverride(o BootOverride) error {
	time.Sleep(100 * time.Millisecond)
	return s.fakeSystem.SetBootOverride(o)
}

// TestIfMatchConcurrent: of two PATCHes carrying the same ETag, one is
// applied and the other gets 412: the check and the change are one step.
func TestIfMatchConcurrent(t *testing.T) {
	sys := slowOverride{newFake("vm01", BIOS)}
	ts := httptest.NewServer(&Server{Systems: []System{sys}, Username: testUser, Password: testPass})
	defer ts.Close()
	sysPath := "/redfish/v1/Systems/vm01"
	resp, _ := do(t, ts, call{method: "GET", path: sysPath})
	etag := resp.Header.Get("ETag")
	codes := make([]int, 2)
	var wg sync.WaitGroup
	for i, target := range []string{"Pxe", "Cd"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, _ := do(t, ts, call{method: "PATCH", path: sysPath, header: map[string]string{"If-Match": etag},
				body: `{"Boot":{"BootSourceOverrideTarget":"` + target + `","BootSourceOverrideEnabled":"Once"}}`})
			codes[i] = r.StatusCode
		}()
	}
	wg.Wait()
	slices.Sort(codes)
	if codes[0] != 200 || codes[1] != 412 {
		t.Errorf("two PATCHes with one ETag answered %v, want 200 and 412", codes)
	}
}
