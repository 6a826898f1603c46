package vbmc

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestRedfishtool drives the service with DMTF's own client, Debian's
// redfishtool, over plain HTTP on 127.0.0.1 (-S Never).
func TestRedfishtool(t *testing.T) {
	if _, err := exec.LookPath("redfishtool"); err != nil {
		msg := "redfishtool not installed (Debian package redfishtool)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg) // CI installs it: a skip there would hide a broken service
		}
		t.Skip(msg)
	}
	ts, vm := newTestServer(t)
	host := strings.TrimPrefix(ts.URL, "http://")
	run := func(user, pass string, args ...string) (string, error) {
		t.Helper()
		argv := append([]string{"-r", host, "-u", user, "-p", pass, "-S", "Never", "-T", "30"}, args...)
		out, err := exec.Command("redfishtool", argv...).CombinedOutput()
		return string(out), err
	}
	tests := []struct {
		name    string
		args    []string
		user    string
		pass    string
		wantErr bool
		check   func(t *testing.T, out string)
	}{
		{name: "get system", args: []string{"Systems", "-I", "vm01", "get"}, check: func(t *testing.T, out string) {
			var sys map[string]any
			if err := json.Unmarshal([]byte(out), &sys); err != nil || sys["PowerState"] != PowerOff || sys["Id"] != "vm01" {
				t.Errorf("system: %v %v", err, out)
			}
		}},
		{name: "list systems", args: []string{"Systems", "list"}, check: func(t *testing.T, out string) {
			if !strings.Contains(out, "/redfish/v1/Systems/vm01") || !strings.Contains(out, "/redfish/v1/Systems/vm02") {
				t.Errorf("list: %s", out)
			}
		}},
		{name: "reset on", args: []string{"Systems", "-I", "vm01", "reset", "On"}, check: func(t *testing.T, _ string) {
			if p, _ := vm.PowerState(context.Background()); p != PowerOn {
				t.Errorf("power %s after reset On", p)
			}
		}},
		{name: "reset force off with a session", args: []string{"-A", "Session", "Systems", "-I", "vm01", "reset", "ForceOff"}, check: func(t *testing.T, _ string) {
			if p, _ := vm.PowerState(context.Background()); p != PowerOff {
				t.Errorf("power %s after ForceOff", p)
			}
		}},
		{name: "boot override pxe once", args: []string{"Systems", "-I", "vm01", "setBootOverride", "Once", "Pxe"}, check: func(t *testing.T, _ string) {
			if b := vm.BootOverride(); b.Target != TargetPxe || b.Enabled != OverrideOnce {
				t.Errorf("override %+v", b)
			}
		}},
		{name: "power cycle", args: []string{"Systems", "-I", "vm01", "reset", "PowerCycle"}, check: func(t *testing.T, _ string) {
			if r := vm.resetLog(); r[len(r)-1] != ResetPowerCycle {
				t.Errorf("resets %v", r)
			}
		}},
		{name: "reset type not allowed", args: []string{"Systems", "-I", "vm01", "reset", "Nmi"}, wantErr: true},
		{name: "boot target not allowed", args: []string{"Systems", "-I", "vm01", "setBootOverride", "Once", "Floppy"}, wantErr: true},
		{name: "wrong password", args: []string{"Systems", "-I", "vm01", "get"}, pass: "wrong", wantErr: true},
		{name: "unknown system", args: []string{"Systems", "-I", "nope", "get"}, wantErr: true},
		{name: "manager", args: []string{"Managers", "-I", "vm01", "get"}, check: func(t *testing.T, out string) {
			if !strings.Contains(out, `"ManagerType": "BMC"`) {
				t.Errorf("manager: %s", out)
			}
		}},
		{name: "session login", args: []string{"-A", "Session", "SessionService", "login"}, check: func(t *testing.T, out string) {
			if !strings.Contains(out, "X-Auth-Token") {
				t.Errorf("login: %s", out)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, pass := testUser, testPass
			if tt.pass != "" {
				pass = tt.pass
			}
			out, err := run(user, pass, tt.args...)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("redfishtool %s succeeded: %s", strings.Join(tt.args, " "), out)
				}
				return
			}
			if err != nil {
				t.Fatalf("redfishtool %s: %v: %s", strings.Join(tt.args, " "), err, out)
			}
			if tt.check != nil {
				tt.check(t, out)
			}
		})
	}
}
