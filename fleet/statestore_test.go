package fleet

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/phoenixboot/phoenix/boot/httpboot"
)

// TestMigrateSchema1 opens a database as the boot slice wrote it (schema
// 1: leases, reports, discovered) and checks that it is migrated with its
// data intact, and that a newer schema is refused.
func TestMigrateSchema1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "phoenix.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range []string{"leases", "reports", "discovered", "meta"} {
			if _, err := tx.CreateBucket([]byte(b)); err != nil {
				return err
			}
		}
		if err := tx.Bucket([]byte("reports")).Put([]byte("52:54:00:00:00:01"), []byte(`{"mac":"52:54:00:00:00:01","digest":"sha256:ab","time":"2026-01-01T00:00:00Z"}`)); err != nil {
			return err
		}
		return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte("1"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	reps, err := s.Reports()
	if err != nil || reps["52:54:00:00:00:01"].Digest != "sha256:ab" {
		t.Fatalf("reports after migration: %v %v", reps, err)
	}
	if err := s.Commit(Change{Events: []Event{{Kind: "test", Message: "after migration"}}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, _ = bolt.Open(path, 0o600, nil)
	db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("schema"), []byte("99")) })
	db.Close()
	if _, err := OpenStore(path); err == nil {
		t.Fatal("a newer schema was accepted")
	}
}

func TestEventsBounded(t *testing.T) {
	s, err := OpenStoreWith(filepath.Join(t.TempDir(), "phoenix.db"), StoreOptions{NoSync: true, MaxEvents: 50})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 12 {
		var evs []Event
		for j := range 10 {
			evs = append(evs, Event{Kind: "k", Host: fmt.Sprintf("h%d", j%2), Message: fmt.Sprint(i*10 + j)})
		}
		if err := s.Commit(Change{Events: evs}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := s.Events(EventFilter{Limit: 1000})
	if err != nil || len(all) != 50 || all[0].Seq != 120 || all[49].Seq != 71 {
		t.Fatalf("%d events, newest %d, oldest %d, %v", len(all), all[0].Seq, all[len(all)-1].Seq, err)
	}
	h1, _ := s.Events(EventFilter{Host: "h1", Limit: 5})
	if len(h1) != 5 || h1[0].Message != "119" {
		t.Fatalf("host filter: %+v", h1)
	}
}

// TestStoreInterfaceRoundTrip writes every kind of record through Commit
// and reads it back.
func TestStoreInterfaceRoundTrip(t *testing.T) {
	var s StateStore
	st, err := OpenStoreWith(filepath.Join(t.TempDir(), "phoenix.db"), StoreOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s = st
	now := time.Now().UTC().Truncate(time.Millisecond)
	ch := Change{
		Hosts:        []*HostRecord{{Spec: HostSpec{Name: "a", MACs: []string{"52:54:00:00:00:01"}}, Assigned: "sha256:aa", Step: &Step{Rollout: 1, Target: "sha256:bb", Attempt: 1, Reset: ResetSending, StartedAt: now}}},
		Rollouts:     []*Rollout{{ID: 1, State: RolloutRunning, Hosts: 1, Created: now}},
		RolloutHosts: []*RolloutHost{{Rollout: 1, Name: "a", Target: "sha256:bb", Status: HostActive}},
		Revision:     &Revision{N: 1, Time: now, Digest: "sha256:cc", Hosts: 1, Data: []byte("hosts: []\n")},
		Current:      1,
	}
	if err := s.Commit(ch); err != nil {
		t.Fatal(err)
	}
	hosts, _ := s.HostRecords()
	if len(hosts) != 1 || hosts[0].Step.Reset != ResetSending || !hosts[0].Step.StartedAt.Equal(now) {
		t.Errorf("hosts %+v", hosts)
	}
	r, rh, err := s.Rollout(1)
	if err != nil || r.State != RolloutRunning || len(rh) != 1 || rh[0].Status != HostActive {
		t.Errorf("rollout %+v %+v %v", r, rh, err)
	}
	if _, _, err := s.Rollout(2); err == nil {
		t.Error("missing rollout found")
	}
	rev, err := s.Revision(1)
	if err != nil || string(rev.Data) != "hosts: []\n" {
		t.Errorf("revision %+v %v", rev, err)
	}
	if revs, _ := s.Revisions(); len(revs) != 1 || revs[0].Data != nil {
		t.Errorf("revisions %+v", revs)
	}
	if n, _ := s.CurrentRevision(); n != 1 {
		t.Errorf("current %d", n)
	}
	if err := s.Commit(Change{DeleteHosts: []string{"a"}}); err != nil {
		t.Fatal(err)
	}
	if hosts, _ := s.HostRecords(); len(hosts) != 0 {
		t.Errorf("host not deleted")
	}
	mac, _ := net.ParseMAC("52:54:00:00:00:01")
	if err := s.RecordReport(context.Background(), httpboot.Report{MAC: mac, Digest: "sha256:dd", Time: now}); err != nil {
		t.Fatal(err)
	}
}
