package fleet

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/phoenixboot/phoenix/boot/httpboot"
)

// ErrNotFound is returned for a host, rollout or revision that does not
// exist.
var ErrNotFound = errors.New("not found")

// Reset states of a Step: what phoenix knows about the BMC reset it owes.
const (
	// ResetWaiting: a retry waits for its backoff (Step.NotBefore).
	ResetWaiting = "waiting"
	// ResetSending: the intent is committed and the BMC call is under way.
	ResetSending = "sending"
	// ResetSent: the BMC accepted the reset.
	ResetSent = "sent"
	// ResetUnknown: the server stopped while a reset was being sent; it may
	// or may not have happened, so it is never sent again for this attempt:
	// the deadline decides.
	ResetUnknown = "unknown"
	// ResetNone: the host has no BMC; phoenix waits for it to reboot.
	ResetNone = "none"
)

// Step is one host's reimage in progress: the intent, written before the
// BMC is touched.
type Step struct {
	// Rollout is the rollout the step belongs to; 0 for `host reimage`.
	Rollout   int64  `json:"rollout"`
	Target    string `json:"target"`
	TargetRef string `json:"target_ref,omitempty"`
	Reason    string `json:"reason"`
	// Attempt counts from 1; each attempt sends at most one reset.
	Attempt   int       `json:"attempt"`
	Reset     string    `json:"reset"`
	NotBefore time.Time `json:"not_before,omitzero"`
	StartedAt time.Time `json:"started_at"`
	ResetAt   time.Time `json:"reset_at,omitzero"`
	Deadline  time.Time `json:"deadline"`
	// Error is why the previous attempt failed.
	Error string `json:"error,omitempty"`
	// New says the host had no assigned image: it has been booting its
	// desired one all along, so any report of Target will do, even one
	// sent a moment before the step started.
	New bool `json:"new,omitempty"`
}

// HostRecord is the controller's durable view of one host: its spec from
// the current revision, what it is assigned, and any step in flight.
type HostRecord struct {
	Spec HostSpec `json:"spec"`
	// Assigned is the digest the host boots if it boots now: it moves to a
	// new image only when the host's step starts, so a host that reboots on
	// its own before its batch keeps its old image.
	Assigned    string `json:"assigned,omitempty"`
	AssignedRef string `json:"assigned_ref,omitempty"`
	// Desired is what the host's image reference resolved to last.
	Desired    string `json:"desired,omitempty"`
	DesiredRef string `json:"desired_ref,omitempty"`
	DesiredErr string `json:"desired_error,omitempty"`
	// Override is an image ref given to `host reimage --image`; it wins
	// over the spec until the spec's image changes.
	Override string `json:"override,omitempty"`
	// Force is a pending reason to reimage although the digest is right:
	// manual, drift or age.
	Force string `json:"force,omitempty"`
	// Hold is a target an aborted or halted rollout left unapplied; the
	// host is not reimaged to it again unless asked.
	Hold             string    `json:"hold,omitempty"`
	Quarantined      bool      `json:"quarantined,omitempty"`
	QuarantineReason string    `json:"quarantine_reason,omitempty"`
	QuarantinedAt    time.Time `json:"quarantined_at,omitzero"`
	// QuarantineEvents are the host's events when it was quarantined, kept
	// with it whatever happens to the bounded event log.
	QuarantineEvents []Event   `json:"quarantine_events,omitempty"`
	Step             *Step     `json:"step,omitempty"`
	LastFailure      string    `json:"last_failure,omitempty"`
	ReadyAt          time.Time `json:"ready_at,omitzero"`
	RefreshAt        time.Time `json:"refresh_at,omitzero"`
	DriftSeen        time.Time `json:"drift_seen,omitzero"`
}

func (h *HostRecord) clone() *HostRecord {
	cp := *h
	if h.Step != nil {
		s := *h.Step
		cp.Step = &s
	}
	return &cp
}

// Rollout states.
const (
	RolloutRunning    = "running"
	RolloutPaused     = "paused"
	RolloutHalted     = "halted"
	RolloutDone       = "done"
	RolloutAborted    = "aborted"
	RolloutSuperseded = "superseded"
)

// Rollout is one wave of reimages toward a desired state.
type Rollout struct {
	ID       int64     `json:"id"`
	State    string    `json:"state"`
	Reason   string    `json:"reason"`
	Revision int64     `json:"revision"`
	Policy   Policy    `json:"policy"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	// Hosts counts the rollout's hosts; Done and Failures those finished.
	Hosts    int `json:"hosts"`
	Done     int `json:"done"`
	Failures int `json:"failures"`
	// BudgetBase is Failures when the rollout was last resumed: the failure
	// budget counts from there.
	BudgetBase int    `json:"budget_base,omitempty"`
	Halt       string `json:"halt,omitempty"`
}

func (r *Rollout) active() bool {
	return r != nil && (r.State == RolloutRunning || r.State == RolloutPaused || r.State == RolloutHalted)
}

// Rollout host statuses.
const (
	HostPending    = "pending"
	HostActive     = "active"
	HostDone       = "done"
	HostFailed     = "failed"
	HostAborted    = "aborted"
	HostSuperseded = "superseded"
)

// RolloutHost is one host's place in a rollout.
type RolloutHost struct {
	Rollout   int64     `json:"rollout"`
	Name      string    `json:"name"`
	Order     int       `json:"order"`
	Canary    bool      `json:"canary,omitempty"`
	Target    string    `json:"target"`
	TargetRef string    `json:"target_ref,omitempty"`
	Reason    string    `json:"reason"`
	Status    string    `json:"status"`
	Attempts  int       `json:"attempts,omitempty"`
	Error     string    `json:"error,omitempty"`
	Started   time.Time `json:"started,omitzero"`
	Finished  time.Time `json:"finished,omitzero"`
}

// Event is one entry of the append-only, bounded event log.
type Event struct {
	Seq     int64     `json:"seq"`
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Host    string    `json:"host,omitempty"`
	Rollout int64     `json:"rollout,omitempty"`
	Digest  string    `json:"digest,omitempty"`
	Message string    `json:"message"`
}

// Revision is one applied fleet file.
type Revision struct {
	N      int64     `json:"n"`
	Time   time.Time `json:"time"`
	Digest string    `json:"digest"`
	Hosts  int       `json:"hosts"`
	Note   string    `json:"note,omitempty"`
	// Data is the file as applied; list calls leave it out.
	Data []byte `json:"data,omitempty"`
}

// EventFilter selects events, newest first.
type EventFilter struct {
	Host    string
	Rollout int64
	// Limit caps the answer; 0 means 100.
	Limit int
}

// Change is what one controller decision writes, all or nothing.
type Change struct {
	Hosts        []*HostRecord
	DeleteHosts  []string
	Rollouts     []*Rollout
	RolloutHosts []*RolloutHost
	// Events get their Seq when committed.
	Events   []Event
	Revision *Revision
	// Current, if not 0, makes that revision the current one.
	Current int64
}

func (c *Change) empty() bool {
	return len(c.Hosts) == 0 && len(c.DeleteHosts) == 0 && len(c.Rollouts) == 0 && len(c.RolloutHosts) == 0 &&
		len(c.Events) == 0 && c.Revision == nil && c.Current == 0
}

// StateStore is the controller's durable state. The embedded *Store
// implements it; an etcd implementation can follow for multi-server sites.
// There is one writer (the controller); Commit is atomic and durable.
type StateStore interface {
	// RecordReport and RecordDiscovered are httpboot.Recorder.
	RecordReport(ctx context.Context, r httpboot.Report) error
	RecordDiscovered(ctx context.Context, mac net.HardwareAddr, remoteAddr string) error
	Reports() (map[string]Report, error)
	HostRecords() ([]HostRecord, error)
	// Rollouts returns rollout headers, newest first.
	Rollouts() ([]Rollout, error)
	Rollout(id int64) (Rollout, []RolloutHost, error)
	Events(f EventFilter) ([]Event, error)
	// Revisions returns revisions without their data, newest first.
	Revisions() ([]Revision, error)
	Revision(n int64) (Revision, error)
	CurrentRevision() (int64, error)
	Commit(c Change) error
}

var _ StateStore = (*Store)(nil)

// Buckets added by schema 2.
var (
	bucketHosts        = []byte("fleet_hosts")
	bucketRollouts     = []byte("rollouts")
	bucketRolloutHosts = []byte("rollout_hosts")
	bucketEvents       = []byte("events")
	bucketRevisions    = []byte("revisions")
	keyCurrentRevision = []byte("revision")
	keyEventSeq        = []byte("event_seq")
)

// migrations upgrade the database one schema version at a time:
// migrations[i] takes version i+1 to i+2. They run in the same transaction
// as the version bump, so a crash leaves the old schema intact.
var migrations = []func(tx *bolt.Tx) error{
	// 1 → 2: the fleet controller's hosts, rollouts, events and revisions.
	func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketHosts, bucketRollouts, bucketRolloutHosts, bucketEvents, bucketRevisions} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	},
	// 2 → 3: the lease journal. An older phoenix would not read it and
	// could hand out addresses the journal holds, hence the version.
	func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketLeaseLog)
		return err
	},
}

// DefaultMaxEvents bounds the event log; the oldest events go first.
const DefaultMaxEvents = 100_000

func itob(v int64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, uint64(v))
	return b
}

func btoi(b []byte) int64 { return int64(binary.BigEndian.Uint64(b)) }

// HostRecords returns every host the controller knows, sorted by name.
func (s *Store) HostRecords() ([]HostRecord, error) {
	var out []HostRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketHosts).ForEach(func(k, v []byte) error {
			var h HostRecord
			if err := json.Unmarshal(v, &h); err != nil {
				return fmt.Errorf("host %s: %w", k, err)
			}
			out = append(out, h)
			return nil
		})
	})
	return out, err
}

// Rollouts returns rollout headers, newest first.
func (s *Store) Rollouts() ([]Rollout, error) {
	out := []Rollout{}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRollouts).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			var r Rollout
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("rollout %d: %w", btoi(k), err)
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// Rollout returns one rollout and its hosts in rollout order.
func (s *Store) Rollout(id int64) (Rollout, []RolloutHost, error) {
	var r Rollout
	hosts := []RolloutHost{}
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRollouts).Get(itob(id))
		if v == nil {
			return fmt.Errorf("rollout %d: %w", id, ErrNotFound)
		}
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("rollout %d: %w", id, err)
		}
		prefix := itob(id)
		c := tx.Bucket(bucketRolloutHosts).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			var h RolloutHost
			if err := json.Unmarshal(v, &h); err != nil {
				return fmt.Errorf("rollout %d host %s: %w", id, k[8:], err)
			}
			hosts = append(hosts, h)
		}
		return nil
	})
	sort.Slice(hosts, func(i, j int) bool { return hosts[i].Order < hosts[j].Order })
	return r, hosts, err
}

// Events returns matching events, newest first.
func (s *Store) Events(f EventFilter) ([]Event, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	out := []Event{}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			var e Event
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("event %d: %w", btoi(k), err)
			}
			if (f.Host != "" && e.Host != f.Host) || (f.Rollout != 0 && e.Rollout != f.Rollout) {
				continue
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// Revisions returns the applied fleet files without their data, newest first.
func (s *Store) Revisions() ([]Revision, error) {
	out := []Revision{}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRevisions).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			var r Revision
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("revision %d: %w", btoi(k), err)
			}
			r.Data = nil
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// Revision returns revision n with its data.
func (s *Store) Revision(n int64) (Revision, error) {
	var r Revision
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRevisions).Get(itob(n))
		if v == nil {
			return fmt.Errorf("revision %d: %w", n, ErrNotFound)
		}
		return json.Unmarshal(v, &r)
	})
	return r, err
}

// CurrentRevision returns the number of the applied revision, 0 if none.
func (s *Store) CurrentRevision() (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyCurrentRevision); len(v) == 8 {
			n = btoi(v)
		}
		return nil
	})
	return n, err
}

// Commit writes c in one transaction, durably.
func (s *Store) Commit(c Change) error {
	if c.empty() {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		hb := tx.Bucket(bucketHosts)
		for _, h := range c.Hosts {
			v, err := json.Marshal(h)
			if err != nil {
				return err
			}
			if err := hb.Put([]byte(h.Spec.Name), v); err != nil {
				return err
			}
		}
		for _, name := range c.DeleteHosts {
			if err := hb.Delete([]byte(name)); err != nil {
				return err
			}
		}
		rb := tx.Bucket(bucketRollouts)
		for _, r := range c.Rollouts {
			v, err := json.Marshal(r)
			if err != nil {
				return err
			}
			if err := rb.Put(itob(r.ID), v); err != nil {
				return err
			}
		}
		rhb := tx.Bucket(bucketRolloutHosts)
		for _, h := range c.RolloutHosts {
			v, err := json.Marshal(h)
			if err != nil {
				return err
			}
			if err := rhb.Put(append(itob(h.Rollout), h.Name...), v); err != nil {
				return err
			}
		}
		if c.Revision != nil {
			v, err := json.Marshal(c.Revision)
			if err != nil {
				return err
			}
			if err := tx.Bucket(bucketRevisions).Put(itob(c.Revision.N), v); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if c.Current != 0 {
			if err := meta.Put(keyCurrentRevision, itob(c.Current)); err != nil {
				return err
			}
		}
		if len(c.Events) > 0 {
			return s.appendEvents(tx, c.Events)
		}
		return nil
	})
}

// appendEvents stores events under increasing sequence numbers and drops
// the oldest beyond the cap.
func (s *Store) appendEvents(tx *bolt.Tx, events []Event) error {
	meta, eb := tx.Bucket(bucketMeta), tx.Bucket(bucketEvents)
	var seq int64
	if v := meta.Get(keyEventSeq); len(v) == 8 {
		seq = btoi(v)
	}
	for _, e := range events {
		seq++
		e.Seq = seq
		v, err := json.Marshal(e)
		if err != nil {
			return err
		}
		if err := eb.Put(itob(seq), v); err != nil {
			return err
		}
	}
	if err := meta.Put(keyEventSeq, itob(seq)); err != nil {
		return err
	}
	limit := int64(s.maxEvents)
	if limit <= 0 {
		limit = DefaultMaxEvents
	}
	c := eb.Cursor()
	// Keys are contiguous (only the oldest are ever deleted), so the count
	// is last-first+1.
	for k, _ := c.First(); k != nil && seq-btoi(k)+1 > limit; k, _ = c.Next() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}
