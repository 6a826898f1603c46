package lab

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phoenixboot/phoenix/fleet"
	"github.com/phoenixboot/phoenix/redfish/vbmc"
)

// requireLab skips (or, under CI, fails) when the e2e test cannot run here.
func requireLab(t *testing.T) (root string) {
	t.Helper()
	root, _ = filepath.Abs("../..")
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "not root (needs network namespaces and tap devices)")
	}
	for _, bin := range []string{"qemu-system-x86_64", "unshare", "ip", "dnsmasq", "sfdisk", "mkfs.fat", "mcopy"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin+" not installed")
		}
	}
	for _, f := range []string{vbmc.OVMFCode, "/usr/lib/ipxe/undionly.kpxe", "/usr/lib/ipxe/snponly.efi",
		filepath.Join(demoDir(root), "vmlinuz"), filepath.Join(demoDir(root), "initrd.img"),
		filepath.Join(secureBootDir(root), "shimx64.efi"), filepath.Join(secureBootDir(root), "grubx64.efi")} {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f+" missing (make demo-image secureboot-loaders; Debian packages ovmf, ipxe)")
		}
	}
	if len(missing) > 0 {
		msg := "e2e cannot run: " + strings.Join(missing, "; ")
		if os.Getenv("CI") != "" {
			t.Fatal(msg) // CI installs all of it: a skip there would hide a broken boot path
		}
		t.Skip(msg)
	}
	return root
}

// secureBootDir holds the signed shim and GRUB (make secureboot-loaders).
func secureBootDir(root string) string {
	if d := os.Getenv("PHOENIX_SECUREBOOT_DIR"); d != "" {
		return d
	}
	return filepath.Join(root, "build", "secureboot")
}

func demoDir(root string) string {
	if d := os.Getenv("PHOENIX_DEMO_DIR"); d != "" {
		return d
	}
	return filepath.Join(root, "build", "demo")
}

// TestE2EBoot boots seven QEMU VMs from phoenix with real firmware, in
// parallel: SeaBIOS+iPXE, OVMF's own PXE and OVMF's UEFI HTTP boot, each
// against phoenix's full DHCP and against phoenix in proxy mode beside
// dnsmasq, and OVMF enforcing Secure Boot with Microsoft's keys, through
// shim and GRUB (full DHCP). Each must print
// the demo image's report marker and phoenix must have recorded the digest it
// served.
func TestE2EBoot(t *testing.T) {
	if !InPrivateNetns() {
		runInNetns(t, requireLab(t), "TestE2EBoot")
		return
	}
	e2eInNetns(t)
}

// runInNetns builds phoenix and re-runs the test named name alone inside a
// private network namespace (the kernel removes it, and everything the test
// made in it, when the test exits).
func runInNetns(t *testing.T, root, name string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "phoenix")
	build := exec.Command("go", "build", "-o", bin, "./cmd/phoenix")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build phoenix: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd, err := PrivateNetnsCmd(ctx, []string{os.Args[0], "-test.run=^" + name + "$", "-test.v", "-test.timeout=10m"})
	if err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(cmd.Env, "PHOENIX_BIN="+bin, "PHOENIX_DEMO_DIR="+demoDir(root), "PHOENIX_DEMO2_DIR="+demo2Dir(root),
		"PHOENIX_SECUREBOOT_DIR="+secureBootDir(root))
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s in a private network namespace: %v", name, err)
	}
}

func e2eInNetns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Minute)
	defer cancel()
	demo := os.Getenv("PHOENIX_DEMO_DIR")
	dir := t.TempDir()
	if keep := os.Getenv("PHOENIX_E2E_DIR"); keep != "" {
		dir = keep // logs and state stay for a post-mortem
	}
	// TCG boots are slow: give every VM the same generous deadline.
	timeout := 4 * time.Minute
	mk := func(name string, n Net, dhcp string, port int, hosts []fleet.Host) *Site {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return &Site{
			Name: name, Net: n, Phoenix: os.Getenv("PHOENIX_BIN"), Dir: d, DHCP: dhcp, HTTPPort: port,
			Range:    strings.TrimSuffix(n.IP(), ".1") + ".100-" + strings.TrimSuffix(n.IP(), ".1") + ".199",
			ImageRef: "demo:1", Kernel: filepath.Join(demo, "vmlinuz"), Initrd: filepath.Join(demo, "initrd.img"),
			Cmdline: "console=ttyS0 quiet", Hosts: hosts,
		}
	}
	full := mk("full", Net{Bridge: "br0", CIDR: "10.99.0.1/24", Taps: []string{"tap0", "tap1", "tap4", "tap6"}}, "full", 8080, []fleet.Host{
		{Name: "bios1", MACs: []string{"52:54:00:99:00:01"}, Image: "demo:1"},
		{Name: "uefi1", MACs: []string{"52:54:00:99:00:02"}, Image: "demo:1"},
		{Name: "http1", MACs: []string{"52:54:00:99:00:03"}, Image: "demo:1"},
		{Name: "sb1", MACs: []string{"52:54:00:99:00:04"}, Image: "demo:1", SecureBoot: true},
	})
	sb := os.Getenv("PHOENIX_SECUREBOOT_DIR")
	full.Extra = []string{"--shim-file", filepath.Join(sb, "shimx64.efi"), "--grub-file", filepath.Join(sb, "grubx64.efi")}
	proxy := mk("proxy", Net{Bridge: "br1", CIDR: "10.98.0.1/24", Taps: []string{"tap2", "tap3", "tap5"}}, "proxy", 8081, []fleet.Host{
		{Name: "proxy1", MACs: []string{"52:54:00:98:00:01"}, Image: "demo:1"},
		{Name: "proxy2", MACs: []string{"52:54:00:98:00:02"}, Image: "demo:1"},
		{Name: "proxy3", MACs: []string{"52:54:00:98:00:03"}, Image: "demo:1"},
	})
	for _, s := range []*Site{full, proxy} {
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Stop)
	}
	dns, err := StartDnsmasq(ctx, proxy.Dir, "br1", "10.98.0.2/24", "10.98.0.100", "10.98.0.199")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dns.Stop)

	type run struct {
		site *Site
		vms  []*VM
	}
	runs := []run{
		{full, []*VM{
			{Name: "bios1", MAC: "52:54:00:99:00:01", Tap: "tap0", Firmware: BIOS},
			{Name: "uefi1", MAC: "52:54:00:99:00:02", Tap: "tap1", Firmware: UEFI},
			{Name: "http1", MAC: "52:54:00:99:00:03", Tap: "tap4", Firmware: UEFI, HTTPBoot: true},
			{Name: "sb1", MAC: "52:54:00:99:00:04", Tap: "tap6", Firmware: UEFI, SecureBoot: true},
		}},
		{proxy, []*VM{
			{Name: "proxy1", MAC: "52:54:00:98:00:01", Tap: "tap2", Firmware: BIOS},
			{Name: "proxy2", MAC: "52:54:00:98:00:02", Tap: "tap3", Firmware: UEFI},
			{Name: "proxy3", MAC: "52:54:00:98:00:03", Tap: "tap5", Firmware: UEFI, HTTPBoot: true},
		}},
	}
	resc := make(chan []Result, len(runs))
	for _, r := range runs {
		go func() { resc <- BootAll(ctx, r.site, r.vms, timeout, testWriter{t}) }()
		for _, vm := range r.vms {
			t.Cleanup(vm.Stop)
		}
	}
	var all []Result
	for range runs {
		all = append(all, <-resc...)
	}
	for _, r := range all {
		if r.Err != nil {
			t.Errorf("%s (%s): %v", r.VM, r.Firmware, r.Err)
			continue
		}
		t.Logf("BOOT %s (%s): QEMU start -> report %s, digest %s, state %s", r.VM, r.Firmware, r.Took.Round(100*time.Millisecond), r.Digest, r.State)
	}
	// The boot timeline: every phase of every boot, as phoenix saw it.
	for _, r := range runs {
		for _, vm := range r.vms {
			var boots []struct {
				Steps []struct {
					Phase string `json:"phase"`
					After int64  `json:"after_ns"`
				} `json:"steps"`
			}
			if err := GetJSON(r.site.URL()+"/api/v1/boots/"+vm.MAC, &boots); err != nil || len(boots) == 0 {
				t.Errorf("%s: no boot timeline: %v", vm.Name, err)
				continue
			}
			var line []string
			for _, st := range boots[0].Steps {
				line = append(line, fmt.Sprintf("%s@%.1fs", st.Phase, float64(st.After)/1e9))
			}
			t.Logf("TIMELINE %s: %s", vm.Name, strings.Join(line, " "))
			// How OVMF got iPXE: TFTP after PXE, HTTP after UEFI HTTP
			// boot. (SeaBIOS's NIC ROM is iPXE already: neither.)
			joined := strings.Join(line, " ")
			tftp, http := strings.Contains(joined, "tftp@"), strings.Contains(joined, "http-boot@")
			if vm.Firmware == UEFI && (tftp == vm.HTTPBoot || http != vm.HTTPBoot) {
				t.Errorf("%s (HTTP boot %v): timeline has tftp %v, http-boot %v", vm.Name, vm.HTTPBoot, tftp, http)
			}
			if last := boots[0].Steps[len(boots[0].Steps)-1]; last.Phase != "report" {
				t.Errorf("%s: timeline ends at %q, not report", vm.Name, last.Phase)
			}
			// Secure Boot: shim, GRUB, its config (the script phase)
			// and the kernel and initrd all came over TFTP, and the
			// firmware enforced signatures all the way.
			if vm.SecureBoot {
				for _, p := range []string{"tftp@", "script@", "kernel@", "initrd@"} {
					if !strings.Contains(joined, p) {
						t.Errorf("%s: timeline lacks %s", vm.Name, strings.TrimSuffix(p, "@"))
					}
				}
			}
			if b, err := os.ReadFile(vm.Serial); err != nil {
				t.Error(err)
			} else if on := strings.Contains(string(b), "kernel: Secure boot enabled"); on != vm.SecureBoot {
				t.Errorf("%s: kernel saw Secure Boot on: %v, want %v", vm.Name, on, vm.SecureBoot)
			}
		}
	}
	if resp, err := http.Get(full.URL() + "/metrics"); err != nil {
		t.Error(err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), `phoenix_boot_phase_seconds_count{phase="report"} 4`) {
			t.Errorf("/metrics lacks the four reported boots:\n%s", grepLines(string(body), "phoenix_"))
		}
	}
	// The dashboard is served by the real server beside the boot routes.
	if resp, err := http.Get(full.URL() + "/"); err != nil {
		t.Error(err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "/ui/app.js") || resp.Header.Get("Content-Security-Policy") == "" {
			t.Errorf("dashboard: %s, CSP %q:\n%.300s", resp.Status, resp.Header.Get("Content-Security-Policy"), body)
		}
	}
	if t.Failed() {
		if b, err := os.ReadFile(filepath.Join(proxy.Dir, "dnsmasq.log")); err == nil {
			t.Logf("dnsmasq log (tail):\n%s", tail(string(b), 30))
		}
		for _, s := range []*Site{full, proxy} {
			if b, err := os.ReadFile(filepath.Join(s.Dir, "phoenix.log")); err == nil {
				t.Logf("phoenix %s log (tail):\n%s", s.Name, tail(string(b), 60))
			}
		}
		for _, r := range runs {
			for _, vm := range r.vms {
				if b, err := os.ReadFile(vm.Serial); err == nil {
					t.Logf("%s serial (tail):\n%s", vm.Name, tail(string(b), 40))
				}
			}
		}
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// logOnFailure makes t log, if it failed, the tails of the machines'
// serial consoles and of the phoenix log in dir: what a failed lab test
// needs to be read without rerunning it.
func logOnFailure(t *testing.T, dir string, machines ...*vbmc.Machine) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, m := range machines {
			t.Logf("%s serial (tail):\n%s", m.Name, tail(m.Console(), 40))
		}
		if b, err := os.ReadFile(filepath.Join(dir, "phoenix.log")); err == nil {
			t.Logf("phoenix log (tail):\n%s", tail(string(b), 60))
		}
	})
}

// hostStatus is the site's status of host name (zero if it has none).
func hostStatus(t *testing.T, site *Site, name string) fleet.HostStatus {
	t.Helper()
	list, err := site.HostStatus()
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range list {
		if h.Name == name {
			return h
		}
	}
	return fleet.HostStatus{}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// testWriter sends progress lines to the test log as they happen.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// siteCLI returns a function that runs phoenix commands against site and
// fails the test on error.
func siteCLI(ctx context.Context, t *testing.T, site *Site) func(args ...string) string {
	return func(args ...string) string {
		t.Helper()
		out, err := site.CLI(ctx, args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
}
