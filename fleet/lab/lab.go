// Package lab builds a throwaway QEMU lab: a bridge with tap devices inside a
// private network namespace, a phoenix server bound to the bridge, and VMs
// whose real firmware (SeaBIOS with iPXE, OVMF) netboots from it.
//
// It is what `phoenix lab` runs and what the end-to-end tests use. It is not
// needed in production. Everything it creates lives in the caller's network
// namespace, which must be private (see InPrivateNetns): the kernel removes
// the bridge and taps when the last process in it exits.
package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/phoenixboot/phoenix/redfish/vbmc"
)

// NetnsEnv marks a process that was re-executed inside a private network
// namespace by EnterPrivateNetns.
const NetnsEnv = "PHOENIX_LAB_NETNS"

// InPrivateNetns reports whether this process runs in a namespace that
// EnterPrivateNetns made for it.
func InPrivateNetns() bool { return os.Getenv(NetnsEnv) == "1" }

// PrivateNetnsCmd returns a command that runs argv in a fresh, anonymous
// network namespace (unshare --net). The kernel removes the namespace and
// everything in it when the last process inside exits, so nothing leaks even
// when the run is killed.
func PrivateNetnsCmd(ctx context.Context, argv []string) (*exec.Cmd, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root (network namespaces, bridges, tap devices)")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		return nil, errors.New("unshare not found (Debian package util-linux)")
	}
	cmd := exec.CommandContext(ctx, "unshare", append([]string{"--net", "--"}, argv...)...)
	// On cancel, let the inner process stop its servers and VMs itself.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	cmd.Env = append(os.Environ(), NetnsEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	return cmd, nil
}

// Net is one lab network: a bridge with an address and some tap devices.
type Net struct {
	Bridge string // e.g. "br0"
	CIDR   string // the server's address on the bridge, e.g. "10.99.0.1/24"
	Taps   []string
}

// IP returns the bridge address without its prefix length.
func (n Net) IP() string { ip, _, _ := strings.Cut(n.CIDR, "/"); return ip }

// Setup creates the bridge and taps in the current namespace and brings
// loopback up.
func (n Net) Setup() error {
	cmds := [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", n.Bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"},
		{"addr", "add", n.CIDR, "dev", n.Bridge},
		{"link", "set", n.Bridge, "up"},
	}
	for _, t := range n.Taps {
		cmds = append(cmds,
			[]string{"tuntap", "add", "dev", t, "mode", "tap"},
			[]string{"link", "set", t, "master", n.Bridge},
			[]string{"link", "set", t, "up"})
	}
	for _, c := range cmds {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			// lo may already be up; a second Setup in one namespace re-runs it.
			return fmt.Errorf("ip %s: %v: %s", strings.Join(c, " "), err, bytes.TrimSpace(out))
		}
	}
	return nil
}

// Firmware of a VM.
type Firmware string

// Firmwares the lab can boot.
const (
	BIOS Firmware = vbmc.BIOS // SeaBIOS; the NIC's option ROM (iPXE) does PXE
	UEFI Firmware = vbmc.UEFI // OVMF with its own PXE stack (NIC ROM disabled)
)

// VM is one QEMU machine that boots from the network: a diskless
// vbmc.Machine (so the network is its first boot device) that Start powers
// on at once.
type VM struct {
	Name     string
	MAC      string
	Tap      string
	Firmware Firmware
	// HTTPBoot makes a UEFI VM network boot by UEFI HTTP boot only (no
	// PXE), as a server set to HTTP boot does.
	HTTPBoot bool
	// SecureBoot makes a UEFI VM enforce Secure Boot with Microsoft's keys.
	SecureBoot bool
	// Memory in MiB; default 512.
	Memory int
	// Serial is where the VM's serial console is copied (its log file).
	Serial string

	m *vbmc.Machine
}

// Accel returns "kvm" only where KVM really works for these guests, else
// "tcg" (the virtual BMC owns the rule; the lab uses the same).
func Accel() string { return vbmc.Accel() }

// Start launches the VM and powers it on; workDir receives its QMP socket
// and UEFI variable store (in a directory named after the VM).
func (v *VM) Start(ctx context.Context, workDir string) error {
	v.m = &vbmc.Machine{Name: v.Name, MAC: v.MAC, Tap: v.Tap, Firmware: string(v.Firmware), UEFIHTTPBoot: v.HTTPBoot, SecureBoot: v.SecureBoot, Memory: v.Memory,
		SerialLog: v.Serial, WorkDir: filepath.Join(workDir, v.Name)}
	if err := v.m.Start(ctx); err != nil {
		return fmt.Errorf("vm %s: %w", v.Name, err)
	}
	if err := v.m.PowerOn(ctx); err != nil {
		v.m.Stop()
		return fmt.Errorf("vm %s: power on: %w", v.Name, err)
	}
	return nil
}

// WaitFor waits until the VM's serial output contains marker and returns
// the line holding it and the time since Start.
func (v *VM) WaitFor(ctx context.Context, marker string) (string, time.Duration, error) {
	return v.m.WaitFor(ctx, marker)
}

// Stop kills the VM if it was started.
func (v *VM) Stop() {
	if v.m != nil {
		v.m.Stop()
	}
}

// Process is a background command whose output goes to a log file.
type Process struct {
	Name string
	cmd  *exec.Cmd
	done chan error
}

// StartProcess runs argv in the background with its output in logPath.
// Pdeathsig makes the kernel kill it if the lab process dies first.
func StartProcess(name, logPath string, argv ...string) (*Process, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait(); f.Close() }()
	return p, nil
}

// PID returns the process ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited returns a channel that receives the exit error when the process ends.
func (p *Process) Exited() <-chan error { return p.done }

// Stop sends SIGTERM, waits up to 10 s, then kills.
func (p *Process) Stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
	}
}

// WaitHTTP polls url until it answers 200 or ctx is done.
func WaitHTTP(ctx context.Context, url string, exited <-chan error) error {
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer: %v", url, err)
		case err := <-exited:
			return fmt.Errorf("server exited before answering %s: %v", url, err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// GetJSON fetches url and decodes its JSON body into v.
func GetJSON(url string, v any) error {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
