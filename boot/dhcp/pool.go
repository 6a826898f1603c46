package dhcp

import (
	"fmt"
	"net"
	"time"
)

// How long an offered address stays set aside for the client it was offered
// to, so that two clients discovering at once never get the same address.
const offerHold = 30 * time.Second

// How long an address a client declined (someone else answers ARP for it)
// stays out of use.
const declineHold = 10 * time.Minute

type bindState uint8

const (
	stateOffered bindState = iota + 1
	stateLeased
	stateDeclined
)

// binding is the pool's record of one address. Expired bindings are kept so
// that a client returning later gets its old address back and so that
// addresses never used at all are handed out first.
type binding struct {
	mac      string // "" for declined addresses
	ip       uint32
	state    bindState
	expiry   time.Time
	hostname string
}

func (b *binding) active(now time.Time) bool { return now.Before(b.expiry) }

// pool allocates addresses. It is not safe for concurrent use; the server
// serialises access.
type pool struct {
	start, end uint32
	mask       uint32
	network    uint32
	excluded   map[uint32]bool   // our own and the router's address
	reserved   map[string]uint32 // mac -> ip
	reservedIP map[uint32]string // ip -> mac
	byIP       map[uint32]*binding
	byMAC      map[string]*binding
	// hint is at or below the lowest address that may never have been
	// used, so finding one does not rescan the used part of the pool.
	hint uint32
	// fullUntil, when set, is the earliest time a binding's hold or lease
	// runs out, found by a scan that found none run out. Until then an
	// exhausted pool refuses at once: without it every DISCOVER of a
	// storm against a full pool would scan the whole pool, and the
	// server would stop answering even the clients it has offered to.
	fullUntil time.Time
}

// newPool builds the pool of a validated full-mode config.
func newPool(c Config) (*pool, error) {
	p := &pool{
		start:      ipToU32(c.PoolStart),
		end:        ipToU32(c.PoolEnd),
		mask:       maskToU32(c.Netmask),
		excluded:   make(map[uint32]bool),
		reserved:   make(map[string]uint32),
		reservedIP: make(map[uint32]string),
		byIP:       make(map[uint32]*binding),
		byMAC:      make(map[string]*binding),
	}
	p.network = p.start & p.mask
	p.hint = p.start
	for _, ip := range []net.IP{c.ServerIP, c.Router} {
		if ip.To4() != nil {
			p.excluded[ipToU32(ip)] = true
		}
	}
	for k, ip := range c.Reservations {
		hw, err := net.ParseMAC(k)
		if err != nil {
			return nil, fmt.Errorf("reservation %q: %w", k, err)
		}
		mac, v := hw.String(), ipToU32(ip)
		if other, dup := p.reservedIP[v]; dup {
			return nil, fmt.Errorf("reservation %s: address %s already reserved for %s", mac, ip, other)
		}
		if p.excluded[v] {
			return nil, fmt.Errorf("reservation %s: address %s is the server's or router's", mac, ip)
		}
		p.reserved[mac] = v
		p.reservedIP[v] = mac
	}
	return p, nil
}

func (p *pool) inSubnet(ip uint32) bool { return ip&p.mask == p.network }

// usableFor reports whether ip may ever be bound to mac: inside the range
// (or mac's reservation), not ours, not the subnet's network or broadcast
// address, not reserved for someone else.
func (p *pool) usableFor(mac string, ip uint32) bool {
	if r, ok := p.reserved[mac]; ok && r == ip {
		return true
	}
	if ip < p.start || ip > p.end || p.excluded[ip] {
		return false
	}
	if ip == p.network || ip == p.network|^p.mask {
		return false
	}
	owner, ok := p.reservedIP[ip]
	return !ok || owner == mac
}

// load adds a persisted lease. Leases that no longer fit the configuration
// are skipped and reported.
func (p *pool) load(l Lease) error {
	if len(l.MAC) != 6 || l.IP.To4() == nil {
		return fmt.Errorf("lease %s %s: not an ethernet/IPv4 lease", l.MAC, l.IP)
	}
	mac, ip := l.MAC.String(), ipToU32(l.IP)
	if !p.usableFor(mac, ip) {
		// An address reserved since it was leased stays with its holder
		// until the lease ends (or the holder's renewal is refused, see
		// check): dropping the lease here would hand the address to its
		// new owner while the old one still uses it.
		if owner, ok := p.reservedIP[ip]; !ok || owner == mac {
			return fmt.Errorf("lease %s %s: address outside the pool or excluded", mac, l.IP)
		}
	}
	if old := p.byIP[ip]; old != nil {
		if !l.Expiry.After(old.expiry) {
			return fmt.Errorf("lease %s %s: address also leased to %s", mac, l.IP, old.mac)
		}
		delete(p.byMAC, old.mac)
	}
	if old := p.byMAC[mac]; old != nil {
		if !l.Expiry.After(old.expiry) {
			return fmt.Errorf("lease %s %s: client also holds %s", mac, l.IP, u32ToIP(old.ip))
		}
		delete(p.byIP, old.ip)
	}
	b := &binding{mac: mac, ip: ip, state: stateLeased, expiry: l.Expiry, hostname: l.Hostname}
	p.byIP[ip], p.byMAC[mac] = b, b
	return nil
}

// unbind removes b from the pool entirely: its address counts as never used.
func (p *pool) unbind(b *binding) {
	delete(p.byIP, b.ip)
	if b.mac != "" && p.byMAC[b.mac] == b {
		delete(p.byMAC, b.mac)
	}
	if b.ip < p.hint {
		p.hint = b.ip
	}
}

// offer picks the address to offer mac and sets it aside for offerHold. evicted
// names the client whose expired lease was taken over, if any, so the caller
// can drop it from the store. ok is false when the pool is exhausted.
func (p *pool) offer(mac string, now time.Time) (ip uint32, evicted string, ok bool) {
	hold := func(b *binding) {
		if b.state == stateLeased && b.active(now) {
			return // never shorten a lease the client already holds
		}
		b.state, b.expiry = stateOffered, now.Add(offerHold)
	}
	// 1. The client's reservation, unless someone else still holds it
	// (it was leased before the reservation was configured, or declined).
	if r, has := p.reserved[mac]; has {
		b := p.byIP[r]
		switch {
		case b == nil:
			if old := p.byMAC[mac]; old != nil {
				p.unbind(old)
			}
			b = &binding{mac: mac, ip: r}
			p.byIP[r], p.byMAC[mac] = b, b
			hold(b)
			return r, "", true
		case b.mac == mac:
			hold(b)
			return r, "", true
		case !b.active(now):
			evicted = b.mac
			p.unbind(b)
			if old := p.byMAC[mac]; old != nil {
				p.unbind(old)
			}
			b = &binding{mac: mac, ip: r}
			p.byIP[r], p.byMAC[mac] = b, b
			hold(b)
			return r, evicted, true
		}
	}
	// 2. The address the client had before, even if that lease expired.
	if b := p.byMAC[mac]; b != nil && p.usableFor(mac, b.ip) {
		hold(b)
		return b.ip, "", true
	}
	if b := p.byMAC[mac]; b != nil {
		p.unbind(b) // config changed under it
	}
	// 3. The first address never used (an expired offer counts as unused:
	// it was never confirmed).
	for v := uint64(max(p.hint, p.start)); v <= uint64(p.end); v++ {
		a := uint32(v)
		if b := p.byIP[a]; b != nil {
			if b.state != stateOffered || b.active(now) {
				continue
			}
			p.unbind(b)
		}
		if !p.usableFor(mac, a) {
			continue
		}
		p.hint = a + 1
		b := &binding{mac: mac, ip: a}
		p.byIP[a], p.byMAC[mac] = b, b
		hold(b)
		return a, "", true
	}
	p.hint = p.end + 1
	// 4. The address whose lease (or decline) ran out longest ago.
	if now.Before(p.fullUntil) {
		return 0, "", false
	}
	var oldest *binding
	var nextFree time.Time // the earliest expiry among active bindings
	cacheable := true
	for _, b := range p.byIP {
		if b.active(now) {
			if nextFree.IsZero() || b.expiry.Before(nextFree) {
				nextFree = b.expiry
			}
			continue
		}
		if !p.usableFor(mac, b.ip) {
			cacheable = false // free, but not for this client
			continue
		}
		if oldest == nil || b.expiry.Before(oldest.expiry) || (b.expiry.Equal(oldest.expiry) && b.ip < oldest.ip) {
			oldest = b
		}
	}
	if oldest == nil {
		if cacheable {
			p.fullUntil = nextFree
		}
		return 0, "", false
	}
	evicted = oldest.mac
	p.unbind(oldest)
	b := &binding{mac: mac, ip: oldest.ip}
	p.byIP[b.ip], p.byMAC[mac] = b, b
	hold(b)
	return b.ip, evicted, true
}

// check reports why mac may not lease ip now, or "" if it may.
func (p *pool) check(mac string, ip uint32, now time.Time) string {
	if r, has := p.reserved[mac]; has && r != ip {
		if b := p.byIP[r]; b == nil || b.mac == mac || !b.active(now) {
			return fmt.Sprintf("client has reservation %s", u32ToIP(r))
		}
	}
	if !p.inSubnet(ip) {
		return "address not on this network"
	}
	if !p.usableFor(mac, ip) {
		if owner, ok := p.reservedIP[ip]; ok && owner != mac {
			return "address reserved for another client"
		}
		return "address outside pool"
	}
	if b := p.byIP[ip]; b != nil && b.mac != mac && b.active(now) {
		if b.state == stateDeclined {
			return "address declined recently"
		}
		return "address in use"
	}
	return ""
}

// commitPlan is what leasing ip to mac changes, computed before the store is
// written so the pool is only changed once the lease is durable.
type commitPlan struct {
	evict string // another client's expired lease on ip, to delete
}

func (p *pool) plan(mac string, ip uint32) commitPlan {
	if b := p.byIP[ip]; b != nil && b.mac != mac && b.mac != "" {
		return commitPlan{evict: b.mac}
	}
	return commitPlan{}
}

// commit binds ip to mac until expiry. Call check first.
func (p *pool) commit(mac string, ip uint32, expiry time.Time, hostname string) {
	if b := p.byIP[ip]; b != nil && b.mac != mac {
		p.unbind(b)
	}
	if b := p.byMAC[mac]; b != nil && b.ip != ip {
		p.unbind(b)
	}
	b := p.byIP[ip]
	if b == nil {
		b = &binding{mac: mac, ip: ip}
		p.byIP[ip], p.byMAC[mac] = b, b
	}
	b.state, b.expiry, b.hostname = stateLeased, expiry, hostname
	p.freesAt(expiry)
}

// freesAt notes that a binding's hold or lease now runs out at t, which
// may be before the time an exhausted pool waits for (fullUntil).
func (p *pool) freesAt(t time.Time) {
	if t.Before(p.fullUntil) {
		p.fullUntil = t
	}
}

// release ends mac's lease on ip now. The binding stays so the client gets
// the same address back, and others take it only once unused ones run out.
func (p *pool) release(mac string, ip uint32, now time.Time) bool {
	b := p.byIP[ip]
	if b == nil || b.mac != mac {
		return false
	}
	b.state, b.expiry = stateLeased, now
	p.freesAt(now)
	return true
}

// decline takes ip out of use for declineHold after mac, which held it,
// found it answered by another machine.
func (p *pool) decline(mac string, ip uint32, now time.Time) bool {
	b := p.byIP[ip]
	if b == nil || b.mac != mac {
		return false
	}
	delete(p.byMAC, mac)
	b.mac, b.state, b.expiry, b.hostname = "", stateDeclined, now.Add(declineHold), ""
	p.freesAt(b.expiry)
	return true
}

// forget drops an offer mac did not take (it chose another server).
func (p *pool) forget(mac string) {
	if b := p.byMAC[mac]; b != nil && b.state == stateOffered {
		p.unbind(b)
	}
}
