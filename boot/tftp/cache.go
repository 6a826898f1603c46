package tftp

import (
	"bytes"
	"context"
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
	files map[string]*cachedFile
	total int64 // bytes of all entries, counted when they are added
}

// cachedFile is one file's content. The request that adds it reads the
// file outside the cache's lock, so a slow first read of one file holds
// up only the requests for that same file, which wait on ready instead of
// reading it again.
type cachedFile struct {
	id    fileID
	ready chan struct{} // closed once data or err is set
	data  []byte
	err   error
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
// f's Stat. The caller still closes f. Should the request that loads the
// file fail to read it, the requests that waited for it read their own f.
// A request waiting for another's read gives up when ctx ends (the server
// stops), so a read stuck on a failing disk does not hold the shutdown.
func (c *fileCache) reader(ctx context.Context, key string, f *os.File, fi os.FileInfo) (io.Reader, error) {
	id, ok := idOf(fi)
	if !ok || fi.Size() > cacheMaxFile {
		return f, nil
	}
	c.mu.Lock()
	if e, ok := c.files[key]; ok && e.id == id {
		c.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if e.err != nil {
			return f, nil
		}
		return bytes.NewReader(e.data), nil
	}
	e := &cachedFile{id: id, ready: make(chan struct{})}
	c.add(key, e)
	c.mu.Unlock()

	data := make([]byte, fi.Size())
	_, err := io.ReadFull(f, data)
	if err != nil {
		e.err = fmt.Errorf("read %s: %w", key, err)
		c.mu.Lock()
		if c.files[key] == e {
			c.remove(key)
		}
		c.mu.Unlock()
	} else {
		e.data = data
	}
	close(e.ready)
	if e.err != nil {
		return nil, e.err
	}
	return bytes.NewReader(data), nil
}

// add puts e under key, in place of an older version; c.mu is held.
func (c *fileCache) add(key string, e *cachedFile) {
	if c.files == nil {
		c.files = map[string]*cachedFile{}
	}
	c.remove(key)
	if c.total+e.id.size > cacheMaxTotal {
		// Many distinct files: start over rather than track use; a
		// TFTP root holds a handful of binaries. Requests still
		// loading or reading a dropped entry keep their pointer.
		c.files, c.total = map[string]*cachedFile{}, 0
	}
	c.files[key] = e
	c.total += e.id.size
}

// remove drops key's entry, if any; c.mu is held.
func (c *fileCache) remove(key string) {
	if e, ok := c.files[key]; ok {
		c.total -= e.id.size
		delete(c.files, key)
	}
}
