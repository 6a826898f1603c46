package httpboot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"strings"

	"github.com/phoenixboot/phoenix/boot/ipxe"
)

// The Secure Boot chain. Firmware that enforces Secure Boot runs only
// signed programs, and the iPXE phoenix serves is not signed. Such hosts
// get Debian's signed shim over PXE instead, which loads Debian's signed
// GRUB (grubx64.efi, from the same TFTP directory). That GRUB has no HTTP
// client: it reads grub/grub.cfg over TFTP, and then everything it loads,
// so phoenix serves over TFTP what iPXE would fetch over HTTP: each host's
// config, rendered like its iPXE script, and the kernel and initrd blobs.
// The kernel must be signed (Debian's are); the initrd then fetches the
// rest over HTTP as usual.

// grubBootstrap is grub/grub.cfg, the one name GRUB asks for: it hands over
// to the config of the MAC GRUB netbooted with. GRUB fills in
// net_default_mac from the firmware's PXE answer.
const grubBootstrap = `# phoenix: load the config of the MAC this machine netbooted with
if [ -n "$net_default_mac" ]; then
  configfile /grub/host/${net_default_mac}.cfg
fi
echo 'phoenix: GRUB did not tell which MAC it netbooted with; trying the next boot device in 5 s'
sleep 5
exit 1
`

// OptionalTFTPFiles are the files shim and GRUB ask for on every boot only
// in case they exist (for tftp.Server.Optional): shim's revocation lists
// and extra certificates, GRUB's module and command lists, locales and
// fonts. Their absence is normal.
var OptionalTFTPFiles = []string{
	"revocations*.efi", "shim_certificate_*.efi",
	"grub/x86_64-efi/*", "grub/locale/*", "grub/fonts/*",
}

// TFTPFile serves, for tftp.Server.Virtual, what the Secure Boot chain
// reads over TFTP: grub/grub.cfg, grub/host/MAC.cfg (that host's config:
// what its iPXE script would do, in GRUB's language, with the same events)
// and blobs/sha256/HEX (kernels and initrds, as under /blobs/ over HTTP).
// Other names get an error wrapping fs.ErrNotExist, so the TFTP server
// looks for them among its files.
func (s *Server) TFTPFile(ctx context.Context, name string, remote net.Addr) (io.ReadCloser, int64, error) {
	remoteAddr := ""
	if remote != nil {
		remoteAddr = remote.String()
	}
	switch {
	case name == "grub/grub.cfg":
		return content([]byte(grubBootstrap))
	case strings.HasPrefix(name, "grub/host/"):
		mac, ok := strings.CutSuffix(strings.TrimPrefix(name, "grub/host/"), ".cfg")
		if !ok {
			return nil, 0, fmt.Errorf("%s: %w", name, fs.ErrNotExist)
		}
		if s.BaseURL == "" {
			// The config's phoenix.server= must name this server; over
			// TFTP there is no Host header to build it from.
			return nil, 0, errors.New("no BaseURL: cannot write a host's GRUB config")
		}
		status, body := s.script(ctx, ipxe.GRUB, mac, remoteAddr, s.baseURL(nil))
		if status == http.StatusInternalServerError {
			return nil, 0, errors.New("rendering the GRUB config failed")
		}
		return content(body)
	case strings.HasPrefix(name, "blobs/sha256/"):
		return s.tftpBlob(strings.TrimPrefix(name, "blobs/sha256/"), remoteAddr)
	}
	return nil, 0, fmt.Errorf("%s: %w", name, fs.ErrNotExist)
}

// tftpBlob opens the blob with hex digest h for a TFTP transfer. A missing
// blob gets a blob event with status 404, as over HTTP; a served one gets
// none: the TFTP server reports the transfer when it has ended, which is
// when the boot timeline's kernel and initrd phases are reached.
func (s *Server) tftpBlob(h, remoteAddr string) (io.ReadCloser, int64, error) {
	digest := "sha256:" + h
	f, fi, asked := s.openBlob(h, s.log().With("digest", digest, "ip", hostOnly(remoteAddr)))
	if f == nil {
		if asked {
			s.emit(Event{Kind: EventBlob, Digest: digest, RemoteAddr: remoteAddr, Detail: "tftp", Status: http.StatusNotFound})
		}
		return nil, 0, fmt.Errorf("blob %s: %w", digest, fs.ErrNotExist)
	}
	return f, fi.Size(), nil
}

func content(b []byte) (io.ReadCloser, int64, error) {
	return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
}
