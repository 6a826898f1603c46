package dhcp

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// serve runs s on a fresh 127.0.0.1 socket until the test ends.
func serve(t *testing.T, s *Server, listen func() (net.PacketConn, error)) *net.UDPAddr {
	t.Helper()
	if listen == nil {
		listen = func() (net.PacketConn, error) { return net.ListenPacket("udp4", "127.0.0.1:0") }
	}
	pc, err := listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, pc) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return pc.LocalAddr().(*net.UDPAddr)
}

func sendTo(t *testing.T, addr *net.UDPAddr, m *dhcpv4.DHCPv4) {
	t.Helper()
	conn, err := net.DialUDP("udp4", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(m.ToBytes()); err != nil {
		t.Fatal(err)
	}
}

func newClient(t *testing.T, server *net.UDPAddr, hw net.HardwareAddr, opts ...nclient4.ClientOpt) *nclient4.Client {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := nclient4.NewWithConn(conn, hw, append([]nclient4.ClientOpt{nclient4.WithServerAddr(server), nclient4.WithTimeout(time.Second), nclient4.WithRetry(3)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestServeDORA(t *testing.T) {
	store := &MemLeases{}
	var mu sync.Mutex
	var kinds []string
	s := &Server{Config: labConfig(), Leases: store, OnEvent: func(e Event) {
		mu.Lock()
		kinds = append(kinds, e.Kind)
		mu.Unlock()
	}}
	addr := serve(t, s, nil)
	ctx := context.Background()

	c := newClient(t, addr, mac(1))
	lease, err := c.Request(ctx, withArch(7), withVendor("PXEClient:Arch:00007:UNDI:003016"))
	if err != nil {
		t.Fatal(err)
	}
	ack := lease.ACK
	if !ack.YourIPAddr.Equal(net.IPv4(10, 99, 0, 100)) || ack.BootFileNameOption() != "ipxe.efi" || !ack.ServerIPAddr.Equal(net.IPv4(10, 99, 0, 1)) {
		t.Fatalf("ack: %s", ack.Summary())
	}
	if got := ack.IPAddressLeaseTime(0); got != time.Hour {
		t.Errorf("lease time %s", got)
	}
	stored, _ := store.Leases()
	if len(stored) != 1 || !stored[0].IP.Equal(ack.YourIPAddr) || stored[0].MAC.String() != mac(1).String() {
		t.Fatalf("stored leases %+v", stored)
	}

	// A second client gets another address.
	lease2, err := newClient(t, addr, mac(2)).Request(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if lease2.ACK.YourIPAddr.Equal(ack.YourIPAddr) {
		t.Fatalf("both clients got %s", ack.YourIPAddr)
	}

	// Renew, then release.
	if _, err := c.Renew(ctx, lease); err != nil {
		t.Fatalf("renew: %v", err)
	}
	// nclient4's Release sends to the server identifier (10.99.0.1), which
	// is not where this test's server listens: send it by hand.
	rel, err := dhcpv4.NewReleaseFromACK(lease.ACK)
	if err != nil {
		t.Fatal(err)
	}
	sendTo(t, addr, rel)
	deadline := time.Now().Add(2 * time.Second)
	for s.Stats().Releases == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if stored, _ := store.Leases(); len(stored) != 1 {
		t.Errorf("after release, stored leases %+v", stored)
	}
	st := s.Stats()
	if st.Offers != 2 || st.Acks != 3 || st.Releases != 1 || st.Received != 6 {
		t.Errorf("stats %+v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(kinds) != 6 {
		t.Errorf("events %v", kinds)
	}
}

func TestServeRestartHonoursLeases(t *testing.T) {
	store := &MemLeases{}
	ctx := context.Background()
	first := &Server{Config: labConfig(), Leases: store}
	addr := serve(t, first, nil)
	lease, err := newClient(t, addr, mac(1)).Request(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ip := lease.ACK.YourIPAddr

	second := &Server{Config: labConfig(), Leases: store}
	addr2 := serve(t, second, nil)
	other, err := newClient(t, addr2, mac(2)).Request(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if other.ACK.YourIPAddr.Equal(ip) {
		t.Fatalf("restarted server gave %s, leased to %s, to %s", ip, mac(1), mac(2))
	}
	again, err := newClient(t, addr2, mac(1)).Request(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !again.ACK.YourIPAddr.Equal(ip) {
		t.Errorf("after restart %s got %s, had %s", mac(1), again.ACK.YourIPAddr, ip)
	}
}

// TestServeProxyTwoSockets runs one proxy Server on two sockets, as on ports
// 67 and 4011.
func TestServeProxyTwoSockets(t *testing.T) {
	s := &Server{Config: Config{Mode: ModeProxy, ServerIP: net.IPv4(10, 99, 0, 1)}}
	dhcpAddr := serve(t, s, nil)
	bootAddr := serve(t, s, nil)
	ctx := context.Background()

	c := newClient(t, dhcpAddr, mac(1))
	offer, err := c.DiscoverOffer(ctx, withArch(7), withVendor("PXEClient:Arch:00007:UNDI:003016"))
	if err != nil {
		t.Fatal(err)
	}
	if !offer.YourIPAddr.IsUnspecified() || offer.BootFileNameOption() != "ipxe.efi" || offer.ClassIdentifier() != "PXEClient" {
		t.Fatalf("proxy offer: %s", offer.Summary())
	}
	// Not a PXE client: no answer at all.
	if _, err := newClient(t, dhcpAddr, mac(2), nclient4.WithTimeout(200*time.Millisecond), nclient4.WithRetry(1)).DiscoverOffer(ctx); !errors.Is(err, nclient4.ErrNoResponse) {
		t.Errorf("non-PXE discover: err %v, want no response", err)
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, withArch(7), dhcpv4.WithClientIP(net.IPv4(10, 99, 0, 42)))
	if err != nil {
		t.Fatal(err)
	}
	ack, err := c.SendAndRead(ctx, bootAddr, req, nclient4.IsMessageType(dhcpv4.MessageTypeAck))
	if err != nil {
		t.Fatal(err)
	}
	if ack.BootFileNameOption() != "ipxe.efi" || !ack.YourIPAddr.IsUnspecified() {
		t.Errorf("boot server ack: %s", ack.Summary())
	}
	if st := s.Stats(); st.ProxyOffers != 1 || st.ProxyAcks != 1 || st.Ignored < 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestServeStopsOnCancel(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&Server{Config: labConfig()}).Serve(ctx, pc) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve returned %v, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := pc.WriteTo([]byte{0}, pc.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("conn not closed: %v", err)
	}
}

func TestServeBadConfigFails(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := (&Server{}).Serve(context.Background(), pc); err == nil {
		t.Fatal("zero config served")
	}
}
