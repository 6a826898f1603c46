package fleet

import (
	"errors"
	"fmt"
	"time"
)

// ErrQuarantined is returned when asking to reimage a quarantined host.
var ErrQuarantined = errors.New("host is quarantined: release it first")

// ErrState is returned for a rollout action its state does not allow.
var ErrState = errors.New("not allowed in this state")

// Plan is what applying a fleet file would change.
type Plan struct {
	// Revision is the current revision the plan is computed against.
	Revision int64 `json:"revision"`
	// Digest identifies the planned file; Unchanged says it is the
	// current revision already.
	Digest    string        `json:"digest"`
	Unchanged bool          `json:"unchanged"`
	Hosts     int           `json:"hosts"`
	Added     []string      `json:"added"`
	Removed   []string      `json:"removed"`
	Changed   []PlanChange  `json:"changed"`
	Reimage   []PlanReimage `json:"reimage"`
	Policy    Policy        `json:"policy"`
	// PolicyChanged lists the policy fields that differ from the current.
	PolicyChanged []string `json:"policy_changed,omitempty"`
}

// PlanChange is a host whose declaration changes.
type PlanChange struct {
	Name   string   `json:"name"`
	Fields []string `json:"fields"`
}

// PlanReimage is a host the plan would reimage, and why.
type PlanReimage struct {
	Name    string `json:"name"`
	From    string `json:"from,omitempty"`
	FromRef string `json:"from_ref,omitempty"`
	To      string `json:"to"`
	ToRef   string `json:"to_ref"`
	Reason  string `json:"reason"`
	// Skipped says why phoenix will not act on it (quarantined, held).
	Skipped string `json:"skipped,omitempty"`
}

// ApplyResult is the answer to an apply.
type ApplyResult struct {
	Revision int64 `json:"revision"`
	Plan     Plan  `json:"plan"`
}

// Plan validates a fleet file (resolving every image) and says what
// applying it would change, without changing anything.
func (c *Controller) Plan(data []byte) (Plan, error) {
	f, err := ParseFile(data, c.Images)
	if err != nil {
		return Plan{}, err
	}
	if err := c.Load(); err != nil {
		return Plan{}, err
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.plan0(f), nil
}

// plan0 compares f with the current state. The caller holds c.mu.
func (c *Controller) plan0(f *File) Plan {
	pl := Plan{Revision: c.revision, Digest: f.Digest, Hosts: len(f.Hosts), Policy: f.Policy,
		Added: []string{}, Removed: []string{}, Changed: []PlanChange{}, Reimage: []PlanReimage{}}
	pl.Unchanged = c.revision != 0 && f.Digest == c.revDigest
	pl.PolicyChanged = policyDiff(c.policy, f.Policy)
	res := &resolver{src: c.Images, cache: map[string]resolved{}}
	seen := make(map[string]bool, len(f.Hosts))
	for _, h := range f.Hosts {
		seen[h.Name] = true
		old := c.hosts[h.Name]
		ref := h.Image
		if old != nil && old.Override != "" && old.Spec.Image == h.Image {
			ref = old.Override
		}
		img, err := res.resolve(ref)
		if err != nil {
			continue // ParseFile already refused unknown images
		}
		r := PlanReimage{Name: h.Name, To: img.Digest, ToRef: img.Ref()}
		if old == nil {
			pl.Added = append(pl.Added, h.Name)
			r.Reason = "new host"
			pl.Reimage = append(pl.Reimage, r)
			continue
		}
		if fields := specDiff(old.Spec, h); len(fields) > 0 {
			pl.Changed = append(pl.Changed, PlanChange{Name: h.Name, Fields: fields})
		}
		r.From, r.FromRef = old.Assigned, old.AssignedRef
		switch {
		case old.Assigned != img.Digest:
			r.Reason = fmt.Sprintf("image %s → %s", refOr(old.AssignedRef, old.Assigned), img.Ref())
			if old.Assigned == "" {
				r.Reason = "never booted by phoenix"
			}
		case old.Spec.Mode != h.Mode:
			r.Reason = fmt.Sprintf("mode %s → %s", old.Spec.Mode, h.Mode)
		default:
			continue
		}
		switch {
		case old.Quarantined:
			r.Skipped = "quarantined"
		case old.Hold == img.Digest:
			r.Skipped = "held by an aborted or halted rollout"
		}
		pl.Reimage = append(pl.Reimage, r)
	}
	for _, name := range c.names {
		if !seen[name] {
			pl.Removed = append(pl.Removed, name)
		}
	}
	return pl
}

func specDiff(a, b HostSpec) []string {
	var out []string
	if !slicesEqual(a.MACs, b.MACs) {
		out = append(out, "macs")
	}
	if a.Image != b.Image {
		out = append(out, "image")
	}
	if a.Mode != b.Mode {
		out = append(out, "mode")
	}
	if (a.BMC == nil) != (b.BMC == nil) || (a.BMC != nil && *a.BMC != *b.BMC) {
		out = append(out, "bmc")
	}
	a.MACs, b.MACs, a.Image, b.Image, a.Mode, b.Mode, a.BMC, b.BMC = nil, nil, "", "", "", "", nil, nil
	if !a.equal(b) {
		out = append(out, "labels")
	}
	return out
}

func policyDiff(a, b Policy) []string {
	var out []string
	add := func(name string, differ bool) {
		if differ {
			out = append(out, name)
		}
	}
	add("canary", a.Canary != b.Canary)
	add("batch", a.Batch != b.Batch)
	add("max_unavailable", a.MaxUnavailable != b.MaxUnavailable)
	add("boot_deadline", a.BootDeadline != b.BootDeadline)
	add("retries", a.Retries != b.Retries)
	add("failure_budget", a.FailureBudget != b.FailureBudget)
	add("max_age", a.MaxAge != b.MaxAge)
	add("splay", a.Splay != b.Splay)
	add("drift", a.Drift != b.Drift)
	add("boot_override_once", a.BootOverrideOnce != b.BootOverrideOnce)
	return out
}

// Apply validates a fleet file as a whole, commits it as a new revision
// and wakes the reconciler, which starts what the plan says. A file equal
// to the current revision changes nothing. note is kept with the revision.
func (c *Controller) Apply(data []byte, note string) (ApplyResult, error) {
	f, err := ParseFile(data, c.Images)
	if err != nil {
		return ApplyResult{}, err
	}
	if err := c.Load(); err != nil {
		return ApplyResult{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	pl := c.plan0(f)
	if pl.Unchanged {
		return ApplyResult{Revision: c.revision, Plan: pl}, nil
	}
	p := c.newPass(c.now())
	n := c.maxRevision + 1
	seen := make(map[string]bool, len(f.Hosts))
	for _, spec := range f.Hosts {
		seen[spec.Name] = true
		old := c.hosts[spec.Name]
		if old == nil {
			p.hosts[spec.Name] = &HostRecord{Spec: spec}
			p.reindex = true
			continue
		}
		if old.Spec.equal(spec) {
			continue
		}
		m := p.host(spec.Name)
		if m.Spec.Image != spec.Image {
			m.Override, m.Hold = "", ""
		}
		if m.Spec.Mode != spec.Mode && m.Assigned != "" && m.Force == "" {
			m.Force = "mode"
		}
		if !slicesEqual(m.Spec.MACs, spec.MACs) {
			p.reindex = true
		}
		m.Spec = spec
	}
	for _, name := range c.names {
		if seen[name] {
			continue
		}
		p.deleted = append(p.deleted, name)
		// An active entry is closed too: nothing checks a removed host's
		// step any more, and an entry left active would hold the rollout's
		// window (and its end) for good.
		if e := p.getEntry(name); e != nil && (e.Status == HostPending || e.Status == HostActive) {
			m := p.entry(name)
			m.Status, m.Finished, m.Error = HostSuperseded, p.now, "removed from the fleet"
		}
	}
	p.extra.Revision = &Revision{N: n, Time: p.now, Digest: f.Digest, Hosts: len(f.Hosts), Note: note, Data: data}
	p.extra.Current = n
	p.policy, p.revision = &f.Policy, n
	p.event(Event{Kind: "apply", Message: fmt.Sprintf("revision %d applied (%s): %d hosts, %d added, %d removed, %d changed, %d to reimage",
		n, orText(note, "fleet file"), len(f.Hosts), len(pl.Added), len(pl.Removed), len(pl.Changed), len(pl.Reimage))})
	if err := p.commit(); err != nil {
		return ApplyResult{}, fmt.Errorf("apply: %w", err)
	}
	c.maxRevision, c.revDigest = n, f.Digest
	c.Wake()
	return ApplyResult{Revision: n, Plan: pl}, nil
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// ApplyRevision applies an earlier revision's file again, as a new
// revision.
func (c *Controller) ApplyRevision(n int64) (ApplyResult, error) {
	rev, err := c.Store.Revision(n)
	if err != nil {
		return ApplyResult{}, err
	}
	return c.Apply(rev.Data, fmt.Sprintf("back to revision %d", n))
}

// mutate runs fn in a pass of its own under the lock, commits it and
// wakes the reconciler.
func (c *Controller) mutate(fn func(p *pass) error) error {
	if err := c.Load(); err != nil {
		return err
	}
	c.mu.Lock()
	p := c.newPass(c.now())
	err := fn(p)
	if err == nil {
		err = p.commit()
	}
	c.mu.Unlock()
	if err == nil {
		c.Wake()
	}
	return err
}

func (c *Controller) known(name string) error {
	if c.hosts[name] == nil {
		return fmt.Errorf("host %s: %w", name, ErrNotFound)
	}
	return nil
}

// ReimageRequest is the answer to Reimage: the host will be reimaged to
// Target, and a report of it after Requested means it is done.
type ReimageRequest struct {
	Host      string    `json:"host"`
	Target    string    `json:"target"`
	TargetRef string    `json:"target_ref"`
	Requested time.Time `json:"requested"`
}

// Reimage asks for name to be reimaged now (ahead of any rollout, within
// max-unavailable), to imageRef if given (it then stays on it until its
// fleet file image changes), else to its desired image.
func (c *Controller) Reimage(name, imageRef string) (ReimageRequest, error) {
	var out ReimageRequest
	err := c.mutate(func(p *pass) error {
		if err := c.known(name); err != nil {
			return err
		}
		rec := c.hosts[name]
		if rec.Quarantined {
			return fmt.Errorf("host %s: %w", name, ErrQuarantined)
		}
		ref := rec.Spec.Image
		if imageRef != "" {
			ref = imageRef
		} else if rec.Override != "" {
			ref = rec.Override
		}
		img, err := c.Images.Resolve(ref)
		if err != nil {
			return fmt.Errorf("host %s: %w", name, err)
		}
		if err := fitsMode(img, rec.Spec.Mode); err != nil {
			return fmt.Errorf("host %s: %w: %w", name, errBadRequest, err)
		}
		m := p.host(name)
		if imageRef != "" {
			m.Override = imageRef
		}
		m.Desired, m.DesiredRef, m.DesiredErr = img.Digest, img.Ref(), ""
		m.Force, m.Hold = "manual", ""
		p.event(Event{Kind: "reimage-requested", Host: name, Digest: img.Digest, Message: "reimage to " + img.Ref() + " requested"})
		out = ReimageRequest{Host: name, Target: img.Digest, TargetRef: img.Ref(), Requested: p.now}
		return nil
	})
	return out, err
}

// Quarantine takes a host out of phoenix's hands until Release.
func (c *Controller) Quarantine(name, reason string) error {
	return c.mutate(func(p *pass) error {
		if err := c.known(name); err != nil {
			return err
		}
		if c.hosts[name].Quarantined {
			return nil
		}
		if s := c.hosts[name].Step; s != nil && s.Rollout != 0 {
			if e := p.entry(name); e != nil && e.Rollout == s.Rollout {
				e.Status, e.Finished, e.Error = HostAborted, p.now, "quarantined by the operator"
				// A canary taken out before it reported its new image
				// has not passed: the rest must not start on its account.
				if R := p.ro(); e.Canary && R != nil && R.ID == s.Rollout && (R.State == RolloutRunning || R.State == RolloutPaused) {
					c.halt(p, fmt.Sprintf("canary %s quarantined by the operator before it reported its new image", name))
				}
			}
		}
		c.quarantine(p, name, "by the operator: "+orText(reason, "no reason given"))
		return nil
	})
}

// Release returns a quarantined host to phoenix: the next pass reimages it
// if it does not run its desired image. Its kept events stay.
func (c *Controller) Release(name string) error {
	return c.mutate(func(p *pass) error {
		if err := c.known(name); err != nil {
			return err
		}
		if !c.hosts[name].Quarantined {
			return nil
		}
		if c.powering[name] > 0 {
			return fmt.Errorf("host %s: %w: an operator power action on it is still running; release it when that ends", name, ErrState)
		}
		m := p.host(name)
		m.Quarantined, m.QuarantineReason, m.Hold = false, "", ""
		p.event(Event{Kind: "release", Host: name, Message: "released from quarantine"})
		return nil
	})
}

// Rollout actions.
const (
	ActionPause  = "pause"
	ActionResume = "resume"
	ActionAbort  = "abort"
)

// RolloutAction pauses, resumes or aborts rollout id. Pause and abort stop
// new hosts from starting; steps in flight finish either way. Abort holds
// its queued hosts at their old image. Resume of a halted rollout starts
// its failure budget afresh.
func (c *Controller) RolloutAction(id int64, action string) (Rollout, error) {
	var out Rollout
	switch action {
	case ActionPause, ActionResume, ActionAbort:
	default:
		return out, fmt.Errorf("%w: rollout action %q: want pause, resume or abort", errBadRequest, action)
	}
	err := c.mutate(func(p *pass) error {
		cur := c.rollout
		if cur == nil || cur.ID != id {
			return c.resumeOld(p, id, action, &out)
		}
		r := p.mutRollout()
		switch {
		case action == ActionPause && r.State == RolloutRunning:
			r.State = RolloutPaused
		case action == ActionResume && (r.State == RolloutPaused || r.State == RolloutHalted):
			if r.State == RolloutHalted {
				r.BudgetBase, r.Halt = r.Failures, ""
				for _, name := range c.rorder {
					if e := c.rhosts[name]; e.Status == HostPending && c.hosts[name] != nil && c.hosts[name].Hold == e.Target {
						p.host(name).Hold = ""
					}
				}
			}
			r.State = RolloutRunning
		case action == ActionAbort && r.active():
			r.State = RolloutAborted
			for _, name := range c.rorder {
				if e := c.rhosts[name]; e.Status == HostPending {
					m := p.entry(name)
					m.Status, m.Finished = HostAborted, p.now
					if c.hosts[name] != nil {
						p.host(name).Hold = e.Target
					}
				}
			}
		default:
			return fmt.Errorf("rollout %d is %s: cannot %s: %w", id, c.rollout.State, action, ErrState)
		}
		p.event(Event{Kind: "rollout", Rollout: id, Message: fmt.Sprintf("rollout %d: %s → %s", id, c.rollout.State, r.State)})
		out = *r
		return nil
	})
	return out, err
}

// resumeOld handles actions on a rollout that is no longer the current
// one: only resuming a halted one makes sense, and it hands its held hosts
// back to the reconciler.
func (c *Controller) resumeOld(p *pass, id int64, action string, out *Rollout) error {
	r, hosts, err := c.Store.Rollout(id)
	if err != nil {
		return err
	}
	if action != ActionResume || r.State != RolloutHalted {
		return fmt.Errorf("rollout %d is %s and no longer current: cannot %s: %w", id, r.State, action, ErrState)
	}
	r.State, r.Updated = RolloutSuperseded, p.now
	p.extra.Rollouts = append(p.extra.Rollouts, &r)
	for _, e := range hosts {
		if e.Status == HostPending {
			if h := c.hosts[e.Name]; h != nil && h.Hold == e.Target {
				p.host(e.Name).Hold = ""
			}
		}
	}
	p.event(Event{Kind: "rollout", Rollout: id, Message: fmt.Sprintf("rollout %d resumed: its queued hosts join the current rollout", id)})
	*out = r
	return nil
}

// HostStatusDetail is one host with its events, for `host show`.
type HostStatusDetail struct {
	HostStatus
	Events []Event `json:"events"`
	// QuarantineEvents are the events kept when it was quarantined.
	QuarantineEvents []Event `json:"quarantine_events,omitempty"`
}

// Status returns every host's status, sorted by name.
func (c *Controller) Status() []HostStatus {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]HostStatus, 0, len(c.names))
	for _, name := range c.names {
		out = append(out, c.status(c.hosts[name]))
	}
	return out
}

// HostDetail returns one host's status and recent events.
func (c *Controller) HostDetail(name string) (HostStatusDetail, error) {
	c.mu.RLock()
	rec := c.hosts[name]
	var d HostStatusDetail
	if rec != nil {
		d = HostStatusDetail{HostStatus: c.status(rec), QuarantineEvents: rec.QuarantineEvents}
	}
	c.mu.RUnlock()
	if rec == nil {
		return d, fmt.Errorf("host %s: %w", name, ErrNotFound)
	}
	evs, err := c.Store.Events(EventFilter{Host: name, Limit: 50})
	d.Events = evs
	return d, err
}

// status derives the API's view of rec. The caller holds c.mu.
func (c *Controller) status(rec *HostRecord) HostStatus {
	hs := HostStatus{
		Host:        Host{Name: rec.Spec.Name, MACs: rec.Spec.MACs, Image: rec.Spec.Image, SecureBoot: rec.Spec.SecureBoot},
		Digest:      rec.Desired,
		DesiredRef:  rec.DesiredRef,
		Assigned:    rec.Assigned,
		AssignedRef: rec.AssignedRef,
		Mode:        rec.Spec.Mode,
		Labels:      rec.Spec.Labels,
		Override:    rec.Override,
		Step:        rec.Step,
		LastFailure: rec.LastFailure,
		Quarantine:  rec.QuarantineReason,
		ReadyAt:     rec.ReadyAt,
		RefreshAt:   rec.RefreshAt,
	}
	if rec.Spec.BMC != nil {
		hs.BMC = rec.Spec.BMC.Endpoint
	}
	hs.LastReport = c.lastReport(rec)
	if e := c.rhosts[rec.Spec.Name]; e != nil && (e.Status == HostPending || e.Status == HostActive) {
		hs.Rollout = e.Rollout
	}
	assigned := rec.Assigned
	if assigned == "" {
		assigned = rec.Desired
	}
	switch {
	case rec.Quarantined:
		hs.State = StateQuarantined
	case rec.DesiredErr != "":
		hs.State, hs.Error = StateBadImage, rec.DesiredErr
	case rec.Step != nil:
		hs.State = StateReimaging
	case rec.Hold != "" && rec.Hold == rec.Desired && rec.Assigned != rec.Desired:
		hs.State = StateHeld
	case hs.LastReport == nil:
		hs.State = StatePending
	case hs.LastReport.Digest != assigned:
		hs.State = StateDrift
	case assigned != rec.Desired:
		hs.State = StateOutdated
	default:
		hs.State = StateReady
	}
	return hs
}

// Rollouts returns rollout headers, newest first.
func (c *Controller) Rollouts() ([]Rollout, error) { return c.Store.Rollouts() }

// RolloutDetail is a rollout with its hosts.
type RolloutDetail struct {
	Rollout
	HostList []RolloutHost `json:"host_list"`
}

// RolloutShow returns one rollout with its hosts.
func (c *Controller) RolloutShow(id int64) (RolloutDetail, error) {
	r, hosts, err := c.Store.Rollout(id)
	return RolloutDetail{Rollout: r, HostList: hosts}, err
}

// HasHost reports whether name is in the applied fleet file.
func (c *Controller) HasHost(name string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.hosts[name] != nil
}

// HostsUsing returns the hosts that run, or are meant to run, the image
// with manifest digest digest: an image version in use must not be
// removed.
func (c *Controller) HostsUsing(digest string) []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []string
	for _, name := range c.names {
		h := c.hosts[name]
		if h.Assigned == digest || h.Desired == digest || (h.Step != nil && h.Step.Target == digest) {
			out = append(out, name)
		}
	}
	return out
}
