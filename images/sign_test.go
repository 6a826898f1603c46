package images

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"aead.dev/minisign"
	"github.com/google/go-containerregistry/pkg/registry"
)

func TestSignatures(t *testing.T) {
	s, _, _ := newStore(t)
	v := importN(t, s, "demo", 2)
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherPub, _, _ := minisign.GenerateKey(rand.Reader)

	if _, err := s.VerifySignature("demo:1", pub); !errors.Is(err, ErrUnsigned) {
		t.Errorf("VerifySignature of an unsigned version = %v", err)
	}
	if _, err := s.AddSignature("demo:1", []byte("not a signature")); err == nil {
		t.Error("AddSignature accepted garbage")
	}
	if _, err := s.AddSignature("demo:1", SignDigest(priv, "demo:1", v[0].Digest)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifySignature("demo:1", pub); err != nil {
		t.Errorf("VerifySignature = %v", err)
	}
	if _, err := s.VerifySignature("demo:1", otherPub); !errors.Is(err, ErrUnsigned) {
		t.Errorf("VerifySignature with another key = %v, want ErrUnsigned", err)
	}
	// A signature of another digest does not carry over.
	if _, err := s.AddSignature("demo:2", SignDigest(priv, "demo:1", v[0].Digest)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifySignature("demo:2", pub); !errors.Is(err, ErrUnsigned) {
		t.Errorf("VerifySignature with demo:1's signature on demo:2 = %v", err)
	}

	// SignedOnly is what the boot server gets with --require-signed.
	so := SignedOnly{Store: s, Key: pub}
	if _, err := so.Resolve("demo:1"); err != nil {
		t.Errorf("SignedOnly.Resolve(signed) = %v", err)
	}
	if _, err := so.Resolve("demo:2"); !errors.Is(err, ErrUnsigned) {
		t.Errorf("SignedOnly.Resolve(unsigned) = %v", err)
	}
	if _, err := s.Promote(context.Background(), "demo:2", "stable", "t"); err != nil {
		t.Fatal(err)
	}
	if _, err := so.Resolve("demo@stable"); !errors.Is(err, ErrUnsigned) {
		t.Errorf("SignedOnly.Resolve(channel at unsigned) = %v", err)
	}

	// The key's text forms parse.
	text, _ := pub.MarshalText()
	for _, in := range []string{string(text), pub.String(), string(text) + "\n"} {
		if k, err := ParsePublicKey([]byte(in)); err != nil || !k.Equal(pub) {
			t.Errorf("ParsePublicKey(%q) = %v", in, err)
		}
	}
	if _, err := ParsePublicKey([]byte("garbage")); err == nil {
		t.Error("ParsePublicKey(garbage) succeeded")
	}
}

// TestPushPull round-trips versions through go-containerregistry's
// in-process registry on loopback: the manifest digest must survive.
func TestPushPull(t *testing.T) {
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")
	ctx := context.Background()

	src, _, _ := newStore(t)
	v := importN(t, src, "demo", 2)
	for _, img := range v {
		d, err := src.Push(ctx, img.Ref(), host+"/phoenix/demo:"+img.Version, true)
		if err != nil {
			t.Fatal(err)
		}
		if d != img.Digest {
			t.Errorf("pushed %s as %s", img.Digest, d)
		}
	}

	dst, _, tmp := newStore(t)
	got, err := dst.Pull(ctx, host+"/phoenix/demo:1", "demo:1", true)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != v[0].Digest || got.Ref() != "demo:1" || len(got.Artifacts) != 2 {
		t.Errorf("pulled %+v, want digest %s", got, v[0].Digest)
	}
	// Without a local name, the config names it; again is a no-op.
	for range 2 {
		got, err = dst.Pull(ctx, host+"/phoenix/demo:2", "", true)
		if err != nil || got.Digest != v[1].Digest {
			t.Errorf("Pull demo:2 = %v, %v", got.Digest, err)
		}
	}
	if rep, err := dst.Verify(ctx, ""); err != nil || !rep.OK() || rep.Blobs != 7 {
		t.Errorf("Verify after pull = %+v, %v (want 7 blobs: shared initrd)", rep, err)
	}
	// A name other than the config's is refused: it is part of the digest.
	if _, err := dst.Pull(ctx, host+"/phoenix/demo:1", "demo:7", true); err == nil || !strings.Contains(err.Error(), "it is demo:1") {
		t.Errorf("Pull under another name = %v", err)
	}
	// A version that exists with other content is refused.
	other, _, _ := newStore(t)
	if _, err := other.Import(ctx, ImportSpec{Name: "demo", Version: "1", Files: files(t, map[string]string{RoleKernel: "another kernel"})}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Push(ctx, "demo:1", host+"/phoenix/other:1", true); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Pull(ctx, host+"/phoenix/other:1", "", true); !errors.Is(err, ErrImmutable) {
		t.Errorf("Pull of a conflicting demo:1 = %v, want ErrImmutable", err)
	}
	// Not there, bad references.
	if _, err := dst.Pull(ctx, host+"/phoenix/nope:1", "", true); err == nil {
		t.Error("Pull of a missing tag succeeded")
	}
	if _, err := dst.Pull(ctx, "UPPER CASE", "", true); err == nil {
		t.Error("Pull of a bad reference succeeded")
	}
	if _, err := src.Push(ctx, "demo:9", host+"/phoenix/demo:9", true); !errors.Is(err, ErrNotFound) {
		t.Errorf("Push of a missing version = %v", err)
	}
	assertNoTemps(t, tmp)
}

// TestSignDuringGC: GC clears leftover temp files; a signature written
// at the same time must not lose its own.
func TestSignDuringGC(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()
	img, err := s.Import(ctx, ImportSpec{Name: "a", Version: "1", Files: files(t, map[string]string{RoleKernel: "k"})})
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := minisign.GenerateKey(nil)
	sig := SignDigest(priv, img.Ref(), img.Digest)
	stop := make(chan struct{})
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		for {
			select {
			case <-stop:
				return
			default:
				s.GC(ctx, 1, nil)
			}
		}
	}()
	for range 300 {
		if _, err := s.AddSignature("a:1", sig); err != nil {
			t.Errorf("sign during GC: %v", err)
			break
		}
	}
	close(stop)
	<-gcDone
}
