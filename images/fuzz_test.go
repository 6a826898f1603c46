package images

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParseRef: refs arrive in API requests and host reports.
func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"debian:12", "a:b:c", ":", "Debian:12", "n:../../x", "x:\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		name, version, err := ParseRef(ref)
		if err != nil {
			return
		}
		if name+":"+version != ref {
			t.Fatalf("ParseRef(%q) = %q, %q", ref, name, version)
		}
		for _, part := range []string{name, version} {
			if strings.ContainsAny(part, "/\\:\x00") || part == "." || part == ".." {
				t.Fatalf("ParseRef(%q) accepted unsafe part %q", ref, part)
			}
		}
	})
}

// FuzzBlobPath: digests arrive in HTTP paths; no input may name a file
// outside blobs/sha256.
func FuzzBlobPath(f *testing.F) {
	for _, s := range []string{
		"sha256:" + strings.Repeat("ab", 32),
		"sha256:../../etc",
		"sha256:" + strings.Repeat("AB", 32),
		"sha256:" + strings.Repeat("ab", 31) + "/.",
	} {
		f.Add(s)
	}
	s, _, _ := newStore(f)
	blobs := filepath.Join(string(s.path), "blobs", "sha256") + string(filepath.Separator)
	f.Fuzz(func(t *testing.T, digest string) {
		p, err := s.BlobPath(digest)
		if checkDigest(digest) == nil {
			return // well-formed: found or ErrNotFound, both fine
		}
		if err == nil {
			t.Fatalf("BlobPath(%q) = %q, accepted a malformed digest", digest, p)
		}
		if p != "" && !strings.HasPrefix(p, blobs) {
			t.Fatalf("BlobPath(%q) = %q, outside %s", digest, p, blobs)
		}
	})
}

// FuzzResolve: refs ("NAME:VERSION", digests, "NAME@CHANNEL") arrive in
// API paths and hosts files. Resolve must never panic, and only a
// well-formed ref may find anything.
func FuzzResolve(f *testing.F) {
	for _, s := range []string{"demo:1", "demo@stable", "demo@", "@stable", "demo@../x", "demo@stable@x", "Demo@stable", "sha256:x"} {
		f.Add(s)
	}
	s, _, _ := newStore(f)
	img, err := s.Import(context.Background(), ImportSpec{Name: "demo", Version: "1", Files: files(f, map[string]string{RoleKernel: "k"})})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := s.Promote(context.Background(), "demo:1", "stable", "fuzz"); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		got, err := s.Resolve(ref)
		if err != nil {
			return
		}
		if ref != "demo:1" && ref != "demo@stable" && ref != img.Digest {
			t.Fatalf("Resolve(%q) found %s", ref, got.Ref())
		}
	})
}
