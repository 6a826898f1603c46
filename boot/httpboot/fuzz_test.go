package httpboot

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/phoenixboot/phoenix/boot/ipxe"
)

// FuzzReport feeds arbitrary bodies to the report parser and arbitrary
// strings to the MAC parser. Whatever is accepted must satisfy every rule
// the store and the scripts rely on, and must survive a round trip.
func FuzzReport(f *testing.F) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	f.Add([]byte(`{"mac":"52:54:00:ab:cd:01","digest":"`+digest+`","boot_id":"0123456789abcdef","host":"web-01"}`), "52:54:00:ab:cd:01")
	f.Add([]byte(`{"mac":"5254.00ab.cd01","digest":"`+digest+`","x":[1,2,{}]}`), "5254.00ab.cd01")
	f.Add([]byte(`{"mac":"02:00:5e:10:00:00:00:01","digest":"sha256:"}`), "02-00-5E-10-00-00-00-01")
	f.Add([]byte(`{"mac":"52:54:00:ab:cd:01","digest":"`+digest+`","host":"a\nb"}{}`), "${net0/mac}")
	f.Add([]byte(`[`), "")
	f.Add([]byte(`{"mac":"52:54:00:ab:cd:01","digest":"`+digest+`","error":"disk image is 9 bytes, /dev/vda only 8 \u00fc"}`), "")
	f.Add([]byte(`{"mac":"52:54:00:ab:cd:01","digest":"`+digest+`","error":"a\u0085b"}`), "")

	f.Fuzz(func(t *testing.T, body []byte, macStr string) {
		if mac, err := parseMAC(macStr); err == nil && len(mac) != 6 {
			t.Fatalf("parseMAC(%q) accepted %d bytes", macStr, len(mac))
		}

		r, err := parseReport(bytes.NewReader(body))
		if err != nil {
			return
		}
		if len(r.MAC) != 6 {
			t.Fatalf("accepted a %d-byte mac", len(r.MAC))
		}
		if !digestRE.MatchString(r.Digest) {
			t.Fatalf("accepted digest %q", r.Digest)
		}
		if r.Host != "" && ipxe.CheckHost(r.Host) != nil {
			t.Fatalf("accepted host %q", r.Host)
		}
		if r.BootID != "" && !bootIDRE.MatchString(r.BootID) {
			t.Fatalf("accepted boot id %q", r.BootID)
		}
		if checkReportError(r.Error) != nil {
			t.Fatalf("accepted error %q", r.Error)
		}
		again, err := json.Marshal(reportBody{MAC: r.MAC.String(), Digest: r.Digest, BootID: r.BootID, Host: r.Host, Error: r.Error})
		if err != nil {
			t.Fatal(err)
		}
		r2, err := parseReport(bytes.NewReader(again))
		if err != nil {
			t.Fatalf("re-encoded report %s rejected: %v", again, err)
		}
		if r2.MAC.String() != r.MAC.String() || r2.Digest != r.Digest || r2.BootID != r.BootID || r2.Host != r.Host || r2.Error != r.Error {
			t.Fatalf("round trip changed %+v to %+v", r, r2)
		}
	})
}

// FuzzTFTPFile feeds arbitrary TFTP file names (as the TFTP server hands
// them over, cleaned or not) to TFTPFile. It must never panic, serve only
// the names it owns, and only ever open blobs the image store names.
func FuzzTFTPFile(f *testing.F) {
	f.Add("grub/grub.cfg")
	f.Add("grub/host/52:54:00:ab:cd:01.cfg")
	f.Add("grub/host/${x}.cfg")
	f.Add("grub/host/.cfg")
	f.Add("blobs/sha256/" + strings.Repeat("0", 64))
	f.Add("blobs/sha256/../../../etc/shadow")
	f.Add("grub/x86_64-efi/fs.lst")
	f.Fuzz(func(t *testing.T, name string) {
		e := newEnv(t)
		rc, size, err := e.srv.TFTPFile(context.Background(), name, &net.UDPAddr{IP: net.IPv4(10, 99, 0, 150), Port: 1})
		if err != nil {
			return
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil || int64(len(b)) != size {
			t.Fatalf("%q: %d bytes of %d, %v", name, len(b), size, err)
		}
		switch {
		case name == "grub/grub.cfg":
		case strings.HasPrefix(name, "grub/host/") && strings.HasSuffix(name, ".cfg"):
			if strings.ContainsAny(string(b), "\"\\") || strings.Contains(string(b), "$") {
				t.Fatalf("%q: config with GRUB syntax:\n%s", name, b)
			}
		case strings.HasPrefix(name, "blobs/sha256/") && hexRE.MatchString(strings.TrimPrefix(name, "blobs/sha256/")):
		default:
			t.Fatalf("served %q", name)
		}
	})
}
