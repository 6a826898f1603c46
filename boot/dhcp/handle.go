package dhcp

import (
	"fmt"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// iPXE's encapsulated options (175) with no-pxedhcp (176) = 1: without it
// iPXE waits about 3 s for ProxyDHCP offers that will never come.
var ipxeNoProxyDHCP = []byte{176, 1, 1}

// PXE vendor options (43) with PXE_DISCOVERY_CONTROL (6) = 8: "a boot file
// is in this packet, load it; no menu, prompt or boot server discovery".
var pxeBootFileOnly = []byte{6, 1, 8, 255}

const (
	optionVendorEncapsulated = 43
	optionIPXEEncapsulated   = 175
	pxeBootItem              = 71
)

// full answers a request in full mode.
func (r *request) full() *dhcpv4.DHCPv4 {
	p := r.st.pool
	if gi := r.m.GatewayIPAddr; gi != nil && !gi.IsUnspecified() && !p.inSubnet(ipToU32(gi)) {
		r.log().Warn("relayed request from outside the pool's subnet", "mac", r.m.ClientHWAddr.String(), "ip", gi.String())
		return r.ignore(gi, fmt.Sprintf("relay %s outside pool subnet", gi))
	}
	switch r.m.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		return r.discover()
	case dhcpv4.MessageTypeRequest:
		return r.lease()
	case dhcpv4.MessageTypeRelease:
		return r.release()
	case dhcpv4.MessageTypeDecline:
		return r.decline()
	case dhcpv4.MessageTypeInform:
		return r.inform()
	}
	return r.ignore(nil, fmt.Sprintf("message type %s not handled", r.m.MessageType()))
}

func (r *request) mac() string { return r.m.ClientHWAddr.String() }

func (r *request) discover() *dhcpv4.DHCPv4 {
	now := r.clock()
	r.mu.Lock()
	v, evicted, ok := r.st.pool.offer(r.mac(), now)
	var deleted func()
	if ok && evicted != "" {
		deleted = r.deleteLease(evicted)
	}
	r.mu.Unlock()
	if deleted != nil {
		// The offer need not wait for the old lease's removal, and this
		// may run on the socket's reading goroutine.
		go deleted()
	}
	if !ok {
		r.warnExhausted(r.mac())
		return r.ignore(nil, "pool exhausted")
	}
	ip := u32ToIP(v)
	resp := r.reply(dhcpv4.MessageTypeOffer)
	resp.YourIPAddr = ip
	r.addNetwork(resp, true)
	r.addBoot(resp, false)
	r.stats.offers.Add(1)
	r.log().Debug("dhcp offer", "mac", r.mac(), "ip", ip.String(), "arch", r.cl.label())
	r.emit(Event{Kind: "offer", MAC: r.m.ClientHWAddr, IP: ip, Arch: r.cl.label()})
	return resp
}

// exhaustedLogEvery spaces the warnings about an exhausted pool.
const exhaustedLogEvery = 10 * time.Second

// warnExhausted logs a DISCOVER refused for want of an address: the first
// at once, then one line per exhaustedLogEvery saying how many more were
// refused, so a storm against a full pool does not flood the log. (The
// drop events and the ignored counter still count every one.)
func (s *Server) warnExhausted(mac string) {
	now := s.clock().UnixNano()
	last := s.exhaustedLogged.Load()
	if last != 0 && now-last < int64(exhaustedLogEvery) || !s.exhaustedLogged.CompareAndSwap(last, now) {
		s.exhaustedQuiet.Add(1)
		return
	}
	s.log().Warn("address pool exhausted", "mac", mac, "refused_since_last_warning", s.exhaustedQuiet.Swap(0))
}

// lease answers the SELECTING, INIT-REBOOT, RENEWING and REBINDING
// states alike: the client wants one address, which it gets if the pool
// allows it, else a NAK sends it back to DISCOVER.
func (r *request) lease() *dhcpv4.DHCPv4 {
	var ip net.IP
	ci := r.m.ClientIPAddr
	switch sid := r.m.ServerIdentifier(); {
	case sid != nil:
		if !sid.Equal(r.st.serverIP) {
			r.mu.Lock()
			r.st.pool.forget(r.mac())
			r.mu.Unlock()
			return r.ignore(nil, fmt.Sprintf("client chose server %s", sid))
		}
		ip = r.m.RequestedIPAddress()
	case r.m.RequestedIPAddress() != nil:
		ip = r.m.RequestedIPAddress()
	case ci != nil && !ci.IsUnspecified():
		ip = ci
	}
	if ip == nil {
		return r.nak(nil, "no address requested")
	}
	v := ipToU32(ip)
	now := r.clock()
	expiry := now.Add(r.st.cfg.LeaseTime)
	hostname := r.m.HostName()

	r.mu.Lock()
	if reason := r.st.pool.check(r.mac(), v, now); reason != "" {
		r.mu.Unlock()
		return r.nak(ip, reason)
	}
	if m, busy := r.st.pending[v]; busy && m != r.mac() {
		r.mu.Unlock()
		// The client asks again; by then the other lease is decided.
		return r.ignore(ip, "address being leased to "+m)
	}
	plan := r.st.pool.plan(r.mac(), v)
	if r.Leases != nil {
		// Both writes are queued under the lock, in the order decided
		// here, and waited for outside it, so that concurrent requests'
		// writes can share one commit (a store that groups commits, like
		// fleet's, then fsyncs once for many). pending keeps the address
		// from a second client meanwhile; the pool changes only once the
		// lease is durable.
		var deleted func()
		if plan.evict != "" {
			deleted = r.deleteLease(plan.evict)
		}
		stored := r.queuePut(Lease{MAC: r.m.ClientHWAddr, IP: ip, Expiry: expiry, Hostname: hostname})
		r.st.pending[v] = r.mac()
		r.mu.Unlock()
		if deleted != nil {
			deleted()
		}
		err := stored()
		r.mu.Lock()
		if r.st.pending[v] == r.mac() {
			delete(r.st.pending, v)
		}
		if err != nil {
			r.mu.Unlock()
			r.stats.errors.Add(1)
			r.log().Error("lease not stored; no ack sent", "mac", r.mac(), "ip", ip.String(), "err", err)
			return r.ignore(ip, "lease store: "+err.Error())
		}
	}
	// Durable before the client is told.
	r.st.pool.commit(r.mac(), v, expiry, hostname)
	r.mu.Unlock()

	resp := r.reply(dhcpv4.MessageTypeAck)
	resp.ClientIPAddr = r.m.ClientIPAddr
	resp.YourIPAddr = ip
	r.addNetwork(resp, true)
	r.addBoot(resp, false)
	r.stats.acks.Add(1)
	r.log().Info("dhcp ack", "mac", r.mac(), "ip", ip.String(), "arch", r.cl.label(), "hostname", hostname)
	r.emit(Event{Kind: "ack", MAC: r.m.ClientHWAddr, IP: ip, Arch: r.cl.label()})
	return resp
}

func (r *request) nak(ip net.IP, reason string) *dhcpv4.DHCPv4 {
	resp := r.reply(dhcpv4.MessageTypeNak)
	resp.UpdateOption(dhcpv4.OptMessage(reason))
	if gi := r.m.GatewayIPAddr; gi != nil && !gi.IsUnspecified() {
		// The relay must broadcast it: the client may hold a wrong address.
		resp.SetBroadcast()
	}
	r.stats.naks.Add(1)
	r.log().Info("dhcp nak", "mac", r.mac(), "ip", ipString(ip), "reason", reason)
	r.emit(Event{Kind: "nak", MAC: r.m.ClientHWAddr, IP: ip, Arch: r.cl.label(), Reason: reason})
	return resp
}

func (r *request) release() *dhcpv4.DHCPv4 {
	ip := r.m.ClientIPAddr
	if !r.giveBack(ip, r.st.pool.release) {
		return r.ignore(ip, "release of an address the client does not hold")
	}
	r.stats.releases.Add(1)
	r.log().Info("dhcp release", "mac", r.mac(), "ip", ip.String())
	r.emit(Event{Kind: "release", MAC: r.m.ClientHWAddr, IP: ip, Arch: r.cl.label()})
	return nil
}

// giveBack hands the client's address ip back to the pool through give
// (the pool's release or decline) and, if the pool took it, deletes the
// stored lease, waiting for the deletion outside the lock. It reports
// whether the client held ip.
func (r *request) giveBack(ip net.IP, give func(mac string, ip uint32, now time.Time) bool) bool {
	r.mu.Lock()
	ok := give(r.mac(), ipToU32(ip), r.clock())
	var deleted func()
	if ok {
		deleted = r.deleteLease(r.mac())
	}
	r.mu.Unlock()
	if deleted != nil {
		deleted()
	}
	return ok
}

func (r *request) decline() *dhcpv4.DHCPv4 {
	ip := r.m.RequestedIPAddress()
	if ip == nil {
		return r.ignore(nil, "decline without an address")
	}
	if !r.giveBack(ip, r.st.pool.decline) {
		return r.ignore(ip, "decline of an address the client does not hold")
	}
	r.stats.declines.Add(1)
	r.log().Warn("dhcp decline: address in use by another machine", "mac", r.mac(), "ip", ip.String(), "for", declineHold)
	r.emit(Event{Kind: "decline", MAC: r.m.ClientHWAddr, IP: ip, Arch: r.cl.label()})
	return nil
}

// inform gives a client that configured its own address the rest of the
// configuration (RFC 2131 section 3.4).
func (r *request) inform() *dhcpv4.DHCPv4 {
	ci := r.m.ClientIPAddr
	if ci == nil || ci.IsUnspecified() {
		return r.ignore(nil, "inform without client address")
	}
	resp := r.reply(dhcpv4.MessageTypeAck)
	resp.ClientIPAddr = ci
	r.addNetwork(resp, false)
	r.addBoot(resp, false)
	r.stats.acks.Add(1)
	r.emit(Event{Kind: "ack", MAC: r.m.ClientHWAddr, IP: ci, Arch: r.cl.label(), Reason: "inform"})
	return resp
}

// deleteLease queues the removal of mac's lease from the store; the caller
// holds r.mu, and calls the returned wait (nil without a store) after
// releasing it. A failure leaves a stale record, which the next load
// ignores or the next PutLease of that client replaces, so it is logged,
// not fatal.
func (r *request) deleteLease(mac string) (wait func()) {
	if r.Leases == nil {
		return nil
	}
	hw, err := net.ParseMAC(mac)
	if err != nil {
		r.stats.errors.Add(1)
		r.log().Error("lease not deleted", "mac", mac, "err", err)
		return nil
	}
	var deleted func() error
	if q, ok := r.Leases.(LeaseQueue); ok {
		deleted = q.QueueDeleteLease(hw)
	} else {
		deleted = r.st.plainWrite(mac, func() error { return r.Leases.DeleteLease(hw) })
	}
	return func() {
		if err := deleted(); err != nil {
			r.stats.errors.Add(1)
			r.log().Error("lease not deleted", "mac", mac, "err", err)
		}
	}
}

// queuePut queues l's write (see LeaseQueue); the caller holds r.mu and
// calls the returned wait after releasing it.
func (r *request) queuePut(l Lease) (wait func() error) {
	if q, ok := r.Leases.(LeaseQueue); ok {
		return q.QueuePutLease(l)
	}
	return r.st.plainWrite(l.MAC.String(), func() error { return r.Leases.PutLease(l) })
}

// addNetwork adds the address configuration of full mode.
func (r *request) addNetwork(resp *dhcpv4.DHCPv4, withLease bool) {
	c := r.st.cfg
	resp.UpdateOption(dhcpv4.OptSubnetMask(c.Netmask))
	if c.Router.To4() != nil {
		resp.UpdateOption(dhcpv4.OptRouter(c.Router.To4()))
	}
	var dns []net.IP
	for _, ip := range c.DNS {
		if ip.To4() != nil {
			dns = append(dns, ip.To4())
		}
	}
	if len(dns) > 0 {
		resp.UpdateOption(dhcpv4.OptDNS(dns...))
	}
	if withLease {
		lt := c.LeaseTime.Truncate(time.Second)
		resp.UpdateOption(dhcpv4.OptIPAddressLeaseTime(lt))
		resp.UpdateOption(dhcpv4.OptRenewTimeValue(lt / 2))
		resp.UpdateOption(dhcpv4.OptRebindingTimeValue(lt * 7 / 8))
	}
}

// addBoot adds boot information for PXE clients and reports whether there
// was any to add. Clients with no boot file get none of it, not even
// option 60, so their firmware gives up on the network at once instead of
// waiting for a ProxyDHCP answer.
func (r *request) addBoot(resp *dhcpv4.DHCPv4, proxy bool) bool {
	if !r.cl.pxe {
		return false
	}
	b := r.st.cfg.bootFor(r.cl)
	if b.file == "" {
		r.log().Info("no boot file for client", "mac", r.mac(), "arch", r.cl.label(), "reason", b.missing)
		return false
	}
	resp.ServerIPAddr = r.st.serverIP
	if proxy || b.vendorClass == vendorHTTP {
		// UEFI HTTP boot insists on "HTTPClient". "PXEClient" is for
		// ProxyDHCP only: in an offer that carries an address, EDK2 takes
		// it to mean "ask the boot server on port 4011 for the file"
		// instead of using the file in the offer.
		resp.UpdateOption(dhcpv4.OptClassIdentifier(b.vendorClass))
	}
	resp.UpdateOption(dhcpv4.OptTFTPServerName(r.st.serverIP.String()))
	resp.UpdateOption(dhcpv4.OptBootFileName(b.file))
	if len(b.file) <= maxBootFileName {
		resp.BootFileName = b.file
	}
	if v := r.m.Options.Get(dhcpv4.OptionClientMachineIdentifier); v != nil {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, v))
	}
	if r.cl.ipxe && !proxy {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(optionIPXEEncapsulated), ipxeNoProxyDHCP))
	}
	return true
}

// proxy answers a request in proxy mode: boot information, never an
// address, and only for PXE clients.
func (r *request) proxy() *dhcpv4.DHCPv4 {
	if !r.cl.pxe {
		return r.ignore(nil, "not a PXE client")
	}
	switch mt := r.m.MessageType(); {
	case mt == dhcpv4.MessageTypeDiscover:
		resp := r.reply(dhcpv4.MessageTypeOffer)
		if r.cl.arch == archBIOS || r.cl.ipxe {
			// UEFI firmware is left without option 43: some ignore
			// ProxyDHCP offers that carry it, and all of them fall back
			// to asking on port 4011, which is answered.
			resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, pxeBootFileOnly))
		}
		if !r.addBoot(resp, true) {
			return r.ignore(nil, "no boot file for "+r.cl.label())
		}
		r.stats.proxyOffers.Add(1)
		r.log().Debug("dhcp proxy-offer", "mac", r.mac(), "arch", r.cl.label())
		if r.cl.secure {
			// Seen in QEMU: shim loads GRUB through the firmware, but
			// GRUB then looks for its config at the next-server of the
			// other server's DHCPACK, not at the proxy offer's.
			r.log().Warn("secure boot host netbooting through proxy DHCP: its GRUB reads grub/grub.cfg from the next-server (siaddr) of the other DHCP server's answer, which must be this server",
				"mac", r.mac())
		}
		r.emit(Event{Kind: "proxy-offer", MAC: r.m.ClientHWAddr, Arch: r.cl.label()})
		return resp
	case r.bootPort:
		return r.bootServer()
	default:
		// REQUESTs on port 67 are for the network's DHCP server.
		return r.ignore(nil, fmt.Sprintf("proxy: %s not for us", mt))
	}
}

// bootServer answers the PXE boot server request a client sends to port
// 4011 once it has an address: UEFI firmware does so after a ProxyDHCP
// offer without option 43, or after a DHCP offer that names "PXEClient"
// without PXE vendor options (EDK2's "BINL" offers).
func (r *request) bootServer() *dhcpv4.DHCPv4 {
	mt := r.m.MessageType()
	if !r.cl.pxe || (mt != dhcpv4.MessageTypeRequest && mt != dhcpv4.MessageTypeInform) {
		return r.ignore(nil, fmt.Sprintf("boot server: %s from non-PXE client or of wrong type", mt))
	}
	resp := r.reply(dhcpv4.MessageTypeAck)
	resp.ClientIPAddr = r.m.ClientIPAddr
	if item := pxeOption(r.m.Options.Get(dhcpv4.OptionVendorSpecificInformation), pxeBootItem); item != nil {
		// A client doing boot server discovery wants its boot item back.
		opt := append([]byte{pxeBootItem, byte(len(item))}, item...)
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, append(opt, 255)))
	}
	if !r.addBoot(resp, true) {
		return r.ignore(nil, "no boot file for "+r.cl.label())
	}
	r.stats.proxyAcks.Add(1)
	r.log().Debug("dhcp proxy-ack", "mac", r.mac(), "arch", r.cl.label())
	r.emit(Event{Kind: "proxy-ack", MAC: r.m.ClientHWAddr, IP: r.m.ClientIPAddr, Arch: r.cl.label()})
	return resp
}

// pxeOption returns sub-option code of PXE vendor options (option 43), or
// nil.
func pxeOption(b []byte, code byte) []byte {
	for len(b) >= 2 {
		c, n := b[0], int(b[1])
		if c == 255 {
			return nil
		}
		if c == 0 {
			b = b[1:]
			continue
		}
		if len(b) < 2+n {
			return nil
		}
		if c == code {
			return b[2 : 2+n]
		}
		b = b[2+n:]
	}
	return nil
}
