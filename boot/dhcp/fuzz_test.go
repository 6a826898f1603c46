package dhcp

import (
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// fuzzSeeds are requests of every kind the server answers.
func fuzzSeeds(t testing.TB) map[string][]byte {
	ip := net.IPv4(10, 99, 0, 100)
	relay := dhcpv4.WithRelay(net.IPv4(10, 99, 0, 254))
	return map[string][]byte{
		"bios-discover":  pkt(t, dhcpv4.MessageTypeDiscover, mac(1), withArch(0), withVendor("PXEClient:Arch:00000:UNDI:002001"), withGUID()).ToBytes(),
		"efi-discover":   pkt(t, dhcpv4.MessageTypeDiscover, mac(2), withArch(7), withVendor("PXEClient:Arch:00007:UNDI:003016")).ToBytes(),
		"ipxe-request":   pkt(t, dhcpv4.MessageTypeRequest, mac(3), withArch(0), withIPXE(), withServerID(net.IPv4(10, 99, 0, 1)), withRequested(ip)).ToBytes(),
		"http-discover":  pkt(t, dhcpv4.MessageTypeDiscover, mac(4), withArch(16), withVendor("HTTPClient:Arch:00016:UNDI:003001")).ToBytes(),
		"renew":          pkt(t, dhcpv4.MessageTypeRequest, mac(1), dhcpv4.WithClientIP(ip)).ToBytes(),
		"release":        pkt(t, dhcpv4.MessageTypeRelease, mac(1), dhcpv4.WithClientIP(ip)).ToBytes(),
		"decline":        pkt(t, dhcpv4.MessageTypeDecline, mac(1), withRequested(ip)).ToBytes(),
		"inform":         pkt(t, dhcpv4.MessageTypeInform, mac(5), dhcpv4.WithClientIP(net.IPv4(10, 99, 0, 7))).ToBytes(),
		"relayed":        pkt(t, dhcpv4.MessageTypeDiscover, mac(6), relay, dhcpv4.WithGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{71, 4, 0x80, 0, 0, 0, 255})).ToBytes(),
		"truncated":      pkt(t, dhcpv4.MessageTypeDiscover, mac(1)).ToBytes()[:240],
		"empty-options":  pkt(t, dhcpv4.MessageTypeDiscover, mac(1)).ToBytes()[:241],
		"garbage-option": append(pkt(t, dhcpv4.MessageTypeDiscover, mac(1)).ToBytes()[:240], 53, 1, 1, 93, 1, 0, 77, 0, 43, 3, 71, 9, 1, 255),
	}
}

// FuzzHandle feeds arbitrary bytes to the request path of a full and a
// proxy server, on the DHCP and the boot server port. It must never panic,
// and whatever it answers must be a well-formed reply that never hands out
// our own or the router's address.
func FuzzHandle(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b)
	}
	full := newTestServer(f, labConfig(), &MemLeases{})
	proxy := newTestServer(f, Config{Mode: ModeProxy, ServerIP: net.IPv4(10, 99, 0, 1), ScriptURL: "http://x/y"}, nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, ts := range []*testServer{full, proxy} {
			for _, port := range []int{ServerPort, PXEPort} {
				ts.events = ts.events[:0]
				out := ts.handle(ts.st, b, clientAddr, port)
				if out == nil {
					continue
				}
				resp, err := dhcpv4.FromBytes(out.msg.ToBytes())
				if err != nil {
					t.Fatalf("reply does not parse: %v", err)
				}
				if resp.OpCode != dhcpv4.OpcodeBootReply || resp.MessageType() == dhcpv4.MessageTypeNone {
					t.Fatalf("bad reply: %s", resp.Summary())
				}
				yi := resp.YourIPAddr
				if ts == proxy && !yi.IsUnspecified() {
					t.Fatalf("proxy set yiaddr %s", yi)
				}
				if yi.Equal(ts.Config.ServerIP) || yi.Equal(ts.Config.Router) {
					t.Fatalf("handed out %s", yi)
				}
			}
		}
	})
}
