package dhcp

import (
	"bytes"
	"net"
	"slices"
	"sync"
	"time"
)

// Lease is one address binding.
type Lease struct {
	MAC      net.HardwareAddr
	IP       net.IP
	Expiry   time.Time
	Hostname string // option 12 as the client sent it; untrusted
}

// LeaseStore persists leases so that a restarted server honours them.
type LeaseStore interface {
	// Leases returns all persisted leases; the server loads them at its
	// first Serve.
	Leases() ([]Lease, error)
	// PutLease stores l, replacing any lease of l.MAC. The server calls it
	// before the ACK is sent, so a lease is durable before the client is told.
	PutLease(l Lease) error
	// DeleteLease forgets the lease of mac; deleting a missing one is not an
	// error.
	DeleteLease(mac net.HardwareAddr) error
}

// LeaseQueue is implemented by lease stores whose writes are slow (an
// fsync) and can be queued. A Queue call fixes the write's place in the
// store's order at once; the returned wait blocks until the write is
// durable and must always be called. The server queues while it holds its
// lock, so the store sees writes in the order the server decided them,
// and waits after releasing it, so one client's commit holds up no other.
// A store that is not a LeaseQueue is written at wait time, one write at
// a time per MAC, and a write is skipped when a later one for its MAC was
// decided since.
type LeaseQueue interface {
	QueuePutLease(l Lease) (wait func() error)
	QueueDeleteLease(mac net.HardwareAddr) (wait func() error)
}

// MemLeases is a LeaseStore in memory, for tests and for running without
// state. The zero value is empty and ready to use.
type MemLeases struct {
	mu sync.Mutex
	m  map[string]Lease
}

// Leases returns copies of all leases, ordered by IP address.
func (s *MemLeases) Leases() ([]Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Lease, 0, len(s.m))
	for _, l := range s.m {
		out = append(out, cloneLease(l))
	}
	slices.SortFunc(out, func(a, b Lease) int { return bytes.Compare(a.IP.To16(), b.IP.To16()) })
	return out, nil
}

// PutLease stores a copy of l, replacing any lease of l.MAC.
func (s *MemLeases) PutLease(l Lease) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[string]Lease)
	}
	s.m[l.MAC.String()] = cloneLease(l)
	return nil
}

// DeleteLease forgets the lease of mac.
func (s *MemLeases) DeleteLease(mac net.HardwareAddr) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, mac.String())
	return nil
}

func cloneLease(l Lease) Lease {
	l.MAC = slices.Clone(l.MAC)
	l.IP = slices.Clone(l.IP)
	return l
}
