package dhcp

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// rcvBuf is the receive buffer asked for on DHCP sockets.
const rcvBuf = 8 << 20

// Listen opens a UDP socket on addr (":67", or ":4011" for a proxy's boot
// server port) that may send broadcasts. With iface set the socket is bound
// to that interface (SO_BINDTODEVICE), so it sees and answers only that
// network. Either way, Serve sends each reply out of the interface its
// request came in on, which broadcasts on a multi-homed server need.
func Listen(iface string, addr string) (net.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				serr = fmt.Errorf("SO_REUSEADDR: %w", serr)
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				serr = fmt.Errorf("SO_BROADCAST: %w", serr)
				return
			}
			// A rack powering on at once sends its DISCOVERs in one burst,
			// and a lease commit (an fsync) can hold the answers up for
			// tens of milliseconds. The default buffer (~200 KiB, a few
			// hundred packets) then overflows and clients wait seconds
			// to retry; a larger one rides the burst out. FORCE lifts
			// rmem_max's cap when we are privileged; otherwise ask for
			// what rmem_max allows. Neither failing is fatal.
			if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf) != nil {
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf)
			}
			if iface != "" {
				if serr = unix.BindToDevice(int(fd), iface); serr != nil {
					serr = fmt.Errorf("SO_BINDTODEVICE %s: %w", iface, serr)
				}
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", addr)
	if err != nil {
		return nil, fmt.Errorf("dhcp listen %s on %q: %w", addr, iface, err)
	}
	p := ipv4.NewPacketConn(pc)
	if err := p.SetControlMessage(ipv4.FlagInterface, true); err != nil {
		pc.Close()
		return nil, fmt.Errorf("dhcp listen %s: IP_PKTINFO: %w", addr, err)
	}
	return &ifConn{UDPConn: pc.(*net.UDPConn), oob: ipv4.NewControlMessage(ipv4.FlagInterface)}, nil
}

// ifConn is a UDP socket that knows the interface of each packet. It goes
// through the standard library's ReadMsgUDP and WriteMsgUDP rather than
// x/net/ipv4's PacketConn: the latter's receive path (x/sys/unix's
// Recvmsg) asks the kernel for the socket's protocol with a getsockopt on
// every packet, an extra syscall per request that a storm feels.
type ifConn struct {
	*net.UDPConn
	oob []byte // the reader's control-message buffer: one reader at a time
}

// readFromInterface reads one packet and the index of the interface it
// arrived on (0 if unknown). It is not safe for concurrent use; Serve
// reads from one goroutine.
func (c *ifConn) readFromInterface(b []byte) (int, int, net.Addr, error) {
	n, oobn, _, src, err := c.ReadMsgUDP(b, c.oob)
	if err != nil {
		return n, 0, nil, err
	}
	ifIndex := 0
	var cm ipv4.ControlMessage
	if cm.Parse(c.oob[:oobn]) == nil {
		ifIndex = cm.IfIndex
	}
	return n, ifIndex, src, nil
}

// writeToInterface sends b to dst out of the interface ifIndex.
func (c *ifConn) writeToInterface(b []byte, ifIndex int, dst net.Addr) (int, error) {
	ua, ok := dst.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("dhcp: send to %T, not a UDP address", dst)
	}
	n, _, err := c.WriteMsgUDP(b, (&ipv4.ControlMessage{IfIndex: ifIndex}).Marshal(), ua)
	return n, err
}
