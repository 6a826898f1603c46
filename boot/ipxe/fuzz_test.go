package ipxe

import (
	"bytes"
	"net"
	"slices"
	"strings"
	"testing"
)

// controlTokens lists, per line, the words iPXE treats as syntax: the
// command itself, "||", "&&", ";" and words starting with '#'. A value that
// changed this skeleton would have injected a command, a condition or a
// comment.
func controlTokens(script string) [][]string {
	var lines [][]string
	for _, line := range strings.Split(script, "\n") {
		words := strings.Fields(line)
		var ctl []string
		for i, w := range words {
			if i == 0 || w == "||" || w == "&&" || w == ";" || strings.HasPrefix(w, "#") {
				ctl = append(ctl, w)
			}
		}
		lines = append(lines, ctl)
	}
	return lines
}

// FuzzRenderBoot feeds arbitrary host names, command lines, refs, parameter
// values and URLs to RenderBoot (and the text to RenderError). Whatever it
// renders must keep the benign script's skeleton: same lines, same commands,
// same conditionals, no setting expansion, no quotes or backslashes, and
// every host-supplied value either verbatim (it was valid) or refused.
func FuzzRenderBoot(f *testing.F) {
	f.Add("web-01", "console=ttyS0 quiet", "demo:1.0", "v", "http://10.99.0.1:8080/blobs/sha256/11", []byte{0x52, 0x54, 0, 1, 2, 3})
	f.Add("a b", "quiet\nchain http://x/", "demo:1 || shell", "${net0/ip}", "http://h/${x}", []byte{1})
	f.Add("-n", "#x && y ; z", "d:1", "a=b c", "http://[fd00::1]:8080/k?x=1", []byte{})
	f.Add("x\r", "a\tb '\"\\", "d:1\n", "--", "https://h:1/k#f", []byte{1, 2, 3, 4, 5, 6, 7, 8})

	var ref bytes.Buffer
	if err := IPXE.RenderBoot(&ref, testParams(f)); err != nil {
		f.Fatal(err)
	}
	want := controlTokens(ref.String())

	f.Fuzz(func(t *testing.T, host, cmdline, imageRef, value, kernelURL string, mac []byte) {
		p := testParams(t)
		p.Host = host
		p.Cmdline = cmdline
		p.ImageRef = imageRef
		p.Params["phoenix.host"] = value
		p.KernelURL = kernelURL
		p.MAC = net.HardwareAddr(mac)

		var buf bytes.Buffer
		err := IPXE.RenderBoot(&buf, p)
		if err != nil {
			if buf.Len() != 0 {
				t.Fatalf("failed render wrote %d bytes", buf.Len())
			}
		} else {
			s := buf.String()
			checkInert(t, s)
			// Words of the command line are as many as the input's, so the
			// kernel line differs from the reference only in its arguments.
			if got := controlTokens(s); !slices.EqualFunc(got, want, slices.Equal) {
				t.Fatalf("script skeleton changed:\n%s", s)
			}
			if !strings.Contains(s, " "+host+" ") {
				t.Fatalf("host %q not rendered verbatim:\n%s", host, s)
			}
			if strings.ContainsAny(host+imageRef+value+kernelURL+cmdline, "\n\r\t\"'\\$#|&;{}") {
				t.Fatalf("accepted a value with iPXE syntax: %q %q %q %q %q", host, imageRef, value, kernelURL, cmdline)
			}
		}

		buf.Reset()
		msg := host + cmdline + value
		if err := IPXE.RenderError(&buf, msg); err != nil {
			t.Fatal(err)
		}
		s := buf.String()
		checkInert(t, s)
		if n := strings.Count(s, "\n"); n != 4 {
			t.Fatalf("error script has %d lines, want 4:\n%s", n, s)
		}
	})
}

// checkInert fails if s holds anything iPXE would expand or that a template
// never emits on its own.
func checkInert(t *testing.T, s string) {
	t.Helper()
	if strings.ContainsAny(s, "$\"'\\\r\t{}") {
		t.Fatalf("script contains iPXE syntax:\n%q", s)
	}
	for _, line := range strings.Split(s, "\n") {
		for _, w := range strings.Fields(line) {
			if strings.HasPrefix(w, "#") && line != "#!ipxe" {
				t.Fatalf("comment word %q in script:\n%s", w, s)
			}
		}
	}
}

// FuzzRenderGRUB does the same for the GRUB dialect: every rendered
// config keeps the benign one's lines and commands, every value sits
// inside single quotes that nothing closes early, and GRUB's expansion,
// quoting and escape characters never appear outside the template's own.
func FuzzRenderGRUB(f *testing.F) {
	f.Add("web-01", "console=ttyS0 root=*", "demo:1.0", "v", "/blobs/sha256/"+strings.Repeat("1", 64))
	f.Add("a'b", "quiet'; reboot; echo '", "demo:1 || shell", "${net_default_ip}", "(http,evil)/k")
	f.Add("x", "a\nboot", "d:1", "[a]", "/blobs/sha256/../../x")
	var ref bytes.Buffer
	if err := GRUB.RenderBoot(&ref, grubParams(f)); err != nil {
		f.Fatal(err)
	}
	first := func(s string) []string {
		var out []string
		for _, line := range strings.Split(s, "\n") {
			w, _, _ := strings.Cut(line, " ")
			out = append(out, w)
		}
		return out
	}
	want := first(ref.String())
	f.Fuzz(func(t *testing.T, host, cmdline, imageRef, value, kernel string) {
		p := grubParams(t)
		p.Host, p.Cmdline, p.ImageRef, p.KernelURL = host, cmdline, imageRef, kernel
		p.Params["phoenix.host"] = value
		var buf bytes.Buffer
		if err := GRUB.RenderBoot(&buf, p); err != nil {
			if buf.Len() != 0 {
				t.Fatalf("failed render wrote %d bytes", buf.Len())
			}
		} else {
			s := buf.String()
			if got := first(s); !slices.Equal(got, want) {
				t.Fatalf("config skeleton changed:\n%s", s)
			}
			if strings.ContainsAny(s, "$\"\\\r\t{};|&") {
				t.Fatalf("config contains GRUB syntax:\n%q", s)
			}
			for i, line := range strings.Split(s, "\n") {
				if strings.Count(line, "'")%2 != 0 {
					t.Fatalf("line %d has unbalanced quotes:\n%s", i+1, s)
				}
			}
		}
		buf.Reset()
		if err := GRUB.RenderError(&buf, host+cmdline+value); err != nil {
			t.Fatal(err)
		}
		if s := buf.String(); strings.Count(s, "'") != 4 || strings.ContainsAny(s, "$\"\\") {
			t.Fatalf("error config:\n%s", s)
		}
	})
}
