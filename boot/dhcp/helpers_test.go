package dhcp

import (
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// t0 is the fixed clock of handler tests.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func labConfig() Config {
	return Config{
		ServerIP:      net.IPv4(10, 99, 0, 1),
		PoolStart:     net.IPv4(10, 99, 0, 100),
		PoolEnd:       net.IPv4(10, 99, 0, 109),
		Netmask:       net.CIDRMask(24, 32),
		Router:        net.IPv4(10, 99, 0, 254),
		DNS:           []net.IP{net.IPv4(10, 99, 0, 1)},
		ScriptURL:     "http://10.99.0.1:8080/boot.ipxe?mac=${net0/mac}",
		HTTPBootURL:   "http://10.99.0.1:8080/ipxe.efi",
		ARM64BootFile: "ipxe-arm64.efi",
	}
}

// testServer is a Server with a settable clock, handled without sockets.
type testServer struct {
	*Server
	st     *state
	now    time.Time
	events []Event
}

func newTestServer(t testing.TB, c Config, store LeaseStore) *testServer {
	t.Helper()
	ts := &testServer{now: t0}
	ts.Server = &Server{Config: c, Leases: store, OnEvent: func(e Event) { ts.events = append(ts.events, e) }}
	ts.Server.now = func() time.Time { return ts.now }
	st, err := ts.init()
	if err != nil {
		t.Fatal(err)
	}
	ts.st = st
	return ts
}

var clientAddr = &net.UDPAddr{IP: net.IPv4(10, 99, 0, 50), Port: ClientPort}

// do handles m as if it arrived on port 67 from a client without address,
// and returns the reply as a client would decode it (nil if none).
func (ts *testServer) do(t testing.TB, m *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	return ts.doOn(t, m, clientAddr, ServerPort)
}

func (ts *testServer) doOn(t testing.TB, m *dhcpv4.DHCPv4, src net.Addr, port int) (*dhcpv4.DHCPv4, *net.UDPAddr) {
	t.Helper()
	out := ts.handle(ts.st, m.ToBytes(), src, port)
	if out == nil {
		return nil, nil
	}
	resp, err := dhcpv4.FromBytes(out.msg.ToBytes())
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return resp, out.to
}

func mac(last byte) net.HardwareAddr { return net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0xbb, last} }

// pkt builds a request of type mt from hw with a fixed transaction ID.
func pkt(t testing.TB, mt dhcpv4.MessageType, hw net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{0xde, 0xad, 0xbe, 0xef}),
		dhcpv4.WithHwAddr(hw),
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithBroadcast(true),
	}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Request modifiers of the kinds of firmware phoenix meets.
func withArch(a uint16) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptClientArch(iana.Arch(a)))
}

func withVendor(s string) dhcpv4.Modifier { return dhcpv4.WithOption(dhcpv4.OptClassIdentifier(s)) }

// withIPXE sets the user class the way iPXE does: raw "iPXE", not RFC 3004.
func withIPXE() dhcpv4.Modifier { return dhcpv4.WithUserClass("iPXE", false) }

func withGUID() dhcpv4.Modifier {
	return dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, append([]byte{0}, []byte("0123456789abcdef")...))
}

func withRequested(ip net.IP) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip))
}

func withServerID(ip net.IP) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ip))
}
