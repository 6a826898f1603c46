package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/phoenixboot/phoenix/fleet/lab"
)

// TFTP opcodes (RFC 1350, 2347).
const (
	opRRQ   = 1
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// tftpGet fetches file from server with a minimal RFC 1350/2348 client:
// RRQ (with blksize unless 512), OACK → ACK 0, DATA → ACK, retransmitting
// its last packet after a 1 s silence, 5 times at most. It returns the bytes
// received. Pin/tftp belongs to boot/tftp, and the protocol is tiny.
func tftpGet(ctx context.Context, server, file string, blksize int) (int64, error) {
	conn, err := net.ListenUDP("udp4", nil)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	dst, err := net.ResolveUDPAddr("udp4", server)
	if err != nil {
		return 0, err
	}
	rrq := binary.BigEndian.AppendUint16(nil, opRRQ)
	rrq = append(append(append(rrq, file...), 0), "octet\x00"...)
	if blksize != 512 {
		rrq = append(append(append(rrq, "blksize\x00"...), strconv.Itoa(blksize)...), 0)
	}
	last, lastTo := rrq, dst
	var peer *net.UDPAddr
	want := uint16(1)
	size := 512
	var n int64
	buf := make([]byte, 65536+4)
	tries := 0
	if _, err := conn.WriteToUDP(last, lastTo); err != nil {
		return 0, err
	}
	for {
		conn.SetReadDeadline(time.Now().Add(time.Second))
		m, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() && ctx.Err() == nil {
				if tries++; tries > 5 {
					return n, fmt.Errorf("tftp %s: timed out at block %d", file, want)
				}
				conn.WriteToUDP(last, lastTo)
				continue
			}
			return n, err
		}
		if m < 4 {
			continue
		}
		if peer == nil {
			peer = from
		} else if !from.IP.Equal(peer.IP) || from.Port != peer.Port {
			continue // not our transfer's TID
		}
		op, blk := binary.BigEndian.Uint16(buf), binary.BigEndian.Uint16(buf[2:])
		switch op {
		case opOACK:
			size = oackBlksize(buf[2:m], 512)
			last, lastTo = ack(0), peer
		case opDATA:
			if blk == want {
				tries = 0
				n += int64(m - 4)
				last, lastTo = ack(blk), peer
				conn.WriteToUDP(last, lastTo)
				if m-4 < size {
					return n, nil
				}
				want++
				continue
			}
		case opERROR:
			return n, fmt.Errorf("tftp %s: error %d: %s", file, blk, buf[4:m])
		default:
			return n, fmt.Errorf("tftp %s: unexpected opcode %d", file, op)
		}
		conn.WriteToUDP(last, lastTo)
	}
}

func ack(blk uint16) []byte {
	return binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, opACK), blk)
}

// oackBlksize reads blksize from an OACK's option list.
func oackBlksize(opts []byte, def int) int {
	var fields []string
	start := 0
	for i, c := range opts {
		if c == 0 {
			fields = append(fields, string(opts[start:i]))
			start = i + 1
		}
	}
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i] == "blksize" {
			if v, err := strconv.Atoi(fields[i+1]); err == nil {
				return v
			}
		}
	}
	return def
}

// tftpServer is one TFTP server under test, listening on its own address
// so that all of them can run at once.
type tftpServer struct {
	server
	ip string
}

// tftpServers are the TFTP servers under test, each serving e.ipxeDir on
// its own address of serverIface (phoenix on serverIP; the peers' addresses
// are added by benchTFTP).
func (e *env) tftpServers() []tftpServer {
	const hpaIP, dnsmasqIP = "10.77.0.3", "10.77.0.4"
	return []tftpServer{
		{ip: serverIP, server: server{name: "phoenix", start: func(ctx context.Context, dir string) (*lab.Process, error) {
			return e.startPhoenix(ctx, dir, phoenixOpts{dhcp: "off", ipxeDir: e.ipxeDir, logLevel: "warn"})
		}}},
		{ip: hpaIP, server: server{name: "tftpd-hpa", start: func(ctx context.Context, dir string) (*lab.Process, error) {
			return e.start(ctx, "tftpd-hpa", dir, udpBoundAt(hpaIP, 69), "in.tftpd", "-L", "-s", e.ipxeDir, "-a", hpaIP+":69", "-u", "nobody")
		}}},
		{ip: dnsmasqIP, server: server{name: "dnsmasq", start: func(ctx context.Context, dir string) (*lab.Process, error) {
			// --tftp-max: the default of 50 concurrent transfers would refuse
			// most of the 200 clients; a fair peer is configured for the load.
			return e.start(ctx, "dnsmasq", dir, udpBoundAt(dnsmasqIP, 69), "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
				"--enable-tftp", "--tftp-root="+e.ipxeDir, "--listen-address="+dnsmasqIP, "--bind-interfaces",
				"--tftp-max=1000", "--pid-file=", "--user=root")
		}}},
	}
}

// benchTFTP: 200 clients fetch the 1 MiB file at once (blksize 1468), and
// one client fetches the big file at blksize 512, 1468 and 8192.
//
// All servers run for the whole part, each on its own address, and the
// storms take turns: one storm per server per round, in an order that
// rotates from round to round. A storm takes two to six seconds, and this
// shared machine's speed drifts by up to a third over tens of seconds;
// taking turns puts every server's storms in the same stretches of time,
// so the drift lands on all of them alike instead of on whichever server
// had a slow minute.
func benchTFTP(ctx context.Context, e *env) ([]Row, error) {
	clients := 200
	wall := map[string][]float64{}
	fails := map[string][]float64{}
	single := map[string]map[int][]float64{}
	cpu := map[string][]float64{}
	blks := []int{512, 1468, 8192}
	// Three rounds per run, so that the medians stand on nine storms.
	roundsPerRun := 3
	if e.o.Quick {
		roundsPerRun = 1
	}
	servers := e.tftpServers()
	for _, s := range servers[1:] {
		cidr := s.ip + "/32"
		if out, err := exec.CommandContext(ctx, "ip", "addr", "add", cidr, "dev", serverIface).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip addr add %s: %v: %s", cidr, err, out)
		}
		defer exec.Command("ip", "addr", "del", cidr, "dev", serverIface).Run()
	}
	procs := make([]*lab.Process, len(servers))
	defer func() {
		for _, p := range procs {
			if p != nil {
				p.Stop()
			}
		}
	}()
	for i, s := range servers {
		dir, err := e.partDir("tftp/" + s.name)
		if err != nil {
			return nil, err
		}
		if procs[i], err = s.start(ctx, dir); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	for run := 0; run < e.o.runs(); run++ {
		for r := range roundsPerRun {
			round := run*roundsPerRun + r
			for i := range servers {
				k := (i + round) % len(servers)
				s, p := servers[k], procs[k]
				st, err := tftpStorm(ctx, s.ip+":69", clients, p.PID())
				if err != nil {
					return nil, fmt.Errorf("%s: %w", s.name, err)
				}
				wall[s.name] = append(wall[s.name], st.wall)
				fails[s.name] = append(fails[s.name], float64(st.failed))
				cpu[s.name] = append(cpu[s.name], st.cpu)
				e.o.logf("tftp round %d %s: %d clients × 1 MiB in %.3fs (first done %.2f s, half %.2f s), %d failed, server CPU %.2f s %v",
					round+1, s.name, clients, st.wall, st.first, st.half, st.failed, st.cpu, errOrNil(st.firstErr))
			}
		}
		for _, s := range servers {
			if single[s.name] == nil {
				single[s.name] = map[int][]float64{}
			}
			for _, b := range blks {
				sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
				t0 := time.Now()
				n, err := tftpGet(sctx, s.ip+":69", "ipxe.efi", b)
				cancel()
				mbps := 0.0
				if err == nil {
					mbps = float64(n) / time.Since(t0).Seconds() / 1e6
				} else {
					e.o.logf("tftp %s single blksize %d: %v", s.name, b, err)
				}
				single[s.name][b] = append(single[s.name][b], mbps)
			}
		}
	}
	var rows []Row
	for _, peer := range []string{"tftpd-hpa", "dnsmasq"} {
		r := Row{Part: "tftp", Metric: fmt.Sprintf("%d × 1 MiB wall time, %d storms", clients, len(wall["phoenix"])), Unit: "s", Phoenix: wall["phoenix"], PeerName: peer, Peer: wall[peer],
			Note: fmt.Sprintf("failed transfers, all storms: phoenix %s, peer %s; median of the rounds' ratios %s×",
				num(total(fails["phoenix"])), num(total(fails[peer])), num(median(ratios(wall["phoenix"], wall[peer]))))}
		rows = append(rows, r)
	}
	// Goal: ≤ 1.0× the best peer, 0 failures.
	best := median(wall["tftpd-hpa"])
	bestName := "tftpd-hpa"
	if d := median(wall["dnsmasq"]); d < best {
		best, bestName = d, "dnsmasq"
	}
	ok := median(wall["phoenix"]) <= best && total(fails["phoenix"]) == 0
	for i := range rows {
		if rows[i].PeerName == bestName {
			rows[i].Goal, rows[i].Met = "≤ 1.0× best, 0 fail", yesNo(ok)
		}
	}
	// On two cores the server and the 200 clients share the CPU, so what
	// the server spends per storm bears on the wall time. Only dnsmasq is
	// compared: tftpd-hpa forks a child per transfer and ignores SIGCHLD,
	// so the kernel reaps the children without adding their CPU time to
	// any counter the bench can read.
	rows = append(rows, Row{Part: "tftp", Metric: fmt.Sprintf("%d × 1 MiB server CPU, %d storms", clients, len(cpu["phoenix"])), Unit: "s",
		Phoenix: cpu["phoenix"], PeerName: "dnsmasq", Peer: cpu["dnsmasq"], Note: "server user+sys CPU"})
	for _, b := range blks {
		for _, peer := range []string{"tftpd-hpa", "dnsmasq"} {
			rows = append(rows, Row{Part: "tftp", Metric: fmt.Sprintf("1 stream blksize %d", b), Unit: "MB/s",
				Phoenix: single["phoenix"][b], PeerName: peer, Peer: single[peer][b]})
		}
	}
	return rows, nil
}

// stormResult is one TFTP storm against one server.
type stormResult struct {
	wall, cpu   float64 // seconds: until the last client finished; the server's user+sys CPU
	first, half float64 // seconds until the first and the median client finished
	failed      int
	firstErr    error
}

// tftpStorm starts clients fetches of the 1 MiB file at once (blksize
// 1468) and waits for all of them; pid is the server's, for its CPU time.
func tftpStorm(ctx context.Context, addr string, clients, pid int) (stormResult, error) {
	cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		r    stormResult
		done []float64
	)
	t0, c0 := time.Now(), procCPU(pid)
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := tftpGet(cctx, addr, "undionly.kpxe", 1468)
			if err == nil && n != 1<<20 {
				err = fmt.Errorf("got %d bytes", n)
			}
			mu.Lock()
			defer mu.Unlock()
			done = append(done, time.Since(t0).Seconds())
			if err != nil {
				r.failed++
				if r.firstErr == nil {
					r.firstErr = err
				}
			}
		}()
	}
	wg.Wait()
	r.wall, r.cpu = time.Since(t0).Seconds(), procCPU(pid)-c0
	if err := ctx.Err(); err != nil {
		return r, err
	}
	slices.Sort(done)
	r.first, r.half = done[0], done[len(done)/2]
	return r, nil
}

func errOrNil(err error) string {
	if err == nil {
		return ""
	}
	return "(first: " + err.Error() + ")"
}
