package httpboot

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"

	"github.com/phoenixboot/phoenix/boot/ipxe"
	"github.com/phoenixboot/phoenix/images"
)

// serveScript answers iPXE's request for macStr's boot script. Every answer
// is a script iPXE can run; when the server cannot boot the host as asked,
// the script says why and exits so the firmware moves on. It never
// substitutes another image.
func (s *Server) serveScript(w http.ResponseWriter, r *http.Request, macStr string) {
	status, body := s.script(r.Context(), ipxe.IPXE, macStr, r.RemoteAddr, s.baseURL(r))
	if status == http.StatusInternalServerError {
		http.Error(w, "internal error", status)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	// A script carries a fresh boot ID and follows the host's current image.
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(body)
}

// script decides what macStr boots and renders it in dialect d: the
// image's boot script, a local-boot or unknown-host script, or one that
// explains an error. remoteAddr is the client's host:port, base the URL
// the host reaches this server at. It emits the script event. status is
// the HTTP status to answer with; 500 means rendering failed (only a bug
// can cause that) and body is then empty, because a broken script must
// never half-run.
func (s *Server) script(ctx context.Context, d ipxe.Dialect, macStr, remoteAddr, base string) (status int, body []byte) {
	log := s.log().With("ip", hostOnly(remoteAddr), "loader", d.String())
	var buf bytes.Buffer
	mac, err := parseMAC(macStr)
	if err != nil {
		log.Warn("script request with bad mac", "err", err)
		// The message is fixed: the bad value itself stays out of the script.
		return s.rendered(http.StatusBadRequest, &buf, d.RenderError(&buf, "bad mac"))
	}
	log = log.With("mac", mac.String())
	ev := Event{Kind: EventScript, MAC: mac, RemoteAddr: remoteAddr}
	defer func() {
		ev.Status = status
		s.emit(ev)
	}()

	var host, ref string
	var ok bool
	if s.Hosts != nil {
		host, ref, ok = s.Hosts.Lookup(mac)
	}
	switch {
	case !ok:
		log.Info("unknown mac asked for a boot script")
		if s.Recorder != nil {
			if err := s.Recorder.RecordDiscovered(ctx, mac, remoteAddr); err != nil {
				log.Error("record discovered mac", "err", err)
			}
		}
		ev.Kind = EventUnknown
		return s.rendered(http.StatusOK, &buf, d.RenderUnknown(&buf, mac, base))

	case ref == "":
		log.Info("host boots from local disk", "host", host)
		ev.Host, ev.Detail = host, "local"
		return s.rendered(http.StatusOK, &buf, d.RenderLocal(&buf, host))
	}
	log = log.With("host", host, "image", ref)
	ev.Host, ev.Image = host, ref
	p, err := s.bootParams(base, host, mac, ref, d)
	if err == nil {
		err = d.RenderBoot(&buf, p)
	}
	if err != nil {
		// 200, not 5xx: iPXE only runs a script it fetched successfully,
		// and whoever watches the console should read why nothing booted.
		log.Error("cannot build boot script", "err", err)
		ev.Detail = "error: " + err.Error()
		buf.Reset()
		return s.rendered(http.StatusOK, &buf, d.RenderError(&buf, fmt.Sprintf("host %s: %v", host, err)))
	}
	ev.Digest, ev.BootID = p.ImageDigest, p.Params["phoenix.bootid"]
	log.Info("boot script served", "digest", p.ImageDigest, "bootid", ev.BootID)
	return http.StatusOK, buf.Bytes()
}

// rendered returns status and the script in buf, or 500 and nothing when
// rendering failed (renderErr).
func (s *Server) rendered(status int, buf *bytes.Buffer, renderErr error) (int, []byte) {
	if renderErr != nil {
		s.log().Error("render script", "err", renderErr)
		return http.StatusInternalServerError, nil
	}
	return status, buf.Bytes()
}

// bootParams resolves ref and builds what the boot script needs. Artifact
// URLs name blobs by digest, so they stay valid however the ref moves. The
// loader fetches kernel and initrd itself: iPXE over HTTP, GRUB over TFTP
// (by path); the initrd fetches everything else over HTTP.
func (s *Server) bootParams(base, host string, mac net.HardwareAddr, ref string, d ipxe.Dialect) (ipxe.BootParams, error) {
	if s.Images == nil {
		return ipxe.BootParams{}, fmt.Errorf("image %s: no image store", ref)
	}
	img, err := s.Images.Resolve(ref)
	if err != nil {
		return ipxe.BootParams{}, err // already names the ref
	}
	p := ipxe.BootParams{
		Host:        host,
		MAC:         mac,
		ImageRef:    img.Ref(),
		ImageDigest: img.Digest,
		Cmdline:     img.Cmdline,
		Params: map[string]string{
			"phoenix.server": base,
			"phoenix.host":   host,
			"phoenix.mac":    mac.String(),
			"phoenix.digest": img.Digest,
			"phoenix.bootid": newBootID(),
		},
	}
	for _, a := range []struct {
		role string
		dst  *string
	}{
		{images.RoleKernel, &p.KernelURL},
		{images.RoleInitrd, &p.InitrdURL},
	} {
		art, ok := img.Artifact(a.role)
		if !ok {
			return ipxe.BootParams{}, fmt.Errorf("image %s: no %s artifact", ref, a.role)
		}
		if d == ipxe.GRUB {
			*a.dst, err = ipxe.BlobPath(art.Digest)
		} else {
			*a.dst, err = blobURL(base, art.Digest)
		}
		if err != nil {
			return ipxe.BootParams{}, fmt.Errorf("image %s: %s: %w", ref, a.role, err)
		}
	}
	// The initrd finds the root file system or disk image through these.
	for role, key := range map[string]string{images.RoleRootfs: "phoenix.rootfs", images.RoleDisk: "phoenix.disk"} {
		if art, ok := img.Artifact(role); ok {
			u, err := blobURL(base, art.Digest)
			if err != nil {
				return ipxe.BootParams{}, fmt.Errorf("image %s: %s: %w", ref, role, err)
			}
			p.Params[key] = u
			if role == images.RoleDisk {
				// The installer reads this many bytes back from the disk
				// to check what reached it, not only what came over the wire.
				p.Params["phoenix.disk_size"] = strconv.FormatInt(art.Size, 10)
			}
		}
	}
	if img.Mode != "" {
		p.Params["phoenix.mode"] = img.Mode
	}
	return p, nil
}
