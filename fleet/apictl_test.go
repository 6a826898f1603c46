package fleet

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestControllerAPI drives the controller through the HTTP API as the CLI
// does, token and all.
func TestControllerAPI(t *testing.T) {
	s := startSim(t, 3, 1, "  canary: 1\n  max_unavailable: 1\n  boot_deadline: 2s\n", nil)
	c := s.w.ctrl.Load()
	mux := http.NewServeMux()
	(&API{Controller: c, Store: s.store}).Register(mux)
	srv := httptest.NewServer(RequireToken("tok", mux))
	defer srv.Close()

	call := func(method, path, body string, token bool, out any) int {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if token {
			req.Header.Set("Authorization", "Bearer tok")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if out != nil && resp.StatusCode/100 == 2 {
			if err := json.Unmarshal(b, out); err != nil {
				t.Fatalf("%s %s: %v: %s", method, path, err, b)
			}
		}
		if resp.StatusCode/100 != 2 {
			var e struct{ Error string }
			if json.Unmarshal(b, &e) != nil || e.Error == "" {
				t.Errorf("%s %s: %d without an error body: %s", method, path, resp.StatusCode, b)
			}
		}
		return resp.StatusCode
	}

	var hosts []HostStatus
	if code := call("GET", "/api/v1/hosts", "", false, &hosts); code != 200 || len(hosts) != 3 || hosts[0].State != StateReady {
		t.Fatalf("hosts: %d %+v", code, hosts)
	}
	var d HostStatusDetail
	if code := call("GET", "/api/v1/hosts/h0001", "", false, &d); code != 200 || d.Name != "h0001" || len(d.Events) == 0 {
		t.Errorf("host show: %d %+v", code, d)
	}
	if code := call("GET", "/api/v1/hosts/nope", "", false, nil); code != 404 {
		t.Errorf("unknown host: %d", code)
	}

	// Plan and apply: bad files are refused with their lines, no token no change.
	newFile := string(s.w.fleetYAML("demo:2", "  canary: 1\n  max_unavailable: 1\n  boot_deadline: 2s\n"))
	if code := call("POST", "/api/v1/plan", "hosts: [{name: a}]\nbogus: 1\n", true, nil); code != 400 {
		t.Errorf("bad plan: %d", code)
	}
	if code := call("POST", "/api/v1/apply", newFile, false, nil); code != 401 {
		t.Errorf("apply without token: %d", code)
	}
	var pl Plan
	if code := call("POST", "/api/v1/plan", newFile, true, &pl); code != 200 || len(pl.Reimage) != 3 || len(pl.Changed) != 3 {
		t.Fatalf("plan: %d %+v", code, pl)
	}
	var res ApplyResult
	if code := call("POST", "/api/v1/apply?note=test", newFile, true, &res); code != 200 || res.Revision != 2 {
		t.Fatalf("apply: %d %+v", code, res)
	}
	r := s.waitRollout(t, 1, 20*time.Second)
	var rs []Rollout
	if code := call("GET", "/api/v1/rollouts", "", false, &rs); code != 200 || len(rs) != 1 || rs[0].State != RolloutDone {
		t.Fatalf("rollouts: %d %+v", code, rs)
	}
	var rd RolloutDetail
	if code := call("GET", "/api/v1/rollouts/1", "", false, &rd); code != 200 || len(rd.HostList) != 3 || rd.ID != r.ID {
		t.Errorf("rollout show: %d %+v", code, rd)
	}
	if code := call("POST", "/api/v1/rollouts/1/pause", "", true, nil); code != 409 {
		t.Errorf("pause of a done rollout: %d", code)
	}
	if code := call("POST", "/api/v1/rollouts/1/explode", "", true, nil); code != 400 {
		t.Errorf("unknown action: %d", code)
	}
	var revs []Revision
	if code := call("GET", "/api/v1/revisions", "", false, &revs); code != 200 || len(revs) != 2 || revs[0].Note != "test" {
		t.Errorf("revisions: %d %+v", code, revs)
	}
	var rev Revision
	if code := call("GET", "/api/v1/revisions/1", "", false, &rev); code != 200 || !bytes.Contains(rev.Data, []byte("demo@stable")) {
		t.Errorf("revision 1: %d", code)
	}
	if code := call("POST", "/api/v1/apply?revision=1", "", true, &res); code != 200 || res.Revision != 3 {
		t.Errorf("apply revision 1: %d %+v", code, res)
	}
	s.waitRollout(t, 2, 20*time.Second)

	// Host actions.
	if code := call("POST", "/api/v1/hosts/h0002/quarantine", `{"reason":"disk smells"}`, true, &d); code != 200 || d.State != StateQuarantined {
		t.Errorf("quarantine: %d %+v", code, d.HostStatus)
	}
	if code := call("POST", "/api/v1/hosts/h0002/reimage", `{}`, true, nil); code != 409 {
		t.Errorf("reimage of a quarantined host: %d", code)
	}
	var pw PowerResult
	if code := call("POST", "/api/v1/hosts/h0002/power", `{"power":"off","graceful":"0s"}`, true, &pw); code != 200 || pw.Power != "On" || pw.Action != "off" {
		t.Errorf("power off of a quarantined host: %d %+v", code, pw)
	}
	for _, g := range []string{"soon", "-1s", "48h"} {
		if code := call("POST", "/api/v1/hosts/h0002/power", `{"power":"off","graceful":"`+g+`"}`, true, nil); code != 400 {
			t.Errorf("graceful %s: %d, want 400", g, code)
		}
	}
	if code := call("POST", "/api/v1/hosts/h0002/power", `{"power":"status"}`, false, nil); code != 401 {
		t.Errorf("power status without token: %d", code)
	}
	if code := call("POST", "/api/v1/hosts/h0001/power", `{"power":"cycle"}`, true, nil); code != 409 {
		t.Errorf("power cycle of a host in service: %d", code)
	}
	s.w.bmcDown.Store(true)
	if code := call("POST", "/api/v1/hosts/h0002/power", `{"power":"status"}`, true, nil); code != 502 {
		t.Errorf("power status through a failing BMC: %d, want 502", code)
	}
	s.w.bmcDown.Store(false)
	if code := call("POST", "/api/v1/hosts/h0002/release", "", true, &d); code != 200 || d.State == StateQuarantined {
		t.Errorf("release: %d %+v", code, d.HostStatus)
	}
	var req ReimageRequest
	if code := call("POST", "/api/v1/hosts/h0000/reimage", `{"image":"demo:9"}`, true, nil); code != 400 {
		t.Errorf("reimage to an unknown image: %d", code)
	}
	if code := call("POST", "/api/v1/hosts/h0000/reimage", `{"image":"demo:2"}`, true, &req); code != 200 || req.TargetRef != "demo:2" {
		t.Errorf("reimage: %d %+v", code, req)
	}
	var evs []Event
	if code := call("GET", "/api/v1/events?host=h0000&limit=3", "", false, &evs); code != 200 || len(evs) != 3 || evs[0].Host != "h0000" {
		t.Errorf("events: %d %+v", code, evs)
	}
	if code := call("GET", "/api/v1/events?limit=x", "", false, nil); code != 400 {
		t.Errorf("bad limit: %d", code)
	}
}
