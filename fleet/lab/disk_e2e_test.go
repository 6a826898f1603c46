package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phoenixboot/phoenix/fleet"
	"github.com/phoenixboot/phoenix/images"
	"github.com/phoenixboot/phoenix/redfish/vbmc"
)

// diskWritten is what the demo installer prints once the image on the
// disk has been read back and its sha256 matches (assets/demo/init).
const diskWritten = "PHOENIX-DISK-WRITTEN"

// TestE2EDisk is disk mode with real firmware. A SeaBIOS VM with an empty
// disk, behind the virtual BMC, follows os@stable in disk mode; each image
// version's disk artifact is a boot sector that prints its own marker.
// phoenix powers the VM on into PXE once; the demo initrd, as installer,
// writes the disk image to the VM's disk, reads it back and checks its
// sha256, reports and reboots, and the VM boots its disk. From then on
// phoenix's script for the host says "boot from local disk", and a
// network boot (a one-time PXE override, as when PXE comes first in a
// server's boot order) falls through to the disk. Promoting v2 rewrites
// the disk the same way, and the VM boots v2 from it. A v3 whose disk
// image is larger than the disk is refused by the installer before it
// writes anything; it posts a failure report saying why, so phoenix
// quarantines the host at once (not at its deadline) with that reason,
// and v2 is still on its disk.
func TestE2EDisk(t *testing.T) {
	if !InPrivateNetns() {
		runInNetns(t, requireLab(t), "TestE2EDisk")
		return
	}
	diskInNetns(t, vbmc.BIOS)
}

// TestE2EDiskUEFI is TestE2EDisk on OVMF: each version's disk image is a
// GPT disk whose EFI system partition holds a UEFI application printing
// the marker. It checks above all what differs on UEFI: the "boot from
// local disk" script must hand the firmware a failure status, or EDK2
// (like many vendors' firmware) stops in its boot menu instead of trying
// the disk.
func TestE2EDiskUEFI(t *testing.T) {
	if !InPrivateNetns() {
		runInNetns(t, requireLab(t), "TestE2EDiskUEFI")
		return
	}
	diskInNetns(t, vbmc.UEFI)
}

func diskInNetns(t *testing.T, firmware string) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	demo := os.Getenv("PHOENIX_DEMO_DIR")
	dir := t.TempDir()
	if keep := os.Getenv("PHOENIX_E2E_DIR"); keep != "" {
		dir = keep
	}

	// Three "operating systems" to install (the third does not fit), and
	// an empty disk to install them on: the VM's firmware finds nothing to
	// boot on it and netboots.
	marker := map[string]string{"1": "PHOENIX-DISK-BOOT os:1", "2": "PHOENIX-DISK-BOOT os:2", "3": "PHOENIX-DISK-BOOT os:3"}
	const diskSize = 8 << 20
	osImage := map[string][]byte{}
	for _, v := range []string{"1", "2", "3"} {
		if firmware == vbmc.UEFI {
			osImage[v] = uefiDiskImage(t, dir, "os"+v, marker[v])
		} else {
			osImage[v] = append(diskBootSector(marker[v]), make([]byte, 1<<20)...)
		}
		if v == "3" {
			osImage[v] = append(osImage[v], make([]byte, diskSize)...)
		}
		if err := os.WriteFile(filepath.Join(dir, "os"+v+".raw"), osImage[v], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	disk := filepath.Join(dir, "disk1-disk.raw")
	if err := os.WriteFile(disk, make([]byte, diskSize), 0o644); err != nil {
		t.Fatal(err)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const mac = "52:54:00:98:00:01"
	m := &vbmc.Machine{Name: "disk1", MAC: mac, Tap: "tap0", Firmware: firmware, Disk: disk,
		WorkDir: filepath.Join(dir, "disk1"), SerialLog: filepath.Join(dir, "disk1.serial.log")}
	os.Setenv("PHOENIX_LAB_BMC_PASSWORD", "lab-password") // the server inherits it: credentials: env:…
	fleetFile := fmt.Sprintf(`defaults:
  image: os@stable
  mode: disk
  bmc: {username: admin, credentials: env:PHOENIX_LAB_BMC_PASSWORD}
policy:
  boot_deadline: 120s
  retries: 0
  failure_budget: 0
  boot_override_once: true
hosts:
- {name: disk1, macs: [%q], bmc: {endpoint: "http://%s", system: disk1}}
`, mac, ln.Addr())
	importOS := func(v string) []string {
		return []string{"image", "import", "os:" + v, "--mode", "disk",
			"--kernel", filepath.Join(demo, "vmlinuz"), "--initrd", filepath.Join(demo, "initrd.img"),
			"--disk", filepath.Join(dir, "os"+v+".raw"), "--cmdline", "console=ttyS0 quiet"}
	}
	site := &Site{
		Name: "disk", Net: Net{Bridge: "br0", CIDR: "10.98.0.1/24", Taps: []string{"tap0"}},
		Phoenix: os.Getenv("PHOENIX_BIN"), Dir: dir, DHCP: "full", Range: "10.98.0.100-10.98.0.199", HTTPPort: 8080,
		ImageRef: "demo:1", Kernel: filepath.Join(demo, "vmlinuz"), Initrd: filepath.Join(demo, "initrd.img"),
		Cmdline: "console=ttyS0 quiet", FleetFile: fleetFile,
		PreStart: [][]string{importOS("1"), importOS("2"), importOS("3"), {"image", "promote", "os:1", "--channel", "stable"}},
	}
	// The VM exists (powered off) before phoenix starts and powers it on;
	// QEMU opens its tap, so the network comes first.
	if err := site.Net.Setup(); err != nil {
		t.Fatal(err)
	}
	site.NetReady = true
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	srv := &vbmc.Server{Systems: []vbmc.System{m}, Username: "admin", Password: "lab-password"}
	go srv.Serve(ctx, ln)
	start := time.Now()
	if err := site.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(site.Stop)
	logOnFailure(t, dir, m)

	cli := siteCLI(ctx, t, site)
	digest, diskDigest := map[string]string{}, map[string]string{}
	for _, v := range []string{"1", "2"} {
		var info images.ImageInfo
		if err := json.Unmarshal([]byte(cli("image", "show", "os:"+v, "-o", "json")), &info); err != nil {
			t.Fatal(err)
		}
		digest[v] = info.Digest
		for _, a := range info.Artifacts {
			if a.Role == images.RoleDisk {
				diskDigest[v] = strings.TrimPrefix(a.Digest, "sha256:")
			}
		}
		if diskDigest[v] == "" {
			t.Fatalf("os:%s has no disk artifact: %+v", v, info.Artifacts)
		}
	}

	// installed waits for version v's whole cycle: written and checked by
	// the installer, reported, booted from the disk, and phoenix showing
	// the host ready on it.
	installed := func(v string) {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
		defer wcancel()
		line, _, err := m.WaitFor(wctx, "sha256="+diskDigest[v])
		if err != nil {
			t.Fatalf("os:%s never written to the disk: %v", v, err)
		}
		t.Logf("DISK os:%s installed after %s: %s", v, time.Since(start).Round(100*time.Millisecond), strings.TrimSpace(line))
		if _, _, err := m.WaitFor(wctx, marker[v]); err != nil {
			t.Fatalf("the VM did not boot os:%s from its disk: %v", v, err)
		}
		t.Logf("DISK os:%s booted from the disk after %s", v, time.Since(start).Round(100*time.Millisecond))
		for {
			h := hostStatus(t, site, "disk1")
			if h.State == fleet.StateReady && h.LastReport != nil && h.LastReport.Digest == digest[v] {
				return
			}
			if wctx.Err() != nil {
				t.Fatalf("disk1 not ready on os:%s: state %s, assigned %.19s, failure %q", v, h.State, h.Assigned, h.LastFailure)
			}
			time.Sleep(time.Second)
		}
	}
	installed("1")

	// Netbooting again, the host is told to boot its disk: no reinstall.
	script := httpGet(t, site.URL()+"/boot/"+mac+".ipxe")
	if !strings.Contains(script, "boots from its local disk") {
		t.Fatalf("script for an installed disk-mode host:\n%s", script)
	}
	// And so the firmware, booting from the network first, ends up on the
	// disk: the script's exit status tells it to try its next device.
	start = time.Now()
	if err := m.SetBootOverride(vbmc.BootOverride{Target: vbmc.TargetPxe, Enabled: vbmc.OverrideOnce}); err != nil {
		t.Fatal(err)
	}
	if err := m.Reset(ctx, vbmc.ResetForceRestart); err != nil {
		t.Fatal(err)
	}
	for n := 0; n < 2; n = strings.Count(m.Console(), marker["1"]) {
		if ctx.Err() != nil {
			t.Fatalf("after a network boot told to use the local disk, os:1 did not boot from the disk again (log: %s)", m.SerialLog)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := strings.Count(m.Console(), diskWritten); n != 1 {
		t.Fatalf("%d installs after a network boot of an installed host, want 1", n)
	}
	// It did boot from the network first: phoenix told it (besides the
	// test's own request above) to use its disk.
	if log, _ := os.ReadFile(filepath.Join(dir, "phoenix.log")); strings.Count(string(log), `msg="host boots from local disk"`) < 2 {
		t.Fatalf("the VM never asked phoenix for its script: it did not boot from the network")
	}
	t.Logf("DISK network boot fell through to os:1 on the disk after %s", time.Since(start).Round(100*time.Millisecond))

	// A new version rewrites the disk.
	start = time.Now()
	cli("image", "promote", "os:2", "--channel", "stable")
	installed("2")
	if n := strings.Count(m.Console(), diskWritten); n != 2 {
		t.Errorf("%d installs, want 2 (one per version)", n)
	}

	// Bad input: an image that does not fit. The installer says why, to
	// the console and to phoenix, which quarantines the host before its
	// deadline.
	start = time.Now()
	cli("image", "promote", "os:3", "--channel", "stable")
	wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
	defer wcancel()
	line, _, err := m.WaitFor(wctx, "PHOENIX-REPORT-FAILED disk image is")
	if err != nil {
		t.Fatalf("no installer failure for an image larger than the disk: %v", err)
	}
	t.Logf("DISK os:3 refused after %s: %s", time.Since(start).Round(100*time.Millisecond), strings.TrimSpace(line))
	for {
		h := hostStatus(t, site, "disk1")
		if h.State == fleet.StateQuarantined {
			t.Logf("DISK disk1 quarantined after %s: %s", time.Since(start).Round(time.Second), h.Quarantine)
			if !strings.Contains(h.Quarantine, "host reported: disk image is") {
				t.Errorf("quarantine reason %q does not carry the installer's", h.Quarantine)
			}
			if took := time.Since(start); took > 100*time.Second {
				t.Errorf("quarantined after %s: the failure report did not end the attempt", took)
			}
			if h.LastReport == nil || h.LastReport.Digest != digest["2"] {
				t.Errorf("last report %+v, want os:2's", h.LastReport)
			}
			break
		}
		if wctx.Err() != nil {
			t.Fatalf("disk1 not quarantined: state %s, failure %q", h.State, h.LastFailure)
		}
		time.Sleep(time.Second)
	}
	got, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:len(osImage["2"])], osImage["2"]) {
		t.Errorf("the refused install touched the disk: it no longer holds os:2's image")
	}
}

// httpGet returns the body of url, failing t on any error or non-200.
func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(b)
}
