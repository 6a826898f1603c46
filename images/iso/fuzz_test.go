package iso

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the FuzzOpen seed corpus in testdata/fuzz")

// tinyISO builds by hand the smallest plain ISO 9660 image holding
// /CASPER/VMLINUZ.;1 and /CASPER/INITRD.;1: sectors 16 (primary volume
// descriptor), 17 (terminator), 18 (path table), 19 (root), 20 (CASPER),
// 21 and 22 (the files). It needs no tools, and its descriptors and
// directories are what a fuzzer should mutate.
func tinyISO(kernel, initrd string) []byte {
	const (
		pvd, term, pt, root, casper, kdata, idata = 16, 17, 18, 19, 20, 21, 22
		sectors                                   = 23
	)
	img := make([]byte, sectors*sectorSize)
	sector := func(n int) []byte { return img[n*sectorSize : (n+1)*sectorSize] }
	both32 := func(b []byte, v uint32) {
		binary.LittleEndian.PutUint32(b, v)
		binary.BigEndian.PutUint32(b[4:], v)
	}
	both16 := func(b []byte, v uint16) {
		binary.LittleEndian.PutUint16(b, v)
		binary.BigEndian.PutUint16(b[2:], v)
	}
	record := func(name string, loc, size uint32, dir bool) []byte {
		n := 33 + len(name)
		if len(name)%2 == 0 {
			n++
		}
		r := make([]byte, n)
		r[0] = byte(n)
		both32(r[2:], loc)
		both32(r[10:], size)
		if dir {
			r[25] = 2
		}
		both16(r[28:], 1)
		r[32] = byte(len(name))
		copy(r[33:], name)
		return r
	}
	dir := func(n int, recs ...[]byte) {
		copy(sector(n), bytes.Join(recs, nil))
	}

	v := sector(pvd)
	v[0], v[6] = 1, 1
	copy(v[1:], "CD001")
	both32(v[80:], sectors)
	both16(v[120:], 1)
	both16(v[124:], 1)
	both16(v[128:], sectorSize)
	for _, off := range []int{813, 830, 847, 864} { // dates: "not specified"
		copy(v[off:], "0000000000000000")
	}
	v[881] = 1
	copy(v[156:], record("\x00", root, sectorSize, true))

	table := []byte{1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 1, 0}
	binary.LittleEndian.PutUint32(table[2:], root)
	binary.LittleEndian.PutUint32(table[12:], casper)
	table = append(table, "CASPER"...)
	both32(v[132:], uint32(len(table)))
	binary.LittleEndian.PutUint32(v[140:], pt)
	copy(sector(pt), table)

	t := sector(term)
	t[0], t[6] = 255, 1
	copy(t[1:], "CD001")

	dir(root, record("\x00", root, sectorSize, true), record("\x01", root, sectorSize, true),
		record("CASPER", casper, sectorSize, true))
	dir(casper, record("\x00", casper, sectorSize, true), record("\x01", root, sectorSize, true),
		record("INITRD.;1", idata, uint32(len(initrd)), false),
		record("VMLINUZ.;1", kdata, uint32(len(kernel)), false))
	copy(sector(kdata), kernel)
	copy(sector(idata), initrd)
	return img
}

func TestTinyISO(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tiny.iso")
	if err := os.WriteFile(p, tinyISO("kernel", "initrd"), 0o644); err != nil {
		t.Fatal(err)
	}
	i := openISO(t, p)
	l, err := i.Detect()
	want := Layout{"ubuntu-casper", "/CASPER/VMLINUZ", "/CASPER/INITRD"}
	if err != nil || l != want {
		t.Fatalf("Detect = %+v, %v; want %+v", l, err, want)
	}
	if got := readAll(t, i, l.Initrd); string(got) != "initrd" {
		t.Errorf("initrd = %q", got)
	}
}

// FuzzOpen feeds arbitrary images to Open, Detect and File: they may fail,
// but must not panic, hang or read outside the image. The input starts at
// the first volume descriptor; the 32 KiB system area before it, which
// nothing reads, is added as zeros to keep inputs small.
func FuzzOpen(f *testing.F) {
	seeds := map[string][]byte{
		"tiny":       tinyISO("kernel", "initrd"),
		"empty-file": tinyISO("kernel", ""),
		"truncated":  tinyISO("kernel", "initrd")[:20*sectorSize],
		"descriptor": tinyISO("", "")[:18*sectorSize],
	}
	if *update {
		dir := filepath.Join("testdata", "fuzz", "FuzzOpen")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			f.Fatal(err)
		}
		for name, b := range seeds {
			entry := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b[descriptorStart:])
			if err := os.WriteFile(filepath.Join(dir, name), []byte(entry), 0o644); err != nil {
				f.Fatal(err)
			}
		}
	}
	f.Add([]byte("CD001"))
	// Rock Ridge and Joliet records (names, symlinks, continuation areas)
	// only come from a real mastering tool; too big to commit as seeds.
	if _, err := exec.LookPath("xorriso"); err == nil {
		rr := flavour{"rockridge", append([]string{"-padding", "0"}, flavours[0].args...)}
		iso, err := os.ReadFile(buildISO(f, rr, tree{
			files:    files("casper/vmlinuz", "casper/initrd.lz", "a/very-long-directory-name/with.dots.in.its.name"),
			symlinks: map[string]string{"casper/initrd": "initrd.lz"},
		}))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(iso[descriptorStart:])
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "fuzz.iso")
		if err := os.WriteFile(p, append(make([]byte, descriptorStart), data...), 0o644); err != nil {
			t.Fatal(err)
		}
		i, err := Open(p)
		if err != nil {
			if !errors.Is(err, ErrNotISO) {
				t.Fatalf("Open = %v, want ErrNotISO", err)
			}
			return
		}
		defer i.Close()
		l, err := i.Detect()
		if err != nil {
			return
		}
		for _, p := range []string{l.Kernel, l.Initrd} {
			r, n, err := i.File(p)
			if err != nil {
				continue
			}
			if got, err := io.Copy(io.Discard, r); err != nil || got != n {
				t.Errorf("File(%q): read %d of %d bytes: %v", p, got, n, err)
			}
		}
	})
}
