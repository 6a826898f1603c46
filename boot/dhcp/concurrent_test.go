package dhcp

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// slowStore is a lease store whose writes take a while, like an fsync, and
// which records how many overlapped.
type slowStore struct {
	MemLeases
	delay         time.Duration
	inFlight, max atomic.Int32
}

func (s *slowStore) PutLease(l Lease) error {
	n := s.inFlight.Add(1)
	for {
		m := s.max.Load()
		if n <= m || s.max.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(s.delay)
	s.inFlight.Add(-1)
	return s.MemLeases.PutLease(l)
}

// TestServeConcurrentLeases: clients are answered while another client's
// lease is still being written, so a store that groups commits can share
// one fsync among them; every client still gets its own address.
func TestServeConcurrentLeases(t *testing.T) {
	store := &slowStore{delay: 200 * time.Millisecond}
	s := &Server{Config: labConfig(), Leases: store}
	addr := serve(t, s, nil)
	const n = 8
	ips := make([]net.IP, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient(t, addr, mac(byte(i+1)))
			lease, err := c.Request(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			ips[i] = lease.ACK.YourIPAddr
		}()
	}
	wg.Wait()
	if store.max.Load() < 2 {
		t.Errorf("lease writes never overlapped (max %d in flight)", store.max.Load())
	}
	if took := time.Since(start); took > n*store.delay {
		t.Errorf("%d leases took %s: written one after another", n, took)
	}
	seen := map[string]bool{}
	for _, ip := range ips {
		if ip == nil {
			continue
		}
		if seen[ip.String()] {
			t.Errorf("%s leased twice", ip)
		}
		seen[ip.String()] = true
	}
}

// TestPendingAddressNotLeasedTwice: two clients asking for the same
// address at once (INIT-REBOOT, no offer held) never both get an ACK.
func TestPendingAddressNotLeasedTwice(t *testing.T) {
	store := &slowStore{delay: 100 * time.Millisecond}
	ts := newTestServer(t, labConfig(), store)
	want := net.IPv4(10, 99, 0, 105)
	var acks atomic.Int32
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := ts.do(t, pkt(t, dhcpv4.MessageTypeRequest, mac(byte(20+i)), withRequested(want)))
			if resp != nil && resp.MessageType() == dhcpv4.MessageTypeAck {
				acks.Add(1)
			}
		}()
	}
	wg.Wait()
	if acks.Load() != 1 {
		t.Errorf("%d ACKs for one address, want 1", acks.Load())
	}
}

// gatedQueue is a LeaseQueue whose waits block until gate is closed, and
// which records the order writes were queued in.
type gatedQueue struct {
	MemLeases
	gate  chan struct{}
	mu    sync.Mutex
	order []string
}

func (q *gatedQueue) record(s string) {
	q.mu.Lock()
	q.order = append(q.order, s)
	q.mu.Unlock()
}

func (q *gatedQueue) QueuePutLease(l Lease) func() error {
	q.record("put " + l.MAC.String())
	return func() error { <-q.gate; return q.MemLeases.PutLease(l) }
}

func (q *gatedQueue) QueueDeleteLease(mac net.HardwareAddr) func() error {
	q.record("delete " + mac.String())
	return func() error { <-q.gate; return q.MemLeases.DeleteLease(mac) }
}

// TestLeaseQueueOutsideLock: with a store that queues writes, a RELEASE
// whose delete is not yet durable holds up no other client (the server
// waits for it outside its lock), and the store sees the writes in the
// order the server decided them.
func TestLeaseQueueOutsideLock(t *testing.T) {
	store := &gatedQueue{gate: make(chan struct{})}
	close(store.gate)
	ts := newTestServer(t, labConfig(), store)
	ip := ts.dora(t, mac(1))

	store.gate = make(chan struct{})
	released := make(chan struct{})
	go func() {
		ts.do(t, pkt(t, dhcpv4.MessageTypeRelease, mac(1), dhcpv4.WithClientIP(ip)))
		close(released)
	}()
	// The release is queued, and waits for the gate.
	deadline := time.Now().Add(5 * time.Second)
	for {
		store.mu.Lock()
		n := len(store.order)
		store.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("release never queued its delete")
		}
		time.Sleep(time.Millisecond)
	}
	offered := make(chan *dhcpv4.DHCPv4, 1)
	go func() {
		resp, _ := ts.do(t, pkt(t, dhcpv4.MessageTypeDiscover, mac(2)))
		offered <- resp
	}()
	select {
	case resp := <-offered:
		if resp == nil || resp.MessageType() != dhcpv4.MessageTypeOffer {
			t.Errorf("discover during a pending release got %v, want an offer", resp)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("discover waited for another client's pending delete")
	}
	select {
	case <-released:
		t.Fatal("release returned before its delete was durable")
	default:
	}
	close(store.gate)
	<-released
	want := []string{"put " + mac(1).String(), "delete " + mac(1).String()}
	store.mu.Lock()
	defer store.mu.Unlock()
	if len(store.order) != 2 || store.order[0] != want[0] || store.order[1] != want[1] {
		t.Errorf("store saw %v, want %v", store.order, want)
	}
	if l, _ := store.Leases(); len(l) != 0 {
		t.Errorf("leases after release: %v", l)
	}
}
