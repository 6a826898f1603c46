package httpboot

import (
	"bytes"
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
	log := s.log().With("ip", remoteIP(r))
	var buf bytes.Buffer
	mac, err := parseMAC(macStr)
	if err != nil {
		log.Warn("script request with bad mac", "err", err)
		// The message is fixed: the bad value itself stays out of the script.
		s.sendScript(w, http.StatusBadRequest, &buf, ipxe.RenderError(&buf, "bad mac"))
		return
	}
	log = log.With("mac", mac.String())
	ev := Event{Kind: EventScript, MAC: mac, RemoteAddr: r.RemoteAddr}

	var host, ref string
	var ok bool
	if s.Hosts != nil {
		host, ref, ok = s.Hosts.Lookup(mac)
	}
	switch {
	case !ok:
		log.Info("unknown mac asked for a boot script")
		if s.Recorder != nil {
			if err := s.Recorder.RecordDiscovered(r.Context(), mac, r.RemoteAddr); err != nil {
				log.Error("record discovered mac", "err", err)
			}
		}
		ev.Kind = EventUnknown
		ev.Status = s.sendScript(w, http.StatusOK, &buf, ipxe.RenderUnknown(&buf, mac, s.baseURL(r)))

	case ref == "":
		log.Info("host boots from local disk", "host", host)
		ev.Host, ev.Detail = host, "local"
		ev.Status = s.sendScript(w, http.StatusOK, &buf, ipxe.RenderLocal(&buf, host))

	default:
		log = log.With("host", host, "image", ref)
		ev.Host, ev.Image = host, ref
		p, err := s.bootParams(r, host, mac, ref)
		if err == nil {
			err = ipxe.RenderBoot(&buf, p)
		}
		if err != nil {
			// 200, not 5xx: iPXE only runs a script it fetched
			// successfully, and whoever watches the console should read
			// why nothing booted.
			log.Error("cannot build boot script", "err", err)
			ev.Detail = "error: " + err.Error()
			buf.Reset()
			ev.Status = s.sendScript(w, http.StatusOK, &buf,
				ipxe.RenderError(&buf, fmt.Sprintf("host %s: %v", host, err)))
			break
		}
		ev.Digest, ev.BootID = p.ImageDigest, p.Params["phoenix.bootid"]
		log.Info("boot script served", "digest", p.ImageDigest, "bootid", ev.BootID)
		ev.Status = s.sendScript(w, http.StatusOK, &buf, nil)
	}
	s.emit(ev)
}

// bootParams resolves ref and builds what the boot script needs. Artifact
// URLs name blobs by digest, so they stay valid however the ref moves.
func (s *Server) bootParams(r *http.Request, host string, mac net.HardwareAddr, ref string) (ipxe.BootParams, error) {
	if s.Images == nil {
		return ipxe.BootParams{}, fmt.Errorf("image %s: no image store", ref)
	}
	img, err := s.Images.Resolve(ref)
	if err != nil {
		return ipxe.BootParams{}, err // already names the ref
	}
	base := s.baseURL(r)
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
		if *a.dst, err = blobURL(base, art.Digest); err != nil {
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

// sendScript sends the script in buf with status, unless rendering it
// failed (renderErr), which only a bug can cause: then the client gets a 500
// and no script at all, because a broken script must never half-run.
func (s *Server) sendScript(w http.ResponseWriter, status int, buf *bytes.Buffer, renderErr error) int {
	if renderErr != nil {
		s.log().Error("render script", "err", renderErr)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return http.StatusInternalServerError
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	// A script carries a fresh boot ID and follows the host's current image.
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
	return status
}
