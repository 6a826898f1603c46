// Package iso reads distribution ISO 9660 images and finds the kernel and
// initrd inside them, so that an installer or live ISO can be imported as a
// phoenix image without unpacking it.
//
// It is a reader only: it never writes an ISO, boots nothing, ignores El
// Torito boot catalogues and UDF, and knows nothing of what a kernel needs on
// its command line. Files are read zero-copy as sections of the ISO file
// itself, because ISO 9660 stores every file contiguously.
//
// Only this package (and its siblings under images/) imports go-diskfs; none of
// its types appear in this package's API.
package iso

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
)

// ErrNotISO means the file is not a readable ISO 9660 image: not one at all,
// truncated, or corrupt.
var ErrNotISO = errors.New("not a readable ISO 9660 image")

// ErrNoLayout means no known distribution layout was recognised; the caller
// should ask for the kernel and initrd paths explicitly.
var ErrNoLayout = errors.New("no known distribution layout")

const (
	sectorSize = 2048
	// The system area (16 sectors) precedes the volume descriptors.
	descriptorStart = 16 * sectorSize
	// maxLinks bounds symlink resolution so a loop of Rock Ridge symlinks
	// ends in an error rather than a hang.
	maxLinks = 16
)

// ISO is an opened ISO image. Its methods are safe for concurrent use, and
// the section readers it returns stay valid until Close.
type ISO struct {
	f    *os.File
	size int64
	fs   *iso9660.FileSystem

	mu   sync.Mutex
	dirs map[string][]iofs.DirEntry // by real path, "." for the root
	// stuck is set once a read of the image did not finish (guard): the
	// read goes on, so the image is not read again.
	stuck error
}

// Open opens the ISO image at path. A file that is not an ISO 9660 image, is
// truncated, or is too corrupt to list its root directory gives an error
// wrapping ErrNotISO.
func Open(path string) (*ISO, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open iso: %w", err)
	}
	i, err := open(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open iso %s: %w", path, err)
	}
	return i, nil
}

func open(f *os.File) (*ISO, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: not a regular file", ErrNotISO)
	}
	patches, err := checkDescriptors(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotISO, err)
	}
	i := &ISO{f: f, size: st.Size(), dirs: map[string][]iofs.DirEntry{}}
	err = guard(func() error {
		var err error
		i.fs, err = iso9660.Read(file.New(patchedFile{f, patches}, true), st.Size(), 0, sectorSize)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotISO, err)
	}
	// Listing the root now turns a corrupt directory tree into an error
	// here, where the caller expects format errors, not in Detect.
	if _, err := i.readDir("."); err != nil {
		return nil, err
	}
	return i, nil
}

// checkDescriptors validates what go-diskfs trusts blindly: the signature,
// the block size it is told, that the image is complete, and that the
// path tables and root directories lie inside the file (go-diskfs allocates
// buffers of whatever size the descriptors claim).
//
// It also returns the patches that steer go-diskfs v1.9.4 away from its
// broken lookups, so that every directory is found by walking the tree from
// the root:
//   - its path table lookup (used without Rock Ridge) never moves on to the
//     next path component and counts parents off by one, so below the first
//     level it finds no directory or, silently, another one ("b/x" can list
//     "a/b"); a path table holding only the root makes it walk the tree.
//   - its Joliet tree (used when there is no Rock Ridge) cannot find
//     directories below the first level at all; blanking the Joliet escape
//     sequence makes it read the primary tree, whose upper-case, mangled
//     names lookup matches loosely.
func checkDescriptors(r io.ReaderAt, size int64) ([]patch, error) {
	if size < descriptorStart+2*sectorSize {
		return nil, fmt.Errorf("file too small (%d bytes)", size)
	}
	var patches []patch
	sawPrimary := false
	for n := int64(0); ; n++ {
		vd := make([]byte, sectorSize)
		off := descriptorStart + n*sectorSize
		if _, err := r.ReadAt(vd, off); err != nil {
			return nil, fmt.Errorf("volume descriptor %d: unexpected end of file", n)
		}
		if string(vd[1:6]) != "CD001" {
			return nil, fmt.Errorf("no ISO 9660 signature at byte %d", off+1)
		}
		switch vd[0] {
		case 255: // terminator
			if !sawPrimary {
				return nil, errors.New("no primary volume descriptor")
			}
			return patches, nil
		case 1, 2: // primary, supplementary (Joliet)
			if bs := binary.LittleEndian.Uint16(vd[128:130]); bs != sectorSize {
				return nil, fmt.Errorf("logical block size %d, want %d", bs, sectorSize)
			}
			ptSize := int64(binary.LittleEndian.Uint32(vd[132:136]))
			ptLoc := int64(binary.LittleEndian.Uint32(vd[140:144])) * sectorSize
			root := vd[156 : 156+34]
			rootLoc := binary.LittleEndian.Uint32(root[2:6])
			rootSize := int64(binary.LittleEndian.Uint32(root[10:14]))
			if ptLoc+ptSize > size || int64(rootLoc)*sectorSize+rootSize > size || rootSize == 0 || ptSize < 10 {
				return nil, fmt.Errorf("volume descriptor %d points past the end of the file", n)
			}
			if vd[0] == 2 {
				patches = append(patches, patch{off + 88, make([]byte, 32)})
				continue
			}
			if want := int64(binary.LittleEndian.Uint32(vd[80:84])) * sectorSize; size < want {
				return nil, fmt.Errorf("truncated: %d of %d bytes", size, want)
			}
			sawPrimary = true
			// go-diskfs sizes its read of the root directory from the
			// root's own "." record, not from this descriptor: make it
			// say the size checked above (both byte orders).
			dot := make([]byte, 8)
			binary.LittleEndian.PutUint32(dot[0:4], uint32(rootSize))
			binary.BigEndian.PutUint32(dot[4:8], uint32(rootSize))
			patches = append(patches, patch{int64(rootLoc)*sectorSize + 10, dot})
			// One path table record, the root (number 1, its own parent),
			// then a zero that ends the table.
			rec := make([]byte, min(ptSize, 12))
			rec[0] = 1
			binary.LittleEndian.PutUint32(rec[2:6], rootLoc)
			binary.LittleEndian.PutUint16(rec[6:8], 1)
			patches = append(patches, patch{ptLoc, rec})
		}
	}
}

// patch replaces the bytes at off when go-diskfs reads them.
type patch struct {
	off  int64
	data []byte
}

// patchedFile is the ISO file as go-diskfs sees it: the file with patches
// applied. The file itself is never written.
type patchedFile struct {
	*os.File
	patches []patch
}

func (f patchedFile) ReadAt(b []byte, off int64) (int, error) {
	n, err := f.File.ReadAt(b, off)
	for _, p := range f.patches {
		lo, hi := max(off, p.off), min(off+int64(n), p.off+int64(len(p.data)))
		if lo < hi {
			copy(b[lo-off:hi-off], p.data[lo-p.off:hi-p.off])
		}
	}
	return n, err
}

// guard runs fn and turns a panic into an error: go-diskfs indexes slices
// with lengths read from the image, and a corrupt image must not crash the
// caller. It also gives fn guardTimeout: go-diskfs v1.9.4 follows Rock
// Ridge continuation areas without bound, so a crafted image can keep it
// looping (and allocating) for ever. The goroutine left behind ends with
// the process: ISOs are read by the CLI (image import --iso), which exits
// on the error.
func guard(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("corrupt image: %v", r)
			}
		}()
		done <- fn()
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(guardTimeout):
		return fmt.Errorf("corrupt image: %w within %s (a loop in its directory records?)", errNotRead, guardTimeout)
	}
}

// errNotRead is guard's error for a call that did not finish: the call
// still runs, so nothing may call go-diskfs on that image again.
var errNotRead = errors.New("not read")

// guardTimeout bounds one go-diskfs call; a real ISO's directory is read
// in milliseconds (a variable for tests).
var guardTimeout = 30 * time.Second

// Close closes the image file. Section readers returned by File stop working.
func (i *ISO) Close() error {
	return i.f.Close()
}

// File returns a reader over the regular file at p, a slash-separated path
// inside the ISO ("/casper/vmlinuz" or "casper/vmlinuz"), and its size. It
// follows Rock Ridge symlinks and matches names as described in Detect. The
// reader reads the ISO file directly: nothing is copied or buffered.
func (i *ISO) File(p string) (*io.SectionReader, int64, error) {
	_, info, err := i.resolve(p)
	if err != nil {
		return nil, 0, err
	}
	if !info.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("iso file %s: not a regular file", p)
	}
	st, ok := info.Sys().(*iso9660.StatT)
	if !ok {
		return nil, 0, fmt.Errorf("iso file %s: no extent information", p)
	}
	if !i.inside(info) {
		return nil, 0, fmt.Errorf("iso file %s: %w: extent ends past the end of the image", p, ErrNotISO)
	}
	return io.NewSectionReader(i.f, int64(st.Location)*sectorSize, info.Size()), info.Size(), nil
}

// inside reports whether an entry's extent lies within the image file. It
// guards File's readers, and go-diskfs, which allocates a buffer of a
// directory's recorded size before reading it.
func (i *ISO) inside(info iofs.FileInfo) bool {
	st, ok := info.Sys().(*iso9660.StatT)
	return ok && int64(st.Location)*sectorSize+info.Size() <= i.size
}

// Exists reports whether p names a regular file in the ISO (after following
// symlinks).
func (i *ISO) Exists(p string) bool {
	_, info, err := i.resolve(p)
	return err == nil && info.Mode().IsRegular()
}

// resolve finds p in the ISO and returns its real path (as the ISO spells
// it, without the leading slash) and its entry, following symlinks.
func (i *ISO) resolve(p string) (string, iofs.FileInfo, error) {
	links := 0
	dir, rest := ".", splitPath(p)
	if len(rest) == 0 {
		return "", nil, fmt.Errorf("iso file %q: is the root directory", p)
	}
	for len(rest) > 0 {
		entries, err := i.readDir(dir)
		if err != nil {
			return "", nil, fmt.Errorf("iso file %s: %w", p, err)
		}
		e := lookup(entries, rest[0])
		if e == nil {
			return "", nil, fmt.Errorf("iso file %s: %w", p, iofs.ErrNotExist)
		}
		info, err := e.Info()
		if err != nil {
			return "", nil, fmt.Errorf("iso file %s: %w", p, err)
		}
		if info.Mode()&iofs.ModeSymlink != 0 {
			st, _ := info.Sys().(*iso9660.StatT)
			if st == nil || st.LinkTarget == "" {
				return "", nil, fmt.Errorf("iso file %s: unreadable symlink %s", p, e.Name())
			}
			if links++; links > maxLinks {
				return "", nil, fmt.Errorf("iso file %s: too many levels of symlinks", p)
			}
			target := st.LinkTarget
			if !strings.HasPrefix(target, "/") {
				target = path.Join(dir, target)
			}
			// path.Clean keeps a leading ".." on a relative path; the ISO's
			// root is its own parent, as in a chroot.
			dir, rest = ".", append(splitPath(target), rest[1:]...)
			continue
		}
		full := path.Join(dir, e.Name())
		rest = rest[1:]
		if len(rest) == 0 {
			return full, info, nil
		}
		if !info.IsDir() {
			return "", nil, fmt.Errorf("iso file %s: %s is not a directory", p, full)
		}
		if !i.inside(info) {
			return "", nil, fmt.Errorf("iso file %s: %w: directory %s ends past the end of the image", p, ErrNotISO, full)
		}
		dir = full
	}
	panic("unreachable")
}

// splitPath splits a slash path into its components, resolving "." and
// ".." lexically and never above the root.
func splitPath(p string) []string {
	var parts []string
	for _, s := range strings.Split(p, "/") {
		switch s {
		case "", ".":
		case "..":
			if len(parts) > 0 {
				parts = parts[:len(parts)-1]
			}
		default:
			parts = append(parts, s)
		}
	}
	return parts
}

// readDir lists a directory by its real path, caching the result: detection
// probes the same few directories many times.
func (i *ISO) readDir(dir string) ([]iofs.DirEntry, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.stuck != nil {
		return nil, i.stuck
	}
	if entries, ok := i.dirs[dir]; ok {
		return entries, nil
	}
	var entries []iofs.DirEntry
	err := guard(func() error {
		var err error
		entries, err = i.fs.ReadDir(dir)
		return err
	})
	if err != nil {
		err = fmt.Errorf("%w: directory %s: %w", ErrNotISO, dir, err)
		if errors.Is(err, errNotRead) {
			i.stuck = err
		}
		return nil, err
	}
	i.dirs[dir] = entries
	return entries, nil
}

// lookup finds name in entries. Exact names win; then names are compared
// case-insensitively without ISO 9660 version suffixes (";1") and trailing
// dots ("VMLINUZ."), which is how ISOs without Rock Ridge or Joliet spell
// them; last, every character other than a letter or digit counts as "_",
// which is how plain ISO 9660 names mangle "install.amd" into "INSTALL_AMD".
func lookup(entries []iofs.DirEntry, name string) iofs.DirEntry {
	for _, key := range []func(string) string{exactName, foldName, looseName} {
		for _, e := range entries {
			if key(e.Name()) == key(name) {
				return e
			}
		}
	}
	return nil
}

func exactName(s string) string { return s }

var versionSuffix = regexp.MustCompile(`;[0-9]*$`)

func foldName(s string) string {
	s = versionSuffix.ReplaceAllString(s, "")
	return strings.ToLower(strings.TrimSuffix(s, "."))
}

// looseName is foldName with every character other than a letter or digit
// mapped to "_".
func looseName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, foldName(s))
}
