// Package ra sends minimal IPv6 Router Advertisements on the boot interface,
// for one reason: iPXE waits about 13 s for IPv6 autoconfiguration at every
// boot unless a Router Advertisement arrives, and on a link without an IPv6
// router none ever does.
//
// It is not a router advertisement daemon and must not pose as a router:
// every advertisement has router lifetime 0 (clients never make phoenix
// their default router), carries no prefix (clients configure no address
// beyond their link-local one) and leaves the M and O flags clear (iPXE
// then does not start DHCPv6). In iPXE (src/net/ndp.c,
// ipv6conf_rx_router_advertisement) the first advertisement received while
// autoconfiguration runs stops its router solicitations and, with M and O
// clear, ends autoconfiguration successfully at once; a lifetime of 0 makes
// it record no gateway. Sending is opt-in: on a link that already has an
// IPv6 router, that router's advertisements end iPXE's wait already, and
// a second advertiser only adds noise.
package ra

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"syscall"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// DefaultInterval is how often unsolicited advertisements are sent when
// Sender.Interval is zero. iPXE solicits on its own, so this only matters
// for clients that missed the answer to their solicitation.
const DefaultInterval = 10 * time.Second

// Sender advertises on one interface until its context ends.
type Sender struct {
	// Interface is the name of the boot interface, e.g. "eth1" or "br0".
	Interface string
	// Interval between unsolicited advertisements; zero means DefaultInterval.
	Interval time.Duration
	// Log receives start-up and error lines; nil discards.
	Log *slog.Logger
}

var (
	allNodes   = netip.MustParseAddr("ff02::1")
	allRouters = netip.MustParseAddr("ff02::2")
)

// tentativeWait bounds how long Run waits for the interface's link-local
// address to finish duplicate address detection (about 1 s by default),
// which is what happens when phoenix starts right after the link comes up.
const tentativeWait = 5 * time.Second

// Run sends one advertisement at once, then one every Interval, and answers
// each Router Solicitation with an advertisement sent straight to the
// soliciting client. It returns nil when ctx is done, or an error if the
// interface does not exist, has no IPv6 link-local address, or the socket
// cannot be opened (it needs CAP_NET_RAW).
func (s *Sender) Run(ctx context.Context) error {
	ifi, err := net.InterfaceByName(s.Interface)
	if err != nil {
		return fmt.Errorf("ra: interface %q: %w", s.Interface, err)
	}
	if !hasLinkLocal(ifi) {
		return fmt.Errorf("ra: interface %s has no IPv6 link-local address (is IPv6 disabled on it?)", ifi.Name)
	}
	conn, src, err := listen(ctx, ifi)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("ra: interface %s: %w", ifi.Name, err)
	}
	defer conn.Close()
	if err := setup(conn); err != nil {
		return fmt.Errorf("ra: interface %s: %w", ifi.Name, err)
	}
	log := s.logger().With("iface", ifi.Name, "ip", src.String())
	msg := advertisement(ifi.HardwareAddr)

	// ReadFrom has no context; closing the conn is what unblocks it.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	answered := make(chan error, 1)
	go func() { answered <- answer(conn, msg, log) }()

	interval := s.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	log.Info("sending IPv6 router advertisements (lifetime 0, no prefix)", "interval", interval)
	send(conn, msg, allNodes, log)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			<-answered
			return nil
		case err := <-answered:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("ra: interface %s: read: %w", ifi.Name, err)
		case <-tick.C:
			send(conn, msg, allNodes, log)
		}
	}
}

// advertisement builds the one message Sender ever sends.
func advertisement(mac net.HardwareAddr) *ndp.RouterAdvertisement {
	ra := &ndp.RouterAdvertisement{
		// Zero hop limit, reachable time and retransmit timer mean
		// "unspecified": the clients keep their own defaults.
		CurrentHopLimit: 0,
		// Not a default router, and nothing to learn over DHCPv6.
		RouterLifetime:       0,
		ManagedConfiguration: false,
		OtherConfiguration:   false,
	}
	// The source link-layer address spares clients a neighbour solicitation
	// before they can answer us; ndp only encodes Ethernet-sized addresses.
	if len(mac) == 6 {
		ra.Options = append(ra.Options, &ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac})
	}
	return ra
}

// answer replies to Router Solicitations until conn is closed.
func answer(conn *ndp.Conn, msg *ndp.RouterAdvertisement, log *slog.Logger) error {
	for {
		m, cm, from, err := conn.ReadFrom()
		if err != nil {
			return err
		}
		if _, ok := m.(*ndp.RouterSolicitation); !ok {
			continue
		}
		// RFC 4861 6.1.1: a solicitation that did not come with hop limit
		// 255 may have been forwarded from off-link; ignore it.
		if cm != nil && cm.HopLimit != 0 && cm.HopLimit != ndp.HopLimit {
			continue
		}
		// A solicitation from an address is answered at that address
		// (RFC 4861 6.2.6 allows it), at once: no multicast rate limit to
		// respect, and the client stops waiting immediately. One from the
		// unspecified address can only be answered by multicast.
		dst := from
		if from.IsUnspecified() {
			dst = allNodes
		}
		log.Debug("router solicitation", "from", from.String())
		send(conn, msg, dst, log)
	}
}

// send logs failures instead of returning them: a link that is briefly
// down must not stop the sender.
func send(conn *ndp.Conn, msg *ndp.RouterAdvertisement, dst netip.Addr, log *slog.Logger) {
	if err := conn.WriteTo(msg, nil, dst); err != nil && !errors.Is(err, net.ErrClosed) {
		log.Warn("router advertisement not sent", "dst", dst.String(), "err", err)
	}
}

// listen opens the ICMPv6 socket on ifi's link-local address, waiting a
// little while that address is still tentative.
func listen(ctx context.Context, ifi *net.Interface) (*ndp.Conn, netip.Addr, error) {
	deadline := time.Now().Add(tentativeWait)
	for {
		conn, src, err := ndp.Listen(ifi, ndp.LinkLocal)
		if err == nil {
			return conn, src, nil
		}
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			return nil, netip.Addr{}, fmt.Errorf("open ICMPv6 socket (needs root or CAP_NET_RAW): %w", err)
		}
		if !errors.Is(err, syscall.EADDRNOTAVAIL) || time.Now().After(deadline) {
			return nil, netip.Addr{}, fmt.Errorf("open ICMPv6 socket: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, netip.Addr{}, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// setup makes the socket see solicitations and nothing else.
func setup(conn *ndp.Conn) error {
	if err := conn.JoinGroup(allRouters); err != nil {
		return fmt.Errorf("join %s: %w", allRouters, err)
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterSolicitation)
	if err := conn.SetICMPFilter(&f); err != nil {
		return fmt.Errorf("set ICMPv6 filter: %w", err)
	}
	if err := conn.SetControlMessage(ipv6.FlagHopLimit, true); err != nil {
		return fmt.Errorf("ask for hop limits: %w", err)
	}
	return nil
}

func hasLinkLocal(ifi *net.Interface) bool {
	addrs, err := ifi.Addrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() == nil && ipn.IP.IsLinkLocalUnicast() {
			return true
		}
	}
	return false
}

func (s *Sender) logger() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}
