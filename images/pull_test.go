package images

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// craftedRegistry serves one manifest and the blobs given, as a registry
// that does not play by the rules would.
type craftedRegistry struct {
	manifest []byte
	blobs    map[string][]byte
	fetched  []string
}

func (f *craftedRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/v2/":
	case strings.Contains(r.URL.Path, "/manifests/"):
		w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
		w.Header().Set("Content-Length", fmt.Sprint(len(f.manifest)))
		w.Write(f.manifest)
	case strings.Contains(r.URL.Path, "/blobs/"):
		d := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		f.fetched = append(f.fetched, d)
		if b, ok := f.blobs[d]; ok {
			w.(http.Flusher).Flush() // chunked: no Content-Length to check
			w.Write(b)
			return
		}
		w.WriteHeader(404)
	default:
		w.WriteHeader(404)
	}
}

func blobDesc(mt types.MediaType, b []byte) v1.Descriptor {
	h, n, _ := v1.SHA256(strings.NewReader(string(b)))
	return v1.Descriptor{MediaType: mt, Size: n, Digest: h}
}

// TestPullRefusesCraftedManifests: what a registry declares is checked
// before phoenix reads blobs into memory or onto the state volume, and a
// pulled config passes the checks an import does.
func TestPullRefusesCraftedManifests(t *testing.T) {
	goodCfg, _ := json.Marshal(imageConfig{Name: "demo", Version: "1", Arch: "amd64", Mode: ModeMemory})
	badCfg, _ := json.Marshal(imageConfig{Name: "demo", Version: "1", Arch: "amd64", Mode: "bogus"})
	kernel := []byte("kernel")
	huge := blobDesc(ConfigMediaType, goodCfg)
	huge.Size = 1 << 40
	negative := blobDesc(MediaTypeKernel, kernel)
	negative.Size = -1
	inflated := blobDesc(MediaTypeKernel, kernel)
	inflated.Size = 999 // the blob is stored already, with 6 bytes
	for _, tc := range []struct {
		name   string
		cfg    []byte
		config v1.Descriptor
		layer  v1.Descriptor
		want   string
	}{
		{"config declared huge", goodCfg, huge, blobDesc(MediaTypeKernel, kernel), "config of 1099511627776 bytes"},
		{"layer of size -1", goodCfg, blobDesc(ConfigMediaType, goodCfg), negative, "size -1"},
		{"stored layer declared bigger", goodCfg, blobDesc(ConfigMediaType, goodCfg), inflated, "manifest says 999 bytes, the stored blob has 6"},
		{"config with a bad mode", badCfg, blobDesc(ConfigMediaType, badCfg), blobDesc(MediaTypeKernel, kernel), "bad mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := json.Marshal(v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1, Config: tc.config, Layers: []v1.Descriptor{tc.layer}})
			reg := &craftedRegistry{manifest: m, blobs: map[string][]byte{tc.config.Digest.String(): tc.cfg, tc.layer.Digest.String(): kernel}}
			srv := httptest.NewServer(reg)
			defer srv.Close()
			s, _, _ := newStore(t)
			if _, err := s.Import(context.Background(), ImportSpec{Name: "other", Version: "1", Files: files(t, map[string]string{RoleKernel: string(kernel)})}); err != nil {
				t.Fatal(err)
			}
			_, err := s.Pull(context.Background(), strings.TrimPrefix(srv.URL, "http://")+"/phoenix/demo:1", "", true)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("pull = %v, want an error with %q", err, tc.want)
			}
			if tc.config.Size > maxConfigSize && len(reg.fetched) > 0 {
				t.Errorf("fetched %v of a manifest refused up front", reg.fetched)
			}
		})
	}
}
