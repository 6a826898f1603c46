package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/phoenixboot/phoenix/fleet/lab"
)

// perfdhcpResult is one perfdhcp run at one offered rate.
type perfdhcpResult struct {
	Rate  float64 // completed DORA exchanges per second of sending
	Acks  int     // ACKs received
	Sent  int     // DISCOVERs sent
	Drops int     // DISCOVER-OFFER + REQUEST-ACK drops
}

var (
	rateRE  = regexp.MustCompile(`(?m)^Rate: ([0-9.]+) 4-way exchanges/second`)
	statsRE = regexp.MustCompile(`(?s)\*\*\*Statistics for: (DISCOVER-OFFER|REQUEST-ACK)\*\*\*\s*sent packets: (\d+)\s*received packets: (\d+)\s*drops: (\d+)`)
)

// parsePerfdhcp reads perfdhcp's report of a run that sent for secs
// seconds. perfdhcp's own "Rate" divides by the whole run, exit wait (-W)
// included, so the rate is computed from the ACKs received instead.
func parsePerfdhcp(out string, secs float64) (perfdhcpResult, error) {
	var r perfdhcpResult
	m := rateRE.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("perfdhcp: no rate in output: %s", tail([]byte(out), 600))
	}
	r.Rate, _ = strconv.ParseFloat(m[1], 64)
	for _, s := range statsRE.FindAllStringSubmatch(out, -1) {
		sent, _ := strconv.Atoi(s[2])
		recv, _ := strconv.Atoi(s[3])
		drops, _ := strconv.Atoi(s[4])
		if s[1] == "DISCOVER-OFFER" {
			r.Sent = sent
		} else {
			r.Acks = recv
			r.Rate = float64(recv) / secs
		}
		r.Drops += drops
	}
	return r, nil
}

// dropTolerance is the share of exchanges a rate step may lose and still
// count as clean. On a loaded 2-core machine every server, Kea included,
// loses a packet or two now and then to perfdhcp itself not being
// scheduled; 0.1 % keeps those from hiding a server's real ceiling.
const dropTolerance = 0.001

// server is one server under test (DHCP or TFTP) and how to start it.
type server struct {
	name  string
	start func(ctx context.Context, dir string) (*lab.Process, error)
	// counters, if set, reads the server's own packet counters, so a
	// step's log can say where lost exchanges went.
	counters func() map[string]float64
}

// serverCPU and clientCPU split the machine between the DHCP server under
// test and perfdhcp: each gets cores of its own (taskset), as a server
// and its clients on other machines would. Sharing them, the scheduler's
// choices decide the result more than the server does: perfdhcp's
// receiving thread starves, its socket buffer overflows, and replies the
// server did send count as drops. Every server gets the same cores.
func serverCPU() []string { return cpuSet(0) }
func clientCPU() []string { return cpuSet(1) }

// cpuSet returns a taskset prefix for half of the cores: the lower half
// (half 0) or the upper one. Nothing on a single core.
func cpuSet(half int) []string {
	n := numCPU()
	if n < 2 {
		return nil
	}
	lo, hi := 0, n/2-1
	if half == 1 {
		lo, hi = n/2, n-1
	}
	return []string{"taskset", "-c", fmt.Sprintf("%d-%d", lo, hi)}
}

func (e *env) dhcpServers() []server {
	dnsmasq := func(leasefile bool) func(context.Context, string) (*lab.Process, error) {
		return func(ctx context.Context, dir string) (*lab.Process, error) {
			args := []string{"dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
				"--interface=" + serverIface, "--bind-interfaces", "--dhcp-authoritative",
				"--dhcp-range=" + poolFirst + "," + poolLast + ",255.252.0.0,1h",
				"--no-ping", "--dhcp-lease-max=100000", "--pid-file=", "--user=root"}
			if leasefile {
				args = append(args, "--dhcp-leasefile="+filepath.Join(dir, "dnsmasq.leases"))
			} else {
				args = append(args, "--leasefile-ro")
			}
			return e.start(ctx, "dnsmasq", dir, udpBound(67), append(serverCPU(), args...)...)
		}
	}
	kea := func(ctx context.Context, dir string) (*lab.Process, error) {
		conf := map[string]any{"Dhcp4": map[string]any{
			"interfaces-config": map[string]any{"interfaces": []string{serverIface}},
			"lease-database": map[string]any{"type": "memfile", "persist": true,
				"name": filepath.Join(dir, "kea-leases4.csv"), "lfc-interval": 0},
			"valid-lifetime": 3600,
			"subnet4": []any{map[string]any{"id": 1, "subnet": "10.76.0.0/14",
				"pools": []any{map[string]any{"pool": poolFirst + " - " + poolLast}}}},
			"loggers": []any{map[string]any{"name": "kea-dhcp4", "severity": "WARN",
				"output_options": []any{map[string]any{"output": "stdout"}}}},
		}}
		data, _ := json.MarshalIndent(conf, "", "  ")
		path := filepath.Join(dir, "kea-dhcp4.json")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return nil, err
		}
		// Kea's lock and PID files go to the run's directory, not /run/kea.
		return e.start(ctx, "kea", dir, udpBound(67), append(serverCPU(), "env", "KEA_LOCKFILE_DIR="+dir, "KEA_PIDFILE_DIR="+dir, "kea-dhcp4", "-c", path)...)
	}
	phoenix := func(ctx context.Context, dir string) (*lab.Process, error) {
		return e.startPhoenix(ctx, dir, phoenixOpts{dhcp: "full", ipxeDir: e.ipxeDir, logLevel: "warn", pin: serverCPU()})
	}
	return []server{
		{name: "phoenix", start: phoenix, counters: phoenixDHCPCounters},
		{name: "kea", start: kea},
		{name: "dnsmasq-leasefile", start: dnsmasq(true)},
		{name: "dnsmasq-noleasefile", start: dnsmasq(false)},
	}
}

// benchDHCP runs perfdhcp from the client namespace at increasing rates
// against each server and records, per run, the throughput in the sense of
// RFC 2544: the highest offered rate the server answered with drops within
// dropTolerance. The ladder is coarse, so two servers on the same step tie.
// It also records each server's peak completed rate at any step, drops or
// not. A server that loses more than a quarter of a step's exchanges has
// passed its ceiling and climbs no further.
func benchDHCP(ctx context.Context, e *env) ([]Row, error) {
	// The ladder climbs past where every server here saturates on two
	// cores, so a ratio compares ceilings rather than the ladder's top.
	// It starts low enough that dnsmasq with a lease file (a few
	// hundred a second) has a figure of its own.
	rates := []int{100, 250, 500, 1000, 2000, 4000, 6000, 8000, 10000, 12000, 14000, 16000}
	secs := 5
	if e.o.Quick {
		rates, secs = []int{1000, 4000, 8000, 12000, 16000}, 3
	}
	// perfdhcp plays every client behind one socket, whose buffer (the
	// kernel's default, 208 KiB) a server's burst of replies to many
	// clients overflows: replies sent, then counted as drops, where real
	// clients would each have their own socket. A load generator for
	// thousands of clients gets a buffer to match. A child namespace
	// cannot set the default (it is read-only there), so it is raised
	// machine-wide for this part, for every server alike, and put back.
	if restore, err := raiseRmemDefault(clientRcvBuf); err != nil {
		e.o.logf("dhcp: perfdhcp keeps the default socket buffer: %v", err)
	} else {
		defer restore()
		e.o.logf("dhcp: net.core.rmem_default is %d during this part (perfdhcp's socket buffer), put back after", clientRcvBuf)
	}
	servers := e.dhcpServers()
	clean := map[string][]float64{}
	peak := map[string][]float64{}
	for run := 0; run < e.o.runs(); run++ {
		for _, s := range servers {
			c, pk, err := e.dhcpLadder(ctx, s, run, rates, secs)
			if err != nil {
				return nil, err
			}
			clean[s.name] = append(clean[s.name], c)
			peak[s.name] = append(peak[s.name], pk)
		}
	}
	var rows []Row
	// A peer with no clean rate at all is beaten by any clean rate.
	atLeast := func(r Row, x float64) string {
		return yesNo(r.Ratio() >= x || (median(r.Peer) == 0 && median(r.Phoenix) > 0))
	}
	for _, peer := range []string{"kea", "dnsmasq-leasefile", "dnsmasq-noleasefile"} {
		r := Row{Part: "dhcp", Metric: "DORA/s, drops ≤ 0.1 %", Unit: "/s", Phoenix: clean["phoenix"], PeerName: peer, Peer: clean[peer]}
		switch peer {
		case "kea":
			r.Goal, r.Met = "≥ 1.0×", atLeast(r, 1.0)
			r.Note = "kea memfile persist=true (appends, no fsync); phoenix fsyncs each lease before its ACK"
		case "dnsmasq-leasefile":
			r.Goal, r.Met = "≥ 1.5×", atLeast(r, 1.5)
			r.Note = "dnsmasq --no-ping, lease file on"
		default:
			r.Note = "dnsmasq --no-ping --leasefile-ro (nothing persisted)"
		}
		rows = append(rows, r)
	}
	for _, peer := range []string{"kea", "dnsmasq-leasefile", "dnsmasq-noleasefile"} {
		rows = append(rows, Row{Part: "dhcp", Metric: "peak DORA/s, any drops", Unit: "/s",
			Phoenix: peak["phoenix"], PeerName: peer, Peer: peak[peer]})
	}
	return rows, nil
}

// dhcpLadder starts one server and climbs the rate ladder against it. It
// returns the highest offered rate served within dropTolerance (0 if none)
// and the highest completed rate seen.
func (e *env) dhcpLadder(ctx context.Context, s server, run int, rates []int, secs int) (clean, peak float64, err error) {
	dir, err := e.partDir(fmt.Sprintf("dhcp/%s-%d", s.name, run))
	if err != nil {
		return 0, 0, err
	}
	p, err := s.start(ctx, dir)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", s.name, err)
	}
	defer p.Stop()
	for _, rate := range rates {
		kdrop0, cdrop0 := udpRcvbufErrors(), e.clientRcvbufErrors()
		var c0 map[string]float64
		if s.counters != nil {
			c0 = s.counters()
		}
		// -R: simulated clients; more than a step's exchanges, so within
		// a step each DORA is a new client (the clients of earlier steps
		// come back, as after a reboot; see poolFirst). -W: replies still
		// on their way when the sending stops are waited for (1 s, as long
		// as perfdhcp's drop time) rather than counted as drops.
		// -g single: perfdhcp has one core, where its manual says one
		// thread does better; with two, its receiving thread waits on the
		// sending one, its socket buffer overflows, and replies the
		// server did send count as drops (seen for every server, from
		// 8,000/s on).
		cmd := e.inClient(ctx, append(clientCPU(), "perfdhcp", "-g", "single", "-4", "-l", clientIface, "-r", strconv.Itoa(rate),
			"-p", strconv.Itoa(secs), "-R", "1000000", "-W", "1000000")...)
		out, err := cmd.CombinedOutput()
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("perfdhcp-%d.txt", rate)), out, 0o644)
		if err != nil && !strings.Contains(string(out), "Rate:") {
			return 0, 0, fmt.Errorf("perfdhcp against %s at %d/s: %v: %s", s.name, rate, err, tail(out, 400))
		}
		r, err := parsePerfdhcp(string(out), float64(secs))
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", s.name, err)
		}
		// Datagrams the kernel dropped because the server's socket buffer
		// was full: tells a slow server from a packet lost elsewhere.
		// The same on perfdhcp's side: replies sent but lost at the client.
		kdrop, cdrop := udpRcvbufErrors()-kdrop0, e.clientRcvbufErrors()-cdrop0
		e.o.logf("dhcp run %d %s offered %d/s: %.0f DORA/s, %d drops of %d (socket buffer overflows: server %d, perfdhcp %d)",
			run+1, s.name, rate, r.Rate, r.Drops, r.Sent, kdrop, cdrop)
		if s.counters != nil {
			c1 := s.counters()
			var parts []string
			for _, k := range []string{"received", "dropped", "ignored", "offers", "acks", "naks", "errors"} {
				parts = append(parts, fmt.Sprintf("%s %.0f", k, c1[k]-c0[k]))
			}
			e.o.logf("dhcp run %d %s counted: %s", run+1, s.name, strings.Join(parts, ", "))
		}
		peak = max(peak, r.Rate)
		if float64(r.Drops) <= dropTolerance*float64(r.Sent) {
			clean = max(clean, float64(rate))
		}
		if float64(r.Drops) > 0.25*float64(r.Sent) {
			break
		}
		// Let late replies drain before the next step.
		time.Sleep(500 * time.Millisecond)
	}
	return clean, peak, nil
}

// phoenixDHCPCounters reads phoenix's DHCP counters from its /metrics
// (phoenix_dhcp_<name>_total), keyed by name; empty if it cannot.
func phoenixDHCPCounters() map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(fmt.Sprintf("http://%s:%d/metrics", serverIP, httpPort))
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || !strings.HasPrefix(name, "phoenix_dhcp_") || !strings.HasSuffix(name, "_total") {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err == nil {
			out[strings.TrimSuffix(strings.TrimPrefix(name, "phoenix_dhcp_"), "_total")] = v
		}
	}
	return out
}

// clientRcvBuf is the socket buffer perfdhcp gets: room for a few
// thousand replies, as a load generator standing in for that many
// clients needs.
const clientRcvBuf = 4 << 20

// raiseRmemDefault raises net.core.rmem_default to at least v and returns
// the function that puts the old value back. The setting is the
// machine's, writable only from the initial network namespace (the bench
// runs in a private one), so it is written through nsenter in the
// namespace of the bench's parent, which started it there.
func raiseRmemDefault(v int) (restore func(), err error) {
	data, err := os.ReadFile("/proc/sys/net/core/rmem_default")
	if err != nil {
		return nil, err
	}
	old, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("net.core.rmem_default: %w", err)
	}
	if old >= v {
		return func() {}, nil
	}
	set := func(n int) error {
		out, err := exec.Command("nsenter", fmt.Sprintf("--net=/proc/%d/ns/net", os.Getppid()), "--", "sysctl", "-qw",
			fmt.Sprintf("net.core.rmem_default=%d", n)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("sysctl net.core.rmem_default=%d: %v: %s", n, err, bytes.TrimSpace(out))
		}
		return nil
	}
	if err := set(v); err != nil {
		return nil, err
	}
	return func() { _ = set(old) }, nil
}
