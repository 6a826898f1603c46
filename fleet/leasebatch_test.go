package fleet

import (
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/phoenixboot/phoenix/boot/dhcp"
)

// TestGroupCommitLeases: concurrent writes all land, and are there after
// the database is closed and reopened (each PutLease returned only once
// its batch was committed).
func TestGroupCommitLeases(t *testing.T) {
	path := filepath.Join(t.TempDir(), "phoenix.db")
	st, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	ls := st.GroupCommitLeases()
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := dhcp.Lease{MAC: net.HardwareAddr{2, 0, 0, 0, 0, byte(i)}, IP: net.IPv4(10, 0, 0, byte(10+i)).To4(), Expiry: time.Now().Add(time.Hour)}
			if err := ls.PutLease(l); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if err := ls.DeleteLease(net.HardwareAddr{2, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st, err = OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, err := st.Leases()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 49 {
		t.Errorf("%d leases after reopen, want 49", len(got))
	}
}
