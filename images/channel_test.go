package images

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// importN imports name:1..n with distinct kernels.
func importN(t *testing.T, s *Store, name string, n int) []Image {
	t.Helper()
	var out []Image
	for i := 1; i <= n; i++ {
		img, err := s.Import(context.Background(), ImportSpec{Name: name, Version: fmt.Sprint(i), Created: t0.Add(time.Duration(i) * time.Minute),
			Files: files(t, map[string]string{RoleKernel: fmt.Sprint(name, " kernel ", i), RoleInitrd: "shared initrd"})})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, img)
	}
	return out
}

func TestChannels(t *testing.T) {
	s, dir, _ := newStore(t)
	ctx := context.Background()
	v := importN(t, s, "demo", 3)
	events, stop := s.Subscribe()
	defer stop()

	if _, err := s.Resolve("demo@stable"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve(demo@stable) before any promote = %v, want ErrNotFound", err)
	}
	if _, err := s.Rollback(ctx, "demo", "stable", "t"); !errors.Is(err, ErrNoPrevious) {
		t.Errorf("Rollback of a channel without history = %v", err)
	}
	steps := []struct {
		op, arg string
		want    int // index into v of the channel's version afterwards; -1: error
	}{
		{"promote", "demo:1", 0},
		{"promote", "demo:2", 1},
		{"promote", v[2].Digest, 2}, // by digest
		{"rollback", "", 1},
		{"rollback", "", 0},
		{"rollback", "", -1}, // nothing before demo:1
		{"promote", "demo:3", 2},
		{"rollback", "", 0}, // back to what was current before that promotion
	}
	recorded := 0
	for i, st := range steps {
		var m ChannelMove
		var err error
		if st.op == "promote" {
			m, err = s.Promote(ctx, st.arg, "stable", "alice")
		} else {
			m, err = s.Rollback(ctx, "demo", "stable", "bob")
		}
		if st.want < 0 {
			if !errors.Is(err, ErrNoPrevious) {
				t.Fatalf("step %d %s: err = %v, want ErrNoPrevious", i, st.op, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("step %d %s %s: %v", i, st.op, st.arg, err)
		}
		recorded++
		if m.To != v[st.want].Digest || m.ToVersion != v[st.want].Version {
			t.Errorf("step %d: moved to %s, want %s", i, m.ToVersion, v[st.want].Version)
		}
		got, err := s.Resolve("demo@stable")
		if err != nil || got.Digest != v[st.want].Digest {
			t.Errorf("step %d: Resolve(demo@stable) = %s, %v; want %s", i, got.Version, err, v[st.want].Version)
		}
		select {
		case ev := <-events:
			if ev.To != m.To || ev.Channel != "stable" || ev.Kind != st.op {
				t.Errorf("step %d: event %+v", i, ev)
			}
		default:
			t.Errorf("step %d: no event", i)
		}
	}

	// A promote to the current version changes nothing.
	if m, err := s.Promote(ctx, "demo:1", "stable", "x"); err != nil || m.From != m.To {
		t.Errorf("no-op promote = %+v, %v", m, err)
	}
	select {
	case ev := <-events:
		t.Errorf("no-op promote sent event %+v", ev)
	default:
	}

	// A second channel is independent; history merges both.
	if _, err := s.Promote(ctx, "demo:3", "canary", "carol"); err != nil {
		t.Fatal(err)
	}
	hist, err := s.History("demo")
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != recorded+1 {
		t.Errorf("History has %d moves, want %d", len(hist), recorded+1)
	}
	if h := hist[0]; h.Who != "alice" || h.From != "" || h.ToVersion != "1" || h.Kind != MovePromote {
		t.Errorf("first move = %+v", h)
	}
	chs, err := s.Channels("demo")
	if err != nil || len(chs) != 2 || chs["stable"].Version != "1" || chs["canary"].Version != "3" {
		t.Errorf("Channels = %v, %v", chs, err)
	}

	// Channels are not versions: List is unchanged, and the layout is
	// still one go-containerregistry validates, channel tags and all.
	list, err := s.List()
	if err != nil || len(list) != 3 {
		t.Errorf("List = %d, %v; want the 3 versions", len(list), err)
	}
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(ii); err != nil {
		t.Errorf("layout with channels does not validate: %v", err)
	}

	// Everything survives a reopen (no state outside the layout).
	s2, err := Open(dir, s.tmp)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s2.Resolve("demo@canary"); err != nil || got.Version != "3" {
		t.Errorf("after reopen demo@canary = %v, %v", got.Version, err)
	}
	if h2, err := s2.History("demo"); err != nil || len(h2) != len(hist) {
		t.Errorf("after reopen History = %d, %v", len(h2), err)
	}
}

func TestChannelBadInput(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()
	importN(t, s, "demo", 1)
	for _, tc := range []struct{ ref, channel, want string }{
		{"demo:1", "Stable", "bad channel"},
		{"demo:1", "", "bad channel"},
		{"demo:1", "a/b", "bad channel"},
		{"demo:9", "stable", "not found"},
		{"nope@stable", "stable", "not found"},
		{"Demo:1", "stable", "bad name"},
	} {
		if _, err := s.Promote(ctx, tc.ref, tc.channel, "t"); err == nil || !contains(err, tc.want) {
			t.Errorf("Promote(%q, %q) = %v, want %q", tc.ref, tc.channel, err, tc.want)
		}
	}
	if _, err := s.Resolve("demo@"); err == nil {
		t.Error("Resolve(demo@) succeeded")
	}
}

func contains(err error, s string) bool {
	return err != nil && strings.Contains(err.Error(), s)
}

func TestRemoveAndGC(t *testing.T) {
	s, dir, _ := newStore(t)
	ctx := context.Background()
	v := importN(t, s, "demo", 5)
	never := importN(t, s, "other", 1)[0] // never promoted: gc keeps it
	for _, img := range v {
		if _, err := s.Promote(ctx, img.Ref(), "stable", "t"); err != nil {
			t.Fatal(err)
		}
	}
	// rm is refused while a channel or a host uses the version.
	if _, err := s.Remove(ctx, "demo:5", nil); !errors.Is(err, ErrInUse) {
		t.Errorf("Remove of the stable version = %v, want ErrInUse", err)
	}
	users := func(d string) []string {
		if d == v[0].Digest {
			return []string{"web-1"}
		}
		return nil
	}
	if _, err := s.Remove(ctx, "demo:1", users); !errors.Is(err, ErrInUse) || !contains(err, "web-1") {
		t.Errorf("Remove of a version a host uses = %v", err)
	}
	if _, err := s.Remove(ctx, "demo@stable", nil); err == nil {
		t.Error("Remove of a channel succeeded")
	}

	// gc --keep 2: demo:5 (current) and demo:4 stay; demo:2 and :3 go;
	// demo:1 stays because a host uses it; "other" was never promoted.
	rep, err := s.GC(ctx, 2, users)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(rep.Removed) != "[demo:2 demo:3]" {
		t.Errorf("GC removed %v, want [demo:2 demo:3]", rep.Removed)
	}
	if rep.Blobs < 6 { // two kernels, two configs, two manifests
		t.Errorf("GC deleted %d blobs, want >= 6", rep.Blobs)
	}
	for _, img := range []Image{v[1], v[2]} {
		if _, err := s.Resolve(img.Ref()); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s after gc: %v", img.Ref(), err)
		}
		k, _ := img.Artifact(RoleKernel)
		if _, err := s.BlobPath(k.Digest); !errors.Is(err, ErrNotFound) {
			t.Errorf("kernel of %s after gc: %v", img.Ref(), err)
		}
	}
	for _, img := range []Image{v[0], v[3], v[4], never} {
		if _, err := s.Resolve(img.Ref()); err != nil {
			t.Errorf("%s after gc: %v", img.Ref(), err)
		}
		for _, a := range img.Artifacts {
			if _, err := s.BlobPath(a.Digest); err != nil {
				t.Errorf("%s %s after gc: %v", img.Ref(), a.Role, err)
			}
		}
	}
	// History (its move blobs) survives gc; rollback still works.
	if h, err := s.History("demo"); err != nil || len(h) != 5 {
		t.Errorf("History after gc = %d, %v", len(h), err)
	}
	if m, err := s.Rollback(ctx, "demo", "stable", "t"); err != nil || m.ToVersion != "4" {
		t.Errorf("Rollback after gc = %+v, %v", m, err)
	}
	// Rolling back onto a version gc removed fails clearly.
	if _, err := s.Rollback(ctx, "demo", "stable", "t"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Rollback onto a removed version = %v, want ErrNotFound", err)
	}

	// An unpromoted version can be removed; its blobs go at the next gc.
	if _, err := s.Remove(ctx, "other:1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GC(ctx, 2, users); err != nil {
		t.Fatal(err)
	}
	k, _ := never.Artifact(RoleKernel)
	if _, err := s.BlobPath(k.Digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("kernel of removed other:1 after gc: %v", err)
	}
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(ii); err != nil {
		t.Errorf("layout after gc does not validate: %v", err)
	}
	vrep, err := s.Verify(ctx, "")
	if err != nil || !vrep.OK() {
		t.Errorf("Verify after gc = %+v, %v", vrep, err)
	}
}

func TestVerifyQuarantine(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()
	img := importN(t, s, "demo", 1)[0]
	k, _ := img.Artifact(RoleKernel)
	if rep, err := s.Verify(ctx, ""); err != nil || !rep.OK() || rep.Blobs != 4 {
		t.Fatalf("Verify of a clean store = %+v, %v", rep, err)
	}
	flipByte(t, s, k.Digest)
	rep, err := s.Verify(ctx, "demo:1")
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Corrupt) != 1 || rep.Corrupt[0].Digest != k.Digest || fmt.Sprint(rep.Corrupt[0].Images) != "[demo:1]" {
		t.Fatalf("Verify = %+v, want the kernel corrupt", rep)
	}
	if _, err := s.BlobPath(k.Digest); !errors.Is(err, ErrCorrupt) {
		t.Errorf("BlobPath of a quarantined blob = %v, want ErrCorrupt", err)
	}
	if _, err := os.Stat(s.quarantineFile(k.Digest)); err != nil {
		t.Errorf("quarantined file: %v", err)
	}
	// Now it is missing from the version, which Verify keeps saying.
	if rep, _ := s.Verify(ctx, ""); rep.OK() {
		t.Errorf("Verify after quarantine = %+v, want the kernel missing", rep)
	}
	// Re-importing the same content repairs it.
	if _, err := s.Import(ctx, ImportSpec{Name: "demo", Version: "1b", Files: files(t, map[string]string{RoleKernel: "demo kernel 1"})}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BlobPath(k.Digest); err != nil {
		t.Errorf("BlobPath after repair = %v", err)
	}
	if rep, err := s.Verify(ctx, ""); err != nil || !rep.OK() {
		t.Errorf("Verify after repair = %+v, %v", rep, err)
	}
}

// flipByte damages a published blob the way a bad disk would.
func flipByte(t testing.TB, s *Store, digest string) {
	t.Helper()
	p, err := s.BlobPath(digest)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o444); err != nil {
		t.Fatal(err)
	}
}

func TestImportReaders(t *testing.T) {
	s, _, tmp := newStore(t)
	ctx := context.Background()
	img, err := s.Import(ctx, ImportSpec{Name: "r", Version: "1", Readers: map[string]ImportSource{
		RoleKernel: {R: strings.NewReader("kernel bytes"), Size: 12},
		RoleInitrd: {R: strings.NewReader("initrd"), Size: -1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if k, _ := img.Artifact(RoleKernel); k.Digest != digestOf("kernel bytes") {
		t.Errorf("kernel digest %s", k.Digest)
	}
	// A source shorter than announced (a truncated upload) publishes nothing.
	_, err = s.Import(ctx, ImportSpec{Name: "r", Version: "2", Readers: map[string]ImportSource{RoleKernel: {R: strings.NewReader("kern"), Size: 12}}})
	if err == nil || !contains(err, "want 12") {
		t.Errorf("short reader = %v", err)
	}
	if _, err := s.Resolve("r:2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("r:2 after a short import: %v", err)
	}
	if _, err := s.BlobPath(digestOf("kern")); !errors.Is(err, ErrNotFound) {
		t.Errorf("blob of a short import was published: %v", err)
	}
	// A role from both a file and a reader is ambiguous.
	_, err = s.Import(ctx, ImportSpec{Name: "r", Version: "3", Files: files(t, map[string]string{RoleKernel: "k"}),
		Readers: map[string]ImportSource{RoleKernel: {R: strings.NewReader("k"), Size: 1}}})
	if err == nil || !contains(err, "both") {
		t.Errorf("file and reader for one role = %v", err)
	}
	assertNoTemps(t, tmp)
}

func TestCheckRef(t *testing.T) {
	for ref, ok := range map[string]bool{
		"demo:1": true, "demo@stable": true, "sha256:" + strings.Repeat("ab", 32): true,
		"demo": false, "demo@": false, "demo@Stable": false, "demo@a/b": false, "Demo@stable": false,
		"demo@stable:1": false, "sha256:ab": false, "demo:1@x": false,
	} {
		if err := CheckRef(ref); (err == nil) != ok {
			t.Errorf("CheckRef(%q) = %v, want ok=%v", ref, err, ok)
		}
	}
}

// TestPromoteRacingRemove: a Promote that resolved its version just before
// a Remove took it out must fail, not point the channel at a version the
// index no longer lists.
func TestPromoteRacingRemove(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()
	if _, err := s.Import(ctx, ImportSpec{Name: "a", Version: "1", Files: files(t, map[string]string{RoleKernel: "k"})}); err != nil {
		t.Fatal(err)
	}
	promoted := make(chan error, 1)
	// Remove asks who uses the version while it holds the store's lock:
	// Promote starts then, resolves a:1 and waits for that lock.
	if _, err := s.Remove(ctx, "a:1", func(string) []string {
		go func() { _, err := s.Promote(ctx, "a:1", "stable", "t"); promoted <- err }()
		time.Sleep(200 * time.Millisecond)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := <-promoted; !errors.Is(err, ErrNotFound) {
		t.Errorf("promote of a removed version = %v, want ErrNotFound", err)
	}
	if img, err := s.Resolve("a@stable"); err == nil {
		t.Errorf("a@stable points at removed %s", img.Digest)
	}
}

// TestGCKeepsBlobsOfUnreadableManifest: once a version's manifest is
// quarantined, GC cannot tell which blobs that version needs, so it
// deletes none (here the version is on a channel); a broken version that
// no channel holds can still be removed.
func TestGCKeepsBlobsOfUnreadableManifest(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()
	imp := func(version string) Image {
		img, err := s.Import(ctx, ImportSpec{Name: "a", Version: version, Files: files(t, map[string]string{RoleKernel: "kernel " + version})})
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	blob := func(digest string) string {
		return s.blobFile(v1.Hash{Algorithm: "sha256", Hex: strings.TrimPrefix(digest, "sha256:")})
	}
	damage := func(img Image) {
		p := blob(img.Digest)
		os.Chmod(p, 0o644)
		if err := os.WriteFile(p, []byte("{}"), 0o444); err != nil {
			t.Fatal(err)
		}
		if rep, _ := s.Verify(ctx, img.Ref()); rep.OK() {
			t.Fatalf("verify did not notice the damaged manifest of %s", img.Ref())
		}
	}
	a1, a2 := imp("1"), imp("2")
	if _, err := s.Promote(ctx, "a:1", "stable", "t"); err != nil {
		t.Fatal(err)
	}
	damage(a1)
	for range 2 { // the quarantined manifest stays missing, run after run
		rep, err := s.Verify(ctx, "")
		if err != nil || !slices.Contains(rep.Missing, "a:1 "+a1.Digest) {
			t.Errorf("whole-store verify after the quarantine: missing %q, %v; want a:1's manifest", rep.Missing, err)
		}
	}
	if _, err := s.GC(ctx, 1, nil); err == nil || !strings.Contains(err.Error(), "a:1") {
		t.Errorf("gc with an unreadable manifest = %v, want a refusal naming a:1", err)
	}
	if _, err := os.Stat(blob(a1.Artifacts[0].Digest)); err != nil {
		t.Errorf("gc deleted the kernel of a@stable: %v", err)
	}
	if _, err := s.Remove(ctx, "a:1", nil); !errors.Is(err, ErrInUse) {
		t.Errorf("remove of a broken version on a channel = %v, want ErrInUse", err)
	}
	damage(a2)
	if _, err := s.Import(ctx, ImportSpec{Name: "a", Version: "2", Files: files(t, map[string]string{RoleKernel: "kernel 2"})}); !errors.Is(err, ErrImmutable) || !strings.Contains(err.Error(), "image rm a:2") {
		t.Errorf("re-import over a broken version = %v, want ErrImmutable saying to remove it first", err)
	}
	if _, err := s.Remove(ctx, "a:2", nil); err != nil {
		t.Errorf("remove of a broken version no channel holds: %v", err)
	}
	if _, err := s.Import(ctx, ImportSpec{Name: "a", Version: "2", Files: files(t, map[string]string{RoleKernel: "kernel 2"})}); err != nil {
		t.Errorf("re-import after the removal: %v", err)
	}
}
