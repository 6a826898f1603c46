package images

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Push uploads the version ref (anything Resolve accepts) to the registry
// reference dst ("registry/repo:tag"). The manifest is pushed byte for
// byte, so the version keeps its digest there. It returns the digest.
// insecure allows plain HTTP (go-containerregistry uses it for localhost
// anyway).
func (s *Store) Push(ctx context.Context, ref, dst string, insecure bool, opts ...remote.Option) (string, error) {
	img, err := s.Resolve(ref)
	if err != nil {
		return "", err
	}
	tag, err := name.ParseReference(dst, nameOptions(insecure)...)
	if err != nil {
		return "", fmt.Errorf("push %s: %w", dst, err)
	}
	h, err := digestHash(img.Digest)
	if err != nil {
		return "", err
	}
	li, err := s.path.Image(h)
	if err != nil {
		return "", fmt.Errorf("push %s: %w", img.Ref(), err)
	}
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	if err := remote.Write(tag, li, opts...); err != nil {
		return "", fmt.Errorf("push %s to %s: %w", img.Ref(), dst, err)
	}
	return img.Digest, nil
}

// Pull downloads the phoenix image at the registry reference src and
// publishes it, with its manifest digest unchanged. The version's name and
// version come from its config; localRef, if not empty, must agree (the
// config is part of the digest, so it cannot be renamed). Blobs stream to
// disk and are checked against their digests; pulling a version that is
// already here with the same digest is a no-op.
func (s *Store) Pull(ctx context.Context, src, localRef string, insecure bool, opts ...remote.Option) (Image, error) {
	r, err := name.ParseReference(src, nameOptions(insecure)...)
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", src, err)
	}
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	desc, err := remote.Get(r, opts...)
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", src, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: manifest: %w", src, err)
	}
	if m.Config.MediaType != ConfigMediaType {
		return Image{}, fmt.Errorf("pull %s: config media type %q: not a phoenix image", src, m.Config.MediaType)
	}
	// Sizes are the registry's word until the bytes are in: refuse what
	// could not be a phoenix config, or a layer bigger than the state
	// volume can hold, before reading anything.
	if m.Config.Size <= 0 || m.Config.Size > maxConfigSize {
		return Image{}, fmt.Errorf("pull %s: config of %d bytes: a phoenix config is 1 to %d", src, m.Config.Size, maxConfigSize)
	}
	var total int64
	for _, l := range m.Layers {
		if l.Size < 0 {
			return Image{}, fmt.Errorf("pull %s: layer %s: size %d", src, l.Digest, l.Size)
		}
		total += l.Size
	}
	if free, err := freeBytes(s.tmp); err == nil && total > free {
		return Image{}, fmt.Errorf("pull %s: its layers take %d bytes, the state volume has %d free", src, total, free)
	}
	ri, err := desc.Image()
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", src, err)
	}
	rawCfg, err := ri.RawConfigFile()
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: config: %w", src, err)
	}
	if got, _, _ := v1.SHA256(bytes.NewReader(rawCfg)); got != m.Config.Digest {
		return Image{}, fmt.Errorf("pull %s: config has digest %s, manifest says %s", src, got, m.Config.Digest)
	}
	var cfg imageConfig
	if err := json.Unmarshal(rawCfg, &cfg); err != nil {
		return Image{}, fmt.Errorf("pull %s: config: %w", src, err)
	}
	ref := cfg.Name + ":" + cfg.Version
	if localRef != "" && localRef != ref {
		return Image{}, fmt.Errorf("pull %s: it is %s, not %s (name and version are part of the signed digest)", src, ref, localRef)
	}
	img, err := toImage(desc.Digest, m, cfg)
	if err == nil {
		err = cfg.check()
	}
	if err == nil {
		present := map[string]bool{}
		for _, a := range img.Artifacts {
			present[a.Role] = true
		}
		err = checkRoles(cfg.Mode, present)
	}
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", src, err)
	}

	// A different version under the same name is refused by the publish
	// at the end anyway; refusing it now saves downloading its layers.
	if im, err := s.readIndex(); err == nil {
		if old, ok := indexEntry(im, ref); ok && old.Digest != desc.Digest.String() {
			return Image{}, fmt.Errorf("pull %s: image %s: %w (published as %s)", src, ref, ErrImmutable, old.Digest)
		}
	}
	s.importing.RLock()
	defer s.importing.RUnlock()
	for _, l := range m.Layers {
		if mediaTypeRole(l.MediaType) == "" {
			return Image{}, fmt.Errorf("pull %s: layer %s: unknown media type %q", src, l.Digest, l.MediaType)
		}
		if size, err := s.blobSize(l.Digest); err == nil {
			if size != l.Size {
				// The size becomes the artifact's, and a disk's size
				// tells the installer how much to read back.
				return Image{}, fmt.Errorf("pull %s: layer %s: manifest says %d bytes, the stored blob has %d", src, l.Digest, l.Size, size)
			}
			continue // dedupe: already here
		}
		if err := s.pullLayer(ctx, ri, l); err != nil {
			return Image{}, fmt.Errorf("pull %s: layer %s: %w", src, l.Digest, err)
		}
	}
	if img, err = s.publishVersion(ctx, desc.Manifest, rawCfg, cfg, false); err != nil {
		return Image{}, fmt.Errorf("pull %s: image %s: %w", src, ref, err)
	}
	return img, nil
}

func (s *Store) pullLayer(ctx context.Context, ri v1.Image, l v1.Descriptor) error {
	layer, err := ri.LayerByDigest(l.Digest)
	if err != nil {
		return err
	}
	rc, err := layer.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	// At most one byte beyond the declared size: writeBlob then refuses
	// the length instead of filling the volume.
	r, err := checkContent(mediaTypeRole(l.MediaType), io.LimitReader(rc, l.Size+1))
	if err != nil {
		return err
	}
	h, _, err := s.writeBlob(ctx, r, l.Size)
	if err != nil {
		return err
	}
	if h != l.Digest {
		return fmt.Errorf("content has digest %s", h)
	}
	return nil
}

// maxConfigSize bounds a pulled config blob: it is read into memory.
const maxConfigSize = 1 << 20

// freeBytes is the space left to unprivileged writers on dir's file system.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

func nameOptions(insecure bool) []name.Option {
	if insecure {
		return []name.Option{name.Insecure}
	}
	return nil
}
