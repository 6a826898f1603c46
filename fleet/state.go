package fleet

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// StateDir is phoenix's state volume: the one directory it writes to. It is
// held locked for as long as it is open so that two servers never share one.
type StateDir struct {
	// Path is the absolute path of the directory.
	Path string
	lock *os.File
}

// ErrNotMount is returned by OpenState when the state directory is not its
// own mount point and shared state was not allowed.
var ErrNotMount = errors.New("not a mount point")

// ErrLocked is returned by OpenState when another process holds the state lock.
var ErrLocked = errors.New("locked by another phoenix process")

// OpenState checks that dir is a mount point of its own (unless allowShared),
// takes an exclusive flock on dir/LOCK and creates the layout below it.
// The state must live on its own volume so the boot server can be thrown away
// and rebuilt like its hosts; allowShared exists for labs and tests.
func OpenState(dir string, allowShared bool, log *slog.Logger) (*StateDir, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("state dir %s: %w", dir, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("state dir %s: %w (create it and mount a volume there)", abs, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("state dir %s: not a directory", abs)
	}
	mounted, err := isMountPoint(abs)
	if err != nil {
		return nil, fmt.Errorf("state dir %s: %w", abs, err)
	}
	if !mounted {
		if !allowShared {
			return nil, fmt.Errorf("state dir %s: %w: mount a dedicated volume there, or pass --state-allow-shared (labs and tests only)", abs, ErrNotMount)
		}
		log.Warn("state dir is not its own mount point; allowed by --state-allow-shared (labs and tests only)", "dir", abs)
	}
	f, err := os.OpenFile(filepath.Join(abs, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state dir %s: %w", abs, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("state dir %s: %w", abs, ErrLocked)
		}
		return nil, fmt.Errorf("state dir %s: lock: %w", abs, err)
	}
	s := &StateDir{Path: abs, lock: f}
	for _, sub := range []string{"images", "logs", "tmp"} {
		if err := os.MkdirAll(filepath.Join(abs, sub), 0o755); err != nil {
			s.Close()
			return nil, fmt.Errorf("state dir %s: %w", abs, err)
		}
	}
	return s, nil
}

// Join returns a path inside the state directory.
func (s *StateDir) Join(elem ...string) string {
	return filepath.Join(append([]string{s.Path}, elem...)...)
}

// Close releases the lock.
func (s *StateDir) Close() error {
	if s.lock == nil {
		return nil
	}
	err := s.lock.Close()
	s.lock = nil
	return err
}

// isMountPoint reports whether dir is the mount point of some mount, as
// listed in /proc/self/mountinfo.
func isMountPoint(dir string) (bool, error) {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return false, err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	return mountinfoHas(f, real)
}

// mountinfoHas scans mountinfo text (proc(5)) for a mount point equal to dir.
func mountinfoHas(r io.Reader, dir string) (bool, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		if unescapeMountinfo(fields[4]) == dir {
			return true, nil
		}
	}
	return false, sc.Err()
}

// unescapeMountinfo undoes the octal escapes (\040 for space, …) the kernel
// uses in mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
