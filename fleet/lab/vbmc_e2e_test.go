package lab

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phoenixboot/phoenix/fleet"
	"github.com/phoenixboot/phoenix/redfish"
	"github.com/phoenixboot/phoenix/redfish/vbmc"
)

// diskMarker is what diskBootSector prints when the VM boots from its disk.
const diskMarker = "PHOENIX-DISK-BOOT"

// diskBootSector is a 512-byte MBR that writes marker to COM1 and halts:
// an "installed OS" that the default boot order reaches first, so that
// only the one-time override sends the VM to the network.
func diskBootSector(marker string) []byte {
	code := []byte{
		0xFC,       // cld
		0x31, 0xC0, // xor ax, ax
		0x8E, 0xD8, // mov ds, ax
		0xBE, 0x17, 0x7C, // mov si, 0x7c17 (the message)
		0xBA, 0xF8, 0x03, // mov dx, 0x3f8 (COM1)
		0xAC,       // loop: lodsb
		0x84, 0xC0, // test al, al
		0x74, 0x03, // jz done
		0xEE,       // out dx, al
		0xEB, 0xF8, // jmp loop
		0xFA,       // done: cli
		0xF4,       // hlt
		0xEB, 0xFD, // jmp hlt
	}
	mbr := make([]byte, 512)
	copy(mbr, code)
	copy(mbr[len(code):], "\r\n"+marker+"\r\n\x00")
	mbr[510], mbr[511] = 0x55, 0xAA
	return mbr
}

// TestE2EVBMC powers a VM the way phoenix powers real hosts: through a
// Redfish BMC. A virtual BMC in the lab namespace holds one powered-off
// SeaBIOS VM whose disk boots a marker; through package redfish (gofish)
// the test sets a one-time PXE boot and powers on. The VM netboots from
// phoenix (full DHCP), reports, and powers off; phoenix shows it ready. The
// next power on boots from the disk: the override was for one boot.
func TestE2EVBMC(t *testing.T) {
	if !InPrivateNetns() {
		runInNetns(t, requireLab(t), "TestE2EVBMC")
		return
	}
	vbmcInNetns(t)
}

func vbmcInNetns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Minute)
	defer cancel()
	demo := os.Getenv("PHOENIX_DEMO_DIR")
	dir := t.TempDir()
	if keep := os.Getenv("PHOENIX_E2E_DIR"); keep != "" {
		dir = keep
	}
	const mac = "52:54:00:97:00:01"
	site := &Site{
		Name: "vbmc", Net: Net{Bridge: "br0", CIDR: "10.97.0.1/24", Taps: []string{"tap0"}},
		Phoenix: os.Getenv("PHOENIX_BIN"), Dir: dir, DHCP: "full", Range: "10.97.0.100-10.97.0.199", HTTPPort: 8080,
		ImageRef: "demo:1", Kernel: filepath.Join(demo, "vmlinuz"), Initrd: filepath.Join(demo, "initrd.img"),
		Cmdline: "console=ttyS0 quiet",
		Hosts:   []fleet.Host{{Name: "bmc1", MACs: []string{mac}, Image: "demo:1"}},
	}
	if err := site.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(site.Stop)

	disk := filepath.Join(dir, "bmc1-disk.raw")
	if err := os.WriteFile(disk, append(diskBootSector(diskMarker), make([]byte, 1<<20)...), 0o644); err != nil {
		t.Fatal(err)
	}
	m := &vbmc.Machine{
		Name: "bmc1", MAC: mac, Tap: "tap0", Firmware: vbmc.BIOS, Disk: disk,
		WorkDir: filepath.Join(dir, "bmc1"), SerialLog: filepath.Join(dir, "bmc1.serial.log"),
	}
	if err := m.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	logOnFailure(t, dir, m)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &vbmc.Server{Systems: []vbmc.System{m}, Username: "admin", Password: "lab-password"}
	go srv.Serve(ctx, ln)

	c, err := redfish.Dial(ctx, redfish.Config{Endpoint: "http://" + ln.Addr().String(), Username: "admin", Password: "lab-password", System: "bmc1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PowerState != "Off" {
		t.Fatalf("the VM starts powered off; the BMC says %q", st.PowerState)
	}

	start := time.Now()
	if err := c.SetBootOverride(ctx, redfish.BootOverride{Target: "Pxe"}); err != nil {
		t.Fatal(err)
	}
	if err := c.PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("bmc1: PXE once + power on through the vBMC (%s); netbooting from %s", vbmc.Accel(), site.URL())
	wctx, wcancel := context.WithTimeout(ctx, 4*time.Minute)
	line, _, err := m.WaitFor(wctx, ReportMarker)
	wcancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("BOOT bmc1 (bios via Redfish): power on -> report %s: %s", time.Since(start).Round(100*time.Millisecond), line)
	status, err := site.HostStatus()
	if err != nil {
		t.Fatal(err)
	}
	var hs *fleet.HostStatus
	for i := range status {
		if status[i].Name == "bmc1" {
			hs = &status[i]
		}
	}
	if hs == nil || hs.State != fleet.StateReady || hs.LastReport == nil || hs.LastReport.Digest != hs.Digest {
		t.Fatalf("phoenix shows %+v, want state ready with the served digest", hs)
	}

	// The demo image powers off; QEMU stays (-no-shutdown) and the BMC
	// reports Off, like a server that shut itself down.
	if err := waitPower(ctx, c, "Off", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Status(ctx); err != nil || st.BootEnabled != "Disabled" {
		t.Fatalf("after the boot the one-time override should be spent: %+v %v", st, err)
	}

	// The next power on boots from the disk.
	if err := c.PowerOn(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel = context.WithTimeout(ctx, 2*time.Minute)
	_, _, err = m.WaitFor(wctx, diskMarker)
	wcancel()
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(m.Console(), ReportMarker); n != 1 {
		t.Errorf("the second boot netbooted again (%d reports)", n)
	}
	t.Log("bmc1: second power on booted from its disk")
	if err := c.PowerOff(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if s, err := m.Status(); err != nil || s == "running" {
		t.Fatalf("after a forced off QEMU is %q (%v)", s, err)
	}
}

// waitPower polls the BMC until the system's power state is want.
func waitPower(ctx context.Context, c *redfish.Client, want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		got, err := c.PowerState(ctx)
		if err != nil {
			return err
		}
		if got == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("power state %q after %s, want %q", got, timeout, want)
		}
		time.Sleep(time.Second)
	}
}
