package fleet

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestPower: an operator's hand on a host's power. Status reads through
// the BMC; off and cycle are refused until the host is quarantined, then
// carried out and recorded; a failing BMC's own error is reported.
func TestPower(t *testing.T) {
	s := startSim(t, 2, 1, "  canary: 0\n  max_unavailable: 1\n  boot_deadline: 5s\n", nil)
	c := s.w.ctrl.Load()
	ctx := context.Background()

	got, err := c.Power(ctx, "h0000", ActionPowerStatus, 0)
	if err != nil || got.Power != "On" {
		t.Fatalf("status: %+v, %v", got, err)
	}
	for _, a := range []string{ActionPowerOff, ActionPowerCycle} {
		if _, err := c.Power(ctx, "h0000", a, 0); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "quarantine") {
			t.Errorf("%s of a host in service: %v, want ErrState naming quarantine", a, err)
		}
	}
	if _, err := c.Power(ctx, "nope", ActionPowerStatus, 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown host: %v", err)
	}
	if _, err := c.Power(ctx, "h0000", "reboot", 0); !errors.Is(err, errBadRequest) {
		t.Errorf("unknown action: %v", err)
	}
	resets := s.w.resets["h0000"]

	if err := c.Quarantine("h0000", "post-mortem"); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Power(ctx, "h0000", ActionPowerOff, 0); err != nil || got.Power != "On" {
		// The simulated BMC always reads "On"; what matters is the call.
		t.Fatalf("off: %+v, %v", got, err)
	}
	if _, err := c.Power(ctx, "h0000", ActionPowerCycle, 0); err != nil {
		t.Fatal(err)
	}
	s.w.mu.Lock()
	offs, cycles := s.w.powerOffs["h0000"], s.w.resets["h0000"]-resets
	s.w.mu.Unlock()
	if offs != 1 || cycles != 1 {
		t.Errorf("BMC saw %d power-offs and %d cycles, want 1 and 1", offs, cycles)
	}

	// A BMC that fails: its error comes back as ErrBMC, and is recorded.
	s.w.bmcDown.Store(true)
	if _, err := c.Power(ctx, "h0000", ActionPowerOn, 0); !errors.Is(err, ErrBMC) || !strings.Contains(err.Error(), "503") {
		t.Errorf("failing BMC: %v", err)
	}
	s.w.bmcDown.Store(false)
	evs, err := s.store.Events(EventFilter{Host: "h0000"})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, e := range evs {
		if e.Kind == "power" {
			msgs = append(msgs, e.Message)
		}
	}
	want := []string{"power on by the operator failed", "power cycle by the operator: now On", "power off (graceful for 0s) by the operator: now On"} // newest first
	if len(msgs) != len(want) {
		t.Fatalf("power events %q, want %d", msgs, len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(msgs[i], w) {
			t.Errorf("event %d: %q, want %q…", i, msgs[i], w)
		}
	}
}

// TestPowerNoBMC: a host whose fleet file names no BMC cannot be powered
// by phoenix, and the answer says why.
func TestPowerNoBMC(t *testing.T) {
	store, err := OpenStoreWith(filepath.Join(t.TempDir(), "phoenix.db"), StoreOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	src := newSimImages("demo:1")
	c := &Controller{Store: store, Images: src}
	if _, err := c.Apply([]byte("hosts:\n- {name: lonely, macs: ['52:54:00:00:00:01'], image: demo:1}\n"), "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Power(context.Background(), "lonely", ActionPowerStatus, 0); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "no bmc") {
		t.Errorf("power of a host without a BMC: %v", err)
	}
}
