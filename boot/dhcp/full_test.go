package dhcp

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// dora runs DISCOVER and REQUEST for hw and returns the leased address.
func (ts *testServer) dora(t *testing.T, hw net.HardwareAddr) net.IP {
	t.Helper()
	offer, _ := ts.do(t, pkt(t, dhcpv4.MessageTypeDiscover, hw))
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("%s: no offer (events %+v)", hw, ts.events)
	}
	ack, _ := ts.do(t, pkt(t, dhcpv4.MessageTypeRequest, hw, withServerID(ts.Config.ServerIP), withRequested(offer.YourIPAddr)))
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("%s: no ack for %s: %v", hw, offer.YourIPAddr, ack)
	}
	if !ack.YourIPAddr.Equal(offer.YourIPAddr) {
		t.Fatalf("%s: ack %s differs from offer %s", hw, ack.YourIPAddr, offer.YourIPAddr)
	}
	return ack.YourIPAddr
}

func TestPoolNeverTwice(t *testing.T) {
	c := labConfig()
	c.PoolStart, c.PoolEnd = net.IPv4(10, 99, 0, 250), net.IPv4(10, 99, 0, 255) // .254 router, .255 broadcast
	ts := newTestServer(t, c, nil)
	seen := map[string]bool{}
	for i := byte(1); i <= 4; i++ {
		ip := ts.dora(t, mac(i))
		if seen[ip.String()] {
			t.Fatalf("%s handed out twice", ip)
		}
		seen[ip.String()] = true
	}
	want := map[string]bool{"10.99.0.250": true, "10.99.0.251": true, "10.99.0.252": true, "10.99.0.253": true}
	for ip := range seen {
		if !want[ip] {
			t.Errorf("unexpected address %s", ip)
		}
	}
	if resp, _ := ts.do(t, pkt(t, dhcpv4.MessageTypeDiscover, mac(9))); resp != nil {
		t.Fatalf("offer from exhausted pool: %s", resp.YourIPAddr)
	}
	if got := ts.events[len(ts.events)-1]; got.Kind != "drop" || got.Reason != "pool exhausted" {
		t.Errorf("last event %+v, want drop pool exhausted", got)
	}
}

func TestConcurrentDiscoversGetDifferentOffers(t *testing.T) {
	ts := newTestServer(t, labConfig(), nil)
	a, _ := ts.do(t, pkt(t, dhcpv4.MessageTypeDiscover, mac(1)))
	b, _ := ts.do(t, pkt(t, dhcpv4.MessageTypeDiscover, mac(2)))
	if a.YourIPAddr.Equal(b.YourIPAddr) {
		t.Fatalf("both offered %s", a.YourIPAddr)
	}
	// B asking for A's offered address is refused while the offer stands.
	nak, _ := ts.do(t, pkt(t, dhcpv4.MessageTypeRequest, mac(2), withServerID(ts.Config.ServerIP), withRequested(a.YourIPAddr)))
	if nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("got %s, want NAK", nak.MessageType())
	}
	// Offers lapse: once the hold is over, an unconfirmed offer is free again.
	ts.now = ts.now.Add(offerHold + time.Second)
	ack, _ := ts.do(t, pkt(t, dhcpv4.MessageTypeRequest, mac(2), withRequested(a.YourIPAddr)))
	if ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("lapsed offer requested by another client: got %s, want ACK", ack.MessageType())
	}
}

func TestSameClientSameAddress(t *testing.T) {
	ts := newTestServer(t, labConfig(), nil)
	ip := ts.dora(t, mac(1))
	ts.now = ts.now.Add(3 * time.Hour) // lease expired
	if again := ts.dora(t, mac(1)); !again.Equal(ip) {
		t.Errorf("returning client got %s, want %s", again, ip)
	}
}

func TestExpiredReusedOnlyWhenPoolUsedUp(t *testing.T) {
	c := labConfig()
	c.PoolStart, c.PoolEnd = net.IPv4(10, 99, 0, 100), net.IPv4(10, 99, 0, 101)
	ts := newTestServer(t, c, nil)
	first := ts.dora(t, mac(1))
	ts.now = ts.now.Add(2 * time.Hour)
	second := ts.dora(t, mac(2))
	if second.Equal(first) {
		t.Fatalf("expired lease %s reused while never-used addresses remained", first)
	}
	third := ts.dora(t, mac(3))
	if !third.Equal(first) {
		t.Errorf("got %s, want expired %s", third, first)
	}
	// mac(1) lost its address; it must not get mac(3)'s.
	resp, _ := ts.do(t, pkt(t, dhcpv4.MessageTypeRequest, mac(1), withRequested(first)))
	if resp.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("init-reboot for reassigned address: got %s, want NAK", resp.MessageType())
	}
}

func TestReservations(t *testing.T) {
	c := labConfig()
	c.Reservations = map[string]net.IP{"52:54:00:AA:BB:07": net.IPv4(10, 99, 0, 20), "52:54:00:aa:bb:08": net.IPv4(10, 99, 0, 100)}
	ts := newTestServer(t, c, nil)
	if ip := ts.dora(t, mac(7)); !ip.Equal(net.IPv4(10, 99, 0, 20)) {
		t.Errorf("reserved client got %s", ip)
	}
	if ip := ts.dora(t, mac(1)); !ip.Equal(net.IPv4(10, 99, 0, 101)) {
		t.Errorf("other client got %s, want .101 (.100 is reserved)", ip)
	}
	resp, _ := ts.do(t, pkt(t, dhcpv4.MessageTypeRequest, mac(7), withRequested(net.IPv4(10, 99, 0, 102))))
	if resp.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("reserved client asking for another address: got %s, want NAK", resp.MessageType())
	}
	resp, _ = ts.do(t, pkt(t, dhcpv4.MessageTypeRequest, mac(2), withRequested(net.IPv4(10, 99, 0, 100))))
	if resp.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("asking for another's reservation: got %s, want NAK", resp.MessageType())
	}
}

func TestRequestStates(t *testing.T) {
	ts := newTestServer(t, labConfig(), nil)
	ip := ts.dora(t, mac(1))
	tests := []struct {
		name string
		m    *dhcpv4.DHCPv4
		want dhcpv4.MessageType // MessageTypeNone: no reply
		to   string
	}{
		{"init-reboot own address", pkt(t, dhcpv4.MessageTypeRequest, mac(1), withRequested(ip)), dhcpv4.MessageTypeAck, "255.255.255.255:68"},
		{"renewing", pkt(t, dhcpv4.MessageTypeRequest, mac(1), dhcpv4.WithClientIP(ip), dhcpv4.WithBroadcast(false)), dhcpv4.MessageTypeAck, ip.String() + ":68"},
		{"init-reboot taken address", pkt(t, dhcpv4.MessageTypeRequest, mac(2), withRequested(ip)), dhcpv4.MessageTypeNak, "255.255.255.255:68"},
		{"renewing taken address", pkt(t, dhcpv4.MessageTypeRequest, mac(2), dhcpv4.WithClientIP(ip)), dhcpv4.MessageTypeNak, "255.255.255.255:68"},
		{"init-reboot other network", pkt(t, dhcpv4.MessageTypeRequest, mac(3), withRequested(net.IPv4(192, 168, 1, 5))), dhcpv4.MessageTypeNak, "255.255.255.255:68"},
		{"init-reboot outside pool", pkt(t, dhcpv4.MessageTypeRequest, mac(3), withRequested(net.IPv4(10, 99, 0, 5))), dhcpv4.MessageTypeNak, "255.255.255.255:68"},
		{"init-reboot server address", pkt(t, dhcpv4.MessageTypeRequest, mac(3), withRequested(net.IPv4(10, 99, 0, 1))), dhcpv4.MessageTypeNak, "255.255.255.255:68"},
		{"init-reboot free pool address", pkt(t, dhcpv4.MessageTypeRequest, mac(3), withRequested(net.IPv4(10, 99, 0, 105))), dhcpv4.MessageTypeAck, "255.255.255.255:68"},
		{"selecting other server", pkt(t, dhcpv4.MessageTypeRequest, mac(4), withServerID(net.IPv4(10, 99, 0, 2)), withRequested(net.IPv4(10, 99, 0, 106))), dhcpv4.MessageTypeNone, ""},
		{"no address at all", pkt(t, dhcpv4.MessageTypeRequest, mac(4)), dhcpv4.MessageTypeNak, "255.255.255.255:68"},
		{"relayed from pool subnet", pkt(t, dhcpv4.MessageTypeRequest, mac(1), withRequested(ip), dhcpv4.WithRelay(net.IPv4(10, 99, 0, 254))), dhcpv4.MessageTypeAck, "10.99.0.254:67"},
		{"relayed from elsewhere", pkt(t, dhcpv4.MessageTypeDiscover, mac(5), dhcpv4.WithRelay(net.IPv4(172, 16, 0, 1))), dhcpv4.MessageTypeNone, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, to := ts.do(t, tt.m)
			if tt.want == dhcpv4.MessageTypeNone {
				if resp != nil {
					t.Fatalf("got %s, want no reply", resp.MessageType())
				}
				return
			}
			if resp == nil {
				t.Fatalf("no reply, want %s (last event %+v)", tt.want, ts.events[len(ts.events)-1])
			}
			if resp.MessageType() != tt.want {
				t.Fatalf("got %s (%s), want %s", resp.MessageType(), resp.Message(), tt.want)
			}
			if to.String() != tt.to {
				t.Errorf("sent to %s, want %s", to, tt.to)
			}
			if tt.want == dhcpv4.MessageTypeNak && !resp.YourIPAddr.IsUnspecified() {
				t.Errorf("NAK with yiaddr %s", resp.YourIPAddr)
			}
		})
	}
}

func TestReleaseAndDecline(t *testing.T) {
	store := &MemLeases{}
	ts := newTestServer(t, labConfig(), store)
	ip := ts.dora(t, mac(1))
	ts.do(t, pkt(t, dhcpv4.MessageTypeRelease, mac(2), dhcpv4.WithClientIP(ip))) // not its lease
	if l, _ := store.Leases(); len(l) != 1 {
		t.Fatalf("foreign release removed lease: %v", l)
	}
	ts.do(t, pkt(t, dhcpv4.MessageTypeRelease, mac(1), dhcpv4.WithClientIP(ip)))
	if l, _ := store.Leases(); len(l) != 0 {
		t.Fatalf("leases after release: %v", l)
	}
	if got := ts.Stats().Releases; got != 1 {
		t.Errorf("releases = %d", got)
	}
	// Released: the client gets it back, another client only a fresh one.
	if other := ts.dora(t, mac(2)); other.Equal(ip) {
		t.Errorf("released address went to another client while unused ones remain")
	}
	if again := ts.dora(t, mac(1)); !again.Equal(ip) {
		t.Errorf("releasing client got %s back, want %s", again, ip)
	}

	// Decline: the address stays out of use for a while, for everyone.
	ts.do(t, pkt(t, dhcpv4.MessageTypeDecline, mac(1), withRequested(ip)))
	if got := ts.Stats().Declines; got != 1 {
		t.Fatalf("declines = %d", got)
	}
	if next := ts.dora(t, mac(1)); next.Equal(ip) {
		t.Fatalf("declined address %s offered again at once", ip)
	}
	resp, _ := ts.do(t, pkt(t, dhcpv4.MessageTypeRequest, mac(3), withRequested(ip)))
	if resp.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("declined address requested: got %s, want NAK", resp.MessageType())
	}
}

type failingStore struct{ MemLeases }

func (*failingStore) PutLease(Lease) error { return errors.New("disk on fire") }

func TestNoAckWhenStoreFails(t *testing.T) {
	ts := newTestServer(t, labConfig(), &failingStore{})
	offer, _ := ts.do(t, pkt(t, dhcpv4.MessageTypeDiscover, mac(1)))
	resp, _ := ts.do(t, pkt(t, dhcpv4.MessageTypeRequest, mac(1), withServerID(ts.Config.ServerIP), withRequested(offer.YourIPAddr)))
	if resp != nil {
		t.Fatalf("got %s although the lease was not stored", resp.MessageType())
	}
	if s := ts.Stats(); s.Errors != 1 || s.Acks != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestLeasesHonouredAfterRestart(t *testing.T) {
	store := &MemLeases{}
	ts := newTestServer(t, labConfig(), store)
	ips := map[string]net.IP{}
	for i := byte(1); i <= 3; i++ {
		ips[mac(i).String()] = ts.dora(t, mac(i))
	}
	// A new server on the same store: old clients keep their addresses and
	// a new client gets none of them.
	ts2 := newTestServer(t, labConfig(), store)
	fresh := ts2.dora(t, mac(9))
	for m, ip := range ips {
		if fresh.Equal(ip) {
			t.Fatalf("new client got %s, leased to %s before restart", fresh, m)
		}
	}
	for i := byte(1); i <= 3; i++ {
		resp, _ := ts2.do(t, pkt(t, dhcpv4.MessageTypeRequest, mac(i), dhcpv4.WithClientIP(ips[mac(i).String()])))
		if resp == nil || resp.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("renewal of %s after restart: %v", mac(i), resp)
		}
		offer, _ := ts2.do(t, pkt(t, dhcpv4.MessageTypeDiscover, mac(i)))
		if !offer.YourIPAddr.Equal(ips[mac(i).String()]) {
			t.Errorf("%s offered %s after restart, had %s", mac(i), offer.YourIPAddr, ips[mac(i).String()])
		}
	}
}

// TestReservationAddedOverActiveLease: an address reserved (with a
// restart) while another client still leases it goes to its new owner only
// once the holder has let go; the holder's renewal is refused meanwhile.
func TestReservationAddedOverActiveLease(t *testing.T) {
	store := &MemLeases{}
	ts := newTestServer(t, labConfig(), store)
	ip := ts.dora(t, mac(1))
	c := labConfig()
	c.Reservations = map[string]net.IP{mac(7).String(): ip}
	ts2 := newTestServer(t, c, store)
	ts2.now = t0.Add(time.Minute)
	if got := ts2.dora(t, mac(7)); got.Equal(ip) {
		t.Errorf("%s given to %s while %s's lease has 59 minutes left", got, mac(7), mac(1))
	}
	resp, _ := ts2.do(t, pkt(t, dhcpv4.MessageTypeRequest, mac(1), dhcpv4.WithClientIP(ip)))
	if resp == nil || resp.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("renewal by the holder of a now reserved address: %v, want NAK", resp)
	}
	// The holder moves to another address; then the owner gets its own.
	if got := ts2.dora(t, mac(1)); got.Equal(ip) {
		t.Errorf("holder got %s again after its NAK", got)
	}
	if got := ts2.dora(t, mac(7)); !got.Equal(ip) {
		t.Errorf("owner got %s once the holder moved, want its reserved %s", got, ip)
	}
}

// slowDeletes is a plain LeaseStore (no LeaseQueue) whose deletes take a
// moment, as a store writing to disk does.
type slowDeletes struct{ MemLeases }

func (s *slowDeletes) DeleteLease(m net.HardwareAddr) error {
	time.Sleep(20 * time.Millisecond)
	return s.MemLeases.DeleteLease(m)
}

// TestEvictionKeepsNewerLease: with a plain store, the removal of an
// evicted client's old lease must not land after that client's new lease
// and erase it (after a restart its address would be handed out again).
func TestEvictionKeepsNewerLease(t *testing.T) {
	c := labConfig()
	c.PoolStart, c.PoolEnd = net.IPv4(10, 99, 0, 100), net.IPv4(10, 99, 0, 101)
	store := &slowDeletes{}
	ts := newTestServer(t, c, store)
	ts.dora(t, mac(1))
	ts.dora(t, mac(2))
	ts.now = t0.Add(2 * time.Hour) // both expired, no unused address left
	ts.dora(t, mac(3))             // takes over mac(1)'s address
	x := ts.dora(t, mac(1))        // mac(1) comes back, gets mac(2)'s
	time.Sleep(100 * time.Millisecond)
	ts2 := newTestServer(t, c, store)
	ts2.now = ts.now
	// Both addresses are leased: a new client gets none.
	if offer, _ := ts2.do(t, pkt(t, dhcpv4.MessageTypeDiscover, mac(4))); offer != nil {
		t.Errorf("after a restart %s was offered %s; %s holds %s", mac(4), offer.YourIPAddr, mac(1), x)
	}
}

func TestMalformedDropped(t *testing.T) {
	ts := newTestServer(t, labConfig(), nil)
	good := pkt(t, dhcpv4.MessageTypeDiscover, mac(1)).ToBytes()
	reply := pkt(t, dhcpv4.MessageTypeDiscover, mac(1))
	reply.OpCode = dhcpv4.OpcodeBootReply
	noType := pkt(t, dhcpv4.MessageTypeDiscover, mac(1))
	noType.Options.Del(dhcpv4.OptionDHCPMessageType)
	longHW := pkt(t, dhcpv4.MessageTypeDiscover, append(mac(1), 0, 0))
	badCookie := append([]byte(nil), good...)
	badCookie[236] = 0
	tests := map[string][]byte{
		"empty":      nil,
		"short":      good[:100],
		"bad cookie": badCookie,
		"reply":      reply.ToBytes(),
		"no type":    noType.ToBytes(),
		"hlen 8":     longHW.ToBytes(),
		"no end":     good[:241],
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			before := ts.Stats().Dropped
			if out := ts.handle(ts.st, b, clientAddr, ServerPort); out != nil {
				t.Fatalf("answered: %v", out.msg)
			}
			if ts.Stats().Dropped != before+1 {
				t.Errorf("not counted as dropped")
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	tests := map[string]func(*Config){
		"no server ip":         func(c *Config) { c.ServerIP = nil },
		"no pool":              func(c *Config) { c.PoolStart = nil },
		"pool reversed":        func(c *Config) { c.PoolStart, c.PoolEnd = c.PoolEnd, c.PoolStart },
		"pool across subnets":  func(c *Config) { c.PoolEnd = net.IPv4(10, 99, 1, 5) },
		"bad reservation mac":  func(c *Config) { c.Reservations = map[string]net.IP{"nope": net.IPv4(10, 99, 0, 5)} },
		"reservation offnet":   func(c *Config) { c.Reservations = map[string]net.IP{"52:54:00:00:00:01": net.IPv4(10, 98, 0, 5)} },
		"reservation is ours":  func(c *Config) { c.Reservations = map[string]net.IP{"52:54:00:00:00:01": net.IPv4(10, 99, 0, 1)} },
		"http boot url no url": func(c *Config) { c.HTTPBootURL = "ipxe.efi" },
		"bad mode":             func(c *Config) { c.Mode = 7 },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			c := labConfig()
			mutate(&c)
			if _, err := (&Server{Config: c}).init(); err == nil {
				t.Fatal("no error")
			}
		})
	}
	proxy := Config{Mode: ModeProxy, ServerIP: net.IPv4(10, 99, 0, 1)}
	if _, err := (&Server{Config: proxy}).init(); err != nil {
		t.Errorf("minimal proxy config: %v", err)
	}
}

// TestExhaustedPoolFreesUp: once a scan finds the pool full, DISCOVERs are
// refused without scanning again, yet an address is offered as soon as a
// release, a decline's hold running out, or a lease's expiry frees one.
func TestExhaustedPoolFreesUp(t *testing.T) {
	c := labConfig()
	c.PoolStart, c.PoolEnd = net.IPv4(10, 99, 0, 100), net.IPv4(10, 99, 0, 102)
	ts := newTestServer(t, c, nil)
	var ips []net.IP
	for i := byte(1); i <= 3; i++ {
		ips = append(ips, ts.dora(t, mac(i)))
	}
	stranger := byte(100) // a new client for each check
	full := func(when string) {
		t.Helper()
		stranger++
		if resp, _ := ts.do(t, pkt(t, dhcpv4.MessageTypeDiscover, mac(stranger))); resp != nil {
			t.Fatalf("%s: offer %s from a full pool", when, resp.YourIPAddr)
		}
	}
	full("all leased")
	if want := ts.now.Add(ts.st.cfg.LeaseTime); !ts.st.pool.fullUntil.Equal(want) {
		t.Fatalf("fullUntil = %v, want the first lease's expiry %v", ts.st.pool.fullUntil, want)
	}
	full("again")

	// A release frees its address at once, for a new client too.
	ts.do(t, pkt(t, dhcpv4.MessageTypeRelease, mac(2), dhcpv4.WithClientIP(ips[1])))
	if got := ts.dora(t, mac(9)); !got.Equal(ips[1]) {
		t.Fatalf("after release: got %s, want %s", got, ips[1])
	}
	full("released address taken")

	// A declined address comes back once its hold runs out (before any
	// lease expires, as the lease time here is longer).
	ts.do(t, pkt(t, dhcpv4.MessageTypeDecline, mac(1), withRequested(ips[0])))
	full("declined")
	ts.now = ts.now.Add(declineHold + time.Second)
	if got := ts.dora(t, mac(10)); !got.Equal(ips[0]) {
		t.Fatalf("after decline hold: got %s, want %s", got, ips[0])
	}

	// Expiry: every lease runs out.
	full("declined address taken")
	ts.now = ts.now.Add(ts.st.cfg.LeaseTime + time.Second)
	if resp, _ := ts.do(t, pkt(t, dhcpv4.MessageTypeDiscover, mac(11))); resp == nil {
		t.Fatal("no offer once leases expired")
	}
}
