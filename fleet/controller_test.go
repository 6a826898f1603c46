package fleet

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phoenixboot/phoenix/boot/httpboot"
)

// waitFor polls cond for up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func hostState(c *Controller, name string) HostStatus {
	for _, h := range c.Status() {
		if h.Name == name {
			return h
		}
	}
	return HostStatus{}
}

// TestFailureReportEndsAttempt: a host that reports its boot failed is
// retried, then quarantined, at once rather than at the boot deadline, with
// its own reason; the failure never counts as what it runs.
func TestFailureReportEndsAttempt(t *testing.T) {
	s := startSim(t, 2, 1, "  canary: 1\n  max_unavailable: 1\n  boot_deadline: 1h\n  retries: 1\n", nil)
	c := s.w.ctrl.Load()
	v1, v3 := simDigest("demo:1"), simDigest("demo:3")
	s.w.mu.Lock()
	s.w.failing = v3
	s.w.mu.Unlock()
	start := time.Now()
	s.src.promote("demo@stable", "demo:3")
	c.Wake()
	r := s.waitRollout(t, 1, 10*time.Second)
	if r.State != RolloutHalted || r.Failures != 1 {
		t.Fatalf("rollout %+v", r)
	}
	_, hosts, _ := s.store.Rollout(r.ID)
	canary := hostState(c, hosts[0].Name)
	if canary.State != StateQuarantined || !strings.Contains(canary.Quarantine, "host reported: no disk to install to") {
		t.Errorf("canary %+v", canary)
	}
	if canary.LastReport == nil || canary.LastReport.Digest != v1 {
		t.Errorf("canary's last report %+v, want its v1 one (a failure is not what it runs)", canary.LastReport)
	}
	s.w.mu.Lock()
	if s.w.resets[canary.Name] != 2 { // the first attempt and its retry
		t.Errorf("canary reset %d times, want 2", s.w.resets[canary.Name])
	}
	s.w.mu.Unlock()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("quarantined after %s: the failure reports did not end the attempts", took)
	}
}

// TestCanaryBrokenImageAndRollback is the e2e scenario in-process: three
// hosts on stable=v1; v2 rolls out canary first; a broken v3 quarantines
// the canary and halts; the others stay on v2; rollback and release bring
// the canary back to v2.
func TestCanaryBrokenImageAndRollback(t *testing.T) {
	s := startSim(t, 3, 1, "  canary: 1\n  max_unavailable: 1\n  boot_deadline: 300ms\n  retries: 1\n", nil)
	c := s.w.ctrl.Load()
	v2, v3 := simDigest("demo:2"), simDigest("demo:3")

	s.src.promote("demo@stable", "demo:2")
	c.Wake()
	r := s.waitRollout(t, 1, 20*time.Second)
	if r.State != RolloutDone || r.Done != 3 {
		t.Fatalf("v2 rollout %+v", r)
	}
	_, hosts, _ := s.store.Rollout(r.ID)
	if !hosts[0].Canary || hosts[1].Canary || hosts[0].Finished.After(hosts[1].Started) {
		t.Errorf("canary did not go first alone: %+v", hosts)
	}

	s.w.mu.Lock()
	s.w.broken = v3
	s.w.mu.Unlock()
	s.src.promote("demo@stable", "demo:3")
	c.Wake()
	r = s.waitRollout(t, 2, 20*time.Second)
	if r.State != RolloutHalted || !strings.Contains(r.Halt, "canary") || r.Failures != 1 {
		t.Fatalf("v3 rollout %+v", r)
	}
	_, hosts, _ = s.store.Rollout(r.ID)
	canary := hosts[0].Name
	for _, h := range c.Status() {
		if h.Name == canary {
			if h.State != StateQuarantined || !strings.Contains(h.Quarantine, "failed 2 attempts") {
				t.Errorf("canary %+v", h)
			}
			continue
		}
		if h.State != StateHeld || h.Assigned != v2 || h.LastReport.Digest != v2 {
			t.Errorf("%s: state %s assigned %s", h.Name, h.State, h.Assigned)
		}
	}
	s.w.mu.Lock()
	if s.w.resets[canary] != 3 { // v2 once, v3 twice (one retry)
		t.Errorf("canary reset %d times", s.w.resets[canary])
	}
	s.w.mu.Unlock()
	if _, err := c.Reimage(canary, ""); err == nil {
		t.Error("reimage of a quarantined host accepted")
	}

	// Rollback: the channel goes back to v2; the held hosts are current
	// again, the quarantined canary is left alone until released.
	s.src.promote("demo@stable", "demo:2")
	c.Wake()
	waitFor(t, 5*time.Second, "held hosts ready", func() bool {
		n := 0
		for _, h := range c.Status() {
			if h.State == StateReady {
				n++
			}
		}
		return n == 2
	})
	if got := hostState(c, canary); got.State != StateQuarantined || got.Assigned != v3 {
		t.Fatalf("canary after rollback: %+v", got)
	}
	if err := c.Release(canary); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "canary back on v2", func() bool {
		h := hostState(c, canary)
		return h.State == StateReady && h.LastReport.Digest == v2
	})
	d, err := c.HostDetail(canary)
	if err != nil || len(d.QuarantineEvents) == 0 {
		t.Errorf("quarantine events not kept: %v %+v", err, d.QuarantineEvents)
	}
	s.w.check(t)
}

func TestManualReimageAndDrift(t *testing.T) {
	s := startSim(t, 2, 1, "  canary: 0\n  max_unavailable: 1\n  boot_deadline: 2s\n", nil)
	c := s.w.ctrl.Load()
	req, err := c.Reimage("h0001", "demo:2")
	if err != nil {
		t.Fatal(err)
	}
	if req.Target != simDigest("demo:2") {
		t.Fatalf("target %s", req.Target)
	}
	waitFor(t, 5*time.Second, "manual reimage", func() bool {
		h := hostState(c, "h0001")
		return h.State == StateReady && h.LastReport.Digest == req.Target && !h.LastReport.Time.Before(req.Requested)
	})
	if h := hostState(c, "h0001"); h.Override != "demo:2" || h.Digest != req.Target {
		t.Errorf("override not kept: %+v", h)
	}
	if rs, _ := s.store.Rollouts(); len(rs) != 0 {
		t.Errorf("a manual reimage made a rollout: %+v", rs)
	}
	// Drift: h0000 reports something it was not assigned; policy reimage.
	mac := s.w.macs["h0000"]
	rogue := time.Now()
	if err := c.RecordReport(context.Background(), httpboot.Report{MAC: mac, Digest: simDigest("rogue"), Time: rogue}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "drift repaired", func() bool {
		h := hostState(c, "h0000")
		return h.State == StateReady && h.LastReport.Digest == simDigest("demo:1") && h.LastReport.Time.After(rogue)
	})
	evs, _ := s.store.Events(EventFilter{Host: "h0000"})
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, e.Kind)
	}
	if got := strings.Join(kinds, " "); !strings.Contains(got, "drift") || !strings.Contains(got, "reimage") {
		t.Errorf("events of a drifted host: %v", kinds)
	}
	s.w.check(t)
}

func TestAbortHoldsQueuedHosts(t *testing.T) {
	s := startSim(t, 6, 1, "  canary: 0\n  max_unavailable: 1\n  boot_deadline: 5s\n", func(w *simWorld) {
		w.bootDelay = func() time.Duration { return 150 * time.Millisecond }
	})
	c := s.w.ctrl.Load()
	s.src.promote("demo@stable", "demo:2")
	c.Wake()
	waitFor(t, 5*time.Second, "rollout running", func() bool { rs, _ := s.store.Rollouts(); return len(rs) == 1 })
	rs, _ := s.store.Rollouts()
	if _, err := c.RolloutAction(rs[0].ID, ActionPause); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RolloutAction(rs[0].ID, ActionPause); err == nil {
		t.Error("pausing a paused rollout accepted")
	}
	if _, err := c.RolloutAction(rs[0].ID, ActionAbort); err != nil {
		t.Fatal(err)
	}
	r := s.waitRollout(t, 1, 10*time.Second)
	if r.State != RolloutAborted {
		t.Fatalf("%+v", r)
	}
	time.Sleep(100 * time.Millisecond)
	held := 0
	for _, h := range c.Status() {
		if h.State == StateHeld {
			held++
		}
	}
	if held < 4 {
		t.Errorf("%d hosts held after abort, want ≥ 4", held)
	}
	if rs, _ := s.store.Rollouts(); len(rs) != 1 {
		t.Errorf("abort was followed by a new rollout: %+v", rs[0])
	}
}

// TestLookup covers hosts without a BMC: a new host boots its desired
// image; a disk-mode host whose disk is current boots locally.
func TestLookup(t *testing.T) {
	store, err := OpenStoreWith(filepath.Join(t.TempDir(), "phoenix.db"), StoreOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	src := newSimImages("demo:1")
	src.promote("demo@stable", "demo:1")
	c := &Controller{Store: store, Images: src}
	if _, err := c.Apply([]byte(`hosts:
- {name: mem, macs: ["52:54:00:00:00:01"], image: demo@stable}
- {name: disk, macs: ["52:54:00:00:00:02"], image: demo@stable, mode: disk}
- {name: gone, macs: ["52:54:00:00:00:03"], image: "sha256:`+strings.Repeat("0", 64)+`"}
`), "test"); err == nil {
		t.Fatal("unknown digest accepted")
	}
	if _, err := c.Apply([]byte(`hosts:
- {name: mem, macs: ["52:54:00:00:00:01"], image: demo@stable}
- {name: disk, macs: ["52:54:00:00:00:02"], image: demo@stable, mode: disk}
`), "test"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	v1 := simDigest("demo:1")
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	waitFor(t, 5*time.Second, "desired resolved", func() bool {
		_, ref, ok := c.Lookup(mac("52:54:00:00:00:02"))
		return ok && ref == v1
	})
	if name, ref, ok := c.Lookup(mac("52:54:00:00:00:01")); !ok || name != "mem" || ref != v1 {
		t.Errorf("mem: %q %q %v", name, ref, ok)
	}
	if _, _, ok := c.Lookup(mac("52:54:00:00:00:09")); ok {
		t.Error("unknown MAC known")
	}
	for _, m := range []string{"52:54:00:00:00:01", "52:54:00:00:00:02"} {
		if err := c.RecordReport(ctx, httpboot.Report{MAC: mac(m), Digest: v1, Time: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "disk host boots locally", func() bool {
		_, ref, _ := c.Lookup(mac("52:54:00:00:00:02"))
		return ref == ""
	})
	if _, ref, _ := c.Lookup(mac("52:54:00:00:00:01")); ref != v1 {
		t.Errorf("memory host: %q", ref)
	}
	for _, h := range c.Status() {
		if h.State != StateReady {
			t.Errorf("%s: %s", h.Name, h.State)
		}
	}

	// The channel moves to an image without a disk image: the memory host
	// follows, the disk host keeps its disk and says why.
	src.promote("demo@stable", "nodisk:1")
	c.Wake()
	waitFor(t, 5*time.Second, "memory host follows nodisk:1", func() bool {
		_, ref, _ := c.Lookup(mac("52:54:00:00:00:01"))
		return ref == simDigest("nodisk:1")
	})
	if _, ref, _ := c.Lookup(mac("52:54:00:00:00:02")); ref != "" {
		t.Errorf("disk host told to boot %q, want its local disk", ref)
	}
	for _, h := range c.Status() {
		if h.Name == "disk" && !strings.Contains(h.Error, "has no disk image") {
			t.Errorf("disk host: state %s, error %q", h.State, h.Error)
		}
	}
}

func TestMaxAgeRebuilds(t *testing.T) {
	s := startSim(t, 4, 2, "  canary: 0\n  max_unavailable: 2\n  boot_deadline: 2s\n  max_age: 300ms\n  splay: 200ms\n", nil)
	c := s.w.ctrl.Load()
	for _, h := range c.Status() {
		if h.RefreshAt.Before(h.ReadyAt.Add(300*time.Millisecond)) || h.RefreshAt.After(h.ReadyAt.Add(500*time.Millisecond)) {
			t.Errorf("%s: ready %s, refresh %s", h.Name, h.ReadyAt, h.RefreshAt)
		}
	}
	waitFor(t, 10*time.Second, "every host rebuilt once for age", func() bool {
		s.w.mu.Lock()
		defer s.w.mu.Unlock()
		for name := range s.w.macs {
			if s.w.resets[name] == 0 {
				return false
			}
		}
		return true
	})
	rs, _ := s.store.Rollouts()
	if len(rs) == 0 || !strings.Contains(rs[len(rs)-1].Reason, "age") {
		t.Errorf("rollouts %+v", rs)
	}
	s.w.check(t)
}
