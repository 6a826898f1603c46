package dhcp

import (
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func TestBootFor(t *testing.T) {
	full := labConfig().withDefaults()
	bare := Config{ServerIP: full.ServerIP}.withDefaults() // no ARM64, no URLs
	tests := []struct {
		name       string
		cfg        Config
		mods       []dhcpv4.Modifier
		wantPXE    bool
		wantLabel  string
		wantFile   string
		wantVendor string
	}{
		{"not pxe", full, nil, false, "", "", ""},
		{"not pxe, other vendor class", full, []dhcpv4.Modifier{withVendor("MSFT 5.0")}, false, "", "", ""},
		{"bios opt93=0", full, []dhcpv4.Modifier{withArch(0), withVendor("PXEClient:Arch:00000:UNDI:002001")}, true, "bios", "undionly.kpxe", "PXEClient"},
		{"bios opt93 only", full, []dhcpv4.Modifier{withArch(0)}, true, "bios", "undionly.kpxe", "PXEClient"},
		{"efi x64 opt93=7", full, []dhcpv4.Modifier{withArch(7)}, true, "efi-x64", "ipxe.efi", "PXEClient"},
		{"efi bc opt93=9", full, []dhcpv4.Modifier{withArch(9)}, true, "efi-x64", "ipxe.efi", "PXEClient"},
		{"arm64 opt93=11", full, []dhcpv4.Modifier{withArch(11)}, true, "efi-arm64", "ipxe-arm64.efi", "PXEClient"},
		{"arm64 without arm64 ipxe", bare, []dhcpv4.Modifier{withArch(11)}, true, "efi-arm64", "", ""},
		{"http x64 opt93=16", full, []dhcpv4.Modifier{withArch(16), withVendor("HTTPClient:Arch:00016:UNDI:003001")}, true, "http-x64", "http://10.99.0.1:8080/ipxe.efi", "HTTPClient"},
		{"http arm64 opt93=19 without url", full, []dhcpv4.Modifier{withArch(19)}, true, "http-arm64", "", ""},
		{"http x64 without url", bare, []dhcpv4.Modifier{withArch(16)}, true, "http-x64", "", ""},
		{"vendor class fallback bios", full, []dhcpv4.Modifier{withVendor("PXEClient:Arch:00000:UNDI:002001")}, true, "bios", "undionly.kpxe", "PXEClient"},
		{"vendor class fallback efi", full, []dhcpv4.Modifier{withVendor("PXEClient:Arch:00007:UNDI:003016")}, true, "efi-x64", "ipxe.efi", "PXEClient"},
		{"vendor class fallback http", full, []dhcpv4.Modifier{withVendor("HTTPClient:Arch:00016:UNDI:003001")}, true, "http-x64", "http://10.99.0.1:8080/ipxe.efi", "HTTPClient"},
		{"opt93 wins over vendor class", full, []dhcpv4.Modifier{withArch(7), withVendor("PXEClient:Arch:00000")}, true, "efi-x64", "ipxe.efi", "PXEClient"},
		{"pxe without arch", full, []dhcpv4.Modifier{withVendor("PXEClient")}, true, "unknown", "", ""},
		{"efi ia32 unsupported", full, []dhcpv4.Modifier{withArch(6)}, true, "arch-6", "", ""},
		{"ipxe bios", full, []dhcpv4.Modifier{withArch(0), withIPXE()}, true, "ipxe-bios", "http://10.99.0.1:8080/boot.ipxe?mac=${net0/mac}", "PXEClient"},
		{"ipxe efi", full, []dhcpv4.Modifier{withArch(7), withIPXE()}, true, "ipxe-efi-x64", "http://10.99.0.1:8080/boot.ipxe?mac=${net0/mac}", "PXEClient"},
		{"ipxe rfc3004 user class", full, []dhcpv4.Modifier{withArch(7), dhcpv4.WithUserClass("iPXE", true)}, true, "ipxe-efi-x64", "http://10.99.0.1:8080/boot.ipxe?mac=${net0/mac}", "PXEClient"},
		{"ipxe user class alone", full, []dhcpv4.Modifier{withIPXE()}, true, "ipxe-unknown", "http://10.99.0.1:8080/boot.ipxe?mac=${net0/mac}", "PXEClient"},
		{"ipxe without script url", bare, []dhcpv4.Modifier{withArch(0), withIPXE()}, true, "ipxe-bios", "", ""},
		{"custom files", Config{BIOSBootFile: "b.kpxe", EFI64BootFile: "e.efi"}.withDefaults(), []dhcpv4.Modifier{withArch(0)}, true, "bios", "b.kpxe", "PXEClient"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := classify(pkt(t, dhcpv4.MessageTypeDiscover, mac(1), tt.mods...))
			if cl.pxe != tt.wantPXE || cl.label() != tt.wantLabel {
				t.Fatalf("classify = %+v (label %q), want pxe %v label %q", cl, cl.label(), tt.wantPXE, tt.wantLabel)
			}
			b := tt.cfg.bootFor(cl)
			if b.file != tt.wantFile {
				t.Errorf("file = %q, want %q", b.file, tt.wantFile)
			}
			if b.file == "" && b.missing == "" {
				t.Errorf("no file and no reason")
			}
			if b.file != "" && b.vendorClass != tt.wantVendor {
				t.Errorf("vendor class = %q, want %q", b.vendorClass, tt.wantVendor)
			}
		})
	}
}

// TestBootForSecureBoot: a Secure Boot host's x86-64 UEFI PXE firmware
// gets the signed shim; its other boot paths are unchanged, except UEFI
// HTTP boot, which gets a clear refusal instead of an unsigned iPXE.
func TestBootForSecureBoot(t *testing.T) {
	cfg := labConfig().withDefaults()
	for _, tt := range []struct {
		name     string
		mods     []dhcpv4.Modifier
		wantFile string
	}{
		{"efi x64", []dhcpv4.Modifier{withArch(7)}, "shimx64.efi"},
		{"efi bc", []dhcpv4.Modifier{withArch(9)}, "shimx64.efi"},
		{"bios has no secure boot", []dhcpv4.Modifier{withArch(0)}, "undionly.kpxe"},
		{"http boot", []dhcpv4.Modifier{withArch(16), withVendor("HTTPClient:Arch:00016:UNDI:003001")}, ""},
	} {
		cl := classify(pkt(t, dhcpv4.MessageTypeDiscover, mac(1), tt.mods...))
		cl.secure = true
		b := cfg.bootFor(cl)
		if b.file != tt.wantFile || b.file == "" && !strings.Contains(b.missing, "secure boot") {
			t.Errorf("%s: file %q (missing %q), want %q", tt.name, b.file, b.missing, tt.wantFile)
		}
	}
	cfg.SecureBootFile = "custom-shim.efi"
	cl := classify(pkt(t, dhcpv4.MessageTypeDiscover, mac(1), withArch(7)))
	cl.secure = true
	if b := cfg.bootFor(cl); b.file != "custom-shim.efi" {
		t.Errorf("custom shim: %q", b.file)
	}
}

func TestVendorClassArch(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"PXEClient:Arch:00000:UNDI:002001", 0, true},
		{"PXEClient:Arch:00007:UNDI:003016", 7, true},
		{"HTTPClient:Arch:00016:UNDI:003001", 16, true},
		{"PXEClient:Arch:00011", 11, true},
		{"PXEClient", 0, false},
		{"PXEClient:Arch:", 0, false},
		{"PXEClient:Arch:x7", 0, false},
		{"PXEClient:Arch:99999999", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := vendorClassArch(tt.in)
			if got != tt.want || ok != tt.ok {
				t.Errorf("vendorClassArch(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
			}
		})
	}
}
