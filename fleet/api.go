package fleet

import (
	"encoding/json"
	"log/slog"
	"net/http"

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
}

// ImageResolver turns an image reference into an image (satisfied by
// *images.Store).
type ImageResolver interface {
	Resolve(ref string) (images.Image, error)
}

// API serves the read side of the fleet under /api/v1 for the CLI and
// scripts. It changes nothing, so it needs no token yet.
type API struct {
	Hosts  *Hosts
	Images ImageResolver
	Store  *Store
	Log    *slog.Logger
}

// Register adds the API's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/hosts", a.listHosts)
	mux.HandleFunc("GET /api/v1/discovered", a.listDiscovered)
}

// Status computes every host's desired-versus-actual status.
func (a *API) Status() ([]HostStatus, error) {
	reports, err := a.Store.Reports()
	if err != nil {
		return nil, err
	}
	out := []HostStatus{}
	for _, h := range a.Hosts.List() {
		hs := HostStatus{Host: h, State: StatePending}
		img, err := a.Images.Resolve(h.Image)
		if err != nil {
			hs.State, hs.Error = StateBadImage, err.Error()
		} else {
			hs.Digest = img.Digest
		}
		var last *Report
		for _, mac := range h.MACs {
			if r, ok := reports[mac]; ok && (last == nil || r.Time.After(last.Time)) {
				last = &r
			}
		}
		hs.LastReport = last
		if last != nil && hs.State != StateBadImage {
			hs.State = StateDrift
			if last.Digest == hs.Digest {
				hs.State = StateReady
			}
		}
		out = append(out, hs)
	}
	return out, nil
}

func (a *API) listHosts(w http.ResponseWriter, r *http.Request) {
	st, err := a.Status()
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, st)
}

func (a *API) listDiscovered(w http.ResponseWriter, r *http.Request) {
	d, err := a.Store.DiscoveredMACs()
	if err != nil {
		a.fail(w, err)
		return
	}
	writeJSON(w, d)
}

func (a *API) fail(w http.ResponseWriter, err error) {
	if a.Log != nil {
		a.Log.Error("api", "err", err)
	}
	WriteError(w, http.StatusInternalServerError, err)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
