package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// newStore opens a store the way the server does: DIR/images and DIR/tmp.
func newStore(t testing.TB) (*Store, string, string) {
	t.Helper()
	root := t.TempDir()
	dir, tmp := filepath.Join(root, "images"), filepath.Join(root, "tmp")
	s, err := Open(dir, tmp)
	if err != nil {
		t.Fatal(err)
	}
	return s, dir, tmp
}

// files writes each role's content to a file and returns the role -> path map.
func files(t testing.TB, content map[string]string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	out := map[string]string{}
	for role, c := range content {
		p := filepath.Join(dir, role+".bin")
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
		out[role] = p
	}
	return out
}

func digestOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func TestImportResolveList(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()
	specs := []struct {
		spec    ImportSpec
		content map[string]string
	}{
		{ImportSpec{Name: "debian", Version: "12.2", Cmdline: "console=ttyS0", Created: t0.Add(2 * time.Hour)},
			map[string]string{RoleKernel: "k2", RoleInitrd: "i2", RoleRootfs: "r2"}},
		{ImportSpec{Name: "alpine", Version: "3.20", Mode: ModeDisk, Arch: "arm64", Description: "edge box", Created: t0},
			map[string]string{RoleKernel: "ka", RoleDisk: "disk"}},
		{ImportSpec{Name: "debian", Version: "12.1", Created: t0.Add(time.Hour)},
			map[string]string{RoleKernel: "k1"}},
	}
	imported := map[string]Image{}
	for _, tc := range specs {
		tc.spec.Files = files(t, tc.content)
		img, err := s.Import(ctx, tc.spec)
		if err != nil {
			t.Fatalf("import %s:%s: %v", tc.spec.Name, tc.spec.Version, err)
		}
		if len(img.Artifacts) != len(tc.content) {
			t.Errorf("%s: %d artifacts, want %d", img.Ref(), len(img.Artifacts), len(tc.content))
		}
		for role, c := range tc.content {
			a, ok := img.Artifact(role)
			if !ok {
				t.Fatalf("%s: no %s artifact", img.Ref(), role)
			}
			if a.Digest != digestOf(c) || a.Size != int64(len(c)) {
				t.Errorf("%s %s: got %s/%d, want %s/%d", img.Ref(), role, a.Digest, a.Size, digestOf(c), len(c))
			}
		}
		imported[img.Ref()] = img
	}

	t.Run("defaults", func(t *testing.T) {
		img := imported["debian:12.1"]
		if img.Arch != DefaultArch || img.Mode != ModeMemory || !img.Created.Equal(t0.Add(time.Hour)) {
			t.Errorf("got arch %q mode %q created %v", img.Arch, img.Mode, img.Created)
		}
		if a := imported["alpine:3.20"]; a.Arch != "arm64" || a.Mode != ModeDisk || a.Description != "edge box" {
			t.Errorf("alpine: %+v", a)
		}
		if _, ok := img.Artifact(RoleRootfs); ok {
			t.Error("debian:12.1 has a rootfs artifact it was not given")
		}
	})

	for ref, want := range imported {
		t.Run("resolve "+ref, func(t *testing.T) {
			for _, key := range []string{ref, want.Digest} {
				got, err := s.Resolve(key)
				if err != nil {
					t.Fatalf("Resolve(%q): %v", key, err)
				}
				if got.Digest != want.Digest || got.Ref() != ref || got.Cmdline != want.Cmdline {
					t.Errorf("Resolve(%q) = %+v, want %+v", key, got, want)
				}
			}
		})
	}

	t.Run("resolve errors", func(t *testing.T) {
		for _, tc := range []struct {
			ref      string
			notFound bool
		}{
			{"debian:13", true},
			{"nosuch:1", true},
			{digestOf("not a manifest"), true},
			{imported["debian:12.1"].Artifacts[0].Digest, true}, // a blob, not a version
			{"debian", false},
			{"Debian:12", false},
			{"sha256:abc", false},
			{"", false},
		} {
			_, err := s.Resolve(tc.ref)
			if err == nil || errors.Is(err, ErrNotFound) != tc.notFound {
				t.Errorf("Resolve(%q) = %v, want error (not found: %v)", tc.ref, err, tc.notFound)
			}
		}
	})

	t.Run("list", func(t *testing.T) {
		list, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		var refs []string
		for _, img := range list {
			refs = append(refs, img.Ref())
		}
		if got, want := strings.Join(refs, " "), "alpine:3.20 debian:12.1 debian:12.2"; got != want {
			t.Errorf("List = %s, want %s", got, want)
		}
	})

	t.Run("reopen", func(t *testing.T) {
		s2, err := Open(string(s.path), s.tmp)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s2.Resolve("debian:12.2")
		if err != nil || got.Digest != imported["debian:12.2"].Digest {
			t.Errorf("after reopen: %+v, %v", got, err)
		}
	})
}

func TestReimport(t *testing.T) {
	base := map[string]string{RoleKernel: "kernel", RoleInitrd: "initrd"}
	baseSpec := ImportSpec{Name: "img", Version: "1", Cmdline: "quiet", Description: "d", Created: t0}
	for _, tc := range []struct {
		name      string
		change    func(*ImportSpec, map[string]string)
		immutable bool
	}{
		{"identical", func(*ImportSpec, map[string]string) {}, false},
		{"only created differs", func(s *ImportSpec, _ map[string]string) { s.Created = t0.Add(time.Hour) }, false},
		{"zero created", func(s *ImportSpec, _ map[string]string) { s.Created = time.Time{} }, false},
		{"explicit defaults", func(s *ImportSpec, _ map[string]string) { s.Arch, s.Mode = "amd64", "memory" }, false},
		{"kernel content", func(_ *ImportSpec, c map[string]string) { c[RoleKernel] = "kernel2" }, true},
		{"initrd dropped", func(_ *ImportSpec, c map[string]string) { delete(c, RoleInitrd) }, true},
		{"rootfs added", func(_ *ImportSpec, c map[string]string) { c[RoleRootfs] = "sq" }, true},
		{"cmdline", func(s *ImportSpec, _ map[string]string) { s.Cmdline = "quiet splash" }, true},
		{"description", func(s *ImportSpec, _ map[string]string) { s.Description = "" }, true},
		{"arch", func(s *ImportSpec, _ map[string]string) { s.Arch = "arm64" }, true},
		{"mode", func(s *ImportSpec, c map[string]string) { s.Mode = ModeDisk; c[RoleDisk] = "raw" }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _, _ := newStore(t)
			ctx := context.Background()
			spec := baseSpec
			spec.Files = files(t, base)
			first, err := s.Import(ctx, spec)
			if err != nil {
				t.Fatal(err)
			}
			content := map[string]string{}
			for k, v := range base {
				content[k] = v
			}
			spec2 := baseSpec
			tc.change(&spec2, content)
			spec2.Files = files(t, content)
			second, err := s.Import(ctx, spec2)
			if tc.immutable {
				if !errors.Is(err, ErrImmutable) {
					t.Fatalf("re-import = %v, want ErrImmutable", err)
				}
				t.Logf("error: %v", err)
			} else {
				if err != nil {
					t.Fatalf("re-import: %v", err)
				}
				if second.Digest != first.Digest || !second.Created.Equal(first.Created) {
					t.Errorf("re-import returned %s created %v, want existing %s created %v",
						second.Digest, second.Created, first.Digest, first.Created)
				}
			}
			list, err := s.List()
			if err != nil || len(list) != 1 || list[0].Digest != first.Digest {
				t.Errorf("List after re-import = %+v, %v; want only the first version", list, err)
			}
		})
	}
}

func TestImportBadSpec(t *testing.T) {
	s, _, tmp := newStore(t)
	good := files(t, map[string]string{RoleKernel: "k", RoleDisk: "d"})
	only := func(roles ...string) map[string]string {
		m := map[string]string{}
		for _, r := range roles {
			m[r] = good[r]
		}
		return m
	}
	for _, tc := range []struct {
		name string
		spec ImportSpec
		want string
	}{
		{"bad name", ImportSpec{Name: "Debian", Version: "1", Files: only(RoleKernel)}, "bad name"},
		{"name with slash", ImportSpec{Name: "a/b", Version: "1", Files: only(RoleKernel)}, "bad name"},
		{"empty version", ImportSpec{Name: "a", Version: "", Files: only(RoleKernel)}, "bad version"},
		{"version with colon", ImportSpec{Name: "a", Version: "1:2", Files: only(RoleKernel)}, "bad version"},
		{"version dot start", ImportSpec{Name: "a", Version: ".1", Files: only(RoleKernel)}, "bad version"},
		{"no kernel", ImportSpec{Name: "a", Version: "1", Files: map[string]string{}}, "kernel: required"},
		{"unknown role", ImportSpec{Name: "a", Version: "1", Files: map[string]string{RoleKernel: good[RoleKernel], "dtb": "x"}}, "unknown artifact role"},
		{"empty path", ImportSpec{Name: "a", Version: "1", Files: map[string]string{RoleKernel: good[RoleKernel], RoleInitrd: ""}}, "empty path"},
		{"bad mode", ImportSpec{Name: "a", Version: "1", Mode: "usb", Files: only(RoleKernel)}, "bad mode"},
		{"disk mode without disk", ImportSpec{Name: "a", Version: "1", Mode: ModeDisk, Files: only(RoleKernel)}, "disk: required"},
		{"bad arch", ImportSpec{Name: "a", Version: "1", Arch: "x86 64", Files: only(RoleKernel)}, "bad arch"},
		{"cmdline newline", ImportSpec{Name: "a", Version: "1", Cmdline: "quiet\nchain evil", Files: only(RoleKernel)}, "control character"},
		{"missing file", ImportSpec{Name: "a", Version: "1", Files: map[string]string{RoleKernel: filepath.Join(tmp, "nope")}}, "no such file"},
		{"directory", ImportSpec{Name: "a", Version: "1", Files: map[string]string{RoleKernel: t.TempDir()}}, "not a regular file"},
		{"zstd disk", ImportSpec{Name: "a", Version: "1", Mode: ModeDisk, Files: map[string]string{RoleKernel: good[RoleKernel],
			RoleDisk: files(t, map[string]string{RoleDisk: "\x28\xb5\x2f\xfd rest of the frame"})[RoleDisk]}}, "zstd-compressed"},
		{"qcow2 disk, streamed", ImportSpec{Name: "a", Version: "1", Mode: ModeDisk, Files: only(RoleKernel),
			Readers: map[string]ImportSource{RoleDisk: {R: strings.NewReader("QFI\xfb\x00\x00\x00\x03"), Size: 8}}}, "qcow2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Import(context.Background(), tc.spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Import = %v, want error containing %q", err, tc.want)
			}
		})
	}
	if list, err := s.List(); err != nil || len(list) != 0 {
		t.Errorf("List after failed imports = %v, %v", list, err)
	}
	assertNoTemps(t, tmp)
}

func assertNoTemps(t *testing.T, tmp string) {
	t.Helper()
	ents, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("temp file left in %s: %s", tmp, e.Name())
	}
}

func TestBlobFiles(t *testing.T) {
	s, dir, tmp := newStore(t)
	ctx := context.Background()
	// Two versions share a kernel: its blob is stored once.
	a, err := s.Import(ctx, ImportSpec{Name: "a", Version: "1", Created: t0, Files: files(t, map[string]string{RoleKernel: "shared", RoleInitrd: "i1"})})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Import(ctx, ImportSpec{Name: "a", Version: "2", Created: t0, Files: files(t, map[string]string{RoleKernel: "shared", RoleInitrd: "i2"})})
	if err != nil {
		t.Fatal(err)
	}
	ka, _ := a.Artifact(RoleKernel)
	kb, _ := b.Artifact(RoleKernel)
	if ka.Digest != kb.Digest {
		t.Fatalf("shared kernel digests differ: %s %s", ka.Digest, kb.Digest)
	}

	ents, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	// kernel, i1, i2, 2 configs, 2 manifests.
	if len(ents) != 7 {
		t.Errorf("%d blobs, want 7", len(ents))
	}
	for _, e := range ents {
		p := filepath.Join(dir, "blobs", "sha256", e.Name())
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != 0o444 {
			t.Errorf("%s: mode %v, want 0444", e.Name(), fi.Mode())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := digestOf(string(b)); got != "sha256:"+e.Name() {
			t.Errorf("blob %s holds content with digest %s", e.Name(), got)
		}
	}
	for _, art := range append(a.Artifacts, b.Artifacts...) {
		p, err := s.BlobPath(art.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(p); err != nil || fi.Size() != art.Size {
			t.Errorf("%s: %v, %v", art.Digest, fi, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "index.json")); err != nil || fi.Mode() != 0o644 {
		t.Errorf("index.json: %v, %v", fi, err)
	}
	assertNoTemps(t, tmp)
}

func TestBlobPath(t *testing.T) {
	s, dir, _ := newStore(t)
	img, err := s.Import(context.Background(), ImportSpec{Name: "a", Version: "1", Files: files(t, map[string]string{RoleKernel: "k"})})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := img.Artifact(RoleKernel)
	hexK := strings.TrimPrefix(k.Digest, "sha256:")
	for _, tc := range []struct {
		name, digest string
		want         error // nil: success; errBad: rejected as malformed
	}{
		{"present", k.Digest, nil},
		{"manifest", img.Digest, nil},
		{"absent", digestOf("nothing"), ErrNotFound},
		{"traversal", "sha256:../../etc", errBad},
		{"traversal padded", "sha256:../../../../../../../../../../../../../../../../etc/passwd00000", errBad},
		{"uppercase", "sha256:" + strings.ToUpper(hexK), errBad},
		{"short", "sha256:" + hexK[:63], errBad},
		{"long", "sha256:" + hexK + "0", errBad},
		{"no algorithm", hexK, errBad},
		{"other algorithm", "sha512:" + hexK, errBad},
		{"trailing newline", k.Digest + "\n", errBad},
		{"trailing slash", k.Digest + "/", errBad},
		{"empty", "", errBad},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := s.BlobPath(tc.digest)
			switch tc.want {
			case nil:
				if err != nil {
					t.Fatal(err)
				}
				if want := filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(tc.digest, "sha256:")); p != want {
					t.Errorf("BlobPath = %s, want %s", p, want)
				}
			case errBad:
				if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "bad digest") {
					t.Errorf("BlobPath(%q) = %q, %v; want a bad digest error", tc.digest, p, err)
				}
			default:
				if !errors.Is(err, tc.want) {
					t.Errorf("BlobPath(%q) = %q, %v; want %v", tc.digest, p, err, tc.want)
				}
			}
		})
	}
}

var errBad = errors.New("bad digest")

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		ref, name, version string
		ok                 bool
	}{
		{"debian:12", "debian", "12", true},
		{"a:B_1.2-rc3", "a", "B_1.2-rc3", true},
		{"0.x-y_z:_", "0.x-y_z", "_", true},
		{strings.Repeat("n", 64) + ":" + strings.Repeat("V", 128), strings.Repeat("n", 64), strings.Repeat("V", 128), true},
		{strings.Repeat("n", 65) + ":1", "", "", false},
		{"n:" + strings.Repeat("V", 129), "", "", false},
		{"debian", "", "", false},
		{"debian:", "", "", false},
		{":12", "", "", false},
		{"Debian:12", "", "", false},
		{"-debian:12", "", "", false},
		{".debian:12", "", "", false},
		{"debian:-12", "", "", false},
		{"debian:.12", "", "", false},
		{"deb/ian:12", "", "", false},
		{"debian:1:2", "", "", false},
		{"debian:12\n", "", "", false},
		{"debian:../x", "", "", false},
		{"débian:12", "", "", false},
	} {
		t.Run(tc.ref, func(t *testing.T) {
			name, version, err := ParseRef(tc.ref)
			if (err == nil) != tc.ok || name != tc.name || version != tc.version {
				t.Errorf("ParseRef(%q) = %q, %q, %v", tc.ref, name, version, err)
			}
		})
	}
}

// TestOCICompat checks that go-containerregistry, and so standard OCI tools,
// read what the store writes, and that validate.Image accepts it. validate
// skips its rootfs/diff-ID checks because our config and layer media types
// are not container ones (IsConfig/IsLayer are false): it then checks that
// every layer's digest and size match its bytes, and the config and manifest
// digests and sizes, which is all that applies to a phoenix image.
func TestOCICompat(t *testing.T) {
	s, dir, _ := newStore(t)
	want, err := s.Import(context.Background(), ImportSpec{
		Name: "debian", Version: "12", Cmdline: "console=ttyS0", Created: t0,
		Files: files(t, map[string]string{RoleKernel: "kernel", RoleInitrd: "initrd", RoleRootfs: "squashfs"}),
	})
	if err != nil {
		t.Fatal(err)
	}

	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	ii, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index has %d manifests", len(im.Manifests))
	}
	d := im.Manifests[0]
	if d.Annotations[annotationRefName] != "debian:12" || d.Digest.String() != want.Digest {
		t.Errorf("index entry %+v", d)
	}
	h, err := v1.NewHash(want.Digest)
	if err != nil {
		t.Fatal(err)
	}
	img, err := ii.Image(h)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Image(img); err != nil {
		t.Fatalf("validate.Image: %v", err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.ArtifactType != ArtifactType || m.Config.MediaType != ConfigMediaType {
		t.Errorf("artifactType %q config %q", m.ArtifactType, m.Config.MediaType)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 3 {
		t.Fatalf("%d layers", len(layers))
	}
	for i, role := range []string{RoleKernel, RoleInitrd, RoleRootfs} {
		mt, _ := layers[i].MediaType()
		wantMT, _ := roleMediaType(role)
		if mt != wantMT || m.Layers[i].Annotations[annotationTitle] != role {
			t.Errorf("layer %d: %s %v, want %s %s", i, mt, m.Layers[i].Annotations, wantMT, role)
		}
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"created":"2026-11-01T12:00:00Z"`) {
		t.Errorf("config %s: created is not RFC 3339 UTC", raw)
	}
}

// TestGolden pins the bytes of manifest, config and index.json: any change
// to them changes every image digest, so it must be deliberate (-update).
func TestGolden(t *testing.T) {
	s, dir, _ := newStore(t)
	img, err := s.Import(context.Background(), ImportSpec{
		Name: "debian", Version: "12", Cmdline: "console=ttyS0 quiet", Description: "demo", Created: t0,
		Files: files(t, map[string]string{RoleKernel: "kernel", RoleInitrd: "initrd", RoleRootfs: "squashfs"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	read := func(t *testing.T, p string) []byte {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	manifestPath, _ := s.BlobPath(img.Digest)
	manifest := read(t, manifestPath)
	m, err := v1.ParseManifest(strings.NewReader(string(manifest)))
	if err != nil {
		t.Fatal(err)
	}
	configPath, _ := s.BlobPath(m.Config.Digest.String())
	for name, got := range map[string][]byte{
		"manifest.json": manifest,
		"config.json":   read(t, configPath),
		"index.json":    read(t, filepath.Join(dir, "index.json")),
		"oci-layout":    read(t, filepath.Join(dir, "oci-layout")),
	} {
		t.Run(name, func(t *testing.T) {
			golden := filepath.Join("testdata", "golden", name)
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if want := read(t, golden); string(got) != string(want) {
				t.Errorf("%s changed (run with -update if intended):\ngot  %s\nwant %s", name, got, want)
			}
		})
	}
}

func TestKilledImport(t *testing.T) {
	s, dir, tmp := newStore(t)
	ctx := context.Background()
	if _, err := s.Import(ctx, ImportSpec{Name: "a", Version: "1", Files: files(t, map[string]string{RoleKernel: "k"})}); err != nil {
		t.Fatal(err)
	}

	// A cancelled import fails and cleans up after itself.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Import(cctx, ImportSpec{Name: "a", Version: "2", Files: files(t, map[string]string{RoleKernel: "k2"})}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Import = %v", err)
	}
	assertNoTemps(t, tmp)

	// A killed import leaves what a process dies with: a half-written temp
	// file, and complete blobs (even a manifest) that index.json does not
	// name, because the index entry is written last.
	leftover := filepath.Join(tmp, tmpPrefix+"blob-123456")
	if err := os.WriteFile(leftover, []byte("half a kern"), 0o600); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(tmp, "someone-elses-file")
	if err := os.WriteFile(other, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	orphan := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`
	orphanPath := filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(digestOf(orphan), "sha256:"))
	if err := os.WriteFile(orphanPath, []byte(orphan), 0o444); err != nil {
		t.Fatal(err)
	}

	s2, err := Open(dir, tmp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open left %s: %v", leftover, err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("Open removed a file that is not its own: %v", err)
	}
	list, err := s2.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Ref() != "a:1" {
		t.Errorf("List = %+v, want only a:1", list)
	}
	if _, err := s2.Resolve(digestOf(orphan)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve(orphan manifest) = %v, want ErrNotFound", err)
	}
	if _, err := s2.Resolve("a:2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve(a:2) = %v, want ErrNotFound", err)
	}
}

func TestOpenErrors(t *testing.T) {
	root := t.TempDir()
	bad := filepath.Join(root, "bad")
	if err := os.MkdirAll(bad, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bad, "oci-layout"), []byte(`{"imageLayoutVersion":"2.0.0"}`), 0o444); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(bad, filepath.Join(root, "tmp")); err == nil || !strings.Contains(err.Error(), "imageLayoutVersion") {
		t.Errorf("Open with layout version 2.0.0 = %v", err)
	}
	torn := filepath.Join(root, "torn")
	if err := os.MkdirAll(torn, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(torn, "index.json"), []byte(`{"manifests":[`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(torn, filepath.Join(root, "tmp")); err == nil || !strings.Contains(err.Error(), "index.json") {
		t.Errorf("Open with a torn index.json = %v", err)
	}
}

// TestConcurrentImports checks that no index update is lost.
func TestConcurrentImports(t *testing.T) {
	s, _, tmp := newStore(t)
	const n = 16
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		f := files(t, map[string]string{RoleKernel: fmt.Sprint("kernel ", i%4)})
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Import(context.Background(), ImportSpec{Name: "c", Version: fmt.Sprint(i), Files: f})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	list, err := s.List()
	if err != nil || len(list) != n {
		t.Errorf("List = %d images, %v; want %d", len(list), err, n)
	}
	assertNoTemps(t, tmp)
}

func TestDamagedManifest(t *testing.T) {
	s, _, _ := newStore(t)
	img, err := s.Import(context.Background(), ImportSpec{Name: "a", Version: "1", Files: files(t, map[string]string{RoleKernel: "k"})})
	if err != nil {
		t.Fatal(err)
	}
	p, _ := s.BlobPath(img.Digest)
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(`{"schemaVersion":2}`), 0o644); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(string(s.path), s.tmp) // fresh cache
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Resolve("a:1"); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("Resolve of a damaged manifest = %v", err)
	}
}

// TestImportConstantMemory: importing streams, it never holds a file.
func TestImportConstantMemory(t *testing.T) {
	const size = 64 << 20
	src := filepath.Join(t.TempDir(), "disk.raw")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil { // sparse: cheap to make, full cost to read
		t.Fatal(err)
	}
	f.Close()
	s, _, _ := newStore(t)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	img, err := s.Import(context.Background(), ImportSpec{Name: "big", Version: "1", Files: map[string]string{RoleKernel: src}})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := img.Artifact(RoleKernel); a.Size != size {
		t.Errorf("size %d, want %d", a.Size, size)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4<<20 {
		t.Errorf("importing %d MiB allocated %d KiB; want constant memory", size>>20, alloc>>10)
	}
}

func BenchmarkImport(b *testing.B) {
	const size = 256 << 20
	src := filepath.Join(b.TempDir(), "rootfs")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	for i := 0; i < size/len(chunk); i++ {
		chunk[0] = byte(i) // not one repeated block, in case a file system dedupes
		if _, err := f.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	s, _, _ := newStore(b)
	b.SetBytes(size)
	for i := 0; b.Loop(); i++ {
		if _, err := s.Import(context.Background(), ImportSpec{Name: "bench", Version: fmt.Sprint(i), Files: map[string]string{RoleKernel: src}}); err != nil {
			b.Fatal(err)
		}
	}
}
