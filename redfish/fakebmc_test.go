package redfish

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// fakeBMC is a small Redfish service with realistic JSON (ServiceRoot,
// SessionService, Systems, Managers, VirtualMedia, ETags) whose faults and
// vendor habits a test switches on. It is deliberately written from the
// spec, not from our client, so the client's assumptions get tested.
type fakeBMC struct {
	mu sync.Mutex

	user, pass   string
	vendor       string // ServiceRoot Vendor
	manufacturer string
	noSessions   bool // no SessionService: Basic auth only
	tokens       map[string]bool
	nextToken    int
	systems      []*fakeSystem
	mediaIn      bool
	mediaImage   string

	// Faults.
	fail500     int           // the next N requests answer 500
	busy409     int           // the next N POST/PATCH requests answer 409
	slow        time.Duration // every request waits this long first
	taskNever   bool          // Reset answers 202 with a task that stays Running
	taskPolls   int           // Reset answers 202 with a task done after N polls
	task202     bool          // the finished task's monitor still answers 202
	noReset     bool          // the systems have no Reset action
	allowed     []string      // Reset AllowableValues
	powerDelay  time.Duration // a reset changes PowerState this much later
	ignoreOff   bool          // GracefulShutdown is accepted and ignored (hung OS)
	ignorePatch bool          // PATCH answers 204 and changes nothing

	// Vendor habits.
	onceReadsContinuous bool // Supermicro
	rejectMode          bool // HPE: BootSourceOverrideMode is read-only
	modeEveryTime       bool // Supermicro: mode falls back to Legacy unless sent
	insertNeedsEject    bool // refuse InsertMedia while inserted

	// Observations.
	inFlight, maxInFlight int
	requests              []string
	resets                []string
	patches               []map[string]any
	sessionsCreated       int
	sessionsDeleted       int
	basicSeen             bool
	inserts               []string
}

type fakeSystem struct {
	id, name, uuid, serial string
	power                  string
	boot                   map[string]any
	etag                   int
}

func newFakeBMC() *fakeBMC {
	return &fakeBMC{
		user: "admin", pass: "s3cret-Pa55word!", vendor: "Contoso", manufacturer: "Contoso",
		tokens:  map[string]bool{},
		allowed: []string{"On", "ForceOff", "GracefulShutdown", "ForceRestart", "GracefulRestart", "PushPowerButton"},
		systems: []*fakeSystem{{id: "1", name: "node1", uuid: "4c4c4544-0000-1010-8000-b1c04f4d3232", serial: "SN0001", power: "Off",
			boot: map[string]any{"BootSourceOverrideTarget": "None", "BootSourceOverrideEnabled": "Disabled", "BootSourceOverrideMode": "UEFI"}}},
	}
}

func redfishError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code": "Base.1.8.GeneralError", "message": "A general error has occurred. See ExtendedInfo for more information.",
		"@Message.ExtendedInfo": []any{map[string]any{"MessageId": "Base.1.8.GeneralError", "Message": msg}},
	}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func link(p string) map[string]string { return map[string]string{"@odata.id": p} }

func (f *fakeBMC) system(id string) *fakeSystem {
	for _, s := range f.systems {
		if s.id == id {
			return s
		}
	}
	return nil
}

func (f *fakeBMC) authorized(r *http.Request) bool {
	if tok := r.Header.Get("X-Auth-Token"); tok != "" {
		return f.tokens[tok]
	}
	if u, p, ok := r.BasicAuth(); ok {
		f.basicSeen = true
		return u == f.user && p == f.pass
	}
	return false
}

// expireSessions forgets every session, as a BMC reboot does.
func (f *fakeBMC) expireSessions() {
	f.mu.Lock()
	f.tokens = map[string]bool{}
	f.mu.Unlock()
}

func (f *fakeBMC) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.inFlight++
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
	f.requests = append(f.requests, r.Method+" "+r.URL.Path)
	slow := f.slow
	f.mu.Unlock()
	defer func() { f.mu.Lock(); f.inFlight--; f.mu.Unlock() }()
	if slow > 0 {
		select {
		case <-time.After(slow):
		case <-r.Context().Done():
			return
		}
	}
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail500 > 0 {
		f.fail500--
		redfishError(w, 500, "The service encountered an internal error (injected).")
		return
	}
	if f.busy409 > 0 && (r.Method == http.MethodPost || r.Method == http.MethodPatch) && !strings.HasSuffix(r.URL.Path, "/Sessions") {
		f.busy409--
		redfishError(w, 409, "The resource is busy; another operation is in progress.")
		return
	}
	p := strings.TrimSuffix(r.URL.Path, "/")
	if p == "/redfish/v1" {
		f.root(w)
		return
	}
	if p == "/redfish/v1/SessionService/Sessions" && r.Method == http.MethodPost && !f.noSessions {
		var cred struct{ UserName, Password string }
		json.Unmarshal(body, &cred)
		if cred.UserName != f.user || cred.Password != f.pass {
			redfishError(w, 401, "Login failed: the user name or password is incorrect.")
			return
		}
		f.nextToken++
		tok := fmt.Sprintf("token-%d", f.nextToken)
		f.tokens[tok] = true
		f.sessionsCreated++
		w.Header().Set("X-Auth-Token", tok)
		w.Header().Set("Location", "/redfish/v1/SessionService/Sessions/"+tok)
		writeJSON(w, 201, map[string]any{"@odata.id": "/redfish/v1/SessionService/Sessions/" + tok, "Id": tok, "UserName": f.user})
		return
	}
	if !f.authorized(r) {
		redfishError(w, 401, "The authentication credentials included with this request are missing or invalid.")
		return
	}
	switch {
	case strings.HasPrefix(p, "/redfish/v1/SessionService/Sessions/") && r.Method == http.MethodDelete:
		delete(f.tokens, strings.TrimPrefix(p, "/redfish/v1/SessionService/Sessions/"))
		f.sessionsDeleted++
		w.WriteHeader(204)
	case p == "/redfish/v1/Systems":
		var members []any
		for i := len(f.systems) - 1; i >= 0; i-- { // any order: here reversed
			members = append(members, link("/redfish/v1/Systems/"+f.systems[i].id))
		}
		writeJSON(w, 200, map[string]any{"@odata.id": p, "@odata.type": "#ComputerSystemCollection.ComputerSystemCollection", "Members": members, "Members@odata.count": len(members)})
	case strings.HasPrefix(p, "/redfish/v1/Systems/") && strings.HasSuffix(p, "/Actions/ComputerSystem.Reset"):
		f.reset(w, f.system(strings.Split(p, "/")[4]), body)
	case strings.HasPrefix(p, "/redfish/v1/Systems/"):
		s := f.system(strings.TrimPrefix(p, "/redfish/v1/Systems/"))
		if s == nil {
			redfishError(w, 404, "The requested resource of type ComputerSystem was not found.")
			return
		}
		if r.Method == http.MethodPatch {
			f.patch(w, r, s, body)
			return
		}
		f.getSystem(w, s)
	case strings.HasPrefix(p, "/redfish/v1/TaskService/Tasks/"):
		f.task(w, p)
	case p == "/redfish/v1/Managers/BMC":
		writeJSON(w, 200, map[string]any{"@odata.id": p, "@odata.type": "#Manager.v1_10_0.Manager", "Id": "BMC", "Name": "Manager", "VirtualMedia": link(p + "/VirtualMedia")})
	case p == "/redfish/v1/Managers/BMC/VirtualMedia":
		writeJSON(w, 200, map[string]any{"@odata.id": p, "Members": []any{link(p + "/USB1"), link(p + "/CD1")}, "Members@odata.count": 2})
	case p == "/redfish/v1/Managers/BMC/VirtualMedia/USB1":
		writeJSON(w, 200, map[string]any{"@odata.id": p, "@odata.type": "#VirtualMedia.v1_3_0.VirtualMedia", "Id": "USB1", "MediaTypes": []string{"USBStick"}, "Inserted": false, "Image": nil})
	case p == "/redfish/v1/Managers/BMC/VirtualMedia/CD1":
		var img any
		if f.mediaImage != "" {
			img = f.mediaImage
		}
		writeJSON(w, 200, map[string]any{"@odata.id": p, "@odata.type": "#VirtualMedia.v1_3_0.VirtualMedia", "Id": "CD1", "MediaTypes": []string{"CD", "DVD"},
			"Inserted": f.mediaIn, "Image": img, "Actions": map[string]any{
				"#VirtualMedia.InsertMedia": map[string]string{"target": p + "/Actions/VirtualMedia.InsertMedia"},
				"#VirtualMedia.EjectMedia":  map[string]string{"target": p + "/Actions/VirtualMedia.EjectMedia"},
			}})
	case p == "/redfish/v1/Managers/BMC/VirtualMedia/CD1/Actions/VirtualMedia.InsertMedia":
		if f.mediaIn && f.insertNeedsEject {
			redfishError(w, 400, "The virtual media is already inserted; eject it first.")
			return
		}
		var in struct{ Image string }
		json.Unmarshal(body, &in)
		f.mediaIn, f.mediaImage = true, in.Image
		f.inserts = append(f.inserts, in.Image)
		w.WriteHeader(204)
	case p == "/redfish/v1/Managers/BMC/VirtualMedia/CD1/Actions/VirtualMedia.EjectMedia":
		f.mediaIn, f.mediaImage = false, ""
		w.WriteHeader(204)
	default:
		redfishError(w, 404, "The resource at the URI "+p+" was not found.")
	}
}

func (f *fakeBMC) root(w http.ResponseWriter) {
	root := map[string]any{
		"@odata.id": "/redfish/v1/", "@odata.type": "#ServiceRoot.v1_11_0.ServiceRoot", "Id": "RootService", "Name": "Root Service",
		"RedfishVersion": "1.11.0", "Vendor": f.vendor,
		"Systems": link("/redfish/v1/Systems"), "Managers": link("/redfish/v1/Managers"),
	}
	if !f.noSessions {
		root["SessionService"] = link("/redfish/v1/SessionService")
		root["Links"] = map[string]any{"Sessions": link("/redfish/v1/SessionService/Sessions")}
	}
	writeJSON(w, 200, root)
}

func (f *fakeBMC) getSystem(w http.ResponseWriter, s *fakeSystem) {
	etag := `W/"` + strconv.Itoa(s.etag) + `"`
	boot := map[string]any{"BootSourceOverrideTarget@Redfish.AllowableValues": []string{"None", "Pxe", "Cd", "Hdd", "UefiHttp", "BiosSetup"}}
	for k, v := range s.boot {
		boot[k] = v
	}
	sys := map[string]any{
		"@odata.id": "/redfish/v1/Systems/" + s.id, "@odata.type": "#ComputerSystem.v1_13_0.ComputerSystem", "@odata.etag": etag,
		"Id": s.id, "Name": s.name, "UUID": s.uuid, "SerialNumber": s.serial, "Manufacturer": f.manufacturer, "Model": "Fake 1U",
		"PowerState": s.power, "Boot": boot,
		"Links": map[string]any{"ManagedBy": []any{link("/redfish/v1/Managers/BMC")}},
	}
	if !f.noReset {
		sys["Actions"] = map[string]any{"#ComputerSystem.Reset": map[string]any{
			"target": "/redfish/v1/Systems/" + s.id + "/Actions/ComputerSystem.Reset", "ResetType@Redfish.AllowableValues": f.allowed,
		}}
	}
	w.Header().Set("ETag", etag)
	writeJSON(w, 200, sys)
}

func (f *fakeBMC) patch(w http.ResponseWriter, r *http.Request, s *fakeSystem, body []byte) {
	if im := r.Header.Get("If-Match"); im != "" && im != `W/"`+strconv.Itoa(s.etag)+`"` {
		redfishError(w, 412, "The ETag supplied did not match the ETag of the resource.")
		return
	}
	var in struct{ Boot map[string]any }
	if err := json.Unmarshal(body, &in); err != nil || in.Boot == nil {
		redfishError(w, 400, "The request body was malformed.")
		return
	}
	f.patches = append(f.patches, in.Boot)
	if _, ok := in.Boot["BootSourceOverrideMode"]; ok && f.rejectMode {
		redfishError(w, 400, "The property BootSourceOverrideMode is a read only property and cannot be assigned a value.")
		return
	}
	if f.ignorePatch {
		w.WriteHeader(204)
		return
	}
	for k, v := range in.Boot {
		s.boot[k] = v
	}
	if _, ok := in.Boot["BootSourceOverrideMode"]; !ok && f.modeEveryTime {
		s.boot["BootSourceOverrideMode"] = "Legacy"
	}
	if f.onceReadsContinuous && s.boot["BootSourceOverrideEnabled"] == "Once" {
		s.boot["BootSourceOverrideEnabled"] = "Continuous"
	}
	s.etag++
	w.WriteHeader(204)
}

func (f *fakeBMC) reset(w http.ResponseWriter, s *fakeSystem, body []byte) {
	if s == nil || f.noReset {
		redfishError(w, 404, "The resource was not found.")
		return
	}
	var in struct{ ResetType string }
	json.Unmarshal(body, &in)
	if !slices.Contains(f.allowed, in.ResetType) {
		redfishError(w, 400, "The value "+in.ResetType+" for the parameter ResetType is not in the list of acceptable values.")
		return
	}
	f.resets = append(f.resets, in.ResetType)
	var next string
	switch in.ResetType {
	case "On", "ForceOn":
		next = "On"
	case "ForceOff":
		next = "Off"
	case "GracefulShutdown":
		if !f.ignoreOff {
			next = "Off"
		}
	case "PushPowerButton":
		next = map[string]string{"On": "Off", "Off": "On"}[s.power]
	default:
		next = "On"
	}
	if next != "" {
		if f.powerDelay > 0 {
			time.AfterFunc(f.powerDelay, func() { f.mu.Lock(); s.power = next; s.etag++; f.mu.Unlock() })
		} else {
			s.power = next
			s.etag++
		}
	}
	if f.taskNever || f.taskPolls > 0 {
		w.Header().Set("Location", "/redfish/v1/TaskService/Tasks/1/Monitor")
		writeJSON(w, 202, map[string]any{"@odata.id": "/redfish/v1/TaskService/Tasks/1", "Id": "1", "TaskState": "Running"})
		return
	}
	w.WriteHeader(204)
}

func (f *fakeBMC) task(w http.ResponseWriter, p string) {
	if !f.taskNever {
		if f.taskPolls > 0 {
			f.taskPolls--
		}
		if f.taskPolls == 0 {
			status := 200
			if f.task202 {
				status = 202
			}
			writeJSON(w, status, map[string]any{"@odata.id": "/redfish/v1/TaskService/Tasks/1", "Id": "1", "TaskState": "Completed", "TaskStatus": "OK"})
			return
		}
	}
	w.Header().Set("Location", p)
	writeJSON(w, 202, map[string]any{"@odata.id": "/redfish/v1/TaskService/Tasks/1", "Id": "1", "TaskState": "Running"})
}
