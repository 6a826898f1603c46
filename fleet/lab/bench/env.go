package bench

import (
	"cmp"
	"context"
	"crypto/rand"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/phoenixboot/phoenix/fleet/lab"
)

// The bench network: the servers under test sit on serverIface in the
// bench's own namespace; load generators run in a second namespace behind
// clientIface. Addresses exist only inside those two namespaces.
const (
	serverIface = "bvs"
	clientIface = "bvc"
	serverIP    = "10.77.0.1"
	clientIP    = "10.77.0.2"
	prefix      = "/14"
	// poolFirst–poolLast is every DHCP server's pool: big enough that
	// perfdhcp's clients never exhaust it. Without a seed, perfdhcp draws
	// the same client MACs in every run, so the distinct clients are at
	// most the top step's exchanges (16,000/s for 5 s), not the sum of
	// the steps; the pool holds 131,070.
	poolFirst = "10.78.0.1"
	poolLast  = "10.79.255.254"
	httpPort  = 8080
)

// env is the shared setup of one bench run.
type env struct {
	o        *Options
	clientNS *lab.Process // a sleeping process holding the client namespace
	// files served by TFTP: small (1 MiB, "undionly.kpxe") and big
	// (single-stream figure, "ipxe.efi"), in ipxeDir.
	ipxeDir string
	procs   []*lab.Process
}

func newEnv(ctx context.Context, o *Options) (*env, error) {
	e := &env{o: o}
	ns, err := lab.StartProcess("client-ns", filepath.Join(o.Dir, "client-ns.log"), "unshare", "--net", "--", "sleep", "86400")
	if err != nil {
		return nil, err
	}
	e.clientNS = ns
	pid := strconv.Itoa(ns.PID())
	// unshare needs a moment to create the namespace before exec'ing sleep.
	deadline := time.Now().Add(5 * time.Second)
	self, _ := os.Readlink("/proc/self/ns/net")
	for {
		other, err := os.Readlink("/proc/" + pid + "/ns/net")
		if err == nil && other != self {
			break
		}
		if time.Now().After(deadline) {
			e.close()
			return nil, fmt.Errorf("client namespace did not appear")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmds := [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "add", serverIface, "type", "veth", "peer", "name", clientIface},
		{"ip", "link", "set", clientIface, "netns", pid},
		{"ip", "addr", "add", serverIP + prefix, "dev", serverIface},
		{"ip", "link", "set", serverIface, "up"},
		{"nsenter", "-t", pid, "-n", "ip", "link", "set", "lo", "up"},
		{"nsenter", "-t", pid, "-n", "ip", "addr", "add", clientIP + prefix, "dev", clientIface},
		{"nsenter", "-t", pid, "-n", "ip", "link", "set", clientIface, "up"},
	}
	for _, c := range cmds {
		if out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput(); err != nil {
			e.close()
			return nil, fmt.Errorf("%s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	e.ipxeDir, err = e.partDir("ipxe")
	if err != nil {
		e.close()
		return nil, err
	}
	big := 16 << 20
	if o.Quick {
		big = 4 << 20
	}
	for name, size := range map[string]int{"undionly.kpxe": 1 << 20, "ipxe.efi": big} {
		if err := writeRandom(filepath.Join(e.ipxeDir, name), size); err != nil {
			e.close()
			return nil, err
		}
	}
	return e, nil
}

func (e *env) close() {
	for i := len(e.procs) - 1; i >= 0; i-- {
		e.procs[i].Stop()
	}
	if e.clientNS != nil {
		e.clientNS.Stop()
	}
}

// inClient returns a command that runs argv in the client namespace.
func (e *env) inClient(ctx context.Context, argv ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(e.clientNS.PID()), "-n", "--"}, argv...)...)
}

// start runs a server in the background, logging to DIR/name.log, and
// gives it until ready returns nil (polled, at most 20 s).
func (e *env) start(ctx context.Context, name, dir string, ready func() error, argv ...string) (*lab.Process, error) {
	logPath := filepath.Join(dir, name+".log")
	p, err := lab.StartProcess(name, logPath, argv...)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := ready()
		if err == nil {
			return p, nil
		}
		select {
		case exitErr := <-p.Exited():
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("%s exited at start (%v): %s", name, exitErr, tail(log, 800))
		case <-ctx.Done():
			p.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop()
			log, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("%s not ready after 20 s: %v: %s", name, err, tail(log, 800))
		}
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// udpBound reports whether something listens on UDP port in this namespace.
func udpBound(port int) func() error { return udpBoundAt("", port) }

// udpBoundAt reports whether something listens on UDP port at the IPv4
// address ip (or at any address, ip empty) in this namespace.
func udpBoundAt(ip string, port int) func() error {
	return func() error {
		data, err := os.ReadFile("/proc/net/udp")
		if err != nil {
			return err
		}
		want := fmt.Sprintf(":%04X", port)
		if a, err := netip.ParseAddr(ip); err == nil && a.Is4() {
			// /proc/net/udp prints the address as one little-endian word.
			b := a.As4()
			want = fmt.Sprintf("%02X%02X%02X%02X", b[3], b[2], b[1], b[0]) + want
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) > 2 && strings.HasSuffix(f[1], want) {
				return nil
			}
		}
		return fmt.Errorf("nothing on udp %s:%d", cmp.Or(ip, "*"), port)
	}
}

// tcpAnswers reports whether an HTTP GET of url gets any answer.
func httpAnswers(url string) func() error {
	return func() error {
		return httpPing(url)
	}
}

// phoenixOpts describe one phoenix serve.
type phoenixOpts struct {
	dhcp     string // full or off
	hosts    string // hosts file, optional
	ipxeDir  string
	logLevel string
	// image, when set, is imported first: ref, kernel, initrd.
	image [3]string
	// pin, when set, prefixes the command (serverCPU).
	pin []string
}

// clientRcvbufErrors is udpRcvbufErrors in the client namespace.
func (e *env) clientRcvbufErrors() int {
	return udpRcvbufErrorsIn(fmt.Sprintf("/proc/%d/net/snmp", e.clientNS.PID()))
}

// startPhoenix imports the image (if any) into a fresh state dir under dir
// and runs phoenix serve on the bench network.
func (e *env) startPhoenix(ctx context.Context, dir string, po phoenixOpts) (*lab.Process, error) {
	state, err := os.MkdirTemp(dir, "state-")
	if err != nil {
		return nil, err
	}
	if po.image[0] != "" {
		imp := exec.CommandContext(ctx, e.o.Phoenix, "image", "import", po.image[0], "--state", state, "--state-allow-shared",
			"--kernel", po.image[1], "--initrd", po.image[2], "--cmdline", "console=ttyS0 quiet", "--log-level", "warn")
		if out, err := imp.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("phoenix image import: %v: %s", err, out)
		}
	}
	args := append(slices.Clone(po.pin), e.o.Phoenix, "serve", "--state", state, "--state-allow-shared",
		"--interface", serverIface, "--dhcp", po.dhcp,
		"--http-addr", fmt.Sprintf("%s:%d", serverIP, httpPort), "--tftp-addr", serverIP+":69",
		"--ipxe-dir", po.ipxeDir, "--log-level", po.logLevel)
	if po.dhcp == "full" {
		args = append(args, "--dhcp-range", poolFirst+"-"+poolLast)
	}
	if po.hosts != "" {
		args = append(args, "--hosts", po.hosts)
	}
	ready := func() error {
		if err := httpPing(fmt.Sprintf("http://%s:%d/healthz", serverIP, httpPort)); err != nil {
			return err
		}
		if po.dhcp == "full" {
			return udpBound(67)()
		}
		return nil
	}
	return e.start(ctx, "phoenix", dir, ready, args...)
}

// writeRandom writes size random bytes to path, world-readable.
func writeRandom(path string, size int) error {
	buf := make([]byte, size)
	rand.Read(buf)
	return os.WriteFile(path, buf, 0o644)
}

// procCPU returns the user+system CPU seconds pid and its live children
// have used.
func procCPU(pid int) float64 {
	total := 0.0
	for _, p := range append([]int{pid}, childPIDs(pid)...) {
		// fields after ")": state(0) ppid(1) ... utime(11) stime(12)
		if f := procStat(strconv.Itoa(p)); len(f) > 12 {
			u, _ := strconv.ParseFloat(f[11], 64)
			st, _ := strconv.ParseFloat(f[12], 64)
			total += (u + st) / 100 // USER_HZ is 100 on Linux
		}
	}
	return total
}

func childPIDs(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		p, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if f := procStat(ent.Name()); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

// procStat returns the fields of /proc/PID/stat after the command name
// (which may hold spaces and parentheses), or nil when pid is gone.
func procStat(pid string) []string {
	data, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return nil
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

// procHWM returns pid's peak resident set size in MiB (VmHWM).
func procHWM(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
