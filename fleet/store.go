package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/phoenixboot/phoenix/boot/httpboot"
)

// Bucket names in phoenix.db. Keys are lowercase colon MACs.
var (
	bucketLeases     = []byte("leases")
	bucketReports    = []byte("reports")
	bucketDiscovered = []byte("discovered")
	bucketMeta       = []byte("meta")
)

// schemaVersion is stored in the meta bucket; older databases are brought
// up to it by migrations (statestore.go) when opened.
var schemaVersion = len(migrations) + 1

// Store is phoenix's embedded transactional state (bbolt): leases, reports,
// discovered MACs and the fleet controller's hosts, rollouts, events and
// revisions (StateStore). Every write is committed (fsynced) before the
// caller is answered, so a killed server loses nothing it acknowledged.
type Store struct {
	db        *bolt.DB
	maxEvents int
	// leases group-commits DHCP lease writes (leases.go).
	leases groupCommit
	// lastPrune is when the full discovered list was last pruned (Unix
	// nanoseconds), so that a flood of new MACs scans it once a minute.
	lastPrune atomic.Int64
}

// StoreOptions tune OpenStoreWith.
type StoreOptions struct {
	// NoSync skips fsync on commit: for tests and benchmarks only, since a
	// crash of the machine may then lose acknowledged writes.
	NoSync bool
	// MaxEvents bounds the event log; 0 means DefaultMaxEvents.
	MaxEvents int
}

// OpenStore opens or creates the database at path, migrating an older
// schema.
func OpenStore(path string) (*Store, error) {
	return OpenStoreWith(path, StoreOptions{})
}

// OpenStoreWith is OpenStore with options.
func OpenStoreWith(path string, o StoreOptions) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: 2 * time.Second,
		// Mapping room for a large fleet up front saves remapping (and
		// copying) while a 10,000-host apply commits.
		InitialMmapSize: 64 << 20,
		// The free list is rebuilt when the database opens instead of
		// being written with every commit.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		NoSync:         o.NoSync,
	})
	if err != nil {
		return nil, fmt.Errorf("state db %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketLeases, bucketReports, bucketDiscovered, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		version := 1
		if v := meta.Get([]byte("schema")); v != nil {
			if version, err = strconv.Atoi(string(v)); err != nil {
				return fmt.Errorf("schema version %q: %w", v, err)
			}
		}
		if version > schemaVersion {
			return fmt.Errorf("schema version %d is newer than this phoenix understands (%d)", version, schemaVersion)
		}
		for ; version < schemaVersion; version++ {
			if err := migrations[version-1](tx); err != nil {
				return fmt.Errorf("migrate schema %d to %d: %w", version, version+1, err)
			}
		}
		if err := meta.Put([]byte("schema"), []byte(strconv.Itoa(schemaVersion))); err != nil {
			return err
		}
		// Start with an empty lease journal (leases.go).
		return foldLeases(tx, 0)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("state db %s: %w", path, err)
	}
	return &Store{db: db, maxEvents: o.MaxEvents}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Report is a stored phone-home report.
type Report struct {
	MAC        string    `json:"mac"`
	Host       string    `json:"host,omitempty"`
	Digest     string    `json:"digest"`
	BootID     string    `json:"boot_id,omitempty"`
	RemoteAddr string    `json:"remote_addr,omitempty"`
	Time       time.Time `json:"time"`
	// Error is set on a failure report, which is never stored (see
	// Controller.RecordReport).
	Error string `json:"error,omitempty"`
}

// RecordReport stores the latest report of a MAC (httpboot.Recorder).
func (s *Store) RecordReport(_ context.Context, r httpboot.Report) error {
	if r.Error != "" {
		return nil // a failure is not what the host runs
	}
	v, err := json.Marshal(Report{MAC: r.MAC.String(), Host: r.Host, Digest: r.Digest, BootID: r.BootID, RemoteAddr: r.RemoteAddr, Time: r.Time})
	if err != nil {
		return err
	}
	key := []byte(r.MAC.String())
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketReports)
		if b.Get(key) == nil && b.Stats().KeyN >= maxReports {
			return ErrReportsFull
		}
		return b.Put(key, v)
	})
}

// maxReports bounds the MACs whose latest report is kept: anyone who can
// reach the HTTP port may post reports, for made-up MACs too. It is far
// above any fleet's MAC count (a variable for tests).
var maxReports = 65536

// ErrReportsFull is returned by RecordReport for a MAC not seen before
// when the reports of maxReports MACs are kept already.
var ErrReportsFull = errors.New("reports: the limit of MACs kept is reached; a report of a new MAC is not recorded")

// Discovered is an unknown MAC that asked for a boot script.
type Discovered struct {
	MAC        string    `json:"mac"`
	RemoteAddr string    `json:"remote_addr,omitempty"`
	FirstSeen  time.Time `json:"first_seen"`
	LastSeen   time.Time `json:"last_seen"`
}

// Limits of the discovered list. Anyone on the boot network can ask for
// scripts for made-up MACs, and each new entry is a synchronous database
// write that competes with the DHCP leases' commits for the one writer.
const (
	// maxDiscovered bounds the entries. When the list is full, entries
	// not seen for discoveredKeep make room; a MAC beyond it is not
	// recorded.
	maxDiscovered  = 4096
	discoveredKeep = 7 * 24 * time.Hour
	// discoveredRefresh is how stale LastSeen may get before a request
	// from a known MAC writes it again (iPXE retries an unknown host's
	// script every few seconds).
	discoveredRefresh = time.Minute
)

// ErrDiscoveredFull is returned by RecordDiscovered for a new MAC when the
// discovered list already holds maxDiscovered entries.
var ErrDiscoveredFull = fmt.Errorf("discovered MACs: list full (%d entries); not recorded", maxDiscovered)

// RecordDiscovered registers an unknown MAC (httpboot.Recorder). A MAC
// seen within discoveredRefresh costs a read only.
func (s *Store) RecordDiscovered(_ context.Context, mac net.HardwareAddr, remoteAddr string) error {
	now := time.Now().UTC()
	key := []byte(mac.String())
	d := Discovered{MAC: mac.String(), RemoteAddr: remoteAddr, FirstSeen: now, LastSeen: now}
	write := true
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDiscovered)
		old := b.Get(key)
		if old == nil {
			if b.Stats().KeyN >= maxDiscovered {
				return ErrDiscoveredFull
			}
			return nil
		}
		var prev Discovered
		if json.Unmarshal(old, &prev) == nil {
			d.FirstSeen = prev.FirstSeen
			write = prev.RemoteAddr != remoteAddr || now.Sub(prev.LastSeen) >= discoveredRefresh
		}
		return nil
	})
	if errors.Is(err, ErrDiscoveredFull) && s.pruneDiscovered(now) {
		err = nil
	}
	if err != nil || !write {
		return err
	}
	v, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDiscovered).Put(key, v)
	})
}

// pruneDiscovered drops discovered MACs not seen for discoveredKeep, at
// most once a minute, and reports whether that made room.
func (s *Store) pruneDiscovered(now time.Time) bool {
	last := s.lastPrune.Load()
	if now.UnixNano()-last < int64(time.Minute) || !s.lastPrune.CompareAndSwap(last, now.UnixNano()) {
		return false
	}
	room := false
	s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDiscovered)
		var stale [][]byte
		b.ForEach(func(k, v []byte) error {
			var d Discovered
			if json.Unmarshal(v, &d) != nil || now.Sub(d.LastSeen) > discoveredKeep {
				stale = append(stale, slices.Clone(k))
			}
			return nil
		})
		for _, k := range stale {
			b.Delete(k)
		}
		room = len(stale) > 0
		return nil
	})
	return room
}

// Reports returns the latest report of every MAC, keyed by MAC.
func (s *Store) Reports() (map[string]Report, error) {
	out := map[string]Report{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketReports).ForEach(func(k, v []byte) error {
			var r Report
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("report %s: %w", k, err)
			}
			out[string(k)] = r
			return nil
		})
	})
	return out, err
}

// DiscoveredMACs returns the unknown MACs seen, sorted by MAC.
func (s *Store) DiscoveredMACs() ([]Discovered, error) {
	out := []Discovered{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDiscovered).ForEach(func(k, v []byte) error {
			var d Discovered
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("discovered %s: %w", k, err)
			}
			out = append(out, d)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].MAC < out[j].MAC })
	return out, err
}
