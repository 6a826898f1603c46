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
