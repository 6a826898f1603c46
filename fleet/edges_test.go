package fleet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phoenixboot/phoenix/boot/httpboot"
)

// Tests of operator actions meeting a rollout mid-way, driving reconcile
// by hand with a fake clock and no BMCs.

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// edgeFleet is a fleet file of hosts named by one letter, all on image.
func edgeFleet(policy, image string, names ...string) []byte {
	var b strings.Builder
	b.WriteString("policy: {" + policy + "}\nhosts:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "- {name: %s, macs: [\"52:54:00:00:00:%02x\"], image: %s}\n", n, n[0], image)
	}
	return []byte(b.String())
}

func edgeController(t *testing.T) (*Controller, *fakeClock, *simImages) {
	t.Helper()
	store, err := OpenStoreWith(filepath.Join(t.TempDir(), "phoenix.db"), StoreOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	src := newSimImages("demo:1", "demo:2")
	clk := &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	return &Controller{Store: store, Images: src, Now: clk.now}, clk, src
}

func edgeReport(t *testing.T, c *Controller, clk *fakeClock, name, ref string) {
	t.Helper()
	mac, _ := net.ParseMAC(fmt.Sprintf("52:54:00:00:00:%02x", name[0]))
	if err := c.RecordReport(context.Background(), httpboot.Report{MAC: mac, Digest: simDigest(ref), Time: clk.t}); err != nil {
		t.Fatal(err)
	}
}

// edgeRollout applies policy with hosts on demo:1, lets them report it,
// then applies demo:2 and runs one pass: the rollout's first step starts.
func edgeRollout(t *testing.T, c *Controller, clk *fakeClock, policy string, names ...string) {
	t.Helper()
	ctx := context.Background()
	if _, err := c.Apply(edgeFleet(policy, "demo:1", names...), ""); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		edgeReport(t, c, clk, n, "demo:1")
	}
	c.reconcile(ctx, nil)
	clk.t = clk.t.Add(time.Minute)
	if _, err := c.Apply(edgeFleet(policy, "demo:2", names...), ""); err != nil {
		t.Fatal(err)
	}
	c.reconcile(ctx, nil)
}

// TestRemovedHostEndsItsStep: a host dropped from the fleet file while
// its rollout step runs must not hold the rollout's window for good.
func TestRemovedHostEndsItsStep(t *testing.T) {
	c, clk, _ := edgeController(t)
	policy := "canary: 0, max_unavailable: 1, boot_deadline: 10m, retries: 1"
	edgeRollout(t, c, clk, policy, "a", "b", "c")
	if hostState(c, "a").Step == nil {
		t.Fatalf("a not started: %+v", hostState(c, "a"))
	}
	if _, err := c.Apply(edgeFleet(policy, "demo:2", "b", "c"), "drop a"); err != nil {
		t.Fatal(err)
	}
	c.reconcile(context.Background(), nil)
	if hostState(c, "b").Step == nil {
		t.Errorf("b did not start after a left the fleet: b is %s", hostState(c, "b").State)
	}
	_, hosts, err := c.Store.Rollout(1)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if h.Name == "a" && (h.Status != HostSuperseded || !strings.Contains(h.Error, "removed")) {
			t.Errorf("a's rollout entry: %s %q", h.Status, h.Error)
		}
	}
}

// TestMaxAgeSetLater: hosts ready before max_age was set get a refresh
// time from it, and are rebuilt once they are older.
func TestMaxAgeSetLater(t *testing.T) {
	c, clk, _ := edgeController(t)
	ctx := context.Background()
	policy := "canary: 0, max_unavailable: 1, boot_deadline: 10m"
	if _, err := c.Apply(edgeFleet(policy, "demo:1", "a"), ""); err != nil {
		t.Fatal(err)
	}
	edgeReport(t, c, clk, "a", "demo:1")
	c.reconcile(ctx, nil)
	if st := hostState(c, "a"); st.State != StateReady || !st.RefreshAt.IsZero() {
		t.Fatalf("a: %s, refresh at %s", st.State, st.RefreshAt)
	}
	if _, err := c.Apply(edgeFleet(policy+", max_age: 1h", "demo:1", "a"), "max age"); err != nil {
		t.Fatal(err)
	}
	c.reconcile(ctx, nil)
	if st := hostState(c, "a"); !st.RefreshAt.Equal(st.ReadyAt.Add(time.Hour)) {
		t.Errorf("a: ready %s, refresh at %s, want an hour later", st.ReadyAt, st.RefreshAt)
	}
	clk.t = clk.t.Add(2 * time.Hour)
	c.reconcile(ctx, nil)
	if hostState(c, "a").Step == nil {
		t.Errorf("a older than max_age and not rebuilt: %s", hostState(c, "a").State)
	}
}

// TestReimageRefusesImageWithoutDisk: a disk-mode host asked to reimage
// to an image without a disk image gets an error, and nothing is kept.
func TestReimageRefusesImageWithoutDisk(t *testing.T) {
	c, clk, src := edgeController(t)
	src.promote("x", "nodisk:1")
	f := strings.Replace(string(edgeFleet("canary: 0", "demo:1", "a")), "image: demo:1}", "image: demo:1, mode: disk}", 1)
	if _, err := c.Apply([]byte(f), ""); err != nil {
		t.Fatal(err)
	}
	edgeReport(t, c, clk, "a", "demo:1")
	c.reconcile(context.Background(), nil)
	if _, err := c.Reimage("a", "nodisk:1"); !errors.Is(err, errBadRequest) || !strings.Contains(err.Error(), "no disk image") {
		t.Errorf("reimage to an image without disk = %v, want a bad request", err)
	}
	if st := hostState(c, "a"); st.Override != "" || st.State != StateReady {
		t.Errorf("a after the refused reimage: %s, override %q", st.State, st.Override)
	}
}

// TestQuarantinedCanaryHalts: a canary the operator quarantines before it
// reported its new image has not passed, so the rollout halts.
func TestQuarantinedCanaryHalts(t *testing.T) {
	c, clk, _ := edgeController(t)
	edgeRollout(t, c, clk, "canary: 1, max_unavailable: 1, boot_deadline: 10m, retries: 1", "a", "b", "c")
	if hostState(c, "a").Step == nil {
		t.Fatal("canary a not started")
	}
	clk.t = clk.t.Add(5 * time.Minute)
	if err := c.Quarantine("a", "stuck at boot"); err != nil {
		t.Fatal(err)
	}
	c.reconcile(context.Background(), nil)
	r, _, err := c.Store.Rollout(1)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != RolloutHalted || !strings.Contains(r.Halt, "canary a quarantined") {
		t.Errorf("rollout %s %q, want halted by the canary's quarantine", r.State, r.Halt)
	}
	if hostState(c, "b").Step != nil || hostState(c, "c").Step != nil {
		t.Error("a non-canary host started although no canary passed")
	}
}

// gateBMC blocks PowerOff until release is closed.
type gateBMC struct {
	entered chan struct{}
	release chan struct{}
}

func (g gateBMC) Dial(context.Context, HostSpec) (BMC, error) { return g, nil }
func (g gateBMC) PowerState(context.Context) (string, error)  { return "Off", nil }
func (g gateBMC) PowerOn(context.Context) error               { return nil }
func (g gateBMC) PowerCycle(context.Context) error            { return nil }
func (g gateBMC) SetNetworkBootOnce(context.Context) error    { return nil }
func (g gateBMC) PowerOff(ctx context.Context, _ time.Duration) error {
	close(g.entered)
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestReleaseWaitsForPowerAction: while the operator's graceful power-off
// of a quarantined host runs, the host cannot be released (a reimage would
// then be cut by the forced power-off at the end of the grace time).
func TestReleaseWaitsForPowerAction(t *testing.T) {
	c, clk, _ := edgeController(t)
	g := gateBMC{entered: make(chan struct{}), release: make(chan struct{})}
	c.BMCs = g
	f := strings.Replace(string(edgeFleet("canary: 0", "demo:1", "a")), "image: demo:1}", "image: demo:1, bmc: {endpoint: \"http://127.0.0.1:1\"}}", 1)
	if _, err := c.Apply([]byte(f), ""); err != nil {
		t.Fatal(err)
	}
	edgeReport(t, c, clk, "a", "demo:1")
	c.reconcile(context.Background(), nil)
	if err := c.Quarantine("a", "post-mortem"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Power(context.Background(), "a", ActionPowerOff, time.Minute)
		done <- err
	}()
	<-g.entered
	if err := c.Release("a"); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "power action") {
		t.Errorf("release during a power-off = %v, want ErrState", err)
	}
	close(g.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := c.Release("a"); err != nil {
		t.Errorf("release after the power-off: %v", err)
	}
}

// flakyCommits fails the next n commits.
type flakyCommits struct {
	StateStore
	n int
}

func (f *flakyCommits) Commit(c Change) error {
	if f.n > 0 {
		f.n--
		return errors.New("disk full")
	}
	return f.StateStore.Commit(c)
}

// TestFailedCommitKeepsFailureReport: a pass that takes in a host's
// failure report and then fails to commit must leave the report for the
// next pass, not drop it (the attempt would then wait for its deadline).
func TestFailedCommitKeepsFailureReport(t *testing.T) {
	c, clk, _ := edgeController(t)
	edgeRollout(t, c, clk, "canary: 0, max_unavailable: 1, boot_deadline: 1h, retries: 2", "a")
	step := hostState(c, "a").Step
	if step == nil {
		t.Fatal("a not started")
	}
	clk.t = clk.t.Add(time.Minute)
	mac, _ := net.ParseMAC("52:54:00:00:00:61")
	if err := c.RecordReport(context.Background(), httpboot.Report{MAC: mac, Digest: step.Target, Error: "no disk", Time: clk.t}); err != nil {
		t.Fatal(err)
	}
	flaky := &flakyCommits{StateStore: c.Store, n: 1}
	c.Store = flaky
	c.reconcile(context.Background(), nil) // takes the failure, cannot commit
	c.reconcile(context.Background(), nil)
	if s := hostState(c, "a").Step; s == nil || s.Attempt != 2 {
		t.Errorf("step after the failure report and a failed commit: %+v, want attempt 2", s)
	}
}
