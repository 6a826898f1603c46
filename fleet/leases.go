package fleet

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/phoenixboot/phoenix/boot/dhcp"
)

// DHCP leases live in two buckets: "leases", keyed by MAC, and the
// "lease-log" journal, keyed by a sequence number, of the writes not yet
// folded into it. A write appends to the journal: under a boot storm each
// commit then adds a page or two at the journal's end instead of
// rewriting pages all over the MAC-keyed tree, which is what bounds the
// lease rate a disk sustains. The journal is folded into "leases" when
// the store opens, when writes pause, and in slices once it grows long.
// Readers replay it over "leases" (Leases).
var bucketLeaseLog = []byte("lease-log")

// Journal folding: after a commit, fold when the journal holds foldQuiet
// entries and no write is waiting, or foldForce entries whatever the
// load; at most foldSlice entries per transaction, so no single fold
// holds the writers up for long. A folded entry costs a random page write
// (about 35 µs on the lab's disk): a slice of 8192 held the commits, and
// so the DHCP answers, for about 300 ms, and the server's socket buffer
// overflowed at 14,000 DORA/s.
const (
	foldQuiet = 4096
	foldForce = 65536
	foldSlice = 1024
)

// minCommitGap spaces lease commits under load. A commit costs CPU for
// its page writes and fsync whatever its size, so back-to-back tiny
// commits would take the CPU the DHCP answers need; a leader that comes
// sooner than this after the previous commit waits out the rest,
// collecting the writes that arrive meanwhile. After a quiet spell it
// commits at once.
const minCommitGap = 2 * time.Millisecond

// leaseRecord is the stored form of a DHCP lease; in the journal, Deleted
// marks a removal.
type leaseRecord struct {
	MAC      string    `json:"mac"`
	IP       string    `json:"ip,omitempty"`
	Expiry   time.Time `json:"expiry,omitzero"`
	Hostname string    `json:"hostname,omitempty"`
	Deleted  bool      `json:"deleted,omitempty"`
}

// Leases returns every stored lease (dhcp.LeaseStore).
func (s *Store) Leases() ([]dhcp.Lease, error) {
	var out []dhcp.Lease
	err := s.db.View(func(tx *bolt.Tx) error {
		recs := map[string]leaseRecord{}
		var order []string
		add := func(r leaseRecord) {
			if _, seen := recs[r.MAC]; !seen {
				order = append(order, r.MAC)
			}
			recs[r.MAC] = r
		}
		if err := forEachLease(tx.Bucket(bucketLeases), add); err != nil {
			return err
		}
		if err := forEachLease(tx.Bucket(bucketLeaseLog), add); err != nil {
			return err
		}
		for _, k := range order {
			r := recs[k]
			if r.Deleted {
				continue
			}
			mac, err := net.ParseMAC(r.MAC)
			if err != nil {
				return fmt.Errorf("lease %q: %w", r.MAC, err)
			}
			out = append(out, dhcp.Lease{MAC: mac, IP: net.ParseIP(r.IP).To4(), Expiry: r.Expiry, Hostname: r.Hostname})
		}
		return nil
	})
	return out, err
}

func forEachLease(b *bolt.Bucket, fn func(leaseRecord)) error {
	return b.ForEach(func(k, v []byte) error {
		var r leaseRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("lease record %x: %w", k, err)
		}
		fn(r)
		return nil
	})
}

// PutLease stores l durably (dhcp.LeaseStore). Concurrent calls share
// one commit (groupCommit); each returns once its write is committed, so
// the DHCP server acknowledges only durable leases.
func (s *Store) PutLease(l dhcp.Lease) error { return s.QueuePutLease(l)() }

// DeleteLease forgets the lease of mac, durably (dhcp.LeaseStore).
func (s *Store) DeleteLease(mac net.HardwareAddr) error { return s.QueueDeleteLease(mac)() }

// QueuePutLease queues l's write and returns the wait for its commit
// (dhcp.LeaseQueue).
func (s *Store) QueuePutLease(l dhcp.Lease) (wait func() error) {
	return s.leases.queue(s.db, leaseRecord{MAC: l.MAC.String(), IP: l.IP.String(), Expiry: l.Expiry, Hostname: l.Hostname})
}

// QueueDeleteLease queues the removal of mac's lease and returns the wait
// for its commit (dhcp.LeaseQueue).
func (s *Store) QueueDeleteLease(mac net.HardwareAddr) (wait func() error) {
	return s.leases.queue(s.db, leaseRecord{MAC: mac.String(), Deleted: true})
}

// groupCommit commits queued lease writes in batches. The writer that
// finds no commit under way leads: it commits every write queued by then
// (waiting first, if the previous commit began less than minCommitGap
// ago), and the writes that arrive while it commits are the next batch,
// so the batch size follows the disk. A leader leads for one batch only
// and hands the lead to the first writer still queued, so no writer
// waits on more than one commit besides its own. (bbolt's DB.Batch waits
// a fixed delay and, under load, queues many small batches behind its
// writer lock, each paying a full commit.)
type groupCommit struct {
	mu   sync.Mutex
	ops  []*leaseOp
	busy bool // a leader is committing, or the lead is being handed over
	// last is when the latest commit began; only the leader touches it.
	last time.Time
}

// leaseOp is one queued write.
type leaseOp struct {
	rec  leaseRecord
	done chan opResult
}

type opResult struct {
	err  error
	lead bool // not done: commit the queue (which holds this op) instead
}

// queue appends rec to the queue; the returned wait blocks until it is
// committed, and commits the queue itself if this write leads. Every
// wait must be called: a lead handed to a write nobody waits for would
// stall the queue.
func (g *groupCommit) queue(db *bolt.DB, rec leaseRecord) (wait func() error) {
	op := &leaseOp{rec: rec, done: make(chan opResult, 1)}
	g.mu.Lock()
	g.ops = append(g.ops, op)
	lead := !g.busy
	g.busy = true
	g.mu.Unlock()
	return func() error {
		if !lead {
			if r := <-op.done; !r.lead {
				return r.err
			}
		}
		return g.commit(db, op)
	}
}

// commit is the leader's part: it commits the queue, which holds op, and
// hands the lead on.
func (g *groupCommit) commit(db *bolt.DB, op *leaseOp) error {
	if wait := minCommitGap - time.Since(g.last); wait > 0 {
		time.Sleep(wait)
	}
	g.last = time.Now()
	g.mu.Lock()
	batch := g.ops
	g.ops = nil
	g.mu.Unlock()

	var journal uint64
	err := db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLeaseLog)
		// Appends only: full pages, not half-empty ones after splits.
		b.FillPercent = 1.0
		for _, o := range batch {
			v, err := json.Marshal(o.rec)
			if err != nil {
				return err
			}
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			if err := b.Put(binary.BigEndian.AppendUint64(nil, seq), v); err != nil {
				return err
			}
		}
		// Entries leave from the front only, so the keys are contiguous.
		if first, _ := b.Cursor().First(); first != nil {
			journal = b.Sequence() - binary.BigEndian.Uint64(first) + 1
		}
		return nil
	})
	for _, o := range batch {
		if o != op {
			o.done <- opResult{err: err}
		}
	}
	g.mu.Lock()
	idle := len(g.ops) == 0
	g.mu.Unlock()
	// Folding is the leader's too: it is the only writer now.
	if err == nil && (journal >= foldForce || (idle && journal >= foldQuiet)) {
		// A failed fold loses nothing: the journal stays and is replayed.
		_ = db.Update(func(tx *bolt.Tx) error { return foldLeases(tx, foldSlice) })
	}
	g.mu.Lock()
	if len(g.ops) > 0 {
		next := g.ops[0]
		g.mu.Unlock()
		next.done <- opResult{lead: true}
	} else {
		g.busy = false
		g.mu.Unlock()
	}
	return err
}

// foldLeases applies up to max of the oldest journal entries (all, if max
// is 0) to the MAC-keyed bucket and removes them from the journal.
func foldLeases(tx *bolt.Tx, max int) error {
	leases, log := tx.Bucket(bucketLeases), tx.Bucket(bucketLeaseLog)
	var done [][]byte
	c := log.Cursor()
	for k, v := c.First(); k != nil && (max == 0 || len(done) < max); k, v = c.Next() {
		var r leaseRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("lease journal %x: %w", k, err)
		}
		var err error
		if r.Deleted {
			err = leases.Delete([]byte(r.MAC))
		} else {
			err = leases.Put([]byte(r.MAC), v) // a put's record has no "deleted"
		}
		if err != nil {
			return err
		}
		done = append(done, bytes.Clone(k))
	}
	for _, k := range done {
		if err := log.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
