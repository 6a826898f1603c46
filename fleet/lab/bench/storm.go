package bench

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
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/phoenixboot/phoenix/fleet"
	"github.com/phoenixboot/phoenix/fleet/lab"
)

// StormConfig tells the storm client (run in the client namespace) what
// to simulate.
type StormConfig struct {
	Server string   // phoenix's address
	Iface  string   // the client namespace's interface for broadcasts
	MACs   []string // one simulated PXE client per MAC
	// Window is how long the client starts take in all (the storm starts
	// every client within it).
	Window time.Duration
	// BadPerSecond malformed DHCP and as many malformed TFTP packets are
	// sent each second while the storm lasts.
	BadPerSecond int
	// Timeout bounds each client's whole boot.
	Timeout time.Duration
}

// StormResult is what the storm client found.
type StormResult struct {
	// Took holds each successful client's time from its start to the
	// accepted report, in seconds.
	Took     []float64
	Failed   int
	Errors   []string // the first few failures
	BadDHCP  int      // malformed DHCP packets sent
	BadTFTP  int      // malformed TFTP packets sent
	Duration float64  // seconds from the first start to the last report
}

// RunStormClient simulates cfg.MACs PXE clients booting at once: DHCP
// DORA as the PXE ROM, TFTP of the boot file, DORA again as iPXE, the
// script, kernel and initrd over HTTP, and the report. Meanwhile it sends
// malformed DHCP and TFTP packets. It must run in the client namespace.
func RunStormClient(ctx context.Context, cfg StormConfig) (*StormResult, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			if serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1); serr != nil {
				return
			}
			serr = syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, cfg.Iface)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", ":68")
	if err != nil {
		return nil, fmt.Errorf("storm: dhcp client socket: %w", err)
	}
	conn := pc.(*net.UDPConn)
	defer conn.Close()
	var mu sync.Mutex
	waiters := map[uint32]chan dhcpReply{}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			r, err := parseDHCPReply(buf[:n])
			if err != nil {
				continue
			}
			mu.Lock()
			ch := waiters[r.xid]
			mu.Unlock()
			if ch != nil {
				select {
				case ch <- r:
				default:
				}
			}
		}
	}()
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: 67}
	// exchange sends pkt until a reply of type want (or a NAK) arrives.
	exchange := func(ctx context.Context, xid uint32, pkt []byte, want byte) (dhcpReply, error) {
		ch := make(chan dhcpReply, 4)
		mu.Lock()
		waiters[xid] = ch
		mu.Unlock()
		defer func() { mu.Lock(); delete(waiters, xid); mu.Unlock() }()
		for try := range 6 {
			if _, err := conn.WriteToUDP(pkt, bcast); err != nil {
				return dhcpReply{}, err
			}
			// PXE ROMs retry after 4, 8, 16 s; a storm client uses 2 s steps.
			t := time.NewTimer(time.Duration(2+try) * time.Second)
			for {
				select {
				case r := <-ch:
					if r.msgType == dhcpNak {
						t.Stop()
						return r, fmt.Errorf("dhcp nak")
					}
					if r.msgType != want {
						continue
					}
					t.Stop()
					return r, nil
				case <-ctx.Done():
					t.Stop()
					return dhcpReply{}, ctx.Err()
				case <-t.C:
				}
				break
			}
		}
		return dhcpReply{}, fmt.Errorf("dhcp: no reply of type %d after 6 tries", want)
	}
	var xidSeq atomic.Uint32
	xidSeq.Store(uint32(time.Now().UnixNano()))
	dora := func(ctx context.Context, mac net.HardwareAddr, ipxe bool) (dhcpReply, error) {
		xid := xidSeq.Add(1)
		opts := pxeOpts(mac, ipxe)
		off, err := exchange(ctx, xid, dhcpPacket(mac, xid, append([]dhcpOpt{{53, []byte{dhcpDiscover}}}, opts...)...), dhcpOffer)
		if err != nil {
			return off, fmt.Errorf("discover: %w", err)
		}
		req := append([]dhcpOpt{{53, []byte{dhcpRequest}}, {50, off.yiaddr.To4()}, {54, off.serverID.To4()}}, opts...)
		ack, err := exchange(ctx, xid, dhcpPacket(mac, xid, req...), dhcpAck)
		if err != nil {
			return ack, fmt.Errorf("request: %w", err)
		}
		return ack, nil
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 1024, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: cfg.Timeout}

	bootOne := func(ctx context.Context, macStr string) error {
		mac, err := net.ParseMAC(macStr)
		if err != nil {
			return err
		}
		ack, err := dora(ctx, mac, false)
		if err != nil {
			return fmt.Errorf("pxe %w", err)
		}
		if ack.file == "" {
			return fmt.Errorf("pxe ack without a boot file")
		}
		if _, err := tftpGet(ctx, cfg.Server+":69", ack.file, 1468); err != nil {
			return err
		}
		ack, err = dora(ctx, mac, true)
		if err != nil {
			return fmt.Errorf("ipxe %w", err)
		}
		scriptURL := macVarRE.ReplaceAllString(ack.file, mac.String())
		if !strings.HasPrefix(scriptURL, "http://") {
			return fmt.Errorf("ipxe ack boot file %q is not a script URL", ack.file)
		}
		script, err := httpGet(ctx, hc, scriptURL, true)
		if err != nil {
			return fmt.Errorf("script: %w", err)
		}
		kernel := regexp.MustCompile(`(?m)^kernel (\S+)`).FindStringSubmatch(string(script))
		initrd := regexp.MustCompile(`(?m)^initrd --name initrd (\S+)`).FindStringSubmatch(string(script))
		param := func(k string) string {
			m := regexp.MustCompile(`phoenix\.` + k + `=(\S+)`).FindStringSubmatch(string(script))
			if m == nil {
				return ""
			}
			return m[1]
		}
		if kernel == nil || initrd == nil || param("digest") == "" {
			return fmt.Errorf("script without kernel, initrd or digest: %.200s", script)
		}
		for _, u := range []string{kernel[1], initrd[1]} {
			if _, err := httpGet(ctx, hc, u, false); err != nil {
				return err
			}
		}
		body, _ := json.Marshal(map[string]string{"mac": mac.String(), "digest": param("digest"), "boot_id": param("bootid"), "host": param("host")})
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+cfg.Server+fmt.Sprintf(":%d", httpPort)+"/api/v1/report", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("report: %s", resp.Status)
		}
		return nil
	}

	res := &StormResult{}
	sctx, cancel := context.WithCancel(ctx)
	badDone := make(chan struct{})
	go func() {
		defer close(badDone)
		res.BadDHCP, res.BadTFTP = sendMalformed(sctx, cfg.Server, cfg.BadPerSecond)
	}()
	var wg sync.WaitGroup
	var rmu sync.Mutex
	t0 := time.Now()
	step := cfg.Window / time.Duration(max(1, len(cfg.MACs)))
	for i, m := range cfg.MACs {
		due := t0.Add(time.Duration(i) * step)
		time.Sleep(time.Until(due))
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, ccancel := context.WithTimeout(ctx, cfg.Timeout)
			defer ccancel()
			start := time.Now()
			err := bootOne(cctx, m)
			rmu.Lock()
			defer rmu.Unlock()
			if err != nil {
				res.Failed++
				if len(res.Errors) < 5 {
					res.Errors = append(res.Errors, m+": "+err.Error())
				}
				return
			}
			res.Took = append(res.Took, time.Since(start).Seconds())
		}()
	}
	wg.Wait()
	res.Duration = time.Since(t0).Seconds()
	cancel()
	<-badDone
	return res, nil
}

// macVarRE matches iPXE's ${net0/mac}-style settings in a script URL.
var macVarRE = regexp.MustCompile(`\$\{net[0-9A-Za-z]*/mac\}`)

// httpGet fetches url; keep says whether to return the body (else it is
// counted and discarded).
func httpGet(ctx context.Context, hc *http.Client, url string, keep bool) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if keep {
		return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err == nil && resp.ContentLength >= 0 && n != resp.ContentLength {
		err = fmt.Errorf("GET %s: %d of %d bytes", url, n, resp.ContentLength)
	}
	return nil, err
}

// sendMalformed sends perSec malformed DHCP and perSec malformed TFTP
// packets each second to server until ctx is done: truncated headers,
// a wrong magic cookie, replies sent to the server, unknown TFTP opcodes,
// requests without their terminating NULs, stray ACKs.
func sendMalformed(ctx context.Context, server string, perSec int) (dhcpN, tftpN int) {
	if perSec <= 0 {
		return 0, 0
	}
	c, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return 0, 0
	}
	defer c.Close()
	d := &net.UDPAddr{IP: net.ParseIP(server), Port: 67}
	t := &net.UDPAddr{IP: net.ParseIP(server), Port: 69}
	mac := net.HardwareAddr{2, 0xbd, 0, 0, 0, 1}
	good := dhcpPacket(mac, 1, dhcpOpt{53, []byte{dhcpDiscover}})
	badCookie := slices.Clone(good)
	badCookie[236] = 0
	reply := slices.Clone(good)
	reply[0] = 2
	badDHCP := [][]byte{good[:100], good[:241], badCookie, reply, {1, 1, 6}, append(slices.Clone(good[:len(good)-1]), 53, 9)}
	badTFTP := [][]byte{{0, 9, 0, 0}, {0, 1, 'a', 'b', 'c'}, {0, 4, 0, 7}, {0}, {0, 1, 0, 'o', 'c', 't', 'e', 't', 0}, {0, 3, 0, 1, 'x'}}
	tick := time.NewTicker(time.Second / time.Duration(perSec))
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return dhcpN, tftpN
		case <-tick.C:
		}
		if _, err := c.WriteToUDP(badDHCP[i%len(badDHCP)], d); err == nil {
			dhcpN++
		}
		if _, err := c.WriteToUDP(badTFTP[i%len(badTFTP)], t); err == nil {
			tftpN++
		}
	}
}

// benchStorm boots 500 simulated PXE clients against one phoenix.
func benchStorm(ctx context.Context, e *env) ([]Row, error) {
	n := 500
	dir, err := e.partDir("storm")
	if err != nil {
		return nil, err
	}
	macs := make([]string, n)
	for i := range macs {
		macs[i] = fmt.Sprintf("02:00:00:01:%02x:%02x", i>>8, i&0xff)
	}
	hosts := filepath.Join(dir, "hosts.yaml")
	if err := writeHosts(hosts, macs, "demo:1"); err != nil {
		return nil, err
	}
	ipxeDir := "/usr/lib/ipxe"
	if _, err := os.Stat(filepath.Join(ipxeDir, "undionly.kpxe")); err != nil {
		ipxeDir = e.ipxeDir
	}
	var success, p50, p99, dropsD, dropsT, sentD, sentT, total, kdrops []float64
	var notes []string
	for run := 0; run < e.o.runs(); run++ {
		rdir, err := e.partDir(fmt.Sprintf("storm/run-%d", run))
		if err != nil {
			return nil, err
		}
		p, err := e.startPhoenix(ctx, rdir, phoenixOpts{dhcp: "full", ipxeDir: ipxeDir, hosts: hosts, logLevel: "debug",
			image: [3]string{"demo:1", e.o.Kernel, e.o.Initrd}})
		if err != nil {
			return nil, err
		}
		rcvbuf0 := udpRcvbufErrors()
		cfg := StormConfig{Server: serverIP, Iface: clientIface, MACs: macs, Window: time.Second, BadPerSecond: 200, Timeout: 4 * time.Minute}
		data, _ := json.Marshal(cfg)
		cfgPath := filepath.Join(rdir, "storm.json")
		os.WriteFile(cfgPath, data, 0o644)
		cctx, cancel := context.WithTimeout(ctx, 6*time.Minute)
		cmd := e.inClient(cctx, e.o.Phoenix, "lab", "bench", "--storm-client", cfgPath)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		cancel()
		if err != nil {
			p.Stop()
			return nil, fmt.Errorf("storm client: %v: %s", err, tail(stderr.Bytes(), 600))
		}
		var res StormResult
		if err := json.Unmarshal(out, &res); err != nil {
			p.Stop()
			return nil, fmt.Errorf("storm client output: %v", err)
		}
		rcvbuf := udpRcvbufErrors() - rcvbuf0
		var hs []fleet.HostStatus
		ready := 0
		if err := lab.GetJSON(fmt.Sprintf("http://%s:%d/api/v1/hosts", serverIP, httpPort), &hs); err == nil {
			for _, h := range hs {
				if h.State == "ready" {
					ready++
				}
			}
		}
		p.Stop()
		log, _ := os.ReadFile(filepath.Join(rdir, "phoenix.log"))
		dd := bytes.Count(log, []byte("dhcp packet dropped"))
		// Malformed TFTP requests are refused (an ERROR to the sender) rather
		// than dropped; both are counted.
		td := bytes.Count(log, []byte("tftp packet dropped")) + bytes.Count(log, []byte("tftp request refused"))
		slices.Sort(res.Took)
		ok := float64(len(res.Took)) / float64(n) * 100
		success = append(success, ok)
		if len(res.Took) > 0 {
			p50 = append(p50, res.Took[len(res.Took)/2])
			p99 = append(p99, res.Took[min(len(res.Took)-1, len(res.Took)*99/100)])
		}
		dropsD, dropsT = append(dropsD, float64(dd)), append(dropsT, float64(td))
		sentD, sentT = append(sentD, float64(res.BadDHCP)), append(sentT, float64(res.BadTFTP))
		total = append(total, res.Duration)
		e.o.logf("storm run %d: %d/%d reported (%d ready in phoenix) in %.1fs; bad packets sent dhcp %d tftp %d, phoenix counted dropped dhcp %d tftp %d; kernel UDP receive-buffer drops %d; errors %v",
			run+1, len(res.Took), n, ready, res.Duration, res.BadDHCP, res.BadTFTP, dd, td, rcvbuf, res.Errors)
		kdrops = append(kdrops, float64(rcvbuf))
		if ready != len(res.Took) {
			notes = append(notes, fmt.Sprintf("run %d: phoenix shows %d ready", run+1, ready))
		}
	}
	note := strings.Join(notes, "; ")
	return []Row{
		{Part: "storm", Metric: fmt.Sprintf("%d clients in 1 s: reported", n), Unit: "%", Phoenix: success, Goal: "100 %", Met: yesNo(median(success) == 100), Note: note},
		{Part: "storm", Metric: "time to report p50", Unit: "s", Phoenix: p50},
		{Part: "storm", Metric: "time to report p99", Unit: "s", Phoenix: p99},
		{Part: "storm", Metric: "storm wall time", Unit: "s", Phoenix: total},
		{Part: "storm", Metric: "malformed DHCP dropped+counted", Unit: "pkts", Phoenix: dropsD,
			Note: fmt.Sprintf("sent %s (200/s); the rest never reached phoenix: kernel receive-buffer drops %s", num(median(sentD)), num(median(kdrops)))},
		{Part: "storm", Metric: "malformed TFTP dropped|refused", Unit: "pkts", Phoenix: dropsT,
			Note: fmt.Sprintf("sent %s (200/s)", num(median(sentT)))},
	}, nil
}

// udpRcvbufErrors reads this namespace's count of UDP datagrams the kernel
// dropped because a socket's receive buffer was full (/proc/net/snmp).
func udpRcvbufErrors() int { return udpRcvbufErrorsIn("/proc/net/snmp") }

// udpRcvbufErrorsIn reads the same count from an snmp file: another
// namespace's is /proc/<pid>/net/snmp of a process inside it.
func udpRcvbufErrorsIn(snmp string) int {
	data, err := os.ReadFile(snmp)
	if err != nil {
		return 0
	}
	var names []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.Atoi(f[i])
				return v
			}
		}
	}
	return 0
}
