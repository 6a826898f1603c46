package fleet

import (
	"math/rand/v2"
	"testing"
	"time"
)

// TestCrashResume stops the controller and closes the store at random
// points of a rollout, again and again, then reopens both: the rollout
// finishes, nothing committed is lost, and no host is reset twice for one
// step (with no failing boots, each host needs exactly one reset).
func TestCrashResume(t *testing.T) {
	const n, restarts = 60, 25
	s := startSim(t, n, 6, "  canary: 2\n  batch: 6\n  boot_deadline: 1s\n  retries: 3\n  failure_budget: 0\n", nil)
	s.src.promote("demo@stable", "demo:2")
	s.w.ctrl.Load().Wake()
	for i := range restarts {
		time.Sleep(10*time.Millisecond + rand.N(60*time.Millisecond))
		s.stop()
		if err := s.store.Close(); err != nil {
			t.Fatal(err)
		}
		store, err := OpenStoreWith(s.path, StoreOptions{NoSync: true})
		if err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
		s.store = store
		s.run(s.newController())
	}
	r := s.waitRollout(t, 1, 60*time.Second)
	s.w.check(t)
	if r.State != RolloutDone || r.Done != n || r.Failures != 0 || r.ID != 1 {
		t.Fatalf("rollout %+v", r)
	}
	c := s.w.ctrl.Load()
	for _, h := range c.Status() {
		if h.State != StateReady || h.LastReport.Digest != simDigest("demo:2") {
			t.Errorf("%s: %s, reported %v", h.Name, h.State, h.LastReport)
		}
	}
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	for name := range s.w.macs {
		if got := s.w.resets[name]; got != 1 {
			t.Errorf("%s was reset %d times", name, got)
		}
	}
	evs, err := s.store.Events(EventFilter{Rollout: r.ID, Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, e := range evs {
		kinds[e.Kind]++
	}
	if kinds["ready"] != n {
		t.Errorf("ready events %d, want %d (%v)", kinds["ready"], n, kinds)
	}
	t.Logf("%d restarts; events of the rollout: %v", restarts, kinds)
}
