package images_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phoenixboot/phoenix/boot/httpboot"
	"github.com/phoenixboot/phoenix/images"
)

type apiEnv struct {
	t     *testing.T
	store *images.Store
	srv   *httptest.Server
}

func newAPI(t *testing.T) *apiEnv {
	root := t.TempDir()
	s, err := images.Open(filepath.Join(root, "images"), filepath.Join(root, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	(&images.API{Store: s, Users: func(d string) []string {
		if strings.HasSuffix(d, "0") {
			return []string{"host-with-a-zero"}
		}
		return nil
	}}).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &apiEnv{t, s, srv}
}

// call sends a JSON (or nil) body and decodes the answer; it returns the
// status and the error text of a non-2xx answer.
func (e *apiEnv) call(method, path string, in, out any) (int, string) {
	e.t.Helper()
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var er struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&er)
		return resp.StatusCode, er.Error
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			e.t.Fatal(err)
		}
	}
	return resp.StatusCode, ""
}

// upload streams parts as the CLI does (through a pipe: nothing buffered).
func (e *apiEnv) upload(q url.Values, parts map[string]string) (int, string, images.Image) {
	e.t.Helper()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		for _, role := range []string{"kernel", "initrd", "rootfs", "disk", "dtb"} {
			c, ok := parts[role]
			if !ok {
				continue
			}
			w, _ := mw.CreateFormFile(role, role+".bin")
			io.WriteString(w, c)
		}
		pw.CloseWithError(mw.Close())
	}()
	resp, err := http.Post(e.srv.URL+"/api/v1/images?"+q.Encode(), mw.FormDataContentType(), pr)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var img images.Image
	if resp.StatusCode != 200 {
		var er struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&er)
		return resp.StatusCode, er.Error, img
	}
	json.NewDecoder(resp.Body).Decode(&img)
	return resp.StatusCode, "", img
}

func TestAPI(t *testing.T) {
	e := newAPI(t)
	q := func(ref string, kv ...string) url.Values {
		n, v, _ := strings.Cut(ref, ":")
		out := url.Values{"name": {n}, "version": {v}, "cmdline": {"console=ttyS0"}}
		for i := 0; i+1 < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	// Imports, good and bad.
	for _, tc := range []struct {
		name   string
		q      url.Values
		parts  map[string]string
		status int
		want   string
	}{
		{"v1", q("demo:1"), map[string]string{"kernel": "k1", "initrd": "i"}, 200, ""},
		{"v2", q("demo:2"), map[string]string{"kernel": "k2", "initrd": "i"}, 200, ""},
		{"same again", q("demo:2"), map[string]string{"kernel": "k2", "initrd": "i"}, 200, ""},
		{"changed", q("demo:2"), map[string]string{"kernel": "k2!", "initrd": "i"}, 409, "immutable"},
		{"bad ref", q("Demo:1"), map[string]string{"kernel": "k"}, 400, "bad name"},
		{"no kernel", q("demo:3"), map[string]string{"initrd": "i"}, 400, "kernel: required"},
		{"disk mode without disk", q("demo:3", "mode", "disk"), map[string]string{"kernel": "k"}, 400, "disk: required"},
		{"unknown role", q("demo:3"), map[string]string{"kernel": "k", "dtb": "d"}, 400, "unknown artifact role"},
		{"truncated", q("demo:3", "size.kernel", "100"), map[string]string{"kernel": "k"}, 400, "want 100"},
		{"zstd disk", q("demo:3", "mode", "disk"), map[string]string{"kernel": "k", "disk": "\x28\xb5\x2f\xfdframe"}, 400, "disk image is zstd-compressed"},
		{"qcow2 disk", q("demo:3", "mode", "disk"), map[string]string{"kernel": "k", "disk": "QFI\xfb\x00\x00\x00\x03"}, 400, "a disk image must be raw"},
	} {
		t.Run("import "+tc.name, func(t *testing.T) {
			status, msg, _ := e.upload(tc.q, tc.parts)
			if status != tc.status || !strings.Contains(msg, tc.want) {
				t.Errorf("import = %d %q, want %d %q", status, msg, tc.status, tc.want)
			}
		})
	}
	if status, msg := e.call("POST", "/api/v1/images?name=demo&version=4", map[string]string{}, nil); status != 400 || !strings.Contains(msg, "multipart") {
		t.Errorf("JSON import = %d %q", status, msg)
	}

	var list []images.ImageInfo
	e.call("GET", "/api/v1/images", nil, &list)
	if len(list) != 2 || list[0].Ref() != "demo:1" || list[0].Size != 3 || list[0].Cmdline != "console=ttyS0" {
		t.Fatalf("list = %+v", list)
	}
	// Channels through the API.
	var m images.ChannelMove
	for _, ref := range []string{"demo:1", "demo:2"} {
		if st, msg := e.call("POST", "/api/v1/images/"+ref+"/promote", map[string]string{"channel": "stable", "who": "alice"}, &m); st != 200 {
			t.Fatalf("promote %s = %d %s", ref, st, msg)
		}
	}
	var show images.ImageInfo
	e.call("GET", "/api/v1/images/demo@stable", nil, &show)
	if show.Version != "2" || fmt.Sprint(show.Channels) != "[demo@stable]" {
		t.Errorf("show demo@stable = %+v", show)
	}
	if st, _ := e.call("POST", "/api/v1/images/demo/rollback", map[string]string{"channel": "stable"}, &m); st != 200 || m.ToVersion != "1" || !strings.HasPrefix(m.Who, "api ") {
		t.Errorf("rollback = %d %+v", st, m)
	}
	if st, msg := e.call("POST", "/api/v1/images/demo/rollback", map[string]string{"channel": "stable"}, &m); st != 409 || !strings.Contains(msg, "no previous") {
		t.Errorf("second rollback = %d %q", st, msg)
	}
	var hist []images.ChannelMove
	e.call("GET", "/api/v1/images/demo/history", nil, &hist)
	if len(hist) != 3 || hist[0].Who != "alice" || hist[2].Kind != "rollback" {
		t.Errorf("history = %+v", hist)
	}
	var chs map[string]images.Image
	e.call("GET", "/api/v1/images/demo/channels", nil, &chs)
	if chs["stable"].Version != "1" {
		t.Errorf("channels = %+v", chs)
	}
	// rm: refused while referenced, then allowed; unknown is 404.
	if st, msg := e.call("DELETE", "/api/v1/images/demo:1", nil, nil); st != 409 || !strings.Contains(msg, "demo@stable") {
		t.Errorf("rm demo:1 = %d %q", st, msg)
	}
	if st, _ := e.call("DELETE", "/api/v1/images/demo:9", nil, nil); st != 404 {
		t.Errorf("rm demo:9 = %d", st)
	}
	if st, msg := e.call("GET", "/api/v1/images/nope:1", nil, nil); st != 404 || !strings.Contains(msg, "nope:1") {
		t.Errorf("show nope:1 = %d %q", st, msg)
	}
	var gc images.GCReport
	if st, msg := e.call("POST", "/api/v1/images/gc", map[string]int{"keep": 1}, &gc); st != 200 {
		t.Errorf("gc = %d %q", st, msg)
	}
	if st, msg := e.call("POST", "/api/v1/images/verify", map[string]string{"key": "x"}, nil); st != 400 || !strings.Contains(msg, "needs a ref") {
		t.Errorf("verify with key and no ref = %d %q", st, msg)
	}
	if st, msg := e.call("POST", "/api/v1/images/demo:1/push", map[string]string{"dest": "Not A Ref"}, nil); st != 400 {
		t.Errorf("push to a bad ref = %d %q", st, msg)
	}
}

// TestCorruptBlobNotServed: a blob flipped on disk is found by verify,
// quarantined, and the boot HTTP server answers 404 for it from then on.
func TestCorruptBlobNotServed(t *testing.T) {
	e := newAPI(t)
	_, msg, img := e.upload(url.Values{"name": {"demo"}, "version": {"1"}}, map[string]string{"kernel": strings.Repeat("kernel ", 1000)})
	if msg != "" {
		t.Fatal(msg)
	}
	k, _ := img.Artifact(images.RoleKernel)
	var events []httpboot.Event
	boot := httptest.NewServer((&httpboot.Server{Images: e.store, OnEvent: func(ev httpboot.Event) { events = append(events, ev) }}).Handler())
	defer boot.Close()
	blobURL := boot.URL + "/blobs/sha256/" + strings.TrimPrefix(k.Digest, "sha256:")
	get := func() int {
		resp, err := http.Get(blobURL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := get(); st != 200 {
		t.Fatalf("GET blob = %d", st)
	}

	p, err := e.store.BlobPath(k.Digest)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	b[10] ^= 1
	os.Chmod(p, 0o644)
	if err := os.WriteFile(p, b, 0o444); err != nil {
		t.Fatal(err)
	}
	var res images.VerifyResult
	if st, msg := e.call("POST", "/api/v1/images/verify", map[string]string{}, &res); st != 200 {
		t.Fatalf("verify = %d %s", st, msg)
	}
	if len(res.Corrupt) != 1 || res.Corrupt[0].Digest != k.Digest {
		t.Fatalf("verify = %+v", res)
	}
	if st := get(); st != 404 {
		t.Errorf("GET of a quarantined blob = %d, want 404", st)
	}
	if len(events) == 0 || events[len(events)-1].Status != 404 {
		t.Errorf("no 404 event for the corrupt blob: %+v", events)
	}
}

// TestStalledUploadHoldsNoOne: an upload that stops sending must not hold
// up other imports once a GC asks to run.
func TestStalledUploadHoldsNoOne(t *testing.T) {
	e := newAPI(t)
	pr, pw := io.Pipe()
	defer pw.CloseWithError(io.ErrUnexpectedEOF)
	mw := multipart.NewWriter(pw)
	go func() {
		w, _ := mw.CreateFormFile("kernel", "k")
		io.WriteString(w, "kernel-part") // and nothing more
	}()
	go http.Post(e.srv.URL+"/api/v1/images?name=x&version=1", mw.FormDataContentType(), pr)
	time.Sleep(200 * time.Millisecond) // the upload has started
	gcCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	gcDone := make(chan error, 1)
	go func() { _, err := e.store.GC(gcCtx, 1, nil); gcDone <- err }()
	time.Sleep(100 * time.Millisecond) // GC waits for the upload
	imported := make(chan string, 1)
	go func() {
		status, msg, _ := e.upload(url.Values{"name": {"y"}, "version": {"1"}}, map[string]string{"kernel": "ky"})
		imported <- fmt.Sprint(status, " ", msg)
	}()
	select {
	case got := <-imported:
		if got != "200 " {
			t.Errorf("import beside a stalled upload and a waiting GC = %s", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("import blocked behind GC, which waits for a stalled upload")
	}
	select {
	case err := <-gcDone:
		t.Errorf("gc returned %v while the upload still held its share", err)
	default:
	}
	cancel()
	if err := <-gcDone; !errors.Is(err, context.Canceled) {
		t.Errorf("gc after its context ended: %v", err)
	}
}
