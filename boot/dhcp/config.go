// Package dhcp is phoenix's DHCPv4 server: it hands out addresses from one
// pool (full mode) or only boot information beside another DHCP server
// (proxy mode), and tells each PXE, iPXE or UEFI HTTP boot client which boot
// file or URL to load next.
//
// It is not a general-purpose DHCP server: one pool, one subnet (reached
// directly or through relays), no DHCPv6, no dynamic DNS, no ping before
// offering (that costs each new client seconds). It knows nothing about
// images or hosts; the lead package decides what the boot script URL serves.
// Lease persistence is behind the LeaseStore interface so the fleet's store
// can keep leases durable across restarts.
//
// Boot information goes to clients that ask for it (option 60 "PXEClient"
// or "HTTPClient", option 93, or user class "iPXE"): siaddr and option 66
// name ServerIP, option 67 (and the BOOTP file field when it fits) the file
// chosen by architecture, option 97 is echoed. Full-mode replies carry
// option 60 only for UEFI HTTP boot ("HTTPClient", which it requires): EDK2
// takes "PXEClient" in an offer that also carries an address as "fetch the
// file name from the boot server on port 4011" instead of using the file in
// the offer. A full-mode Server that also serves port 4011 answers those
// requests anyway. iPXE is told not to wait for ProxyDHCP (option 175.176)
// except in proxy mode, where the ProxyDHCP server is phoenix.
package dhcp

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Mode selects full DHCP (hand out addresses) or proxy DHCP (boot
// information only, beside another DHCP server).
type Mode int

const (
	// ModeFull hands out addresses from the pool and boot information.
	ModeFull Mode = iota
	// ModeProxy answers only PXE clients, with boot information and no
	// address, leaving addressing to the network's own DHCP server.
	ModeProxy
)

// String returns "full" or "proxy".
func (m Mode) String() string {
	switch m {
	case ModeFull:
		return "full"
	case ModeProxy:
		return "proxy"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// Default values used when the corresponding Config field is zero.
const (
	DefaultLeaseTime     = time.Hour
	DefaultBIOSBootFile  = "undionly.kpxe"
	DefaultEFI64BootFile = "ipxe.efi"
	// DefaultSecureBootFile is the name under which Debian's signed shim
	// is served; shim then asks for grubx64.efi from the same directory.
	DefaultSecureBootFile = "shimx64.efi"
)

// Config describes the network phoenix serves. Zero values of optional
// fields get the documented defaults.
type Config struct {
	// Mode is ModeFull (the zero value) or ModeProxy.
	Mode Mode

	// ServerIP is our address on the boot network. It is sent as the server
	// identifier (option 54), as siaddr (next-server, where PXE firmware
	// fetches the boot file over TFTP) and as option 66. Required.
	ServerIP net.IP

	// PoolStart and PoolEnd bound the addresses handed out in full mode
	// (inclusive). Both are required in full mode and must lie in one subnet.
	PoolStart, PoolEnd net.IP
	// Netmask is the subnet mask of the pool's subnet (option 1). Default /24.
	Netmask net.IPMask
	// Router is sent as option 3 when set.
	Router net.IP
	// DNS servers are sent as option 6 when set.
	DNS []net.IP
	// LeaseTime is the lease duration (option 51). Default DefaultLeaseTime.
	LeaseTime time.Duration
	// Reservations pins addresses to MACs, keyed by MAC in lowercase colon
	// form ("52:54:00:aa:bb:cc"; other forms net.ParseMAC accepts work too).
	// A reserved address may lie outside PoolStart..PoolEnd but must be in the
	// pool's subnet, and is never handed to another client.
	Reservations map[string]net.IP

	// BIOSBootFile is the TFTP boot file for BIOS PXE clients (arch 0).
	// Default DefaultBIOSBootFile.
	BIOSBootFile string
	// EFI64BootFile is the TFTP boot file for x86-64 UEFI PXE clients
	// (arch 7 and 9). Default DefaultEFI64BootFile.
	EFI64BootFile string
	// ARM64BootFile is the TFTP boot file for ARM64 UEFI PXE clients
	// (arch 11). Empty means no ARM64 iPXE is available: such clients get no
	// boot file, and that is logged.
	ARM64BootFile string
	// SecureBoot, if set, tells the MACs of hosts whose firmware enforces
	// UEFI Secure Boot. The iPXE binaries are not signed, so such x86-64
	// UEFI PXE clients get SecureBootFile instead of EFI64BootFile. It is
	// called for every PXE request: keep it fast.
	SecureBoot func(mac net.HardwareAddr) bool
	// SecureBootFile is the TFTP boot file for Secure Boot hosts: a signed
	// shim. Default DefaultSecureBootFile.
	SecureBootFile string
	// ScriptURL is the boot file for iPXE (user class "iPXE"), typically the
	// URL of its per-host script, e.g.
	// "http://10.99.0.1:8080/boot.ipxe?mac=${net0/mac}". Empty means iPXE
	// clients get no boot file (giving them the iPXE binary again would loop).
	ScriptURL string
	// HTTPBootURL is the http:// URL of the x86-64 EFI iPXE binary for UEFI
	// HTTP boot clients (arch 16). Empty means such clients get no boot file.
	HTTPBootURL string
	// HTTPBootARM64URL is the same for ARM64 UEFI HTTP boot clients (arch
	// 19): an x86-64 binary would not run there. Empty means none.
	HTTPBootARM64URL string
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	if c.LeaseTime <= 0 {
		c.LeaseTime = DefaultLeaseTime
	}
	if c.Netmask == nil {
		c.Netmask = net.CIDRMask(24, 32)
	} else if len(c.Netmask) == net.IPv6len {
		c.Netmask = c.Netmask[12:]
	}
	if c.BIOSBootFile == "" {
		c.BIOSBootFile = DefaultBIOSBootFile
	}
	if c.EFI64BootFile == "" {
		c.EFI64BootFile = DefaultEFI64BootFile
	}
	if c.SecureBootFile == "" {
		c.SecureBootFile = DefaultSecureBootFile
	}
	return c
}

// validate reports configuration errors that would make the server hand out
// wrong answers; they are startup errors, never per-packet ones.
func (c Config) validate() error {
	var errs []error
	if c.ServerIP.To4() == nil {
		errs = append(errs, fmt.Errorf("server ip %q: not an IPv4 address", c.ServerIP))
	}
	switch c.Mode {
	case ModeFull:
		if c.PoolStart.To4() == nil || c.PoolEnd.To4() == nil {
			errs = append(errs, errors.New("full mode needs an IPv4 pool start and end"))
			break
		}
		ones, bits := c.Netmask.Size()
		if bits != 32 || ones == 0 || ones > 30 {
			errs = append(errs, fmt.Errorf("netmask %s: need a contiguous IPv4 mask between /1 and /30", c.Netmask))
			break
		}
		s, e := ipToU32(c.PoolStart), ipToU32(c.PoolEnd)
		m := maskToU32(c.Netmask)
		if s > e {
			errs = append(errs, fmt.Errorf("pool %s-%s: start after end", c.PoolStart, c.PoolEnd))
		}
		if s&m != e&m {
			errs = append(errs, fmt.Errorf("pool %s-%s: not inside one %s subnet", c.PoolStart, c.PoolEnd, c.Netmask))
		}
		for k, ip := range c.Reservations {
			if _, err := net.ParseMAC(k); err != nil {
				errs = append(errs, fmt.Errorf("reservation %q: %w", k, err))
				continue
			}
			if ip.To4() == nil || ipToU32(ip)&m != s&m {
				errs = append(errs, fmt.Errorf("reservation %s: address %s outside subnet of pool", k, ip))
			}
		}
	case ModeProxy:
	default:
		errs = append(errs, fmt.Errorf("unknown mode %d", int(c.Mode)))
	}
	for _, u := range []string{c.HTTPBootURL, c.HTTPBootARM64URL} {
		if u != "" && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			errs = append(errs, fmt.Errorf("http boot url %q: not an http:// URL", u))
		}
	}
	return errors.Join(errs...)
}

func ipToU32(ip net.IP) uint32 {
	ip4 := ip.To4()
	if ip4 == nil {
		return 0
	}
	return uint32(ip4[0])<<24 | uint32(ip4[1])<<16 | uint32(ip4[2])<<8 | uint32(ip4[3])
}

func u32ToIP(v uint32) net.IP {
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).To4()
}

func maskToU32(m net.IPMask) uint32 {
	if len(m) == net.IPv6len {
		m = m[12:]
	}
	if len(m) != net.IPv4len {
		return 0
	}
	return uint32(m[0])<<24 | uint32(m[1])<<16 | uint32(m[2])<<8 | uint32(m[3])
}
