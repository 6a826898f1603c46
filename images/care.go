package images

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ErrCorrupt is wrapped by the error of BlobPath for a blob that Verify
// found damaged and quarantined: it is never served.
var ErrCorrupt = errors.New("blob is corrupt (quarantined)")

// ErrInUse is wrapped by the error of a Remove of a version that a channel
// or a host still references.
var ErrInUse = errors.New("in use")

// quarantineDir holds blobs whose content no longer matches their digest,
// under their original hex name, for post-mortem. It sits beside blobs/ in
// the layout: OCI tools ignore it.
const quarantineDir = "quarantine"

func (s *Store) quarantineFile(digest string) string {
	return filepath.Join(string(s.path), quarantineDir, strings.TrimPrefix(digest, "sha256:"))
}

func (s *Store) blobSize(h v1.Hash) (int64, error) {
	fi, err := os.Stat(s.blobFile(h))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("blob %s: %w", h, ErrNotFound)
	}
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// CorruptBlob is a blob whose content does not match its digest.
type CorruptBlob struct {
	Digest string   `json:"digest"`
	Got    string   `json:"got"`    // digest of the content found
	Images []string `json:"images"` // NAME:VERSION of every version using it
}

// VerifyReport is the result of Verify.
type VerifyReport struct {
	Blobs   int           `json:"blobs"` // blobs re-hashed
	Bytes   int64         `json:"bytes"`
	Corrupt []CorruptBlob `json:"corrupt,omitempty"` // now in quarantine
	Missing []string      `json:"missing,omitempty"` // "NAME:VERSION DIGEST" of blobs a version needs that are not stored
}

// OK reports whether nothing was corrupt or missing.
func (r VerifyReport) OK() bool { return len(r.Corrupt) == 0 && len(r.Missing) == 0 }

// Verify re-hashes every blob of the version ref (anything Resolve
// accepts), or of the whole store if ref is empty. A blob whose content
// does not match its digest is moved to DIR/quarantine, so BlobPath
// refuses it with ErrCorrupt from then on; re-importing the same content
// repairs it. Corruption is reported, not returned as an error.
func (s *Store) Verify(ctx context.Context, ref string) (VerifyReport, error) {
	var rep VerifyReport
	users := map[string][]string{} // blob digest -> versions
	var want []string
	if ref != "" {
		img, err := s.Resolve(ref)
		if err != nil {
			return rep, err
		}
		want = []string{img.Digest}
		h, _ := v1.NewHash(img.Digest)
		raw, err := s.path.Bytes(h)
		if err == nil {
			if m, err := v1.ParseManifest(strings.NewReader(string(raw))); err == nil {
				want = append(want, m.Config.Digest.String())
			}
		}
		for _, a := range img.Artifacts {
			want = append(want, a.Digest)
		}
		for _, d := range want {
			users[d] = []string{img.Ref()}
		}
	} else {
		// Straight from the index and the manifests, not through List:
		// a version whose manifest or config is damaged cannot be loaded,
		// and must still show among the missing once its blob is in
		// quarantine.
		im, err := s.readIndex()
		if err != nil {
			return rep, fmt.Errorf("image store: %w", err)
		}
		for _, d := range im.Manifests {
			ref := d.Annotations[annotationRefName]
			if !isImageDescriptor(d) || d.Annotations[annotationChannel] != "" || ref == "" {
				continue
			}
			users[d.Digest.String()] = append(users[d.Digest.String()], ref)
			raw, err := s.path.Bytes(d.Digest)
			if err != nil {
				continue
			}
			m, err := v1.ParseManifest(strings.NewReader(string(raw)))
			if err != nil {
				continue
			}
			users[m.Config.Digest.String()] = append(users[m.Config.Digest.String()], ref)
			for _, l := range m.Layers {
				users[l.Digest.String()] = append(users[l.Digest.String()], ref)
			}
		}
		ents, err := os.ReadDir(filepath.Join(string(s.path), "blobs", "sha256"))
		if err != nil {
			return rep, fmt.Errorf("image store: %w", err)
		}
		stored := map[string]bool{}
		for _, e := range ents {
			want = append(want, "sha256:"+e.Name())
			stored["sha256:"+e.Name()] = true
		}
		for d, refs := range users {
			if !stored[d] {
				for _, r := range refs {
					rep.Missing = append(rep.Missing, r+" "+d)
				}
			}
		}
	}
	buf := make([]byte, copyBufSize)
	for _, d := range want {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		if checkDigest(d) != nil {
			continue // not a blob name this store writes
		}
		h, _ := v1.NewHash(d)
		got, n, err := hashFile(s.blobFile(h), buf)
		if errors.Is(err, fs.ErrNotExist) {
			for _, r := range users[d] {
				rep.Missing = append(rep.Missing, r+" "+d)
			}
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("blob %s: %w", d, err)
		}
		rep.Blobs++
		rep.Bytes += n
		if got == d {
			continue
		}
		if err := s.quarantine(h); err != nil {
			return rep, fmt.Errorf("blob %s: quarantine: %w", d, err)
		}
		rep.Corrupt = append(rep.Corrupt, CorruptBlob{Digest: d, Got: got, Images: users[d]})
	}
	slices.Sort(rep.Missing)
	rep.Missing = slices.Compact(rep.Missing)
	return rep, nil
}

func hashFile(path string, buf []byte) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, struct{ io.Reader }{f}, buf)
	if err != nil {
		return "", n, err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), n, nil
}

// quarantine moves a damaged blob out of blobs/ (a rename: the bytes stay
// for post-mortem) and forgets any manifest parsed from it.
func (s *Store) quarantine(h v1.Hash) error {
	q := filepath.Join(string(s.path), quarantineDir)
	if err := os.MkdirAll(q, 0o755); err != nil {
		return err
	}
	if err := os.Rename(s.blobFile(h), filepath.Join(q, h.Hex)); err != nil {
		return err
	}
	s.cache.Delete(h)
	return syncDir(filepath.Dir(s.blobFile(h)))
}

// Remove deletes the version ref ("NAME:VERSION" or its digest) from the
// index. It refuses, with an error wrapping ErrInUse, while a channel
// points to it or users (if not nil) names a host that uses its digest.
// Its blobs stay until GC.
func (s *Store) Remove(ctx context.Context, ref string, users func(digest string) []string) (Image, error) {
	if strings.Contains(ref, "@") {
		return Image{}, fmt.Errorf("image %s: remove a version (NAME:VERSION), not a channel", ref)
	}
	img, resolveErr := s.Resolve(ref)
	s.mu.Lock()
	defer s.mu.Unlock()
	im, err := s.readIndex()
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	if resolveErr != nil {
		// A version whose manifest or config is damaged or quarantined
		// cannot be loaded, but its entry can still go: then GC may
		// sweep again, and a re-import brings the version back whole.
		var ok bool
		if img, ok = indexEntry(im, ref); !ok {
			return Image{}, resolveErr
		}
	}
	if chs := channelsOf(im, img.Digest); len(chs) > 0 {
		return Image{}, fmt.Errorf("image %s: %w by channel %s", img.Ref(), ErrInUse, strings.Join(chs, ", "))
	}
	if users != nil {
		if hosts := users(img.Digest); len(hosts) > 0 {
			return Image{}, fmt.Errorf("image %s: %w by host %s", img.Ref(), ErrInUse, strings.Join(hosts, ", "))
		}
	}
	im.Manifests = slices.DeleteFunc(im.Manifests, func(d v1.Descriptor) bool {
		return d.Annotations[annotationRefName] == img.Ref()
	})
	if err := s.writeIndex(im); err != nil {
		return Image{}, fmt.Errorf("image %s: index: %w", ref, err)
	}
	return img, nil
}

// indexEntry returns what the index says of the version named ref
// (NAME:VERSION) without loading it.
func indexEntry(im *v1.IndexManifest, ref string) (Image, bool) {
	name, version, err := ParseRef(ref)
	if err != nil {
		return Image{}, false
	}
	for _, d := range im.Manifests {
		if d.Annotations[annotationRefName] == ref && d.Annotations[annotationChannel] == "" {
			return Image{Name: name, Version: version, Digest: d.Digest.String()}, true
		}
	}
	return Image{}, false
}

// GCReport says what GC removed.
type GCReport struct {
	Removed     []string `json:"removed"` // NAME:VERSION of archived versions dropped
	Blobs       int      `json:"blobs"`   // blob files deleted
	Bytes       int64    `json:"bytes"`   // their total size
	Quarantined int      `json:"quarantined"`
}

// GC drops archived versions and deletes unreferenced blobs. Of every
// channel's history it keeps the keep most recent distinct versions (the
// current one always; keep < 1 means 1); a version that was in some
// channel's history, is beyond that in all of them and is used by no host
// (users may be nil) is removed. Versions never promoted are kept. Then
// every blob that no index entry, manifest, channel history or signature
// needs is deleted, as are temp files of imports killed earlier.
// Imports wait while GC runs.
func (s *Store) GC(ctx context.Context, keep int, users func(digest string) []string) (GCReport, error) {
	rep := GCReport{Removed: []string{}}
	keep = max(keep, 1)
	// Wait for imports in flight without queueing for the lock: a
	// writer waiting on a sync.RWMutex blocks every new reader, so one
	// slow upload would hold up all other imports behind GC.
	for !s.importing.TryLock() {
		select {
		case <-ctx.Done():
			return rep, fmt.Errorf("image store: gc waited for imports in flight: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	defer s.importing.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	im, err := s.readIndex()
	if err != nil {
		return rep, fmt.Errorf("image store: %w", err)
	}

	// Archive: which versions the channel histories still keep.
	kept, archived := map[string]bool{}, map[string]bool{}
	live := map[v1.Hash]bool{}
	for _, d := range im.Manifests {
		ch := d.Annotations[annotationChannel]
		if ch == "" {
			continue
		}
		hist, err := s.chain(d.Annotations[annotationMove])
		if err != nil {
			return rep, fmt.Errorf("image %s: history: %w", d.Annotations[annotationRefName], err)
		}
		kept[d.Digest.String()] = true
		var recent []string
		for _, m := range slices.Backward(hist) {
			for _, dg := range []string{m.To, m.From} {
				if dg == "" || slices.Contains(recent, dg) {
					continue
				}
				if len(recent) < keep {
					recent = append(recent, dg)
					kept[dg] = true
				} else {
					archived[dg] = true
				}
			}
		}
		for h := d.Annotations[annotationMove]; h != ""; {
			hh, err := v1.NewHash(h)
			if err != nil {
				break
			}
			live[hh] = true
			m, err := s.chainOne(hh)
			if err != nil {
				break
			}
			h = m.Prev
		}
	}
	var drop []string
	for _, d := range im.Manifests {
		dg := d.Digest.String()
		if d.Annotations[annotationChannel] == "" && archived[dg] && !kept[dg] && (users == nil || len(users(dg)) == 0) {
			drop = append(drop, d.Annotations[annotationRefName])
		}
	}
	if len(drop) > 0 {
		im.Manifests = slices.DeleteFunc(im.Manifests, func(d v1.Descriptor) bool {
			return slices.Contains(drop, d.Annotations[annotationRefName]) && d.Annotations[annotationChannel] == ""
		})
		if err := s.writeIndex(im); err != nil {
			return rep, fmt.Errorf("image store: index: %w", err)
		}
		rep.Removed = drop
	}

	// Mark: everything the index still reaches. An entry whose manifest
	// cannot be read hides which blobs it needs: sweeping then could
	// delete the kernel of a version a channel still points at.
	var unreadable []string
	for _, d := range im.Manifests {
		live[d.Digest] = true
		raw, err := s.readVerified(d.Digest)
		var m *v1.Manifest
		if err == nil {
			m, err = v1.ParseManifest(strings.NewReader(string(raw)))
		}
		if err != nil {
			unreadable = append(unreadable, fmt.Sprintf("%s (%s): %v", cmp.Or(d.Annotations[annotationRefName], "?"), d.Digest, err))
			continue
		}
		live[m.Config.Digest] = true
		for _, l := range m.Layers {
			live[l.Digest] = true
		}
	}
	if len(unreadable) > 0 {
		return rep, fmt.Errorf("image store: gc deletes no blobs while a manifest cannot be read; run image verify, then remove or re-import: %s", strings.Join(unreadable, "; "))
	}
	// Sweep.
	blobDir := filepath.Join(string(s.path), "blobs", "sha256")
	ents, err := os.ReadDir(blobDir)
	if err != nil {
		return rep, fmt.Errorf("image store: %w", err)
	}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		h := v1.Hash{Algorithm: "sha256", Hex: e.Name()}
		if live[h] {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		if err := os.Remove(filepath.Join(blobDir, e.Name())); err != nil {
			return rep, fmt.Errorf("image store: gc: %w", err)
		}
		s.cache.Delete(h)
		rep.Blobs++
		rep.Bytes += fi.Size()
	}
	sigs, _ := os.ReadDir(filepath.Join(string(s.path), signatureDir))
	for _, e := range sigs {
		hex, ok := strings.CutSuffix(e.Name(), signatureExt)
		if ok && !live[v1.Hash{Algorithm: "sha256", Hex: hex}] {
			os.Remove(filepath.Join(string(s.path), signatureDir, e.Name()))
		}
	}
	if q, err := os.ReadDir(filepath.Join(string(s.path), quarantineDir)); err == nil {
		rep.Quarantined = len(q)
	}
	if err := syncDir(blobDir); err != nil {
		return rep, err
	}
	return rep, removeLeftovers(s.tmp)
}

func (s *Store) chainOne(h v1.Hash) (ChannelMove, error) {
	raw, err := s.readVerified(h)
	if err != nil {
		return ChannelMove{}, err
	}
	var m ChannelMove
	err = json.Unmarshal(raw, &m)
	return m, err
}
