package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phoenixboot/phoenix/boot/dhcp"
)

func TestConfigFile(t *testing.T) {
	cmd := newServeCmd()
	path := filepath.Join(t.TempDir(), "serve.yaml")
	os.WriteFile(path, []byte("state: /srv/phoenix\ndhcp-range: 10.0.0.10-10.0.0.20\ndns: [1.1.1.1, 8.8.8.8]\nlease-time: 2h\nhttp-addr: ':9999'\n"), 0o644)
	if err := cmd.Flags().Parse([]string{"--http-addr", ":8080"}); err != nil {
		t.Fatal(err)
	}
	if err := applyConfigFile(cmd.Flags(), path); err != nil {
		t.Fatal(err)
	}
	get := func(name string) string { return cmd.Flags().Lookup(name).Value.String() }
	if get("state") != "/srv/phoenix" || get("lease-time") != "2h0m0s" || get("dns") != "[1.1.1.1,8.8.8.8]" {
		t.Errorf("config not applied: state=%s lease=%s dns=%s", get("state"), get("lease-time"), get("dns"))
	}
	if get("http-addr") != ":8080" {
		t.Errorf("command-line flag lost to the config file: %s", get("http-addr"))
	}
	os.WriteFile(path, []byte("stat: /typo\n"), 0o644)
	if err := applyConfigFile(newServeCmd().Flags(), path); err == nil || !strings.Contains(err.Error(), `unknown key "stat"`) {
		t.Errorf("typo accepted: %v", err)
	}
}

func TestDHCPConfig(t *testing.T) {
	ifNet := &net.IPNet{IP: net.IPv4(10, 0, 0, 1).To4(), Mask: net.CIDRMask(24, 32)}
	base := serveOptions{dhcpMode: "full", dhcpRange: "10.0.0.100-10.0.0.200", leaseTime: time.Hour,
		reservations: []string{"52-54-00-00-00-01=10.0.0.5"}, dns: []string{"10.0.0.53"}}
	cfg, err := dhcpConfig(base, ifNet.IP, ifNet, "http://10.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Mode != dhcp.ModeFull || !cfg.PoolEnd.Equal(net.IPv4(10, 0, 0, 200)) || cfg.Netmask.String() != "ffffff00" ||
		!cfg.Reservations["52:54:00:00:00:01"].Equal(net.IPv4(10, 0, 0, 5)) || cfg.ScriptURL != "http://10.0.0.1/boot.ipxe?mac=${netX/mac}" {
		t.Errorf("cfg = %+v", cfg)
	}
	bad := []func(o *serveOptions){
		func(o *serveOptions) { o.dhcpRange = "10.0.0.100" },
		func(o *serveOptions) { o.dhcpMode = "fancy" },
		func(o *serveOptions) { o.reservations = []string{"zz=10.0.0.5"} },
		func(o *serveOptions) { o.dns = []string{"dns.example"} },
		func(o *serveOptions) { o.router = "x" },
		func(o *serveOptions) { o.dhcpRange = "10.0.1.100-10.0.1.200" }, // outside the interface's subnet
	}
	for i, f := range bad {
		o := base
		f(&o)
		if _, err := dhcpConfig(o, ifNet.IP, ifNet, "http://10.0.0.1"); err == nil {
			t.Errorf("bad option %d accepted", i)
		}
	}
	if _, err := dhcpConfig(base, ifNet.IP, nil, "http://10.0.0.1"); err == nil || !strings.Contains(err.Error(), "needs --interface") {
		t.Errorf("full mode without an interface: %v", err)
	}
	if cfg, err := dhcpConfig(serveOptions{dhcpMode: "proxy"}, ifNet.IP, nil, "http://x"); err != nil || cfg.Mode != dhcp.ModeProxy {
		t.Errorf("proxy: %+v %v", cfg, err)
	}
}

func TestSnake(t *testing.T) {
	for in, want := range map[string]string{"ProxyOffers": "proxy_offers", "Acks": "acks", "Bytes": "bytes"} {
		if got := snake(in); got != want {
			t.Errorf("snake(%q) = %q", in, got)
		}
	}
}

// TestUEFIBootFile: snponly.efi when the directory has it (it returns to
// the firmware on exit; see uefiBootFile), ipxe.efi otherwise, and the
// operator's choice over both. DHCP and HTTP boot hand out the same file.
func TestUEFIBootFile(t *testing.T) {
	dir := t.TempDir()
	if got := uefiBootFile(dir, ""); got != "ipxe.efi" {
		t.Errorf("without snponly.efi: %s", got)
	}
	if err := os.WriteFile(filepath.Join(dir, "snponly.efi"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := uefiBootFile(dir, ""); got != "snponly.efi" {
		t.Errorf("with snponly.efi: %s", got)
	}
	if got := uefiBootFile(dir, "ipxe.efi"); got != "ipxe.efi" {
		t.Errorf("--efi-boot-file ipxe.efi: %s", got)
	}
	cfg, err := dhcpConfig(serveOptions{dhcpMode: "proxy", efiBootFile: "snponly.efi"}, net.IPv4(10, 0, 0, 1), nil, "http://10.0.0.1")
	if err != nil || cfg.EFI64BootFile != "snponly.efi" || cfg.HTTPBootURL != "http://10.0.0.1/ipxe/snponly.efi" {
		t.Errorf("dhcp config %+v %v", cfg, err)
	}
}
