package images

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// API serves the image store under /api/v1/images for the CLI: the server
// owns the store, the CLI is a client. It does not check tokens; the
// server mounts it behind its token guard, which covers every change.
//
//	GET    /api/v1/images                      []ImageInfo
//	GET    /api/v1/images/{ref}                ImageInfo (ref: NAME:VERSION, digest or NAME@CHANNEL)
//	GET    /api/v1/images/{name}/history       []ChannelMove
//	GET    /api/v1/images/{name}/channels      map[channel]Image
//	POST   /api/v1/images?name=&version=&arch=&mode=&cmdline=&description=&size.ROLE=N
//	       multipart/form-data, one part per artifact named by its role,
//	       streamed to disk as it arrives (never buffered)   -> Image
//	POST   /api/v1/images/{ref}/promote        {"channel","who"} -> ChannelMove
//	POST   /api/v1/images/{name}/rollback      {"channel","who"} -> ChannelMove
//	POST   /api/v1/images/{ref}/signature      minisign signature text -> Image
//	POST   /api/v1/images/{ref}/push           {"dest","insecure"} -> {"digest"}
//	POST   /api/v1/images/pull                 {"source","ref","insecure"} -> Image
//	POST   /api/v1/images/verify               {"ref","key"} -> VerifyResult
//	POST   /api/v1/images/gc                   {"keep"} -> GCReport
//	DELETE /api/v1/images/{ref}                -> Image
type API struct {
	Store *Store
	// Log receives errors and changes; nil discards.
	Log *slog.Logger
	// Users names the hosts that use a version (by manifest digest): shown
	// by show, and a version in use cannot be removed. Nil knows of none.
	Users func(digest string) []string
	// RemoteOptions are added to every registry request of push and pull
	// (credentials, transport). Nil uses the default keychain
	// (~/.docker/config.json).
	RemoteOptions []remote.Option
}

// ImageInfo is a version as the API lists and shows it.
type ImageInfo struct {
	Image
	Size     int64    // sum of artifact sizes
	Channels []string // "NAME@CHANNEL" pointing to it
	Signed   bool     // a signature is stored (not: verified by some key)
	Users    []string `json:",omitempty"` // hosts using it (show only)
}

// VerifyResult is the answer of POST /api/v1/images/verify.
type VerifyResult struct {
	VerifyReport
	// Signature is "ok" or why not, when a key was given with a ref.
	Signature string `json:"signature,omitempty"`
}

// Register adds the API's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/images", a.list)
	mux.HandleFunc("GET /api/v1/images/{ref}", a.show)
	mux.HandleFunc("GET /api/v1/images/{name}/history", a.history)
	mux.HandleFunc("GET /api/v1/images/{name}/channels", a.channels)
	mux.HandleFunc("POST /api/v1/images", a.importImage)
	mux.HandleFunc("POST /api/v1/images/{ref}/promote", a.promote)
	mux.HandleFunc("POST /api/v1/images/{name}/rollback", a.rollback)
	mux.HandleFunc("POST /api/v1/images/{ref}/signature", a.sign)
	mux.HandleFunc("POST /api/v1/images/{ref}/push", a.push)
	mux.HandleFunc("POST /api/v1/images/pull", a.pull)
	mux.HandleFunc("POST /api/v1/images/verify", a.verify)
	mux.HandleFunc("POST /api/v1/images/gc", a.gc)
	mux.HandleFunc("DELETE /api/v1/images/{ref}", a.remove)
}

func (a *API) log() *slog.Logger {
	if a.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Log
}

func (a *API) info(img Image, withUsers bool) ImageInfo {
	inf := ImageInfo{Image: img, Channels: []string{}}
	for _, ar := range img.Artifacts {
		inf.Size += ar.Size
	}
	if chs, err := a.Store.ChannelsOf(img.Digest); err == nil && chs != nil {
		inf.Channels = chs
	}
	_, err := a.Store.Signature(img.Digest)
	inf.Signed = err == nil
	if withUsers && a.Users != nil {
		inf.Users = a.Users(img.Digest)
	}
	return inf
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	list, err := a.Store.List()
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]ImageInfo, 0, len(list))
	for _, img := range list {
		out = append(out, a.info(img, false))
	}
	writeJSON(w, out)
}

func (a *API) show(w http.ResponseWriter, r *http.Request) {
	img, err := a.Store.Resolve(r.PathValue("ref"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, a.info(img, true))
}

func (a *API) history(w http.ResponseWriter, r *http.Request) {
	h, err := a.Store.History(r.PathValue("name"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if h == nil {
		h = []ChannelMove{}
	}
	writeJSON(w, h)
}

func (a *API) channels(w http.ResponseWriter, r *http.Request) {
	ch, err := a.Store.Channels(r.PathValue("name"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, ch)
}

// importImage streams a multipart upload part by part into blobs, so a
// 2 GiB disk image costs one copy buffer of memory, then publishes the
// version. A dropped connection fails the part's copy: nothing published.
func (a *API) importImage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	spec := ImportSpec{
		Name: q.Get("name"), Version: q.Get("version"), Arch: q.Get("arch"), Mode: q.Get("mode"),
		Cmdline: q.Get("cmdline"), Description: q.Get("description"),
	}
	ref := spec.Name + ":" + spec.Version
	// Check the spec before reading gigabytes; the artifact check follows
	// once the parts are in.
	cfg, err := spec.baseConfig(time.Now())
	if err != nil {
		a.fail(w, r, fmt.Errorf("image %s: %w", ref, err))
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "multipart/form-data" {
		a.fail(w, r, badRequest{fmt.Errorf("image %s: want a multipart/form-data upload, one part per artifact", ref)})
		return
	}
	// A client that stops sending holds the import's share of the store
	// (GC waits for it): a read that brings nothing for uploadStall ends
	// the upload.
	r.Body = stallReader{r.Body, http.NewResponseController(w)}
	mr, err := r.MultipartReader()
	if err != nil {
		a.fail(w, r, badRequest{fmt.Errorf("image %s: %w", ref, err)})
		return
	}
	a.Store.importing.RLock()
	defer a.Store.importing.RUnlock()
	byRole := map[string]layerRef{}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			a.fail(w, r, badRequest{fmt.Errorf("image %s: upload: %w", ref, err)})
			return
		}
		role := p.FormName()
		if _, ok := roleMediaType(role); !ok {
			a.fail(w, r, badRequest{fmt.Errorf("image %s: unknown artifact role %q: want kernel, initrd, rootfs or disk", ref, role)})
			return
		}
		if _, dup := byRole[role]; dup {
			a.fail(w, r, badRequest{fmt.Errorf("image %s: artifact %s: sent twice", ref, role)})
			return
		}
		want := int64(-1)
		if s := q.Get("size." + role); s != "" {
			if want, err = strconv.ParseInt(s, 10, 64); err != nil || want < 0 {
				a.fail(w, r, badRequest{fmt.Errorf("image %s: bad size.%s %q", ref, role, s)})
				return
			}
		}
		// The same content check as Store.Import: a compressed disk
		// image would be written to hosts' disks as it is.
		rd, err := checkContent(role, p)
		if err != nil {
			a.fail(w, r, badRequest{fmt.Errorf("image %s: %s: %w", ref, role, err)})
			return
		}
		h, size, err := a.Store.writeBlob(r.Context(), rd, want)
		if err != nil {
			a.fail(w, r, fmt.Errorf("image %s: %s: %w", ref, role, err))
			return
		}
		byRole[role] = layerRef{h.String(), size}
	}
	present := map[string]bool{}
	for role := range byRole {
		present[role] = true
	}
	if err := checkRoles(cfg.Mode, present); err != nil {
		a.fail(w, r, badRequest{fmt.Errorf("image %s: %w", ref, err)})
		return
	}
	layers := layersInRoleOrder(byRole)
	img, err := a.Store.commit(r.Context(), cfg, layers)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log().Info("image imported", "image", img.Ref(), "digest", img.Digest)
	writeJSON(w, img)
}

type channelRequest struct {
	Channel string `json:"channel"`
	Who     string `json:"who"`
}

func (a *API) who(r *http.Request, who string) string {
	if who == "" {
		return "api " + r.RemoteAddr
	}
	return who
}

func (a *API) promote(w http.ResponseWriter, r *http.Request) {
	var req channelRequest
	if !readJSON(w, r, &req) {
		return
	}
	m, err := a.Store.Promote(r.Context(), r.PathValue("ref"), req.Channel, a.who(r, req.Who))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log().Info("channel moved", "image", m.Name+"@"+m.Channel, "digest", m.To, "from", m.From, "who", m.Who)
	writeJSON(w, m)
}

func (a *API) rollback(w http.ResponseWriter, r *http.Request) {
	var req channelRequest
	if !readJSON(w, r, &req) {
		return
	}
	m, err := a.Store.Rollback(r.Context(), r.PathValue("name"), req.Channel, a.who(r, req.Who))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log().Info("channel rolled back", "image", m.Name+"@"+m.Channel, "digest", m.To, "from", m.From, "who", m.Who)
	writeJSON(w, m)
}

func (a *API) sign(w http.ResponseWriter, r *http.Request) {
	sig, err := io.ReadAll(io.LimitReader(r.Body, 16<<10))
	if err != nil {
		a.fail(w, r, badRequest{err})
		return
	}
	img, err := a.Store.AddSignature(r.PathValue("ref"), sig)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log().Info("image signed", "image", img.Ref(), "digest", img.Digest)
	writeJSON(w, img)
}

type registryRequest struct {
	Dest     string `json:"dest,omitempty"`
	Source   string `json:"source,omitempty"`
	Ref      string `json:"ref,omitempty"`
	Insecure bool   `json:"insecure,omitempty"` // plain HTTP registry (localhost is anyway)
}

func (a *API) remoteOptions() []remote.Option {
	if a.RemoteOptions != nil {
		return a.RemoteOptions
	}
	return []remote.Option{remote.WithAuthFromKeychain(authn.DefaultKeychain)}
}

// checkRegistryRef reports a malformed registry reference as the client's
// error.
func checkRegistryRef(ref string) error {
	if _, err := name.ParseReference(ref); err != nil {
		return badRequest{fmt.Errorf("registry reference %q: %w", ref, err)}
	}
	return nil
}

func (a *API) push(w http.ResponseWriter, r *http.Request) {
	var req registryRequest
	if !readJSON(w, r, &req) {
		return
	}
	if err := checkRegistryRef(req.Dest); err != nil {
		a.fail(w, r, err)
		return
	}
	d, err := a.Store.Push(r.Context(), r.PathValue("ref"), req.Dest, req.Insecure, a.remoteOptions()...)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log().Info("image pushed", "image", r.PathValue("ref"), "digest", d, "dest", req.Dest)
	writeJSON(w, map[string]string{"digest": d})
}

func (a *API) pull(w http.ResponseWriter, r *http.Request) {
	var req registryRequest
	if !readJSON(w, r, &req) {
		return
	}
	if err := checkRegistryRef(req.Source); err != nil {
		a.fail(w, r, err)
		return
	}
	img, err := a.Store.Pull(r.Context(), req.Source, req.Ref, req.Insecure, a.remoteOptions()...)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log().Info("image pulled", "image", img.Ref(), "digest", img.Digest, "source", req.Source)
	writeJSON(w, img)
}

func (a *API) verify(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Ref string `json:"ref"`
		Key string `json:"key"` // minisign public key text
	}
	if !readJSON(w, r, &req) {
		return
	}
	if req.Key != "" && req.Ref == "" {
		a.fail(w, r, badRequest{errors.New("verify: a key needs a ref (NAME:VERSION) to check")})
		return
	}
	rep, err := a.Store.Verify(r.Context(), req.Ref)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	res := VerifyResult{VerifyReport: rep}
	if req.Key != "" {
		key, err := ParsePublicKey([]byte(req.Key))
		if err != nil {
			a.fail(w, r, badRequest{err})
			return
		}
		res.Signature = "ok"
		if _, err := a.Store.VerifySignature(req.Ref, key); err != nil {
			res.Signature = err.Error()
		}
	}
	for _, c := range rep.Corrupt {
		a.log().Error("corrupt blob quarantined", "digest", c.Digest, "got", c.Got, "image", c.Images)
	}
	writeJSON(w, res)
}

func (a *API) gc(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Keep int `json:"keep"`
	}
	if !readJSON(w, r, &req) {
		return
	}
	rep, err := a.Store.GC(r.Context(), req.Keep, a.Users)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log().Info("image gc", "removed", rep.Removed, "blobs", rep.Blobs, "bytes", rep.Bytes)
	writeJSON(w, rep)
}

func (a *API) remove(w http.ResponseWriter, r *http.Request) {
	img, err := a.Store.Remove(r.Context(), r.PathValue("ref"), a.Users)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log().Info("image removed", "image", img.Ref(), "digest", img.Digest)
	writeJSON(w, img)
}

// badRequest marks an error as the client's.
type badRequest struct{ error }

func (b badRequest) Unwrap() error { return b.error }

func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusBadRequest
	var pe *fs.PathError
	var le *os.LinkError
	var se *os.SyscallError
	var br badRequest
	switch {
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrImmutable), errors.Is(err, ErrInUse), errors.Is(err, ErrNoPrevious):
		status = http.StatusConflict
	case errors.Is(err, context.Canceled):
		status = 499 // client went away; nobody reads this
	case errors.As(err, &br):
	case errors.As(err, &pe), errors.As(err, &le), errors.As(err, &se):
		// The server's own file system failed: not the client's fault.
		status = http.StatusInternalServerError
	}
	if status >= 500 {
		a.log().Error("images api", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		a.log().Info("images api: refused", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(v); err != nil && err != io.EOF {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"error": "bad JSON request: " + err.Error()})
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

type layerRef struct {
	digest string
	size   int64
}

func layersInRoleOrder(byRole map[string]layerRef) []v1.Descriptor {
	var out []v1.Descriptor
	for _, r := range roles {
		if l, ok := byRole[r.name]; ok {
			h, _ := digestHash(l.digest)
			out = append(out, layerDescriptor(r.name, h, l.size))
		}
	}
	return slices.Clip(out)
}

// uploadStall is how long an upload may send nothing before it is cut.
const uploadStall = 2 * time.Minute

// stallReader moves the connection's read deadline before every read.
type stallReader struct {
	io.ReadCloser
	rc *http.ResponseController
}

func (s stallReader) Read(p []byte) (int, error) {
	s.rc.SetReadDeadline(time.Now().Add(uploadStall))
	return s.ReadCloser.Read(p)
}
