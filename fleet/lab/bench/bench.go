// Package bench measures phoenix against the peers operators would replace
// with it (dnsmasq, ISC Kea, tftpd-hpa, nginx): DHCP exchange rates, TFTP
// and HTTP transfers, a 500-client boot storm with malformed packets mixed
// in, and one QEMU VM's power-on-to-report time. Every peer runs in the same
// run, on the same veth pair, as phoenix.
//
// It is what `phoenix lab bench` runs. It is not a test suite and not needed
// in production: it must run as root inside a private network namespace
// (lab.PrivateNetnsCmd), where it creates a veth pair into a second,
// anonymous namespace for the load generators. Addresses live only inside
// those namespaces, and every process it starts is stopped by PID.
package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Options say what to measure and how hard.
type Options struct {
	// Phoenix is the phoenix binary to measure (required).
	Phoenix string
	// Kernel and Initrd are the demo image (make demo-image), used by the
	// boot storm and the QEMU boot time.
	Kernel, Initrd string
	// Dir is the work directory for state, configs and logs (required).
	Dir string
	// Quick runs fewer, smaller runs: a few minutes instead of ~13.
	Quick bool
	// Only, if not empty, names the parts to run: dhcp, tftp, http,
	// storm, boot.
	Only []string
	// Runs overrides how many times each figure is measured (default 3,
	// 1 with Quick).
	Runs int
	// Progress receives one line per step; nil discards.
	Progress io.Writer
}

// Parts are the benchmark parts in the order they run.
var Parts = []string{"dhcp", "tftp", "http", "storm", "boot"}

// Row is one line of the result table: a figure measured for phoenix and,
// when a peer does the same job, for that peer.
type Row struct {
	Part   string
	Metric string
	Unit   string
	// Phoenix and Peer hold one value per run.
	Phoenix  []float64
	PeerName string
	Peer     []float64
	// Goal is a human statement of the target ("≥ 1.0× kea"); Met says
	// whether it was reached ("" when the row has no goal).
	Goal string
	Met  string
	Note string
}

// Report is the outcome of a whole run.
type Report struct {
	Start, End time.Time
	Rows       []Row
	// Errors are parts that could not be measured, with why.
	Errors []string
}

func (o *Options) runs() int {
	if o.Runs > 0 {
		return o.Runs
	}
	if o.Quick {
		return 1
	}
	return 3
}

func (o *Options) want(part string) bool {
	return len(o.Only) == 0 || slices.Contains(o.Only, part)
}

func (o *Options) logf(format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "bench: "+format+"\n", args...)
	}
}

// Run measures every part Options asks for and returns the table. It must
// run inside a private network namespace (see package doc). A part that
// fails is recorded in Report.Errors and the others still run.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Phoenix == "" || o.Dir == "" {
		return nil, errors.New("bench: Phoenix and Dir are required")
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("bench: needs root (network namespaces, veth pairs, peers on port 67/69)")
	}
	for _, p := range o.Only {
		if !slices.Contains(Parts, p) {
			return nil, fmt.Errorf("bench: unknown part %q (parts: %s)", p, strings.Join(Parts, ", "))
		}
	}
	ev, err := newEnv(ctx, &o)
	if err != nil {
		return nil, err
	}
	defer ev.close()
	rep := &Report{Start: time.Now()}
	steps := []struct {
		name string
		fn   func(context.Context, *env) ([]Row, error)
	}{
		{"dhcp", benchDHCP}, {"tftp", benchTFTP}, {"http", benchHTTP}, {"storm", benchStorm}, {"boot", benchBoot},
	}
	for _, s := range steps {
		if !o.want(s.name) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		o.logf("== %s", s.name)
		t0 := time.Now()
		rows, err := s.fn(ctx, ev)
		rep.Rows = append(rep.Rows, rows...)
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", s.name, err))
			o.logf("%s: %v", s.name, err)
		}
		o.logf("%s took %s", s.name, time.Since(t0).Round(time.Second))
	}
	rep.End = time.Now()
	return rep, ctx.Err()
}

// median returns the median of vs (NaN when empty).
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ratios returns a[i]/b[i] for the pairs both slices have.
func ratios(a, b []float64) []float64 {
	out := make([]float64, 0, min(len(a), len(b)))
	for i := range min(len(a), len(b)) {
		out = append(out, a[i]/b[i])
	}
	return out
}

// total returns the sum of vs.
func total(vs []float64) float64 {
	t := 0.0
	for _, v := range vs {
		t += v
	}
	return t
}

func spread(vs []float64) string {
	if len(vs) < 2 {
		return ""
	}
	return fmt.Sprintf(" [%s–%s]", num(slices.Min(vs)), num(slices.Max(vs)))
}

func num(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "-"
	case a == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

// Ratio is median(phoenix)/median(peer), NaN when there is no peer.
func (r Row) Ratio() float64 {
	if len(r.Peer) == 0 || len(r.Phoenix) == 0 {
		return math.NaN()
	}
	p := median(r.Peer)
	if p == 0 {
		return math.NaN()
	}
	return median(r.Phoenix) / p
}

// WriteTable prints the report as one aligned table: medians with the
// [min–max] spread over the runs, and the ratio phoenix/peer.
func (rep *Report) WriteTable(w io.Writer, o Options) {
	fmt.Fprintf(w, "phoenix bench %s, %d CPU cores, %d run(s) per figure%s, %s\n",
		rep.Start.UTC().Format("2006-01-02 15:04 MST"), numCPU(), o.runs(), map[bool]string{true: " (--quick)"}[o.Quick],
		rep.End.Sub(rep.Start).Round(time.Second))
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "part\tmetric\tunit\tphoenix\tpeer\tpeer value\tratio\tgoal\tmet\tnote")
	for _, r := range rep.Rows {
		ph := num(median(r.Phoenix)) + spread(r.Phoenix)
		peer := "-"
		if len(r.Peer) > 0 {
			peer = num(median(r.Peer)) + spread(r.Peer)
		}
		ratio := "-"
		if x := r.Ratio(); !math.IsNaN(x) {
			ratio = fmt.Sprintf("%.2f×", x)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Part, r.Metric, r.Unit, ph,
			cmp.Or(r.PeerName, "-"), peer, ratio, cmp.Or(r.Goal, "-"), cmp.Or(r.Met, "-"), r.Note)
	}
	tw.Flush()
	for _, e := range rep.Errors {
		fmt.Fprintf(w, "NOT MEASURED: %s\n", e)
	}
}

func numCPU() int {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(data), "\nprocessor") + map[bool]int{true: 1}[strings.HasPrefix(string(data), "processor")]
}

// yesNo turns a goal check into the table's "met" column.
func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

// partDir makes a fresh directory under the work dir, world-readable since
// tftpd-hpa and nginx workers run as nobody.
func (e *env) partDir(name string) (string, error) {
	d := filepath.Join(e.o.Dir, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", err
	}
	return d, os.Chmod(d, 0o755)
}
