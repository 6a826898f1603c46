package images

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The performance goals, checked by tests that need an opt-in
// (they write gigabytes): `make bench` or
//
//	PHOENIX_PERF=1 go test ./images -run 'TestPerf' -v

func perfOnly(t *testing.T) {
	if os.Getenv("PHOENIX_PERF") == "" {
		t.Skip("set PHOENIX_PERF=1: writes a few GiB and takes a while")
	}
}

func writePattern(t testing.TB, path string, size int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	for i := 0; i < size/len(chunk); i++ {
		chunk[0], chunk[1] = byte(i), byte(i>>8)
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPerfHashVsSha256sum: import hashing throughput must be at least
// 0.8x sha256sum's on the same file in the same run. Both read a file the
// page cache holds; the import also writes and fsyncs its copy, so two
// figures are printed: hashing as the import does it (same reader, buffer
// and hash, no write) and the whole import.
func TestPerfHashVsSha256sum(t *testing.T) {
	perfOnly(t)
	if _, err := exec.LookPath("sha256sum"); err != nil {
		t.Skip("no sha256sum")
	}
	const size = 512 << 20
	src := filepath.Join(t.TempDir(), "rootfs")
	writePattern(t, src, size)
	s, _, _ := newStore(t)

	best := func(f func()) time.Duration {
		var b time.Duration
		for i := range 3 {
			start := time.Now()
			f()
			if d := time.Since(start); i == 0 || d < b {
				b = d
			}
		}
		return b
	}
	sum := best(func() {
		if out, err := exec.Command("sha256sum", src).CombinedOutput(); err != nil {
			t.Fatalf("sha256sum: %v %s", err, out)
		}
	})
	buf := make([]byte, copyBufSize)
	hash := best(func() {
		if _, _, err := hashFile(src, buf); err != nil {
			t.Fatal(err)
		}
	})
	n := 0
	imp := best(func() {
		n++
		if _, err := s.Import(context.Background(), ImportSpec{Name: "perf", Version: strconv.Itoa(n), Files: map[string]string{RoleRootfs: src, RoleKernel: src}}); err != nil {
			t.Fatal(err)
		}
	})
	mbps := func(d time.Duration) float64 { return float64(size) / d.Seconds() / (1 << 20) }
	hashRatio := sum.Seconds() / hash.Seconds()
	// The import reads the file twice (kernel and rootfs roles) and
	// writes it once (dedupe): per-byte-hashed it hashes 2*size.
	impRatio := sum.Seconds() / (imp.Seconds() / 2)
	t.Logf("sha256sum %.0f MiB/s; import hashing %.0f MiB/s (%.2fx); whole import incl. write+fsync %.0f MiB/s hashed (%.2fx)",
		mbps(sum), mbps(hash), hashRatio, 2*mbps(imp), impRatio)
	if hashRatio < 0.8 {
		t.Errorf("import hashing is %.2fx sha256sum, want >= 0.8x", hashRatio)
	}
}

// TestPerfImportRSS: importing a 2 GiB disk image keeps the process's peak
// RSS (VmHWM) under 64 MiB. It runs in a child process so earlier tests'
// memory does not count.
func TestPerfImportRSS(t *testing.T) {
	perfOnly(t)
	if os.Getenv("PHOENIX_PERF_CHILD") == "" {
		c := exec.Command(os.Args[0], "-test.run=^TestPerfImportRSS$", "-test.v")
		c.Env = append(os.Environ(), "PHOENIX_PERF_CHILD=1")
		out, err := c.CombinedOutput()
		t.Logf("child:\n%s", out)
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	const size = 2 << 30
	src := filepath.Join(t.TempDir(), "disk.raw")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	// Sparse: cheap to make, yet every byte is read, hashed and written.
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s, _, _ := newStore(t)
	start := time.Now()
	img, err := s.Import(context.Background(), ImportSpec{Name: "big", Version: "1", Mode: ModeDisk,
		Files: map[string]string{RoleKernel: src, RoleDisk: src}})
	if err != nil {
		t.Fatal(err)
	}
	hwm := vmHWM(t)
	t.Logf("imported %s (2 x 2 GiB read, dedupe) in %v; peak RSS %d MiB", img.Digest, time.Since(start), hwm>>20)
	if hwm >= 64<<20 {
		t.Errorf("peak RSS %d MiB, want < 64 MiB", hwm>>20)
	}
}

func vmHWM(t *testing.T) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb)
			return kb << 10
		}
	}
	t.Skip("no VmHWM")
	return 0
}
