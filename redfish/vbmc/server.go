// Package vbmc is a virtual BMC: a small Redfish service in front of QEMU
// virtual machines that it launches and drives through QMP, so that labs
// and end-to-end tests power and boot VMs exactly as a datacenter BMC is
// driven (sessions or Basic auth, ComputerSystem.Reset, a one-time boot
// override, virtual media).
//
// It is not a Redfish client (that is package redfish) and not a complete
// Redfish implementation: it serves the resources a boot server needs, with
// real semantics (ETags, If-Match, AllowableValues, Redfish error bodies),
// over plain HTTP for loopback and lab networks.
package vbmc

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// System is what the Server needs of a machine. *Machine is the real
// implementation; the service tests use a fake.
type System interface {
	Info() SystemInfo
	PowerState(ctx context.Context) (string, error)
	Reset(ctx context.Context, resetType string) error
	BootOverride() BootOverride
	AllowedTargets() []string
	SetBootOverride(b BootOverride) error
	Media() Media
	InsertMedia(ctx context.Context, imageURL string) error
	EjectMedia(ctx context.Context) error
}

// Server is a Redfish service over a set of systems. Each system has a
// manager of the same ID holding its virtual CD drive. The zero value
// serves no systems without authentication.
type Server struct {
	// Systems are served under /redfish/v1/Systems/<name>.
	Systems []System
	// Username and Password are the one account (Basic auth or a
	// session). An empty Username turns authentication off, for tests.
	Username, Password string
	// SessionTimeout ends idle sessions; default 30 minutes.
	SessionTimeout time.Duration
	// Log gets requests that changed something; nil discards.
	Log *slog.Logger
	// TLS, when set, makes Serve speak HTTPS, as real BMCs do (see
	// SelfSignedTLS); nil serves plain HTTP.
	TLS *tls.Config

	once     sync.Once
	uuid     string
	mu       sync.Mutex
	sessions map[string]*session // by token
	nextID   int
	// patching serialises PATCHes per system name, so that If-Match is
	// checked and the change made as one step.
	patching sync.Map // name → *sync.Mutex
}

type session struct {
	id       string
	token    string
	user     string
	lastUsed time.Time
}

const (
	root         = "/redfish/v1"
	sessionsPath = root + "/SessionService/Sessions"
	registryBase = "Base.1.8."
	maxBodyBytes = 64 << 10
	// maxSessions bounds live sessions, as on real BMCs (iDRAC allows
	// a handful): a client that never logs out cannot grow memory.
	maxSessions   = 64
	mediaDeviceID = "CD1"
)

func (s *Server) init() {
	s.once.Do(func() {
		s.uuid = randomUUID()
		s.sessions = map[string]*session{}
	})
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// Serve answers Redfish requests on ln until ctx is done. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.TLS != nil {
		ln = tls.NewListener(ln, s.TLS)
	}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second,
		// Failed handshakes (a client that checks certificates) and the
		// like go to the service's log, not to stderr.
		ErrorLog: slog.NewLogLogger(s.log().Handler(), slog.LevelDebug)}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("vbmc: %w", err)
	case <-ctx.Done():
	}
	// A fresh deadline: ctx is already done.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	hs.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("vbmc: %w", err)
	}
	return nil
}

// ServeHTTP routes a Redfish request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.init()
	w.Header().Set("OData-Version", "4.0")
	p := strings.TrimSuffix(r.URL.Path, "/")
	// The service root, its version document and session login are the
	// only resources open without credentials (Redfish spec, 13.3).
	switch {
	case p == "/redfish":
		s.only(w, r, http.MethodGet, func() { writeJSON(w, http.StatusOK, map[string]string{"v1": root + "/"}) })
		return
	case p == root:
		s.only(w, r, http.MethodGet, func() { writeJSON(w, http.StatusOK, s.serviceRoot()) })
		return
	case p == sessionsPath && r.Method == http.MethodPost:
		s.login(w, r)
		return
	}
	if !s.authenticate(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="vbmc"`)
		writeError(w, http.StatusUnauthorized, "NoValidSession", "There is no valid session established with the implementation.")
		return
	}
	seg := strings.Split(strings.TrimPrefix(p, root+"/"), "/")
	if !strings.HasPrefix(p, root+"/") {
		notFound(w, r)
		return
	}
	switch seg[0] {
	case "SessionService":
		s.sessionService(w, r, seg[1:])
	case "Systems":
		s.systems(w, r, seg[1:])
	case "Managers":
		s.managers(w, r, seg[1:])
	default:
		notFound(w, r)
	}
}

// only runs f if the request uses method, else answers 405.
func (s *Server) only(w http.ResponseWriter, r *http.Request, method string, f func()) {
	if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
		w.Header().Set("Allow", method)
		writeError(w, http.StatusMethodNotAllowed, "OperationNotAllowed", fmt.Sprintf("%s is not allowed on %s.", r.Method, r.URL.Path))
		return
	}
	f()
}

// authenticate accepts an X-Auth-Token of a live session or Basic
// credentials.
func (s *Server) authenticate(r *http.Request) bool {
	if s.Username == "" {
		return true
	}
	if tok := r.Header.Get("X-Auth-Token"); tok != "" {
		s.mu.Lock()
		defer s.mu.Unlock()
		if se, ok := s.sessions[tok]; ok && time.Since(se.lastUsed) < s.sessionTimeout() {
			se.lastUsed = time.Now()
			return true
		}
		return false
	}
	u, p, ok := r.BasicAuth()
	return ok && s.credentialsOK(u, p)
}

func (s *Server) credentialsOK(user, pass string) bool {
	// Both compared in constant time, whatever the first one says.
	uok := subtle.ConstantTimeCompare([]byte(user), []byte(s.Username))
	pok := subtle.ConstantTimeCompare([]byte(pass), []byte(s.Password))
	return uok&pok == 1
}

func (s *Server) sessionTimeout() time.Duration {
	if s.SessionTimeout > 0 {
		return s.SessionTimeout
	}
	return 30 * time.Minute
}

func (s *Server) serviceRoot() map[string]any {
	return map[string]any{
		"@odata.type":    "#ServiceRoot.v1_11_0.ServiceRoot",
		"@odata.id":      root + "/",
		"Id":             "RootService",
		"Name":           "phoenix virtual BMC",
		"RedfishVersion": "1.11.0",
		"UUID":           s.uuid,
		"Vendor":         "phoenix",
		"Product":        "phoenix vbmc",
		"Systems":        odataID(root + "/Systems"),
		"Managers":       odataID(root + "/Managers"),
		"SessionService": odataID(root + "/SessionService"),
		"Links":          map[string]any{"Sessions": odataID(sessionsPath)},
	}
}

// login creates a session from {"UserName", "Password"}.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var body struct {
		UserName *string
		Password *string
	}
	if !decodeBody(w, r, &body) {
		return
	}
	if body.UserName == nil || body.Password == nil {
		missing := "UserName"
		if body.UserName != nil {
			missing = "Password"
		}
		writeError(w, http.StatusBadRequest, "PropertyMissing", fmt.Sprintf("The property %s is a required property and must be included in the request.", missing), missing)
		return
	}
	if s.Username != "" && !s.credentialsOK(*body.UserName, *body.Password) {
		writeError(w, http.StatusUnauthorized, "NoValidSession", "Invalid user name or password.")
		return
	}
	tok := make([]byte, 24)
	rand.Read(tok)
	s.mu.Lock()
	for k, se := range s.sessions {
		if time.Since(se.lastUsed) >= s.sessionTimeout() {
			delete(s.sessions, k)
		}
	}
	if len(s.sessions) >= maxSessions {
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, "SessionLimitExceeded", "The session establishment failed due to the number of simultaneous sessions exceeding the limit of the implementation.")
		return
	}
	s.nextID++
	se := &session{id: fmt.Sprint(s.nextID), token: hex.EncodeToString(tok), user: *body.UserName, lastUsed: time.Now()}
	s.sessions[se.token] = se
	s.mu.Unlock()
	s.log().Info("session created", "session", se.id)
	w.Header().Set("X-Auth-Token", se.token)
	w.Header().Set("Location", sessionsPath+"/"+se.id)
	writeJSON(w, http.StatusCreated, sessionResource(se))
}

func sessionResource(se *session) map[string]any {
	return map[string]any{
		"@odata.type": "#Session.v1_3_0.Session",
		"@odata.id":   sessionsPath + "/" + se.id,
		"Id":          se.id,
		"Name":        "User Session",
		"UserName":    se.user,
	}
}

func (s *Server) sessionService(w http.ResponseWriter, r *http.Request, seg []string) {
	switch {
	case len(seg) == 0:
		s.only(w, r, http.MethodGet, func() {
			writeJSON(w, http.StatusOK, map[string]any{
				"@odata.type":    "#SessionService.v1_1_8.SessionService",
				"@odata.id":      root + "/SessionService",
				"Id":             "SessionService",
				"Name":           "Session Service",
				"ServiceEnabled": true,
				"SessionTimeout": int(s.sessionTimeout().Seconds()),
				"Sessions":       odataID(sessionsPath),
			})
		})
	case len(seg) == 1 && seg[0] == "Sessions":
		s.only(w, r, http.MethodGet, func() {
			s.mu.Lock()
			var ids []string
			for _, se := range s.sessions {
				ids = append(ids, sessionsPath+"/"+se.id)
			}
			s.mu.Unlock()
			writeJSON(w, http.StatusOK, collection("#SessionCollection.SessionCollection", sessionsPath, "Session Collection", ids))
		})
	case len(seg) == 2 && seg[0] == "Sessions":
		s.mu.Lock()
		var found *session
		for _, se := range s.sessions {
			if se.id == seg[1] {
				found = se
			}
		}
		s.mu.Unlock()
		if found == nil {
			notFound(w, r)
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			writeJSON(w, http.StatusOK, sessionResource(found))
		case http.MethodDelete:
			s.mu.Lock()
			delete(s.sessions, found.token)
			s.mu.Unlock()
			s.log().Info("session deleted", "session", found.id)
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Allow", "GET, DELETE")
			writeError(w, http.StatusMethodNotAllowed, "OperationNotAllowed", fmt.Sprintf("%s is not allowed on %s.", r.Method, r.URL.Path))
		}
	default:
		notFound(w, r)
	}
}

func (s *Server) find(id string) System {
	for _, sys := range s.Systems {
		if sys.Info().Name == id {
			return sys
		}
	}
	return nil
}

// member serves the collections that have one member per machine
// (Systems, Managers): with no further segment it answers a GET of the
// collection at root+path, else it finds the machine seg names. It returns
// nil once it has answered the request itself (the collection, or 404).
func (s *Server) member(w http.ResponseWriter, r *http.Request, seg []string, path, typ, name string) System {
	if len(seg) == 0 {
		s.only(w, r, http.MethodGet, func() {
			var ids []string
			for _, sys := range s.Systems {
				ids = append(ids, root+path+"/"+sys.Info().Name)
			}
			writeJSON(w, http.StatusOK, collection(typ, root+path, name, ids))
		})
		return nil
	}
	sys := s.find(seg[0])
	if sys == nil {
		notFound(w, r)
	}
	return sys
}

func (s *Server) systems(w http.ResponseWriter, r *http.Request, seg []string) {
	sys := s.member(w, r, seg, "/Systems", "#ComputerSystemCollection.ComputerSystemCollection", "Computer System Collection")
	if sys == nil {
		return
	}
	switch {
	case len(seg) == 1:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			res, etag, err := s.systemResource(r.Context(), sys)
			if err != nil {
				internalError(w, err)
				return
			}
			w.Header().Set("ETag", etag)
			writeJSON(w, http.StatusOK, res)
		case http.MethodPatch:
			s.patchSystem(w, r, sys)
		default:
			w.Header().Set("Allow", "GET, PATCH")
			writeError(w, http.StatusMethodNotAllowed, "OperationNotAllowed", fmt.Sprintf("%s is not allowed on %s.", r.Method, r.URL.Path))
		}
	case len(seg) == 3 && seg[1] == "Actions" && seg[2] == "ComputerSystem.Reset":
		s.only(w, r, http.MethodPost, func() { s.reset(w, r, sys) })
	default:
		notFound(w, r)
	}
}

// systemResource renders a ComputerSystem and its ETag, a hash of
// everything else in it.
func (s *Server) systemResource(ctx context.Context, sys System) (map[string]any, string, error) {
	info := sys.Info()
	power, err := sys.PowerState(ctx)
	if err != nil {
		return nil, "", err
	}
	b := sys.BootOverride()
	mode := ModeLegacy
	if info.Firmware == UEFI {
		mode = ModeUEFI
	}
	id := root + "/Systems/" + info.Name
	boot := map[string]any{
		"BootSourceOverrideTarget":                          b.Target,
		"BootSourceOverrideTarget@Redfish.AllowableValues":  sys.AllowedTargets(),
		"BootSourceOverrideEnabled":                         b.Enabled,
		"BootSourceOverrideEnabled@Redfish.AllowableValues": []string{OverrideDisabled, OverrideOnce, OverrideContinuous},
		"BootSourceOverrideMode":                            b.Mode,
		"BootSourceOverrideMode@Redfish.AllowableValues":    []string{mode},
		"UefiTargetBootSourceOverride":                      b.UefiTarget,
		"HttpBootUri":                                       b.HTTPBootURI,
	}
	res := map[string]any{
		"@odata.type":  "#ComputerSystem.v1_13_0.ComputerSystem",
		"@odata.id":    id,
		"Id":           info.Name,
		"Name":         info.Name,
		"UUID":         info.UUID,
		"SystemType":   "Virtual",
		"Manufacturer": "QEMU",
		"Model":        "phoenix vbmc " + info.Firmware,
		"SerialNumber": serialNumber(info),
		"PowerState":   power,
		"Status":       map[string]string{"State": "Enabled", "Health": "OK"},
		"MemorySummary": map[string]any{
			"TotalSystemMemoryGiB": float64(info.Memory) / 1024,
		},
		"Boot": boot,
		"Actions": map[string]any{
			"#ComputerSystem.Reset": map[string]any{
				"target":                            id + "/Actions/ComputerSystem.Reset",
				"ResetType@Redfish.AllowableValues": ResetTypes,
			},
		},
		"VirtualMedia": odataID(root + "/Managers/" + info.Name + "/VirtualMedia"),
		"Links": map[string]any{
			"ManagedBy": []any{odataID(root + "/Managers/" + info.Name)},
		},
	}
	etag := etagOf(res)
	res["@odata.etag"] = etag
	return res, etag, nil
}

func serialNumber(info SystemInfo) string {
	u := strings.ToUpper(strings.ReplaceAll(info.UUID, "-", ""))
	if len(u) > 12 {
		u = u[:12]
	}
	return "VBMC-" + u
}

// etagOf is a weak ETag over the JSON of v (map keys marshal sorted, so it
// is stable).
func etagOf(v any) string {
	b, _ := json.Marshal(v)
	h := sha256.Sum256(b)
	return `W/"` + hex.EncodeToString(h[:8]) + `"`
}

// patchSystem changes the boot override. If-Match is honoured: a stale
// ETag gets 412 and changes nothing.
func (s *Server) patchSystem(w http.ResponseWriter, r *http.Request, sys System) {
	mu, _ := s.patching.LoadOrStore(sys.Info().Name, new(sync.Mutex))
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	if im := r.Header.Get("If-Match"); im != "" && im != "*" {
		_, etag, err := s.systemResource(r.Context(), sys)
		if err != nil {
			internalError(w, err)
			return
		}
		if !etagMatches(im, etag) {
			writeError(w, http.StatusPreconditionFailed, "PreconditionFailed", "The ETag supplied did not match the ETag required to change this resource.")
			return
		}
	}
	var body map[string]json.RawMessage
	if !decodeBody(w, r, &body) {
		return
	}
	cur := sys.BootOverride()
	for k, v := range body {
		if k == "@odata.etag" {
			continue
		}
		if k != "Boot" {
			writeError(w, http.StatusBadRequest, "PropertyNotWritable", fmt.Sprintf("The property %s is a read only property and cannot be assigned a value.", k), k)
			return
		}
		var boot map[string]json.RawMessage
		if err := json.Unmarshal(v, &boot); err != nil {
			writeError(w, http.StatusBadRequest, "PropertyValueTypeError", "The value for the property Boot is of a different type than the property can accept.", "Boot")
			return
		}
		allowed := map[string][]string{
			"BootSourceOverrideTarget":  sys.AllowedTargets(),
			"BootSourceOverrideEnabled": {OverrideDisabled, OverrideOnce, OverrideContinuous},
			"BootSourceOverrideMode":    {cur.Mode},
		}
		for bk, bv := range boot {
			var str string
			if err := json.Unmarshal(bv, &str); err != nil {
				writeError(w, http.StatusBadRequest, "PropertyValueTypeError", fmt.Sprintf("The value %s for the property %s is of a different type than the property can accept.", bv, bk), string(bv), bk)
				return
			}
			if list, ok := allowed[bk]; ok && !contains(list, str) {
				writeError(w, http.StatusBadRequest, "PropertyValueNotInList", fmt.Sprintf("The value %s for the property %s is not in the list of acceptable values.", str, bk), str, bk)
				return
			}
			switch bk {
			case "BootSourceOverrideTarget":
				cur.Target = str
			case "BootSourceOverrideEnabled":
				cur.Enabled = str
			case "BootSourceOverrideMode":
				cur.Mode = str
			case "UefiTargetBootSourceOverride":
				cur.UefiTarget = str
			case "HttpBootUri":
				cur.HTTPBootURI = str
			default:
				writeError(w, http.StatusBadRequest, "PropertyUnknown", fmt.Sprintf("The property %s is not in the list of valid properties for the resource.", bk), bk)
				return
			}
		}
	}
	if err := sys.SetBootOverride(cur); err != nil {
		internalError(w, err)
		return
	}
	s.log().Info("boot override", "host", sys.Info().Name, "target", cur.Target, "enabled", cur.Enabled, "mode", cur.Mode)
	res, etag, err := s.systemResource(r.Context(), sys)
	if err != nil {
		internalError(w, err)
		return
	}
	w.Header().Set("ETag", etag)
	writeJSON(w, http.StatusOK, res)
}

// etagMatches compares weakly, and forgives what clients do to tags: W/
// dropped, quotes stripped (gofish can be told to strip them).
func etagMatches(header, etag string) bool {
	norm := func(t string) string { return strings.Trim(strings.TrimPrefix(strings.TrimSpace(t), "W/"), `"`) }
	for _, t := range strings.Split(header, ",") {
		if norm(t) == norm(etag) {
			return true
		}
	}
	return false
}

// reset runs ComputerSystem.Reset. If-Match is not checked on the action:
// gofish sends the system's ETag on it too, and the power state (part of
// that ETag) is what the action is about to change anyway.
func (s *Server) reset(w http.ResponseWriter, r *http.Request, sys System) {
	var body map[string]json.RawMessage
	if !decodeBody(w, r, &body) {
		return
	}
	raw, ok := body["ResetType"]
	if !ok {
		writeError(w, http.StatusBadRequest, "ActionParameterMissing", "The action ComputerSystem.Reset requires the parameter ResetType to be present in the request body.", "ComputerSystem.Reset", "ResetType")
		return
	}
	var rt string
	if err := json.Unmarshal(raw, &rt); err != nil || !contains(ResetTypes, rt) {
		writeError(w, http.StatusBadRequest, "ActionParameterValueNotInList", fmt.Sprintf("The value %s for the parameter ResetType in the action ComputerSystem.Reset is not in the list of acceptable values.", raw), string(raw), "ResetType", "ComputerSystem.Reset")
		return
	}
	for k := range body {
		if k != "ResetType" {
			writeError(w, http.StatusBadRequest, "ActionParameterUnknown", fmt.Sprintf("The action ComputerSystem.Reset was submitted with the invalid parameter %s.", k), "ComputerSystem.Reset", k)
			return
		}
	}
	if err := sys.Reset(r.Context(), rt); err != nil {
		internalError(w, err)
		return
	}
	s.log().Info("reset", "host", sys.Info().Name, "reset", rt)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) managers(w http.ResponseWriter, r *http.Request, seg []string) {
	sys := s.member(w, r, seg, "/Managers", "#ManagerCollection.ManagerCollection", "Manager Collection")
	if sys == nil {
		return
	}
	info := sys.Info()
	id := root + "/Managers/" + info.Name
	vm := id + "/VirtualMedia"
	cd := vm + "/" + mediaDeviceID
	switch {
	case len(seg) == 1:
		s.only(w, r, http.MethodGet, func() {
			writeJSON(w, http.StatusOK, map[string]any{
				"@odata.type":     "#Manager.v1_10_0.Manager",
				"@odata.id":       id,
				"Id":              info.Name,
				"Name":            "Virtual BMC of " + info.Name,
				"ManagerType":     "BMC",
				"FirmwareVersion": "phoenix-vbmc",
				"PowerState":      "On",
				"Status":          map[string]string{"State": "Enabled", "Health": "OK"},
				"VirtualMedia":    odataID(vm),
				"Links": map[string]any{
					"ManagerForServers": []any{odataID(root + "/Systems/" + info.Name)},
				},
			})
		})
	case len(seg) == 2 && seg[1] == "VirtualMedia":
		s.only(w, r, http.MethodGet, func() {
			writeJSON(w, http.StatusOK, collection("#VirtualMediaCollection.VirtualMediaCollection", vm, "Virtual Media Collection", []string{cd}))
		})
	case len(seg) == 3 && seg[1] == "VirtualMedia" && seg[2] == mediaDeviceID:
		s.only(w, r, http.MethodGet, func() {
			m := sys.Media()
			res := map[string]any{
				"@odata.type":    "#VirtualMedia.v1_3_0.VirtualMedia",
				"@odata.id":      cd,
				"Id":             mediaDeviceID,
				"Name":           "Virtual CD",
				"MediaTypes":     []string{"CD", "DVD"},
				"Image":          nil,
				"ImageName":      "",
				"Inserted":       m.Inserted,
				"WriteProtected": true,
				"ConnectedVia":   "NotConnected",
				"Actions": map[string]any{
					"#VirtualMedia.InsertMedia": map[string]any{"target": cd + "/Actions/VirtualMedia.InsertMedia"},
					"#VirtualMedia.EjectMedia":  map[string]any{"target": cd + "/Actions/VirtualMedia.EjectMedia"},
				},
			}
			if m.Inserted {
				res["Image"] = m.Image
				res["ImageName"] = m.Image[strings.LastIndex(m.Image, "/")+1:]
				res["ConnectedVia"] = "URI"
			}
			writeJSON(w, http.StatusOK, res)
		})
	case len(seg) == 5 && seg[1] == "VirtualMedia" && seg[2] == mediaDeviceID && seg[3] == "Actions":
		switch seg[4] {
		case "VirtualMedia.InsertMedia":
			s.only(w, r, http.MethodPost, func() { s.insertMedia(w, r, sys) })
		case "VirtualMedia.EjectMedia":
			s.only(w, r, http.MethodPost, func() {
				var body map[string]json.RawMessage
				if !decodeBody(w, r, &body) {
					return
				}
				if err := sys.EjectMedia(r.Context()); err != nil {
					internalError(w, err)
					return
				}
				s.log().Info("media ejected", "host", info.Name)
				w.WriteHeader(http.StatusNoContent)
			})
		default:
			notFound(w, r)
		}
	default:
		notFound(w, r)
	}
}

func (s *Server) insertMedia(w http.ResponseWriter, r *http.Request, sys System) {
	var body struct {
		Image          *string
		Inserted       *bool
		WriteProtected *bool
		// Accepted and ignored: the image is always fetched by URL.
		TransferMethod       string
		TransferProtocolType string
		UserName             string
		Password             string
	}
	if !decodeBody(w, r, &body) {
		return
	}
	if body.Image == nil || *body.Image == "" {
		writeError(w, http.StatusBadRequest, "ActionParameterMissing", "The action VirtualMedia.InsertMedia requires the parameter Image to be present in the request body.", "VirtualMedia.InsertMedia", "Image")
		return
	}
	if body.Inserted != nil && !*body.Inserted {
		writeError(w, http.StatusBadRequest, "ActionParameterValueNotInList", "The value false for the parameter Inserted in the action VirtualMedia.InsertMedia is not in the list of acceptable values.", "false", "Inserted", "VirtualMedia.InsertMedia")
		return
	}
	if body.WriteProtected != nil && !*body.WriteProtected {
		writeError(w, http.StatusBadRequest, "ActionParameterValueNotInList", "The value false for the parameter WriteProtected in the action VirtualMedia.InsertMedia is not in the list of acceptable values.", "false", "WriteProtected", "VirtualMedia.InsertMedia")
		return
	}
	if !strings.HasPrefix(*body.Image, "http://") && !strings.HasPrefix(*body.Image, "https://") {
		writeError(w, http.StatusBadRequest, "ActionParameterValueFormatError", fmt.Sprintf("The value %s for the parameter Image in the action VirtualMedia.InsertMedia is of a different format than the parameter can accept (an http or https URL).", *body.Image), *body.Image, "Image", "VirtualMedia.InsertMedia")
		return
	}
	if err := sys.InsertMedia(r.Context(), *body.Image); err != nil {
		if errors.Is(err, ErrMediaInserted) {
			writeError(w, http.StatusConflict, "ResourceInUse", "The virtual media is already inserted; eject it first.")
			return
		}
		internalError(w, err)
		return
	}
	s.log().Info("media inserted", "host", sys.Info().Name, "image", *body.Image)
	w.WriteHeader(http.StatusNoContent)
}

func odataID(id string) map[string]string { return map[string]string{"@odata.id": id} }

func collection(typ, id, name string, members []string) map[string]any {
	m := []any{}
	for _, x := range members {
		m = append(m, odataID(x))
	}
	return map[string]any{
		"@odata.type":         typ,
		"@odata.id":           id,
		"Name":                name,
		"Members@odata.count": len(m),
		"Members":             m,
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// decodeBody reads a JSON object body; an empty body is an empty object.
// A bad body gets a Redfish error and false.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "MalformedJSON", "The request body could not be read.")
		return false
	}
	if len(b) > maxBodyBytes {
		writeError(w, http.StatusRequestEntityTooLarge, "GeneralError", "The request body is too large.")
		return false
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		b = []byte("{}")
	}
	if err := json.Unmarshal(b, v); err != nil {
		writeError(w, http.StatusBadRequest, "MalformedJSON", "The request body submitted was malformed JSON and could not be parsed by the receiving service.")
		return false
	}
	return true
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, http.StatusNotFound, "ResourceMissingAtURI", fmt.Sprintf("The resource at the URI %s was not found.", r.URL.Path), r.URL.Path)
}

// internalError answers a backend failure (QEMU gone, a QMP error) with
// its text so the client can say what the BMC answered.
func internalError(w http.ResponseWriter, err error) {
	writeError(w, http.StatusInternalServerError, "InternalError", err.Error())
}

// writeError writes a Redfish error body: a general code plus the message
// from the Base registry in @Message.ExtendedInfo.
func writeError(w http.ResponseWriter, status int, msgID, msg string, args ...string) {
	if args == nil {
		args = []string{}
	}
	sev := "Warning"
	if status >= 500 {
		sev = "Critical"
	}
	writeJSON(w, status, map[string]any{
		"error": map[string]any{
			"code":    registryBase + "GeneralError",
			"message": "A general error has occurred. See ExtendedInfo for more information.",
			"@Message.ExtendedInfo": []any{map[string]any{
				"@odata.type":     "#Message.v1_1_1.Message",
				"MessageId":       registryBase + msgID,
				"Message":         msg,
				"MessageArgs":     args,
				"Severity":        sev,
				"MessageSeverity": sev,
				"Resolution":      resolution(msgID),
			}},
		},
	})
}

func resolution(msgID string) string {
	switch msgID {
	case "NoValidSession":
		return "Establish a session before attempting any operations, or use Basic authentication."
	case "PreconditionFailed":
		return "Try the operation again using the appropriate ETag."
	case "ResourceMissingAtURI":
		return "Place a valid resource at the URI or correct the URI and resubmit the request."
	case "SessionLimitExceeded":
		return "Reduce the number of other sessions before trying to establish the session or increase the limit of simultaneous sessions (if supported)."
	case "InternalError":
		return "Resubmit the request. If the problem persists, check the virtual BMC's log."
	}
	return "Correct the request body and resubmit the request if the operation failed."
}
