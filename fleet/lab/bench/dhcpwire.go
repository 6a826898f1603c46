package bench

import (
	"encoding/binary"
	"errors"
	"net"
)

// Minimal DHCPv4 encoding for the boot storm's simulated clients. Only
// boot/dhcp may import a DHCP library, and a client needs little: a BOOTP
// header, the magic cookie and a handful of options.

const (
	dhcpDiscover = 1
	dhcpOffer    = 2
	dhcpRequest  = 3
	dhcpAck      = 5
	dhcpNak      = 6
)

var dhcpCookie = []byte{99, 130, 83, 99}

type dhcpOpt struct {
	code byte
	val  []byte
}

// dhcpPacket builds a BOOTREQUEST from mac with transaction xid and opts
// (message type first), broadcast flag set as PXE firmware does.
func dhcpPacket(mac net.HardwareAddr, xid uint32, opts ...dhcpOpt) []byte {
	b := make([]byte, 240, 400)
	b[0], b[1], b[2] = 1, 1, 6
	binary.BigEndian.PutUint32(b[4:], xid)
	binary.BigEndian.PutUint16(b[10:], 0x8000)
	copy(b[28:], mac)
	copy(b[236:], dhcpCookie)
	for _, o := range opts {
		b = append(b, o.code, byte(len(o.val)))
		b = append(b, o.val...)
	}
	return append(b, 255)
}

// pxeOpts are what a BIOS PXE ROM (ipxe=false) or iPXE (ipxe=true) sends.
func pxeOpts(mac net.HardwareAddr, ipxe bool) []dhcpOpt {
	uuid := append([]byte{0}, make([]byte, 16)...)
	copy(uuid[11:], mac)
	o := []dhcpOpt{
		{55, []byte{1, 3, 6, 12, 15, 17, 43, 60, 66, 67, 128, 175}},
		{93, []byte{0, 0}},
		{94, []byte{1, 2, 1}},
		{97, uuid},
		{60, []byte("PXEClient:Arch:00000:UNDI:002001")},
	}
	if ipxe {
		o = append(o, dhcpOpt{77, []byte("iPXE")})
	}
	return o
}

// dhcpReply is what the storm reads from an OFFER or ACK.
type dhcpReply struct {
	xid      uint32
	msgType  byte
	yiaddr   net.IP
	serverID net.IP
	siaddr   net.IP
	file     string // option 67, else the header's file field
}

func parseDHCPReply(b []byte) (dhcpReply, error) {
	var r dhcpReply
	if len(b) < 240 || b[0] != 2 || string(b[236:240]) != string(dhcpCookie) {
		return r, errors.New("not a BOOTREPLY")
	}
	r.xid = binary.BigEndian.Uint32(b[4:])
	r.yiaddr = net.IP(append([]byte(nil), b[16:20]...))
	r.siaddr = net.IP(append([]byte(nil), b[20:24]...))
	file := b[108:236]
	for i, c := range file {
		if c == 0 {
			file = file[:i]
			break
		}
	}
	r.file = string(file)
	for i := 240; i < len(b); {
		code := b[i]
		if code == 255 {
			break
		}
		if code == 0 {
			i++
			continue
		}
		if i+1 >= len(b) || i+2+int(b[i+1]) > len(b) {
			return r, errors.New("truncated option")
		}
		v := b[i+2 : i+2+int(b[i+1])]
		switch code {
		case 53:
			if len(v) == 1 {
				r.msgType = v[0]
			}
		case 54:
			if len(v) == 4 {
				r.serverID = net.IP(append([]byte(nil), v...))
			}
		case 67:
			r.file = string(v)
		}
		i += 2 + len(v)
	}
	if r.msgType == 0 {
		return r, errors.New("no message type")
	}
	return r, nil
}
