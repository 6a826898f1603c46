// Package tftp is phoenix's read-only TFTP server: it hands the iPXE
// binaries (undionly.kpxe, ipxe.efi, ...) in one directory to PXE firmware.
//
// It is not a general TFTP server: write requests are refused, nothing
// outside the served directory is ever read (paths are cleaned and opened
// through os.Root, so symlinks cannot lead out either), and only regular
// files are served. Everything after iPXE starts travels over HTTP
// (boot/httpboot), so TFTP only has to move a few hundred kilobytes per boot.
// The exception is the Secure Boot chain (shim, then GRUB, which has no HTTP
// client): the caller's Virtual hook serves it per-host configs and image
// blobs, which are no files under the served directory.
//
// The protocol is github.com/pin/tftp/v3, used in its standard mode: each
// transfer gets its own ephemeral UDP port (RFC 1350 TIDs), which is what
// firmware expects. Its experimental single-port mode is not used: it drops
// packets under load and silently keeps 512-byte blocks. The library
// negotiates only the blksize and tsize options (no windowsize), so each
// block waits for its ACK.
package tftp

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	pintftp "github.com/pin/tftp/v3"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Defaults for the zero values of Server's fields.
const (
	DefaultMaxBlockSize = 65464
	DefaultTimeout      = 2 * time.Second
)

// retries is how many times a block is sent before a transfer is given up:
// with DefaultTimeout a vanished client holds a transfer for about 10s.
const retries = 5

// Server serves the files under Root over TFTP, read-only.
// The zero value is usable once Root is set; a Server may be reused, but
// Serve should run once at a time.
type Server struct {
	// Root is the directory served; a request for "/x" or "x" reads Root/x.
	// Which directory (e.g. Debian's /usr/lib/ipxe) is the caller's choice.
	Root string

	// Files are extra files served by name (e.g. "ipxe.efi") from paths the
	// operator configured. They are resolved by the caller at startup, so a
	// distribution's symlink (Debian's /usr/lib/ipxe/ipxe.efi points into
	// /boot) works without letting requests follow links out of Root. A
	// name in Files wins over the same name under Root. With Root empty only
	// Files are served.
	Files map[string]string

	// Log receives one line per transfer; nil discards.
	Log *slog.Logger

	// MaxBlockSize caps the blksize a client may negotiate (RFC 2348).
	// Zero means DefaultMaxBlockSize; other values are clamped to
	// 513..65464. The library further caps it to the receiving interface's
	// MTU minus IP and UDP headers, so blocks are never IP-fragmented.
	MaxBlockSize int

	// Timeout is how long the server waits for the ACK of a block before
	// sending it again. Zero means DefaultTimeout.
	Timeout time.Duration

	// Virtual, if set, is asked first for every read request, with the
	// cleaned name and the client's address: it serves content that is not
	// a file under Root, such as per-host boot configs. It returns the
	// content and its size, an error wrapping fs.ErrNotExist for names it
	// does not serve (Files and Root are tried next), or another error to
	// refuse the request. The server closes what it returns.
	Virtual func(ctx context.Context, name string, remote net.Addr) (io.ReadCloser, int64, error)

	// Optional are path.Match patterns of names that boot loaders ask for
	// only in case they exist (shim's revocation lists, GRUB's module
	// lists). When such a file is not there, the request is refused as
	// usual but reported as a probe (Transfer.Probe), not a failure.
	Optional []string

	// OnTransfer, if set, is called once per read or write request when it
	// ends, whatever the outcome (for metrics and the boot timeline). It runs
	// on the transfer's goroutine, possibly concurrently: keep it short.
	OnTransfer func(Transfer)

	transfers, failures, aborted, refused, dropped, bytes atomic.Uint64
	cache                                                 fileCache
}

// Transfer describes one finished request.
type Transfer struct {
	// File is the cleaned, root-relative name, or the raw requested name
	// when it was refused by Clean.
	File string
	// Remote is the client's address (a *net.UDPAddr).
	Remote net.Addr
	// Bytes counts the payload bytes sent.
	Bytes int64
	// Duration runs from the request to the last ACK or the failure.
	Duration time.Duration
	// Err is nil for a complete transfer.
	Err error
	// Aborted reports that the client ended the transfer with an ERROR
	// right after the option acknowledgement, before any data: UEFI
	// firmware does this to learn a file's size (tsize) and then asks
	// again. It is normal, not a failure.
	Aborted bool
	// Refused reports that no transfer was started: bad or missing file
	// name, a file outside Root or not a regular file, or a write request.
	Refused bool
	// Probe reports a refused request for a missing file that matches one
	// of Server.Optional: shim and GRUB ask for several such files on every
	// boot. It is normal, not a failure.
	Probe bool
}

// Stats counts outcomes since the Server was created. Every request ends in
// exactly one of Transfers, Failures, Aborted or Refused; Dropped counts
// packets on the listening socket that started no request at all.
type Stats struct {
	Transfers uint64 // complete transfers
	Failures  uint64 // transfers that timed out, or that the client cut mid-file
	Aborted   uint64 // size probes ended by the client after the option acknowledgement
	Refused   uint64 // requests refused before any data was sent
	Dropped   uint64 // malformed or unexpected packets, requests that got no socket
	Bytes     uint64 // payload bytes sent, complete or not
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Transfers: s.transfers.Load(),
		Failures:  s.failures.Load(),
		Aborted:   s.aborted.Load(),
		Refused:   s.refused.Load(),
		Dropped:   s.dropped.Load(),
		Bytes:     s.bytes.Load(),
	}
}

// Serve answers TFTP requests arriving on conn until ctx is done, then
// closes conn, ends the transfers in flight and returns nil. A transfer
// is cut at its next block (the client gets an ERROR and retries elsewhere);
// one whose client has stopped answering ends after Timeout × 5, so that is
// how long Serve may take to return.
//
// conn must be a *net.UDPConn: the library opens a new UDP socket per
// transfer and reads IP_PKTINFO from conn to answer from the address the
// request was sent to; without it blocks stay 512 bytes. Open conn with
// Listen, or at least start Serve before announcing the address. Closing
// conn other than through ctx makes Serve return an error.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	uc, ok := conn.(*net.UDPConn)
	if !ok {
		conn.Close()
		return fmt.Errorf("tftp: serve needs a *net.UDPConn, not %T", conn)
	}
	var root *os.Root
	if s.Root != "" {
		r, err := os.OpenRoot(s.Root)
		if err != nil {
			uc.Close()
			return fmt.Errorf("tftp root: %w", err)
		}
		defer r.Close()
		root = r
	}

	// Transfers are cut through their reader when Serve stops, so that
	// Shutdown, which waits for them, is not held up by whole files.
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()

	srv := pintftp.NewServer(s.readHandler(tctx, root), s.writeHandler)
	srv.SetHook(hook{s})
	srv.SetTimeout(cmp.Or(s.Timeout, DefaultTimeout))
	srv.SetRetries(retries)
	// The library sleeps up to a random second before each retransmission
	// on top of the timeout; the timeout is backoff enough on a LAN.
	srv.SetBackoff(func(int) time.Duration { return 0 })
	srv.SetBlockSize(min(max(cmp.Or(s.MaxBlockSize, DefaultMaxBlockSize), 513), 65464))

	// The library enables IP_PKTINFO itself, but only once its goroutine
	// runs; a request read without it is answered from the wildcard
	// address and held to 512-byte blocks. Enable it now (Listen does so
	// even earlier).
	if err := enablePacketInfo(uc); err != nil {
		s.logger().Warn("tftp: no IP_PKTINFO: answers come from the default address, blocks stay 512 bytes", "err", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(uc) }()

	// pin/tftp reads in a loop that ignores read errors until Shutdown is
	// called, so a conn closed behind our back would spin; notice it.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			srv.Shutdown()
			<-done
			uc.Close()
			return nil
		case err := <-done:
			uc.Close()
			if err == nil {
				err = errors.New("server stopped")
			}
			return fmt.Errorf("tftp: %w", err)
		case <-tick.C:
			if isClosed(uc) {
				cancel()
				srv.Shutdown()
				<-done
				return fmt.Errorf("tftp: %w", net.ErrClosed)
			}
		}
	}
}

// Listen opens a UDP socket for Serve on addr ("udp4", e.g. ":69" or
// "10.0.0.1:69") with IP_PKTINFO enabled from the start, so that a request
// arriving before Serve runs keeps its destination address and may
// negotiate large blocks.
func Listen(ctx context.Context, addr string) (*net.UDPConn, error) {
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp4", addr)
	if err != nil {
		return nil, fmt.Errorf("tftp listen %s: %w", addr, err)
	}
	uc := pc.(*net.UDPConn)
	if err := enablePacketInfo(uc); err != nil {
		uc.Close()
		return nil, fmt.Errorf("tftp listen %s: %w", addr, err)
	}
	return uc, nil
}

// enablePacketInfo asks for the same control messages pin/tftp asks for.
func enablePacketInfo(uc *net.UDPConn) error {
	if la, ok := uc.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() == nil {
		return ipv6.NewPacketConn(uc).SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true)
	}
	return ipv4.NewPacketConn(uc).SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true)
}

func isClosed(uc *net.UDPConn) bool {
	rc, err := uc.SyscallConn()
	if err != nil {
		return true
	}
	return rc.Control(func(uintptr) {}) != nil
}

// Errors sent to clients in ERROR packets. They say what is wrong without
// revealing anything about the server's file system.
var (
	errNotFound   = errors.New("file not found")
	errAccess     = errors.New("access violation")
	errReadOnly   = errors.New("read-only server: write requests are refused")
	errNotRegular = errors.New("not a regular file")
)

func (s *Server) readHandler(ctx context.Context, root *os.Root) func(string, io.ReaderFrom) error {
	return func(filename string, rf io.ReaderFrom) error {
		start := time.Now()
		t := Transfer{File: filename, Remote: remoteAddr(rf)}
		name, err := Clean(filename)
		if err != nil {
			return s.refuse(t, start, err, errAccess)
		}
		t.File = name
		if s.Virtual != nil {
			rc, size, err := s.Virtual(ctx, name, t.Remote)
			switch {
			case err == nil:
				defer rc.Close()
				return s.send(ctx, rf, t, start, bufio.NewReaderSize(rc, readBuf), size)
			case !errors.Is(err, fs.ErrNotExist):
				return s.refuse(t, start, err, errAccess)
			}
		}
		f, fi, path, err := s.open(root, name)
		if err != nil {
			switch {
			case errors.Is(err, fs.ErrNotExist):
				t.Probe = s.optional(name)
				return s.refuse(t, start, err, errNotFound)
			case errors.Is(err, errNotRegular):
				return s.refuse(t, start, err, errNotRegular)
			default:
				return s.refuse(t, start, err, errAccess)
			}
		}
		defer f.Close()

		r, err := s.cache.reader(ctx, path, f, fi)
		if err != nil {
			return s.refuse(t, start, err, errAccess)
		}
		if r == io.Reader(f) {
			// Too big to cache. The library reads one block at a
			// time; a buffer turns ~11 block-sized reads into one
			// syscall, which a storm of hundreds of transfers feels.
			r = bufio.NewReaderSize(f, readBuf)
		}
		return s.send(ctx, rf, t, start, r, fi.Size())
	}
}

// send transfers size bytes from r to the client, then counts, logs and
// reports the outcome.
func (s *Server) send(ctx context.Context, rf io.ReaderFrom, t Transfer, start time.Time, r io.Reader, size int64) error {
	// tsize (RFC 2349) is only answered when the client asked for it; the
	// library then also needs it set before ReadFrom.
	if ot, ok := rf.(pintftp.OutgoingTransfer); ok {
		ot.SetSize(size)
	}
	n, err := rf.ReadFrom(ctxReader{ctx, r})
	t.Bytes, t.Duration, t.Err = n, time.Since(start), err
	s.bytes.Add(uint64(n))
	log := s.logger().With("ip", ipOf(t.Remote), "file", t.File)
	switch {
	case err == nil:
		s.transfers.Add(1)
		log.Info("tftp transfer done", "bytes", n, "duration", t.Duration)
	case isProbeAbort(err):
		t.Aborted = true
		s.aborted.Add(1)
		log.Debug("tftp client ended transfer after options (size probe)", "err", err)
	default:
		s.failures.Add(1)
		log.Warn("tftp transfer failed", "bytes", n, "duration", t.Duration, "err", err)
	}
	s.report(t)
	// The library has already closed the transfer; the error only matters
	// to it when nothing was sent.
	return err
}

func (s *Server) writeHandler(filename string, wt io.WriterTo) error {
	t := Transfer{File: filename}
	if it, ok := wt.(pintftp.IncomingTransfer); ok {
		addr := it.RemoteAddr()
		t.Remote = &addr
	}
	return s.refuse(t, time.Now(), errors.New("write request"), errReadOnly)
}

// refuse counts and reports a request that started no transfer, and returns
// the error the library sends to the client.
func (s *Server) refuse(t Transfer, start time.Time, why, toClient error) error {
	t.Refused, t.Err, t.Duration = true, why, time.Since(start)
	s.refused.Add(1)
	level := slog.LevelWarn
	if t.Probe {
		level = slog.LevelDebug
	}
	s.logger().Log(context.Background(), level, "tftp request refused", "ip", ipOf(t.Remote), "file", t.File, "err", why)
	s.report(t)
	return toClient
}

// optional reports whether name matches one of s.Optional.
func (s *Server) optional(name string) bool {
	for _, pat := range s.Optional {
		if ok, _ := path.Match(pat, name); ok {
			return true
		}
	}
	return false
}

func (s *Server) report(t Transfer) {
	if s.OnTransfer != nil {
		s.OnTransfer(t)
	}
}

func (s *Server) logger() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// open opens a requested (cleaned) name from Files or under root, and
// says which path it opened (the file cache's key).
func (s *Server) open(root *os.Root, name string) (*os.File, os.FileInfo, string, error) {
	if path, ok := s.Files[name]; ok {
		f, fi, err := openFile(path)
		return f, fi, path, err
	}
	if root == nil {
		return nil, nil, "", fmt.Errorf("%s: %w", name, fs.ErrNotExist)
	}
	f, fi, err := openRegular(root, name)
	return f, fi, filepath.Join(s.Root, name), err
}

// openFile opens one of the operator's configured files, regular files only.
func openFile(path string) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%s: %w", path, errNotRegular)
		}
		return nil, nil, err
	}
	return f, fi, nil
}

// openRegular opens name under root, refusing anything but a regular file.
// O_NONBLOCK keeps a FIFO swapped in after the check from blocking the
// transfer goroutine forever; it has no effect on regular files.
func openRegular(root *os.Root, name string) (*os.File, os.FileInfo, error) {
	fi, err := root.Stat(name)
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s: %w", name, errNotRegular)
	}
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	fi, err = f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", name, errNotRegular)
	}
	return f, fi, nil
}

// ctxReader fails reads once ctx is done, so in-flight transfers end (with
// an ERROR to the client) when the server stops.
// readBuf is each transfer's read buffer: a few blocks of the usual size,
// small enough that hundreds of transfers cost a few MiB.
const readBuf = 16 << 10

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, fmt.Errorf("server shutting down: %w", err)
	}
	return c.r.Read(p)
}

// clientError matches the error pin/tftp returns when the peer sends an
// ERROR packet; the library has no typed error for it.
var clientError = regexp.MustCompile(`^sending block (\d+): code=(\d+), error: `)

// isProbeAbort reports whether err is the client sending ERROR in reply to
// the option acknowledgement (block 0), as UEFI does after a tsize probe.
func isProbeAbort(err error) bool {
	m := clientError.FindStringSubmatch(err.Error())
	if m == nil {
		return false
	}
	block, _ := strconv.Atoi(m[1])
	return block == 0
}

func remoteAddr(rf io.ReaderFrom) net.Addr {
	if ot, ok := rf.(pintftp.OutgoingTransfer); ok {
		addr := ot.RemoteAddr()
		return &addr
	}
	return nil
}

func ipOf(a net.Addr) string {
	if ua, ok := a.(*net.UDPAddr); ok {
		return ua.IP.String()
	}
	if a == nil {
		return ""
	}
	return a.String()
}

// hook counts packets the library rejects before any handler runs:
// unparsable datagrams, stray ACKs or DATA sent to the listening port.
// Failures of real transfers are accounted for by the handlers, which see
// more (the cleaned name, bytes sent, whether it was a size probe).
type hook struct{ s *Server }

func (h hook) OnSuccess(pintftp.TransferStats) {}

func (h hook) OnFailure(st pintftp.TransferStats, err error) {
	if st.RemoteAddr != nil {
		return
	}
	h.s.dropped.Add(1)
	h.s.logger().Debug("tftp packet dropped", "err", err)
}
