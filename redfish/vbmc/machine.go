package vbmc

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Power states as Redfish names them.
const (
	PowerOn  = "On"
	PowerOff = "Off"
)

// Reset types of ComputerSystem.Reset that a Machine carries out.
const (
	ResetOn               = "On"
	ResetForceOff         = "ForceOff"
	ResetGracefulShutdown = "GracefulShutdown"
	ResetForceRestart     = "ForceRestart"
	ResetGracefulRestart  = "GracefulRestart"
	ResetPowerCycle       = "PowerCycle"
)

// ResetTypes lists the reset types a Machine allows, in the order the
// service advertises them.
var ResetTypes = []string{ResetOn, ResetForceOff, ResetGracefulShutdown, ResetForceRestart, ResetGracefulRestart, ResetPowerCycle}

// Boot override targets and modes (Redfish BootSourceOverrideTarget,
// BootSourceOverrideEnabled and BootSourceOverrideMode values).
const (
	TargetNone     = "None"
	TargetPxe      = "Pxe"
	TargetHdd      = "Hdd"
	TargetCd       = "Cd"
	TargetUefiHTTP = "UefiHttp"

	OverrideDisabled   = "Disabled"
	OverrideOnce       = "Once"
	OverrideContinuous = "Continuous"

	ModeUEFI   = "UEFI"
	ModeLegacy = "Legacy"
)

// Firmwares a Machine boots with.
const (
	BIOS = "bios" // SeaBIOS; the NIC's iPXE option ROM does network boot
	UEFI = "uefi" // OVMF with its own network stack (NIC ROM disabled)
)

// BootOverride is a system's boot source override.
type BootOverride struct {
	Target  string // TargetNone, TargetPxe, ...
	Enabled string // OverrideDisabled, OverrideOnce, OverrideContinuous
	Mode    string // ModeUEFI or ModeLegacy; fixed by the machine's firmware
	// UefiTarget and HTTPBootURI are kept and reported but not handed to
	// the firmware: OVMF takes its HTTP boot URL from DHCP, not from a BMC.
	UefiTarget  string
	HTTPBootURI string
}

// Media is the state of a machine's virtual CD drive.
type Media struct {
	Image    string // the URL inserted, "" when empty
	Inserted bool
}

// SystemInfo is what a Machine is, for the service's descriptions.
type SystemInfo struct {
	Name     string
	UUID     string
	MAC      string
	Firmware string
	Memory   int // MiB
	HasDisk  bool
}

// Machine is one QEMU virtual machine driven through QMP the way a BMC
// drives a server: Start launches QEMU powered off (the process runs, the
// CPU is stopped), and the power and boot methods act on it. It is the
// real implementation of System; the zero value of every optional field
// works.
type Machine struct {
	Name string
	// UUID is the SMBIOS system UUID; a random one when empty.
	UUID string
	// MAC of the virtio NIC; a locally administered one when empty.
	MAC string
	// Tap is the tap device the NIC joins (it must exist); when empty the
	// NIC is on a hub of its own and reaches nothing.
	Tap string
	// Firmware is BIOS (default) or UEFI.
	Firmware string
	// UEFIIPv6 keeps OVMF's IPv6 network stack (PXE and HTTP boot over
	// IPv6). It is off by default, like on most datacenter servers, whose
	// network boot is IPv4 only: phoenix answers no DHCPv6, so each boot
	// that falls through from the network would spend about 70 s in PXEv6.
	UEFIIPv6 bool
	// UEFIHTTPBoot makes a UEFI machine's network boot UEFI HTTP boot
	// only: OVMF's PXE over IPv4 is off, like a server whose setup chose
	// HTTP boot, so DHCP must hand it an http:// URL. QEMU fixes it at
	// Start; the UefiHttp boot override does not switch it.
	UEFIHTTPBoot bool
	// SecureBoot gives a UEFI machine OVMF with Microsoft's keys enrolled
	// and Secure Boot enforced, like a server fresh from the factory: it
	// runs only programs signed by Microsoft's UEFI CA (shim, say), never
	// an unsigned iPXE. It needs QEMU's q35 machine with SMM, so that the
	// guest cannot write the variable store behind the firmware's back.
	SecureBoot bool
	// Memory in MiB; default 512.
	Memory int
	// Disk is an optional disk image (qcow2 by extension, else raw).
	Disk string
	// SerialLog receives the serial console, each line with the time since
	// Start. The console is also kept in memory for WaitFor.
	SerialLog string
	// WorkDir holds the QMP socket, the UEFI variable store and downloaded
	// media; a temporary directory (removed by Stop) when empty.
	WorkDir string
	// GracefulTimeout bounds how long the background part of a graceful
	// shutdown or restart started by Reset waits; default 5 minutes.
	GracefulTimeout time.Duration
	// HTTPClient downloads virtual media; http.DefaultClient when nil.
	HTTPClient *http.Client
	// Log gets power and media events; nil discards.
	Log *slog.Logger

	cmd     *exec.Cmd
	q       *qmp
	done    chan struct{} // closed when QEMU exited
	tmpDir  bool
	started time.Time

	serialMu sync.Mutex
	serial   bytes.Buffer

	ops      sync.Mutex // one power or media operation at a time
	mu       sync.Mutex // guards the fields below
	boot     BootOverride
	media    Media
	pending  context.CancelFunc // the running graceful operation, if any
	armed    int                // counts SetBootOverride calls, to tell a new Once from a spent one
	booted   int                // the armed Once a boot has started with, -1 when none
	bgCtx    context.Context
	bgCancel context.CancelFunc
}

// Device IDs on the QEMU command line, used for bootindex and media.
const (
	nicID  = "nic0"
	diskID = "disk0"
	cdID   = "cd0"
)

// OVMF paths from Debian's ovmf package: Secure Boot off, and on with
// Microsoft's keys (ms). OVMFCode is exported for labs that check their
// prerequisites before starting.
const (
	OVMFCode    = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars    = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	ovmfSecCode = "/usr/share/OVMF/OVMF_CODE_4M.ms.fd"
	ovmfSecVars = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"
)

// qmpTimeout bounds one QMP command; they answer in milliseconds.
const qmpTimeout = 30 * time.Second

// Info describes the machine.
func (m *Machine) Info() SystemInfo {
	return SystemInfo{Name: m.Name, UUID: m.UUID, MAC: m.MAC, Firmware: m.firmware(), Memory: m.memory(), HasDisk: m.Disk != ""}
}

func (m *Machine) firmware() string {
	if m.Firmware == UEFI {
		return UEFI
	}
	return BIOS
}

func (m *Machine) memory() int {
	if m.Memory > 0 {
		return m.Memory
	}
	return 512
}

func (m *Machine) log() *slog.Logger {
	if m.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.Log
}

// Accel returns "kvm" only where KVM really works for these guests
// (/dev/kvm writable and the CPU has vmx or svm), else "tcg": on hosts
// without virtualisation extensions KVM exists but the firmware dies with
// emulation failures.
func Accel() string {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return "tcg"
	}
	f.Close()
	cpu, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "tcg"
	}
	for _, flag := range []string{" vmx", " svm"} {
		if bytes.Contains(cpu, []byte(flag)) {
			return "kvm"
		}
	}
	return "tcg"
}

// args builds QEMU's command line. -S starts the CPU stopped (power off);
// -no-shutdown keeps QEMU alive when the guest powers off so that power on
// is a reset; every boot device gets a bootindex so the override can
// reorder them at runtime.
func (m *Machine) args(qmpPath string) ([]string, error) {
	args := []string{
		"-name", m.Name, "-uuid", m.UUID,
		"-accel", Accel(), "-m", fmt.Sprint(m.memory()), "-smp", "1",
		"-nodefaults", "-nographic", "-serial", "stdio", "-monitor", "none",
		"-qmp", "unix:" + qemuPath(qmpPath) + ",server=on,wait=off",
		"-S", "-no-shutdown",
	}
	if m.Tap != "" {
		args = append(args, "-netdev", "tap,id=n0,ifname="+m.Tap+",script=no,downscript=no")
	} else {
		args = append(args, "-netdev", "hubport,id=n0,hubid=0")
	}
	order := m.defaultOrder()
	idx := func(id string) string {
		for i, d := range order {
			if d == id {
				return fmt.Sprint(i + 1)
			}
		}
		return "99"
	}
	nic := "virtio-net-pci,netdev=n0,id=" + nicID + ",mac=" + m.MAC + ",bootindex=" + idx(nicID)
	if m.firmware() == UEFI {
		code, varsTmpl := OVMFCode, ovmfVars
		if m.SecureBoot {
			code, varsTmpl = ovmfSecCode, ovmfSecVars
			// The secure build stores variables through SMM only.
			args = append(args, "-machine", "q35,smm=on",
				"-global", "driver=cfi.pflash01,property=secure,value=on")
		}
		vars := filepath.Join(m.WorkDir, "OVMF_VARS.fd")
		data, err := os.ReadFile(varsTmpl)
		if err != nil {
			return nil, fmt.Errorf("%w (Debian package ovmf)", err)
		}
		if err := os.WriteFile(vars, data, 0o600); err != nil {
			return nil, err
		}
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+code,
			"-drive", "if=pflash,format=raw,unit=1,file="+qemuPath(vars))
		// An empty romfile leaves network boot to OVMF's own PXE and HTTP
		// boot stack, as on a real UEFI server.
		nic += ",romfile="
		if !m.UEFIIPv6 {
			// OVMF (edk2-stable202211 on) skips its IPv6 driver then.
			args = append(args, "-fw_cfg", "name=opt/org.tianocore/IPv6Support,string=n")
		}
		if m.UEFIHTTPBoot {
			// OVMF (edk2-stable202008 on) leaves out PXEv4 boot
			// options then; its HTTPv4 ones remain.
			args = append(args, "-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n")
		}
	}
	args = append(args, "-device", nic)
	if m.Disk != "" {
		format := "raw"
		if strings.HasSuffix(m.Disk, ".qcow2") {
			format = "qcow2"
		}
		args = append(args,
			"-drive", "if=none,id=disk0drv,format="+format+",file="+qemuPath(m.Disk),
			"-device", "virtio-blk-pci,drive=disk0drv,id="+diskID+",bootindex="+idx(diskID))
	}
	// An empty CD drive on the machine's built-in IDE controller, for
	// virtual media.
	args = append(args,
		"-drive", "if=none,id=cd0drv,media=cdrom,readonly=on",
		"-device", "ide-cd,drive=cd0drv,id="+cdID+",bus=ide.1,bootindex="+idx(cdID))
	return args, nil
}

// qemuPath escapes a file name for a QEMU option string (a comma is
// written twice).
func qemuPath(p string) string { return strings.ReplaceAll(p, ",", ",,") }

// defaultOrder is the boot order without an override: disk, network, CD,
// like an installed server (a diskless one netboots).
func (m *Machine) defaultOrder() []string {
	if m.Disk != "" {
		return []string{diskID, nicID, cdID}
	}
	return []string{nicID, cdID}
}

// Start launches QEMU powered off. ctx bounds the whole life of the VM:
// when it is done QEMU is killed. Call Stop to end it.
func (m *Machine) Start(ctx context.Context) error {
	if m.Name == "" {
		return errors.New("machine: no name")
	}
	if m.SecureBoot && m.firmware() != UEFI {
		return fmt.Errorf("machine %s: secure boot needs UEFI firmware", m.Name)
	}
	// These go into QEMU option strings, where a comma starts another
	// option (a tap name "t0,script=/x" would run a script).
	for what, v := range map[string]string{"name": m.Name, "tap": m.Tap, "mac": m.MAC, "uuid": m.UUID} {
		if strings.ContainsAny(v, ",= \t\n") {
			return fmt.Errorf("machine %q: %s %q: commas, equals signs and spaces are not allowed", m.Name, what, v)
		}
	}
	if m.UUID == "" {
		m.UUID = randomUUID()
	}
	if m.MAC == "" {
		m.MAC = randomMAC()
	}
	if m.WorkDir == "" {
		d, err := os.MkdirTemp("", "vbmc-"+m.Name+"-")
		if err != nil {
			return fmt.Errorf("machine %s: %w", m.Name, err)
		}
		m.WorkDir, m.tmpDir = d, true
	} else if err := os.MkdirAll(m.WorkDir, 0o755); err != nil {
		return fmt.Errorf("machine %s: %w", m.Name, err)
	}
	qmpPath := filepath.Join(m.WorkDir, "qmp.sock")
	if len(qmpPath) > 100 {
		return fmt.Errorf("machine %s: QMP socket path %s is too long for a unix socket; use a shorter WorkDir", m.Name, qmpPath)
	}
	os.Remove(qmpPath)
	args, err := m.args(qmpPath)
	if err != nil {
		return fmt.Errorf("machine %s: %w", m.Name, err)
	}
	m.mu.Lock()
	mode := ModeLegacy
	if m.firmware() == UEFI {
		mode = ModeUEFI
	}
	m.boot = BootOverride{Target: TargetNone, Enabled: OverrideDisabled, Mode: mode}
	m.booted = -1
	m.bgCtx, m.bgCancel = context.WithCancel(context.WithoutCancel(ctx))
	m.mu.Unlock()

	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	// The kernel kills QEMU if we die first: a VM never outlives its BMC.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return cmd.Process.Kill() }
	var log io.Writer = io.Discard
	if m.SerialLog != "" {
		f, err := os.Create(m.SerialLog)
		if err != nil {
			return fmt.Errorf("machine %s: %w", m.Name, err)
		}
		log = f
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	m.done = make(chan struct{})
	m.started = time.Now()
	if err := cmd.Start(); err != nil {
		pw.Close()
		if c, ok := log.(io.Closer); ok {
			c.Close()
		}
		return fmt.Errorf("machine %s: qemu: %w (Debian package qemu-system-x86)", m.Name, err)
	}
	m.cmd = cmd
	exited := make(chan error, 1)
	go func() {
		exited <- cmd.Wait()
		pw.Close()
	}()
	go func() {
		defer close(m.done)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			line := sc.Text()
			m.serialMu.Lock()
			m.serial.WriteString(line + "\n")
			m.serialMu.Unlock()
			fmt.Fprintf(log, "%7.2fs %s\n", time.Since(m.started).Seconds(), line)
		}
		if c, ok := log.(io.Closer); ok {
			c.Close()
		}
	}()
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	go func() {
		select {
		case <-exited:
			cancel() // QEMU died before its socket answered
		case <-dctx.Done():
		}
	}()
	q, err := dialQMP(dctx, qmpPath)
	if err != nil {
		m.Stop()
		return fmt.Errorf("machine %s: %w: %s", m.Name, err, strings.TrimSpace(m.Console()))
	}
	m.q = q
	ev, _ := q.subscribe() // for the machine's life
	go m.watch(ev)
	m.log().Info("vm started powered off", "host", m.Name, "mac", m.MAC, "firmware", m.firmware())
	return nil
}

// Stop ends QEMU (the power cord is pulled) and removes a temporary
// WorkDir.
func (m *Machine) Stop() {
	m.mu.Lock()
	if m.bgCancel != nil {
		m.bgCancel()
	}
	m.mu.Unlock()
	if m.q != nil {
		m.q.close()
	}
	if m.cmd != nil && m.cmd.Process != nil {
		m.cmd.Process.Kill()
		<-m.done
	}
	if m.tmpDir {
		os.RemoveAll(m.WorkDir)
	}
}

// Console returns the serial output so far.
func (m *Machine) Console() string {
	m.serialMu.Lock()
	defer m.serialMu.Unlock()
	return m.serial.String()
}

// WaitFor waits until the serial console shows marker and returns the line
// holding it and the time since Start.
func (m *Machine) WaitFor(ctx context.Context, marker string) (string, time.Duration, error) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		out := m.Console()
		if i := strings.Index(out, marker); i >= 0 {
			line, _, _ := strings.Cut(out[i:], "\n")
			return line, time.Since(m.started), nil
		}
		select {
		case <-ctx.Done():
			return "", time.Since(m.started), fmt.Errorf("machine %s: no %q on the serial console after %s (log: %s)", m.Name, marker, time.Since(m.started).Round(time.Second), m.SerialLog)
		case <-m.done:
			if strings.Contains(m.Console(), marker) {
				continue
			}
			return "", time.Since(m.started), fmt.Errorf("machine %s: qemu exited before %q (log: %s)", m.Name, marker, m.SerialLog)
		case <-t.C:
		}
	}
}

func (m *Machine) run(cmd string, args any) (json.RawMessage, error) {
	if m.q == nil {
		return nil, fmt.Errorf("machine %s: not started", m.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), qmpTimeout)
	defer cancel()
	r, err := m.q.run(ctx, cmd, args)
	if err != nil {
		return nil, fmt.Errorf("machine %s: %w", m.Name, err)
	}
	return r, nil
}

// Status returns QEMU's run state ("prelaunch", "running", "paused",
// "shutdown", ...).
func (m *Machine) Status() (string, error) {
	r, err := m.run("query-status", nil)
	if err != nil {
		return "", err
	}
	var s struct {
		Status string `json:"status"`
	}
	if err := json.Unmarshal(r, &s); err != nil {
		return "", fmt.Errorf("machine %s: query-status: %w", m.Name, err)
	}
	return s.Status, nil
}

// PowerState is PowerOn while the CPU runs and PowerOff otherwise: never
// started (-S), stopped by a forced off, or halted by the guest.
func (m *Machine) PowerState(context.Context) (string, error) {
	s, err := m.Status()
	if err != nil {
		return "", err
	}
	if s == "running" {
		return PowerOn, nil
	}
	return PowerOff, nil
}

// PowerOn starts the machine from a fresh reset, booting as the override
// says. It does nothing when the machine is on.
func (m *Machine) PowerOn(ctx context.Context) error {
	m.ops.Lock()
	defer m.ops.Unlock()
	return m.powerOn(ctx, false)
}

// powerOn resets and runs the CPU. With always it resets a running machine
// too (a restart).
func (m *Machine) powerOn(ctx context.Context, always bool) error {
	s, err := m.Status()
	if err != nil {
		return err
	}
	if s == "running" && !always {
		return nil
	}
	// A power action right after a one-time boot (within resetQuiet)
	// must not boot with that override again.
	m.spendOnce()
	if err := m.applyOverride(); err != nil {
		return err
	}
	if err := m.reset(ctx); err != nil {
		return err
	}
	if s, err := m.Status(); err != nil || s != "running" {
		// cont is refused until the reset is processed out of "shutdown".
		for i := 0; ; i++ {
			_, err := m.run("cont", nil)
			if err == nil {
				break
			}
			if i == 50 {
				return err
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	m.log().Info("power on", "host", m.Name)
	return nil
}

// resetQuiet is how long after the last reset of a burst a one-time
// override counts as used. QEMU hands the firmware its boot order at each
// reset, and SeaBIOS answers every warm reset with hard resets of its own
// within milliseconds: the order must survive those, and be back to the
// default long before an OS could reboot.
const resetQuiet = 3 * time.Second

// watch spends a one-time boot override after the boot it was for, however
// that boot started: a power action through the BMC or the guest's own
// reboot.
func (m *Machine) watch(ev <-chan qmpEvent) {
	var quiet <-chan time.Time
	for {
		select {
		case e := <-ev:
			if e.Name != "RESET" {
				continue
			}
			m.mu.Lock()
			if m.booted < 0 && m.boot.Enabled == OverrideOnce {
				m.booted = m.armed
			}
			if m.booted >= 0 {
				quiet = time.After(resetQuiet)
			}
			m.mu.Unlock()
		case <-quiet:
			quiet = nil
			m.ops.Lock()
			if m.spendOnce() {
				if err := m.setOrder(m.defaultOrder()); err != nil {
					m.log().Warn("restoring the boot order after a one-time override", "host", m.Name, "err", err)
				} else {
					m.log().Info("one-time boot override used", "host", m.Name)
				}
			}
			m.ops.Unlock()
		case <-m.q.closed:
			return
		case <-m.bgCtx.Done():
			return
		}
	}
}

// spendOnce marks a one-time override that a boot started with as used
// and reports whether it did. The caller holds ops.
func (m *Machine) spendOnce() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	used := m.booted >= 0 && m.booted == m.armed && m.boot.Enabled == OverrideOnce
	m.booted = -1
	if used {
		m.boot.Enabled = OverrideDisabled
	}
	return used
}

// reset asks QEMU for a system reset and waits for its RESET event.
func (m *Machine) reset(ctx context.Context) error {
	ev, cancel := m.q.subscribe()
	defer cancel()
	if _, err := m.run("system_reset", nil); err != nil {
		return err
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case e := <-ev:
			if e.Name == "RESET" && !e.guest() {
				return nil
			}
		case <-t.C:
			return fmt.Errorf("machine %s: no RESET event after system_reset", m.Name)
		case <-ctx.Done():
			return fmt.Errorf("machine %s: reset: %w", m.Name, ctx.Err())
		}
	}
}

// ForceOff stops the CPU at once (power removed; QEMU stays to power on
// again).
func (m *Machine) ForceOff(ctx context.Context) error {
	m.ops.Lock()
	defer m.ops.Unlock()
	return m.forceOff()
}

func (m *Machine) forceOff() error {
	s, err := m.Status()
	if err != nil {
		return err
	}
	if s != "running" {
		return nil
	}
	if _, err := m.run("stop", nil); err != nil {
		return err
	}
	m.log().Info("power off (forced)", "host", m.Name)
	return nil
}

// ForceRestart resets the machine at once, or powers it on when off.
func (m *Machine) ForceRestart(ctx context.Context) error {
	m.ops.Lock()
	defer m.ops.Unlock()
	return m.powerOn(ctx, true)
}

// PowerCycle removes power and restores it: a forced off then on (on
// alone when the machine is off).
func (m *Machine) PowerCycle(ctx context.Context) error {
	m.ops.Lock()
	defer m.ops.Unlock()
	if err := m.forceOff(); err != nil {
		return err
	}
	return m.powerOn(ctx, false)
}

// GracefulShutdown presses the ACPI power button and waits until the guest
// powered off or ctx is done. A guest that ignores the button (firmware, an
// OS without ACPI) stays on, as on a real server.
func (m *Machine) GracefulShutdown(ctx context.Context) error {
	on, err := m.pressPowerButton()
	if err != nil || !on {
		return err
	}
	return m.waitOff(ctx)
}

// GracefulRestart shuts the guest down gracefully, then powers it on.
func (m *Machine) GracefulRestart(ctx context.Context) error {
	if err := m.GracefulShutdown(ctx); err != nil {
		return err
	}
	return m.PowerOn(ctx)
}

// pressPowerButton presses the ACPI button of a running machine and
// reports whether it was running.
func (m *Machine) pressPowerButton() (bool, error) {
	m.ops.Lock()
	defer m.ops.Unlock()
	s, err := m.Status()
	if err != nil || s != "running" {
		return false, err
	}
	if _, err := m.run("system_powerdown", nil); err != nil {
		return true, err
	}
	m.log().Info("power button pressed", "host", m.Name)
	return true, nil
}

// waitOff polls until the machine is off or ctx is done.
func (m *Machine) waitOff(ctx context.Context) error {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		p, err := m.PowerState(ctx)
		if err != nil {
			return err
		}
		if p == PowerOff {
			m.log().Info("guest powered off", "host", m.Name)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("machine %s: graceful shutdown: still on: %w", m.Name, ctx.Err())
		case <-t.C:
		}
	}
}

// Reset carries out a ComputerSystem.Reset as a BMC does: forced actions
// complete before it returns; graceful ones return once the power button
// was pressed and finish in the background (bounded by GracefulTimeout).
// A new Reset cancels a graceful one still waiting.
func (m *Machine) Reset(ctx context.Context, resetType string) error {
	m.mu.Lock()
	if m.pending != nil {
		m.pending()
		m.pending = nil
	}
	m.mu.Unlock()
	switch resetType {
	case ResetOn:
		return m.PowerOn(ctx)
	case ResetForceOff:
		return m.ForceOff(ctx)
	case ResetForceRestart:
		return m.ForceRestart(ctx)
	case ResetPowerCycle:
		return m.PowerCycle(ctx)
	case ResetGracefulShutdown, ResetGracefulRestart:
		on, err := m.pressPowerButton()
		if err != nil {
			return err
		}
		if !on {
			if resetType == ResetGracefulRestart {
				return m.PowerOn(ctx)
			}
			return nil
		}
		timeout := m.GracefulTimeout
		if timeout <= 0 {
			timeout = 5 * time.Minute
		}
		m.mu.Lock()
		bg, cancel := context.WithTimeout(m.bgCtx, timeout)
		m.pending = cancel
		m.mu.Unlock()
		go func() {
			defer cancel()
			err := m.waitOff(bg)
			if err == nil && resetType == ResetGracefulRestart {
				err = m.PowerOn(bg)
			}
			if err != nil {
				m.log().Warn("graceful reset did not complete", "host", m.Name, "reset", resetType, "err", err)
			}
		}()
		return nil
	}
	return fmt.Errorf("machine %s: reset type %q not supported", m.Name, resetType)
}

// BootOverride returns the boot source override.
func (m *Machine) BootOverride() BootOverride {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.boot
}

// AllowedTargets lists the boot targets this machine has devices for.
func (m *Machine) AllowedTargets() []string {
	t := []string{TargetNone, TargetPxe, TargetCd}
	if m.Disk != "" {
		t = append(t, TargetHdd)
	}
	if m.firmware() == UEFI {
		t = append(t, TargetUefiHTTP)
	}
	return t
}

// SetBootOverride changes the boot source override. Once applies to the
// next boot, whether a power action through the BMC or the guest's own
// reboot starts it, and is then spent (Enabled reads Disabled); Continuous
// applies to every boot. The mode must be the firmware's: a VM cannot switch between
// SeaBIOS and OVMF at runtime.
func (m *Machine) SetBootOverride(b BootOverride) error {
	if !contains(m.AllowedTargets(), b.Target) {
		return fmt.Errorf("machine %s: boot target %q not allowed (allowed: %s)", m.Name, b.Target, strings.Join(m.AllowedTargets(), ", "))
	}
	if !contains([]string{OverrideDisabled, OverrideOnce, OverrideContinuous}, b.Enabled) {
		return fmt.Errorf("machine %s: boot override %q not allowed", m.Name, b.Enabled)
	}
	mode := ModeLegacy
	if m.firmware() == UEFI {
		mode = ModeUEFI
	}
	if b.Mode == "" {
		b.Mode = mode
	}
	if b.Mode != mode {
		return fmt.Errorf("machine %s: boot mode %q not allowed: the firmware is %s", m.Name, b.Mode, mode)
	}
	m.ops.Lock()
	defer m.ops.Unlock()
	m.mu.Lock()
	m.boot = b
	m.armed++
	m.booted = -1 // the boot it is for has not started yet
	m.mu.Unlock()
	// The order is set now: the next boot may be the guest's own reboot.
	// watch puts the default back after a one-time override was used.
	order := m.defaultOrder()
	if b.Enabled != OverrideDisabled {
		order = m.orderFor(b.Target)
	}
	if m.q == nil {
		return nil // not started: Start's command line has the default order
	}
	return m.setOrder(order)
}

// applyOverride sets the device order the override asks for. SetBootOverride
// did so already; a power on does it again in case a spent override and a
// new one crossed.
func (m *Machine) applyOverride() error {
	b := m.BootOverride()
	if b.Enabled == OverrideDisabled {
		return m.setOrder(m.defaultOrder())
	}
	return m.setOrder(m.orderFor(b.Target))
}

// orderFor is the default order with target's device first.
func (m *Machine) orderFor(target string) []string {
	first := ""
	switch target {
	case TargetPxe, TargetUefiHTTP:
		first = nicID
	case TargetHdd:
		first = diskID
	case TargetCd:
		first = cdID
	}
	order := []string{}
	if first != "" {
		order = append(order, first)
	}
	for _, d := range m.defaultOrder() {
		if d != first {
			order = append(order, d)
		}
	}
	return order
}

// setOrder gives the devices bootindex 1, 2, ... in order. QEMU refuses a
// duplicate index, so every device first moves to a free high index.
func (m *Machine) setOrder(order []string) error {
	for i, id := range order {
		if err := m.setBootIndex(id, 100+i); err != nil {
			return err
		}
	}
	for i, id := range order {
		if err := m.setBootIndex(id, i+1); err != nil {
			return err
		}
	}
	return nil
}

func (m *Machine) setBootIndex(id string, idx int) error {
	_, err := m.run("qom-set", map[string]any{"path": "/machine/peripheral/" + id, "property": "bootindex", "value": idx})
	return err
}

// Media returns the virtual CD's state.
func (m *Machine) Media() Media {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.media
}

// ErrMediaInserted is returned by InsertMedia while an image is inserted:
// like several real BMCs, the drive must be ejected first.
var ErrMediaInserted = errors.New("media already inserted; eject it first")

// InsertMedia downloads the ISO at imageURL (http or https only: a BMC
// must not read its own files for a client) into WorkDir and inserts it in
// the virtual CD drive.
func (m *Machine) InsertMedia(ctx context.Context, imageURL string) error {
	u, err := url.Parse(imageURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("machine %s: media %q: only http and https URLs", m.Name, imageURL)
	}
	m.ops.Lock()
	defer m.ops.Unlock()
	if m.Media().Inserted {
		return fmt.Errorf("machine %s: %w", m.Name, ErrMediaInserted)
	}
	file, err := m.download(ctx, u)
	if err != nil {
		return fmt.Errorf("machine %s: media %s: %w", m.Name, imageURL, err)
	}
	if _, err := m.run("blockdev-change-medium", map[string]any{"id": cdID, "filename": file, "format": "raw", "read-only-mode": "read-only"}); err != nil {
		os.Remove(file)
		return err
	}
	m.mu.Lock()
	m.media = Media{Image: imageURL, Inserted: true}
	m.mu.Unlock()
	m.log().Info("media inserted", "host", m.Name, "image", imageURL)
	return nil
}

// download fetches u into WorkDir/media/, whole or not at all.
func (m *Machine) download(ctx context.Context, u *url.URL) (string, error) {
	dir := filepath.Join(m.WorkDir, "media")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", err
	}
	c := m.HTTPClient
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("download: %s", resp.Status)
	}
	f, err := os.CreateTemp(dir, "download-*")
	if err != nil {
		return "", err
	}
	_, err = io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("download: %w", err)
	}
	name := path.Base(u.Path)
	if name == "/" || name == "." || strings.HasPrefix(name, ".") {
		name = "media.iso"
	}
	dst := filepath.Join(dir, name)
	if err := os.Rename(f.Name(), dst); err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return dst, nil
}

// EjectMedia removes the virtual CD's image. Ejecting an empty drive is
// not an error.
func (m *Machine) EjectMedia(ctx context.Context) error {
	m.ops.Lock()
	defer m.ops.Unlock()
	if !m.Media().Inserted {
		return nil
	}
	if _, err := m.run("eject", map[string]any{"id": cdID, "force": true}); err != nil {
		return err
	}
	m.mu.Lock()
	m.media = Media{}
	m.mu.Unlock()
	m.log().Info("media ejected", "host", m.Name)
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// randomUUID returns a version 4 UUID.
func randomUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// randomMAC returns a locally administered unicast MAC in QEMU's 52:54:00
// style.
func randomMAC() string {
	var b [3]byte
	rand.Read(b[:])
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2])
}
