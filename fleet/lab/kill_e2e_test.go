package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/phoenixboot/phoenix/fleet"
	"github.com/phoenixboot/phoenix/images"
	"github.com/phoenixboot/phoenix/redfish/vbmc"
)

// TestE2EKill9 kills the real phoenix server with SIGKILL at random points
// of rollouts, at least 20 times, and checks that it resumes and loses
// nothing: no acknowledged report, no rollout, no host reset twice for one
// attempt. The hosts are simulated (no QEMU): a fake System behind the real
// virtual BMC service boots a host by fetching its iPXE script and posting
// the report the demo image would post, so kills land in every phase of a
// step many times a second would allow with VMs.
func TestE2EKill9(t *testing.T) {
	if !InPrivateNetns() {
		runInNetns(t, requireLab(t), "TestE2EKill9")
		return
	}
	const (
		nHosts   = 12
		minKills = 20
		maxU     = 3 // the policy's max_unavailable
	)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	demo := os.Getenv("PHOENIX_DEMO_DIR")
	bin := os.Getenv("PHOENIX_BIN")
	dir := t.TempDir()
	if keep := os.Getenv("PHOENIX_E2E_DIR"); keep != "" {
		dir = keep // logs and state stay for a post-mortem
	}
	// demo:2 is demo:1 with another initrd: bytes appended make a new digest.
	initrd, err := os.ReadFile(filepath.Join(demo, "initrd.img"))
	if err != nil {
		t.Fatal(err)
	}
	initrd2 := filepath.Join(dir, "initrd2.img")
	if err := os.WriteFile(initrd2, append(initrd, []byte("\nkill9 v2\n")...), 0o644); err != nil {
		t.Fatal(err)
	}

	site := &Site{
		Name: "kill9", Net: Net{Bridge: "br0", CIDR: "10.94.0.1/24"},
		Phoenix: bin, Dir: dir, DHCP: "full", Range: "10.94.0.100-10.94.0.199", HTTPPort: 8080,
		ImageRef: "demo:1", Kernel: filepath.Join(demo, "vmlinuz"), Initrd: filepath.Join(demo, "initrd.img"),
		Cmdline: "console=ttyS0 quiet",
		PreStart: [][]string{
			{"image", "import", "demo:2", "--kernel", filepath.Join(demo, "vmlinuz"), "--initrd", initrd2, "--cmdline", "console=ttyS0 quiet"},
			{"image", "promote", "demo:1", "--channel", "stable"},
		},
	}
	// Loopback must be up before the BMC listens on it.
	if err := site.Net.Setup(); err != nil {
		t.Fatal(err)
	}
	site.NetReady = true

	w := &killWorld{ctx: ctx, url: site.URL(), spans: map[string][]killSpan{}, acks: map[string][]killAck{},
		postSeq: map[string]int{}, http: &http.Client{Timeout: 5 * time.Second}}
	var systems []vbmc.System
	var hostsYAML strings.Builder
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	for i := range nHosts {
		h := &killHost{w: w, name: fmt.Sprintf("k%02d", i+1), mac: fmt.Sprintf("52:54:00:94:00:%02x", i+1), uuid: fmt.Sprintf("00000000-0000-4000-8000-%012x", i+1),
			power: vbmc.PowerOff, boot: vbmc.BootOverride{Target: vbmc.TargetNone, Enabled: vbmc.OverrideDisabled, Mode: vbmc.ModeLegacy}}
		w.hosts = append(w.hosts, h)
		systems = append(systems, h)
		fmt.Fprintf(&hostsYAML, "- {name: %s, macs: [%q], bmc: {endpoint: \"http://%s\", system: %s}}\n", h.name, h.mac, ln.Addr(), h.name)
	}
	srv := &vbmc.Server{Systems: systems, Username: "admin", Password: "kill9-password"}
	var logins, logouts atomic.Int64
	counted := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/redfish/v1/SessionService/Sessions") {
			switch r.Method {
			case http.MethodPost:
				logins.Add(1)
			case http.MethodDelete:
				logouts.Add(1)
			}
		}
		srv.ServeHTTP(rw, r)
	})
	go (&http.Server{Handler: counted, ReadHeaderTimeout: 10 * time.Second}).Serve(ln)
	t.Cleanup(func() { ln.Close() })

	os.Setenv("PHOENIX_KILL9_BMC_PASSWORD", "kill9-password") // the server inherits it
	// boot_deadline is 30s, not minutes: a kill between committing a step's
	// intent and sending its reset leaves the reset "unknown", and phoenix
	// then waits out the deadline (never resending blindly); the simulated
	// hosts report within 2 s plus restarts, so 30 s is ample.
	site.FleetFile = `defaults:
  image: demo@stable
  bmc: {username: admin, credentials: env:PHOENIX_KILL9_BMC_PASSWORD}
policy:
  canary: 1
  batch: 3
  max_unavailable: 3
  boot_deadline: 30s
  retries: 1
  failure_budget: 2
  boot_override_once: true
hosts:
` + hostsYAML.String()
	if err := site.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { site.Stop() })
	var logs []string // phoenix log files, oldest first
	logs = append(logs, filepath.Join(dir, "phoenix.log"))
	defer func() {
		if t.Failed() {
			if b, err := os.ReadFile(logs[len(logs)-1]); err == nil {
				t.Logf("phoenix log (tail of %s):\n%s", logs[len(logs)-1], tail(string(b), 60))
			}
		}
	}()

	cli := siteCLI(ctx, t, site)
	digest := map[string]string{}
	for _, v := range []string{"1", "2"} {
		var info images.ImageInfo
		if err := json.Unmarshal([]byte(cli("image", "show", "demo:"+v, "-o", "json")), &info); err != nil || info.Digest == "" {
			t.Fatalf("image show demo:%s: %v", v, err)
		}
		digest[v] = info.Digest
	}
	if digest["1"] == digest["2"] {
		t.Fatal("demo:1 and demo:2 have the same digest")
	}

	status := func() (map[string]fleet.HostStatus, error) {
		list, err := site.HostStatus()
		if err != nil {
			return nil, err
		}
		out := map[string]fleet.HostStatus{}
		for _, h := range list {
			out[h.Name] = h
		}
		return out, nil
	}
	newest := func() (fleet.Rollout, error) {
		var rs []fleet.Rollout
		if err := GetJSON(site.URL()+"/api/v1/rollouts", &rs); err != nil {
			return fleet.Rollout{}, err
		}
		var last fleet.Rollout
		for _, r := range rs {
			if r.ID > last.ID {
				last = r
			}
		}
		return last, nil
	}
	// allOn says whether every host is ready with a report of d.
	allOn := func(st map[string]fleet.HostStatus, d string) bool {
		if len(st) != nHosts {
			return false
		}
		for _, h := range st {
			if h.State != fleet.StateReady || h.LastReport == nil || h.LastReport.Digest != d {
				return false
			}
		}
		return true
	}
	describe := func(st map[string]fleet.HostStatus) string {
		var b strings.Builder
		names := make([]string, 0, len(st))
		for n := range st {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			h := st[n]
			rep := ""
			if h.LastReport != nil {
				rep = h.LastReport.Digest
			}
			step := ""
			if h.Step != nil {
				step = fmt.Sprintf("attempt %d reset %s", h.Step.Attempt, h.Step.Reset)
			}
			fmt.Fprintf(&b, "  %s: %s reported %.19s assigned %.19s step %q failure %q quarantine %q\n", n, h.State, rep, h.Assigned, step, h.LastFailure, h.Quarantine)
		}
		return b.String()
	}

	// Phase 1: the new hosts are powered on and boot demo:1.
	start := time.Now()
	for {
		st, err := status()
		if err == nil && allOn(st, digest["1"]) {
			break
		}
		if time.Since(start) > 90*time.Second {
			t.Fatalf("hosts not all ready on demo:1 after 90s: %v\n%s", err, describe(st))
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Logf("KILL9 phase 1: all %d hosts ready on demo:1 after %s", nHosts, time.Since(start).Round(100*time.Millisecond))

	// restart starts phoenix again with the argv it was started with.
	argv := append([]string(nil), site.server.cmd.Args...)
	restart := func() {
		logPath := filepath.Join(dir, fmt.Sprintf("phoenix.%02d.log", len(logs)))
		p, err := StartProcess("phoenix-kill9", logPath, argv...)
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, logPath)
		site.server = p
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := WaitHTTP(wctx, site.URL()+"/healthz", p.Exited()); err != nil {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("restart: %v\n%s", err, tail(string(b), 40))
		}
	}
	// checkDurable checks that every report acknowledged before a kill is
	// (or has been overtaken by a newer one) in the restarted server.
	checkDurable := func(when string, before map[string]killAck) {
		st, err := status()
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		for name, ack := range before {
			h := st[name]
			if h.LastReport == nil {
				t.Errorf("%s: %s: report of boot %s (digest %.19s) acknowledged, but phoenix has no report: LOST", when, name, ack.bootID, ack.digest)
				continue
			}
			seq, ok := w.postSeq[h.LastReport.BootID]
			switch {
			case !ok:
				t.Errorf("%s: %s: phoenix shows a report of boot %q that no host sent", when, name, h.LastReport.BootID)
			case seq < ack.seq:
				t.Errorf("%s: %s: acknowledged report of boot %s (digest %.19s) LOST: phoenix shows the older boot %s (digest %.19s)",
					when, name, ack.bootID, ack.digest, h.LastReport.BootID, h.LastReport.Digest)
			case seq == ack.seq && h.LastReport.Digest != ack.digest:
				t.Errorf("%s: %s: boot %s acknowledged with digest %s, phoenix shows %s", when, name, ack.bootID, ack.digest, h.LastReport.Digest)
			}
		}
	}

	// Phase 2: rollouts under fire. demo:2 first; while fewer than
	// minKills kills happened, the channel goes back and forth (each move
	// is another rollout) and the last rollout is always to demo:2.
	kills := 0
	type round struct {
		target     string
		rollout    fleet.Rollout
		kills      int
		took       time.Duration
		resets     map[string]int
		boots      int
		maxOutSeen int
	}
	var rounds []round
	phase2 := time.Now()
	for r := 0; ; r++ {
		target := "2"
		if r%2 == 1 {
			target = "1"
		}
		if r > 0 && kills >= minKills && target == "1" {
			break
		}
		if r >= 9 {
			t.Errorf("still only %d kills after %d rollouts", kills, r)
			break
		}
		prev, err := newest()
		if err != nil {
			t.Fatal(err)
		}
		w.phase.Store(int32(r + 1))
		roundStart := time.Now()
		cli("image", "promote", "demo:"+target, "--channel", "stable")
		rd := round{target: target}
		done := func() (bool, fleet.Rollout, map[string]fleet.HostStatus) {
			st, err := status()
			if err != nil {
				t.Fatal(err)
			}
			last, err := newest()
			if err != nil {
				t.Fatal(err)
			}
			return last.ID > prev.ID && last.State == fleet.RolloutDone && allOn(st, digest[target]), last, st
		}
		for {
			if ok, last, _ := done(); ok {
				rd.rollout = last
				break
			}
			if time.Since(roundStart) > 150*time.Second {
				_, last, st := done()
				t.Fatalf("rollout to demo:%s not done after %s: newest rollout %d %s (%d/%d done, %d failed)\n%s",
					target, time.Since(roundStart).Round(time.Second), last.ID, last.State, last.Done, last.Hosts, last.Failures, describe(st))
			}
			if kills >= minKills {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			time.Sleep(200*time.Millisecond + rand.N(1800*time.Millisecond))
			if ok, last, _ := done(); ok {
				rd.rollout = last
				break
			}
			before := w.lastAcks()
			site.server.cmd.Process.Kill()
			<-site.server.Exited()
			kills++
			rd.kills++
			restart()
			checkDurable(fmt.Sprintf("after kill %d", kills), before)
		}
		rd.took = time.Since(roundStart)
		rd.resets, rd.boots = w.phaseCounts(r + 1)
		rd.maxOutSeen = w.maxOut(roundStart, time.Now())
		rounds = append(rounds, rd)
		t.Logf("KILL9 rollout %d to demo:%s done in %s with %d kills: %d hosts, %d done, %d failed; resets %v; %d boots; at most %d hosts out of service",
			rd.rollout.ID, target, rd.took.Round(100*time.Millisecond), rd.kills, rd.rollout.Hosts, rd.rollout.Done, rd.rollout.Failures, rd.resets, rd.boots, rd.maxOutSeen)
	}
	phase2Took := time.Since(phase2)

	// Quiet: nothing resets once every rollout is done.
	resetsBefore := w.totalResets()
	time.Sleep(3 * time.Second)
	if n := w.totalResets(); n != resetsBefore {
		t.Errorf("%d resets after the last rollout was done", n-resetsBefore)
	}

	// The verdict.
	st, err := status()
	if err != nil {
		t.Fatal(err)
	}
	if !allOn(st, digest["2"]) {
		t.Errorf("not all hosts ready on demo:2:\n%s", describe(st))
	}
	last, err := newest()
	if err != nil {
		t.Fatal(err)
	}
	if last.State != fleet.RolloutDone {
		t.Errorf("newest rollout %d is %q, want done", last.ID, last.State)
	}
	if kills < minKills {
		t.Errorf("only %d kills, want at least %d", kills, minKills)
	}
	// Every host's newest acknowledged report is what phoenix shows.
	checkDurable("at the end", w.lastAcks())
	final := w.lastAcks()
	for _, h := range w.hosts {
		a, ok := final[h.name]
		if !ok {
			t.Errorf("%s: no report was ever acknowledged", h.name)
			continue
		}
		if got := st[h.name].LastReport; got == nil || got.BootID != a.bootID || got.Digest != a.digest {
			t.Errorf("%s: newest acknowledged report is boot %s digest %s; phoenix shows %+v", h.name, a.bootID, a.digest, got)
		}
	}
	// Resets: at most one per attempt (retries 1: two per host and rollout),
	// and no more in all than one per host plus one per kill.
	var perHost []string
	for i, rd := range rounds {
		total := 0
		for name, n := range rd.resets {
			total += n
			if n > 2 {
				t.Errorf("rollout %d (demo:%s): %s was reset %d times; retries 1 allows 2", rd.rollout.ID, rd.target, name, n)
			}
		}
		if total > nHosts+rd.kills {
			t.Errorf("rollout %d (demo:%s): %d resets for %d hosts and %d kills", rd.rollout.ID, rd.target, total, nHosts, rd.kills)
		}
		if len(rd.resets) != nHosts {
			t.Errorf("rollout %d (demo:%s): only %d hosts were reset", rd.rollout.ID, rd.target, len(rd.resets))
		}
		perHost = append(perHost, fmt.Sprintf("r%d(demo:%s,%d kills)=%d", i+1, rd.target, rd.kills, total))
	}
	maxOut := w.maxOut(time.Time{}, time.Time{})
	w.mu.Lock()
	unarmed, bootsTotal := w.unarmed, len(w.bootLog)
	w.mu.Unlock()
	if maxOut > maxU {
		t.Errorf("%d hosts were out of service at once; max_unavailable is %d", maxOut, maxU)
	}
	if unarmed > 0 {
		t.Errorf("%d resets were sent without the one-time network boot override armed (boot_override_once: true)", unarmed)
	}
	var v2Resets []string
	for _, h := range w.hosts {
		n := 0
		for _, rd := range rounds {
			n += rd.resets[h.name]
		}
		v2Resets = append(v2Resets, fmt.Sprintf("%s:%d", h.name, n))
	}
	var resume int
	var evs []fleet.Event
	if err := GetJSON(site.URL()+"/api/v1/events?limit=100000", &evs); err == nil {
		for _, e := range evs {
			if e.Kind == "resume" {
				resume++
			}
		}
	}
	t.Logf("KILL9 BMC sessions: %d logins, %d logouts", logins.Load(), logouts.Load())
	t.Logf("KILL9: %d kills over %d rollouts, rollouts done in %s, resets per rollout %s, resets per host (all kill rollouts) %s, %d boots, at most %d hosts out of service (max_unavailable %d), %d resets resumed as unknown",
		kills, len(rounds), phase2Took.Round(100*time.Millisecond), strings.Join(perHost, " "), strings.Join(v2Resets, " "), bootsTotal, maxOut, maxU, resume)
}

// killWorld is the simulated hosts' side of TestE2EKill9: who is out of
// service and which reports phoenix acknowledged.
type killWorld struct {
	ctx   context.Context
	url   string
	http  *http.Client
	hosts []*killHost
	phase atomic.Int32 // the rollout resets are counted for (0: phase 1)

	mu      sync.Mutex
	spans   map[string][]killSpan // host → out-of-service spans, oldest first
	unarmed int
	bootLog []killBoot // every boot that got its script
	seq     int
	postSeq map[string]int       // boot ID → order in which its report was first posted
	acks    map[string][]killAck // host → acknowledged reports, oldest first
}

// killSpan is a host out of service: from a reset until phoenix had the
// report of that boot (end zero: not yet).
type killSpan struct {
	start, end time.Time
	gen        int
}

// maxOut returns the most hosts out of service at once between from and
// to (zero: no bound).
func (w *killWorld) maxOut(from, to time.Time) int {
	type edge struct {
		at time.Time
		d  int
	}
	var edges []edge
	w.mu.Lock()
	for _, ss := range w.spans {
		for _, s := range ss {
			end := s.end
			if end.IsZero() {
				end = time.Now()
			}
			edges = append(edges, edge{s.start, 1}, edge{end, -1})
		}
	}
	w.mu.Unlock()
	sort.Slice(edges, func(i, j int) bool {
		if edges[i].at.Equal(edges[j].at) {
			return edges[i].d < edges[j].d // an end before a start
		}
		return edges[i].at.Before(edges[j].at)
	})
	n, most := 0, 0
	for _, e := range edges {
		n += e.d
		if (from.IsZero() || !e.at.Before(from)) && (to.IsZero() || !e.at.After(to)) {
			most = max(most, n)
		}
	}
	return most
}

type killAck struct {
	seq            int
	bootID, digest string
	at             time.Time
}

type killBoot struct {
	host, digest string
	at           time.Time
	phase        int
}

type killReset struct {
	at    time.Time
	kind  string
	phase int
}

// lastAcks returns each host's newest acknowledged report.
func (w *killWorld) lastAcks() map[string]killAck {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]killAck{}
	for name, as := range w.acks {
		out[name] = as[len(as)-1]
	}
	return out
}

// phaseCounts returns the resets per host and the boots (script
// fetches) counted for phase.
func (w *killWorld) phaseCounts(phase int) (map[string]int, int) {
	resets, boots := map[string]int{}, 0
	for _, h := range w.hosts {
		h.mu.Lock()
		for _, r := range h.resets {
			if r.phase == phase {
				resets[h.name]++
			}
		}
		h.mu.Unlock()
	}
	w.mu.Lock()
	for _, b := range w.bootLog {
		if b.phase == phase {
			boots++
		}
	}
	w.mu.Unlock()
	return resets, boots
}

func (w *killWorld) totalResets() int {
	n := 0
	for _, h := range w.hosts {
		h.mu.Lock()
		n += len(h.resets)
		h.mu.Unlock()
	}
	return n
}

// killHost is a simulated server behind the virtual BMC (vbmc.System): a
// power state, a boot override, and a boot that is one script fetch and
// one report.
type killHost struct {
	w               *killWorld
	name, mac, uuid string

	mu     sync.Mutex
	power  string
	boot   vbmc.BootOverride
	gen    int // power events; a boot gives up when it is no longer current
	resets []killReset

	postMu sync.Mutex // a host posts one report at a time, in boot order
}

func (h *killHost) Info() vbmc.SystemInfo {
	return vbmc.SystemInfo{Name: h.name, UUID: h.uuid, MAC: h.mac, Firmware: vbmc.BIOS, Memory: 1024}
}

func (h *killHost) PowerState(context.Context) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.power, nil
}

func (h *killHost) Reset(_ context.Context, rt string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch rt {
	case vbmc.ResetOn:
		if h.power == vbmc.PowerOn {
			return nil // already on: nothing happens, as on a real BMC
		}
	case vbmc.ResetForceRestart, vbmc.ResetPowerCycle, vbmc.ResetGracefulRestart:
	case vbmc.ResetForceOff, vbmc.ResetGracefulShutdown:
		h.power = vbmc.PowerOff
		h.gen++
		h.w.mu.Lock()
		if n := len(h.w.spans[h.name]); n > 0 && h.w.spans[h.name][n-1].end.IsZero() {
			h.w.spans[h.name][n-1].end = time.Now()
		}
		h.w.mu.Unlock()
		return nil
	default:
		return fmt.Errorf("reset type %q not supported", rt)
	}
	h.power = vbmc.PowerOn
	h.gen++
	armed := h.boot.Enabled == vbmc.OverrideOnce && h.boot.Target == vbmc.TargetPxe
	if h.boot.Enabled == vbmc.OverrideOnce {
		h.boot.Enabled, h.boot.Target = vbmc.OverrideDisabled, vbmc.TargetNone
	}
	phase := int(h.w.phase.Load())
	h.resets = append(h.resets, killReset{at: time.Now(), kind: rt, phase: phase})
	w := h.w
	w.mu.Lock()
	if !armed {
		w.unarmed++
	}
	now := time.Now()
	if n := len(w.spans[h.name]); n > 0 && w.spans[h.name][n-1].end.IsZero() {
		w.spans[h.name][n-1].end = now // the newer boot replaces it
	}
	w.spans[h.name] = append(w.spans[h.name], killSpan{start: now, gen: h.gen})
	w.mu.Unlock()
	go h.run(h.gen)
	return nil
}

func (h *killHost) current(gen int) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gen == gen && h.w.ctx.Err() == nil
}

var digestParam = regexp.MustCompile(`phoenix\.digest=(sha256:[0-9a-f]{64})`)
var bootIDParam = regexp.MustCompile(`phoenix\.bootid=([A-Za-z0-9-]+)`)

// run is one boot: firmware and kernel time, the iPXE script, the report.
// Requests are retried while phoenix is down; the boot is abandoned only
// when a newer power event replaced it.
func (h *killHost) run(gen int) {
	w := h.w
	time.Sleep(300*time.Millisecond + rand.N(1200*time.Millisecond))
	var d, bootID string
	for {
		if !h.current(gen) {
			return
		}
		resp, err := w.http.Get(w.url + "/boot.ipxe?mac=" + h.mac)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			dm, bm := digestParam.FindSubmatch(body), bootIDParam.FindSubmatch(body)
			if resp.StatusCode == http.StatusOK && dm != nil && bm != nil {
				d, bootID = string(dm[1]), string(bm[1])
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	w.mu.Lock()
	w.bootLog = append(w.bootLog, killBoot{host: h.name, digest: d, at: time.Now(), phase: int(w.phase.Load())})
	w.mu.Unlock()
	h.postMu.Lock()
	defer h.postMu.Unlock()
	w.mu.Lock()
	w.seq++
	w.postSeq[bootID] = w.seq
	seq := w.seq
	w.mu.Unlock()
	body, _ := json.Marshal(map[string]string{"mac": h.mac, "digest": d, "boot_id": bootID, "host": h.name})
	// maybe is when the first attempt that phoenix may have recorded was
	// sent: phoenix acts on a report before its answer reaches the host,
	// and a kill can fall between the two.
	var maybe time.Time
	for {
		if !h.current(gen) {
			return
		}
		sent := time.Now()
		resp, err := w.http.Post(w.url+"/api/v1/report", "application/json", bytes.NewReader(body))
		if maybe.IsZero() && ((err != nil && !errors.Is(err, syscall.ECONNREFUSED)) || (err == nil && resp.StatusCode/100 == 2)) {
			maybe = sent
		}
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				w.mu.Lock()
				w.acks[h.name] = append(w.acks[h.name], killAck{seq: seq, bootID: bootID, digest: d, at: time.Now()})
				if n := len(w.spans[h.name]); n > 0 && w.spans[h.name][n-1].gen == gen && w.spans[h.name][n-1].end.IsZero() {
					w.spans[h.name][n-1].end = maybe
				}
				w.mu.Unlock()
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (h *killHost) BootOverride() vbmc.BootOverride {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.boot
}

func (h *killHost) AllowedTargets() []string {
	return []string{vbmc.TargetNone, vbmc.TargetPxe, vbmc.TargetCd, vbmc.TargetHdd}
}

func (h *killHost) SetBootOverride(b vbmc.BootOverride) error {
	if b.Mode == "" {
		b.Mode = vbmc.ModeLegacy
	}
	if b.Mode != vbmc.ModeLegacy {
		return fmt.Errorf("host %s: boot mode %q not allowed", h.name, b.Mode)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.boot = b
	return nil
}

func (h *killHost) Media() vbmc.Media { return vbmc.Media{} }

func (h *killHost) InsertMedia(context.Context, string) error {
	return fmt.Errorf("host %s: no virtual media", h.name)
}

func (h *killHost) EjectMedia(context.Context) error { return nil }
