package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/phoenixboot/phoenix/images"
)

// Host states as the API reports them.
const (
	// StatePending: the host has not reported since phoenix knew it.
	StatePending = "pending"
	// StateReady: the host's last report names the digest it should run.
	StateReady = "ready"
	// StateDrift: the host's last report names some other digest.
	StateDrift = "drift"
	// StateBadImage: the host's image reference does not resolve.
	StateBadImage = "bad-image"
	// StateReimaging: a step is in flight (reset sent or owed, no report yet).
	StateReimaging = "reimaging"
	// StateOutdated: the host runs its assigned image, but a newer one is
	// desired and its turn has not come yet.
	StateOutdated = "outdated"
	// StateHeld: an aborted or halted rollout left the host on its old image.
	StateHeld = "held"
	// StateQuarantined: phoenix will not touch the host until it is released.
	StateQuarantined = "quarantined"
)

// HostStatus is one row of GET /api/v1/hosts: desired and actual side by side.
type HostStatus struct {
	Host
	// Digest is the manifest digest of the host's image ("" if unresolved).
	Digest string `json:"digest"`
	// State is one of the State* constants.
	State string `json:"state"`
	// Error explains StateBadImage.
	Error string `json:"error,omitempty"`
	// LastReport is the host's latest phone-home, if any.
	LastReport *Report `json:"last_report,omitempty"`

	// The fields below are filled by the fleet controller.

	// DesiredRef is NAME:VERSION of Digest.
	DesiredRef string `json:"desired_ref,omitempty"`
	// Assigned is the digest the host boots now; it differs from Digest
	// while the host waits for its turn in a rollout.
	Assigned    string            `json:"assigned,omitempty"`
	AssignedRef string            `json:"assigned_ref,omitempty"`
	Mode        string            `json:"mode,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	BMC         string            `json:"bmc,omitempty"`
	// Override is the image `host reimage --image` pinned.
	Override string `json:"override,omitempty"`
	// Rollout is the rollout the host is queued or active in.
	Rollout     int64     `json:"rollout,omitempty"`
	Step        *Step     `json:"step,omitempty"`
	LastFailure string    `json:"last_failure,omitempty"`
	Quarantine  string    `json:"quarantine,omitempty"`
	ReadyAt     time.Time `json:"ready_at,omitzero"`
	RefreshAt   time.Time `json:"refresh_at,omitzero"`
}

// API serves the fleet under /api/v1 for the CLI and scripts: hosts,
// rollouts, events, plan/apply and revisions. Writes go through
// RequireToken in the server.
type API struct {
	Store *Store
	// Controller answers everything but the discovered MACs; required.
	Controller *Controller
	Log        *slog.Logger
}

// maxFleetFileBytes bounds a posted fleet file (10,000 hosts take ~2 MB).
const maxFleetFileBytes = 64 << 20

// Register adds the API's routes to mux.
//
//	GET  /api/v1/hosts                       hosts: desired, assigned, reported, state
//	GET  /api/v1/hosts/{name}                one host with its events
//	POST /api/v1/hosts/{name}/reimage        {"image": REF} optional
//	POST /api/v1/hosts/{name}/quarantine     {"reason": TEXT} optional
//	POST /api/v1/hosts/{name}/release
//	GET  /api/v1/rollouts                    newest first
//	GET  /api/v1/rollouts/{id}               with its hosts
//	POST /api/v1/rollouts/{id}/{action}      pause, resume, abort
//	GET  /api/v1/events?host=&rollout=&limit=
//	POST /api/v1/plan                        body: fleet file (YAML)
//	POST /api/v1/apply[?revision=N]          body: fleet file, or none with ?revision
//	GET  /api/v1/revisions                   newest first
//	GET  /api/v1/revisions/{n}               with the file
//	GET  /api/v1/discovered                  unknown MACs seen
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/hosts", a.listHosts)
	mux.HandleFunc("GET /api/v1/discovered", a.listDiscovered)
	mux.HandleFunc("GET /api/v1/hosts/{name}", a.showHost)
	mux.HandleFunc("POST /api/v1/hosts/{name}/{action}", a.hostAction)
	mux.HandleFunc("GET /api/v1/rollouts", a.listRollouts)
	mux.HandleFunc("GET /api/v1/rollouts/{id}", a.showRollout)
	mux.HandleFunc("POST /api/v1/rollouts/{id}/{action}", a.rolloutAction)
	mux.HandleFunc("GET /api/v1/events", a.listEvents)
	mux.HandleFunc("POST /api/v1/plan", a.plan)
	mux.HandleFunc("POST /api/v1/apply", a.apply)
	mux.HandleFunc("GET /api/v1/revisions", a.listRevisions)
	mux.HandleFunc("GET /api/v1/revisions/{n}", a.showRevision)
}

func (a *API) listHosts(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, a.Controller.Status())
}

func (a *API) listDiscovered(w http.ResponseWriter, r *http.Request) {
	d, err := a.Store.DiscoveredMACs()
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, d)
}

// fail answers err with the status its kind calls for.
func (a *API) fail(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrInvalid), errors.Is(err, images.ErrNotFound), errors.Is(err, errBadRequest):
		status = http.StatusBadRequest
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrQuarantined), errors.Is(err, ErrState):
		status = http.StatusConflict
	case errors.Is(err, ErrBMC):
		status = http.StatusBadGateway
	}
	if status == http.StatusInternalServerError && a.Log != nil {
		a.Log.Error("api", "err", err)
	}
	WriteError(w, status, err)
}

var errBadRequest = errors.New("bad request")

func (a *API) showHost(w http.ResponseWriter, r *http.Request) {
	d, err := a.Controller.HostDetail(r.PathValue("name"))
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, d)
}

// hostActionBody is the optional JSON body of host actions.
type hostActionBody struct {
	Image  string `json:"image,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Power and Graceful are for the power action: status, on, off or
	// cycle, and for off how long the OS gets to shut down (a Go duration,
	// default 2m; "0s" forces it off at once). Even status needs the
	// token: it makes phoenix log in to the BMC with the host's
	// credentials.
	Power    string `json:"power,omitempty"`
	Graceful string `json:"graceful,omitempty"`
}

// defaultGraceful is how long `host power off` lets the OS shut down
// before the BMC forces the power off, unless told otherwise.
const defaultGraceful = 2 * time.Minute

// maxGraceful bounds it: the request waits that long, holding a BMC session.
const maxGraceful = 30 * time.Minute

func (a *API) hostAction(w http.ResponseWriter, r *http.Request) {
	var body hostActionBody
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
		a.fail(w, fmt.Errorf("%w: %v", errBadRequest, err))
		return
	}
	name := r.PathValue("name")
	var err error
	var out any
	switch r.PathValue("action") {
	case "reimage":
		out, err = a.Controller.Reimage(name, body.Image)
	case "quarantine":
		err = a.Controller.Quarantine(name, body.Reason)
	case "release":
		err = a.Controller.Release(name)
	case "power":
		graceful := defaultGraceful
		if body.Graceful != "" {
			if graceful, err = time.ParseDuration(body.Graceful); err != nil || graceful < 0 || graceful > maxGraceful {
				err = fmt.Errorf("%w: graceful %q: want a duration from 0s to %s", errBadRequest, body.Graceful, maxGraceful)
				break
			}
		}
		out, err = a.Controller.Power(r.Context(), name, body.Power, graceful)
	default:
		err = fmt.Errorf("%w: host action %q: want reimage, quarantine, release or power", errBadRequest, r.PathValue("action"))
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	if out == nil {
		d, err := a.Controller.HostDetail(name)
		if err != nil {
			a.fail(w, err)
			return
		}
		out = d
	}
	writeJSON(w, out)
}

func (a *API) listRollouts(w http.ResponseWriter, r *http.Request) {
	rs, err := a.Controller.Rollouts()
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, rs)
}

func pathInt(r *http.Request, name string) (int64, error) {
	n, err := strconv.ParseInt(r.PathValue(name), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%w: %s %q is not a positive number", errBadRequest, name, r.PathValue(name))
	}
	return n, nil
}

func (a *API) showRollout(w http.ResponseWriter, r *http.Request) {
	id, err := pathInt(r, "id")
	if err == nil {
		var d RolloutDetail
		if d, err = a.Controller.RolloutShow(id); err == nil {
			writeJSON(w, d)
			return
		}
	}
	a.fail(w, err)
}

func (a *API) rolloutAction(w http.ResponseWriter, r *http.Request) {
	id, err := pathInt(r, "id")
	if err == nil {
		var ro Rollout
		if ro, err = a.Controller.RolloutAction(id, r.PathValue("action")); err == nil {
			writeJSON(w, ro)
			return
		}
	}
	a.fail(w, err)
}

func (a *API) listEvents(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := EventFilter{Host: q.Get("host")}
	if v := q.Get("rollout"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			a.fail(w, fmt.Errorf("%w: rollout %q", errBadRequest, v))
			return
		}
		f.Rollout = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			a.fail(w, fmt.Errorf("%w: limit %q", errBadRequest, v))
			return
		}
		f.Limit = n
	}
	evs, err := a.Controller.Store.Events(f)
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, evs)
}

func readFleetFile(r *http.Request) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxFleetFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadRequest, err)
	}
	if len(data) > maxFleetFileBytes {
		return nil, fmt.Errorf("%w: fleet file larger than %d bytes", errBadRequest, maxFleetFileBytes)
	}
	return data, nil
}

func (a *API) plan(w http.ResponseWriter, r *http.Request) {
	data, err := readFleetFile(r)
	if err == nil {
		var pl Plan
		if pl, err = a.Controller.Plan(data); err == nil {
			writeJSON(w, pl)
			return
		}
	}
	a.fail(w, err)
}

func (a *API) apply(w http.ResponseWriter, r *http.Request) {
	var res ApplyResult
	var err error
	if v := r.URL.Query().Get("revision"); v != "" {
		n, perr := strconv.ParseInt(v, 10, 64)
		if perr != nil || n <= 0 {
			a.fail(w, fmt.Errorf("%w: revision %q", errBadRequest, v))
			return
		}
		res, err = a.Controller.ApplyRevision(n)
	} else {
		var data []byte
		if data, err = readFleetFile(r); err == nil {
			res, err = a.Controller.Apply(data, r.URL.Query().Get("note"))
		}
	}
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, res)
}

func (a *API) listRevisions(w http.ResponseWriter, r *http.Request) {
	revs, err := a.Controller.Store.Revisions()
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, revs)
}

func (a *API) showRevision(w http.ResponseWriter, r *http.Request) {
	n, err := pathInt(r, "n")
	if err == nil {
		var rev Revision
		if rev, err = a.Controller.Store.Revision(n); err == nil {
			writeJSON(w, rev)
			return
		}
	}
	a.fail(w, err)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
