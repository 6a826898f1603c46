package ra

import (
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

func TestAdvertisement(t *testing.T) {
	mac := net.HardwareAddr{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	b, err := ndp.MarshalMessage(advertisement(mac))
	if err != nil {
		t.Fatal(err)
	}
	m, err := ndp.ParseMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	checkAdvertisement(t, m, mac)
}

// checkAdvertisement asserts the properties that make an advertisement
// harmless: nobody routes through us, nobody takes an address or starts
// DHCPv6 because of it.
func checkAdvertisement(t *testing.T, m ndp.Message, mac net.HardwareAddr) {
	t.Helper()
	ra, ok := m.(*ndp.RouterAdvertisement)
	if !ok {
		t.Fatalf("got %T, want a router advertisement", m)
	}
	if ra.RouterLifetime != 0 {
		t.Errorf("router lifetime %v, want 0", ra.RouterLifetime)
	}
	if ra.ManagedConfiguration || ra.OtherConfiguration {
		t.Errorf("M=%v O=%v, want both clear", ra.ManagedConfiguration, ra.OtherConfiguration)
	}
	if ra.CurrentHopLimit != 0 || ra.ReachableTime != 0 || ra.RetransmitTimer != 0 {
		t.Errorf("RA overrides client defaults: %+v", ra)
	}
	var sawMAC bool
	for _, o := range ra.Options {
		switch o := o.(type) {
		case *ndp.PrefixInformation:
			t.Errorf("RA carries a prefix: %+v", o)
		case *ndp.LinkLayerAddress:
			sawMAC = o.Direction == ndp.Source && o.Addr.String() == mac.String()
		}
	}
	if !sawMAC {
		t.Errorf("RA lacks source link-layer address %s: %+v", mac, ra.Options)
	}
}

func TestRunErrors(t *testing.T) {
	tests := []struct {
		iface, want string
	}{
		{iface: "phx-no-such-if0", want: "phx-no-such-if0"},
		// Loopback has ::1 at most, never a link-local address.
		{iface: loopbackName(t), want: "no IPv6 link-local address"},
	}
	for _, tt := range tests {
		t.Run(tt.iface, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := (&Sender{Interface: tt.iface}).Run(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Run = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func loopbackName(t *testing.T) string {
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 {
			return i.Name
		}
	}
	t.Skip("no loopback interface")
	return ""
}

const netnsEnv = "PHX_RA_TEST_IN_NETNS"

// TestSenderNetns runs itself again in a fresh, anonymous network namespace
// (unshare --net) holding a veth pair: the Sender advertises on one end and
// the test listens on the other. The kernel deletes the namespace, and the
// veth pair with it, when the child exits, whatever happens to it.
func TestSenderNetns(t *testing.T) {
	if os.Getenv(netnsEnv) == "" {
		if os.Geteuid() != 0 {
			t.Skip("needs root to create a network namespace")
		}
		for _, bin := range []string{"unshare", "ip"} {
			if _, err := exec.LookPath(bin); err != nil {
				t.Skipf("needs %s: %v", bin, err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "unshare", "--net", "--", os.Args[0], "-test.run=^TestSenderNetns$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), netnsEnv+"=1")
		out, err := cmd.CombinedOutput()
		t.Logf("in namespace:\n%s", out)
		if err != nil {
			t.Fatalf("namespace run: %v", err)
		}
		if strings.Contains(string(out), "--- SKIP") {
			t.Skip("skipped inside the namespace (see log)")
		}
		return
	}
	inNamespace(t)
}

func inNamespace(t *testing.T) {
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skipf("kernel without IPv6: %v", err)
	}
	// No duplicate address detection: link-local addresses are usable at
	// once. This namespace is ours alone.
	for _, k := range []string{"all", "default"} {
		writeSysctl(t, "/proc/sys/net/ipv6/conf/"+k+"/disable_ipv6", "0")
		writeSysctl(t, "/proc/sys/net/ipv6/conf/"+k+"/accept_dad", "0")
	}
	run(t, "ip", "link", "add", "phxra0", "type", "veth", "peer", "name", "phxra1")
	run(t, "ip", "link", "set", "phxra0", "up")
	run(t, "ip", "link", "set", "phxra1", "up")
	sendIf := waitLinkLocal(t, "phxra0")
	recvIf := waitLinkLocal(t, "phxra1")

	rc, recvAddr, err := ndp.Listen(recvIf, ndp.LinkLocal)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := rc.SetControlMessage(ipv6.FlagDst, true); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- (&Sender{Interface: "phxra0", Interval: 300 * time.Millisecond}).Run(ctx) }()

	// The initial advertisement, then a periodic one: both multicast.
	for i := range 2 {
		m, dst := readRA(t, rc, time.Second)
		checkAdvertisement(t, m, sendIf.HardwareAddr)
		if dst != allNodes {
			t.Errorf("unsolicited RA %d sent to %s, want %s", i, dst, allNodes)
		}
	}

	// A solicitation is answered straight to the solicitor.
	rs := &ndp.RouterSolicitation{Options: []ndp.Option{
		&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: recvIf.HardwareAddr},
	}}
	if err := rc.WriteTo(rs, nil, allRouters); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		m, dst := readRA(t, rc, time.Until(deadline))
		if dst == recvAddr.WithZone("") {
			checkAdvertisement(t, m, sendIf.HardwareAddr)
			break
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v after cancel, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func readRA(t *testing.T, c *ndp.Conn, within time.Duration) (ndp.Message, netip.Addr) {
	t.Helper()
	if err := c.SetReadDeadline(time.Now().Add(within)); err != nil {
		t.Fatal(err)
	}
	for {
		m, cm, _, err := c.ReadFrom()
		if err != nil {
			t.Fatalf("no router advertisement: %v", err)
		}
		if _, ok := m.(*ndp.RouterAdvertisement); !ok {
			continue
		}
		var dst netip.Addr
		if cm != nil {
			dst, _ = netip.AddrFromSlice(cm.Dst)
		}
		return m, dst
	}
}

func waitLinkLocal(t *testing.T, name string) *net.Interface {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if hasLinkLocal(ifi) {
			return ifi
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s got no link-local address", name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func writeSysctl(t *testing.T, path, value string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		t.Fatalf("sysctl %s: %v", path, err)
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
}
