package fleet

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// bigFleet is a fleet file of n hosts on image.
func bigFleet(n int, image string) []byte {
	var b strings.Builder
	b.WriteString("policy: {canary: 5, batch: 100, max_unavailable: 100}\ndefaults:\n  image: " + image + "\n  bmc: {username: admin, credentials: env:BMC_PASSWORD}\nhosts:\n")
	for i := range n {
		fmt.Fprintf(&b, "- name: node%05d\n  macs: ['02:00:00:%02x:%02x:%02x']\n  bmc: {endpoint: 'https://10.1.%d.%d'}\n  labels: {rack: r%03d}\n",
			i, i>>16&0xff, i>>8&0xff, i&0xff, i/250, i%250+1, i/40)
	}
	return []byte(b.String())
}

// BenchmarkPlanApply10k plans, then applies, a 10,000-host fleet file:
// first on a fresh store (every host new), then a change of image for
// every host. Each sub-benchmark times one plan or one apply.
func BenchmarkPlanApply10k(b *testing.B) {
	src := newSimImages("demo:1", "demo:2")
	files := [][]byte{bigFleet(10000, "demo:1"), bigFleet(10000, "demo:2")}
	for _, op := range []string{"plan", "apply"} {
		b.Run(op, func(b *testing.B) {
			b.StopTimer()
			for range b.N {
				store, err := OpenStore(filepath.Join(b.TempDir(), "phoenix.db"))
				if err != nil {
					b.Fatal(err)
				}
				c := &Controller{Store: store, Images: src}
				for i, data := range files {
					if op == "plan" || i == 0 {
						b.StartTimer()
					}
					pl, err := c.Plan(data)
					if op == "plan" {
						b.StopTimer()
					}
					if err != nil || len(pl.Reimage) != 10000 {
						b.Fatalf("plan: %v, %d to reimage", err, len(pl.Reimage))
					}
					if op == "apply" {
						b.StartTimer()
					}
					res, err := c.Apply(data, "")
					b.StopTimer()
					if err != nil || res.Revision != int64(i+1) {
						b.Fatalf("apply: %v", err)
					}
				}
				store.Close()
			}
			b.StartTimer()
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(2*b.N), "ms/op-each")
		})
	}
}

// rolloutTiming runs a rollout of n hosts, window at a time, each boot
// taking exactly boot, and returns its duration over the ideal
// (n/window boots back to back).
func rolloutTiming(t testing.TB, n, window int, boot time.Duration) float64 {
	s := startSim(t, n, window, fmt.Sprintf("  canary: 0\n  batch: %d\n  boot_deadline: 1m\n", window), func(w *simWorld) {
		w.bootDelay = func() time.Duration { return boot }
		w.bmcDelay = func() time.Duration { return 0 }
	})
	start := time.Now()
	s.src.promote("demo@stable", "demo:2")
	s.w.ctrl.Load().Wake()
	r := s.waitRollout(t, 1, time.Minute)
	took := time.Since(start)
	s.w.check(t)
	if r.State != RolloutDone || r.Done != n {
		t.Fatalf("rollout %+v", r)
	}
	ideal := time.Duration((n+window-1)/window) * boot
	return float64(took) / float64(ideal)
}

// BenchmarkRollout1000 reports how close a rollout of 1,000 simulated
// hosts, 100 at a time, comes to the simulated boot time (x-ideal = 1 is
// no overhead at all).
func BenchmarkRollout1000(b *testing.B) {
	for b.Loop() {
		b.ReportMetric(rolloutTiming(b, 1000, 100, time.Second), "x-ideal")
	}
}

func TestRolloutOverhead(t *testing.T) {
	if testing.Short() || os.Getenv("PHOENIX_PERF") == "" {
		t.Skip("timing target: run with PHOENIX_PERF=1 (make bench), not in the test suite (shared CPUs make timings noise)")
	}
	// Boots of 1 s: the ideal is 10 s, and 5 % leaves 50 ms per wave for
	// the controller's own latency and the machine's timer slack.
	ratio := rolloutTiming(t, 1000, 100, time.Second)
	t.Logf("1,000 hosts, 100 at a time, 1 s boots: %.3f × the ideal", ratio)
	if ratio > 1.05 {
		t.Errorf("rollout took %.3f × the simulated boot time, want ≤ 1.05", ratio)
	}
}
