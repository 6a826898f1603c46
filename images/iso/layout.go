package iso

import (
	"errors"
	"fmt"
	iofs "io/fs"
	"path"
	"sort"
	"strings"
)

// Layout is where a distribution keeps its network-bootable kernel and
// initrd inside its ISO.
type Layout struct {
	// Distro names the layout that matched, e.g. "debian-installer".
	Distro string
	// Kernel and Initrd are slash paths inside the ISO as the ISO spells
	// them, with symlinks followed, e.g. "/install.amd/vmlinuz".
	Kernel, Initrd string
}

// rule describes one layout. Patterns are names inside dir, either literal
// or a prefix followed by "*"; each list is tried in order. A wildcard
// initrd pattern only pairs with a wildcard kernel whose "*" matched the same
// text, so "vmlinuz-6.1.0-18-amd64" goes with "initrd.img-6.1.0-18-amd64".
type rule struct {
	distro  string
	dir     string
	kernels []string
	initrds []string
}

// layouts is ordered: the first rule that matches wins. Live systems come
// before installers because Debian live ISOs also carry the installer under
// /install, and the live system is what a memory-mode host should run.
var layouts = []rule{
	{"ubuntu-casper", "casper", []string{"vmlinuz", "vmlinuz.efi"}, []string{"initrd", "initrd.lz", "initrd.gz", "initrd.img"}},
	{"debian-live", "live", []string{"vmlinuz", "vmlinuz-*"}, []string{"initrd.img", "initrd.img-*"}},
	{"debian-installer", "install.amd", []string{"vmlinuz"}, []string{"initrd.gz"}},
	{"debian-installer-arm64", "install.a64", []string{"vmlinuz"}, []string{"initrd.gz"}},
	{"debian-installer-i386", "install.386", []string{"vmlinuz"}, []string{"initrd.gz"}},
	{"ubuntu-installer", "install", []string{"vmlinuz"}, []string{"initrd.gz"}},
	{"debian-mini", ".", []string{"linux"}, []string{"initrd.gz"}},
	{"fedora", "images/pxeboot", []string{"vmlinuz"}, []string{"initrd.img"}},
	{"alpine-lts", "boot", []string{"vmlinuz-lts"}, []string{"initramfs-lts"}},
	{"alpine-virt", "boot", []string{"vmlinuz-virt"}, []string{"initramfs-virt"}},
	{"arch", "arch/boot/x86_64", []string{"vmlinuz-linux"}, []string{"initramfs-linux.img"}},
	{"opensuse", "boot/x86_64/loader", []string{"linux"}, []string{"initrd"}},
}

// Detect returns the first known layout present in the ISO, or an error
// wrapping ErrNoLayout that lists the ISO's top-level names. Names match
// as in File: exactly, then ignoring case, ";1" and trailing dots, then
// treating punctuation as "_" (plain ISO 9660 names). When several kernel
// versions match a wildcard, the lexically greatest is tried first.
func (i *ISO) Detect() (Layout, error) {
	for _, r := range layouts {
		l, err := i.match(r)
		if err != nil {
			return Layout{}, err
		}
		if l.Kernel != "" {
			return l, nil
		}
	}
	root, err := i.readDir(".")
	if err != nil {
		return Layout{}, err
	}
	var names []string
	for _, e := range root {
		n := e.Name()
		if e.IsDir() {
			n += "/"
		}
		names = append(names, n)
	}
	if len(names) > 12 {
		names = append(names[:12], "…")
	}
	return Layout{}, fmt.Errorf("%w (top level: %s)", ErrNoLayout, strings.Join(names, " "))
}

// match returns r's layout, a zero Layout if r does not match, or an error
// if the ISO cannot be read.
func (i *ISO) match(r rule) (Layout, error) {
	dir := "."
	if r.dir != "." {
		d, info, err := i.resolve(r.dir)
		if errors.Is(err, iofs.ErrNotExist) || err == nil && !info.IsDir() {
			return Layout{}, nil
		}
		if err != nil {
			return Layout{}, err
		}
		dir = d
	}
	entries, err := i.readDir(dir)
	if err != nil {
		return Layout{}, err
	}
	for _, kp := range r.kernels {
		for _, k := range globEntries(entries, kp) {
			kernel, ok := i.regular(path.Join(dir, k.name))
			if !ok {
				continue
			}
			for _, ip := range r.initrds {
				wild := strings.HasSuffix(ip, "*")
				if wild && !strings.HasSuffix(kp, "*") {
					continue
				}
				for _, in := range globEntries(entries, ip) {
					if wild && in.capture != k.capture {
						continue
					}
					if initrd, ok := i.regular(path.Join(dir, in.name)); ok {
						return Layout{Distro: r.distro, Kernel: "/" + kernel, Initrd: "/" + initrd}, nil
					}
				}
			}
		}
	}
	return Layout{}, nil
}

// regular resolves p and reports whether it is a regular file, returning
// its real path.
func (i *ISO) regular(p string) (string, bool) {
	full, info, err := i.resolve(p)
	if err != nil || !info.Mode().IsRegular() {
		return "", false
	}
	return full, true
}

type globMatch struct {
	name    string // as the ISO spells it
	capture string // what "*" matched, in the matching key's form
}

// globEntries returns the entries matching pattern (literal, or a prefix
// and "*") at the strictest name comparison that matches any entry,
// lexically greatest first.
func globEntries(entries []iofs.DirEntry, pattern string) []globMatch {
	prefix, wild := strings.CutSuffix(pattern, "*")
	for _, key := range []func(string) string{exactName, foldName, looseName} {
		var out []globMatch
		kp := key(prefix)
		for _, e := range entries {
			kn := key(e.Name())
			switch {
			case !wild && kn == kp:
				out = append(out, globMatch{name: e.Name()})
			case wild && strings.HasPrefix(kn, kp):
				out = append(out, globMatch{name: e.Name(), capture: kn[len(kp):]})
			}
		}
		if len(out) > 0 {
			sort.Slice(out, func(a, b int) bool { return out[a].name > out[b].name })
			return out
		}
	}
	return nil
}
