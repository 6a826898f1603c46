package dhcp

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

var update = flag.Bool("update", false, "rewrite testdata/golden files")

// summary renders a reply readably and deterministically: header fields,
// then options in code order as hex and, when printable, text.
func summary(resp *dhcpv4.DHCPv4, to *net.UDPAddr) string {
	if resp == nil {
		return "no reply\n"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "to      %s\n", to)
	fmt.Fprintf(&b, "op      %s\n", resp.OpCode)
	fmt.Fprintf(&b, "htype   %d hlen %d hops %d\n", resp.HWType, len(resp.ClientHWAddr), resp.HopCount)
	fmt.Fprintf(&b, "xid     %s\n", resp.TransactionID)
	fmt.Fprintf(&b, "flags   %s\n", resp.FlagsToString())
	fmt.Fprintf(&b, "ciaddr  %s\nyiaddr  %s\nsiaddr  %s\ngiaddr  %s\n", resp.ClientIPAddr, resp.YourIPAddr, resp.ServerIPAddr, resp.GatewayIPAddr)
	fmt.Fprintf(&b, "chaddr  %s\n", resp.ClientHWAddr)
	fmt.Fprintf(&b, "sname   %q\n", resp.ServerHostName)
	fmt.Fprintf(&b, "file    %q\n", resp.BootFileName)
	codes := make([]int, 0, len(resp.Options))
	for c := range resp.Options {
		codes = append(codes, int(c))
	}
	slices.Sort(codes)
	for _, c := range codes {
		v := resp.Options[uint8(c)]
		fmt.Fprintf(&b, "opt %3d % x", c, v)
		if printable(v) {
			fmt.Fprintf(&b, "  %q", v)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func printable(v []byte) bool {
	if len(v) < 2 {
		return false
	}
	for _, c := range v {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

func TestGolden(t *testing.T) {
	bare := labConfig()
	bare.ARM64BootFile = ""
	proxy := Config{
		Mode:        ModeProxy,
		ServerIP:    net.IPv4(10, 99, 0, 1),
		ScriptURL:   "http://10.99.0.1:8080/boot.ipxe?mac=${net0/mac}",
		HTTPBootURL: "http://10.99.0.1:8080/ipxe.efi",
	}
	biosPXE := []dhcpv4.Modifier{withArch(0), withVendor("PXEClient:Arch:00000:UNDI:002001"), withGUID()}
	efiPXE := []dhcpv4.Modifier{withArch(7), withVendor("PXEClient:Arch:00007:UNDI:003016"), withGUID()}
	ipxe := []dhcpv4.Modifier{withArch(0), withVendor("PXEClient:Arch:00000:UNDI:002001"), withIPXE()}
	httpBoot := []dhcpv4.Modifier{withArch(16), withVendor("HTTPClient:Arch:00016:UNDI:003001"), withGUID()}
	arm64 := []dhcpv4.Modifier{withArch(11), withVendor("PXEClient:Arch:00011:UNDI:003000")}
	requested := func(mods []dhcpv4.Modifier) []dhcpv4.Modifier {
		return append(slices.Clone(mods), withServerID(net.IPv4(10, 99, 0, 1)), withRequested(net.IPv4(10, 99, 0, 100)))
	}
	bootItem := dhcpv4.WithGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{71, 4, 0x80, 0x00, 0x00, 0x00, 255})
	atBootServer := &net.UDPAddr{IP: net.IPv4(10, 99, 0, 77), Port: PXEPort}

	tests := []struct {
		name string
		cfg  Config
		mt   dhcpv4.MessageType
		mods []dhcpv4.Modifier
		src  *net.UDPAddr // default clientAddr
		port int          // default 67
	}{
		{"full-plain-discover", labConfig(), dhcpv4.MessageTypeDiscover, []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptHostName("db1"))}, nil, 0},
		{"full-bios-discover", labConfig(), dhcpv4.MessageTypeDiscover, biosPXE, nil, 0},
		{"full-bios-request", labConfig(), dhcpv4.MessageTypeRequest, requested(biosPXE), nil, 0},
		{"full-efi64-discover", labConfig(), dhcpv4.MessageTypeDiscover, efiPXE, nil, 0},
		{"full-ipxe-discover", labConfig(), dhcpv4.MessageTypeDiscover, ipxe, nil, 0},
		{"full-ipxe-request", labConfig(), dhcpv4.MessageTypeRequest, requested(ipxe), nil, 0},
		{"full-http-discover", labConfig(), dhcpv4.MessageTypeDiscover, httpBoot, nil, 0},
		{"full-arm64-discover", labConfig(), dhcpv4.MessageTypeDiscover, arm64, nil, 0},
		{"full-arm64-no-file-discover", bare, dhcpv4.MessageTypeDiscover, arm64, nil, 0},
		{"full-relayed-discover", labConfig(), dhcpv4.MessageTypeDiscover, append(slices.Clone(biosPXE), dhcpv4.WithRelay(net.IPv4(10, 99, 0, 254)),
			dhcpv4.WithOption(dhcpv4.OptRelayAgentInfo(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(1), []byte("port7"))))), nil, 0},
		{"full-efi64-request-4011", labConfig(), dhcpv4.MessageTypeRequest, append(slices.Clone(efiPXE), dhcpv4.WithClientIP(atBootServer.IP)), atBootServer, PXEPort},
		{"full-nak", labConfig(), dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{withRequested(net.IPv4(192, 168, 1, 9))}, nil, 0},
		{"proxy-bios-discover", proxy, dhcpv4.MessageTypeDiscover, biosPXE, nil, 0},
		{"proxy-efi64-discover", proxy, dhcpv4.MessageTypeDiscover, efiPXE, nil, 0},
		{"proxy-ipxe-discover", proxy, dhcpv4.MessageTypeDiscover, ipxe, nil, 0},
		{"proxy-http-discover", proxy, dhcpv4.MessageTypeDiscover, httpBoot, nil, 0},
		{"proxy-arm64-no-file-discover", proxy, dhcpv4.MessageTypeDiscover, arm64, nil, 0},
		{"proxy-plain-discover", proxy, dhcpv4.MessageTypeDiscover, nil, nil, 0},
		{"proxy-request-on-67", proxy, dhcpv4.MessageTypeRequest, requested(biosPXE), nil, 0},
		{"proxy-efi64-request-4011", proxy, dhcpv4.MessageTypeRequest, append(slices.Clone(efiPXE), dhcpv4.WithClientIP(atBootServer.IP)), atBootServer, PXEPort},
		{"proxy-bios-bootitem-4011", proxy, dhcpv4.MessageTypeRequest, append(slices.Clone(biosPXE), dhcpv4.WithClientIP(atBootServer.IP), bootItem), atBootServer, PXEPort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t, tt.cfg, nil)
			src, port := tt.src, tt.port
			if src == nil {
				src = clientAddr
			}
			if port == 0 {
				port = ServerPort
			}
			resp, to := ts.doOn(t, pkt(t, tt.mt, mac(1), tt.mods...), src, port)
			got := summary(resp, to)
			path := filepath.Join("testdata", "golden", tt.name+".txt")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create)", err)
			}
			if !bytes.Equal(want, []byte(got)) {
				t.Errorf("reply differs from %s (run with -update to accept):\n--- got\n%s--- want\n%s", path, got, want)
			}
		})
	}
}
