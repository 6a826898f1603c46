package dhcp

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
)

func TestListen(t *testing.T) {
	for _, iface := range []string{"", "lo"} {
		t.Run("iface="+iface, func(t *testing.T) {
			probe, err := Listen(iface, "127.0.0.1:0")
			if err != nil {
				if iface != "" && errors.Is(err, syscall.EPERM) {
					t.Skipf("SO_BINDTODEVICE needs CAP_NET_RAW here: %v", err)
				}
				t.Fatal(err)
			}
			probe.Close()
			addr := serve(t, &Server{Config: labConfig()}, func() (net.PacketConn, error) { return Listen(iface, "127.0.0.1:0") })
			lease, err := newClient(t, addr, mac(1)).Request(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if !lease.ACK.YourIPAddr.Equal(net.IPv4(10, 99, 0, 100)) {
				t.Errorf("got %s", lease.ACK.YourIPAddr)
			}
		})
	}
}
