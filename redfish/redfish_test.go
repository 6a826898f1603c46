package redfish

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stmcginnis/gofish/schemas"
)

// syncBuffer collects log output from concurrent goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// secretsAbsent fails the test if a credential shows up in text, either
// plainly or as the Basic auth header value.
func secretsAbsent(t *testing.T, f *fakeBMC, what, text string) {
	t.Helper()
	basic := base64.StdEncoding.EncodeToString([]byte(f.user + ":" + f.pass))
	for _, s := range []string{f.pass, basic} {
		if strings.Contains(text, s) {
			t.Errorf("%s contains a credential: %q", what, text)
		}
	}
}

// startFake serves f on loopback and returns a Config for it with fast
// polls and retries; every test checks the log for credentials at the end.
func startFake(t *testing.T, f *fakeBMC) Config {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	logs := &syncBuffer{}
	t.Cleanup(func() { secretsAbsent(t, f, "log", logs.String()) })
	return Config{
		Endpoint: srv.URL, Username: f.user, Password: f.pass,
		Timeout: 5 * time.Second, WaitTimeout: 5 * time.Second,
		Log:          slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		pollInterval: 5 * time.Millisecond, retryBase: time.Millisecond,
	}
}

func dial(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := Dial(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// checkError asserts err is a one-line *Error naming the BMC and op and
// containing want, without credentials.
func checkError(t *testing.T, f *fakeBMC, cfg Config, err error, op string, status int, want string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v (%T), want *Error", err, err)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") {
		t.Errorf("error is not one line: %q", msg)
	}
	if !strings.HasPrefix(msg, "bmc "+cfg.Endpoint+": "+op+": ") {
		t.Errorf("error %q does not start with bmc %s: %s:", msg, cfg.Endpoint, op)
	}
	if e.Status != status {
		t.Errorf("status = %d, want %d (%q)", e.Status, status, msg)
	}
	if !strings.Contains(msg, want) {
		t.Errorf("error %q does not contain %q", msg, want)
	}
	secretsAbsent(t, f, "error", msg)
}

func TestPower(t *testing.T) {
	tests := []struct {
		name       string
		setup      func(f *fakeBMC)
		start      string
		do         func(c *Client, ctx context.Context) error
		wantResets []string
		wantPower  string
	}{
		{"on from off", nil, "Off", (*Client).PowerOn, []string{"On"}, "On"},
		{"on when on does nothing", nil, "On", (*Client).PowerOn, nil, "On"},
		{"on slowly: polls the power state", func(f *fakeBMC) { f.powerDelay = 50 * time.Millisecond }, "Off", (*Client).PowerOn, []string{"On"}, "On"},
		{"on without On: ForceOn", func(f *fakeBMC) { f.allowed = []string{"ForceOn", "ForceOff"} }, "Off", (*Client).PowerOn, []string{"ForceOn"}, "On"},
		{"off graceful", nil, "On", func(c *Client, ctx context.Context) error { return c.PowerOff(ctx, time.Second) }, []string{"GracefulShutdown"}, "Off"},
		{"off graceful times out: force", func(f *fakeBMC) { f.ignoreOff = true }, "On",
			func(c *Client, ctx context.Context) error { return c.PowerOff(ctx, 50*time.Millisecond) }, []string{"GracefulShutdown", "ForceOff"}, "Off"},
		{"off forced", nil, "On", func(c *Client, ctx context.Context) error { return c.PowerOff(ctx, 0) }, []string{"ForceOff"}, "Off"},
		{"cycle when off: on", nil, "Off", (*Client).PowerCycle, []string{"On"}, "On"},
		{"cycle: ForceRestart", nil, "On", (*Client).PowerCycle, []string{"ForceRestart"}, "On"},
		{"cycle without ForceRestart: PowerCycle", func(f *fakeBMC) { f.allowed = []string{"On", "ForceOff", "PowerCycle"} }, "On", (*Client).PowerCycle, []string{"PowerCycle"}, "On"},
		{"cycle without restart types: ForceOff+On", func(f *fakeBMC) { f.allowed = []string{"On", "ForceOff"} }, "On", (*Client).PowerCycle, []string{"ForceOff", "On"}, "On"},
		{"task completes after polls", func(f *fakeBMC) { f.taskPolls = 3 }, "Off", (*Client).PowerOn, []string{"On"}, "On"},
		{"task completed, monitor still 202", func(f *fakeBMC) { f.taskPolls, f.task202 = 1, true }, "Off", (*Client).PowerOn, []string{"On"}, "On"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeBMC()
			f.systems[0].power = tt.start
			if tt.setup != nil {
				tt.setup(f)
			}
			c := dial(t, startFake(t, f))
			if err := tt.do(c, context.Background()); err != nil {
				t.Fatal(err)
			}
			f.mu.Lock()
			resets := slices.Clone(f.resets)
			f.mu.Unlock()
			if !slices.Equal(resets, tt.wantResets) {
				t.Errorf("resets = %v, want %v", resets, tt.wantResets)
			}
			st, err := c.PowerState(context.Background())
			if err != nil || st != tt.wantPower {
				t.Errorf("PowerState = %q, %v; want %q", st, err, tt.wantPower)
			}
		})
	}
}

func TestFaults(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(f *fakeBMC, cfg *Config)
		do     func(c *Client, ctx context.Context) error
		op     string
		status int
		want   string // "" = success
	}{
		{"500 then success", func(f *fakeBMC, _ *Config) { f.fail500 = 2 }, (*Client).PowerOn, "", 0, ""},
		{"409 busy retried", func(f *fakeBMC, _ *Config) { f.busy409 = 3 }, (*Client).PowerOn, "", 0, ""},
		{"409 busy for good", func(f *fakeBMC, _ *Config) { f.busy409 = 100 }, (*Client).PowerOn, "power on", 409, "reset On: The resource is busy"},
		{"task never finishes", func(f *fakeBMC, cfg *Config) { f.taskNever = true; cfg.WaitTimeout = 200 * time.Millisecond }, (*Client).PowerOn, "power on", 0, "not finished after 200ms"},
		{"missing Reset action", func(f *fakeBMC, _ *Config) { f.noReset = true }, (*Client).PowerOn, "power on", 0, "no ComputerSystem.Reset action"},
		{"reset type not allowed", func(f *fakeBMC, _ *Config) { f.allowed = []string{"On"}; f.systems[0].power = "On" },
			func(c *Client, ctx context.Context) error { return c.PowerOff(ctx, 0) }, "power off", 0, "wanted ForceOff, the BMC allows only On"},
		{"boot target not allowed", nil,
			func(c *Client, ctx context.Context) error {
				return c.SetBootOverride(ctx, BootOverride{Target: "Floppy"})
			}, "boot override", 0, `unknown boot target "Floppy"`},
		{"BMC ignores the boot PATCH", func(f *fakeBMC, _ *Config) { f.ignorePatch = true },
			func(c *Client, ctx context.Context) error { return c.SetBootOverride(ctx, BootOverride{Target: "Pxe"}) }, "boot override", 0, `reads back target "None"`},
		{"power delay longer than the wait", func(f *fakeBMC, cfg *Config) { f.powerDelay = time.Hour; cfg.WaitTimeout = 100 * time.Millisecond },
			(*Client).PowerOn, "power on", 0, "power state still Off after 100ms, wanted On"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeBMC()
			cfg := startFake(t, f)
			c := dial(t, cfg)
			if tt.setup != nil {
				f.mu.Lock()
				tt.setup(f, &cfg)
				f.mu.Unlock()
				c.cfg.WaitTimeout = cfg.WaitTimeout
			}
			err := tt.do(c, context.Background())
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			checkError(t, f, cfg, err, tt.op, tt.status, tt.want)
		})
	}
}

func TestTimeout(t *testing.T) {
	f := newFakeBMC()
	f.slow = 5 * time.Second
	cfg := startFake(t, f)
	cfg.Timeout = 100 * time.Millisecond
	start := time.Now()
	_, err := Dial(context.Background(), cfg)
	if time.Since(start) > 3*time.Second {
		t.Errorf("Dial took %v with a 100ms timeout", time.Since(start))
	}
	checkError(t, f, cfg, err, "connect", 0, "no answer within 100ms")
}

func TestUnreachable(t *testing.T) {
	srv := httptest.NewServer(nil)
	url := srv.URL
	srv.Close()
	cfg := Config{Endpoint: url, Username: "admin", Password: "hunter2-secret", Timeout: time.Second}
	_, err := Dial(context.Background(), cfg)
	checkError(t, &fakeBMC{user: "admin", pass: "hunter2-secret"}, cfg, err, "connect", 0, "connection refused")
}

func TestWrongCredentials(t *testing.T) {
	f := newFakeBMC()
	cfg := startFake(t, f)
	cfg.Password = "wrong-" + f.pass
	_, err := Dial(context.Background(), cfg)
	checkError(t, f, cfg, err, "login", 401, "Login failed: the user name or password is incorrect.")
	if strings.Contains(err.Error(), cfg.Password) {
		t.Errorf("error contains the wrong password: %v", err)
	}

	// Basic auth only: the failure shows on the first authenticated request.
	f = newFakeBMC()
	f.noSessions = true
	cfg = startFake(t, f)
	cfg.Password = "wrong-" + f.pass
	_, err = Dial(context.Background(), cfg)
	checkError(t, f, cfg, err, "find system", 401, "/redfish/v1/Systems: The authentication credentials included with this request are missing or invalid")
	if strings.Contains(err.Error(), cfg.Password) {
		t.Errorf("error contains the wrong password: %v", err)
	}
}

func TestEndpointWithCredentialsRefused(t *testing.T) {
	_, err := Dial(context.Background(), Config{Endpoint: "https://root:topsecret@10.0.0.5"})
	if err == nil || strings.Contains(err.Error(), "topsecret") || !strings.Contains(err.Error(), "not accepted") {
		t.Errorf("err = %v", err)
	}
}

func TestSessionRelogin(t *testing.T) {
	f := newFakeBMC()
	c := dial(t, startFake(t, f))
	f.expireSessions()
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.sessionsCreated != 2 {
		t.Errorf("sessions created = %d, want 2 (login, re-login after 401)", f.sessionsCreated)
	}
	c.Close()
	if f.sessionsDeleted != 1 {
		t.Errorf("sessions deleted = %d, want 1 (Close logs out)", f.sessionsDeleted)
	}
}

func TestBasicAuthFallback(t *testing.T) {
	f := newFakeBMC()
	f.noSessions = true
	c := dial(t, startFake(t, f))
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	if f.sessionsCreated != 0 || !f.basicSeen {
		t.Errorf("sessions = %d, basic = %v; want Basic auth only", f.sessionsCreated, f.basicSeen)
	}
}

func TestPickSystem(t *testing.T) {
	f := newFakeBMC()
	f.systems = append(f.systems,
		&fakeSystem{id: "2", name: "node2", uuid: "4c4c4544-0000-1010-8000-b1c04f4d3233", serial: "SN0002", power: "On", boot: map[string]any{}},
		&fakeSystem{id: "3", name: "node3", uuid: "4c4c4544-0000-1010-8000-b1c04f4d3234", serial: "SN0003", power: "Off", boot: map[string]any{}},
	)
	for _, tt := range []struct{ pick, want, err string }{
		{"2", "2", ""},
		{"node3", "3", ""},
		{"4C4C4544-0000-1010-8000-B1C04F4D3233", "2", ""},
		{"SN0001", "1", ""},
		{"", "", "the BMC has 3 systems, pick one by ID, name, UUID or serial: 3 (name node3"},
		{"nope", "", `no system "nope"; the BMC has: 3 (name node3, uuid 4c4c4544-0000-1010-8000-b1c04f4d3234, serial SN0003), 2`},
	} {
		t.Run(tt.pick, func(t *testing.T) {
			cfg := startFake(t, f)
			cfg.System = tt.pick
			c, err := Dial(context.Background(), cfg)
			if tt.err != "" {
				checkError(t, f, cfg, err, "find system", 0, tt.err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			st, err := c.Status(context.Background())
			if err != nil || st.System != tt.want {
				t.Errorf("Status = %+v, %v; want system %s", st, err, tt.want)
			}
		})
	}
}

func TestBootOverrideVendors(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(f *fakeBMC)
		o        BootOverride
		wantSent map[string]any // the Boot object PATCHed
		wantErr  string
	}{
		{"generic pxe once", nil, BootOverride{Target: "pxe"},
			map[string]any{"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}, ""},
		{"generic http uri continuous uefi", nil, BootOverride{Target: "UefiHttp", URI: "http://10.0.0.1/boot.efi", Mode: "UEFI", Continuous: true},
			map[string]any{"BootSourceOverrideTarget": "UefiHttp", "BootSourceOverrideEnabled": "Continuous", "BootSourceOverrideMode": "UEFI", "HttpBootUri": "http://10.0.0.1/boot.efi"}, ""},
		{"Supermicro: mode every time, Continuous after Once", func(f *fakeBMC) {
			f.manufacturer, f.vendor = "Supermicro", "Supermicro"
			f.modeEveryTime, f.onceReadsContinuous = true, true
		}, BootOverride{Target: "Pxe"},
			map[string]any{"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once", "BootSourceOverrideMode": "UEFI"}, ""},
		{"HPE: never writes the mode", func(f *fakeBMC) { f.manufacturer, f.vendor, f.rejectMode = "HPE", "HPE", true }, BootOverride{Target: "Pxe", Mode: "UEFI"},
			map[string]any{"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}, ""},
		{"HPE: a different mode is a BIOS change", func(f *fakeBMC) { f.manufacturer, f.rejectMode = "HPE", true }, BootOverride{Target: "Pxe", Mode: "Legacy"},
			nil, "HPE BMCs refuse to write BootSourceOverrideMode; it is UEFI, change it to Legacy in the BIOS settings"},
		{"Dell: settings apply at the next reset", func(f *fakeBMC) { f.manufacturer, f.vendor, f.ignorePatch = "Dell Inc.", "Dell", true }, BootOverride{Target: "Pxe"},
			map[string]any{"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}, ""},
		{"unknown vendor reading Continuous after Once: accepted", func(f *fakeBMC) { f.onceReadsContinuous = true }, BootOverride{Target: "Pxe"},
			map[string]any{"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}, ""},
		{"target the BMC does not list", nil, BootOverride{Target: "None"},
			map[string]any{"BootSourceOverrideTarget": "None", "BootSourceOverrideEnabled": "Once"}, ""},
		{"uri without http target", nil, BootOverride{Target: "Pxe", URI: "http://x/"}, nil, "a boot URI needs target UefiHttp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeBMC()
			if tt.setup != nil {
				tt.setup(f)
			}
			cfg := startFake(t, f)
			c := dial(t, cfg)
			err := c.SetBootOverride(context.Background(), tt.o)
			if tt.wantErr != "" {
				checkError(t, f, cfg, err, "boot override", 0, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(f.patches) != 1 {
				t.Fatalf("patches = %v, want one", f.patches)
			}
			got := f.patches[0]
			if len(got) != len(tt.wantSent) {
				t.Errorf("sent %v, want %v", got, tt.wantSent)
			}
			for k, v := range tt.wantSent {
				if got[k] != v {
					t.Errorf("sent %s = %v, want %v (all: %v)", k, got[k], v, got)
				}
			}
		})
	}
}

func TestBootOverrideStaleETag(t *testing.T) {
	f := newFakeBMC()
	c := dial(t, startFake(t, f))
	// Another client changes the system between our GET and PATCH.
	f.busy409 = 0
	orig := c.quirks
	defer func() { c.quirks = orig }()
	f.mu.Lock()
	f.systems[0].etag = 41
	f.mu.Unlock()
	if err := c.SetBootOverride(context.Background(), BootOverride{Target: "Hdd"}); err != nil {
		t.Fatal(err)
	}
	st, _ := c.Status(context.Background())
	if st.BootTarget != "Hdd" || st.BootEnabled != "Once" {
		t.Errorf("status = %+v", st)
	}
}

func TestMedia(t *testing.T) {
	f := newFakeBMC()
	f.insertNeedsEject = true
	f.mediaIn, f.mediaImage = true, "http://old/old.iso"
	c := dial(t, startFake(t, f))
	ctx := context.Background()
	if err := c.InsertMedia(ctx, "http://10.0.0.1/new.iso"); err != nil {
		t.Fatal(err)
	}
	m, err := c.MediaState(ctx)
	if err != nil || !m.Inserted || m.Image != "http://10.0.0.1/new.iso" {
		t.Errorf("MediaState = %+v, %v", m, err)
	}
	if err := c.EjectMedia(ctx); err != nil {
		t.Fatal(err)
	}
	if m, _ := c.MediaState(ctx); m.Inserted || m.Image != "" {
		t.Errorf("after eject: %+v", m)
	}
	if err := c.EjectMedia(ctx); err != nil {
		t.Errorf("eject of an empty drive: %v", err)
	}
}

func TestMaxConcurrent(t *testing.T) {
	f := newFakeBMC()
	cfg := startFake(t, f)
	c := dial(t, cfg)
	f.mu.Lock()
	f.slow = 20 * time.Millisecond
	f.maxInFlight = 0
	f.mu.Unlock()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := c.Status(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if f.maxInFlight > 2 {
		t.Errorf("max requests in flight = %d, want <= 2 (default MaxConcurrent)", f.maxInFlight)
	}
}

func TestTLS(t *testing.T) {
	f := newFakeBMC()
	srv := httptest.NewUnstartedServer(f)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is the point
	srv.StartTLS()
	defer srv.Close()
	base := Config{Endpoint: srv.URL, Username: f.user, Password: f.pass, Timeout: 5 * time.Second}

	_, err := Dial(context.Background(), base)
	checkError(t, f, base, err, "connect", 0, "certificate")

	insecure := base
	insecure.Insecure = true
	c, err := Dial(context.Background(), insecure)
	if err != nil {
		t.Fatalf("Insecure: %v", err)
	}
	c.Close()

	ca := filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(ca, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	withCA := base
	withCA.CAFile = ca
	c, err = Dial(context.Background(), withCA)
	if err != nil {
		t.Fatalf("CAFile: %v", err)
	}
	c.Close()
}

func TestCredentialsFromEnv(t *testing.T) {
	for _, tt := range []struct{ user, pass, wantUser, wantPass, err string }{
		{"admin", "pw:with:colons", "admin", "pw:with:colons", ""},
		{"", "", "", "", ""},
		{"admin", "", "", "", "PHOENIX_BMC_USER is set but PHOENIX_BMC_PASSWORD is not"},
		{"", "pw", "", "", "PHOENIX_BMC_PASSWORD is set but PHOENIX_BMC_USER is not"},
	} {
		t.Run(tt.user+"/"+tt.pass, func(t *testing.T) {
			t.Setenv("PHOENIX_BMC_USER", tt.user)
			t.Setenv("PHOENIX_BMC_PASSWORD", tt.pass)
			u, p, err := CredentialsFromEnv("PHOENIX_BMC")
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Errorf("err = %v, want %s", err, tt.err)
				}
				return
			}
			if err != nil || u != tt.wantUser || p != tt.wantPass {
				t.Errorf("got %q %q %v", u, p, err)
			}
		})
	}
}

func TestCredentialsFromFile(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name, content    string
		mode             os.FileMode
		wantUser, wantPW string
		err              string
	}{
		{"colon", "admin:pa:ss\n", 0o600, "admin", "pa:ss", ""},
		{"yaml", "username: root\npassword: \"calvin\"\n", 0o400, "root", "calvin", ""},
		{"world readable", "admin:topsecret\n", 0o644, "", "", "readable by group or others (mode 0644)"},
		{"group readable", "admin:topsecret\n", 0o640, "", "", "readable by group or others"},
		{"garbage", "topsecret\n", 0o600, "", "", `want "user:password" or YAML`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.name)
			if err := os.WriteFile(p, []byte(tt.content), tt.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(p, tt.mode)
			u, pw, err := CredentialsFromFile(p)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), "topsecret") {
					t.Errorf("err = %v, want %s without the secret", err, tt.err)
				}
				return
			}
			if err != nil || u != tt.wantUser || pw != tt.wantPW {
				t.Errorf("got %q %q %v", u, pw, err)
			}
		})
	}
}

func TestQuirksFor(t *testing.T) {
	for _, tt := range []struct{ manufacturer, vendor, want string }{
		{"Supermicro", "", "Supermicro"},
		{"HPE", "HPE", "HPE"},
		{"HP", "", "HPE"},
		{"Hewlett Packard Enterprise", "", "HPE"},
		{"Dell Inc.", "Dell", "Dell"},
		{"", "Dell", "Dell"},
		{"Lenovo", "Lenovo", ""},
		{"QEMU", "phoenix", ""},
	} {
		if got := quirksFor(tt.manufacturer, tt.vendor).name; got != tt.want {
			t.Errorf("quirksFor(%q, %q) = %q, want %q", tt.manufacturer, tt.vendor, got, tt.want)
		}
	}
}

func TestMediaSupermicroEjectsFirst(t *testing.T) {
	f := newFakeBMC()
	f.manufacturer = "Supermicro"
	c := dial(t, startFake(t, f))
	if err := c.InsertMedia(context.Background(), "http://10.0.0.1/a.iso"); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	ej := slices.Index(f.requests, "POST /redfish/v1/Managers/BMC/VirtualMedia/CD1/Actions/VirtualMedia.EjectMedia")
	in := slices.Index(f.requests, "POST /redfish/v1/Managers/BMC/VirtualMedia/CD1/Actions/VirtualMedia.InsertMedia")
	if ej < 0 || in < ej {
		t.Errorf("want EjectMedia before InsertMedia even on an empty drive; requests: %v", f.requests)
	}
}

// TestResetNotReplayedAfter5xx: a BMC (or a proxy in front of it) may
// carry a Reset out and still answer 500, 502 or 504: the POST is not sent
// again (the host would be reset twice), the failure is returned instead.
// A GET answered the same way is retried.
func TestResetNotReplayedAfter5xx(t *testing.T) {
	for _, status := range []int{500, 502, 504} {
		f := newFakeBMC()
		f.systems[0].power = "On"
		var mu sync.Mutex
		failedReset, failedGet := false, false
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			failReset := r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "ComputerSystem.Reset") && !failedReset
			failGet := r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/Systems/1") && !failedGet
			failedReset, failedGet = failedReset || failReset, failedGet || failGet
			mu.Unlock()
			switch {
			case failReset:
				f.ServeHTTP(httptest.NewRecorder(), r) // carried out...
				redfishError(w, status, "upstream timed out")
			case failGet:
				redfishError(w, status, "busy")
			default:
				f.ServeHTTP(w, r)
			}
		})
		_, resets, err := cycleBehind(t, f, h)
		if len(resets) != 1 || err == nil || !strings.Contains(err.Error(), fmt.Sprint(status)) {
			t.Errorf("%d after the reset: resets %v, err %v; want one reset and the %d", status, resets, err, status)
		}
		if !failedGet {
			t.Errorf("%d: the system was never read", status)
		}
	}
}

// cycleBehind runs one PowerCycle against f with h in front of it, and
// returns the client, the resets f saw and PowerCycle's error.
func cycleBehind(t *testing.T, f *fakeBMC, h http.Handler) (*Client, []string, error) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	cfg := startFake(t, f)
	cfg.Endpoint = srv.URL
	c := dial(t, cfg)
	err := c.PowerCycle(context.Background())
	f.mu.Lock()
	defer f.mu.Unlock()
	return c, slices.Clone(f.resets), err
}

// TestBMCMessageIDOnly: HPE iLO's error entries carry a MessageId and its
// arguments but no Message; the operator must still read the reason.
func TestBMCMessageIDOnly(t *testing.T) {
	se := &schemas.Error{Message: "See @Message.ExtendedInfo for more information.", ExtendedInfos: []schemas.ErrExtendedInfo{
		{MessageID: "iLO.2.15.PropertyNotWritableOrUnknown", MessageArgs: []string{"BootSourceOverrideMode"}},
	}}
	if got, want := bmcMessage(se), "iLO.2.15.PropertyNotWritableOrUnknown(BootSourceOverrideMode)"; got != want {
		t.Errorf("bmcMessage = %q, want %q", got, want)
	}
}

// TestSessionLostAfterReset: the BMC accepts a Reset and then drops the
// session (its web server restarted): the Reset is not sent again after
// the new login; the operation fails and says why. A session lost before
// any change is logged into again and the operation repeated.
func TestSessionLostAfterReset(t *testing.T) {
	f := newFakeBMC()
	f.systems[0].power = "On"
	var once sync.Once
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.ServeHTTP(w, r)
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "ComputerSystem.Reset") {
			once.Do(f.expireSessions)
		}
	})
	c, resets, err := cycleBehind(t, f, h)
	if len(resets) != 1 || err == nil || !strings.Contains(err.Error(), "not repeating") {
		t.Errorf("resets %v, err %v; want one reset and an error saying it was not repeated", resets, err)
	}
	// The new session works, and a session lost before any change is
	// simply renewed.
	f.expireSessions()
	if _, err := c.PowerState(context.Background()); err != nil {
		t.Errorf("power state after the session was lost again: %v", err)
	}
}
