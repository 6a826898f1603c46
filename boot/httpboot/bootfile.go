package httpboot

import "net/http"

// serveBootFile answers GET /ipxe/{file}: the network boot program itself
// (an iPXE binary), for UEFI HTTP boot clients, which DHCP sends to an
// http:// URL where PXE clients get a TFTP file name. Only the names in
// BootFiles exist; the request's name never reaches the file system.
func (s *Server) serveBootFile(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	ev := Event{Kind: EventBootFile, RemoteAddr: r.RemoteAddr, Detail: name, Status: http.StatusNotFound}
	p, ok := s.BootFiles[name]
	if !ok {
		http.NotFound(w, r)
		s.emit(ev)
		return
	}
	log := s.log().With("file", name, "ip", remoteIP(r))
	f, fi, err := openRegular(p)
	if err != nil {
		log.Warn("boot file unreadable", "err", err)
		http.NotFound(w, r)
		s.emit(ev)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/efi")
	http.ServeContent(w, r, "", fi.ModTime(), f)
	ev.Status = 0 // as for blobs: handed to ServeContent
	s.emit(ev)
	log.Info("boot file served over http", "bytes", fi.Size(), "method", r.Method)
}
