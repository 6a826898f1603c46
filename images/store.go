// Package images is phoenix's versioned, content-addressed, read-only image
// store, kept as a standard OCI image layout (oci-layout, index.json,
// blobs/sha256/...) so that OCI tools and registries can read and push it.
//
// One image version is one OCI manifest: a config blob (name, version, arch,
// boot mode, command line) and one layer blob per artifact (kernel, initrd,
// squashfs rootfs, raw disk). index.json names each manifest "NAME:VERSION".
// A published version is never changed: blobs are 0444 and written by
// temp file, fsync and rename; index.json is replaced atomically and last.
//
// Channels ("NAME@CHANNEL", see Promote) are further index.json tags whose
// moves are kept as a chain of history blobs; Verify re-hashes and
// quarantines, GC sweeps, Push and Pull move versions through a registry
// unchanged, signatures are minisign files beside the layout, and API
// serves all of it to the CLI.
//
// It is not an ISO reader or image builder (those live in packages below
// images/), and it does not decide which host boots what.
package images

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ErrNotFound is wrapped by errors about an image version or blob that is
// not in the store.
var ErrNotFound = errors.New("not found")

// ErrImmutable is wrapped by the error of an import that would change a
// published image version.
var ErrImmutable = errors.New("published version is immutable")

// Store is an image store in one directory, made by Open. Its methods are safe for
// concurrent use; only one process may use a directory at a time (the
// server holds a lock on its state directory for that).
type Store struct {
	path layout.Path
	tmp  string

	// mu serialises index.json updates: read, check, append, replace.
	mu sync.Mutex
	// importing is held shared by imports and pulls from their first blob
	// to their index entry, and exclusively by GC, which would otherwise
	// sweep the blobs of a version not yet in the index.
	importing sync.RWMutex

	subMu sync.Mutex
	subs  map[chan ChannelMove]struct{}
	// cache maps a manifest v1.Hash to its Image. Manifests are
	// content-addressed, so an entry can never be stale.
	cache sync.Map

	// index caches the parsed index.json: every boot script resolves an
	// image, and re-reading the file each time put milliseconds on the
	// script's tail latency. It is keyed by the file's identity (inode,
	// size, mtime), so a replace by writeIndex or by an outside OCI tool
	// is seen at once.
	indexMu  sync.Mutex
	indexKey indexKey
	indexVal *v1.IndexManifest
}

// indexKey identifies one version of index.json on disk.
type indexKey struct {
	ino, size int64
	mtime     time.Time
}

// Open opens the store in dir, creating an empty OCI layout there if needed.
// tmpDir holds the temp files of imports; it must be on the same file system
// as dir (files are renamed from it) and Open removes the leftovers a killed
// import left in it.
func Open(dir, tmpDir string) (*Store, error) {
	s := &Store{path: layout.Path(dir), tmp: tmpDir}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	if err := os.MkdirAll(tmpDir, 0o755); err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	if err := removeLeftovers(tmpDir); err != nil {
		return nil, fmt.Errorf("image store: remove leftover temp files: %w", err)
	}
	if err := s.initLayout(); err != nil {
		return nil, fmt.Errorf("image store %s: %w", dir, err)
	}
	return s, nil
}

// initLayout writes oci-layout and an empty index.json if they are missing.
// layout.Write would do it too, but with a plain os.WriteFile: a crash
// could leave an empty index.json behind.
func (s *Store) initLayout() error {
	ociLayout := filepath.Join(string(s.path), "oci-layout")
	b, err := os.ReadFile(ociLayout)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := s.writeFileAtomic(ociLayout, []byte(`{"imageLayoutVersion":"1.0.0"}`+"\n"), 0o444); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		var l struct {
			Version string `json:"imageLayoutVersion"`
		}
		if err := json.Unmarshal(b, &l); err != nil || l.Version != "1.0.0" {
			return fmt.Errorf("oci-layout: want imageLayoutVersion 1.0.0, got %q", b)
		}
	}
	if _, err := os.Stat(filepath.Join(string(s.path), "index.json")); errors.Is(err, fs.ErrNotExist) {
		return s.writeIndex(&v1.IndexManifest{})
	} else if err != nil {
		return err
	}
	_, err = s.readIndex()
	return err
}

// readIndex reads index.json through go-containerregistry's layout reader.
func (s *Store) readIndex() (*v1.IndexManifest, error) {
	var key indexKey
	if fi, err := os.Stat(filepath.Join(string(s.path), "index.json")); err == nil {
		key = indexKey{size: fi.Size(), mtime: fi.ModTime()}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			key.ino = int64(st.Ino)
		}
	}
	s.indexMu.Lock()
	if s.indexVal != nil && key == s.indexKey && key.ino != 0 {
		im := copyIndex(s.indexVal)
		s.indexMu.Unlock()
		return im, nil
	}
	s.indexMu.Unlock()
	ii, err := s.path.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := ii.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("index.json: %w", err)
	}
	s.indexMu.Lock()
	s.indexKey, s.indexVal = key, copyIndex(im)
	s.indexMu.Unlock()
	return im, nil
}

// copyIndex copies the manifest list so that callers may append to or
// reorder what they were given without touching the cache.
func copyIndex(im *v1.IndexManifest) *v1.IndexManifest {
	c := *im
	c.Manifests = append([]v1.Descriptor(nil), im.Manifests...)
	return &c
}

// writeIndex replaces index.json atomically. layout.Path.AppendDescriptor
// would truncate and rewrite it in place (os.WriteFile, no fsync), so a
// crash could lose every published version; only the encoding is shared.
func (s *Store) writeIndex(im *v1.IndexManifest) error {
	s.indexMu.Lock()
	s.indexVal = nil
	s.indexMu.Unlock()
	im.SchemaVersion = 2
	im.MediaType = types.OCIImageIndex
	if im.Manifests == nil {
		im.Manifests = []v1.Descriptor{} // "manifests" is required: [] not null
	}
	b, err := json.MarshalIndent(im, "", "  ")
	if err != nil {
		return err
	}
	return s.writeFileAtomic(filepath.Join(string(s.path), "index.json"), append(b, '\n'), 0o644)
}

func (s *Store) blobFile(h v1.Hash) string {
	return filepath.Join(string(s.path), "blobs", h.Algorithm, h.Hex)
}

// BlobPath returns the file holding the blob with digest
// "sha256:<64 lowercase hex>". The file is read-only and never rewritten, so
// it can be served as is. Any other digest form is refused, which also keeps
// the path inside the store. A blob that Verify found corrupt and moved to
// quarantine gives an error wrapping ErrCorrupt, so it is never served.
func (s *Store) BlobPath(digest string) (string, error) {
	if err := checkDigest(digest); err != nil {
		return "", err
	}
	p := s.blobFile(v1.Hash{Algorithm: "sha256", Hex: strings.TrimPrefix(digest, "sha256:")})
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		if _, qerr := os.Stat(s.quarantineFile(digest)); qerr == nil {
			return "", fmt.Errorf("blob %s: %w", digest, ErrCorrupt)
		}
		return "", fmt.Errorf("blob %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("blob %s: %w", digest, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("blob %s: not a regular file", digest)
	}
	return p, nil
}

// Import publishes a new image version from the files and readers in
// spec, streaming each once into the store while hashing it. Importing a
// NAME:VERSION that exists is a no-op returning the existing image if the
// content (the artifacts and every config field but the created time) is
// the same, and an error wrapping ErrImmutable otherwise. Nothing is
// visible until the index entry, written last, is; a killed import leaves
// only unreferenced blobs and temp files, which Open and GC remove.
func (s *Store) Import(ctx context.Context, spec ImportSpec) (Image, error) {
	ref := spec.Name + ":" + spec.Version
	cfg, err := spec.config(time.Now())
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	// GC must not sweep the blobs of an import before its index entry.
	s.importing.RLock()
	defer s.importing.RUnlock()

	var layers []v1.Descriptor
	for _, r := range roles {
		var (
			h    v1.Hash
			size int64
			err  error
		)
		if path, ok := spec.Files[r.name]; ok {
			h, size, err = s.importFile(ctx, r.name, path)
			if err != nil {
				return Image{}, fmt.Errorf("image %s: %s %s: %w", ref, r.name, path, err)
			}
		} else if src, ok := spec.Readers[r.name]; ok {
			var rd io.Reader
			if rd, err = checkContent(r.name, src.R); err == nil {
				h, size, err = s.writeBlob(ctx, rd, src.Size)
			}
			if err != nil {
				return Image{}, fmt.Errorf("image %s: %s: %w", ref, r.name, err)
			}
		} else {
			continue
		}
		layers = append(layers, layerDescriptor(r.name, h, size))
	}
	return s.commit(ctx, cfg, layers)
}

func layerDescriptor(role string, h v1.Hash, size int64) v1.Descriptor {
	mt, _ := roleMediaType(role)
	return v1.Descriptor{
		MediaType:   mt,
		Size:        size,
		Digest:      h,
		Annotations: map[string]string{annotationTitle: role},
	}
}

// commit writes the config and manifest of a version whose layers are
// already stored, then its index entry. The caller holds importing.RLock.
func (s *Store) commit(ctx context.Context, cfg imageConfig, layers []v1.Descriptor) (Image, error) {
	ref := cfg.Name + ":" + cfg.Version
	rawCfg, err := json.Marshal(cfg)
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	cfgHash, cfgSize, err := v1.SHA256(bytes.NewReader(rawCfg))
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  ArtifactType,
		Config:        v1.Descriptor{MediaType: ConfigMediaType, Size: cfgSize, Digest: cfgHash},
		Layers:        layers,
		Annotations:   map[string]string{annotationCreated: cfg.Created.Format(time.RFC3339)},
	}
	rawManifest, err := json.Marshal(m)
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	img, err := s.publishVersion(ctx, rawManifest, rawCfg, cfg, true)
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	return img, nil
}

// publishVersion stores a manifest and its config blob and adds the index
// entry "NAME:VERSION" last. If the version exists, it returns it when the
// content is the same (by sameContent if lenient, else by digest) and an
// ErrImmutable error otherwise.
func (s *Store) publishVersion(ctx context.Context, rawManifest, rawCfg []byte, cfg imageConfig, lenient bool) (Image, error) {
	ref := cfg.Name + ":" + cfg.Version
	mHash, mSize, err := v1.SHA256(bytes.NewReader(rawManifest))
	if err != nil {
		return Image{}, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(rawManifest))
	if err != nil {
		return Image{}, err
	}
	img, err := toImage(mHash, m, cfg)
	if err != nil {
		return Image{}, err
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	im, err := s.readIndex()
	if err != nil {
		return Image{}, err
	}
	if i := slices.IndexFunc(im.Manifests, func(d v1.Descriptor) bool { return d.Annotations[annotationRefName] == ref }); i >= 0 {
		old, err := s.load(im.Manifests[i].Digest)
		if err != nil {
			return Image{}, fmt.Errorf("%w (published as %s) but unreadable: %w; remove it (image rm %s) and import it again", ErrImmutable, im.Manifests[i].Digest, err, ref)
		}
		same, diff := sameContent(old, img)
		if !lenient && old.Digest != img.Digest {
			same, diff = false, fmt.Sprintf("manifest %s != %s", img.Digest, old.Digest)
		}
		if !same {
			return Image{}, fmt.Errorf("%w (published as %s): %s", ErrImmutable, old.Digest, diff)
		}
		return old, nil
	}

	// Config and manifest blobs first, the index entry last: until then the
	// version does not exist for any reader.
	for _, b := range [][]byte{rawCfg, rawManifest} {
		if _, _, err := s.writeBlob(ctx, bytes.NewReader(b), int64(len(b))); err != nil {
			return Image{}, err
		}
	}
	im.Manifests = append(im.Manifests, v1.Descriptor{
		MediaType:    types.OCIManifestSchema1,
		Size:         mSize,
		Digest:       mHash,
		ArtifactType: ArtifactType,
		Annotations:  map[string]string{annotationRefName: ref},
	})
	if err := s.writeIndex(im); err != nil {
		return Image{}, fmt.Errorf("index: %w", err)
	}
	s.cache.Store(mHash, img)
	return cloneImage(img), nil
}

func (s *Store) importFile(ctx context.Context, role, path string) (v1.Hash, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return v1.Hash{}, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return v1.Hash{}, 0, err
	}
	if !fi.Mode().IsRegular() {
		return v1.Hash{}, 0, errors.New("not a regular file")
	}
	r, err := checkContent(role, f)
	if err != nil {
		return v1.Hash{}, 0, err
	}
	return s.writeBlob(ctx, r, fi.Size())
}

// notRaw are formats a disk image must not be in, by their first bytes.
var notRaw = []struct {
	magic, what string
}{
	{"\x28\xb5\x2f\xfd", "zstd-compressed (zstd -d it)"},
	{"\x1f\x8b", "gzip-compressed (gunzip it)"},
	{"\xfd7zXZ\x00", "xz-compressed (xz -d it)"},
	{"BZh", "bzip2-compressed (bunzip2 it)"},
	{"QFI\xfb", "a qcow2 image (qemu-img convert -O raw it)"},
	{"KDMV", "a VMDK image (qemu-img convert -O raw it)"},
	{"vhdxfile", "a VHDX image (qemu-img convert -O raw it)"},
}

// checkContent returns r, or why its content cannot serve as role. A disk
// image is written to a host's disk byte for byte and checked by its
// digest, so a compressed or qcow2 file would be "installed" and pass its
// check, and the host would then boot garbage: refuse those here.
func checkContent(role string, r io.Reader) (io.Reader, error) {
	if role != RoleDisk {
		return r, nil
	}
	head := make([]byte, 8)
	n, err := io.ReadFull(r, head)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return nil, err
	}
	head = head[:n]
	for _, f := range notRaw {
		if bytes.HasPrefix(head, []byte(f.magic)) {
			return nil, fmt.Errorf("disk image is %s: a disk image must be raw", f.what)
		}
	}
	return io.MultiReader(bytes.NewReader(head), r), nil
}

// Resolve returns the image version named by ref: "NAME:VERSION", its
// manifest digest "sha256:<hex>", or "NAME@CHANNEL", the version a channel
// points to now (see Promote). An unknown one wraps ErrNotFound.
func (s *Store) Resolve(ref string) (Image, error) {
	if name, channel, ok := strings.Cut(ref, "@"); ok {
		return s.Channel(name, channel)
	}
	var match func(v1.Descriptor) bool
	byDigest := strings.HasPrefix(ref, "sha256:")
	if byDigest {
		if err := checkDigest(ref); err != nil {
			return Image{}, fmt.Errorf("image %s: %w", ref, err)
		}
		match = func(d v1.Descriptor) bool { return d.Digest.String() == ref }
	} else {
		if _, _, err := ParseRef(ref); err != nil {
			return Image{}, err
		}
		match = func(d v1.Descriptor) bool { return d.Annotations[annotationRefName] == ref }
	}
	im, err := s.readIndex()
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	for _, d := range im.Manifests {
		if !isImageDescriptor(d) || !match(d) {
			continue
		}
		img, err := s.load(d.Digest)
		if err != nil {
			return Image{}, fmt.Errorf("image %s: %w", ref, err)
		}
		if !byDigest && img.Ref() != ref {
			return Image{}, fmt.Errorf("image %s: index entry points to %s (%s)", ref, img.Ref(), img.Digest)
		}
		return img, nil
	}
	return Image{}, fmt.Errorf("image %s: %w", ref, ErrNotFound)
}

// List returns every image version, sorted by name, then created time.
func (s *Store) List() ([]Image, error) {
	im, err := s.readIndex()
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	var out []Image
	seen := map[v1.Hash]bool{}
	for _, d := range im.Manifests {
		// Other entries (a channel tag, a signature, something pushed by
		// another tool) are not image versions of their own.
		if !isImageDescriptor(d) || seen[d.Digest] {
			continue
		}
		ref := d.Annotations[annotationRefName]
		if _, _, err := ParseRef(ref); err != nil {
			continue
		}
		img, err := s.load(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", ref, err)
		}
		if img.Ref() != ref {
			continue
		}
		seen[d.Digest] = true
		out = append(out, img)
	}
	slices.SortFunc(out, func(a, b Image) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Version, b.Version)
	})
	return out, nil
}

func isImageDescriptor(d v1.Descriptor) bool {
	return d.MediaType == types.OCIManifestSchema1 && (d.ArtifactType == "" || d.ArtifactType == ArtifactType)
}

// load reads and checks the manifest h and its config. Both are small, so
// their digests are verified on every cache miss.
func (s *Store) load(h v1.Hash) (Image, error) {
	if v, ok := s.cache.Load(h); ok {
		return cloneImage(v.(Image)), nil
	}
	raw, err := s.readVerified(h)
	if err != nil {
		return Image{}, fmt.Errorf("manifest: %w", err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return Image{}, fmt.Errorf("manifest %s: %w", h, err)
	}
	if m.Config.MediaType != ConfigMediaType {
		return Image{}, fmt.Errorf("manifest %s: config media type %q: not a phoenix image", h, m.Config.MediaType)
	}
	rawCfg, err := s.readVerified(m.Config.Digest)
	if err != nil {
		return Image{}, fmt.Errorf("config: %w", err)
	}
	var cfg imageConfig
	if err := json.Unmarshal(rawCfg, &cfg); err != nil {
		return Image{}, fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	img, err := toImage(h, m, cfg)
	if err != nil {
		return Image{}, fmt.Errorf("manifest %s: %w", h, err)
	}
	s.cache.Store(h, img)
	return cloneImage(img), nil
}

// readVerified reads a small blob and checks that it has digest h.
func (s *Store) readVerified(h v1.Hash) ([]byte, error) {
	if err := checkDigest(h.String()); err != nil {
		return nil, err
	}
	b, err := s.path.Bytes(h)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", h, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if got, _, err := v1.SHA256(bytes.NewReader(b)); err != nil {
		return nil, err
	} else if got != h {
		return nil, fmt.Errorf("blob %s: content has digest %s: store is damaged", h, got)
	}
	return b, nil
}

func toImage(h v1.Hash, m *v1.Manifest, cfg imageConfig) (Image, error) {
	img := Image{
		Name:        cfg.Name,
		Version:     cfg.Version,
		Digest:      h.String(),
		Arch:        cfg.Arch,
		Mode:        cfg.Mode,
		Cmdline:     cfg.Cmdline,
		Description: cfg.Description,
		Created:     cfg.Created,
	}
	if err := checkName(img.Name); err != nil {
		return Image{}, fmt.Errorf("config: %w", err)
	}
	if err := checkVersion(img.Version); err != nil {
		return Image{}, fmt.Errorf("config: %w", err)
	}
	for _, l := range m.Layers {
		role := l.Annotations[annotationTitle]
		if mt, ok := roleMediaType(role); !ok || mt != l.MediaType {
			// Trust the media type over a title another tool may have set.
			role = mediaTypeRole(l.MediaType)
		}
		if role == "" {
			continue // a layer a later phoenix version understands
		}
		if _, dup := img.Artifact(role); dup {
			return Image{}, fmt.Errorf("two %s layers", role)
		}
		img.Artifacts = append(img.Artifacts, Artifact{
			Role:      role,
			MediaType: string(l.MediaType),
			Digest:    l.Digest.String(),
			Size:      l.Size,
		})
	}
	if _, ok := img.Artifact(RoleKernel); !ok {
		return Image{}, errors.New("no kernel layer")
	}
	return img, nil
}

// cloneImage keeps callers from changing the cached Artifacts.
func cloneImage(img Image) Image {
	img.Artifacts = slices.Clone(img.Artifacts)
	return img
}
