package fleet

import (
	"encoding/json"
	"net"

	bolt "go.etcd.io/bbolt"

	"github.com/phoenixboot/phoenix/boot/dhcp"
)

// GroupCommitLeases returns the store as a dhcp.LeaseStore whose writes
// are group-committed: concurrent PutLease and DeleteLease calls share one
// bbolt transaction, and so one pair of fsyncs (bolt's DB.Batch). Each call
// still returns only after the transaction holding its write is committed,
// so a lease is durable before the DHCP server acknowledges it. The price
// is latency: a lone write waits up to bolt's MaxBatchDelay (10 ms) for
// company. Under a boot storm that is what lets one disk commit thousands
// of leases per second instead of one per fsync.
func (s *Store) GroupCommitLeases() dhcp.LeaseStore { return groupLeases{s} }

type groupLeases struct{ s *Store }

func (g groupLeases) Leases() ([]dhcp.Lease, error) { return g.s.Leases() }

// PutLease stores l durably. Batch may run the function twice (alone,
// after a failed batch); Put is idempotent.
func (g groupLeases) PutLease(l dhcp.Lease) error {
	v, err := json.Marshal(leaseRecord{MAC: l.MAC.String(), IP: l.IP.String(), Expiry: l.Expiry, Hostname: l.Hostname})
	if err != nil {
		return err
	}
	return g.s.db.Batch(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLeases).Put([]byte(l.MAC.String()), v)
	})
}

func (g groupLeases) DeleteLease(mac net.HardwareAddr) error {
	return g.s.db.Batch(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLeases).Delete([]byte(mac.String()))
	})
}
