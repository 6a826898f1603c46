package httpboot

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"path"
	"strings"
	"testing"
)

func readTFTPFile(t *testing.T, s *Server, name string) (string, error) {
	t.Helper()
	rc, size, err := s.TFTPFile(context.Background(), name, &net.UDPAddr{IP: net.IPv4(10, 99, 0, 150), Port: 1234})
	if err != nil {
		return "", err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != size {
		t.Errorf("%s: size %d, content %d bytes", name, size, len(b))
	}
	return string(b), nil
}

// TestTFTPFile: the Secure Boot chain's files over TFTP. The bootstrap
// hands over to the MAC's config; a host's config boots its image from
// blobs over TFTP with the same parameters as its iPXE script and the same
// events; an unknown MAC gets the unknown-host config; blobs are served
// with their blob event; other names are not this server's.
func TestTFTPFile(t *testing.T) {
	e := newEnv(t)
	boot, err := readTFTPFile(t, e.srv, "grub/grub.cfg")
	if err != nil || !strings.Contains(boot, "configfile /grub/host/${net_default_mac}.cfg") {
		t.Fatalf("bootstrap %q, %v", boot, err)
	}

	cfg, err := readTFTPFile(t, e.srv, "grub/host/"+knownMAC+".cfg")
	if err != nil {
		t.Fatal(err)
	}
	kernel := "linux /blobs/sha256/" + strings.TrimPrefix(e.kdig, "sha256:") + " 'console=ttyS0,115200' 'quiet'"
	for _, want := range []string{kernel, "'phoenix.server=http://10.99.0.1:8080'", "'phoenix.mac=" + knownMAC + "'",
		"'phoenix.rootfs=http://10.99.0.1:8080/blobs/sha256/", "initrd /blobs/sha256/", "\nboot\n"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("host config lacks %q:\n%s", want, cfg)
		}
	}
	if ev := e.events[len(e.events)-1]; ev.Kind != EventScript || ev.Host != "web-01" || ev.Digest != imageDigest || ev.RemoteAddr != "10.99.0.150:1234" {
		t.Errorf("script event %+v", ev)
	}

	unknown, err := readTFTPFile(t, e.srv, "grub/host/"+unknownMAC+".cfg")
	if err != nil || !strings.Contains(unknown, "unknown host "+unknownMAC) || !strings.Contains(unknown, "exit 1") {
		t.Errorf("unknown host config %q, %v", unknown, err)
	}
	if ev := e.events[len(e.events)-1]; ev.Kind != EventUnknown {
		t.Errorf("unknown host event %+v", ev)
	}
	if len(e.rec.discovered) != 1 || e.rec.discovered[0] != unknownMAC {
		t.Errorf("discovered %v", e.rec.discovered)
	}
	bad, err := readTFTPFile(t, e.srv, "grub/host/not-a-mac.cfg")
	if err != nil || !strings.Contains(bad, "cannot boot: bad mac") {
		t.Errorf("bad mac config %q, %v", bad, err)
	}

	k, err := readTFTPFile(t, e.srv, "blobs/sha256/"+strings.TrimPrefix(e.kdig, "sha256:"))
	if err != nil || k != string(e.kernel) {
		t.Fatalf("kernel blob: %d bytes, %v", len(k), err)
	}
	if ev := e.events[len(e.events)-1]; ev.Kind == EventBlob {
		t.Errorf("blob served over TFTP got an event before its transfer ended: %+v", ev)
	}
	if _, err := readTFTPFile(t, e.srv, "blobs/sha256/"+strings.Repeat("f", 64)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing blob: %v", err)
	}
	if ev := e.events[len(e.events)-1]; ev.Kind != EventBlob || ev.Status != 404 {
		t.Errorf("missing blob event %+v", ev)
	}
	for _, name := range []string{"blobs/sha256/../../etc/passwd", "grub/x86_64-efi/command.lst", "undionly.kpxe", "grub/host/" + knownMAC} {
		if _, err := readTFTPFile(t, e.srv, name); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: err %v, want fs.ErrNotExist", name, err)
		}
	}

	// Without BaseURL a config cannot say where to report.
	e.srv.BaseURL = ""
	if _, err := readTFTPFile(t, e.srv, "grub/host/"+knownMAC+".cfg"); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("config without BaseURL: %v", err)
	}
}

// TestOptionalTFTPFiles: the probes seen from shim and GRUB in a real boot
// match OptionalTFTPFiles; the files the chain needs do not.
func TestOptionalTFTPFiles(t *testing.T) {
	match := func(name string) bool {
		for _, p := range OptionalTFTPFiles {
			if ok, _ := path.Match(p, name); ok {
				return true
			}
		}
		return false
	}
	for _, name := range []string{"revocations_sku.efi", "revocations_sbat.efi", "revocations.efi", "shim_certificate_0.efi",
		"grub/x86_64-efi/command.lst", "grub/x86_64-efi/fs.lst", "grub/locale/en.mo", "grub/fonts/unicode.pf2"} {
		if !match(name) {
			t.Errorf("%s is not optional", name)
		}
	}
	for _, name := range []string{"shimx64.efi", "grubx64.efi", "grub/grub.cfg", "grub/host/52:54:00:00:00:01.cfg", "undionly.kpxe"} {
		if match(name) {
			t.Errorf("%s is optional", name)
		}
	}
}
