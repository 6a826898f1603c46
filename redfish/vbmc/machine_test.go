package vbmc

import (
	"context"
	"slices"
	"strings"
	"testing"
)

func TestStartRejectsOptionInjection(t *testing.T) {
	tests := []struct {
		name string
		m    *Machine
	}{
		{"no name", &Machine{}},
		{"tap with options", &Machine{Name: "vm1", Tap: "tap0,script=/tmp/x"}},
		{"name with comma", &Machine{Name: "vm1,debug-threads=on"}},
		{"mac with space", &Machine{Name: "vm1", MAC: "52:54:00:00:00:01 x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.m.WorkDir = t.TempDir()
			if err := tt.m.Start(context.Background()); err == nil {
				tt.m.Stop()
				t.Fatal("Start accepted it")
			}
		})
	}
}

func TestBootOrder(t *testing.T) {
	diskful := &Machine{Disk: "/x.raw"}
	diskless := &Machine{}
	tests := []struct {
		m      *Machine
		target string
		want   []string
	}{
		{diskful, TargetNone, []string{diskID, nicID, cdID}},
		{diskful, TargetPxe, []string{nicID, diskID, cdID}},
		{diskful, TargetCd, []string{cdID, diskID, nicID}},
		{diskful, TargetHdd, []string{diskID, nicID, cdID}},
		{diskless, TargetUefiHTTP, []string{nicID, cdID}},
		{diskless, TargetCd, []string{cdID, nicID}},
	}
	for _, tt := range tests {
		t.Run(tt.target, func(t *testing.T) {
			if got := tt.m.orderFor(tt.target); !slices.Equal(got, tt.want) {
				t.Errorf("orderFor(%s) = %v, want %v", tt.target, got, tt.want)
			}
		})
	}
}

func TestSetBootOverrideValidates(t *testing.T) {
	bios := &Machine{Name: "b"}
	uefi := &Machine{Name: "u", Firmware: UEFI, Disk: "/d.qcow2"}
	tests := []struct {
		m       *Machine
		b       BootOverride
		wantErr string
	}{
		{bios, BootOverride{Target: TargetPxe, Enabled: OverrideOnce}, ""},
		{bios, BootOverride{Target: TargetHdd, Enabled: OverrideOnce}, "not allowed"},
		{bios, BootOverride{Target: TargetUefiHTTP, Enabled: OverrideOnce}, "not allowed"},
		{bios, BootOverride{Target: TargetPxe, Enabled: OverrideOnce, Mode: ModeUEFI}, "firmware is Legacy"},
		{bios, BootOverride{Target: TargetPxe, Enabled: "Sometimes"}, "not allowed"},
		{uefi, BootOverride{Target: TargetUefiHTTP, Enabled: OverrideContinuous, HTTPBootURI: "http://x/"}, ""},
		{uefi, BootOverride{Target: TargetHdd, Enabled: OverrideOnce, Mode: ModeUEFI}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.m.Name+"/"+tt.b.Target+"/"+tt.b.Enabled, func(t *testing.T) {
			err := tt.m.SetBootOverride(tt.b)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestInsertMediaRefusesLocalFiles(t *testing.T) {
	m := &Machine{Name: "vm1", WorkDir: t.TempDir()}
	for _, u := range []string{"file:///etc/shadow", "/etc/shadow", "ftp://x/y.iso", "http:///nohost.iso"} {
		if err := m.InsertMedia(context.Background(), u); err == nil || !strings.Contains(err.Error(), "only http and https") {
			t.Errorf("InsertMedia(%q): %v", u, err)
		}
	}
}
