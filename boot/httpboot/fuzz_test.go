package httpboot

import (
	"bytes"
	"encoding/json"
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
