package tftp

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Clean turns a file name from a TFTP read request into a slash-separated
// path relative to the served directory, or refuses it.
//
// Firmware often asks for "/undionly.kpxe", meaning the file at the top of
// the TFTP root, so one leading "/" is dropped: "/etc/passwd" names
// Root/etc/passwd, never the system file. Backslashes, which some
// Windows-era clients use as separators, are read as "/" so that
// `..\..\x` is caught like "../../x". Empty names, NUL and other control
// characters, "." and ".." elements, empty elements ("a//b") and trailing
// slashes are refused: no PXE client sends them, and refusing is simpler to
// reason about than repairing them.
//
// Clean is only the first fence: Server opens the result through os.Root,
// which also refuses symlinks that lead outside the root.
func Clean(name string) (string, error) {
	if name == "" {
		return "", errors.New("empty file name")
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return "", fmt.Errorf("file name %q contains a control character", name)
		}
	}
	p := strings.ReplaceAll(name, `\`, "/")
	p = strings.TrimPrefix(p, "/")
	if p == "" || p == "." || !fs.ValidPath(p) {
		return "", fmt.Errorf("file name %q is not a plain relative path", name)
	}
	return p, nil
}

// CheckRoot verifies that root is a directory holding each of files as a
// regular file the server would actually serve, so that a misconfigured boot
// server fails at startup with a one-line, actionable message instead of
// every client failing later. It reports every missing file at once.
//
// A file that is a symlink leading outside root is reported as such: Debian's
// ipxe package installs /usr/lib/ipxe/ipxe.efi as a link to /boot/ipxe.efi,
// and the server never follows links out of its root.
func CheckRoot(root string, files ...string) error {
	const hint = "install Debian's ipxe package or pass --ipxe-dir"
	r, err := os.OpenRoot(root)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("ipxe directory %s does not exist: %s", root, hint)
		}
		return fmt.Errorf("ipxe directory %s: %w", root, err)
	}
	defer r.Close()

	var missing, escaping, other []string
	for _, f := range files {
		name, err := Clean(f)
		if err != nil {
			other = append(other, err.Error())
			continue
		}
		fi, err := r.Stat(name)
		switch {
		case err == nil && fi.Mode().IsRegular():
		case err == nil:
			other = append(other, fmt.Sprintf("%s is not a regular file", name))
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, name)
		default:
			// os.Root does not export its "path escapes" error; look at the
			// link ourselves to say where it points.
			if target, lerr := os.Readlink(filepath.Join(root, filepath.FromSlash(name))); lerr == nil {
				escaping = append(escaping, fmt.Sprintf("%s -> %s", name, target))
			} else {
				other = append(other, fmt.Sprintf("%s: %v", name, err))
			}
		}
	}
	var msgs []string
	if len(missing) > 0 {
		msgs = append(msgs, fmt.Sprintf("missing %s (%s)", strings.Join(missing, ", "), hint))
	}
	if len(escaping) > 0 {
		msgs = append(msgs, fmt.Sprintf("symlinks leading outside the directory are never served: %s "+
			"(pass --ipxe-dir with a directory holding the files themselves)", strings.Join(escaping, ", ")))
	}
	msgs = append(msgs, other...)
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("ipxe directory %s: %s", root, strings.Join(msgs, "; "))
}

// ResolveFiles finds the named files in dir for Server.Files, following
// symlinks (the operator chose dir; Debian's ipxe.efi is a link into /boot).
// Every name in required must resolve to a regular file, or the error names
// what is missing and which package provides it; names in optional are
// included only when present.
func ResolveFiles(dir string, required, optional []string) (map[string]string, error) {
	const hint = "install Debian's ipxe package or pass --ipxe-dir"
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("ipxe directory %s does not exist: %s", dir, hint)
	}
	files := map[string]string{}
	var missing []string
	for i, list := range [][]string{required, optional} {
		for _, name := range list {
			clean, err := Clean(name)
			if err != nil {
				return nil, fmt.Errorf("boot file %q: %w", name, err)
			}
			path, err := filepath.EvalSymlinks(filepath.Join(dir, filepath.FromSlash(clean)))
			if err == nil {
				var fi os.FileInfo
				if fi, err = os.Stat(path); err == nil && !fi.Mode().IsRegular() {
					err = errNotRegular
				}
			}
			if err != nil {
				if i == 0 {
					missing = append(missing, clean)
				}
				continue
			}
			files[clean] = path
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("ipxe directory %s: missing %s (%s)", dir, strings.Join(missing, ", "), hint)
	}
	return files, nil
}
