package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// tmpPrefix starts the name of every temp file this package makes, so Open
// can remove its own leftovers from a tmp dir that other packages may share.
const tmpPrefix = "images-"

// copyBufSize is the one buffer an import streams through: large enough
// that syscalls and hashing dominate, small enough that a 2 GiB artifact
// imports in constant memory.
const copyBufSize = 1 << 20

// writeBlob streams r into a temp file while hashing it in the same pass,
// then publishes it as blobs/sha256/<hex>. It returns the digest and size.
// If want >= 0, a stream of another length is an error and nothing is
// published.
func (s *Store) writeBlob(ctx context.Context, r io.Reader, want int64) (v1.Hash, int64, error) {
	f, err := os.CreateTemp(s.tmp, tmpPrefix+"blob-*")
	if err != nil {
		return v1.Hash{}, 0, err
	}
	tmp := f.Name()
	closed := false
	defer func() {
		if !closed {
			f.Close()
			os.Remove(tmp)
		}
	}()

	h := sha256.New()
	// ctxReader hides *os.File's WriterTo and MultiWriter has no ReaderFrom,
	// so io.CopyBuffer really uses buf: memory stays at copyBufSize.
	bufSize := copyBufSize
	if l, ok := r.(interface{ Len() int }); ok && l.Len() < bufSize {
		bufSize = max(l.Len(), 1) // a manifest or config: no 1 MiB buffer
	}
	buf := make([]byte, bufSize)
	size, err := io.CopyBuffer(io.MultiWriter(f, h), ctxReader{ctx, r}, buf)
	if err != nil {
		return v1.Hash{}, 0, err
	}
	if want >= 0 && size != want {
		return v1.Hash{}, 0, fmt.Errorf("got %d bytes, want %d: truncated or changed while reading", size, want)
	}
	digest := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
	// Mode before Sync, so the fsync makes the 0444 durable along with the data.
	if err := f.Chmod(0o444); err != nil {
		return v1.Hash{}, 0, err
	}
	if err := f.Sync(); err != nil {
		return v1.Hash{}, 0, err
	}
	if err := f.Close(); err != nil {
		return v1.Hash{}, 0, err
	}
	closed = true
	if err := s.publishBlob(tmp, digest, size); err != nil {
		os.Remove(tmp)
		return v1.Hash{}, 0, err
	}
	return digest, size, nil
}

// publishBlob renames the complete, synced temp file tmp to its digest's
// blob path, or drops it if that blob already exists (dedupe).
func (s *Store) publishBlob(tmp string, digest v1.Hash, size int64) error {
	dst := s.blobFile(digest)
	if fi, err := os.Stat(dst); err == nil && fi.Mode().IsRegular() && fi.Size() == size {
		return os.Remove(tmp)
	}
	// A blob of the wrong size under this name can only be damage (blobs
	// are renamed in whole); replacing it with content that really has this
	// digest repairs it without ever exposing a partial file.
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("publish blob %s: %w", digest, err)
	}
	return syncDir(filepath.Dir(dst))
}

// writeFileAtomic replaces dst with data: temp file in s.tmp, fsync,
// rename, fsync of dst's directory. Readers see the old file or the new
// one, never a torn one, even if the process is killed.
func (s *Store) writeFileAtomic(dst string, data []byte, perm fs.FileMode) error {
	f, err := os.CreateTemp(s.tmp, tmpPrefix+"file-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	ok = true
	return syncDir(filepath.Dir(dst))
}

// syncDir makes a rename into dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// removeLeftovers deletes temp files a killed import left in dir.
func removeLeftovers(dir string) error {
	matches, err := filepath.Glob(filepath.Join(dir, tmpPrefix+"*"))
	if err != nil {
		return err
	}
	for _, m := range matches {
		if err := os.Remove(m); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// ctxReader stops a long copy soon after ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
