package main

import (
	"context"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/phoenixboot/phoenix/boot/dhcp"
	"github.com/phoenixboot/phoenix/boot/httpboot"
	"github.com/phoenixboot/phoenix/boot/tftp"
	"github.com/phoenixboot/phoenix/fleet/timeline"
)

func TestUIHandler(t *testing.T) {
	h := uiHandler()
	for _, c := range []struct {
		path, ctype, body string
		code              int
	}{
		{"/", "text/html", `<script src="/ui/app.js"`, 200},
		{"/ui/app.js", "text/javascript", "textContent", 200},
		{"/ui/style.css", "text/css", "", 200},
		{"/ui/nope.js", "", "", 404},
		{"/ui/../assets.go", "", "", 0}, // cleaned by a ServeMux or refused: never the file
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", c.path, nil))
		body := rec.Body.String()
		if c.code != 0 && rec.Code != c.code {
			t.Errorf("GET %s: %d, want %d", c.path, rec.Code, c.code)
		}
		if strings.Contains(body, "package assets") {
			t.Errorf("GET %s: served source: %q", c.path, body)
		}
		if c.code == 200 {
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, c.ctype) {
				t.Errorf("GET %s: Content-Type %q, want %s", c.path, ct, c.ctype)
			}
			if !strings.Contains(body, c.body) {
				t.Errorf("GET %s: body lacks %q", c.path, c.body)
			}
			if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
				t.Errorf("GET %s: CSP %q", c.path, csp)
			}
		}
	}
}

// TestDashboard renders the dashboard in a real browser (headless
// chromium) against a controller with hosts in two racks, a rollout and a
// quarantine whose reason is hostile HTML, and reads the DOM it built.
func TestDashboard(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium not installed (make deps installs it)")
		}
		t.Skip("chromium not installed")
	}
	ctx, ctrl, mux := startFleet(t)
	if _, err := ctrl.Apply([]byte(`defaults: {image: demo@stable}
hosts:
- {name: r1n01, macs: ['52:54:00:00:01:01'], labels: {rack: r1}}
- {name: r1n02, macs: ['52:54:00:00:01:02'], labels: {rack: r1}}
- {name: r2n01, macs: ['52:54:00:00:02:01'], labels: {rack: r2}}
`), "test"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	for _, mac := range []string{"52:54:00:00:01:01", "52:54:00:00:02:01"} {
		hw, _ := net.ParseMAC(mac)
		if err := ctrl.RecordReport(ctx, httpboot.Report{MAC: hw, Digest: fakeDigest("demo:1"), Time: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	stranger, _ := net.ParseMAC("52:54:00:00:09:99")
	if err := ctrl.RecordDiscovered(ctx, stranger, "10.0.0.99:1234"); err != nil {
		t.Fatal(err)
	}
	hostile := `<img src=x onerror="document.title='pwned'"><script>document.title='pwned'</script>`
	if err := ctrl.Quarantine("r1n02", hostile); err != nil {
		t.Fatal(err)
	}

	// r2n01 is being reimaged; its boot has reached TFTP.
	if _, err := ctrl.Reimage("r2n01", "demo:2"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if d, err := ctrl.HostDetail("r2n01"); err == nil && d.Step != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no reimage step for r2n01")
		}
	}
	tl := timeline.New(nil, nil)
	hw, _ := net.ParseMAC("52:54:00:00:02:01")
	ip := net.IPv4(10, 0, 0, 21)
	tl.DHCP(dhcp.Event{Kind: "offer", MAC: hw, IP: ip})
	tl.DHCP(dhcp.Event{Kind: "ack", MAC: hw, IP: ip})
	tl.TFTP(tftp.Transfer{File: "undionly.kpxe", Remote: &net.UDPAddr{IP: ip, Port: 2000}})
	mux.HandleFunc("GET /api/v1/boots/{mac}", tl.ServeBoots)

	ui := uiHandler()
	mux.Handle("GET /{$}", ui)
	mux.Handle("GET /ui/", ui)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// --virtual-time-budget lets the page's fetches and first refresh
	// finish before the DOM is dumped.
	cctx, ccancel := context.WithTimeout(ctx, 2*time.Minute)
	defer ccancel()
	cmd := exec.CommandContext(cctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--user-data-dir="+t.TempDir(), "--virtual-time-budget=8000", "--dump-dom", srv.URL+"/")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	dom := string(out)
	for _, want := range []string{
		"3 hosts", "rack r1 (2)", "rack r2 (1)",
		`id="host-r1n01"`, `id="host-r2n01"`, `class="state state-ready"`, `class="state state-quarantined"`,
		"demo:1 (desired)", "52:54:00:00:01:02", "no report",
		"quarantine", // the event kind
		"reimaging to demo:2, attempt 1; boot: tftp at",                          // r2n01's timeline
		`<td class="mono">52:54:00:00:09:99</td><td class="mono">10.0.0.99</td>`, // discovered
		"&lt;script&gt;document.title='pwned'&lt;/script&gt;",
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("dashboard lacks %q", want)
		}
	}
	if strings.Contains(dom, "<title>pwned") || strings.Contains(dom, `<img src="x"`) || strings.Contains(dom, "phoenix is not answering") {
		t.Errorf("hostile text became markup, or the API failed:\n%s", dom)
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
}
