package bench

import (
	"bytes"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParsePerfdhcp(t *testing.T) {
	out, err := os.ReadFile(filepath.Join("testdata", "perfdhcp.txt"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := parsePerfdhcp(string(out), 3)
	if err != nil {
		t.Fatal(err)
	}
	if r.Acks != 1992 || r.Rate != 664 || r.Sent != 5999 || r.Drops != 4007 {
		t.Errorf("got %+v, want 1992 acks, rate 664, sent 5999, drops 4007", r)
	}
	if _, err := parsePerfdhcp("Error initializing", 3); err == nil {
		t.Error("no error for output without a rate")
	}
}

func TestMedianSpread(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []float64
		want float64
	}{
		{"odd", []float64{3, 1, 2}, 2},
		{"even", []float64{4, 1, 3, 2}, 2.5},
		{"one", []float64{7}, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := median(tc.in); got != tc.want {
				t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing is not NaN")
	}
	r := Row{Phoenix: []float64{2, 4}, Peer: []float64{2}}
	if r.Ratio() != 1.5 {
		t.Errorf("ratio %v, want 1.5", r.Ratio())
	}
}

func TestDHCPRoundTrip(t *testing.T) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	p := dhcpPacket(mac, 42, append([]dhcpOpt{{53, []byte{dhcpDiscover}}}, pxeOpts(mac, true)...)...)
	// Turn the request into a reply, as a server would.
	p[0] = 2
	copy(p[16:], []byte{10, 0, 0, 9})
	p = append(p[:len(p)-1], 54, 4, 10, 0, 0, 1, 67, 3, 'a', '.', 'b', 255)
	p[242] = dhcpOffer // option 53's value
	r, err := parseDHCPReply(p)
	if err != nil {
		t.Fatal(err)
	}
	if r.xid != 42 || r.msgType != dhcpOffer || !r.yiaddr.Equal(net.IPv4(10, 0, 0, 9)) || !r.serverID.Equal(net.IPv4(10, 0, 0, 1)) || r.file != "a.b" {
		t.Errorf("got %+v", r)
	}
	if _, err := parseDHCPReply(p[:100]); err == nil {
		t.Error("truncated reply parsed")
	}
}

func TestOACK(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"blksize\x001468\x00", 1468},
		{"tsize\x00100\x00blksize\x008192\x00", 8192},
		{"blksize\x00x\x00", 512},
		{"blksize", 512},
	} {
		t.Run(strings.ReplaceAll(tc.in, "\x00", "|"), func(t *testing.T) {
			if got := oackBlksize([]byte(tc.in), 512); got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
}

func TestWriteTable(t *testing.T) {
	rep := &Report{Rows: []Row{{Part: "dhcp", Metric: "m", Unit: "/s", Phoenix: []float64{1, 2, 3}, PeerName: "kea", Peer: []float64{2}, Goal: "≥ 1.0×", Met: "yes"}}}
	var b bytes.Buffer
	rep.WriteTable(&b, Options{})
	if !strings.Contains(b.String(), "2.00 [1.00–3.00]") || !strings.Contains(b.String(), "1.00×") {
		t.Errorf("table:\n%s", b.String())
	}
}

// FuzzParseDHCPReply: the storm client parses whatever arrives on port 68.
func FuzzParseDHCPReply(f *testing.F) {
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	f.Add(dhcpPacket(mac, 1, dhcpOpt{53, []byte{dhcpOffer}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseDHCPReply(b)
		if len(b) > 2 {
			oackBlksize(b[2:], 512)
		}
	})
}
