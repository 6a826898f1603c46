package tftp

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Real clients other than pin/tftp's own: Debian's tftp-hpa (plain RFC
// 1350, 512-byte blocks, no options) and atftp (blksize, tsize, windowsize).
// CI installs them with `apt-get install tftp-hpa atftp`.

func lookPeer(t *testing.T, bin, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		t.Skipf("%s not installed (apt-get install %s): %v", bin, pkg, err)
	}
	return p
}

func peerFiles(t *testing.T) (string, map[string][]byte) {
	dir := t.TempDir()
	files := map[string][]byte{
		"undionly.kpxe": randomBytes(74213),
		"exact.bin":     randomBytes(4 * 1468 * 512), // a multiple of every block size used
		"empty.bin":     {},
	}
	for name, data := range files {
		mustWrite(t, filepath.Join(dir, name), data)
	}
	return dir, files
}

func runPeer(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

func TestPeerTFTPHPA(t *testing.T) {
	bin := lookPeer(t, "tftp", "tftp-hpa")
	if out, _ := exec.Command(bin, "-V").CombinedOutput(); !strings.Contains(string(out), "tftp-hpa") {
		t.Skipf("%s is not tftp-hpa: %q", bin, out)
	}
	dir, files := peerFiles(t)
	ts := startServer(t, &Server{Root: dir})
	host, port, _ := net.SplitHostPort(ts.addr)

	for _, name := range []string{"undionly.kpxe", "/undionly.kpxe", "exact.bin", "empty.bin"} {
		t.Run(name, func(t *testing.T) {
			local := filepath.Join(t.TempDir(), "out")
			out, err := runPeer(t, bin, "-m", "binary", host, port, "-c", "get", name, local)
			if err != nil {
				t.Fatalf("tftp: %v: %s", err, out)
			}
			got, err := os.ReadFile(local)
			if err != nil {
				t.Fatalf("tftp wrote nothing (%v): %s", err, out)
			}
			if want := files[strings.TrimPrefix(name, "/")]; !bytes.Equal(got, want) {
				t.Fatalf("got %d bytes, want %d: %s", len(got), len(want), out)
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		local := filepath.Join(t.TempDir(), "out")
		out, _ := runPeer(t, bin, "-m", "binary", host, port, "-c", "get", "../../etc/passwd", local)
		if !strings.Contains(out, "access violation") {
			t.Errorf("tftp output %q does not show the refusal", out)
		}
		if data, _ := os.ReadFile(local); len(data) > 0 {
			t.Errorf("received %d bytes of a refused file", len(data))
		}
	})
	t.Run("put", func(t *testing.T) {
		src := filepath.Join(t.TempDir(), "src")
		mustWrite(t, src, []byte("upload"))
		out, _ := runPeer(t, bin, "-m", "binary", host, port, "-c", "put", src, "upload.bin")
		if !strings.Contains(out, "read-only") {
			t.Errorf("tftp output %q does not show the refusal", out)
		}
		if _, err := os.Stat(filepath.Join(dir, "upload.bin")); err == nil {
			t.Error("write request created a file")
		}
	})
}

func TestPeerATFTP(t *testing.T) {
	bin := lookPeer(t, "atftp", "atftp")
	dir, files := peerFiles(t)
	ts := startServer(t, &Server{Root: dir})
	host, port, _ := net.SplitHostPort(ts.addr)

	type tc struct {
		file string
		opts []string
	}
	var tests []tc
	for _, f := range []string{"undionly.kpxe", "exact.bin", "empty.bin"} {
		tests = append(tests,
			tc{f, nil},
			tc{f, []string{"blksize 1468", "tsize 0"}},
			tc{f, []string{"blksize 8192"}},
			tc{f, []string{"blksize 65464", "tsize 0"}},
			// Like OVMF: windowsize is not negotiated by the server, and
			// the client must fall back to lock-step.
			tc{f, []string{"blksize 1468", "windowsize 4", "tsize 0"}},
		)
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s", tt.file, strings.Join(tt.opts, ",")), func(t *testing.T) {
			local := filepath.Join(t.TempDir(), "out")
			args := []string{"--get", "-r", tt.file, "-l", local}
			for _, o := range tt.opts {
				args = append(args, "--option", o)
			}
			args = append(args, host, port)
			out, err := runPeer(t, bin, args...)
			if err != nil {
				t.Fatalf("atftp %v: %v: %s", args, err, out)
			}
			got, err := os.ReadFile(local)
			if err != nil {
				t.Fatalf("atftp wrote nothing (%v): %s", err, out)
			}
			if want := files[tt.file]; !bytes.Equal(got, want) {
				t.Fatalf("got %d bytes, want %d: %s", len(got), len(want), out)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		out, err := runPeer(t, bin, "--get", "-r", "nope.efi", "-l", filepath.Join(t.TempDir(), "out"), host, port)
		if err == nil || !strings.Contains(out, "file not found") {
			t.Errorf("atftp: err=%v output %q, want a not-found error", err, out)
		}
	})
}
