package ipxe

import (
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template/parse"

	"github.com/phoenixboot/phoenix/assets"
)

var update = flag.Bool("update", false, "rewrite testdata/*.ipxe golden files")

const testDigest = "sha256:0f4e1c2a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f"

func testMAC(t testing.TB) net.HardwareAddr {
	t.Helper()
	mac, err := net.ParseMAC("52:54:00:12:34:56")
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

func testParams(t testing.TB) BootParams {
	return BootParams{
		Host:        "web-01",
		MAC:         testMAC(t),
		ImageRef:    "demo:1.0.0",
		ImageDigest: testDigest,
		KernelURL:   "http://10.99.0.1:8080/blobs/sha256/1111111111111111111111111111111111111111111111111111111111111111",
		InitrdURL:   "http://10.99.0.1:8080/blobs/sha256/2222222222222222222222222222222222222222222222222222222222222222",
		Cmdline:     "console=ttyS0,115200  quiet rd.neednet=1",
		Params: map[string]string{
			"phoenix.server": "http://10.99.0.1:8080",
			"phoenix.host":   "web-01",
			"phoenix.mac":    "52:54:00:12:34:56",
			"phoenix.digest": testDigest,
			"phoenix.bootid": "0123456789abcdef",
		},
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from golden file (go test -update rewrites it)\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

func TestGolden(t *testing.T) {
	noCmdline := testParams(t)
	noCmdline.Cmdline = ""
	noCmdline.Params = nil
	tests := []struct {
		name   string
		render func(*bytes.Buffer) error
	}{
		{"boot.ipxe", func(b *bytes.Buffer) error { return IPXE.RenderBoot(b, testParams(t)) }},
		{"boot-bare.ipxe", func(b *bytes.Buffer) error { return IPXE.RenderBoot(b, noCmdline) }},
		{"unknown.ipxe", func(b *bytes.Buffer) error { return IPXE.RenderUnknown(b, testMAC(t), "http://10.99.0.1:8080") }},
		{"unknown-ipv6.ipxe", func(b *bytes.Buffer) error { return IPXE.RenderUnknown(b, testMAC(t), "http://[fd00::1]:8080") }},
		{"local.ipxe", func(b *bytes.Buffer) error { return IPXE.RenderLocal(b, "db-3.rack2") }},
		{"error.ipxe", func(b *bytes.Buffer) error {
			return IPXE.RenderError(b, "image demo:2 ${evil} && exit\nboot \"x\": not found")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := tt.render(&buf); err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(buf.Bytes(), []byte("#!ipxe\n")) {
				t.Errorf("script does not start with #!ipxe")
			}
			golden(t, tt.name, buf.Bytes())
		})
	}
}

func grubParams(t testing.TB) BootParams {
	p := testParams(t)
	var err error
	if p.KernelURL, err = BlobPath("sha256:" + strings.Repeat("1", 64)); err != nil {
		t.Fatal(err)
	}
	if p.InitrdURL, err = BlobPath("sha256:" + strings.Repeat("2", 64)); err != nil {
		t.Fatal(err)
	}
	p.Cmdline += " root=* x=[a]"
	return p
}

// TestGoldenGRUB: the GRUB configs of the Secure Boot chain. Every kernel
// command line word is single-quoted, so GRUB neither expands nor globs it.
func TestGoldenGRUB(t *testing.T) {
	tests := []struct {
		name   string
		render func(*bytes.Buffer) error
	}{
		{"boot.grub", func(b *bytes.Buffer) error { return GRUB.RenderBoot(b, grubParams(t)) }},
		{"unknown.grub", func(b *bytes.Buffer) error { return GRUB.RenderUnknown(b, testMAC(t), "http://10.99.0.1:8080") }},
		{"local.grub", func(b *bytes.Buffer) error { return GRUB.RenderLocal(b, "db-3.rack2") }},
		{"error.grub", func(b *bytes.Buffer) error {
			return GRUB.RenderError(b, "image demo:2 ${evil}'; exit\nboot \"x\": not found")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := tt.render(&buf); err != nil {
				t.Fatal(err)
			}
			if bytes.ContainsAny(buf.Bytes(), "${}\"\\") {
				t.Errorf("config holds a character GRUB would interpret:\n%s", buf.Bytes())
			}
			golden(t, tt.name, buf.Bytes())
		})
	}
	// The GRUB dialect takes TFTP paths of blobs, nothing else.
	for _, bad := range []string{"http://10.99.0.1/blobs/sha256/11", "/blobs/sha256/../../etc/passwd", "(http,evil)/k", ""} {
		p := grubParams(t)
		p.KernelURL = bad
		if err := GRUB.RenderBoot(&bytes.Buffer{}, p); err == nil {
			t.Errorf("kernel path %q accepted", bad)
		}
	}
	p := grubParams(t)
	p.Cmdline = "console=ttyS0 x='; reboot"
	if err := GRUB.RenderBoot(&bytes.Buffer{}, p); err == nil {
		t.Errorf("quote in the command line accepted")
	}
}

func TestRenderBootRejects(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*BootParams)
	}{
		{"host with space", func(p *BootParams) { p.Host = "web 01" }},
		{"host with expansion", func(p *BootParams) { p.Host = "${net0/ip}" }},
		{"host starting with dash", func(p *BootParams) { p.Host = "-n" }},
		{"host with newline", func(p *BootParams) { p.Host = "web\nchain http://evil/" }},
		{"empty host", func(p *BootParams) { p.Host = "" }},
		{"no mac", func(p *BootParams) { p.MAC = nil }},
		{"ref with space", func(p *BootParams) { p.ImageRef = "demo:1 || shell" }},
		{"uppercase digest", func(p *BootParams) { p.ImageDigest = strings.ToUpper(testDigest) }},
		{"short digest", func(p *BootParams) { p.ImageDigest = "sha256:abc" }},
		{"kernel url ftp", func(p *BootParams) { p.KernelURL = "ftp://10.99.0.1/k" }},
		{"kernel url relative", func(p *BootParams) { p.KernelURL = "/blobs/sha256/11" }},
		{"kernel url with expansion", func(p *BootParams) { p.KernelURL = "http://h/${x}" }},
		{"kernel url with fragment", func(p *BootParams) { p.KernelURL = "http://h/k#x" }},
		{"kernel url with ampersand", func(p *BootParams) { p.KernelURL = "http://h/k?a=1&&b=2" }},
		{"kernel url with credentials", func(p *BootParams) { p.KernelURL = "http://user:pw@h/k" }},
		{"initrd url with space", func(p *BootParams) { p.InitrdURL = "http://h/k x" }},
		{"cmdline newline", func(p *BootParams) { p.Cmdline = "quiet\nshell" }},
		{"cmdline tab", func(p *BootParams) { p.Cmdline = "quiet\tro" }},
		{"cmdline expansion", func(p *BootParams) { p.Cmdline = "ip=${net0/ip}" }},
		{"cmdline or", func(p *BootParams) { p.Cmdline = "quiet || shell" }},
		{"cmdline and", func(p *BootParams) { p.Cmdline = "quiet && shell" }},
		{"cmdline semicolon", func(p *BootParams) { p.Cmdline = "quiet ; shell" }},
		{"cmdline comment", func(p *BootParams) { p.Cmdline = "quiet #x" }},
		{"cmdline quote", func(p *BootParams) { p.Cmdline = `a="b c"` }},
		{"cmdline backslash", func(p *BootParams) { p.Cmdline = `a=b\c` }},
		{"cmdline option", func(p *BootParams) { p.Cmdline = "--name evil" }},
		{"cmdline too long", func(p *BootParams) { p.Cmdline = strings.Repeat("a ", maxCmdlineLen) }},
		{"param key with space", func(p *BootParams) { p.Params = map[string]string{"a b": "c"} }},
		{"param key with equals", func(p *BootParams) { p.Params = map[string]string{"a=b": "c"} }},
		{"param value with space", func(p *BootParams) { p.Params = map[string]string{"phoenix.host": "a b"} }},
		{"param value with expansion", func(p *BootParams) { p.Params = map[string]string{"phoenix.host": "${x}"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testParams(t)
			tt.mutate(&p)
			var buf bytes.Buffer
			if err := IPXE.RenderBoot(&buf, p); err == nil {
				t.Fatalf("rendered:\n%s", buf.String())
			}
			if buf.Len() != 0 {
				t.Errorf("a failed render wrote %d bytes", buf.Len())
			}
		})
	}
}

func TestRenderUnknownRejects(t *testing.T) {
	tests := []struct {
		name string
		mac  net.HardwareAddr
		url  string
	}{
		{"no mac", nil, "http://10.99.0.1:8080"},
		{"url with space", testMAC(t), "http://10.99.0.1:8080/ x"},
		{"empty url", testMAC(t), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := IPXE.RenderUnknown(&buf, tt.mac, tt.url); err == nil {
				t.Fatalf("rendered:\n%s", buf.String())
			}
		})
	}
}

func TestRenderLocalRejects(t *testing.T) {
	for _, host := range []string{"", "a b", "-n", "${hostname}", "a\nb", "a;b"} {
		var buf bytes.Buffer
		if err := IPXE.RenderLocal(&buf, host); err == nil {
			t.Errorf("IPXE.RenderLocal(%q) rendered:\n%s", host, buf.String())
		}
	}
}

func TestSafeText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"image demo:1 not found", "image demo:1 not found"},
		{"${x}", "??x?"},
		{"a\nb\r\tc", "a?b??c"},
		{`"q" 'q' \ # | & ;`, "?q? ?q? ? ? ? ? ?"},
		{"ü", "?"},
		{strings.Repeat("a", 1000), strings.Repeat("a", maxTextLen) + "..."},
	}
	for _, tt := range tests {
		t.Run(tt.in[:min(len(tt.in), 20)], func(t *testing.T) {
			if got := SafeText(tt.in); got != tt.want {
				t.Errorf("SafeText(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// TestTemplatesOnlyPrintThroughFuncs walks every template and fails if any
// action prints a value that did not go through one of the validating funcs:
// a plain {{.Host}} would put a host-supplied string into a script unchecked.
func TestTemplatesOnlyPrintThroughFuncs(t *testing.T) {
	safe := map[string]bool{"host": true, "mac": true, "ref": true, "digest": true,
		"url": true, "path": true, "cmdline": true, "params": true, "text": true}
	for _, set := range []struct {
		fsys  fs.FS
		glob  string
		funcs map[string]any
	}{{assets.IPXE, "ipxe/*.tmpl", funcs}, {assets.GRUB, "grub/*.tmpl", grubFuncs}} {
		names, err := fs.Glob(set.fsys, set.glob)
		if err != nil || len(names) != 4 {
			t.Fatalf("%s: %d templates, want 4: %v", set.glob, len(names), err)
		}
		for _, name := range names {
			t.Run(name, func(t *testing.T) {
				src, err := fs.ReadFile(set.fsys, name)
				if err != nil {
					t.Fatal(err)
				}
				trees, err := parse.Parse(name, string(src), "", "", set.funcs)
				if err != nil {
					t.Fatal(err)
				}
				for _, tree := range trees {
					for _, msg := range checkNode(tree.Root, safe, map[string]bool{}) {
						t.Error(msg)
					}
				}
			})
		}
	}
	// The checker itself must catch what it is for.
	for _, src := range []string{
		"{{.Host}}", "{{.Host | printf}}", "{{range $i, $w := retries}}{{$.Host}}{{end}}",
		"{{with .Host}}{{.}}{{end}}", "{{if .X}}{{.Cmdline}}{{end}}", "{{host .H | printf}}",
	} {
		trees, err := parse.Parse("x", src, "", "", funcs, map[string]any{"printf": fmt.Sprintf})
		if err != nil {
			t.Fatal(err)
		}
		if len(checkNode(trees["x"].Root, safe, map[string]bool{})) == 0 {
			t.Errorf("checker accepts %s", src)
		}
	}
}

// checkNode returns the actions under n that print a value other than
// through a safe func or an integer variable bound by ranging over retries.
func checkNode(n parse.Node, safe, intVars map[string]bool) []string {
	var bad []string
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			bad = append(bad, checkNode(c, safe, intVars)...)
		}
	case *parse.ActionNode:
		if len(n.Pipe.Decl) > 0 {
			return nil // an assignment prints nothing
		}
		cmds := n.Pipe.Cmds
		last := cmds[len(cmds)-1]
		if id, ok := last.Args[0].(*parse.IdentifierNode); ok && safe[id.Ident] {
			return nil
		}
		if v, ok := last.Args[0].(*parse.VariableNode); ok && len(cmds) == 1 && len(last.Args) == 1 && len(v.Ident) == 1 && intVars[v.Ident[0]] {
			return nil
		}
		bad = append(bad, fmt.Sprintf("offset %d: %s prints a value without a validating func", n.Position(), n))
	case *parse.RangeNode:
		vars := intVars
		if id, ok := n.Pipe.Cmds[0].Args[0].(*parse.IdentifierNode); ok && id.Ident == "retries" {
			vars = maps.Clone(intVars)
			for _, d := range n.Pipe.Decl {
				vars[d.Ident[0]] = true
			}
		}
		bad = append(bad, checkNode(n.List, safe, vars)...)
		bad = append(bad, checkNode(n.ElseList, safe, intVars)...)
	case *parse.IfNode:
		bad = append(bad, checkNode(n.List, safe, intVars)...)
		bad = append(bad, checkNode(n.ElseList, safe, intVars)...)
	case *parse.WithNode:
		bad = append(bad, checkNode(n.List, safe, intVars)...)
		bad = append(bad, checkNode(n.ElseList, safe, intVars)...)
	case *parse.TemplateNode:
		bad = append(bad, fmt.Sprintf("offset %d: nested templates are not checked; inline them", n.Position()))
	}
	return bad
}

// TestBootScriptShape pins the properties the boot path depends on, whatever
// the golden file says.
func TestBootScriptShape(t *testing.T) {
	var buf bytes.Buffer
	if err := IPXE.RenderBoot(&buf, testParams(t)); err != nil {
		t.Fatal(err)
	}
	s := buf.String()
	for _, want := range []string{
		"\nkernel http://10.99.0.1:8080/blobs/sha256/1111111111111111111111111111111111111111111111111111111111111111 initrd=initrd console=ttyS0,115200 quiet rd.neednet=1 phoenix.bootid=0123456789abcdef phoenix.digest=" + testDigest + " phoenix.host=web-01 phoenix.mac=52:54:00:12:34:56 phoenix.server=http://10.99.0.1:8080 && goto initrd ||\n",
		"\ninitrd --name initrd http://10.99.0.1:8080/blobs/sha256/2222222222222222222222222222222222222222222222222222222222222222 && goto boot ||\n",
		"\nboot ||\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	if n := strings.Count(s, "\nkernel "); n != 3 {
		t.Errorf("%d kernel attempts, want 3", n)
	}
	if strings.Contains(s, "${") {
		t.Errorf("script contains ${")
	}
}
