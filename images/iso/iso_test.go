package iso

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/iso9660"
)

// flavour is how an ISO names its files: Rock Ridge (with Joliet, as
// distributions ship them), Joliet only, or plain ISO 9660 (upper case,
// mangled, ";1" versions). Joliet-only ISOs are read through their plain
// ISO 9660 names, because go-diskfs cannot walk their Joliet tree.
type flavour struct {
	name string
	args []string
}

var flavours = []flavour{
	{"rockridge", []string{"-rockridge", "on", "-joliet", "on"}},
	{"joliet", []string{"-rockridge", "off", "-joliet", "on"}},
	{"plain", []string{"-rockridge", "off", "-joliet", "off"}},
}

// tree describes an ISO's content: files with their contents, and symlinks
// (Rock Ridge only) with their targets.
type tree struct {
	files    map[string]string
	symlinks map[string]string
}

func needXorriso(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("xorriso"); err != nil {
		t.Skip("xorriso not installed (Debian package xorriso): cannot build test ISOs")
	}
}

// buildISO writes tr to a directory and turns it into an ISO with xorriso.
func buildISO(t testing.TB, fl flavour, tr tree) string {
	t.Helper()
	needXorriso(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range tr.files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range tr.symlinks {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "test.iso")
	args := append([]string{"-outdev", out}, fl.args...)
	args = append(args, "-map", src, "/")
	if b, err := exec.Command("xorriso", args...).CombinedOutput(); err != nil {
		t.Fatalf("xorriso %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return out
}

func content(name string) string { return "contents of " + name + "\n" }

func files(names ...string) map[string]string {
	m := map[string]string{}
	for _, n := range names {
		m[n] = content(n)
	}
	return m
}

func TestDetect(t *testing.T) {
	tests := []struct {
		name string
		tree tree
		// want is the layout on a Rock Ridge ISO; the other flavours must
		// find the same files under their own spelling.
		want Layout
		// rrOnly cases need symlinks or names plain ISO 9660 cannot hold.
		rrOnly bool
	}{
		{
			name: "debian netinst",
			tree: tree{files: files("install.amd/vmlinuz", "install.amd/initrd.gz", "install.amd/gtk/vmlinuz", "install.amd/gtk/initrd.gz", "isolinux/isolinux.cfg")},
			want: Layout{"debian-installer", "/install.amd/vmlinuz", "/install.amd/initrd.gz"},
		},
		{
			name: "debian arm64 netinst",
			tree: tree{files: files("install.a64/vmlinuz", "install.a64/initrd.gz")},
			want: Layout{"debian-installer-arm64", "/install.a64/vmlinuz", "/install.a64/initrd.gz"},
		},
		{
			name: "ubuntu legacy installer",
			tree: tree{files: files("install/vmlinuz", "install/initrd.gz", "install/netboot/pxelinux.0")},
			want: Layout{"ubuntu-installer", "/install/vmlinuz", "/install/initrd.gz"},
		},
		{
			name: "debian mini.iso",
			tree: tree{files: files("linux", "initrd.gz", "isolinux.bin")},
			want: Layout{"debian-mini", "/linux", "/initrd.gz"},
		},
		{
			name: "ubuntu casper",
			tree: tree{files: files("casper/vmlinuz", "casper/initrd", "casper/filesystem.squashfs")},
			want: Layout{"ubuntu-casper", "/casper/vmlinuz", "/casper/initrd"},
		},
		{
			name: "ubuntu casper lz",
			tree: tree{files: files("casper/vmlinuz", "casper/initrd.lz")},
			want: Layout{"ubuntu-casper", "/casper/vmlinuz", "/casper/initrd.lz"},
		},
		{
			name: "ubuntu casper efi gz",
			tree: tree{files: files("casper/vmlinuz.efi", "casper/initrd.gz")},
			want: Layout{"ubuntu-casper", "/casper/vmlinuz.efi", "/casper/initrd.gz"},
		},
		{
			name: "debian live versioned",
			tree: tree{files: files("live/vmlinuz-6.1.0-17-amd64", "live/initrd.img-6.1.0-17-amd64",
				"live/vmlinuz-6.1.0-18-amd64", "live/initrd.img-6.1.0-18-amd64", "live/filesystem.squashfs")},
			want: Layout{"debian-live", "/live/vmlinuz-6.1.0-18-amd64", "/live/initrd.img-6.1.0-18-amd64"},
		},
		{
			name: "debian live pairs versions",
			// The newest kernel has no initrd: the pair must not mix versions.
			tree: tree{files: files("live/vmlinuz-6.2", "live/vmlinuz-6.1", "live/initrd.img-6.1")},
			want: Layout{"debian-live", "/live/vmlinuz-6.1", "/live/initrd.img-6.1"},
		},
		{
			name: "debian live plain names",
			tree: tree{files: files("live/vmlinuz", "live/initrd.img")},
			want: Layout{"debian-live", "/live/vmlinuz", "/live/initrd.img"},
		},
		{
			name: "debian live before its installer",
			tree: tree{files: files("live/vmlinuz", "live/initrd.img", "install/vmlinuz", "install/initrd.gz")},
			want: Layout{"debian-live", "/live/vmlinuz", "/live/initrd.img"},
		},
		{
			name: "fedora",
			tree: tree{files: files("images/pxeboot/vmlinuz", "images/pxeboot/initrd.img", "images/install.img", "EFI/BOOT/grub.cfg")},
			want: Layout{"fedora", "/images/pxeboot/vmlinuz", "/images/pxeboot/initrd.img"},
		},
		{
			name: "alpine lts",
			tree: tree{files: files("boot/vmlinuz-lts", "boot/initramfs-lts", "boot/modloop-lts", "apks/x86_64/APKINDEX.tar.gz")},
			want: Layout{"alpine-lts", "/boot/vmlinuz-lts", "/boot/initramfs-lts"},
		},
		{
			name: "alpine virt",
			tree: tree{files: files("boot/vmlinuz-virt", "boot/initramfs-virt", "boot/modloop-virt")},
			want: Layout{"alpine-virt", "/boot/vmlinuz-virt", "/boot/initramfs-virt"},
		},
		{
			name: "alpine kernel without initramfs is not a layout",
			tree: tree{files: files("boot/vmlinuz-lts", "boot/initramfs-virt", "install.amd/vmlinuz", "install.amd/initrd.gz")},
			want: Layout{"debian-installer", "/install.amd/vmlinuz", "/install.amd/initrd.gz"},
		},
		{
			name:   "casper initrd symlink",
			tree:   tree{files: files("casper/vmlinuz", "casper/initrd.lz"), symlinks: map[string]string{"casper/initrd": "initrd.lz"}},
			want:   Layout{"ubuntu-casper", "/casper/vmlinuz", "/casper/initrd.lz"},
			rrOnly: true,
		},
		{
			name: "live symlinks across directories",
			tree: tree{files: files("boot/k-1", "boot/i-1"), symlinks: map[string]string{
				"live/vmlinuz": "../boot/k-1", "live/initrd.img": "/boot/i-1"}},
			want:   Layout{"debian-live", "/boot/k-1", "/boot/i-1"},
			rrOnly: true,
		},
		{
			name: "dangling symlink is skipped",
			tree: tree{files: files("install/vmlinuz", "install/initrd.gz"), symlinks: map[string]string{
				"casper/vmlinuz": "nowhere", "casper/initrd": "../../../etc/passwd"}},
			want:   Layout{"ubuntu-installer", "/install/vmlinuz", "/install/initrd.gz"},
			rrOnly: true,
		},
		{
			name: "symlink loop is skipped",
			tree: tree{files: files("install/vmlinuz", "install/initrd.gz"), symlinks: map[string]string{
				"casper/vmlinuz": "vmlinuz", "casper/initrd": "a", "casper/a": "initrd"}},
			want:   Layout{"ubuntu-installer", "/install/vmlinuz", "/install/initrd.gz"},
			rrOnly: true,
		},
	}
	for _, tt := range tests {
		for _, fl := range flavours {
			if tt.rrOnly && fl.name != "rockridge" {
				continue
			}
			t.Run(tt.name+"/"+fl.name, func(t *testing.T) {
				i := openISO(t, buildISO(t, fl, tt.tree))
				got, err := i.Detect()
				if err != nil {
					t.Fatalf("Detect: %v", err)
				}
				if got.Distro != tt.want.Distro {
					t.Fatalf("Detect = %+v, want distro %q", got, tt.want.Distro)
				}
				if fl.name == "rockridge" && got != tt.want {
					t.Errorf("Detect = %+v, want %+v", got, tt.want)
				}
				// Whatever the spelling, the layout must name the right files.
				for p, want := range map[string]string{got.Kernel: tt.want.Kernel, got.Initrd: tt.want.Initrd} {
					if b := readAll(t, i, p); string(b) != content(strings.TrimPrefix(want, "/")) {
						t.Errorf("File(%q) = %q, want contents of %s", p, b, want)
					}
					if !i.Exists(p) || !i.Exists(want) {
						t.Errorf("Exists(%q) or Exists(%q) = false", p, want)
					}
				}
			})
		}
	}
}

// TestNames pins how go-diskfs v1.9.4 spells names in each flavour, and
// that lookups find files under any of them.
func TestNames(t *testing.T) {
	tr := tree{files: files("install.amd/vmlinuz", "live/initrd.img-6.1.0-18-amd64", "Mixed/Case.Txt")}
	wantRoot := map[string]string{
		"rockridge": "install.amd live Mixed",
		"joliet":    "INSTALL_AMD LIVE MIXED",
		"plain":     "INSTALL_AMD LIVE MIXED",
	}
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			i := openISO(t, buildISO(t, fl, tr))
			root, err := i.readDir(".")
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range root {
				names = append(names, e.Name())
			}
			if got := strings.Join(names, " "); got != wantRoot[fl.name] {
				t.Errorf("root = %q, want %q", got, wantRoot[fl.name])
			}
			for _, p := range []string{
				"install.amd/vmlinuz", "/install.amd/vmlinuz", "INSTALL.AMD/VMLINUZ", "INSTALL_AMD/VMLINUZ.;1",
				"./install.amd/../install.amd/vmlinuz", "../install.amd/vmlinuz",
				"live/initrd.img-6.1.0-18-amd64", "mixed/case.txt",
			} {
				if !i.Exists(p) {
					t.Errorf("Exists(%q) = false", p)
				}
			}
			for _, p := range []string{"", "/", "install.amd", "install.amd/nope", "install.amd/vmlinuz/x", "nope/vmlinuz"} {
				if i.Exists(p) {
					t.Errorf("Exists(%q) = true", p)
				}
				if _, _, err := i.File(p); err == nil {
					t.Errorf("File(%q) succeeded", p)
				}
			}
			if _, _, err := i.File("install.amd/nope"); !errors.Is(err, iofs.ErrNotExist) {
				t.Errorf("File(missing) = %v, want ErrNotExist", err)
			}
		})
	}
}

// TestSameNamedDirs reads files from directories that share a name under
// different parents, which go-diskfs's path table lookup confuses.
func TestSameNamedDirs(t *testing.T) {
	tr := tree{files: files("a/b/f", "a/x/f", "b/b/f", "b/x/f", "b/y/z/f", "c/x/f")}
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			i := openISO(t, buildISO(t, fl, tr))
			for name := range tr.files {
				if got := readAll(t, i, name); string(got) != content(name) {
					t.Errorf("File(%q) = %q, want %q", name, got, content(name))
				}
			}
		})
	}
}

func TestNoLayout(t *testing.T) {
	i := openISO(t, buildISO(t, flavours[0], tree{files: files("README.txt", "boot/grub/grub.cfg", "install/vmlinuz")}))
	_, err := i.Detect()
	if !errors.Is(err, ErrNoLayout) {
		t.Fatalf("Detect = %v, want ErrNoLayout", err)
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "boot/") {
		t.Errorf("error %q: want one line listing the top level", msg)
	}
}

// TestFileSpansSectors reads a file of several sectors, not a multiple of
// the sector size, whole and in pieces.
func TestFileSpansSectors(t *testing.T) {
	data := make([]byte, 5*sectorSize+123)
	rand.Read(data)
	tr := tree{files: map[string]string{"a/small": "x", "a/big.bin": string(data), "a/zz": "after"}}
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			i := openISO(t, buildISO(t, fl, tr))
			r, n, err := i.File("a/big.bin")
			if err != nil {
				t.Fatal(err)
			}
			if n != int64(len(data)) || r.Size() != n {
				t.Fatalf("size = %d (reader %d), want %d", n, r.Size(), len(data))
			}
			got, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("ReadAll: %d bytes, err %v; contents differ", len(got), err)
			}
			part := make([]byte, 3000)
			if _, err := r.ReadAt(part, 4000); err != nil || !bytes.Equal(part, data[4000:7000]) {
				t.Errorf("ReadAt across a sector boundary: err %v or contents differ", err)
			}
			if _, err := r.ReadAt(part, n-10); err != io.EOF {
				t.Errorf("ReadAt past the end: %v, want io.EOF", err)
			}
		})
	}
}

func TestNotISO(t *testing.T) {
	needXorriso(t)
	good := buildISO(t, flavours[0], tree{files: map[string]string{"install.amd/vmlinuz": strings.Repeat("k", 100000), "install.amd/initrd.gz": "i"}})
	iso, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	random := make([]byte, 1<<20)
	rand.Read(random)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(random)
	zw.Close()
	// Truncate relative to the volume size: xorriso pads the file beyond it.
	volume := int(binary.LittleEndian.Uint32(iso[descriptorStart+80:])) * sectorSize
	badBlock := bytes.Clone(iso)
	badBlock[descriptorStart+129] = 0x10 // logical block size 2048 → 4096
	badRoot := bytes.Clone(iso)
	binary.LittleEndian.PutUint32(badRoot[descriptorStart+156+10:], 1<<31) // root directory size
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"random", random},
		{"gzip", gz.Bytes()},
		{"descriptors only", iso[:descriptorStart+3*sectorSize]},
		{"truncated", iso[:volume/2]},
		{"truncated by one sector", iso[:volume-sectorSize]},
		{"bad block size", badBlock},
		{"root past the end", badRoot},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "x.iso")
			if err := os.WriteFile(p, tt.data, 0o644); err != nil {
				t.Fatal(err)
			}
			i, err := Open(p)
			if err == nil {
				i.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, ErrNotISO) {
				t.Errorf("Open = %v, want ErrNotISO", err)
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, p) {
				t.Errorf("error %q: want one line naming the file", msg)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		_, err := Open(filepath.Join(t.TempDir(), "nope.iso"))
		if !errors.Is(err, iofs.ErrNotExist) || errors.Is(err, ErrNotISO) {
			t.Errorf("Open = %v, want ErrNotExist", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		if _, err := Open(t.TempDir()); !errors.Is(err, ErrNotISO) {
			t.Errorf("Open = %v, want ErrNotISO", err)
		}
	})
}

// TestGoDiskfsISO reads ISOs written by go-diskfs itself, with and without
// Rock Ridge.
func TestGoDiskfsISO(t *testing.T) {
	for _, rr := range []bool{true, false} {
		t.Run(fmt.Sprintf("rockridge=%v", rr), func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "diskfs.iso")
			b, err := file.CreateFromPath(out, 10<<20)
			if err != nil {
				t.Fatal(err)
			}
			// Finalize deletes its workspace: give it a fresh directory
			// of its own.
			work, err := os.MkdirTemp(dir, "work")
			if err != nil {
				t.Fatal(err)
			}
			fs, err := iso9660.Create(b, 10<<20, 0, sectorSize, work)
			if err != nil {
				t.Fatal(err)
			}
			kernel := bytes.Repeat([]byte("kernel"), 1000)
			for name, data := range map[string][]byte{"images/pxeboot/vmlinuz": kernel, "images/pxeboot/initrd.img": []byte("initrd")} {
				if err := os.MkdirAll(filepath.Join(work, filepath.Dir(name)), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(work, name), data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := fs.Finalize(iso9660.FinalizeOptions{RockRidge: rr}); err != nil {
				t.Fatal(err)
			}
			b.Close()
			i := openISO(t, out)
			l, err := i.Detect()
			if err != nil || l.Distro != "fedora" {
				t.Fatalf("Detect = %+v, %v", l, err)
			}
			if got := readAll(t, i, l.Kernel); !bytes.Equal(got, kernel) {
				t.Errorf("kernel: %d bytes, want %d", len(got), len(kernel))
			}
		})
	}
}

// TestLayoutsTable keeps the rule table well-formed: patterns are literal or
// end in one "*", and distro names are unique.
func TestLayoutsTable(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range layouts {
		if seen[r.distro] {
			t.Errorf("duplicate distro %q", r.distro)
		}
		seen[r.distro] = true
		for _, p := range append(append([]string{}, r.kernels...), r.initrds...) {
			if strings.Contains(strings.TrimSuffix(p, "*"), "*") || strings.ContainsAny(p, "?[/") {
				t.Errorf("%s: pattern %q: only literals and a trailing * are supported", r.distro, p)
			}
		}
	}
}

func openISO(t testing.TB, p string) *ISO {
	t.Helper()
	i, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { i.Close() })
	return i
}

func readAll(t *testing.T, i *ISO, p string) []byte {
	t.Helper()
	r, n, err := i.File(p)
	if err != nil {
		t.Fatalf("File(%q): %v", p, err)
	}
	b, err := io.ReadAll(r)
	if err != nil || int64(len(b)) != n {
		t.Fatalf("File(%q): read %d of %d bytes: %v", p, len(b), n, err)
	}
	return b
}

// TestCraftedRoot: two crafted ISOs that go-diskfs v1.9.4 cannot survive
// on its own: a root "." record claiming 4 GiB (it sized its buffer from
// it), and a Rock Ridge continuation area pointing at itself (it looped
// for ever). Both end quickly and without the allocation.
func TestCraftedRoot(t *testing.T) {
	defer func(d time.Duration) { guardTimeout = d }(guardTimeout)
	guardTimeout = 2 * time.Second
	const root = 19 // tinyISO's root directory sector
	ce := func(loc, off, length uint32) []byte {
		b := make([]byte, 28)
		copy(b, "CE")
		b[2], b[3] = 28, 1
		for i, v := range []uint32{loc, off, length} {
			binary.LittleEndian.PutUint32(b[4+8*i:], v)
			binary.BigEndian.PutUint32(b[8+8*i:], v)
		}
		return b
	}
	huge := tinyISO("kernel", "initrd")
	binary.LittleEndian.PutUint32(huge[root*sectorSize+10:], 0xFFFFF000)
	binary.BigEndian.PutUint32(huge[root*sectorSize+14:], 0xFFFFF000)

	loop := tinyISO("kernel", "initrd")
	sec := loop[root*sectorSize : (root+1)*sectorSize]
	dot := append(append([]byte(nil), sec[:34]...), ce(1, 0, 28)...)
	dot[0] = byte(len(dot))
	rest := append([]byte(nil), sec[34:34+34+40]...)
	clear(sec)
	copy(sec, dot)
	copy(sec[len(dot):], rest)
	copy(loop[sectorSize:], ce(1, 0, 28))

	for name, img := range map[string][]byte{"root size": huge, "continuation loop": loop} {
		p := filepath.Join(t.TempDir(), "crafted.iso")
		if err := os.WriteFile(p, img, 0o644); err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		i, err := Open(p)
		if err == nil {
			_, err = i.Detect()
			i.Close()
		}
		runtime.ReadMemStats(&after)
		if grew := (after.TotalAlloc - before.TotalAlloc) >> 20; grew > 512 {
			t.Errorf("%s: allocated %d MiB", name, grew)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("%s: took %s", name, took)
		}
		t.Logf("%s: %v", name, err)
	}
}
