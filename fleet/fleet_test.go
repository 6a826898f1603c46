package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/phoenixboot/phoenix/boot/dhcp"
	"github.com/phoenixboot/phoenix/boot/httpboot"
)

func TestMountinfo(t *testing.T) {
	info := `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:35 / /srv/phoenix\040state rw,relatime shared:2 - ext4 /dev/vdb rw
41 22 0:36 / /srv/tab\011 rw,relatime shared:3 - ext4 /dev/vdc rw
`
	for dir, want := range map[string]bool{"/": true, "/srv/phoenix state": true, "/srv": false, "/srv/phoenix": false, "/srv/tab\t": true} {
		got, err := mountinfoHas(strings.NewReader(info), dir)
		if err != nil || got != want {
			t.Errorf("mountinfoHas(%q) = %v, %v; want %v", dir, got, err, want)
		}
	}
}

func TestOpenState(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenState(dir, false, nil); !errors.Is(err, ErrNotMount) {
		t.Fatalf("not a mount: err = %v", err)
	}
	st, err := OpenState(dir, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenState(dir, true, nil); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: err = %v, want ErrLocked", err)
	}
	for _, sub := range []string{"images", "logs", "tmp", "LOCK"} {
		if _, err := os.Stat(filepath.Join(dir, sub)); err != nil {
			t.Error(err)
		}
	}
	st.Close()
	st2, err := OpenState(dir, true, nil)
	if err != nil {
		t.Fatalf("reopen after close: %v", err)
	}
	st2.Close()
	if _, err := OpenState(filepath.Join(dir, "nope"), true, nil); err == nil {
		t.Fatal("missing dir accepted")
	}
}

func TestStorePersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "phoenix.db")
	s, err := OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	mac, _ := net.ParseMAC("52:54:00:00:00:07")
	exp := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	if err := s.PutLease(dhcp.Lease{MAC: mac, IP: net.IPv4(10, 0, 0, 7).To4(), Expiry: exp}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.RecordReport(ctx, httpboot.Report{MAC: mac, Digest: "sha256:ab", Time: exp}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordDiscovered(ctx, mac, "10.0.0.7:1234"); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = OpenStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	leases, err := s.Leases()
	if err != nil || len(leases) != 1 || !leases[0].IP.Equal(net.IPv4(10, 0, 0, 7)) || !leases[0].Expiry.Equal(exp) {
		t.Fatalf("leases after reopen = %+v, %v", leases, err)
	}
	reps, err := s.Reports()
	if err != nil || reps[mac.String()].Digest != "sha256:ab" {
		t.Fatalf("reports = %+v, %v", reps, err)
	}
	d, err := s.DiscoveredMACs()
	if err != nil || len(d) != 1 {
		t.Fatalf("discovered = %+v, %v", d, err)
	}
	if err := s.DeleteLease(mac); err != nil {
		t.Fatal(err)
	}
	if leases, _ := s.Leases(); len(leases) != 0 {
		t.Fatalf("lease not deleted: %+v", leases)
	}
}

// TestDiscoveredBounded: made-up MACs asking for scripts fill the
// discovered list only up to its cap, and a MAC asking again within a
// minute costs no write.
func TestDiscoveredBounded(t *testing.T) {
	s, err := OpenStoreWith(filepath.Join(t.TempDir(), "phoenix.db"), StoreOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for i := range maxDiscovered {
		mac := net.HardwareAddr{0x52, 0x54, 0, 0, byte(i >> 8), byte(i)}
		if err := s.RecordDiscovered(ctx, mac, "10.0.0.7:1234"); err != nil {
			t.Fatalf("MAC %d: %v", i, err)
		}
	}
	if err := s.RecordDiscovered(ctx, net.HardwareAddr{0x52, 0x54, 1, 0, 0, 0}, "10.0.0.8:1"); !errors.Is(err, ErrDiscoveredFull) {
		t.Errorf("MAC beyond the cap: %v, want ErrDiscoveredFull", err)
	}
	first := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0}
	before, _ := s.DiscoveredMACs()
	if err := s.RecordDiscovered(ctx, first, "10.0.0.7:1234"); err != nil {
		t.Errorf("known MAC with a full list: %v", err)
	}
	after, _ := s.DiscoveredMACs()
	if len(after) != maxDiscovered || !slices.Equal(before, after) {
		t.Errorf("a repeat within a minute changed the list (%d entries)", len(after))
	}
	// An entry not seen for over a week makes room for a new MAC (the
	// failed attempt above pruned a minute ago: pretend it was earlier).
	stale, _ := json.Marshal(Discovered{MAC: first.String(), LastSeen: time.Now().Add(-8 * 24 * time.Hour)})
	s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketDiscovered).Put([]byte(first.String()), stale) })
	s.lastPrune.Store(0)
	if err := s.RecordDiscovered(ctx, net.HardwareAddr{0x52, 0x54, 1, 0, 0, 0}, "10.0.0.8:1"); err != nil {
		t.Errorf("new MAC once a stale one can go: %v", err)
	}
}

// TestReportsBounded: reports of made-up MACs fill the store only up to
// its limit; a MAC already kept still gets its newer report recorded.
func TestReportsBounded(t *testing.T) {
	defer func(n int) { maxReports = n }(maxReports)
	maxReports = 50
	s, err := OpenStoreWith(filepath.Join(t.TempDir(), "phoenix.db"), StoreOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	report := func(i int, digest string) error {
		return s.RecordReport(ctx, httpboot.Report{MAC: net.HardwareAddr{0x52, 0x54, 0, 0, 0, byte(i)}, Digest: digest, Time: time.Now()})
	}
	for i := range maxReports {
		if err := report(i, "sha256:a"); err != nil {
			t.Fatal(err)
		}
	}
	if err := report(maxReports, "sha256:a"); !errors.Is(err, ErrReportsFull) {
		t.Errorf("report of a new MAC beyond the limit: %v, want ErrReportsFull", err)
	}
	if err := report(0, "sha256:b"); err != nil {
		t.Errorf("newer report of a kept MAC: %v", err)
	}
	if reps, _ := s.Reports(); len(reps) != maxReports || reps["52:54:00:00:00:00"].Digest != "sha256:b" {
		t.Errorf("%d reports kept, first %+v", len(reps), reps["52:54:00:00:00:00"])
	}
}
