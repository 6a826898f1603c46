package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phoenixboot/phoenix/fleet"
	"github.com/phoenixboot/phoenix/images"
	"github.com/phoenixboot/phoenix/redfish/vbmc"
)

// TestE2EFleet is the whole loop with real firmware: three VMs behind the
// virtual BMC (HTTPS, self-signed) follow demo@stable. v1 everywhere; promote v2 → the canary
// first, then the rest, never more than max_unavailable booting at once;
// promote a broken v3 (its initrd has no init, so it never reports) → the
// canary misses its deadline, is quarantined, the rollout halts and the
// other two stay on v2; roll the channel back and release the canary → it
// returns to v2.
func TestE2EFleet(t *testing.T) {
	if !InPrivateNetns() {
		root := requireLab(t)
		if _, err := os.Stat(filepath.Join(demo2Dir(root), "initrd.img")); err != nil {
			t.Fatal("needs build/demo2 (make demo-image)")
		}
		runInNetns(t, root, "TestE2EFleet")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	demo, demo2 := os.Getenv("PHOENIX_DEMO_DIR"), os.Getenv("PHOENIX_DEMO2_DIR")
	bin := os.Getenv("PHOENIX_BIN")
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken-initrd.img")
	if err := os.WriteFile(broken, []byte("not an initramfs: the kernel finds no init and never reports\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// The virtual BMC, on this namespace's loopback.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"node1", "node2", "node3"}
	var machines []*vbmc.Machine
	var systems []vbmc.System
	var hosts strings.Builder
	for i, name := range names {
		mac := fmt.Sprintf("52:54:00:95:00:%02x", i+1)
		m := &vbmc.Machine{Name: name, MAC: mac, Tap: fmt.Sprintf("tap%d", i), Firmware: vbmc.BIOS,
			WorkDir: filepath.Join(dir, name), SerialLog: filepath.Join(dir, name+".serial.log")}
		machines = append(machines, m)
		systems = append(systems, m)
		fmt.Fprintf(&hosts, "- {name: %s, macs: [%q], bmc: {endpoint: \"https://%s\", system: %s}}\n", name, mac, ln.Addr(), name)
	}
	os.Setenv("PHOENIX_LAB_BMC_PASSWORD", "lab-password") // the server inherits it: credentials: env:…
	fleetFile := `defaults:
  image: demo@stable
  bmc: {username: admin, credentials: env:PHOENIX_LAB_BMC_PASSWORD, insecure: true}
policy:
  canary: 1
  batch: 2
  max_unavailable: 2
  boot_deadline: 75s
  retries: 0
  failure_budget: 0
  boot_override_once: true
hosts:
` + hosts.String()
	site := &Site{
		Name: "fleet", Net: Net{Bridge: "br0", CIDR: "10.95.0.1/24", Taps: []string{"tap0", "tap1", "tap2"}},
		Phoenix: bin, Dir: dir, DHCP: "full", Range: "10.95.0.100-10.95.0.199", HTTPPort: 8080,
		ImageRef: "demo:1", Kernel: filepath.Join(demo, "vmlinuz"), Initrd: filepath.Join(demo, "initrd.img"),
		Cmdline: "console=ttyS0 quiet", FleetFile: fleetFile,
		PreStart: [][]string{
			{"image", "import", "demo:2", "--kernel", filepath.Join(demo2, "vmlinuz"), "--initrd", filepath.Join(demo2, "initrd.img"), "--cmdline", "console=ttyS0 quiet"},
			{"image", "import", "demo:3", "--kernel", filepath.Join(demo, "vmlinuz"), "--initrd", broken, "--cmdline", "console=ttyS0 quiet panic=0"},
			{"image", "promote", "demo:1", "--channel", "stable"},
		},
	}
	// The VMs exist (powered off) before phoenix starts and powers them on;
	// QEMU opens their taps, so the network comes first.
	if err := site.Net.Setup(); err != nil {
		t.Fatal(err)
	}
	site.NetReady = true
	for _, m := range machines {
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Stop)
	}
	// HTTPS with a self-signed certificate, as real BMCs: the controller's
	// Redfish calls go through TLS with checks off (insecure: true).
	bmcTLS, _, err := vbmc.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	srv := &vbmc.Server{Systems: systems, Username: "admin", Password: "lab-password", TLS: bmcTLS}
	go srv.Serve(ctx, ln)
	if err := site.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(site.Stop)
	logOnFailure(t, dir, machines...)

	cli := siteCLI(ctx, t, site)
	digest := map[string]string{}
	for _, v := range []string{"1", "2", "3"} {
		var info images.ImageInfo
		if err := json.Unmarshal([]byte(cli("image", "show", "demo:"+v, "-o", "json")), &info); err != nil {
			t.Fatal(err)
		}
		digest[v] = info.Digest
	}

	// Watch the invariant from the machines' side: a VM is out of service
	// from its power-on until its serial console shows the report of that
	// boot (the demo host then powers itself off). Never more than
	// max_unavailable at once. Quarantined hosts are left powered for
	// post-mortem and no longer count.
	var mu sync.Mutex
	maxOn, quarantined := 0, map[string]bool{}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() {
		wasOn := map[string]bool{}
		reportsAtOn := map[string]int{}
		for watchCtx.Err() == nil {
			out := 0
			mu.Lock()
			for _, m := range machines {
				st, err := m.PowerState(watchCtx)
				on := err == nil && st == vbmc.PowerOn
				reports := strings.Count(m.Console(), ReportMarker)
				if on && !wasOn[m.Name] {
					reportsAtOn[m.Name] = reports
				}
				wasOn[m.Name] = on
				if on && reports == reportsAtOn[m.Name] && !quarantined[m.Name] {
					out++
				}
			}
			maxOn = max(maxOn, out)
			mu.Unlock()
			time.Sleep(200 * time.Millisecond)
		}
	}()

	status := func() map[string]fleet.HostStatus {
		list, err := site.HostStatus()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]fleet.HostStatus{}
		for _, h := range list {
			out[h.Name] = h
		}
		return out
	}
	reported := func(h fleet.HostStatus) string {
		if h.LastReport == nil {
			return ""
		}
		return h.LastReport.Digest
	}
	// waitFor polls until cond holds for the hosts, logging progress.
	waitFor := func(what string, limit time.Duration, cond func(map[string]fleet.HostStatus) bool) map[string]fleet.HostStatus {
		start := time.Now()
		for {
			st := status()
			if cond(st) {
				t.Logf("FLEET %s after %s", what, time.Since(start).Round(time.Second))
				return st
			}
			if time.Since(start) > limit {
				var b strings.Builder
				for _, n := range names {
					fmt.Fprintf(&b, "  %s: state %s, reported %.19s, assigned %.19s, quarantine %q, failure %q\n", n, st[n].State, reported(st[n]), st[n].Assigned, st[n].Quarantine, st[n].LastFailure)
				}
				t.Fatalf("%s: not after %s\n%s", what, limit, b.String())
			}
			time.Sleep(time.Second)
		}
	}
	all := func(v string) func(map[string]fleet.HostStatus) bool {
		return func(st map[string]fleet.HostStatus) bool {
			for _, n := range names {
				if st[n].State != fleet.StateReady || reported(st[n]) != digest[v] {
					return false
				}
			}
			return true
		}
	}

	waitFor("all three report v1", 5*time.Minute, all("1"))

	cli("image", "promote", "demo:2", "--channel", "stable")
	var canary string
	waitFor("the canary reports v2 first", 3*time.Minute, func(st map[string]fleet.HostStatus) bool {
		var on2 []string
		for _, n := range names {
			if reported(st[n]) == digest["2"] {
				on2 = append(on2, n)
			}
		}
		if len(on2) > 1 {
			t.Fatalf("%v reported v2 together: the canary must go first", on2)
		}
		if len(on2) == 1 {
			canary = on2[0]
		}
		return canary != ""
	})
	waitFor("the rest report v2", 4*time.Minute, all("2"))
	mu.Lock()
	if maxOn > 2 {
		t.Errorf("%d VMs were booting at once; max_unavailable is 2", maxOn)
	}
	t.Logf("FLEET at most %d VMs booting at once (max_unavailable 2)", maxOn)
	mu.Unlock()

	cli("image", "promote", "demo:3", "--channel", "stable")
	st := waitFor("the broken v3 canary is quarantined", 4*time.Minute, func(st map[string]fleet.HostStatus) bool {
		for _, n := range names {
			if st[n].State == fleet.StateQuarantined {
				canary = n
				return true
			}
		}
		return false
	})
	mu.Lock()
	quarantined[canary] = true
	mu.Unlock()
	t.Logf("FLEET quarantined %s: %s", canary, st[canary].Quarantine)
	var rollouts []fleet.Rollout
	if err := GetJSON(site.URL()+"/api/v1/rollouts", &rollouts); err != nil {
		t.Fatal(err)
	}
	var last fleet.Rollout // the newest: the v3 one
	for _, r := range rollouts {
		if r.ID > last.ID {
			last = r
		}
	}
	if last.State != fleet.RolloutHalted {
		t.Fatalf("the v3 rollout %d is %q, want halted", last.ID, last.State)
	}
	t.Logf("FLEET rollout %d halted: %s", last.ID, last.Halt)
	time.Sleep(5 * time.Second) // nothing else may move
	st = status()
	for _, n := range names {
		if n != canary && reported(st[n]) != digest["2"] {
			t.Fatalf("%s left v2 while the rollout is halted: %s", n, reported(st[n]))
		}
	}

	// The operator's hand on the quarantined canary's power, through
	// phoenix (which holds the BMC credentials): off at once, then on. A
	// host in service is refused: phoenix owns its power.
	var inService string
	for _, n := range names {
		if n != canary {
			inService = n
			break
		}
	}
	if out, err := site.CLI(ctx, "host", "power", inService, "off"); err == nil || !strings.Contains(out, "quarantine") {
		t.Errorf("host power off of %s, in service: %v\n%s", inService, err, out)
	}
	var canaryVM *vbmc.Machine
	for _, m := range machines {
		if m.Name == canary {
			canaryVM = m
		}
	}
	for _, step := range []struct{ action, want string }{{"off", "Off"}, {"status", "Off"}, {"on", "On"}} {
		var pr fleet.PowerResult
		if err := json.Unmarshal([]byte(cli("host", "power", canary, step.action, "--graceful", "0", "-o", "json")), &pr); err != nil {
			t.Fatal(err)
		}
		vmState, err := canaryVM.PowerState(ctx)
		if err != nil || pr.Power != step.want || vmState != step.want {
			t.Fatalf("host power %s %s: phoenix says %q, the VM is %q (%v); want %s", canary, step.action, pr.Power, vmState, err, step.want)
		}
	}
	if show := cli("host", "show", canary); !strings.Contains(show, "power off (graceful for 0s) by the operator: now Off") {
		t.Errorf("host show lacks the power events:\n%s", show)
	}
	t.Logf("FLEET host power %s off, status, on: as the VM says", canary)

	cli("image", "rollback", "demo", "--channel", "stable")
	cli("host", "release", canary)
	mu.Lock()
	delete(quarantined, canary)
	mu.Unlock()
	waitFor("the released canary returns to v2", 4*time.Minute, all("2"))

	// What a CI system reflashing a test machine does: reimage one host now
	// and wait for it; the answer carries the boot's phases.
	var outcome struct {
		Result string `json:"result"`
		Boots  []struct {
			Steps []struct {
				Phase string `json:"phase"`
			} `json:"steps"`
		} `json:"boots"`
	}
	other := names[0]
	if other == canary {
		other = names[1]
	}
	if err := json.Unmarshal([]byte(cli("host", "reimage", other, "--wait", "--timeout", "4m", "-o", "json")), &outcome); err != nil {
		t.Fatal(err)
	}
	if outcome.Result != "ready" || len(outcome.Boots) == 0 {
		t.Fatalf("host reimage --wait: %+v", outcome)
	}
	var phases []string
	for _, st := range outcome.Boots[0].Steps {
		phases = append(phases, st.Phase)
	}
	t.Logf("FLEET host reimage %s --wait: %s, phases %s", other, outcome.Result, strings.Join(phases, " "))
	if show := cli("host", "show", other); !strings.Contains(show, "Boots") || !strings.Contains(show, "report ") {
		t.Errorf("host show lacks the boot timeline:\n%s", show)
	} else {
		t.Logf("host show %s:\n%s", other, show)
	}
	t.Logf("history:\n%s", cli("image", "history", "demo"))
}
