package tftp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCacheFollowsFile: a served file that is rewritten in place, replaced
// by a rename, or grows past the cache's limit is served as it is now,
// never as it was cached.
func TestCacheFollowsFile(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, &Server{Root: dir})
	path := filepath.Join(dir, "undionly.kpxe")
	fetch := func(want []byte, step string) {
		t.Helper()
		got, _, err := get(ts.addr, "undionly.kpxe", 1468, false)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: got %d bytes, not the file's %d", step, len(got), len(want))
		}
	}
	v1 := randomBytes(100_000)
	mustWrite(t, path, v1)
	fetch(v1, "first")
	fetch(v1, "cached")

	// Same size, rewritten in place: the inode stays, ctime moves.
	v2 := bytes.Clone(v1)
	v2[50_000] ^= 0xff
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(v2[50_000:50_001], 50_000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	fetch(v2, "rewritten in place")

	// Replaced by a rename, as package managers do.
	v3 := randomBytes(70_000)
	mustWrite(t, path+".new", v3)
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	fetch(v3, "renamed over")

	// Too big to cache: read from the file as it is sent.
	v4 := randomBytes(cacheMaxFile + 1)
	mustWrite(t, path, v4)
	fetch(v4, "over the cache limit")
	ts.cache.mu.Lock()
	n := len(ts.cache.files)
	ts.cache.mu.Unlock()
	if n != 1 {
		t.Errorf("cache holds %d files", n)
	}
}

// TestCacheFirstRequestsTogether: requests that arrive together for files
// not yet cached all get the right content, and the cache ends up holding
// each file once (its byte count is not skewed by the requests that
// waited for another one's read).
func TestCacheFirstRequestsTogether(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, &Server{Root: dir})
	files := map[string][]byte{"a.kpxe": randomBytes(300_000), "b.efi": randomBytes(200_000)}
	for name, data := range files {
		mustWrite(t, filepath.Join(dir, name), data)
	}
	errs := make(chan error, 20)
	for i := range 20 {
		name := "a.kpxe"
		if i%2 == 1 {
			name = "b.efi"
		}
		go func() {
			got, _, err := get(ts.addr, name, 1468, false)
			if err == nil && !bytes.Equal(got, files[name]) {
				err = fmt.Errorf("%s: got %d bytes, not the file's %d", name, len(got), len(files[name]))
			}
			errs <- err
		}()
	}
	for range 20 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	ts.cache.mu.Lock()
	defer ts.cache.mu.Unlock()
	if n, total := len(ts.cache.files), ts.cache.total; n != 2 || total != 500_000 {
		t.Errorf("cache holds %d files, %d bytes; want 2, 500000", n, total)
	}
}

// TestCacheWaiterStops: a request waiting for another request's read of
// the same file (stuck on a failing disk, say) gives up when the server
// stops, instead of holding its shutdown.
func TestCacheWaiterStops(t *testing.T) {
	path := filepath.Join(t.TempDir(), "undionly.kpxe")
	mustWrite(t, path, randomBytes(1000))
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := idOf(fi)
	var c fileCache
	c.add(path, &cachedFile{id: id, ready: make(chan struct{})}) // a read that never ends
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.reader(ctx, path, f, fi)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("reader returned before the other read ended: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reader still waits after its context ended")
	}
}
