package fleet

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phoenixboot/phoenix/boot/httpboot"
)

// simWorld is a fleet of fake hosts behind fake BMCs. A reset makes a host
// "boot": after a random delay it asks the controller (Lookup) what to run
// and, unless its boot fails, reports that digest. It checks the rollout
// invariants as it goes.
type simWorld struct {
	t    testing.TB
	ctrl atomic.Pointer[Controller]
	maxU int

	bootDelay func() time.Duration
	bmcDelay  func() time.Duration
	failP     float64 // probability that a boot never reports
	broken    string  // a digest whose boots never report
	failing   string  // a digest whose boots send a failure report
	bmcErrP   float64 // probability that a BMC call fails
	// spareCanaries keeps failP and bmcErrP off the rollout's canaries: a
	// failed canary halts the rollout by design (controller_test.go covers
	// that), which would end a test about the failure budget at random.
	spareCanaries bool
	// bmcDown fails every BMC call (503) while set; tests flip it live.
	bmcDown atomic.Bool

	mu         sync.Mutex
	macs       map[string]net.HardwareAddr
	gen        map[string]int
	down       map[string]bool
	resets     map[string]int
	powerOffs  map[string]int
	booted     map[string][]string
	maxDown    int
	violations []string
	wg         sync.WaitGroup
	stopped    atomic.Bool
	onReset    func()
	onReport   func()
}

func newSimWorld(t testing.TB, n, maxU int) *simWorld {
	w := &simWorld{t: t, maxU: maxU, macs: map[string]net.HardwareAddr{}, gen: map[string]int{}, down: map[string]bool{},
		resets: map[string]int{}, powerOffs: map[string]int{}, booted: map[string][]string{},
		bootDelay: func() time.Duration { return 20*time.Millisecond + rand.N(40*time.Millisecond) },
		bmcDelay:  func() time.Duration { return rand.N(5 * time.Millisecond) },
	}
	for i := range n {
		name := fmt.Sprintf("h%04d", i)
		w.macs[name] = net.HardwareAddr{0x52, 0x54, 0, 0, byte(i >> 8), byte(i)}
	}
	return w
}

// fleetYAML is the world's fleet file.
func (w *simWorld) fleetYAML(image, policy string) []byte {
	var b strings.Builder
	b.WriteString("policy:\n" + policy + "\ndefaults:\n  image: " + image + "\n  bmc: {credentials: env:SIM}\nhosts:\n")
	for i := range len(w.macs) {
		name := fmt.Sprintf("h%04d", i)
		fmt.Fprintf(&b, "- name: %s\n  macs: [%s]\n  bmc: {endpoint: 'https://bmc-%d.sim'}\n  labels: {rack: r%d}\n", name, w.macs[name], i, i/40)
	}
	return []byte(b.String())
}

func (w *simWorld) violate(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.violations) < 20 {
		w.violations = append(w.violations, fmt.Sprintf(format, args...))
	}
}

func (w *simWorld) Dial(ctx context.Context, h HostSpec) (BMC, error) {
	if h.BMC == nil || !strings.HasPrefix(h.BMC.Endpoint, "https://bmc-") {
		return nil, fmt.Errorf("dial %v: bad spec", h.BMC)
	}
	return &simBMC{w: w, name: h.Name}, nil
}

type simBMC struct {
	w    *simWorld
	name string
}

func (b *simBMC) wait(ctx context.Context) error {
	select {
	case <-time.After(b.w.bmcDelay()):
		if b.w.bmcDown.Load() || b.w.bmcErrP > 0 && !b.w.spared(b.name) && rand.Float64() < b.w.bmcErrP {
			return fmt.Errorf("503 service unavailable")
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *simBMC) PowerState(ctx context.Context) (string, error) { return "On", b.wait(ctx) }
func (b *simBMC) PowerOn(ctx context.Context) error              { return b.PowerCycle(ctx) }
func (b *simBMC) SetNetworkBootOnce(ctx context.Context) error   { return b.wait(ctx) }
func (b *simBMC) PowerOff(ctx context.Context, _ time.Duration) error {
	if err := b.wait(ctx); err != nil {
		return err
	}
	b.w.mu.Lock()
	b.w.powerOffs[b.name]++
	b.w.mu.Unlock()
	return nil
}
func (b *simBMC) PowerCycle(ctx context.Context) error {
	if err := b.wait(ctx); err != nil {
		return err
	}
	b.w.reset(b.name)
	return nil
}

// reset takes the host down and starts its boot.
func (w *simWorld) reset(name string) {
	c := w.ctrl.Load()
	quarantined := c.quarantinedSet()
	if w.onReset != nil {
		w.onReset()
	}
	w.mu.Lock()
	w.resets[name]++
	w.down[name] = true
	w.gen[name]++
	g := w.gen[name]
	n := 0
	for h, d := range w.down {
		if d && !quarantined[h] {
			n++
		}
	}
	w.maxDown = max(w.maxDown, n)
	w.mu.Unlock()
	if n > w.maxU {
		w.violate("%d hosts out of service, max_unavailable %d", n, w.maxU)
	}
	w.wg.Add(1)
	go w.boot(name, g, true)
}

// reboot is a host restarting on its own, without phoenix.
func (w *simWorld) reboot(name string) {
	w.mu.Lock()
	if w.down[name] {
		w.mu.Unlock()
		return
	}
	w.gen[name]++
	g := w.gen[name]
	w.mu.Unlock()
	w.wg.Add(1)
	go w.boot(name, g, false)
}

func (w *simWorld) boot(name string, g int, mayFail bool) {
	defer w.wg.Done()
	time.Sleep(w.bootDelay())
	w.mu.Lock()
	current := w.gen[name] == g
	w.mu.Unlock()
	if !current || w.stopped.Load() {
		return
	}
	c := w.ctrl.Load()
	// The controller may retarget the host between Lookup and a look at
	// its assignment (its turn came while it booted on its own; the
	// controller's own reset follows). Only an answer that matches the
	// assignment neither before nor after Lookup is wrong.
	before := c.assignedOf(name)
	host, ref, ok := c.Lookup(w.macs[name])
	if !ok || host != name {
		w.violate("%s: Lookup = %q %q %v", name, host, ref, ok)
		return
	}
	if after := c.assignedOf(name); after != "" && after != ref && before != ref {
		w.violate("%s booted %s but is assigned %s (before Lookup: %s)", name, ref, after, before)
	}
	w.mu.Lock()
	w.booted[name] = append(w.booted[name], ref)
	w.mu.Unlock()
	w.mu.Lock()
	broken := w.broken != "" && ref == w.broken
	failing := w.failing != "" && ref == w.failing
	failP := w.failP
	w.mu.Unlock()
	if failing {
		// Its installer gives up and says why; the host stays down.
		_ = w.ctrl.Load().RecordReport(context.Background(), httpboot.Report{MAC: w.macs[name], Host: name, Digest: ref,
			Time: time.Now(), Error: "no disk to install to"})
		return
	}
	if broken || (mayFail && failP > 0 && !w.spared(name) && rand.Float64() < failP) {
		return // hangs in its initrd: never reports
	}
	// A host that reports is in service again: mark it up before the
	// report, or the controller (which may reset the next host the moment
	// the report is recorded) would race the world's own bookkeeping.
	w.mu.Lock()
	if w.gen[name] == g {
		w.down[name] = false
	}
	w.mu.Unlock()
	for !w.stopped.Load() {
		c := w.ctrl.Load()
		err := c.RecordReport(context.Background(), httpboot.Report{MAC: w.macs[name], Host: name, Digest: ref, Time: time.Now()})
		if err == nil {
			if w.onReport != nil {
				w.onReport()
			}
			break
		}
		time.Sleep(5 * time.Millisecond) // the server is restarting
	}
}

// spared tells whether random faults skip name (see spareCanaries).
func (w *simWorld) spared(name string) bool {
	if !w.spareCanaries {
		return false
	}
	c := w.ctrl.Load()
	c.mu.RLock()
	defer c.mu.RUnlock()
	e := c.rhosts[name]
	return e != nil && e.Canary
}

// quarantinedSet, assignedOf and spared let the simulation look inside.
func (c *Controller) quarantinedSet() map[string]bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := map[string]bool{}
	for name, h := range c.hosts {
		if h.Quarantined {
			out[name] = true
		}
	}
	return out
}

func (c *Controller) assignedOf(name string) string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if h := c.hosts[name]; h != nil {
		return h.Assigned
	}
	return ""
}

// seedReports makes every host report ref before the controller starts, as
// if they all ran it already.
func (w *simWorld) seedReports(t testing.TB, s *Store, ref string) {
	for name, mac := range w.macs {
		if err := s.RecordReport(context.Background(), httpboot.Report{MAC: mac, Host: name, Digest: simDigest(ref), Time: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
}

type simSetup struct {
	w     *simWorld
	src   *simImages
	store *Store
	path  string
	stop  func()
}

// startSim builds a world of n hosts all running demo:1 on channel
// demo@stable, applies the fleet file with policy and runs a controller.
func startSim(t testing.TB, n, maxU int, policy string, tune func(w *simWorld)) *simSetup {
	t.Helper()
	w := newSimWorld(t, n, maxU)
	if tune != nil {
		tune(w)
	}
	src := newSimImages("demo:1", "demo:2")
	src.promote("demo@stable", "demo:1")
	path := filepath.Join(t.TempDir(), "phoenix.db")
	store, err := OpenStoreWith(path, StoreOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	w.seedReports(t, store, "demo:1")
	s := &simSetup{w: w, src: src, store: store, path: path}
	c := s.newController()
	if _, err := c.Apply(w.fleetYAML("demo@stable", policy), "sim"); err != nil {
		t.Fatal(err)
	}
	s.run(c)
	// Every host runs demo:1 already: they converge without a rollout.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		ready := 0
		for _, h := range c.Status() {
			if h.State == StateReady {
				ready++
			}
		}
		if ready == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d hosts ready", ready, n)
		}
	}
	t.Cleanup(func() {
		s.stop()
		w.stopped.Store(true)
		w.wg.Wait()
		s.store.Close()
	})
	return s
}

func (s *simSetup) newController() *Controller {
	c := &Controller{Store: s.store, Images: s.src, BMCs: s.w, Interval: 200 * time.Millisecond, RetryBackoff: 20 * time.Millisecond}
	if err := c.Load(); err != nil {
		s.w.t.Fatal(err)
	}
	s.w.ctrl.Store(c)
	return c
}

func (s *simSetup) run(c *Controller) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	s.stop = func() { cancel(); <-done }
}

// waitRollout waits until the newest rollout, numbered minID or later, is
// no longer running.
func (s *simSetup) waitRollout(t testing.TB, minID int64, timeout time.Duration) Rollout {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		// In-flight steps first: once none is left and the rollout is
		// not running, nothing changes any more.
		idle := s.w.ctrl.Load().inFlight() == 0
		rs, err := s.store.Rollouts()
		if err != nil {
			t.Fatal(err)
		}
		if idle && len(rs) > 0 && rs[0].ID >= minID && rs[0].State != RolloutRunning {
			return rs[0]
		}
		time.Sleep(10 * time.Millisecond)
	}
	rs, _ := s.store.Rollouts()
	t.Fatalf("rollout not finished after %s: %+v", timeout, rs)
	return Rollout{}
}

func (c *Controller) inFlight() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.inflight
}

func (w *simWorld) check(t testing.TB) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, v := range w.violations {
		t.Error(v)
	}
}

func TestSimulationRollout(t *testing.T) {
	n := 1000
	if testing.Short() {
		n = 200
	}
	s := startSim(t, n, 100, "  canary: 3\n  batch: 100\n  boot_deadline: 1s\n  retries: 1\n  failure_budget: 50\n", func(w *simWorld) {
		w.failP = 0.01
		w.bmcErrP = 0.01
		w.spareCanaries = true
		w.bmcDelay = func() time.Duration {
			if rand.Float64() < 0.05 {
				return 100*time.Millisecond + rand.N(200*time.Millisecond) // slow BMCs
			}
			return rand.N(5 * time.Millisecond)
		}
	})
	if rs, _ := s.store.Rollouts(); len(rs) != 0 {
		t.Fatalf("rollout started for hosts already current: %+v", rs)
	}
	// Hosts reboot on their own now and then: before their turn they must
	// get demo:1 again.
	stopChaos := make(chan struct{})
	var chaos sync.WaitGroup
	chaos.Add(1)
	go func() {
		defer chaos.Done()
		for {
			select {
			case <-stopChaos:
				return
			case <-time.After(5 * time.Millisecond):
				s.w.reboot(fmt.Sprintf("h%04d", rand.N(n)))
			}
		}
	}()
	s.src.promote("demo@stable", "demo:2")
	s.w.ctrl.Load().Wake()
	r := s.waitRollout(t, 1, 60*time.Second)
	close(stopChaos)
	chaos.Wait()
	s.w.check(t)
	if r.State != RolloutDone {
		t.Fatalf("rollout %+v", r)
	}
	c := s.w.ctrl.Load()
	var ready, quarantined int
	for _, h := range c.Status() {
		switch h.State {
		case StateReady:
			ready++
			if h.LastReport.Digest != simDigest("demo:2") {
				t.Errorf("%s ready on %s", h.Name, h.LastReport.Digest)
			}
		case StateQuarantined:
			quarantined++
		default:
			t.Errorf("%s: state %s", h.Name, h.State)
		}
	}
	if ready+quarantined != n || r.Failures != quarantined || r.Done != n-quarantined {
		t.Errorf("ready %d quarantined %d; rollout %+v", ready, quarantined, r)
	}
	t.Logf("%d hosts: %d ready, %d quarantined, at most %d out of service at once", n, ready, quarantined, s.w.maxDown)
}

func TestSimulationBudgetHalt(t *testing.T) {
	n := 300
	s := startSim(t, n, 20, "  canary: 0\n  batch: 20\n  boot_deadline: 1s\n  retries: 0\n  failure_budget: 5\n", func(w *simWorld) {
		w.failP = 0.3
	})
	s.src.promote("demo@stable", "demo:2")
	s.w.ctrl.Load().Wake()
	r := s.waitRollout(t, 1, 30*time.Second)
	s.w.check(t)
	if r.State != RolloutHalted || r.Failures <= 5 || !strings.Contains(r.Halt, "failure budget") {
		t.Fatalf("rollout %+v", r)
	}
	c := s.w.ctrl.Load()
	_, hosts, err := s.store.Rollout(r.ID)
	if err != nil {
		t.Fatal(err)
	}
	var pending, failed int
	for _, e := range hosts {
		switch e.Status {
		case HostPending:
			pending++
			if a := c.assignedOf(e.Name); a != simDigest("demo:1") {
				t.Errorf("%s never started but assigned %s", e.Name, a)
			}
		case HostFailed:
			failed++
		}
	}
	if pending == 0 || failed != r.Failures {
		t.Errorf("pending %d failed %d; rollout %+v", pending, failed, r)
	}
	// Nothing else starts while halted, and a pass does not undo the halt.
	c.Wake()
	time.Sleep(100 * time.Millisecond)
	if rs, _ := s.store.Rollouts(); rs[0].ID != r.ID || rs[0].State != RolloutHalted {
		t.Fatalf("after halt: %+v", rs[0])
	}
	// Resume with a fresh budget and working hosts: it finishes.
	s.w.mu.Lock()
	s.w.failP = 0
	s.w.mu.Unlock()
	if _, err := c.RolloutAction(r.ID, ActionResume); err != nil {
		t.Fatal(err)
	}
	r = s.waitRollout(t, 1, 30*time.Second)
	if r.State != RolloutDone {
		t.Fatalf("after resume: %+v", r)
	}
	t.Logf("halted after %d failures with %d hosts never started; resumed to done", failed, pending)
}
