package httpboot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phoenixboot/phoenix/images"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// fakeHosts maps MAC strings to host and image ref.
type fakeHosts map[string][2]string

func (h fakeHosts) Lookup(mac net.HardwareAddr) (string, string, bool) {
	v, ok := h[mac.String()]
	return v[0], v[1], ok
}

// fakeImages is an image store over a temp dir holding blobs by hex name.
type fakeImages struct {
	dir    string
	images map[string]images.Image
}

var hexOnly = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func (f *fakeImages) Resolve(ref string) (images.Image, error) {
	img, ok := f.images[ref]
	if !ok {
		return images.Image{}, fmt.Errorf("image %s: %w", ref, images.ErrNotFound)
	}
	return img, nil
}

func (f *fakeImages) BlobPath(digest string) (string, error) {
	if !hexOnly.MatchString(digest) {
		return "", fmt.Errorf("bad digest %q", digest)
	}
	p := filepath.Join(f.dir, strings.TrimPrefix(digest, "sha256:"))
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("blob %s: %w", digest, images.ErrNotFound)
	}
	return p, nil
}

// add stores data as a blob and returns its digest.
func (f *fakeImages) add(t *testing.T, data []byte) string {
	t.Helper()
	sum := sha256.Sum256(data)
	h := hex.EncodeToString(sum[:])
	if err := os.WriteFile(filepath.Join(f.dir, h), data, 0o444); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + h
}

type fakeRecorder struct {
	mu         sync.Mutex
	reports    []Report
	discovered []string
	err        error
}

func (r *fakeRecorder) RecordReport(ctx context.Context, rep Report) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return r.err
	}
	r.reports = append(r.reports, rep)
	return nil
}

func (r *fakeRecorder) RecordDiscovered(ctx context.Context, mac net.HardwareAddr, remoteAddr string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.discovered = append(r.discovered, mac.String())
	return nil
}

const (
	knownMAC    = "52:54:00:ab:cd:01"
	localMAC    = "52:54:00:00:00:02"
	brokenMAC   = "52:54:00:00:00:03"
	unknownMAC  = "52:54:00:00:00:99"
	imageDigest = "sha256:00000000000000000000000000000000000000000000000000000000000000aa"
)

type testEnv struct {
	srv    *Server
	images *fakeImages
	rec    *fakeRecorder
	events []Event
	kernel []byte
	kdig   string
}

func newEnv(t *testing.T) *testEnv {
	t.Helper()
	e := &testEnv{
		images: &fakeImages{dir: t.TempDir(), images: map[string]images.Image{}},
		rec:    &fakeRecorder{},
	}
	e.kernel = bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	e.kdig = e.images.add(t, e.kernel)
	initrd := e.images.add(t, []byte("initrd contents"))
	rootfs := e.images.add(t, []byte("squashfs"))
	e.images.images["demo:1.0"] = images.Image{
		Name: "demo", Version: "1.0", Digest: imageDigest, Mode: "memory",
		Cmdline: "console=ttyS0,115200 quiet",
		Artifacts: []images.Artifact{
			{Role: images.RoleKernel, Digest: e.kdig, Size: int64(len(e.kernel))},
			{Role: images.RoleInitrd, Digest: initrd},
			{Role: images.RoleRootfs, Digest: rootfs},
		},
	}
	diskImg := e.images.add(t, []byte("raw disk image"))
	e.images.images["os:1"] = images.Image{
		Name: "os", Version: "1", Digest: imageDigest, Mode: images.ModeDisk,
		Artifacts: []images.Artifact{
			{Role: images.RoleKernel, Digest: e.kdig, Size: int64(len(e.kernel))},
			{Role: images.RoleInitrd, Digest: initrd},
			{Role: images.RoleDisk, Digest: diskImg, Size: int64(len("raw disk image"))},
		},
	}
	e.images.images["evil:1"] = images.Image{
		Name: "evil", Version: "1", Digest: imageDigest,
		Cmdline:   "quiet\nchain http://elsewhere/x",
		Artifacts: e.images.images["demo:1.0"].Artifacts,
	}
	e.srv = &Server{
		Hosts: fakeHosts{
			knownMAC:            {"web-01", "demo:1.0"},
			localMAC:            {"db-02", ""},
			brokenMAC:           {"web-03", "missing:2"},
			"52:54:00:00:00:04": {"web-04", "evil:1"},
			"52:54:00:00:00:05": {"db-05", "os:1"},
		},
		Images:   e.images,
		Recorder: e.rec,
		BaseURL:  "http://10.99.0.1:8080/",
		OnEvent:  func(ev Event) { e.events = append(e.events, ev) },
	}
	return e
}

func (e *testEnv) do(t *testing.T, method, target string, body io.Reader, hdr ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, body)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, req)
	return rec.Result()
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sha256hex is the "sha256:<hex>" digest of s.
func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}

var bootIDRe = regexp.MustCompile(`phoenix\.bootid=([0-9a-f]*)`)

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -update creates it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from golden file (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestScripts(t *testing.T) {
	tests := []struct {
		name       string
		target     string
		status     int
		golden     string
		contains   []string
		absent     []string
		discovered []string
		kind       EventKind
	}{
		{name: "known host", target: "/boot.ipxe?mac=" + knownMAC, status: 200, golden: "known.ipxe", kind: EventScript,
			contains: []string{"initrd=initrd console=ttyS0,115200 quiet phoenix.bootid=", "phoenix.mac=" + knownMAC}},
		{name: "known host, path form, hyphens", target: "/boot/52-54-00-ab-cd-01.ipxe", status: 200, kind: EventScript,
			contains: []string{"\nkernel http://10.99.0.1:8080/blobs/sha256/"}},
		{name: "known host, uppercase mac", target: "/boot.ipxe?mac=52:54:00:AB:CD:01", status: 200, kind: EventScript,
			contains: []string{"boot ||"}},
		{name: "unknown mac", target: "/boot.ipxe?mac=" + unknownMAC, status: 200, golden: "unknown.ipxe", kind: EventUnknown,
			contains: []string{unknownMAC, "\nexit 1\n"}, absent: []string{"kernel", "boot ||"}, discovered: []string{unknownMAC}},
		{name: "local boot", target: "/boot.ipxe?mac=" + localMAC, status: 200, golden: "local.ipxe", kind: EventScript,
			contains: []string{"db-02", "\nexit 1\n"}, absent: []string{"kernel"}},
		{name: "image missing", target: "/boot.ipxe?mac=" + brokenMAC, status: 200, golden: "missing.ipxe", kind: EventScript,
			contains: []string{"missing:2", "exit 1"}, absent: []string{"kernel", "boot ||"}},
		{name: "disk mode: the installer's parameters", target: "/boot.ipxe?mac=52:54:00:00:00:05", status: 200, kind: EventScript,
			contains: []string{" phoenix.disk=http://10.99.0.1:8080/blobs/sha256/" + strings.TrimPrefix(sha256hex("raw disk image"), "sha256:"),
				" phoenix.disk_size=14 ", " phoenix.mode=disk"}},
		{name: "image with unsafe cmdline", target: "/boot.ipxe?mac=52:54:00:00:00:04", status: 200, kind: EventScript,
			contains: []string{"cannot boot", "exit 1"}, absent: []string{"\nkernel", "\nchain", "\nquiet"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			resp := e.do(t, "GET", tt.target, nil)
			body := readBody(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d\n%s", resp.StatusCode, tt.status, body)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("Content-Type %q", ct)
			}
			if !strings.HasPrefix(body, "#!ipxe\n") {
				t.Errorf("not an iPXE script:\n%s", body)
			}
			for _, s := range tt.contains {
				if !strings.Contains(body, s) {
					t.Errorf("script lacks %q:\n%s", s, body)
				}
			}
			for _, s := range tt.absent {
				if strings.Contains(body, s) {
					t.Errorf("script contains %q:\n%s", s, body)
				}
			}
			if m := bootIDRe.FindStringSubmatch(body); m != nil && len(m[1]) != 16 {
				t.Errorf("boot id %q, want 16 hex digits", m[1])
			}
			if tt.golden != "" {
				golden(t, tt.golden, bootIDRe.ReplaceAllString(body, "phoenix.bootid=BOOTID"))
			}
			if fmt.Sprint(e.rec.discovered) != fmt.Sprint(tt.discovered) {
				t.Errorf("discovered %v, want %v", e.rec.discovered, tt.discovered)
			}
			if len(e.events) != 1 || e.events[0].Kind != tt.kind || e.events[0].Status != tt.status {
				t.Errorf("events %+v, want one %s with status %d", e.events, tt.kind, tt.status)
			}
		})
	}
}

func TestScriptEventCarriesBoot(t *testing.T) {
	e := newEnv(t)
	body := readBody(t, e.do(t, "GET", "/boot.ipxe?mac="+knownMAC, nil))
	if len(e.events) != 1 {
		t.Fatalf("events %+v", e.events)
	}
	ev := e.events[0]
	if ev.Host != "web-01" || ev.Image != "demo:1.0" || ev.Digest != imageDigest || ev.MAC.String() != knownMAC {
		t.Errorf("event %+v", ev)
	}
	if ev.BootID == "" || !strings.Contains(body, "phoenix.bootid="+ev.BootID+" ") {
		t.Errorf("event boot id %q not the script's:\n%s", ev.BootID, body)
	}
	// Two scripts, two boot IDs.
	e.do(t, "GET", "/boot.ipxe?mac="+knownMAC, nil)
	if e.events[1].BootID == ev.BootID {
		t.Errorf("boot id %q reused", ev.BootID)
	}
}

func TestBadMAC(t *testing.T) {
	for _, mac := range []string{
		"", "zz", "${net0/mac}", "52:54:00:00:00", "52:54:00:00:00:01:02:03",
		"00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", "52:54:00:00:00:01\nchain",
		"52:54:00:00:00:01 || shell",
	} {
		t.Run(mac, func(t *testing.T) {
			e := newEnv(t)
			target := "/boot.ipxe?mac=" + urlQueryEscape(mac)
			resp := e.do(t, "GET", target, nil)
			body := readBody(t, resp)
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("status %d, want 400", resp.StatusCode)
			}
			want := "#!ipxe\necho phoenix: cannot boot: bad mac\necho phoenix: trying the next boot device\nexit 1\n"
			if body != want {
				t.Errorf("body:\n%s\nwant:\n%s", body, want)
			}
			if len(e.rec.discovered) != 0 {
				t.Errorf("bad mac recorded as discovered: %v", e.rec.discovered)
			}
		})
	}
}

func urlQueryEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

func TestBlob(t *testing.T) {
	e := newEnv(t)
	hexDigest := strings.TrimPrefix(e.kdig, "sha256:")
	path := "/blobs/sha256/" + hexDigest
	etag := `"` + e.kdig + `"`

	t.Run("get", func(t *testing.T) {
		resp := e.do(t, "GET", path, nil)
		body := readBody(t, resp)
		if resp.StatusCode != 200 || body != string(e.kernel) {
			t.Fatalf("status %d, %d bytes", resp.StatusCode, len(body))
		}
		for k, v := range map[string]string{
			"Content-Type":   "application/octet-stream",
			"ETag":           etag,
			"Cache-Control":  "public, max-age=31536000, immutable",
			"Accept-Ranges":  "bytes",
			"Content-Length": fmt.Sprint(len(e.kernel)),
		} {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s: %q, want %q", k, got, v)
			}
		}
	})
	t.Run("range", func(t *testing.T) {
		resp := e.do(t, "GET", path, nil, "Range", "bytes=100-199")
		body := readBody(t, resp)
		if resp.StatusCode != http.StatusPartialContent || body != string(e.kernel[100:200]) {
			t.Fatalf("status %d, body %q", resp.StatusCode, body)
		}
		if got, want := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes 100-199/%d", len(e.kernel)); got != want {
			t.Errorf("Content-Range %q, want %q", got, want)
		}
	})
	t.Run("range past end", func(t *testing.T) {
		resp := e.do(t, "GET", path, nil, "Range", fmt.Sprintf("bytes=%d-", len(e.kernel)+10))
		if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
			t.Fatalf("status %d, want 416", resp.StatusCode)
		}
	})
	t.Run("if-range stale etag sends all", func(t *testing.T) {
		resp := e.do(t, "GET", path, nil, "Range", "bytes=0-9", "If-Range", `"sha256:other"`)
		if body := readBody(t, resp); resp.StatusCode != 200 || len(body) != len(e.kernel) {
			t.Fatalf("status %d, %d bytes", resp.StatusCode, len(body))
		}
	})
	t.Run("head", func(t *testing.T) {
		resp := e.do(t, "HEAD", path, nil)
		body := readBody(t, resp)
		if resp.StatusCode != 200 || body != "" {
			t.Fatalf("status %d, body %d bytes", resp.StatusCode, len(body))
		}
		if got := resp.Header.Get("Content-Length"); got != fmt.Sprint(len(e.kernel)) {
			t.Errorf("Content-Length %q", got)
		}
		if resp.Header.Get("ETag") != etag {
			t.Errorf("ETag %q", resp.Header.Get("ETag"))
		}
	})
	t.Run("if-none-match", func(t *testing.T) {
		resp := e.do(t, "GET", path, nil, "If-None-Match", etag)
		if body := readBody(t, resp); resp.StatusCode != http.StatusNotModified || body != "" {
			t.Fatalf("status %d, body %d bytes", resp.StatusCode, len(body))
		}
	})
	t.Run("post", func(t *testing.T) {
		if resp := e.do(t, "POST", path, nil); resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("status %d, want 405", resp.StatusCode)
		}
	})
}

func TestBlobNotFound(t *testing.T) {
	e := newEnv(t)
	hexDigest := strings.TrimPrefix(e.kdig, "sha256:")
	// A file that must never be reachable, next to the blobs.
	os.WriteFile(filepath.Join(e.images.dir, "secret"), []byte("secret"), 0o600)
	for _, target := range []string{
		"/blobs/sha256/" + strings.ToUpper(hexDigest),
		"/blobs/sha256/" + hexDigest[:63],
		"/blobs/sha256/" + hexDigest + "0",
		"/blobs/sha256/" + hexDigest + "/",
		"/blobs/sha256/" + strings.Repeat("0", 64),
		"/blobs/sha256/../../etc/passwd",
		"/blobs/sha256/%2e%2e/%2e%2e/x",
		"/blobs/sha256/%2e%2e%2fsecret",
		"/blobs/sha256/..%2fsecret",
		"/blobs/sha256/secret",
		"/blobs/sha256//" + hexDigest,
		"/blobs/sha256/./" + hexDigest,
		"/blobs/sha512/" + hexDigest,
		"/blobs/" + hexDigest,
	} {
		t.Run(target, func(t *testing.T) {
			resp := e.do(t, "GET", target, nil)
			body := readBody(t, resp)
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("status %d, want 404: %q", resp.StatusCode, body)
			}
			if strings.Contains(body, "secret") || strings.Contains(body, "0123456789abcdef") {
				t.Errorf("leaked content: %q", body)
			}
		})
	}
	t.Run("no image store", func(t *testing.T) {
		s := &Server{}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/blobs/sha256/"+hexDigest, nil))
		if rec.Code != http.StatusNotFound {
			t.Errorf("status %d, want 404", rec.Code)
		}
	})
}

func TestReport(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	e := newEnv(t)
	body := fmt.Sprintf(`{"mac":%q,"digest":%q,"boot_id":"0123456789abcdef","host":"web-01","extra":{"ignored":true}}`, knownMAC, digest)
	resp := e.do(t, "POST", "/api/v1/report", strings.NewReader(body))
	got := readBody(t, resp)
	if resp.StatusCode != 200 || strings.TrimSpace(got) != `{"status":"recorded"}` {
		t.Fatalf("status %d: %s", resp.StatusCode, got)
	}
	if len(e.rec.reports) != 1 {
		t.Fatalf("reports %+v", e.rec.reports)
	}
	r := e.rec.reports[0]
	if r.MAC.String() != knownMAC || r.Digest != digest || r.BootID != "0123456789abcdef" || r.Host != "web-01" ||
		r.RemoteAddr == "" || time.Since(r.Time) > time.Minute {
		t.Errorf("report %+v", r)
	}
	if len(e.events) != 1 || e.events[0].Kind != EventReport || e.events[0].Digest != digest {
		t.Errorf("events %+v", e.events)
	}
	// A web page cannot post one through an operator's browser.
	for _, hdr := range [][]string{{"Origin", "http://evil.example"}, {"Sec-Fetch-Site", "cross-site"}} {
		resp = e.do(t, "POST", "/api/v1/report", strings.NewReader(body), hdr...)
		if resp.StatusCode != http.StatusForbidden || len(e.rec.reports) != 1 {
			t.Errorf("report with %s: %d, %d reports", hdr[0], resp.StatusCode, len(e.rec.reports))
		}
	}
}

// TestFailureReport: a host that could not boot its image says why; the
// report reaches the recorder with its error, and the event carries it.
func TestFailureReport(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	e := newEnv(t)
	why := "disk image is 9437696 bytes, /dev/vda only 8388608 – ünïcode ok"
	body := fmt.Sprintf(`{"mac":%q,"digest":%q,"error":%q}`, knownMAC, digest, why)
	resp := e.do(t, "POST", "/api/v1/report", strings.NewReader(body))
	if got := readBody(t, resp); resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, got)
	}
	if len(e.rec.reports) != 1 || e.rec.reports[0].Error != why || e.rec.reports[0].Digest != digest {
		t.Fatalf("reports %+v", e.rec.reports)
	}
	if len(e.events) != 1 || e.events[0].Kind != EventReport || e.events[0].Detail != why {
		t.Errorf("events %+v", e.events)
	}
}

func TestReportRejects(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		name, body string
		status     int
	}{
		{"empty", ``, 400},
		{"not json", `mac=x`, 400},
		{"array", `[]`, 400},
		{"no mac", fmt.Sprintf(`{"digest":%q}`, digest), 400},
		{"no digest", fmt.Sprintf(`{"mac":%q}`, knownMAC), 400},
		{"bad mac", fmt.Sprintf(`{"mac":"52:54:00","digest":%q}`, digest), 400},
		{"eui64 mac", fmt.Sprintf(`{"mac":"02:00:5e:10:00:00:00:01","digest":%q}`, digest), 400},
		{"mac number", fmt.Sprintf(`{"mac":5,"digest":%q}`, digest), 400},
		{"uppercase digest", fmt.Sprintf(`{"mac":%q,"digest":%q}`, knownMAC, strings.ToUpper(digest)), 400},
		{"sha512", fmt.Sprintf(`{"mac":%q,"digest":"sha512:%s"}`, knownMAC, strings.Repeat("ab", 64)), 400},
		{"bad host", fmt.Sprintf(`{"mac":%q,"digest":%q,"host":"a b"}`, knownMAC, digest), 400},
		{"bad boot id", fmt.Sprintf(`{"mac":%q,"digest":%q,"boot_id":"${x}"}`, knownMAC, digest), 400},
		{"trailing data", fmt.Sprintf(`{"mac":%q,"digest":%q}{}`, knownMAC, digest), 400},
		{"too large", fmt.Sprintf(`{"mac":%q,"digest":%q,"pad":"%s"}`, knownMAC, digest, strings.Repeat("x", 70000)), 413},
		{"error too long", fmt.Sprintf(`{"mac":%q,"digest":%q,"error":"%s"}`, knownMAC, digest, strings.Repeat("x", 513)), 400},
		{"error with a newline", fmt.Sprintf(`{"mac":%q,"digest":%q,"error":"disk\nfull"}`, knownMAC, digest), 400},
		{"error with an escape", fmt.Sprintf(`{"mac":%q,"digest":%q,"error":"\u001b[2J"}`, knownMAC, digest), 400},
		{"error not a string", fmt.Sprintf(`{"mac":%q,"digest":%q,"error":1}`, knownMAC, digest), 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			resp := e.do(t, "POST", "/api/v1/report", strings.NewReader(tt.body))
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
			var got map[string]string
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || got["error"] == "" {
				t.Errorf("body is not a JSON error: %v %v", got, err)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if len(e.rec.reports) != 0 || len(e.events) != 0 {
				t.Errorf("bad report recorded: %+v %+v", e.rec.reports, e.events)
			}
		})
	}
}

func TestReportRecorder(t *testing.T) {
	body := fmt.Sprintf(`{"mac":%q,"digest":"sha256:%s"}`, knownMAC, strings.Repeat("ab", 32))
	t.Run("nil recorder", func(t *testing.T) {
		s := &Server{}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/api/v1/report", strings.NewReader(body)))
		if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != `{"status":"logged"}` {
			t.Errorf("%d %s", rec.Code, rec.Body)
		}
	})
	t.Run("recorder fails", func(t *testing.T) {
		e := newEnv(t)
		e.rec.err = errors.New("disk full")
		resp := e.do(t, "POST", "/api/v1/report", strings.NewReader(body))
		if resp.StatusCode != 500 {
			t.Errorf("status %d, want 500", resp.StatusCode)
		}
		if b := readBody(t, resp); strings.Contains(b, "disk full") {
			t.Errorf("internal error leaked: %s", b)
		}
	})
}

func TestZeroServer(t *testing.T) {
	s := &Server{}
	for _, tt := range []struct {
		target string
		status int
		want   string
	}{
		{"/healthz", 200, "ok\n"},
		{"/boot.ipxe?mac=" + knownMAC, 200, "unknown host " + knownMAC},
		{"/nope", 404, ""},
		{"/boot.ipxe/", 404, ""},
	} {
		t.Run(tt.target, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("GET", tt.target, nil)
			s.Handler().ServeHTTP(rec, req)
			if rec.Code != tt.status || !strings.Contains(rec.Body.String(), tt.want) {
				t.Errorf("%d %q", rec.Code, rec.Body)
			}
		})
	}
	t.Run("base url from host header", func(t *testing.T) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/boot.ipxe?mac="+knownMAC, nil)
		req.Host = "10.99.0.1:8080"
		s.Handler().ServeHTTP(rec, req)
		if !strings.Contains(rec.Body.String(), "http://10.99.0.1:8080 ") {
			t.Errorf("%s", rec.Body)
		}
	})
	t.Run("hostile host header", func(t *testing.T) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/boot.ipxe?mac="+knownMAC, nil)
		req.Host = "x${a}"
		s.Handler().ServeHTTP(rec, req)
		if rec.Code != 500 || strings.Contains(rec.Body.String(), "${") {
			t.Errorf("%d %s", rec.Code, rec.Body)
		}
	})
}

// TestServe runs the real server on a loopback socket: a script, a ranged
// blob over TCP, then a clean shutdown that returns nil and closes the socket.
func TestServe(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- e.srv.Serve(ctx, ln) }()
	base := "http://" + ln.Addr().String()

	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	if b := readBody(t, resp); resp.StatusCode != 200 || b != "ok\n" {
		t.Fatalf("healthz %d %q", resp.StatusCode, b)
	}
	req, _ := http.NewRequest("GET", base+"/blobs/sha256/"+strings.TrimPrefix(e.kdig, "sha256:"), nil)
	req.Header.Set("Range", "bytes=65000-")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if b := readBody(t, resp); resp.StatusCode != 206 || b != string(e.kernel[65000:]) {
		t.Fatalf("range %d, %d bytes", resp.StatusCode, len(b))
	}
	http.DefaultClient.CloseIdleConnections()

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Serve returned %v after cancel, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Error("listener still open after Serve returned")
	}
}

// TestShutdownLetsDownloadsFinish cancels the server's context while a large
// blob is half read: the download must complete (Shutdown gets its own
// deadline) and Serve must then return nil.
func TestShutdownLetsDownloadsFinish(t *testing.T) {
	e := newEnv(t)
	big := bytes.Repeat([]byte("phoenix!"), 2<<20) // 16 MiB, more than loopback socket buffers hold
	d := e.images.add(t, big)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- e.srv.Serve(ctx, ln) }()

	client := &http.Client{Transport: &http.Transport{}}
	resp, err := client.Get("http://" + ln.Addr().String() + "/blobs/sha256/" + strings.TrimPrefix(d, "sha256:"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	head := make([]byte, 1024)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}
	cancel()
	time.Sleep(100 * time.Millisecond) // let Shutdown start
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("download cut by shutdown after %d bytes: %v", 1024+len(rest), err)
	}
	if !bytes.Equal(append(head, rest...), big) {
		t.Fatalf("download corrupt: %d bytes", 1024+len(rest))
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return")
	}
}

// TestFromNetworks: with host networks named, the host routes answer only
// requests from inside them; with none, every sender is let through.
func TestFromNetworks(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	nets := []netip.Prefix{netip.MustParsePrefix("10.99.0.0/24")}
	for _, tc := range []struct {
		nets   []netip.Prefix
		remote string
		want   int
	}{
		{nets, "10.99.0.7:4000", http.StatusNoContent},
		{nets, "[::ffff:10.99.0.7]:4000", http.StatusNoContent},
		{nets, "10.98.0.7:4000", http.StatusForbidden},
		{nets, "[2001:db8::1]:4000", http.StatusForbidden},
		{nil, "10.98.0.7:4000", http.StatusNoContent},
	} {
		req := httptest.NewRequest("POST", "/api/v1/report", nil)
		req.RemoteAddr = tc.remote
		rec := httptest.NewRecorder()
		FromNetworks(tc.nets, ok).ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%v from %s: %d, want %d", tc.nets, tc.remote, rec.Code, tc.want)
		}
	}
}
