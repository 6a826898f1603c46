package tftp

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// Limits of the file cache. The files TFTP serves are iPXE binaries of a
// few hundred kilobytes, asked for by every host of a rack at once; larger
// files are read from disk as they are sent.
const (
	cacheMaxFile  = 4 << 20
	cacheMaxTotal = 32 << 20
)

// fileCache keeps the content of small served files in memory, shared by
// all transfers, so that a storm of transfers costs no file reads: the
// library asks for one block at a time, and even through a buffer that is
// a read syscall every few blocks per transfer. An entry is used only
// while the file opened for the request is still the one cached (same
// inode, size, modification and change time), so a replaced or rewritten
// file is read afresh.
type fileCache struct {
	mu    sync.Mutex
	files map[string]cachedFile
	total int64
}

type cachedFile struct {
	id   fileID
	data []byte
}

// fileID tells two versions of a file apart.
type fileID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime time.Time
}

func idOf(fi os.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{
		dev: uint64(st.Dev), ino: st.Ino, size: fi.Size(), mtime: fi.ModTime(),
		ctime: time.Unix(st.Ctim.Unix()),
	}, true
}

// reader returns a reader over f's content: from memory when f is small
// enough to cache, else f itself. key names the file (its path), fi is
// f's Stat. The caller still closes f.
func (c *fileCache) reader(key string, f *os.File, fi os.FileInfo) (io.Reader, error) {
	id, ok := idOf(fi)
	if !ok || fi.Size() > cacheMaxFile {
		return f, nil
	}
	// Loading under the lock keeps a storm's first requests from reading
	// the same file hundreds of times; a small file from the page cache
	// takes well under a millisecond.
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.files[key]; ok && e.id == id {
		return bytes.NewReader(e.data), nil
	}
	data := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	if c.files == nil {
		c.files = map[string]cachedFile{}
	}
	if e, ok := c.files[key]; ok {
		c.total -= int64(len(e.data))
		delete(c.files, key)
	}
	if c.total+int64(len(data)) > cacheMaxTotal {
		// Many distinct files: start over rather than track use; a
		// TFTP root holds a handful of binaries.
		c.files, c.total = map[string]cachedFile{}, 0
	}
	c.files[key] = cachedFile{id: id, data: data}
	c.total += int64(len(data))
	return bytes.NewReader(data), nil
}
