package fleet

import (
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/phoenixboot/phoenix/boot/dhcp"
)

func testLease(i int, ip byte) dhcp.Lease {
	return dhcp.Lease{MAC: net.HardwareAddr{2, 0, 0, 0, byte(i >> 8), byte(i)}, IP: net.IPv4(10, 0, byte(i>>8), ip).To4(), Expiry: time.Now().Add(time.Hour).Round(0)}
}

// TestLeaseGroupCommit: concurrent writes all land, and are there after the
// database is closed and reopened (each PutLease returned only once its
// batch was committed); later writes win over earlier ones, across the
// journal and the folded bucket alike.
func TestLeaseGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "phoenix.db")
	st, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	// More than foldQuiet writes, so a fold happens along the way.
	const n = foldQuiet + 500
	var wg sync.WaitGroup
	for w := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 50 {
				if err := st.PutLease(testLease(i, 1)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Rewrite one lease, delete another: the latest record decides.
	if err := st.PutLease(testLease(7, 99)); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteLease(testLease(0, 1).MAC); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		got, err := st.Leases()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != n-1 {
			t.Errorf("%s: %d leases, want %d", when, len(got), n-1)
		}
		for _, l := range got {
			switch l.MAC.String() {
			case testLease(0, 1).MAC.String():
				t.Errorf("%s: deleted lease %s still there", when, l.MAC)
			case testLease(7, 1).MAC.String():
				if !l.IP.Equal(net.IPv4(10, 0, 0, 99)) {
					t.Errorf("%s: lease %s has %s, want the rewrite's 10.0.0.99", when, l.MAC, l.IP)
				}
			}
		}
	}
	check("before reopen")
	journal := func() int {
		var k int
		st.db.View(func(tx *bolt.Tx) error { k = tx.Bucket(bucketLeaseLog).Stats().KeyN; return nil })
		return k
	}
	if j := journal(); j >= n {
		t.Errorf("journal holds %d entries after %d writes: never folded", j, n)
	}
	st.Close()
	if st, err = OpenStore(path); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	check("after reopen")
	if j := journal(); j != 0 {
		t.Errorf("journal holds %d entries after open, want 0 (folded)", j)
	}
}
