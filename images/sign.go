package images

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"aead.dev/minisign"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Signatures are minisign signatures (Ed25519, the format of the minisign
// and signify tools, via aead.dev/minisign) of the version's manifest
// digest string "sha256:<hex>". Signing the digest signs everything: the
// manifest names every blob by digest. Anyone can check one without
// phoenix:
//
//	printf %s sha256:<hex> > m && minisign -Vm m -x <hex>.minisig -p key.pub
//
// They are kept as files DIR/signatures/<hex>.minisig beside the layout's
// blobs rather than as OCI referrer artifacts: a signature then never
// changes index.json (the version's own entry stays the immutable record),
// and operators can copy or inspect one with plain tools.
const (
	signatureDir = "signatures"
	signatureExt = ".minisig"
)

// ErrUnsigned is wrapped by the errors of a version without a signature,
// or without one that the given key verifies.
var ErrUnsigned = errors.New("not signed by a trusted key")

// SignDigest returns the minisign signature of a manifest digest, as
// Store.AddSignature expects it. The trusted comment names ref.
func SignDigest(key minisign.PrivateKey, ref, digest string) []byte {
	return minisign.SignWithComments(key, []byte(digest), "phoenix image "+ref+" "+digest, "signature from phoenix image sign")
}

func (s *Store) signatureFile(digest string) string {
	return filepath.Join(string(s.path), signatureDir, strings.TrimPrefix(digest, "sha256:")+signatureExt)
}

// AddSignature stores sig, a minisign signature of the manifest digest of
// ref, replacing an earlier one. It checks that sig parses, not who made
// it: that is what a key given to VerifySignature decides.
func (s *Store) AddSignature(ref string, sig []byte) (Image, error) {
	img, err := s.Resolve(ref)
	if err != nil {
		return Image{}, err
	}
	var parsed minisign.Signature
	if err := parsed.UnmarshalText(sig); err != nil {
		return Image{}, fmt.Errorf("image %s: signature: %w", ref, err)
	}
	// Under s.mu: GC clears s.tmp of leftovers, the temp file of this
	// write included, and Remove must not slip in between.
	s.mu.Lock()
	defer s.mu.Unlock()
	im, err := s.readIndex()
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	if !hasVersion(im, img.Digest) {
		return Image{}, fmt.Errorf("image %s: version %w (removed)", ref, ErrNotFound)
	}
	if err := os.MkdirAll(filepath.Join(string(s.path), signatureDir), 0o755); err != nil {
		return Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	if err := s.writeFileAtomic(s.signatureFile(img.Digest), sig, 0o444); err != nil {
		return Image{}, fmt.Errorf("image %s: signature: %w", ref, err)
	}
	return img, nil
}

// Signature returns the stored signature of the version with manifest
// digest, or an error wrapping ErrUnsigned (for the caller to name the
// version).
func (s *Store) Signature(digest string) ([]byte, error) {
	if err := checkDigest(digest); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(s.signatureFile(digest))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (no signature)", ErrUnsigned)
	}
	return b, err
}

// VerifySignature checks that ref's version carries a signature by key.
func (s *Store) VerifySignature(ref string, key minisign.PublicKey) (Image, error) {
	img, err := s.Resolve(ref)
	if err != nil {
		return Image{}, err
	}
	sig, err := s.Signature(img.Digest)
	if err != nil {
		return img, fmt.Errorf("image %s (%s): %w", img.Ref(), img.Digest, err)
	}
	if !minisign.Verify(key, []byte(img.Digest), sig) {
		return img, fmt.Errorf("image %s (%s): %w (signature does not verify with key %016X)", img.Ref(), img.Digest, ErrUnsigned, key.ID())
	}
	return img, nil
}

// SignedOnly is a Store that resolves only versions signed by Key: what
// `serve --require-signed` hands the boot server, so that a host whose
// version is unsigned gets an error script, never the image. Blobs are
// still served by digest: only a script can lead a host to them.
type SignedOnly struct {
	*Store
	Key minisign.PublicKey
}

// Resolve is Store.Resolve, refusing a version Key has not signed.
func (o SignedOnly) Resolve(ref string) (Image, error) {
	return o.VerifySignature(ref, o.Key)
}

// ParsePublicKey reads a minisign public key: the file's text, or the
// base64 key alone.
func ParsePublicKey(text []byte) (minisign.PublicKey, error) {
	var k minisign.PublicKey
	lines := strings.Split(strings.TrimSpace(string(text)), "\n")
	if err := k.UnmarshalText([]byte(strings.TrimSpace(lines[len(lines)-1]))); err != nil {
		return k, fmt.Errorf("minisign public key: %w", err)
	}
	return k, nil
}

// digestHash converts a checked "sha256:<hex>" digest.
func digestHash(digest string) (v1.Hash, error) {
	if err := checkDigest(digest); err != nil {
		return v1.Hash{}, err
	}
	return v1.NewHash(digest)
}
