package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phoenixboot/phoenix/images"
)

// simImages is an image source with channels, for tests.
type simImages struct {
	mu       sync.Mutex
	channels map[string]string // "demo@stable" → "demo:1"
	known    map[string]bool   // "demo:1"
}

func newSimImages(versions ...string) *simImages {
	s := &simImages{channels: map[string]string{}, known: map[string]bool{}}
	for _, v := range versions {
		s.known[v] = true
	}
	return s
}

func simDigest(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func (s *simImages) promote(channel, ref string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.channels[channel] = ref
	s.known[ref] = true
}

func (s *simImages) Resolve(ref string) (images.Image, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if strings.HasPrefix(ref, "sha256:") {
		for k := range s.known {
			if simDigest(k) == ref {
				ref = k
				break
			}
		}
	}
	if v, ok := s.channels[ref]; ok {
		ref = v
	}
	if !s.known[ref] {
		return images.Image{}, fmt.Errorf("image %s: %w", ref, images.ErrNotFound)
	}
	name, version, _ := strings.Cut(ref, ":")
	img := images.Image{Name: name, Version: version, Digest: simDigest(ref), Mode: ModeMemory}
	if name != "nodisk" {
		// A disk image too, so that disk-mode hosts may run it.
		img.Artifacts = []images.Artifact{{Role: images.RoleDisk, Digest: simDigest(ref + "/disk")}}
	}
	return img, nil
}

func TestParseFile(t *testing.T) {
	src := newSimImages("demo:1", "demo:2", "nodisk:1")
	src.promote("demo@stable", "demo:1")
	tests := []struct {
		name, yaml string
		wantErr    []string // substrings, each with its line
		check      func(t *testing.T, f *File)
	}{
		{name: "hosts file subset", yaml: "hosts:\n- name: a\n  macs: [52:54:00:00:00:01]\n  image: demo:1\n",
			check: func(t *testing.T, f *File) {
				if len(f.Hosts) != 1 || f.Hosts[0].Mode != ModeMemory || f.Policy != DefaultPolicy {
					t.Errorf("got %+v", f)
				}
			}},
		{name: "empty", yaml: "", wantErr: []string{"no hosts: a fleet file lists its hosts"}},
		{name: "no hosts, explicitly", yaml: "hosts: []\n", check: func(t *testing.T, f *File) {
			if len(f.Hosts) != 0 {
				t.Errorf("got %+v", f)
			}
		}},
		{name: "full", yaml: `
defaults:
  image: demo@stable
  mode: disk
  secure_boot: true
  bmc: {username: admin, credentials: env:BMC_PASSWORD, insecure: true}
  labels: {site: lab}
policy:
  canary: 1
  batch: 2
  max_unavailable: 3
  boot_deadline: 10m
  retries: 2
  failure_budget: 1
  max_age: 30d
  splay: 6h
  drift: alert
  boot_override_once: true
hosts:
- name: a
  macs: [52-54-00-00-00-0A]
  bmc: {endpoint: "https://10.0.0.5", system: /redfish/v1/Systems/1, boot: uefi-http}
  labels: {rack: r1}
- name: b
  macs: [52:54:00:00:00:0b]
  image: demo:2
  mode: memory
  secure_boot: false
`, check: func(t *testing.T, f *File) {
			a, b := f.Hosts[0], f.Hosts[1]
			if a.Image != "demo@stable" || a.Mode != ModeDisk || a.MACs[0] != "52:54:00:00:00:0a" || a.Labels["rack"] != "r1" || a.Labels["site"] != "lab" {
				t.Errorf("a = %+v", a)
			}
			if a.BMC == nil || a.BMC.Username != "admin" || a.BMC.Credentials != "env:BMC_PASSWORD" || !a.BMC.Insecure || a.BMC.System == "" || a.BMC.Boot != BootUEFIHTTP {
				t.Errorf("a.bmc = %+v", a.BMC)
			}
			if !a.SecureBoot || b.SecureBoot {
				t.Errorf("secure_boot: a %v (from defaults), b %v (its own)", a.SecureBoot, b.SecureBoot)
			}
			if b.BMC != nil || b.Mode != ModeMemory || b.Image != "demo:2" {
				t.Errorf("b = %+v", b)
			}
			want := Policy{Canary: 1, Batch: 2, MaxUnavailable: 3, BootDeadline: 10 * time.Minute, Retries: 2, FailureBudget: 1,
				MaxAge: 30 * 24 * time.Hour, Splay: 6 * time.Hour, Drift: DriftAlert, BootOverrideOnce: true}
			if f.Policy != want {
				t.Errorf("policy %+v, want %+v", f.Policy, want)
			}
		}},
		{name: "batch alone sets max_unavailable", yaml: "policy: {batch: 5}\nhosts: []\n", check: func(t *testing.T, f *File) {
			if f.Policy.MaxUnavailable != 5 || f.Policy.Batch != 5 {
				t.Errorf("policy %+v", f.Policy)
			}
		}},
		{name: "batch larger than max_unavailable", yaml: "policy:\n  max_unavailable: 2\n  batch: 3\n",
			wantErr: []string{"line 3: policy: batch 3 is larger than max_unavailable 2"}},
		{name: "unknown keys", yaml: "hosts:\n- name: a\n  mac: [52:54:00:00:00:01]\n  image: demo:1\npolicy:\n  canaries: 2\nrollout: {}\n",
			wantErr: []string{`line 3: host "a": unknown key "mac"`, `line 6: policy: unknown key "canaries"`, `line 7: fleet file: unknown key "rollout"`, `line 2: host "a": no macs`}},
		{name: "duplicates", yaml: "hosts:\n- {name: a, macs: [52:54:00:00:00:01], image: demo:1}\n- {name: a, macs: ['52:54:00:00:00:01'], image: demo:1}\n",
			wantErr: []string{`line 3: host "a": duplicate name (first at line 2)`, `line 3: host "a": mac 52:54:00:00:00:01 already belongs to "a"`}},
		{name: "unknown channel and version", yaml: "hosts:\n- {name: a, macs: [52:54:00:00:00:01], image: demo@beta}\n- {name: b, macs: [52:54:00:00:00:02], image: demo:9}\n",
			wantErr: []string{"line 2: host \"a\": image demo@beta: not found", "line 3: host \"b\": image demo:9: not found"}},
		{name: "disk mode without a disk image", yaml: "hosts:\n- {name: a, macs: [52:54:00:00:00:01], image: nodisk:1}\n- {name: b, macs: [52:54:00:00:00:02], image: nodisk:1, mode: disk}\n",
			wantErr: []string{`line 3: host "b": mode disk, but image nodisk:1 has no disk image`}},
		{name: "bad values", yaml: `policy:
  boot_deadline: soon
  drift: panic
  canary: -1
hosts:
- name: "bad name"
  macs: [zz]
  image: "Demo"
  mode: tape
  bmc: {endpoint: "ftp://x", credentials: hunter2, boot: floppy}
`, wantErr: []string{"line 10: host \"bad name\": bmc.boot \"floppy\": want pxe or uefi-http", "line 2: policy.boot_deadline: want a duration", "line 3: policy.drift \"panic\"", "line 4: policy.canary: want a whole number",
			"line 6: host \"bad name\": name must match", "line 7: host \"bad name\": bad mac \"zz\"", "want NAME:VERSION", "mode \"tape\"",
			"line 10: host \"bad name\": bmc.endpoint \"ftp://x\"", "line 10: host \"bad name\": bmc.credentials \"hunter2\""}},
		{name: "not yaml", yaml: "hosts: [\n", wantErr: []string{"yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseFile([]byte(tt.yaml), src)
			if len(tt.wantErr) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if tt.check != nil {
					tt.check(t, f)
				}
				return
			}
			if err == nil {
				t.Fatal("want error")
			}
			if f != nil {
				t.Error("an invalid file returned a result")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestBMCPassword(t *testing.T) {
	t.Setenv("PHOENIX_TEST_BMC", "s3cret")
	if p, err := (BMCSpec{Credentials: "env:PHOENIX_TEST_BMC"}).Password(); err != nil || p != "s3cret" {
		t.Fatalf("env: %q %v", p, err)
	}
	if _, err := (BMCSpec{Credentials: "env:PHOENIX_TEST_NOPE"}).Password(); err == nil {
		t.Fatal("unset env accepted")
	}
}
