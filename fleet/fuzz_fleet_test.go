package fleet

import (
	"testing"
)

// FuzzParseFile: fleet files arrive over the API. Whatever the bytes, the
// parser returns a valid file or an error, never panics, and a file it
// accepts parses the same way again.
func FuzzParseFile(f *testing.F) {
	f.Add([]byte("hosts:\n- {name: a, macs: ['52:54:00:00:00:01'], image: demo:1}\n"))
	f.Add([]byte("policy: {batch: 2, max_unavailable: 1}\n"))
	src := newSimImages("demo:1")
	src.promote("demo@stable", "demo:1")
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := ParseFile(data, src)
		if err != nil {
			if file != nil {
				t.Fatal("result with an error")
			}
			return
		}
		again, err := ParseFile(data, src)
		if err != nil || len(again.Hosts) != len(file.Hosts) || again.Digest != file.Digest {
			t.Fatalf("second parse differs: %v", err)
		}
		if file.Policy.Batch > file.Policy.MaxUnavailable || file.Policy.MaxUnavailable < 1 {
			t.Fatalf("accepted policy %+v", file.Policy)
		}
		names := map[string]bool{}
		for _, h := range file.Hosts {
			if names[h.Name] || len(h.MACs) == 0 {
				t.Fatalf("accepted host %+v", h)
			}
			names[h.Name] = true
		}
	})
}
