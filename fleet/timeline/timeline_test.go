package timeline

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phoenixboot/phoenix/boot/dhcp"
	"github.com/phoenixboot/phoenix/boot/httpboot"
	"github.com/phoenixboot/phoenix/boot/tftp"
	"github.com/phoenixboot/phoenix/images"
)

type fakeImages struct{}

func (fakeImages) Resolve(ref string) (images.Image, error) {
	return images.Image{Digest: ref, Artifacts: []images.Artifact{
		{Role: images.RoleKernel, Digest: "sha256:k"}, {Role: images.RoleInitrd, Digest: "sha256:i"}}}, nil
}

func TestBootPhases(t *testing.T) {
	reg := prometheus.NewRegistry()
	tl := New(fakeImages{}, reg)
	clock := time.Unix(1000, 0)
	tl.now = func() time.Time { return clock }
	tick := func() { clock = clock.Add(time.Second) }
	mac, _ := net.ParseMAC("52:54:00:00:00:01")
	ip := net.IPv4(10, 0, 0, 100)

	tl.DHCP(dhcp.Event{Kind: "offer", MAC: mac, IP: ip, Arch: "bios"})
	tick()
	tl.DHCP(dhcp.Event{Kind: "ack", MAC: mac, IP: ip, Arch: "bios"})
	tick()
	tl.TFTP(tftp.Transfer{File: "undionly.kpxe", Remote: &net.UDPAddr{IP: ip, Port: 2000}, Aborted: true})
	tl.TFTP(tftp.Transfer{File: "undionly.kpxe", Remote: &net.UDPAddr{IP: ip, Port: 2001}})
	tick()
	tl.DHCP(dhcp.Event{Kind: "ack", MAC: mac, IP: ip, Arch: "ipxe-bios"}) // iPXE asks again: same boot
	tl.HTTP(httpboot.Event{Kind: httpboot.EventScript, MAC: mac, Host: "h1", Digest: "sha256:m", Image: "demo:1", RemoteAddr: "10.0.0.100:3000"})
	tick()
	tl.HTTP(httpboot.Event{Kind: httpboot.EventBlob, Digest: "sha256:k", RemoteAddr: "10.0.0.100:3001"})
	tl.HTTP(httpboot.Event{Kind: httpboot.EventBlob, Digest: "sha256:i", RemoteAddr: "10.0.0.100:3001"})
	tick()
	tl.DHCP(dhcp.Event{Kind: "offer", MAC: mac, IP: ip}) // the OS's own DHCP
	tick()
	tl.HTTP(httpboot.Event{Kind: httpboot.EventReport, MAC: mac, Digest: "sha256:m", RemoteAddr: "10.0.0.100:4000"})

	boots := tl.Boots(mac)
	if len(boots) != 1 {
		t.Fatalf("%d boots, want 1", len(boots))
	}
	b := boots[0]
	var phases []string
	for _, s := range b.Steps {
		phases = append(phases, s.Phase)
	}
	want := "dhcp-offer dhcp-ack tftp script kernel initrd os-dhcp report"
	if got := strings.Join(phases, " "); got != want {
		t.Fatalf("phases %q, want %q", got, want)
	}
	if !b.Done || b.Failed != "" || b.Host != "h1" || b.Took() != 6*time.Second {
		t.Fatalf("boot = %+v", b)
	}
	// the next offer starts a second boot
	tick()
	tl.DHCP(dhcp.Event{Kind: "offer", MAC: mac, IP: ip})
	if n := len(tl.Boots(mac)); n != 2 {
		t.Fatalf("%d boots after a new offer", n)
	}
	if n := testutil.CollectAndCount(reg, "phoenix_boot_phase_seconds"); n != 8 {
		t.Errorf("%d phase series, want 8", n)
	}
	if v := testutil.ToFloat64(tl.boots_); v != 2 {
		t.Errorf("boots_total %v", v)
	}
}

// TestUEFIHTTPBoot: a UEFI HTTP boot client fetches iPXE over HTTP, not
// TFTP; that is its phase, and a boot file phoenix does not have is a
// failure of the boot.
func TestUEFIHTTPBoot(t *testing.T) {
	tl := New(fakeImages{}, nil)
	mac, _ := net.ParseMAC("52:54:00:00:00:03")
	ip := net.IPv4(10, 0, 0, 103)
	tl.DHCP(dhcp.Event{Kind: "offer", MAC: mac, IP: ip, Arch: "efi-x64-http"})
	tl.DHCP(dhcp.Event{Kind: "ack", MAC: mac, IP: ip, Arch: "efi-x64-http"})
	tl.HTTP(httpboot.Event{Kind: httpboot.EventBootFile, Detail: "snponly.efi", RemoteAddr: "10.0.0.103:3000"})
	tl.HTTP(httpboot.Event{Kind: httpboot.EventScript, MAC: mac, Host: "h3", Digest: "sha256:m", RemoteAddr: "10.0.0.103:3001"})
	b := tl.Boots(mac)[0]
	if len(b.Steps) != 4 || b.Steps[2].Phase != PhaseHTTPBoot || b.Steps[2].Detail != "snponly.efi" || b.Failed != "" {
		t.Fatalf("boot = %+v", b)
	}

	mac2, _ := net.ParseMAC("52:54:00:00:00:04")
	tl.DHCP(dhcp.Event{Kind: "offer", MAC: mac2, IP: net.IPv4(10, 0, 0, 104)})
	tl.DHCP(dhcp.Event{Kind: "ack", MAC: mac2, IP: net.IPv4(10, 0, 0, 104)})
	tl.HTTP(httpboot.Event{Kind: httpboot.EventBootFile, Detail: "ipxe.efi", Status: 404, RemoteAddr: "10.0.0.104:3000"})
	if b := tl.Boots(mac2)[0]; b.Failed != "boot-file-not-found" || reached(&b, PhaseHTTPBoot) {
		t.Fatalf("boot = %+v", b)
	}
	// From an address no DHCP lease explains: nobody's boot.
	tl.HTTP(httpboot.Event{Kind: httpboot.EventBootFile, Detail: "snponly.efi", RemoteAddr: "10.0.0.200:3000"})
}

// TestSecureBootPhases: the Secure Boot chain fetches shim, GRUB, GRUB's
// config and then kernel and initrd over TFTP; the blobs' transfers are the
// kernel and initrd phases, and the optional files shim and GRUB probe for
// fail nothing.
func TestSecureBootPhases(t *testing.T) {
	tl := New(fakeImages{}, nil)
	clock := time.Unix(1000, 0)
	tl.now = func() time.Time { return clock }
	mac, _ := net.ParseMAC("52:54:00:00:00:09")
	ip := net.IPv4(10, 0, 0, 109)
	from := &net.UDPAddr{IP: ip, Port: 2000}
	tl.DHCP(dhcp.Event{Kind: "ack", MAC: mac, IP: ip, Arch: "efi-x64"})
	clock = clock.Add(time.Second)
	tl.TFTP(tftp.Transfer{File: "shimx64.efi", Remote: from})
	tl.TFTP(tftp.Transfer{File: "revocations_sbat.efi", Remote: from, Refused: true, Probe: true})
	tl.TFTP(tftp.Transfer{File: "grubx64.efi", Remote: from})
	tl.TFTP(tftp.Transfer{File: "grub/x86_64-efi/fs.lst", Remote: from, Refused: true, Probe: true})
	clock = clock.Add(time.Second)
	tl.HTTP(httpboot.Event{Kind: httpboot.EventScript, MAC: mac, Host: "sb", Digest: "sha256:m", RemoteAddr: from.String()})
	clock = clock.Add(time.Second)
	tl.TFTP(tftp.Transfer{File: "blobs/sha256/k", Remote: from})
	clock = clock.Add(time.Second)
	tl.TFTP(tftp.Transfer{File: "blobs/sha256/i", Remote: from})
	b := tl.Boots(mac)[0]
	var got []string
	for _, st := range b.Steps {
		got = append(got, fmt.Sprintf("%s@%v", st.Phase, st.After))
	}
	if want := "dhcp-ack@0s tftp@1s script@2s kernel@3s initrd@4s"; strings.Join(got, " ") != want || b.Failed != "" {
		t.Errorf("steps %q (failed %q), want %q", got, b.Failed, want)
	}
}

// TestProxyOrphans: in proxy mode another server hands out addresses, so a
// boot file fetched over TFTP or HTTP comes from an address phoenix cannot
// tie to a MAC until iPXE asks for its script; the phase joins the boot
// then, at the time it happened.
func TestProxyOrphans(t *testing.T) {
	tl := New(nil, nil)
	clock := time.Unix(1000, 0)
	tl.now = func() time.Time { return clock }
	for i, c := range []struct {
		mac, ip string
		fetch   func(ip string)
		phase   string
	}{
		{"52:54:00:00:00:05", "10.0.0.150", func(ip string) {
			tl.HTTP(httpboot.Event{Kind: httpboot.EventBootFile, Detail: "snponly.efi", RemoteAddr: ip + ":3000"})
		}, PhaseHTTPBoot},
		{"52:54:00:00:00:06", "10.0.0.151", func(ip string) {
			tl.TFTP(tftp.Transfer{File: "undionly.kpxe", Remote: &net.UDPAddr{IP: net.ParseIP(ip), Port: 2000}})
		}, PhaseTFTP},
	} {
		mac, _ := net.ParseMAC(c.mac)
		tl.DHCP(dhcp.Event{Kind: "proxy-offer", MAC: mac, Arch: "efi-x64"})
		clock = clock.Add(time.Second)
		c.fetch(c.ip)
		clock = clock.Add(time.Second)
		tl.HTTP(httpboot.Event{Kind: httpboot.EventScript, MAC: mac, Host: "h", RemoteAddr: c.ip + ":3001"})
		b := tl.Boots(mac)[0]
		var got []string
		for _, st := range b.Steps {
			got = append(got, fmt.Sprintf("%s@%v", st.Phase, st.After))
		}
		want := fmt.Sprintf("dhcp-offer@0s %s@1s script@2s", c.phase)
		if strings.Join(got, " ") != want {
			t.Errorf("case %d: steps %q, want %q", i, got, want)
		}
	}
	if len(tl.orphans) != 0 {
		t.Errorf("orphans left: %v", tl.orphans)
	}
	// The other DHCP server gives 10.0.0.151, whose last user reported,
	// to a new machine: its TFTP fetch is the new machine's, not the
	// old one's.
	old, _ := net.ParseMAC("52:54:00:00:00:06")
	tl.HTTP(httpboot.Event{Kind: httpboot.EventReport, MAC: old, Digest: "sha256:x", RemoteAddr: "10.0.0.151:3002"})
	clock = clock.Add(time.Minute)
	fresh, _ := net.ParseMAC("52:54:00:00:00:08")
	tl.DHCP(dhcp.Event{Kind: "proxy-offer", MAC: fresh, Arch: "bios"})
	clock = clock.Add(time.Second)
	tl.TFTP(tftp.Transfer{File: "undionly.kpxe", Remote: &net.UDPAddr{IP: net.ParseIP("10.0.0.151"), Port: 2001}})
	tl.HTTP(httpboot.Event{Kind: httpboot.EventBootFile, Detail: "snponly.efi", RemoteAddr: "10.0.0.151:3003"})
	clock = clock.Add(time.Second)
	tl.HTTP(httpboot.Event{Kind: httpboot.EventScript, MAC: fresh, Host: "h2", RemoteAddr: "10.0.0.151:3004"})
	var got []string
	for _, st := range tl.Boots(fresh)[0].Steps {
		got = append(got, fmt.Sprintf("%s@%v", st.Phase, st.After))
	}
	if want := "dhcp-offer@0s tftp@1s http-boot@1s script@2s"; strings.Join(got, " ") != want {
		t.Errorf("new machine's steps %q, want %q", got, want)
	}
	if n := len(tl.Boots(old)); n != 1 {
		t.Errorf("the old machine has %d boots, want 1", n)
	}
	// Addresses that never ask for a script do not grow memory for ever.
	for i := range maxOrphans + 10 {
		tl.HTTP(httpboot.Event{Kind: httpboot.EventBootFile, Detail: "x", RemoteAddr: fmt.Sprintf("10.1.%d.%d:1", i/250, i%250)})
	}
	if len(tl.orphans) > maxOrphans {
		t.Errorf("%d orphan addresses kept", len(tl.orphans))
	}
	// Nor does one address that fetches again and again.
	for range 100 {
		tl.HTTP(httpboot.Event{Kind: httpboot.EventBootFile, Detail: "x", RemoteAddr: "10.2.0.1:1"})
	}
	if n := len(tl.orphans["10.2.0.1"]); n != 1 {
		t.Errorf("%d orphans kept for one address, want 1", n)
	}
}

func TestFailures(t *testing.T) {
	tl := New(nil, nil)
	mac, _ := net.ParseMAC("52:54:00:00:00:02")
	tl.DHCP(dhcp.Event{Kind: "ack", MAC: mac, IP: net.IPv4(10, 0, 0, 7), Arch: "bios"})
	tl.TFTP(tftp.Transfer{Remote: &net.UDPAddr{IP: net.IPv4(10, 0, 0, 7)}, Refused: true})
	tl.HTTP(httpboot.Event{Kind: httpboot.EventReport, MAC: mac, Digest: "sha256:x"})
	b := tl.Boots(mac)[0]
	if b.Failed != "tftp-refused" || !b.Done {
		t.Fatalf("boot = %+v", b)
	}
	if v := testutil.ToFloat64(tl.fails.WithLabelValues("tftp-refused")); v != 1 {
		t.Errorf("failures %v", v)
	}
}

func TestServeBoots(t *testing.T) {
	tl := New(nil, nil)
	mac, _ := net.ParseMAC("52:54:00:00:00:07")
	tl.DHCP(dhcp.Event{Kind: "offer", MAC: mac, IP: net.IPv4(10, 0, 0, 7)})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/boots/{mac}", tl.ServeBoots)
	for _, c := range []struct {
		path string
		code int
		body string
	}{
		{"/api/v1/boots/52:54:00:00:00:07", 200, `"phase":"dhcp-offer"`},
		{"/api/v1/boots/52-54-00-00-00-08", 200, `[]`},
		{"/api/v1/boots/not-a-mac", 400, `{"error":"mac \"not-a-mac\"`},
	} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", c.path, nil))
		if rec.Code != c.code || !strings.Contains(rec.Body.String(), c.body) || rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("GET %s: %d %q, want %d with %s", c.path, rec.Code, rec.Body, c.code, c.body)
		}
	}
}

// TestRenewalsStartNoBoot: once a boot has reported, the running system's
// lease renewals (acks of a client that is no PXE firmware) start no boot
// and do not push the real one out.
func TestRenewalsStartNoBoot(t *testing.T) {
	reg := prometheus.NewRegistry()
	tl := New(nil, reg)
	clock := time.Unix(1000, 0)
	tl.now = func() time.Time { return clock }
	mac, _ := net.ParseMAC("52:54:00:00:00:05")
	ip := net.IPv4(10, 0, 0, 5)
	tl.DHCP(dhcp.Event{Kind: "offer", MAC: mac, IP: ip, Arch: "bios"})
	tl.DHCP(dhcp.Event{Kind: "ack", MAC: mac, IP: ip, Arch: "bios"})
	tl.HTTP(httpboot.Event{Kind: httpboot.EventReport, MAC: mac, Digest: "sha256:x"})
	for range 20 {
		clock = clock.Add(30 * time.Minute)
		tl.DHCP(dhcp.Event{Kind: "ack", MAC: mac, IP: ip})
	}
	if boots := tl.Boots(mac); len(boots) != 1 || !boots[0].Done {
		t.Errorf("%d boots after 20 renewals, want the one reported boot", len(boots))
	}
	if v := testutil.ToFloat64(tl.boots_); v != 1 {
		t.Errorf("phoenix_boots_total %v, want 1", v)
	}
}

// TestBounded: DHCP from ever new MACs costs bounded memory.
func TestBounded(t *testing.T) {
	tl := New(nil, nil)
	clock := time.Unix(1000, 0)
	tl.now = func() time.Time { return clock }
	for i := range maxMACs + 1000 {
		clock = clock.Add(time.Millisecond)
		mac := net.HardwareAddr{0x52, 0x54, 0, byte(i >> 16), byte(i >> 8), byte(i)}
		ip := net.IPv4(10, byte(i>>16), byte(i>>8), byte(i))
		tl.DHCP(dhcp.Event{Kind: "offer", MAC: mac, IP: ip, Arch: "bios"})
		tl.DHCP(dhcp.Event{Kind: "ack", MAC: mac, IP: ip, Arch: "bios"})
	}
	if len(tl.boots) > maxMACs || len(tl.byIP) > maxMACs {
		t.Errorf("%d MACs and %d addresses kept, want at most %d", len(tl.boots), len(tl.byIP), maxMACs)
	}
	n := maxMACs + 999
	last := net.HardwareAddr{0x52, 0x54, 0, byte(n >> 16), byte(n >> 8), byte(n)}
	if len(tl.Boots(last)) != 1 {
		t.Error("the newest MAC's boot was forgotten")
	}
}
