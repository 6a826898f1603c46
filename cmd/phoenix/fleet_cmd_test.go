package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phoenixboot/phoenix/boot/httpboot"
	"github.com/phoenixboot/phoenix/fleet"
	"github.com/phoenixboot/phoenix/images"
)

// fakeImages resolves demo:1, demo:2 and demo@stable (→ demo:1).
type fakeImages struct{}

func fakeDigest(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func (fakeImages) Resolve(ref string) (images.Image, error) {
	if ref == "demo@stable" {
		ref = "demo:1"
	}
	for _, v := range []string{"demo:1", "demo:2"} {
		if ref == v || ref == fakeDigest(v) {
			return images.Image{Name: "demo", Version: v[5:], Digest: fakeDigest(v)}, nil
		}
	}
	return images.Image{}, fmt.Errorf("image %s: %w", ref, images.ErrNotFound)
}

// startFleet runs a fleet controller over a fresh store and fakeImages
// until the test ends, and returns a mux with its API registered.
func startFleet(t *testing.T) (context.Context, *fleet.Controller, *http.ServeMux) {
	t.Helper()
	store, err := fleet.OpenStoreWith(filepath.Join(t.TempDir(), "phoenix.db"), fleet.StoreOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	ctrl := &fleet.Controller{Store: store, Images: fakeImages{}, Interval: 100 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ctrl.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; store.Close() })
	mux := http.NewServeMux()
	(&fleet.API{Controller: ctrl, Store: store}).Register(mux)
	return ctx, ctrl, mux
}

// TestFleetCommands runs plan, apply, rollout, host ls/show/reimage/
// quarantine/release as a user would, against a server with a controller
// whose hosts have no BMC (the test plays the hosts' reports).
func TestFleetCommands(t *testing.T) {
	ctx, ctrl, mux := startFleet(t)
	srv := httptest.NewServer(fleet.RequireToken("tok", mux))
	defer srv.Close()
	cli := func(wantOK bool, args ...string) (string, string) {
		t.Helper()
		return run(t, wantOK, append(args, "--server", srv.URL, "--token", "tok")...)
	}
	report := func(mac, ref string) {
		hw, _ := net.ParseMAC(mac)
		if err := ctrl.RecordReport(ctx, httpboot.Report{MAC: hw, Digest: fakeDigest(ref), Time: time.Now()}); err != nil {
			t.Error(err)
		}
	}

	dir := t.TempDir()
	bad := writeFile(t, dir, "bad.yaml", "policy: {batch: 3, max_unavailable: 1}\nhosts:\n- {name: a, macs: ['52:54:00:00:00:01'], image: demo@beta}\n")
	_, stderr := cli(false, "plan", "-f", bad)
	for _, w := range []string{"line 1: policy: batch 3", "line 3: host \"a\": image demo@beta"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("plan of a bad file: stderr lacks %q:\n%s", w, stderr)
		}
	}
	good := writeFile(t, dir, "fleet.yaml", `policy: {canary: 1, max_unavailable: 2}
defaults: {image: demo@stable}
hosts:
- {name: a, macs: ['52:54:00:00:00:01']}
- {name: b, macs: ['52:54:00:00:00:02'], labels: {rack: r1}}
`)
	out, _ := cli(true, "plan", "-f", good)
	if !strings.Contains(out, "+ added (2): a, b") || !strings.Contains(out, "new host") {
		t.Errorf("plan:\n%s", out)
	}
	out, _ = cli(true, "apply", "-f", good)
	if !strings.Contains(out, "Revision 1 applied") {
		t.Errorf("apply:\n%s", out)
	}
	out, _ = cli(true, "apply", "-f", good)
	if !strings.Contains(out, "Nothing to apply") {
		t.Errorf("apply again:\n%s", out)
	}
	// The hosts boot by themselves (no BMC) and report.
	time.Sleep(100 * time.Millisecond)
	report("52:54:00:00:00:01", "demo:1")
	report("52:54:00:00:00:02", "demo:1")
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ = cli(true, "host", "ls")
		if strings.Count(out, " ready ") == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hosts not ready:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, _ = cli(true, "rollout", "ls")
	if !strings.Contains(out, "done") {
		t.Errorf("rollout ls:\n%s", out)
	}
	out, _ = cli(true, "rollout", "show", "1")
	if !strings.Contains(out, "a (canary)") || !strings.Contains(out, "Policy:  canary 1") {
		t.Errorf("rollout show:\n%s", out)
	}
	cli(false, "rollout", "pause", "1")

	// CI: reimage a to demo:2 and wait; the test plays the host.
	go func() {
		for i := 0; i < 100; i++ {
			time.Sleep(50 * time.Millisecond)
			if d, err := ctrl.HostDetail("a"); err == nil && d.Step != nil {
				report("52:54:00:00:00:01", "demo:2")
				return
			}
		}
	}()
	out, _ = cli(true, "host", "reimage", "a", "--image", "demo:2", "--wait", "--timeout", "20s", "-o", "json")
	var res reimageOutcome
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Result != "ready" || res.Target != fakeDigest("demo:2") || len(res.Events) == 0 {
		t.Errorf("reimage --wait: %v %+v\n%s", err, res, out)
	}
	// b never reports: the wait times out with the reason.
	_, stderr = cli(false, "host", "reimage", "b", "--wait", "--timeout", "1s")
	if !strings.Contains(stderr, "did not report demo:1 within 1s") {
		t.Errorf("reimage timeout: %s", stderr)
	}
	out, _ = cli(true, "host", "show", "a")
	if !strings.Contains(out, "Override:") || !strings.Contains(out, "reimage-requested") {
		t.Errorf("host show:\n%s", out)
	}
	cli(true, "host", "quarantine", "b", "--reason", "flaky NIC")
	_, stderr = cli(false, "host", "reimage", "b")
	if !strings.Contains(stderr, "quarantined") {
		t.Errorf("reimage of quarantined host: %s", stderr)
	}
	out, _ = cli(true, "host", "ls")
	if !strings.Contains(out, "flaky NIC") {
		t.Errorf("host ls:\n%s", out)
	}
	cli(true, "host", "release", "b")
	cli(true, "apply", "--revision", "1")
	cli(false, "apply")
}
