package tftp

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClean(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "undionly.kpxe", want: "undionly.kpxe"},
		{in: "/undionly.kpxe", want: "undionly.kpxe"},
		{in: "/etc/passwd", want: "etc/passwd"}, // root-relative, never the system file
		{in: "qemu/pxe-e1000.rom", want: "qemu/pxe-e1000.rom"},
		{in: `boot\x64\wdsnbp.com`, want: "boot/x64/wdsnbp.com"},
		{in: `\undionly.kpxe`, want: "undionly.kpxe"},
		{in: "a..b", want: "a..b"},
		{in: "...", want: "..."},
		{in: "", wantErr: true},
		{in: "/", wantErr: true},
		{in: ".", wantErr: true},
		{in: "..", wantErr: true},
		{in: "../etc/passwd", wantErr: true},
		{in: "/../etc/passwd", wantErr: true},
		{in: "//etc/passwd", wantErr: true},
		{in: "a/../../etc/passwd", wantErr: true},
		{in: "a/../b", wantErr: true},
		{in: "./a", wantErr: true},
		{in: "a//b", wantErr: true},
		{in: "a/", wantErr: true},
		{in: `..\..\etc\passwd`, wantErr: true},
		{in: `a\..\..\b`, wantErr: true},
		{in: "a\x00b", wantErr: true},
		{in: "a\nb", wantErr: true},
		{in: "a\x7fb", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Clean(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Clean(%q) = %q, want error", tt.in, got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Clean(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func FuzzClean(f *testing.F) {
	for _, s := range []string{"undionly.kpxe", "/ipxe.efi", "../etc/passwd", `..\x`, "a//b", "a/./b", "\x00", "/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		got, err := Clean(name)
		if err != nil {
			if got != "" {
				t.Fatalf("Clean(%q) returned %q with error %v", name, got, err)
			}
			return
		}
		if got == "" || strings.HasPrefix(got, "/") || filepath.IsAbs(got) {
			t.Fatalf("Clean(%q) = %q: empty or absolute", name, got)
		}
		for _, el := range strings.Split(got, "/") {
			if el == ".." || el == "." || el == "" {
				t.Fatalf("Clean(%q) = %q: bad element %q", name, got, el)
			}
		}
		if strings.ContainsAny(got, "\\\x00") || !fs.ValidPath(got) {
			t.Fatalf("Clean(%q) = %q: not a valid relative path", name, got)
		}
		if again, err := Clean(got); err != nil || again != got {
			t.Fatalf("Clean not idempotent: Clean(%q) = %q, %v", got, again, err)
		}
	})
}

func TestCheckRoot(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "ipxe.efi")
	mustWrite(t, outside, []byte("x"))
	mustWrite(t, filepath.Join(dir, "undionly.kpxe"), []byte("x"))
	mustWrite(t, filepath.Join(dir, "qemu", "pxe.rom"), []byte("x"))
	if err := os.Symlink("qemu/pxe.rom", filepath.Join(dir, "inside.rom")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "ipxe.efi")); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name  string
		root  string
		files []string
		want  []string // substrings of the error; nil means no error
	}{
		{name: "ok", root: dir, files: []string{"undionly.kpxe", "inside.rom", "qemu/pxe.rom"}},
		{name: "missing", root: dir, files: []string{"undionly.kpxe", "snponly.efi", "x.efi"},
			want: []string{"missing snponly.efi, x.efi", "install Debian's ipxe package or pass --ipxe-dir"}},
		{name: "no dir", root: filepath.Join(dir, "nope"), files: []string{"undionly.kpxe"},
			want: []string{"does not exist", "--ipxe-dir"}},
		{name: "escaping symlink", root: dir, files: []string{"ipxe.efi"},
			want: []string{"ipxe.efi -> " + outside, "never served", "--ipxe-dir"}},
		{name: "directory", root: dir, files: []string{"qemu"}, want: []string{"qemu is not a regular file"}},
		{name: "traversal", root: dir, files: []string{"../x"}, want: []string{"not a plain relative path"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckRoot(tt.root, tt.files...)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("CheckRoot: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("CheckRoot: no error")
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func mustWrite(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestResolveFiles(t *testing.T) {
	dir, boot := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "undionly.kpxe"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(boot, "ipxe.efi"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(boot, "ipxe.efi"), filepath.Join(dir, "ipxe.efi")); err != nil {
		t.Fatal(err)
	}
	files, err := ResolveFiles(dir, []string{"undionly.kpxe", "ipxe.efi"}, []string{"snp.efi"})
	if err != nil {
		t.Fatal(err)
	}
	if files["ipxe.efi"] != filepath.Join(boot, "ipxe.efi") || len(files) != 2 {
		t.Fatalf("files = %v", files)
	}
	_, err = ResolveFiles(dir, []string{"undionly.kpxe", "arm64.efi"}, nil)
	if err == nil || !strings.Contains(err.Error(), "missing arm64.efi") || !strings.Contains(err.Error(), "ipxe package") {
		t.Fatalf("err = %v", err)
	}
	if _, err := ResolveFiles(filepath.Join(dir, "nope"), nil, nil); err == nil {
		t.Fatal("missing dir accepted")
	}
}
