package dhcp

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Client system architecture types (option 93, RFC 4578 and the IANA
// registry) that phoenix has boot files for.
const (
	archBIOS        = 0
	archEFIx64      = 7
	archEFIBC       = 9 // EFI byte code; in practice x86-64 firmware
	archEFIARM64    = 11
	archHTTPx64     = 16
	archHTTPARM64   = 19
	archUnknown     = -1
	vendorPXE       = "PXEClient"
	vendorHTTP      = "HTTPClient"
	userClassIPXE   = "iPXE"
	maxBootFileName = 127 // the BOOTP file field, NUL-terminated
)

// client is what a request says about the firmware that sent it.
type client struct {
	// pxe is set when the client asks for boot information at all:
	// option 60 starts with "PXEClient" or "HTTPClient", option 93 is
	// present, or the user class is "iPXE".
	pxe  bool
	ipxe bool // user class (77) "iPXE": iPXE itself is asking
	http bool // UEFI HTTP boot: wants an http:// URL, answered as "HTTPClient"
	arch int  // option 93, else the "Arch:" field of option 60, else archUnknown
	// secure is set for a MAC whose host enforces UEFI Secure Boot
	// (Config.SecureBoot): its firmware runs only signed programs.
	secure bool
}

// classify reads a request's boot-related options.
func classify(m *dhcpv4.DHCPv4) client {
	c := client{arch: archUnknown}
	vc := m.ClassIdentifier()
	if strings.HasPrefix(vc, vendorPXE) || strings.HasPrefix(vc, vendorHTTP) {
		c.pxe = true
	}
	if archs := m.ClientArch(); len(archs) > 0 {
		c.pxe = true
		c.arch = int(archs[0])
	} else if a, ok := vendorClassArch(vc); ok {
		c.arch = a
	}
	for _, uc := range m.UserClass() {
		if uc == userClassIPXE {
			c.ipxe, c.pxe = true, true
		}
	}
	c.http = c.arch == archHTTPx64 || c.arch == archHTTPARM64 || strings.HasPrefix(vc, vendorHTTP)
	return c
}

// vendorClassArch parses the architecture out of a PXE vendor class such as
// "PXEClient:Arch:00007:UNDI:003016", for firmware that omits option 93.
func vendorClassArch(vc string) (int, bool) {
	fields := strings.Split(vc, ":")
	for i := 0; i+1 < len(fields); i++ {
		if fields[i] != "Arch" {
			continue
		}
		v, err := strconv.ParseUint(fields[i+1], 10, 16)
		if err != nil {
			return 0, false
		}
		return int(v), true
	}
	return 0, false
}

// archName names an architecture for logs and events.
func archName(a int) string {
	switch a {
	case archBIOS:
		return "bios"
	case archEFIx64, archEFIBC:
		return "efi-x64"
	case archEFIARM64:
		return "efi-arm64"
	case archHTTPx64:
		return "http-x64"
	case archHTTPARM64:
		return "http-arm64"
	case archUnknown:
		return "unknown"
	}
	return fmt.Sprintf("arch-%d", a)
}

// label names a client for logs and events: its architecture, and "ipxe"
// when iPXE is asking.
func (c client) label() string {
	if !c.pxe {
		return ""
	}
	if c.ipxe {
		return "ipxe-" + archName(c.arch)
	}
	return archName(c.arch)
}

// boot is the boot information for one client.
type boot struct {
	file        string // option 67 and, when it fits, the BOOTP file field
	vendorClass string // option 60 in the reply
	// missing says why a PXE client gets no file; "" when file is set.
	missing string
}

// bootFor chooses the boot file for a client. It is pure so the whole
// decision table can be tested without packets.
func (c Config) bootFor(cl client) boot {
	b := boot{vendorClass: vendorPXE}
	switch {
	case !cl.pxe:
		b.missing = "not a PXE client"
	case cl.ipxe:
		// iPXE announces its build's architecture too; the user class wins,
		// otherwise iPXE would chainload itself forever.
		b.file = c.ScriptURL
		b.missing = "no ipxe script url configured"
	case cl.http && cl.secure:
		// Debian's signed GRUB, the only signed loader phoenix serves,
		// has no HTTP client to read its config with.
		b.missing = "secure boot over UEFI HTTP boot is not supported: set the host's firmware to PXE"
	case cl.http:
		b.vendorClass = vendorHTTP
		switch cl.arch {
		case archHTTPx64:
			b.file, b.missing = c.HTTPBootURL, "no http boot url configured"
		case archHTTPARM64:
			b.file, b.missing = c.HTTPBootARM64URL, "no arm64 http boot url configured"
		default:
			b.missing = fmt.Sprintf("no http boot file for %s", archName(cl.arch))
		}
	case cl.arch == archBIOS:
		b.file = c.BIOSBootFile
	case (cl.arch == archEFIx64 || cl.arch == archEFIBC) && cl.secure:
		b.file = c.SecureBootFile
	case cl.arch == archEFIx64 || cl.arch == archEFIBC:
		b.file = c.EFI64BootFile
	case cl.arch == archEFIARM64:
		b.file, b.missing = c.ARM64BootFile, "no arm64 boot file configured"
	default:
		b.missing = fmt.Sprintf("no boot file for %s", archName(cl.arch))
	}
	if b.file != "" {
		b.missing = ""
	}
	return b
}
