package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Well-known ports. A proxy listens on ServerPort for DISCOVERs and on
// PXEPort for the PXE boot server requests that follow.
const (
	ServerPort = 67
	ClientPort = 68
	PXEPort    = 4011
)

// Server answers DHCP. Only Config is required; a nil Log discards logs.
// One Server may Serve several sockets at once (proxy mode: ports 67 and
// 4011); they share its leases.
type Server struct {
	Config Config
	// Leases persists leases in full mode. Nil keeps them in memory only,
	// so a restart forgets them.
	Leases LeaseStore
	Log    *slog.Logger
	// OnEvent, if set, is called for each offer, ack, nak, release,
	// decline and drop, from one goroutine at a time (requests are
	// answered concurrently; calls are serialised). It must be cheap:
	// requests wait for it.
	OnEvent func(Event)

	now func() time.Time // tests fix the clock

	initMu sync.Mutex
	st     *state

	// mu serialises lease decisions, so an address is never promised to
	// two clients. Store writes happen outside it (see state.pending).
	mu sync.Mutex
	// eventMu serialises OnEvent calls.
	eventMu sync.Mutex

	// exhaustedLogged (unix ns) and exhaustedQuiet rate-limit the
	// pool-exhausted warning (warnExhausted).
	exhaustedLogged atomic.Int64
	exhaustedQuiet  atomic.Uint64

	stats struct {
		received, dropped, ignored, offers, acks, naks, releases,
		declines, proxyOffers, proxyAcks, errors atomic.Uint64
	}
}

// state is what the first Serve builds from Config and the store.
type state struct {
	cfg      Config
	serverIP net.IP // 4-byte form
	pool     *pool  // nil in proxy mode
	// pending holds the addresses whose lease is being written to the
	// store, and for which MAC; guarded by Server.mu.
	pending map[uint32]string
	// writes orders a plain (non-LeaseQueue) store's writes per MAC; an
	// entry lives while a write of its MAC is pending.
	writesMu sync.Mutex
	writes   map[string]*macWrites
}

// macWrites orders one MAC's writes to a store that has no queue of its
// own. Such writes run concurrently, after the server's lock is released,
// so a delete decided before a put could land after it and erase the
// newer lease. Each write is numbered when it is decided; when it runs
// (one at a time per MAC) it is skipped if a later one was decided since,
// since that later write sets the MAC's record anyway.
type macWrites struct {
	mu     sync.Mutex
	latest atomic.Uint64
}

// plainWrite numbers a write of mac decided now (the caller holds
// Server.mu, so numbers follow the decisions) and returns it wrapped in
// that order.
func (st *state) plainWrite(mac string, write func() error) func() error {
	st.writesMu.Lock()
	if st.writes == nil {
		st.writes = map[string]*macWrites{}
	}
	w := st.writes[mac]
	if w == nil {
		w = &macWrites{}
		st.writes[mac] = w
	}
	n := w.latest.Add(1)
	st.writesMu.Unlock()
	return func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.latest.Load() != n {
			return nil // superseded by a later decision for this MAC
		}
		err := write()
		st.writesMu.Lock()
		if w.latest.Load() == n {
			delete(st.writes, mac) // nothing else pending for mac
		}
		st.writesMu.Unlock()
		return err
	}
}

// maxInFlight bounds the requests one socket answers at once. Requests
// are answered concurrently so that a lease store write (an fsync) does
// not hold up every other client, and concurrent writes can share a commit.
// The bound is well above what one commit window collects at thousands of
// exchanges a second, so the reader keeps reading (offers need no write)
// while a commit is under way; each waiting request costs a few KiB.
const maxInFlight = 2048

// Event describes one thing the server did, for boot timeline metrics.
type Event struct {
	// Kind is "offer", "ack", "nak", "release", "decline", "drop",
	// "proxy-offer" or "proxy-ack".
	Kind string
	MAC  net.HardwareAddr
	IP   net.IP // the address offered, leased, released or declined
	// Arch is the client's boot architecture ("bios", "efi-x64",
	// "efi-arm64", "http-x64", "http-arm64", "unknown", "arch-N"),
	// prefixed "ipxe-" when iPXE asked; "" for clients that are not PXE.
	Arch   string
	Reason string // why a nak or drop happened, or "inform"
}

// Stats are counters since the Server was created.
type Stats struct {
	Received    uint64 // packets read
	Dropped     uint64 // malformed packets
	Ignored     uint64 // well-formed packets not answered (not for us, refused, pool empty)
	Offers      uint64
	Acks        uint64
	Naks        uint64
	Releases    uint64
	Declines    uint64
	ProxyOffers uint64
	ProxyAcks   uint64
	Errors      uint64 // lease store or socket write failures
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Received:    s.stats.received.Load(),
		Dropped:     s.stats.dropped.Load(),
		Ignored:     s.stats.ignored.Load(),
		Offers:      s.stats.offers.Load(),
		Acks:        s.stats.acks.Load(),
		Naks:        s.stats.naks.Load(),
		Releases:    s.stats.releases.Load(),
		Declines:    s.stats.declines.Load(),
		ProxyOffers: s.stats.proxyOffers.Load(),
		ProxyAcks:   s.stats.proxyAcks.Load(),
		Errors:      s.stats.errors.Load(),
	}
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

func (s *Server) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}

func (s *Server) emit(e Event) {
	if s.OnEvent != nil {
		s.eventMu.Lock()
		defer s.eventMu.Unlock()
		s.OnEvent(e)
	}
}

// init validates the config and loads persisted leases, once. A failed init
// is retried by the next Serve.
func (s *Server) init() (*state, error) {
	s.initMu.Lock()
	defer s.initMu.Unlock()
	if s.st != nil {
		return s.st, nil
	}
	if err := s.Config.withDefaults().validate(); err != nil {
		return nil, fmt.Errorf("dhcp config: %w", err)
	}
	st := &state{cfg: s.Config.withDefaults(), serverIP: s.Config.ServerIP.To4(), pending: map[uint32]string{}}
	if st.cfg.Mode == ModeFull {
		p, err := newPool(st.cfg)
		if err != nil {
			return nil, fmt.Errorf("dhcp config: %w", err)
		}
		if s.Leases != nil {
			leases, err := s.Leases.Leases()
			if err != nil {
				return nil, fmt.Errorf("load leases: %w", err)
			}
			loaded := 0
			for _, l := range leases {
				if err := p.load(l); err != nil {
					// The store keeps it; a config change may bring it back.
					s.log().Warn("lease not honoured", "mac", l.MAC, "ip", l.IP, "err", err)
					continue
				}
				loaded++
			}
			s.log().Info("leases loaded", "count", loaded)
		}
		st.pool = p
	}
	s.st = st
	return st, nil
}

// interfaceConn is implemented by the sockets Listen returns: it reports the
// interface a packet came in on and sends replies out of that interface,
// which a server answering on several interfaces needs for broadcasts.
type interfaceConn interface {
	readFromInterface(b []byte) (n, ifIndex int, src net.Addr, err error)
	writeToInterface(b []byte, ifIndex int, dst net.Addr) (int, error)
}

// Serve answers requests on conn until ctx is done, then closes conn and
// returns nil once the requests in flight are answered or dropped. It returns an error if the configuration is invalid or the
// leases cannot be loaded (closing conn as well), or if reading fails.
//
// Replies go where RFC 2131 says: to the relay (giaddr) when relayed, by
// broadcast to clients without an address, unicast to ciaddr on renewal.
// Requests from a loopback address are answered at that address, which
// lets tests run a real client over 127.0.0.1 without privileges.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	st, err := s.init()
	if err != nil {
		return err
	}
	localPort := 0
	if u, ok := conn.LocalAddr().(*net.UDPAddr); ok {
		localPort = u.Port
	}
	ic, _ := conn.(interfaceConn)
	s.log().Info("dhcp serving", "addr", conn.LocalAddr().String(), "mode", st.cfg.Mode.String())

	// Handlers finish before Serve returns (this runs before the deferred
	// Close above); a reply written after ctx is done just fails.
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, maxInFlight)
	buf := make([]byte, 64<<10)
	for {
		var (
			n, ifIndex int
			src        net.Addr
		)
		if ic != nil {
			n, ifIndex, src, err = ic.readFromInterface(buf)
		} else {
			n, src, err = conn.ReadFrom(buf)
		}
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("dhcp read: %w", err)
		}
		// FromBytes copies what it keeps, so buf is free again after it.
		req := s.parse(buf[:n])
		if req == nil {
			continue
		}
		if !s.mayWrite(st, req, localPort) {
			// Offers, proxy and boot server answers need no store write:
			// answering them here costs no goroutine, and under a storm
			// keeps them flowing while leases wait for their commit.
			s.answer(ctx, conn, ic, s.respond(st, req, src, localPort), ifIndex)
			continue
		}
		// A full set of handlers stops the reading: the kernel's socket
		// buffer queues, then drops, as it would for a slow server.
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			s.answer(ctx, conn, ic, s.respond(st, req, src, localPort), ifIndex)
		}()
	}
}

// mayWrite reports whether answering req may wait on the lease store: a
// full-mode REQUEST, RELEASE or DECLINE on the DHCP port. (A DISCOVER that
// takes over an expired lease deletes it too, but only once the pool has
// run out of unused addresses.)
func (s *Server) mayWrite(st *state, req *dhcpv4.DHCPv4, localPort int) bool {
	if s.Leases == nil || st.cfg.Mode != ModeFull || localPort == PXEPort {
		return false
	}
	switch req.MessageType() {
	case dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeDecline:
		return true
	}
	return false
}

// answer sends out, if not nil.
func (s *Server) answer(ctx context.Context, conn net.PacketConn, ic interfaceConn, out *outPacket, ifIndex int) {
	if out == nil {
		return
	}
	b := out.msg.ToBytes()
	var err error
	if ic != nil && ifIndex > 0 {
		_, err = ic.writeToInterface(b, ifIndex, out.to)
	} else {
		_, err = conn.WriteTo(b, out.to)
	}
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, net.ErrClosed) {
			return
		}
		// A send failure is the client's loss, not the server's end.
		s.stats.errors.Add(1)
		s.log().Warn("dhcp send failed", "mac", out.msg.ClientHWAddr.String(), "ip", out.to.IP.String(), "err", err)
	}
}

// outPacket is a reply and where to send it.
type outPacket struct {
	msg *dhcpv4.DHCPv4
	to  *net.UDPAddr
}

// handle decides the answer to one packet. It does no I/O besides the lease
// store, so tests and the fuzzer drive it directly.
func (s *Server) handle(st *state, b []byte, src net.Addr, localPort int) *outPacket {
	req := s.parse(b)
	if req == nil {
		return nil
	}
	return s.respond(st, req, src, localPort)
}

// parse decodes one packet and checks it is a request we can answer,
// counting it; a malformed one is counted, reported and gives nil.
func (s *Server) parse(b []byte) *dhcpv4.DHCPv4 {
	s.stats.received.Add(1)
	req, err := dhcpv4.FromBytes(b)
	if err != nil {
		s.malformed(nil, err.Error())
		return nil
	}
	switch {
	case req.OpCode != dhcpv4.OpcodeBootRequest:
		s.malformed(req.ClientHWAddr, fmt.Sprintf("op %d is not a request", req.OpCode))
		return nil
	case req.HWType != 1 || len(req.ClientHWAddr) != 6:
		s.malformed(req.ClientHWAddr, fmt.Sprintf("hardware type %d length %d is not ethernet", req.HWType, len(req.ClientHWAddr)))
		return nil
	case req.MessageType() == dhcpv4.MessageTypeNone:
		s.malformed(req.ClientHWAddr, "no message type")
		return nil
	}
	return req
}

// respond decides the answer to a parsed request (nil: no answer).
func (s *Server) respond(st *state, req *dhcpv4.DHCPv4, src net.Addr, localPort int) *outPacket {
	r := &request{Server: s, st: st, m: req, cl: classify(req), src: src, bootPort: localPort != ServerPort}
	if r.cl.pxe && st.cfg.SecureBoot != nil {
		r.cl.secure = st.cfg.SecureBoot(req.ClientHWAddr)
	}
	var resp *dhcpv4.DHCPv4
	switch {
	case st.cfg.Mode == ModeProxy:
		resp = r.proxy()
	case localPort == PXEPort:
		// Full mode serving port 4011 too: firmware that asks the boot
		// server for its file after the DHCP handshake.
		resp = r.bootServer()
	default:
		resp = r.full()
	}
	if resp == nil {
		return nil
	}
	return &outPacket{msg: resp, to: r.destination(resp)}
}

func (s *Server) malformed(mac net.HardwareAddr, reason string) {
	s.stats.dropped.Add(1)
	s.log().Debug("dhcp packet dropped", "mac", mac.String(), "reason", reason)
	s.emit(Event{Kind: "drop", MAC: mac, Reason: "malformed: " + reason})
}

// request is one well-formed request being answered.
type request struct {
	*Server
	st  *state
	m   *dhcpv4.DHCPv4
	cl  client
	src net.Addr
	// bootPort is set when the request was read on a port other than 67:
	// the PXE boot server port (4011), or a test's. Replies go back to the
	// sender, which by then has an address.
	bootPort bool
}

// ignore counts and reports a request left unanswered on purpose.
func (r *request) ignore(ip net.IP, reason string) *dhcpv4.DHCPv4 {
	r.stats.ignored.Add(1)
	r.log().Debug("dhcp request ignored", "mac", r.m.ClientHWAddr.String(), "ip", ipString(ip), "reason", reason)
	r.emit(Event{Kind: "drop", MAC: r.m.ClientHWAddr, IP: ip, Arch: r.cl.label(), Reason: reason})
	return nil
}

func ipString(ip net.IP) string {
	if ip == nil {
		return ""
	}
	return ip.String()
}

// destination applies RFC 2131 section 4.1 to choose where resp goes.
func (r *request) destination(resp *dhcpv4.DHCPv4) *net.UDPAddr {
	if u, ok := r.src.(*net.UDPAddr); ok && (u.IP.IsLoopback() || r.bootPort) {
		// Loopback: tests. Boot server port: the client has its address
		// and listens where it sent from (PXE spec).
		return u
	}
	if gi := r.m.GatewayIPAddr; gi != nil && !gi.IsUnspecified() {
		return &net.UDPAddr{IP: gi, Port: ServerPort}
	}
	if resp.MessageType() != dhcpv4.MessageTypeNak {
		if ci := r.m.ClientIPAddr; ci != nil && !ci.IsUnspecified() {
			return &net.UDPAddr{IP: ci, Port: ClientPort}
		}
	}
	// No address yet: a plain UDP socket cannot unicast to a MAC without
	// an ARP entry, so broadcast (LAB-NOTES).
	return &net.UDPAddr{IP: net.IPv4bcast, Port: ClientPort}
}

// reply starts a reply of type mt with the header fields and options every
// reply carries.
func (r *request) reply(mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	resp := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        r.m.HWType,
		TransactionID: r.m.TransactionID,
		Flags:         r.m.Flags,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: r.m.GatewayIPAddr,
		ClientHWAddr:  r.m.ClientHWAddr,
		Options:       make(dhcpv4.Options),
	}
	resp.UpdateOption(dhcpv4.OptMessageType(mt))
	resp.UpdateOption(dhcpv4.OptServerIdentifier(r.st.serverIP))
	// RFC 6842 (client identifier) and RFC 3046 (relay agent information)
	// want these echoed.
	for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionClientIdentifier, dhcpv4.OptionRelayAgentInformation} {
		if v := r.m.Options.Get(code); v != nil {
			resp.UpdateOption(dhcpv4.OptGeneric(code, v))
		}
	}
	return resp
}
