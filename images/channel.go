package images

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Channels are tags in index.json. A channel entry is a second descriptor
// of the version's manifest whose ref.name is "NAME@CHANNEL": '@' is a
// separator the OCI image-layout ref grammar allows, it cannot occur in a
// NAME:VERSION ref (so a channel never shadows a version, whatever the
// version is called), and "NAME@CHANNEL" is what hosts files use.
//
// The channel's history is a chain of small move blobs ("who moved it from
// which version to which, when"), each naming the previous one; the channel
// entry names the newest. A move is one atomic index.json replacement, so
// the pointer and its history can never disagree, and the history travels
// with the layout and is kept by GC like any referenced blob.
const (
	// MoveMediaType is the media type of a channel move blob.
	MoveMediaType = "application/vnd.phoenix.channel.move.v1+json"

	annotationChannel = "vnd.phoenix.channel"
	annotationMove    = "vnd.phoenix.channel.move"
)

// Kinds of channel moves.
const (
	MovePromote  = "promote"
	MoveRollback = "rollback"
)

// ErrNoPrevious is wrapped by the error of a rollback of a channel that has
// no earlier version to go back to.
var ErrNoPrevious = errors.New("no previous version")

var channelRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]{0,30}[a-z0-9])?$`)

func checkChannel(channel string) error {
	if !channelRE.MatchString(channel) {
		return fmt.Errorf("bad channel %q: want 1-32 of [a-z0-9_-], starting and ending with [a-z0-9]", channel)
	}
	return nil
}

// ChannelMove is one move of a channel: the events the fleet controller
// reacts to, and the entries of History.
type ChannelMove struct {
	Name        string    `json:"name"`
	Channel     string    `json:"channel"`
	Kind        string    `json:"kind"`           // MovePromote or MoveRollback
	From        string    `json:"from,omitempty"` // manifest digest; empty for the first move
	FromVersion string    `json:"from_version,omitempty"`
	To          string    `json:"to"`
	ToVersion   string    `json:"to_version"`
	Who         string    `json:"who"`
	Time        time.Time `json:"time"`
	// Prev is the digest of the previous move blob of this channel.
	Prev string `json:"prev,omitempty"`
}

// channelEntry is a channel's descriptor in index.json.
type channelEntry struct {
	index int // in IndexManifest.Manifests
	desc  v1.Descriptor
}

func findChannel(im *v1.IndexManifest, name, channel string) (channelEntry, bool) {
	ref := name + "@" + channel
	for i, d := range im.Manifests {
		if d.Annotations[annotationRefName] == ref && d.Annotations[annotationChannel] == channel {
			return channelEntry{i, d}, true
		}
	}
	return channelEntry{index: -1}, false
}

// Channel returns the version channel of name points to.
func (s *Store) Channel(name, channel string) (Image, error) {
	ref := name + "@" + channel
	if err := checkName(name); err != nil {
		return Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	if err := checkChannel(channel); err != nil {
		return Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	im, err := s.readIndex()
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	e, ok := findChannel(im, name, channel)
	if !ok {
		return Image{}, fmt.Errorf("image %s: channel %w", ref, ErrNotFound)
	}
	img, err := s.load(e.desc.Digest)
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	return img, nil
}

// Channels returns every channel of name and the version it points to.
func (s *Store) Channels(name string) (map[string]Image, error) {
	im, err := s.readIndex()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	out := map[string]Image{}
	for _, d := range im.Manifests {
		ch := d.Annotations[annotationChannel]
		if ch == "" || d.Annotations[annotationRefName] != name+"@"+ch {
			continue
		}
		img, err := s.load(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("image %s@%s: %w", name, ch, err)
		}
		out[ch] = img
	}
	return out, nil
}

// channelsOf returns "NAME@CHANNEL" of every channel pointing to digest.
func channelsOf(im *v1.IndexManifest, digest string) []string {
	var out []string
	for _, d := range im.Manifests {
		if d.Annotations[annotationChannel] != "" && d.Digest.String() == digest {
			out = append(out, d.Annotations[annotationRefName])
		}
	}
	slices.Sort(out)
	return out
}

// ChannelsOf returns "NAME@CHANNEL" of every channel that points to the
// version with manifest digest.
func (s *Store) ChannelsOf(digest string) ([]string, error) {
	im, err := s.readIndex()
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	return channelsOf(im, digest), nil
}

// Promote points channel of ref's image name at ref's version, recording
// who did it. ref is anything Resolve accepts. Promoting the version a
// channel already points to is a no-op that records nothing and returns a
// move whose From equals To.
func (s *Store) Promote(ctx context.Context, ref, channel, who string) (ChannelMove, error) {
	img, err := s.Resolve(ref)
	if err != nil {
		return ChannelMove{}, err
	}
	if err := checkChannel(channel); err != nil {
		return ChannelMove{}, fmt.Errorf("image %s: %w", ref, err)
	}
	return s.move(ctx, img.Name, channel, who, MovePromote, func(*v1.IndexManifest, []ChannelMove) (Image, error) {
		return img, nil
	})
}

// Rollback points channel of name back at the version it pointed to before
// the promotion that brought its current version; successive rollbacks walk
// further back. It fails with ErrNoPrevious when there is none, and with
// ErrNotFound when that version has been removed since.
func (s *Store) Rollback(ctx context.Context, name, channel, who string) (ChannelMove, error) {
	if err := checkName(name); err != nil {
		return ChannelMove{}, fmt.Errorf("image %s@%s: %w", name, channel, err)
	}
	if err := checkChannel(channel); err != nil {
		return ChannelMove{}, fmt.Errorf("image %s@%s: %w", name, channel, err)
	}
	return s.move(ctx, name, channel, who, MoveRollback, func(im *v1.IndexManifest, hist []ChannelMove) (Image, error) {
		stack := promotionStack(hist)
		if len(stack) < 2 {
			return Image{}, fmt.Errorf("image %s@%s: rollback: %w", name, channel, ErrNoPrevious)
		}
		prev := stack[len(stack)-2]
		if !hasVersion(im, prev) {
			return Image{}, fmt.Errorf("image %s@%s: rollback to %s: version %w (removed)", name, channel, prev, ErrNotFound)
		}
		return s.load(v1.Hash{Algorithm: "sha256", Hex: strings.TrimPrefix(prev, "sha256:")})
	})
}

// hasVersion reports whether the index lists the version with manifest
// digest under its NAME:VERSION entry (not only through a channel).
func hasVersion(im *v1.IndexManifest, digest string) bool {
	return slices.ContainsFunc(im.Manifests, func(d v1.Descriptor) bool {
		return d.Digest.String() == digest && d.Annotations[annotationChannel] == ""
	})
}

// promotionStack replays a channel's history, oldest first: a promotion
// pushes its target, a rollback pops. The top is the current version.
func promotionStack(hist []ChannelMove) []string {
	var stack []string
	for _, m := range hist {
		switch m.Kind {
		case MoveRollback:
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			if len(stack) == 0 || stack[len(stack)-1] != m.To {
				stack = append(stack, m.To) // history from elsewhere: trust To
			}
		default:
			stack = append(stack, m.To)
		}
	}
	return stack
}

// move records a channel move under s.mu: target picks the version from
// the index and the channel's history (oldest first).
func (s *Store) move(ctx context.Context, name, channel, who, kind string, target func(*v1.IndexManifest, []ChannelMove) (Image, error)) (ChannelMove, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	im, err := s.readIndex()
	if err != nil {
		return ChannelMove{}, fmt.Errorf("image %s@%s: %w", name, channel, err)
	}
	e, exists := findChannel(im, name, channel)
	var hist []ChannelMove
	if exists {
		if hist, err = s.chain(e.desc.Annotations[annotationMove]); err != nil {
			return ChannelMove{}, fmt.Errorf("image %s@%s: history: %w", name, channel, err)
		}
	}
	img, err := target(im, hist)
	if err != nil {
		return ChannelMove{}, err
	}
	// Promote resolves its version before taking s.mu, so a Remove may
	// have taken it out of the index since; a channel must never point
	// at a version that is no longer listed.
	if !hasVersion(im, img.Digest) {
		return ChannelMove{}, fmt.Errorf("image %s@%s: %s: version %w (removed)", name, channel, img.Ref(), ErrNotFound)
	}
	m := ChannelMove{
		Name: name, Channel: channel, Kind: kind,
		To: img.Digest, ToVersion: img.Version,
		Who: who, Time: time.Now().UTC().Truncate(time.Millisecond),
	}
	if exists {
		m.From = e.desc.Digest.String()
		if old, err := s.load(e.desc.Digest); err == nil {
			m.FromVersion = old.Version
		}
		m.Prev = e.desc.Annotations[annotationMove]
		if m.From == m.To {
			return m, nil
		}
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return ChannelMove{}, err
	}
	h, _, err := s.writeBlob(ctx, bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		return ChannelMove{}, fmt.Errorf("image %s@%s: %w", name, channel, err)
	}
	mh, err := v1.NewHash(img.Digest)
	if err != nil {
		return ChannelMove{}, err
	}
	size, err := s.blobSize(mh)
	if err != nil {
		return ChannelMove{}, fmt.Errorf("image %s@%s: %w", name, channel, err)
	}
	d := v1.Descriptor{
		MediaType:    types.OCIManifestSchema1,
		Size:         size,
		Digest:       mh,
		ArtifactType: ArtifactType,
		Annotations: map[string]string{
			annotationRefName: name + "@" + channel,
			annotationChannel: channel,
			annotationMove:    h.String(),
		},
	}
	if exists {
		im.Manifests[e.index] = d
	} else {
		im.Manifests = append(im.Manifests, d)
	}
	if err := s.writeIndex(im); err != nil {
		return ChannelMove{}, fmt.Errorf("image %s@%s: index: %w", name, channel, err)
	}
	s.notify(m)
	return m, nil
}

// chain reads a channel's move blobs from head back to the first and
// returns them oldest first.
func (s *Store) chain(head string) ([]ChannelMove, error) {
	var out []ChannelMove
	for d := head; d != ""; {
		h, err := v1.NewHash(d)
		if err != nil {
			return nil, err
		}
		raw, err := s.readVerified(h)
		if err != nil {
			return nil, err
		}
		var m ChannelMove
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("move %s: %w", d, err)
		}
		out = append(out, m)
		d = m.Prev
		if len(out) > 1_000_000 {
			return nil, errors.New("history too long")
		}
	}
	slices.Reverse(out)
	return out, nil
}

// History returns every move of every channel of name, oldest first.
func (s *Store) History(name string) ([]ChannelMove, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	im, err := s.readIndex()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", name, err)
	}
	var out []ChannelMove
	for _, d := range im.Manifests {
		ch := d.Annotations[annotationChannel]
		if ch == "" || d.Annotations[annotationRefName] != name+"@"+ch {
			continue
		}
		hist, err := s.chain(d.Annotations[annotationMove])
		if err != nil {
			return nil, fmt.Errorf("image %s@%s: history: %w", name, ch, err)
		}
		out = append(out, hist...)
	}
	slices.SortStableFunc(out, func(a, b ChannelMove) int { return a.Time.Compare(b.Time) })
	return out, nil
}

// Subscribe returns a channel that receives every channel move made from
// now on, and a function that ends the subscription. A subscriber that
// falls more than 64 moves behind misses moves: subscribers are meant to
// wake up and re-read the channels (level-triggered), not to replay.
func (s *Store) Subscribe() (<-chan ChannelMove, func()) {
	c := make(chan ChannelMove, 64)
	s.subMu.Lock()
	if s.subs == nil {
		s.subs = map[chan ChannelMove]struct{}{}
	}
	s.subs[c] = struct{}{}
	s.subMu.Unlock()
	return c, func() {
		s.subMu.Lock()
		defer s.subMu.Unlock()
		if _, ok := s.subs[c]; ok {
			delete(s.subs, c)
			close(c)
		}
	}
}

func (s *Store) notify(m ChannelMove) {
	s.subMu.Lock()
	defer s.subMu.Unlock()
	for c := range s.subs {
		select {
		case c <- m:
		default:
		}
	}
}
