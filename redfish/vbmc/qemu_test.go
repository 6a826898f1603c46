package vbmc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// requireQEMU skips (or fails under CI, which installs QEMU) when QEMU
// cannot run here.
func requireQEMU(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("QEMU test skipped in -short mode")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		msg := "qemu-system-x86_64 not installed (Debian package qemu-system-x86)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// waitFor polls cond until it holds or a TCG-friendly deadline passes.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s", what, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestQEMUThroughVBMC powers a real QEMU VM (SeaBIOS, TCG, a NIC on a hub
// of its own, no bootable device) through the Redfish service and checks
// every transition against QEMU's own run state over QMP: off at start,
// the one-time PXE override (the NIC's ROM boots first, then the override
// is spent and the disk is first again), forced off, power cycle, restart,
// a one-time override used by a reboot the BMC did not start, the ACPI
// button (ignored by firmware, as on a real server), and virtual media
// booted from.
func TestQEMUThroughVBMC(t *testing.T) {
	requireQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	// A blank disk: the default order tries it first and fails over.
	disk := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &Machine{Name: "vm01", WorkDir: dir, Disk: disk, SerialLog: filepath.Join(dir, "serial.log"), GracefulTimeout: time.Minute}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	defer func() {
		if t.Failed() || os.Getenv("VBMC_SHOW_CONSOLE") != "" {
			t.Logf("serial console:\n%s", m.Console())
		}
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{Systems: []System{m}, Username: testUser, Password: testPass}
	go srv.Serve(ctx, ln)
	base := "http://" + ln.Addr().String() + "/redfish/v1"
	client := &http.Client{Timeout: time.Minute}
	send := func(method, path, body string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.SetBasicAuth(testUser, testPass)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("%s %s %s: %s %v", method, path, body, resp.Status, out)
		}
		return out
	}
	reset := func(rt string) {
		t.Helper()
		send("POST", "/Systems/vm01/Actions/ComputerSystem.Reset", `{"ResetType":"`+rt+`"}`)
	}
	expect := func(what, status, power string) {
		t.Helper()
		waitFor(t, what, func() (bool, string) {
			s, err := m.Status()
			if err != nil {
				t.Fatal(err)
			}
			p := send("GET", "/Systems/vm01", "")["PowerState"]
			return s == status && p == power, "qemu " + s + ", PowerState " + p.(string)
		})
	}
	// firstBoot waits for the firmware's first boot attempt after the
	// console had n bytes: that is the device the boot order put first.
	firstBoot := func(n int, want string) {
		t.Helper()
		var line string
		waitFor(t, "first boot device "+want, func() (bool, string) {
			// Lines of the previous boot may still arrive after the
			// mark: look after the firmware's banner.
			out := m.Console()[n:]
			b := strings.Index(out, "SeaBIOS (version")
			if b < 0 {
				return false, "no SeaBIOS banner"
			}
			out = out[b:]
			i := strings.Index(out, "Booting from ")
			if i < 0 {
				return false, "no boot attempt"
			}
			line, _, _ = strings.Cut(out[i:], "\n")
			return strings.Contains(line, "..."), line
		})
		if !strings.HasPrefix(line, "Booting from "+want) {
			t.Errorf("first boot attempt %q, want from %s", line, want)
		}
	}
	mark := func() int { return len(m.Console()) }

	expect("started powered off", "prelaunch", PowerOff)

	send("PATCH", "/Systems/vm01", `{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once"}}`)
	n := mark()
	reset(ResetOn)
	expect("after On", "running", PowerOn)
	firstBoot(n, "ROM") // the NIC's iPXE option ROM
	// Like a real BMC, the override reads Disabled once POST used it.
	waitFor(t, "one-time override spent after the boot", func() (bool, string) {
		b := send("GET", "/Systems/vm01", "")["Boot"].(map[string]any)
		return b["BootSourceOverrideEnabled"] == OverrideDisabled, fmt.Sprint(b["BootSourceOverrideEnabled"])
	})

	reset(ResetForceOff)
	expect("after ForceOff", "paused", PowerOff)

	// The override was for one boot: the disk comes first again.
	n = mark()
	reset(ResetPowerCycle)
	expect("after PowerCycle", "running", PowerOn)
	firstBoot(n, "Hard Disk")

	n = mark()
	reset(ResetForceRestart)
	expect("after ForceRestart", "running", PowerOn)
	firstBoot(n, "Hard Disk")

	// A one-time override also holds for a reboot the BMC did not start
	// (a reset straight through QMP stands in for the guest's reboot),
	// and only for that one.
	send("PATCH", "/Systems/vm01", `{"Boot":{"BootSourceOverrideTarget":"Pxe","BootSourceOverrideEnabled":"Once"}}`)
	n = mark()
	if _, err := m.run("system_reset", nil); err != nil {
		t.Fatal(err)
	}
	firstBoot(n, "ROM")
	waitFor(t, "one-time override spent after the guest's reboot", func() (bool, string) {
		b := send("GET", "/Systems/vm01", "")["Boot"].(map[string]any)
		return b["BootSourceOverrideEnabled"] == OverrideDisabled, fmt.Sprint(b["BootSourceOverrideEnabled"])
	})
	n = mark()
	if _, err := m.run("system_reset", nil); err != nil {
		t.Fatal(err)
	}
	firstBoot(n, "Hard Disk")

	// SeaBIOS and iPXE ignore the ACPI power button: the machine stays on
	// until a forced off, exactly what a client's "graceful, then force"
	// must cope with.
	reset(ResetGracefulShutdown)
	time.Sleep(2 * time.Second)
	expect("after GracefulShutdown of firmware", "running", PowerOn)
	reset(ResetForceOff)
	expect("after ForceOff", "paused", PowerOff)

	// Virtual media: the vBMC downloads the image and boots from it.
	iso := bytes.Repeat([]byte{0}, 64<<10)
	media := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "boot.iso", time.Time{}, bytes.NewReader(iso))
	}))
	defer media.Close()
	cd := "/Managers/vm01/VirtualMedia/CD1"
	send("POST", cd+"/Actions/VirtualMedia.InsertMedia", `{"Image":"`+media.URL+`/boot.iso","Inserted":true}`)
	if v := send("GET", cd, ""); v["Inserted"] != true || v["Image"] != media.URL+"/boot.iso" {
		t.Errorf("virtual media after insert: %v", v)
	}
	blocks, err := m.run("query-block", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(blocks), filepath.Join(dir, "media", "boot.iso")) {
		t.Errorf("QEMU's CD drive does not hold the download: %s", blocks)
	}
	send("PATCH", "/Systems/vm01", `{"Boot":{"BootSourceOverrideTarget":"Cd","BootSourceOverrideEnabled":"Once"}}`)
	n = mark()
	reset(ResetOn)
	expect("after On from CD", "running", PowerOn)
	firstBoot(n, "DVD/CD")
	send("POST", cd+"/Actions/VirtualMedia.EjectMedia", `{}`)
	if v := send("GET", cd, ""); v["Inserted"] != false {
		t.Errorf("virtual media after eject: %v", v)
	}
	reset(ResetForceOff)
	expect("final ForceOff", "paused", PowerOff)
}

// TestQEMUUEFIBootOverride checks that OVMF follows the one-time override
// too: the first boot option it loads after the override is the NIC, and
// after the next power cycle the disk again.
func TestQEMUUEFIBootOverride(t *testing.T) {
	requireQEMU(t)
	if _, err := os.Stat(OVMFCode); err != nil {
		t.Skip("OVMF missing (Debian package ovmf)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &Machine{Name: "uefi1", WorkDir: dir, Disk: disk, Firmware: UEFI}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	defer func() {
		if t.Failed() || os.Getenv("VBMC_SHOW_CONSOLE") != "" {
			t.Logf("serial console:\n%s", m.Console())
		}
	}()
	// firstLoad returns OVMF's first boot attempt after the console had n
	// bytes: PXE announces itself, a blank disk fails to load.
	firstLoad := func(n int) string {
		t.Helper()
		var line string
		waitFor(t, "OVMF tries a boot option", func() (bool, string) {
			out := m.Console()[n:]
			first := -1
			for _, mark := range []string{">>Start PXE", "BdsDxe: failed to load", "BdsDxe: loading"} {
				if i := strings.Index(out, mark); i >= 0 && (first < 0 || i < first) {
					first = i
				}
			}
			if first < 0 {
				return false, "no boot attempt"
			}
			line, _, _ = strings.Cut(out[first:], "\n")
			return true, line
		})
		return line
	}
	if err := m.SetBootOverride(BootOverride{Target: TargetPxe, Enabled: OverrideOnce, Mode: ModeUEFI}); err != nil {
		t.Fatal(err)
	}
	n := len(m.Console())
	if err := m.Reset(ctx, ResetOn); err != nil {
		t.Fatal(err)
	}
	if l := firstLoad(n); !strings.Contains(l, "PXE") {
		t.Errorf("with PXE once OVMF first tried %q", l)
	}
	// Off, then a pause so that the console holds all of the PXE boot's
	// output before the mark.
	if err := m.Reset(ctx, ResetForceOff); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	n = len(m.Console())
	if err := m.Reset(ctx, ResetOn); err != nil {
		t.Fatal(err)
	}
	if l := firstLoad(n); !strings.Contains(l, "Misc Device") {
		t.Errorf("after the one-time override OVMF first tried %q, want the disk", l)
	}
}
