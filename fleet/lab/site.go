package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/phoenixboot/phoenix/fleet"
)

// Site is one lab boot network with its own phoenix server.
type Site struct {
	Name string
	Net  Net
	// Phoenix is the path of the phoenix binary.
	Phoenix string
	// Dir holds the site's state volume, hosts file and logs.
	Dir string
	// DHCP is phoenix's DHCP mode: "full" or "proxy".
	DHCP string
	// Range is the DHCP pool "FIRST-LAST" (full mode).
	Range string
	// HTTPPort is phoenix's HTTP port on the bridge address.
	HTTPPort int
	// Image is imported as ImageRef from Kernel and Initrd with Cmdline.
	ImageRef, Kernel, Initrd, Cmdline string
	// Hosts are written to the site's hosts file, unless FleetFile (a
	// whole fleet file: hosts with BMCs, rollout policy) is given.
	Hosts     []fleet.Host
	FleetFile string
	// NetReady says the caller already ran Net.Setup (e.g. because VMs
	// needed the taps before phoenix starts).
	NetReady bool
	// Extra flags for phoenix serve.
	Extra []string
	// PreStart are phoenix commands run against the state dir (offline)
	// after the import and before the server starts, e.g. more imports.
	PreStart [][]string

	server *Process
}

// URL is the base URL of the site's phoenix.
func (s *Site) URL() string { return fmt.Sprintf("http://%s:%d", s.Net.IP(), s.HTTPPort) }

// Start creates the network, imports the image and starts phoenix, waiting
// until it answers.
func (s *Site) Start(ctx context.Context) error {
	if !s.NetReady {
		if err := s.Net.Setup(); err != nil {
			return fmt.Errorf("site %s: %w", s.Name, err)
		}
	}
	state := filepath.Join(s.Dir, "state")
	if err := os.MkdirAll(state, 0o755); err != nil {
		return err
	}
	hostsFile := filepath.Join(s.Dir, "hosts.yaml")
	data, err := yaml.Marshal(map[string]any{"hosts": s.Hosts})
	if err != nil {
		return err
	}
	if s.FleetFile != "" {
		data = []byte(s.FleetFile)
	}
	if err := os.WriteFile(hostsFile, data, 0o644); err != nil {
		return err
	}
	imp := exec.CommandContext(ctx, s.Phoenix, "image", "import", s.ImageRef, "--state", state, "--state-allow-shared",
		"--kernel", s.Kernel, "--initrd", s.Initrd, "--cmdline", s.Cmdline, "--log-level", "warn")
	if out, err := imp.CombinedOutput(); err != nil {
		return fmt.Errorf("site %s: image import: %v: %s", s.Name, err, strings.TrimSpace(string(out)))
	}
	for _, c := range s.PreStart {
		cmd := exec.CommandContext(ctx, s.Phoenix, append(c, "--state", state, "--state-allow-shared", "--log-level", "warn")...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("site %s: phoenix %s: %v: %s", s.Name, strings.Join(c, " "), err, strings.TrimSpace(string(out)))
		}
	}
	args := []string{s.Phoenix, "serve", "--state", state, "--state-allow-shared",
		"--interface", s.Net.Bridge, "--dhcp", s.DHCP, "--hosts", hostsFile,
		"--http-addr", fmt.Sprintf("%s:%d", s.Net.IP(), s.HTTPPort),
		"--tftp-addr", s.Net.IP() + ":69", "--router-advert", "--log-level", "debug"}
	if s.DHCP == "full" {
		args = append(args, "--dhcp-range", s.Range)
	}
	args = append(args, s.Extra...)
	s.server, err = StartProcess("phoenix-"+s.Name, filepath.Join(s.Dir, "phoenix.log"), args...)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := WaitHTTP(wctx, s.URL()+"/healthz", s.server.Exited()); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.Dir, "phoenix.log"))
		return fmt.Errorf("site %s: %w\n%s", s.Name, err, log)
	}
	return nil
}

// Stop stops the site's phoenix.
func (s *Site) Stop() {
	if s.server != nil {
		s.server.Stop()
	}
}

// HostStatus asks the site's phoenix for its hosts.
func (s *Site) HostStatus() ([]fleet.HostStatus, error) {
	var out []fleet.HostStatus
	err := GetJSON(s.URL()+"/api/v1/hosts", &out)
	return out, err
}

// StartDnsmasq runs dnsmasq (addresses only, no boot options) in a nested
// private namespace joined to bridge by a veth pair, standing in for the
// site's existing DHCP server in proxy mode.
func StartDnsmasq(ctx context.Context, dir, bridge, cidr, first, last string) (*Process, error) {
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		return nil, fmt.Errorf("dnsmasq not found (Debian package dnsmasq-base)")
	}
	host, peer := "vdh"+bridge, "vdp"+bridge
	script := fmt.Sprintf(`while ! ip link show %[1]s >/dev/null 2>&1; do sleep 0.05; done
ip link set lo up; ip addr add %[2]s dev %[1]s; ip link set %[1]s up
exec dnsmasq --no-daemon --conf-file=/dev/null --port=0 --interface=%[1]s --bind-interfaces \
  --dhcp-range=%[3]s,%[4]s,1h --no-ping --dhcp-leasefile=%[5]s/dnsmasq.leases --pid-file= --log-dhcp --user=root`,
		peer, cidr, first, last, dir)
	p, err := StartProcess("dnsmasq", filepath.Join(dir, "dnsmasq.log"), "unshare", "--net", "--", "sh", "-c", script)
	if err != nil {
		return nil, err
	}
	// unshare makes its namespace only after it started: moving the veth
	// end before that would leave it here, and dnsmasq waiting forever.
	self, _ := os.Readlink("/proc/self/ns/net")
	for i := 0; ; i++ {
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", p.PID()))
		if err == nil && ns != self {
			break
		}
		if i == 100 {
			p.Stop()
			return nil, fmt.Errorf("dnsmasq's namespace did not appear: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, c := range [][]string{
		{"link", "add", host, "type", "veth", "peer", "name", peer},
		{"link", "set", peer, "netns", fmt.Sprint(p.PID())},
		{"link", "set", host, "master", bridge},
		{"link", "set", host, "up"},
	} {
		if out, err := exec.CommandContext(ctx, "ip", c...).CombinedOutput(); err != nil {
			p.Stop()
			return nil, fmt.Errorf("ip %s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	// Return only once dnsmasq serves DHCP, so that no VM asks before it
	// listens (it logs its range when its DHCP socket is up).
	logPath := filepath.Join(dir, "dnsmasq.log")
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		if strings.Contains(string(b), "DHCP, IP range") {
			return p, nil
		}
		select {
		case err := <-p.Exited():
			return nil, fmt.Errorf("dnsmasq exited: %v\n%s", err, b)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("dnsmasq did not start serving DHCP within 20s:\n%s", b)
		}
	}
}

// CLI runs a phoenix command against the site's server with its API
// token, and returns what it printed.
func (s *Site) CLI(ctx context.Context, args ...string) (string, error) {
	token, err := os.ReadFile(filepath.Join(s.Dir, "state", fleet.TokenFile))
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, s.Phoenix, append(args, "--server", s.URL())...)
	cmd.Env = append(os.Environ(), "PHOENIX_TOKEN="+strings.TrimSpace(string(token)))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("phoenix %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
