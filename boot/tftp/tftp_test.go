package tftp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pintftp "github.com/pin/tftp/v3"
)

// testServer runs s on a fresh loopback socket and stops it when the test
// ends, failing the test if Serve does not return nil.
type testServer struct {
	*Server
	addr   string
	cancel context.CancelFunc
	done   chan error

	mu        sync.Mutex
	transfers []Transfer
}

func startServer(t testing.TB, s *Server) *testServer {
	t.Helper()
	pc, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: s, addr: pc.LocalAddr().String(), done: make(chan error, 1)}
	s.OnTransfer = func(tr Transfer) {
		ts.mu.Lock()
		ts.transfers = append(ts.transfers, tr)
		ts.mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	go func() { ts.done <- s.Serve(ctx, pc) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ts.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return ts
}

// waitTransfers waits until n requests have been reported.
func (ts *testServer) waitTransfers(t testing.TB, n int) []Transfer {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ts.mu.Lock()
		got := append([]Transfer(nil), ts.transfers...)
		ts.mu.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			if len(got) < n {
				t.Fatalf("got %d transfer reports, want %d", len(got), n)
			}
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(n), 42))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// get fetches name with pin/tftp's client, returning the data and the tsize
// the server announced (-1 if none).
func get(addr, name string, blksize int, tsize bool) ([]byte, int64, error) {
	c, err := pintftp.NewClient(addr)
	if err != nil {
		return nil, 0, err
	}
	c.SetTimeout(2 * time.Second)
	c.SetRetries(3)
	if blksize > 0 {
		c.SetBlockSize(blksize)
	}
	c.RequestTSize(tsize)
	wt, err := c.Receive(name, "octet")
	if err != nil {
		return nil, 0, err
	}
	size := int64(-1)
	if n, ok := wt.(pintftp.IncomingTransfer).Size(); ok {
		size = n
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return nil, size, err
	}
	return buf.Bytes(), size, nil
}

func TestTransfers(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, &Server{Root: dir})

	blksizes := []int{0, 512, 1468, 8192, 65464} // 0: no option, plain RFC 1350
	want := 0
	for _, bs := range blksizes {
		block := max(bs, 512)
		sizes := []int{0, 1, block - 1, block, block + 1, 3 * block, 200_000}
		for _, size := range sizes {
			name := fmt.Sprintf("f-%d", size)
			mustWrite(t, filepath.Join(dir, name), randomBytes(size))
			for _, tsize := range []bool{false, true} {
				want++
				t.Run(fmt.Sprintf("blksize=%d/size=%d/tsize=%v", bs, size, tsize), func(t *testing.T) {
					data, gotSize, err := get(ts.addr, "/"+name, bs, tsize)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(data, randomBytes(size)) {
						t.Fatalf("got %d bytes, want %d (content differs)", len(data), size)
					}
					wantSize := int64(-1)
					if tsize {
						wantSize = int64(size)
					}
					// pin/tftp's server acknowledges tsize only when it is
					// non-zero, so for an empty file the client may see none.
					if gotSize != wantSize && !(size == 0 && gotSize == -1) {
						t.Errorf("tsize = %d, want %d", gotSize, wantSize)
					}
				})
			}
		}
	}
	ts.waitTransfers(t, want)
	st := ts.Stats()
	if st.Transfers != uint64(want) || st.Failures != 0 || st.Refused != 0 || st.Aborted != 0 {
		t.Errorf("stats = %+v, want %d transfers and nothing else", st, want)
	}
	for _, tr := range ts.transfers {
		if tr.Err != nil || tr.Aborted || tr.Refused || !strings.HasPrefix(tr.File, "f-") {
			t.Errorf("transfer %+v: want a clean success with a cleaned name", tr)
		}
	}
}

// TestBlockSizeNegotiated checks on the wire that the blksize the client
// asks for is granted, and capped by MaxBlockSize.
func TestBlockSizeNegotiated(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "f"), randomBytes(100_000))
	tests := []struct {
		max, ask int
		want     string
	}{
		{max: 0, ask: 1468, want: "1468"},
		{max: 0, ask: 65464, want: "65464"},
		{max: 1024, ask: 8192, want: "1024"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("max=%d/ask=%d", tt.max, tt.ask), func(t *testing.T) {
			ts := startServer(t, &Server{Root: dir, MaxBlockSize: tt.max})
			c := dialRaw(t, ts.addr)
			opts := c.rrq(t, "f", "blksize", fmt.Sprint(tt.ask), "tsize", "0")
			if opts["blksize"] != tt.want || opts["tsize"] != "100000" {
				t.Fatalf("OACK options = %v, want blksize %s tsize 100000", opts, tt.want)
			}
			c.ack(t, 0)
			pkt := c.read(t)
			if op := binary.BigEndian.Uint16(pkt); op != 3 {
				t.Fatalf("got opcode %d, want DATA", op)
			}
			if got := fmt.Sprint(len(pkt) - 4); got != tt.want {
				t.Fatalf("first DATA carries %s bytes, want %s", got, tt.want)
			}
			c.sendError(t, 0, "test done")
		})
	}
}

// TestSizeProbeAborted replays what OVMF does: RRQ with tsize 0, read the
// OACK, answer ERROR 8, then ask again for real.
func TestSizeProbeAborted(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "ipxe.efi"), randomBytes(5000))
	ts := startServer(t, &Server{Root: dir})

	c := dialRaw(t, ts.addr)
	opts := c.rrq(t, "ipxe.efi", "tsize", "0", "blksize", "1468", "windowsize", "4")
	if opts["tsize"] != "5000" || opts["blksize"] != "1468" {
		t.Fatalf("OACK = %v, want tsize 5000 blksize 1468", opts)
	}
	if _, ok := opts["windowsize"]; ok {
		t.Errorf("OACK acknowledged windowsize, which pin/tftp cannot do: %v", opts)
	}
	c.sendError(t, 8, "tsize probe")

	trs := ts.waitTransfers(t, 1)
	if !trs[0].Aborted || trs[0].Refused || trs[0].Err == nil || trs[0].File != "ipxe.efi" {
		t.Errorf("probe reported as %+v, want Aborted", trs[0])
	}
	data, _, err := get(ts.addr, "ipxe.efi", 1468, true)
	if err != nil || !bytes.Equal(data, randomBytes(5000)) {
		t.Fatalf("real transfer after probe: %d bytes, %v", len(data), err)
	}
	ts.waitTransfers(t, 2)
	if st := ts.Stats(); st.Aborted != 1 || st.Failures != 0 || st.Transfers != 1 {
		t.Errorf("stats = %+v, want 1 aborted, 1 transfer, 0 failures", st)
	}
}

// TestClientErrorMidTransfer: an ERROR after data has flowed is a failure,
// not a size probe.
func TestClientErrorMidTransfer(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "f"), randomBytes(10_000))
	ts := startServer(t, &Server{Root: dir})
	c := dialRaw(t, ts.addr)
	c.rrq(t, "f")
	c.ack(t, 1)
	c.read(t) // block 2
	c.sendError(t, 0, "out of memory")
	trs := ts.waitTransfers(t, 1)
	if trs[0].Aborted || trs[0].Err == nil {
		t.Errorf("got %+v, want a failure", trs[0])
	}
	if st := ts.Stats(); st.Failures != 1 || st.Aborted != 0 {
		t.Errorf("stats = %+v, want 1 failure", st)
	}
}

func TestRefused(t *testing.T) {
	dir := t.TempDir()
	outsideDir := t.TempDir()
	mustWrite(t, filepath.Join(outsideDir, "secret"), []byte("secret"))
	mustWrite(t, filepath.Join(dir, "undionly.kpxe"), []byte("ipxe"))
	mustWrite(t, filepath.Join(dir, "etc", "passwd"), []byte("root-relative passwd"))
	mustWrite(t, filepath.Join(dir, "qemu", "pxe.rom"), []byte("rom"))
	mustLink(t, filepath.Join(outsideDir, "secret"), filepath.Join(dir, "abs-escape"))
	mustLink(t, "../"+filepath.Base(outsideDir)+"/secret", filepath.Join(dir, "rel-escape"))
	mustLink(t, "qemu/pxe.rom", filepath.Join(dir, "inside.rom"))
	mustLink(t, "/etc", filepath.Join(dir, "etcdir"))
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, &Server{Root: dir})

	tests := []struct {
		name    string
		want    string // content, or "" for a refusal
		wantErr string // substring of the client's error
	}{
		{name: "undionly.kpxe", want: "ipxe"},
		{name: "/etc/passwd", want: "root-relative passwd"},
		{name: "inside.rom", want: "rom"},
		{name: "../etc/passwd", wantErr: "access violation"},
		{name: "/../etc/passwd", wantErr: "access violation"},
		{name: `..\..\etc\passwd`, wantErr: "access violation"},
		{name: "qemu/../../etc/passwd", wantErr: "access violation"},
		{name: "abs-escape", wantErr: "access violation"},
		{name: "rel-escape", wantErr: "access violation"},
		{name: "etcdir/passwd", wantErr: "access violation"},
		{name: "qemu", wantErr: "not a regular file"},
		{name: "fifo", wantErr: "not a regular file"},
		{name: "missing.efi", wantErr: "file not found"},
	}
	refused := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, _, err := get(ts.addr, tt.name, 1468, true)
			if tt.wantErr == "" {
				if err != nil || string(data) != tt.want {
					t.Fatalf("got %q, %v; want %q", data, err, tt.want)
				}
				return
			}
			refused++
			if err == nil {
				t.Fatalf("got %q, want refusal", data)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not say %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), dir) || strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q leaks server paths", err)
			}
		})
	}
	trs := ts.waitTransfers(t, len(tests))
	if st := ts.Stats(); st.Refused != uint64(refused) {
		t.Errorf("stats = %+v, want %d refused", st, refused)
	}
	for _, tr := range trs {
		if tr.Refused && (tr.Err == nil || tr.Remote == nil) {
			t.Errorf("refusal reported as %+v, want Err and Remote set", tr)
		}
	}
}

func TestWriteRefused(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, &Server{Root: dir})
	c, err := pintftp.NewClient(ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(time.Second)
	rf, err := c.Send("upload.bin", "octet")
	if err == nil {
		_, err = rf.ReadFrom(strings.NewReader("data"))
	}
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Fatalf("write request: err = %v, want read-only refusal", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("root now holds %v", entries)
	}
	trs := ts.waitTransfers(t, 1)
	if !trs[0].Refused || trs[0].File != "upload.bin" {
		t.Errorf("got %+v, want a refused write", trs[0])
	}
	if st := ts.Stats(); st.Refused != 1 {
		t.Errorf("stats = %+v, want 1 refused", st)
	}
}

func TestMalformedDropped(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "f"), []byte("ok"))
	ts := startServer(t, &Server{Root: dir})
	conn, err := net.Dial("udp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, p := range [][]byte{{}, {0}, {0, 9, 1, 2}, {0, 4, 0, 1}, {0, 1, 'f'}, {0, 3, 0, 1, 'x'}} {
		if _, err := conn.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for ts.Stats().Dropped < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if st := ts.Stats(); st.Dropped < 4 || st.Transfers != 0 {
		t.Errorf("stats = %+v, want ≥4 dropped", st)
	}
	if data, _, err := get(ts.addr, "f", 0, false); err != nil || string(data) != "ok" {
		t.Fatalf("server broken after garbage: %q, %v", data, err)
	}
}

func TestServeStops(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "big"), randomBytes(1<<20))
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Root: dir, Timeout: 200 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, pc) }()

	// A transfer in flight whose client stops acknowledging must not hold
	// Serve up for long.
	c := dialRaw(t, pc.LocalAddr().String())
	c.rrq(t, "big")
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	t.Logf("Serve returned %v after cancel", time.Since(start))
	if _, err := pc.WriteTo([]byte{0}, pc.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("conn not closed: write err = %v", err)
	}
}

func TestServeConnClosedUnderneath(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Root: t.TempDir()}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background(), pc) }()
	time.Sleep(50 * time.Millisecond)
	pc.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not notice its conn was closed")
	}
}

func TestServeBadSetup(t *testing.T) {
	t.Run("missing root", func(t *testing.T) {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := &Server{Root: filepath.Join(t.TempDir(), "nope")}
		if err := s.Serve(context.Background(), pc); err == nil || !strings.Contains(err.Error(), "tftp root") {
			t.Fatalf("Serve = %v, want a root error", err)
		}
		if _, err := pc.WriteTo([]byte{0}, pc.LocalAddr()); !errors.Is(err, net.ErrClosed) {
			t.Errorf("conn not closed on error: %v", err)
		}
	})
	t.Run("not udp", func(t *testing.T) {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := &Server{Root: t.TempDir()}
		if err := s.Serve(context.Background(), wrapped{pc}); err == nil {
			t.Fatal("Serve accepted a non-UDP conn")
		}
	})
}

type wrapped struct{ net.PacketConn }

// BenchmarkTransfer16MiB moves a 16 MiB file over loopback at the blksize
// OVMF and iPXE use on Ethernet.
func BenchmarkTransfer16MiB(b *testing.B) {
	dir := b.TempDir()
	const size = 16 << 20
	mustWrite(b, filepath.Join(dir, "big"), randomBytes(size))
	ts := startServer(b, &Server{Root: dir})
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		c, err := pintftp.NewClient(ts.addr)
		if err != nil {
			b.Fatal(err)
		}
		c.SetBlockSize(1468)
		wt, err := c.Receive("big", "octet")
		if err != nil {
			b.Fatal(err)
		}
		n, err := wt.WriteTo(discard{})
		if err != nil || n != size {
			b.Fatalf("got %d bytes, %v", n, err)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func mustLink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// rawClient speaks TFTP by hand, for what pin/tftp's client cannot do:
// abort after the OACK, stop acknowledging, look at packets.
type rawClient struct {
	conn   *net.UDPConn
	server *net.UDPAddr // the listening port, then the transfer's port
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	ua, err := net.ResolveUDPAddr("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{conn: conn, server: ua}
}

// rrq sends a read request and returns the options of the OACK, or nil
// when the server answered with DATA directly.
func (c *rawClient) rrq(t *testing.T, name string, opts ...string) map[string]string {
	t.Helper()
	p := []byte{0, 1}
	for _, s := range append([]string{name, "octet"}, opts...) {
		p = append(append(p, s...), 0)
	}
	if _, err := c.conn.WriteToUDP(p, c.server); err != nil {
		t.Fatal(err)
	}
	pkt := c.read(t)
	switch binary.BigEndian.Uint16(pkt) {
	case 6:
		fields := strings.Split(strings.TrimSuffix(string(pkt[2:]), "\x00"), "\x00")
		m := map[string]string{}
		for i := 0; i+1 < len(fields); i += 2 {
			m[fields[i]] = fields[i+1]
		}
		return m
	case 3:
		return nil
	default:
		t.Fatalf("unexpected reply % x", pkt)
		return nil
	}
}

func (c *rawClient) read(t *testing.T) []byte {
	t.Helper()
	buf := make([]byte, 65536)
	c.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := c.conn.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	c.server = from
	return buf[:n]
}

func (c *rawClient) ack(t *testing.T, block uint16) {
	t.Helper()
	if _, err := c.conn.WriteToUDP([]byte{0, 4, byte(block >> 8), byte(block)}, c.server); err != nil {
		t.Fatal(err)
	}
}

func (c *rawClient) sendError(t *testing.T, code uint16, msg string) {
	t.Helper()
	p := append([]byte{0, 5, byte(code >> 8), byte(code)}, msg...)
	if _, err := c.conn.WriteToUDP(append(p, 0), c.server); err != nil {
		t.Fatal(err)
	}
}

// TestFiles serves operator-configured files by name, even when they live
// outside Root (Debian's ipxe.efi is a symlink into /boot), while requests
// still cannot follow links out of Root.
func TestFiles(t *testing.T) {
	outside := t.TempDir()
	want := randomBytes(3000)
	target := filepath.Join(outside, "ipxe.efi")
	if err := os.WriteFile(target, want, 0o644); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, &Server{Files: map[string]string{"ipxe.efi": target}})
	got, _, err := get(ts.addr, "/ipxe.efi", 1468, true)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("get ipxe.efi: %v (got %d bytes)", err, len(got))
	}
	if _, _, err := get(ts.addr, "other.efi", 0, false); err == nil {
		t.Fatal("a name outside Files was served with no Root")
	}
}

// TestVirtual: names the Virtual hook serves come from it (with the
// client's address), names it disowns fall through to Root, a missing
// Optional file is a probe (not found, not a failure), and any other error
// from the hook refuses the request.
func TestVirtual(t *testing.T) {
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "undionly.kpxe"), []byte("ipxe"))
	var remotes []string
	var mu sync.Mutex
	ts := startServer(t, &Server{Root: dir, Optional: []string{"grub/*/*.lst"}, Virtual: func(_ context.Context, name string, remote net.Addr) (io.ReadCloser, int64, error) {
		mu.Lock()
		remotes = append(remotes, remote.String())
		mu.Unlock()
		switch name {
		case "grub/grub.cfg":
			body := "configfile /grub/host/${net_default_mac}.cfg\n"
			return io.NopCloser(strings.NewReader(body)), int64(len(body)), nil
		case "secret":
			return nil, 0, errors.New("no")
		}
		return nil, 0, fs.ErrNotExist
	}})
	got, size, err := get(ts.addr, "/grub/grub.cfg", 1468, true)
	if err != nil || string(got) != "configfile /grub/host/${net_default_mac}.cfg\n" || size != int64(len(got)) {
		t.Fatalf("virtual file: %q, tsize %d, %v", got, size, err)
	}
	if got, _, err := get(ts.addr, "undionly.kpxe", 1468, false); err != nil || string(got) != "ipxe" {
		t.Fatalf("file under root: %q, %v", got, err)
	}
	for _, name := range []string{"grub/x86_64-efi/command.lst", "secret"} {
		if _, _, err := get(ts.addr, name, 1468, false); err == nil {
			t.Errorf("%s: served", name)
		}
	}
	byName := map[string]Transfer{}
	for _, tr := range ts.waitTransfers(t, 4) {
		byName[tr.File] = tr
	}
	if p, r := byName["grub/x86_64-efi/command.lst"], byName["secret"]; !p.Refused || !p.Probe || !r.Refused || r.Probe {
		t.Errorf("probe and refusal not told apart: %+v %+v", p, r)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(remotes) == 0 || !strings.HasPrefix(remotes[0], "127.0.0.1:") {
		t.Errorf("Virtual got remotes %q", remotes)
	}
}
