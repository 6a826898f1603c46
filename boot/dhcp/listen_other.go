//go:build !linux

package dhcp

import (
	"errors"
	"fmt"
	"net"
)

// Listen opens a UDP socket on addr. Binding to an interface needs Linux.
func Listen(iface string, addr string) (net.PacketConn, error) {
	if iface != "" {
		return nil, errors.New("dhcp listen: binding to an interface is only supported on linux")
	}
	pc, err := net.ListenPacket("udp4", addr)
	if err != nil {
		return nil, fmt.Errorf("dhcp listen %s: %w", addr, err)
	}
	return pc, nil
}
