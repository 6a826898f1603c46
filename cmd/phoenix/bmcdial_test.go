package main

import (
	"context"
	"net"
	"sync"
	"testing"

	"github.com/phoenixboot/phoenix/fleet"
	"github.com/phoenixboot/phoenix/redfish/vbmc"
)

// overrideSystem is a vbmc.System that only keeps its boot override.
type overrideSystem struct {
	mu   sync.Mutex
	boot vbmc.BootOverride
}

func (s *overrideSystem) Info() vbmc.SystemInfo {
	return vbmc.SystemInfo{Name: "node1", UUID: "00000000-0000-4000-8000-000000000001", MAC: "52:54:00:00:00:01", Firmware: vbmc.UEFI, Memory: 512}
}
func (s *overrideSystem) PowerState(context.Context) (string, error) { return "On", nil }
func (s *overrideSystem) Reset(context.Context, string) error        { return nil }
func (s *overrideSystem) BootOverride() vbmc.BootOverride {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.boot
}
func (s *overrideSystem) AllowedTargets() []string {
	return []string{vbmc.TargetNone, vbmc.TargetPxe, vbmc.TargetUefiHTTP}
}
func (s *overrideSystem) SetBootOverride(b vbmc.BootOverride) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.boot = b
	return nil
}
func (s *overrideSystem) Media() vbmc.Media                         { return vbmc.Media{} }
func (s *overrideSystem) InsertMedia(context.Context, string) error { return nil }
func (s *overrideSystem) EjectMedia(context.Context) error          { return nil }

// TestNetworkBootTarget: a host whose fleet file says bmc.boot: uefi-http
// gets a one-time UefiHttp override through Redfish; others get Pxe.
func TestNetworkBootTarget(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sys := &overrideSystem{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go (&vbmc.Server{Systems: []vbmc.System{sys}, Username: "admin", Password: "pw"}).Serve(ctx, ln)
	t.Setenv("PHOENIX_TEST_BMC_PW", "pw")
	for _, c := range []struct{ boot, want string }{{"", vbmc.TargetPxe}, {fleet.BootPXE, vbmc.TargetPxe}, {fleet.BootUEFIHTTP, vbmc.TargetUefiHTTP}} {
		spec := fleet.HostSpec{Name: "node1", BMC: &fleet.BMCSpec{
			Endpoint: "http://" + ln.Addr().String(), Username: "admin", Credentials: "env:PHOENIX_TEST_BMC_PW", System: "node1", Boot: c.boot}}
		b, err := redfishDialer{}.Dial(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.SetNetworkBootOnce(ctx); err != nil {
			t.Fatalf("boot %q: %v", c.boot, err)
		}
		if got := sys.BootOverride(); got.Target != c.want || got.Enabled != vbmc.OverrideOnce {
			t.Errorf("boot %q: override %+v, want %s once", c.boot, got, c.want)
		}
		if cl, ok := b.(interface{ Close() error }); ok {
			cl.Close()
		}
	}
}
