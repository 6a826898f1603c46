package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/phoenixboot/phoenix/boot/httpboot"
	"github.com/phoenixboot/phoenix/images"
)

// BMC powers one host (an adapter over redfish.Client; a fake in tests).
// One that is also an io.Closer (a Redfish session) is closed after each
// reset: real BMCs allow only a few sessions.
type BMC interface {
	// PowerState is the system's power state as the BMC names it ("On",
	// "Off", …).
	PowerState(ctx context.Context) (string, error)
	PowerOn(ctx context.Context) error
	PowerCycle(ctx context.Context) error
	// PowerOff shuts the system down gracefully, forcing it off after
	// graceful (at once when 0). Only an operator's `host power off` uses it.
	PowerOff(ctx context.Context, graceful time.Duration) error
	// SetNetworkBootOnce makes the next boot a network boot.
	SetNetworkBootOnce(ctx context.Context) error
}

// BMCDialer connects to a host's BMC (its endpoint and credential
// reference are in h.BMC, which is never nil here).
type BMCDialer interface {
	Dial(ctx context.Context, h HostSpec) (BMC, error)
}

// Controller is the fleet's reconciler: it owns the desired state (the
// applied fleet file), decides which host boots which image, and rolls
// changes out through the hosts' BMCs. It is level-triggered: every pass
// recomputes desired versus actual for every host, and events (reports,
// applies, channel moves via Wake) only make the next pass come sooner.
//
// It answers the boot server's questions (Lookup, RecordReport,
// RecordDiscovered: httpboot.Hosts and httpboot.Recorder) from memory that
// mirrors the store; the store is written before memory and before any BMC
// is touched.
type Controller struct {
	// Store holds the state; required.
	Store StateStore
	// Images resolves image references; required.
	Images ImageSource
	// BMCs connects to BMCs; nil means no host can be power-controlled, so
	// steps wait for hosts to reboot by themselves.
	BMCs BMCDialer
	// Log receives decisions; nil discards.
	Log *slog.Logger
	// Interval is the period of passes when nothing wakes the controller
	// (channels are re-resolved each pass). Default 30s.
	Interval time.Duration
	// BMCTimeout bounds one host's BMC conversation. Default 2m.
	BMCTimeout time.Duration
	// RetryBackoff is the wait before a host's second attempt, doubled for
	// each further one. Default 10s.
	RetryBackoff time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu       sync.RWMutex
	loaded   bool
	policy   Policy
	revision int64
	// maxRevision is the newest revision number; revDigest the current
	// revision's file digest.
	maxRevision int64
	revDigest   string
	hosts       map[string]*HostRecord
	names       []string // sorted
	byMAC       map[string]string
	reports     map[string]Report
	rollout     *Rollout // the newest rollout, active or not
	rhosts      map[string]*RolloutHost
	rorder      []string // rhosts' names by Order
	nextID      int64
	inflight    int // hosts with a Step
	// powering counts the operator's power actions in flight per host
	// (Power); while one runs, no step starts on the host and it is not
	// released, so the two hands on its power never cross.
	powering map[string]int

	repMu      sync.Mutex
	newReports []Report // reports not yet seen by a pass
	// failures holds the latest failure report of each MAC whose host has
	// a step, until a pass takes it (checkStep); guarded by mu. Failures are not what a
	// host runs, so they never enter reports or the store.
	failures map[string]Report
	// unapplied holds the BMC answers of a pass that failed to commit,
	// for the next pass; guarded by mu.
	unapplied []bmcResult

	wakeCh  chan struct{}
	results chan bmcResult
	runCtx  context.Context
}

func (c *Controller) log() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Log
}

func (c *Controller) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Load reads the state from the store. Run calls it if it was not called;
// call it before serving boot requests so Lookup knows the hosts at once.
// Steps whose reset was being sent when the server stopped are marked
// ResetUnknown: they are never reset again for that attempt.
func (c *Controller) Load() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loaded {
		return nil
	}
	if c.Store == nil || c.Images == nil {
		return errors.New("fleet controller: Store and Images are required")
	}
	c.wakeCh = make(chan struct{}, 1)
	c.results = make(chan bmcResult, 64)
	c.policy = DefaultPolicy
	rev, err := c.Store.CurrentRevision()
	if err != nil {
		return fmt.Errorf("fleet controller: %w", err)
	}
	c.revision = rev
	if rev > 0 {
		r, err := c.Store.Revision(rev)
		if err != nil {
			return fmt.Errorf("fleet controller: %w", err)
		}
		f, err := ParseFile(r.Data, nil)
		if err != nil {
			return fmt.Errorf("fleet controller: revision %d: %w", rev, err)
		}
		c.policy, c.revDigest = f.Policy, r.Digest
	}
	if revs, err := c.Store.Revisions(); err != nil {
		return fmt.Errorf("fleet controller: %w", err)
	} else if len(revs) > 0 {
		c.maxRevision = revs[0].N
	}
	recs, err := c.Store.HostRecords()
	if err != nil {
		return fmt.Errorf("fleet controller: %w", err)
	}
	c.hosts = make(map[string]*HostRecord, len(recs))
	for i := range recs {
		c.hosts[recs[i].Spec.Name] = &recs[i]
	}
	c.reindex()
	if c.reports, err = c.Store.Reports(); err != nil {
		return fmt.Errorf("fleet controller: %w", err)
	}
	rollouts, err := c.Store.Rollouts()
	if err != nil {
		return fmt.Errorf("fleet controller: %w", err)
	}
	c.nextID = 1
	c.rhosts = map[string]*RolloutHost{}
	c.rorder = nil
	if len(rollouts) > 0 {
		c.nextID = rollouts[0].ID + 1
		r, hosts, err := c.Store.Rollout(rollouts[0].ID)
		if err != nil {
			return fmt.Errorf("fleet controller: %w", err)
		}
		c.rollout = &r
		for i := range hosts {
			c.rhosts[hosts[i].Name] = &hosts[i]
			c.rorder = append(c.rorder, hosts[i].Name)
		}
	}
	p := c.newPass(c.now())
	for _, name := range c.names {
		if s := c.hosts[name].Step; s != nil && s.Reset == ResetSending {
			m := p.host(name)
			m.Step.Reset = ResetUnknown
			p.event(Event{Kind: "resume", Host: name, Rollout: s.Rollout, Digest: s.Target,
				Message: fmt.Sprintf("server restarted while the reset of attempt %d was being sent; not sending it again, waiting until %s", s.Attempt, s.Deadline.Format(time.RFC3339))})
		}
	}
	if err := p.commit(); err != nil {
		return fmt.Errorf("fleet controller: %w", err)
	}
	c.loaded = true
	return nil
}

// reindex rebuilds names, byMAC and the in-flight count from hosts.
func (c *Controller) reindex() {
	c.names = c.names[:0]
	c.byMAC = make(map[string]string, len(c.hosts))
	c.inflight = 0
	for name, h := range c.hosts {
		c.names = append(c.names, name)
		for _, m := range h.Spec.MACs {
			c.byMAC[m] = name
		}
		if h.Step != nil {
			c.inflight++
		}
	}
	sort.Strings(c.names)
}

// Wake asks for a pass now: call it when a channel moves.
func (c *Controller) Wake() {
	if c.wakeCh == nil {
		return
	}
	select {
	case c.wakeCh <- struct{}{}:
	default:
	}
}

// Run reconciles until ctx is done, then returns nil. BMC calls in flight
// when ctx ends are abandoned; their steps resume as ResetUnknown.
func (c *Controller) Run(ctx context.Context) error {
	if err := c.Load(); err != nil {
		return err
	}
	c.mu.Lock()
	c.runCtx = ctx
	c.mu.Unlock()
	interval := orDefault(c.Interval, 30*time.Second)
	timer := time.NewTimer(0)
	defer timer.Stop()
	var results []bmcResult
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.wakeCh:
		case r := <-c.results:
			results = append(results, r)
		case <-timer.C:
		}
	drain:
		for {
			select {
			case r := <-c.results:
				results = append(results, r)
			default:
				break drain
			}
		}
		next := c.reconcile(ctx, results)
		results = results[:0]
		wait := interval
		if !next.IsZero() {
			wait = min(wait, max(time.Until(next), time.Millisecond))
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// Lookup answers which image a MAC boots (httpboot.Hosts): the host's
// assigned digest, which moves only when its step starts. A disk-mode
// host whose disk holds its assigned image boots locally (imageRef "").
func (c *Controller) Lookup(mac net.HardwareAddr) (host, imageRef string, ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	name, ok := c.byMAC[mac.String()]
	if !ok {
		return "", "", false
	}
	rec := c.hosts[name]
	ref := rec.Assigned
	if ref == "" {
		// Never assigned: nothing older to keep serving.
		ref = rec.Desired
	}
	if ref == "" {
		// Unresolvable: the boot server's error script will say why.
		return name, rec.Spec.Image, true
	}
	if rec.Spec.Mode == ModeDisk && rec.Step == nil {
		if rep := c.lastReport(rec); rep != nil && rep.Digest == ref {
			return name, "", true
		}
	}
	return name, ref, true
}

// SecureBoot reports whether mac belongs to a host whose fleet file says
// secure_boot (for dhcp.Config.SecureBoot): its firmware gets the signed
// shim instead of iPXE.
func (c *Controller) SecureBoot(mac net.HardwareAddr) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	name, ok := c.byMAC[mac.String()]
	return ok && c.hosts[name].Spec.SecureBoot
}

// RecordReport stores a report and wakes the controller
// (httpboot.Recorder). A failure report (r.Error) is not stored: it only
// ends the host's current attempt, at once rather than at its deadline.
func (c *Controller) RecordReport(ctx context.Context, r httpboot.Report) error {
	if r.Error == "" {
		if err := c.Store.RecordReport(ctx, r); err != nil {
			return err
		}
	}
	// Queued for the next pass rather than waiting for c.mu, which a pass
	// holds while it commits: a report never waits for a decision.
	c.repMu.Lock()
	c.newReports = append(c.newReports, Report{MAC: r.MAC.String(), Host: r.Host, Digest: r.Digest, BootID: r.BootID, RemoteAddr: r.RemoteAddr, Time: r.Time, Error: r.Error})
	c.repMu.Unlock()
	c.Wake()
	return nil
}

// mergeReports moves queued reports into c.reports. The caller holds c.mu.
func (c *Controller) mergeReports() {
	c.repMu.Lock()
	queued := c.newReports
	c.newReports = nil
	c.repMu.Unlock()
	for _, r := range queued {
		if r.Error != "" {
			// Only hosts being changed: anyone may post, and a failure
			// matters only to a step (checkStep takes it on the next
			// pass), so the map holds at most the hosts in flight.
			if name, known := c.byMAC[r.MAC]; known && c.hosts[name] != nil && c.hosts[name].Step != nil {
				if c.failures == nil {
					c.failures = map[string]Report{}
				}
				c.failures[r.MAC] = r
			}
			continue
		}
		old, ok := c.reports[r.MAC]
		if !ok && len(c.reports) >= maxReports {
			continue // as the store: a flood of made-up MACs
		}
		if !ok || !r.Time.Before(old.Time) {
			c.reports[r.MAC] = r
		}
	}
}

// takeFailure removes the failure reports of rec's MACs and returns the
// one that ends step s, if any: sent after the step started, once its
// reset was sent, about the image the step boots. Older ones are stale.
func (c *Controller) takeFailure(rec *HostRecord, s *Step) *Report {
	var found *Report
	for _, m := range rec.Spec.MACs {
		f, ok := c.failures[m]
		if !ok {
			continue
		}
		delete(c.failures, m)
		if !f.Time.Before(s.StartedAt) && s.Reset != ResetSending && f.Digest == s.Target {
			found = &f
		}
	}
	return found
}

// RecordDiscovered registers an unknown MAC (httpboot.Recorder).
func (c *Controller) RecordDiscovered(ctx context.Context, mac net.HardwareAddr, remoteAddr string) error {
	return c.Store.RecordDiscovered(ctx, mac, remoteAddr)
}

// lastReport is the newest report of any of rec's MACs.
func (c *Controller) lastReport(rec *HostRecord) *Report {
	var last *Report
	for _, m := range rec.Spec.MACs {
		if r, ok := c.reports[m]; ok && (last == nil || r.Time.After(last.Time)) {
			last = &r
		}
	}
	return last
}

// pass is one decision: copies of what it changes, written together by
// commit, installed in memory only once the store has them.
type pass struct {
	c       *Controller
	now     time.Time
	hosts   map[string]*HostRecord
	deleted []string
	rollout *Rollout // a copy of c.rollout (or a new one) when changed
	rhosts  map[string]*RolloutHost
	newRH   []string // names added to rollout, in order
	replace bool     // rollout is a new one: rhosts/rorder start empty
	extra   Change   // writes for rollouts no longer current
	events  []Event
	jobs    []bmcJob
	next    time.Time
	// set by apply
	policy   *Policy
	revision int64
	reindex  bool
}

func (c *Controller) newPass(now time.Time) *pass {
	return &pass{c: c, now: now, hosts: map[string]*HostRecord{}, rhosts: map[string]*RolloutHost{}}
}

// get returns the host as this pass sees it (read only).
func (p *pass) get(name string) *HostRecord {
	if h, ok := p.hosts[name]; ok {
		return h
	}
	return p.c.hosts[name]
}

// host returns a copy of the host for this pass to change.
func (p *pass) host(name string) *HostRecord {
	if h, ok := p.hosts[name]; ok {
		return h
	}
	h := p.c.hosts[name].clone()
	p.hosts[name] = h
	return h
}

func (p *pass) ro() *Rollout {
	if p.rollout != nil {
		return p.rollout
	}
	return p.c.rollout
}

func (p *pass) mutRollout() *Rollout {
	if p.rollout == nil {
		cp := *p.c.rollout
		p.rollout = &cp
	}
	p.rollout.Updated = p.now
	return p.rollout
}

func (p *pass) getEntry(name string) *RolloutHost {
	if e, ok := p.rhosts[name]; ok {
		return e
	}
	if p.replace {
		return nil
	}
	return p.c.rhosts[name]
}

func (p *pass) entry(name string) *RolloutHost {
	if e, ok := p.rhosts[name]; ok {
		return e
	}
	e := p.getEntry(name)
	if e == nil {
		return nil
	}
	cp := *e
	p.rhosts[name] = &cp
	return &cp
}

// entries returns the current rollout's host names in order.
func (p *pass) order() []string {
	if p.replace {
		return p.newRH
	}
	if len(p.newRH) == 0 {
		return p.c.rorder
	}
	return append(append([]string(nil), p.c.rorder...), p.newRH...)
}

func (p *pass) event(e Event) {
	e.Time = p.now
	p.events = append(p.events, e)
	log := p.c.log().With("event", e.Kind)
	if e.Host != "" {
		log = log.With("host", e.Host)
	}
	if e.Rollout != 0 {
		log = log.With("rollout", e.Rollout)
	}
	if e.Digest != "" {
		log = log.With("digest", e.Digest)
	}
	log.Info(e.Message)
}

func (p *pass) wakeAt(t time.Time) {
	if !t.IsZero() && (p.next.IsZero() || t.Before(p.next)) {
		p.next = t
	}
}

// commit writes the pass and installs it in memory. The caller holds c.mu.
func (p *pass) commit() error {
	c := p.c
	ch := p.extra
	for _, h := range p.hosts {
		ch.Hosts = append(ch.Hosts, h)
	}
	ch.DeleteHosts = append(ch.DeleteHosts, p.deleted...)
	if p.rollout != nil {
		ch.Rollouts = append(ch.Rollouts, p.rollout)
	}
	for _, e := range p.rhosts {
		ch.RolloutHosts = append(ch.RolloutHosts, e)
	}
	ch.Events = p.events
	if err := c.Store.Commit(ch); err != nil {
		return err
	}
	for name, h := range p.hosts {
		old := c.hosts[name]
		if old != nil && old.Step != nil {
			c.inflight--
		}
		if h.Step != nil {
			c.inflight++
		}
		c.hosts[name] = h
	}
	for _, name := range p.deleted {
		if old := c.hosts[name]; old != nil && old.Step != nil {
			c.inflight--
		}
		delete(c.hosts, name)
	}
	if p.rollout != nil {
		if p.replace {
			c.rhosts = map[string]*RolloutHost{}
			c.rorder = nil
		}
		c.rollout = p.rollout
		if p.rollout.ID >= c.nextID {
			c.nextID = p.rollout.ID + 1
		}
	}
	for name, e := range p.rhosts {
		c.rhosts[name] = e
	}
	c.rorder = append(c.rorder, p.newRH...)
	if p.policy != nil {
		c.policy = *p.policy
	}
	if p.revision != 0 {
		c.revision = p.revision
	}
	if p.reindex || len(p.deleted) > 0 {
		c.reindex()
	}
	return nil
}

// resolver caches image resolution for one pass.
type resolver struct {
	src   ImageSource
	cache map[string]resolved
}

type resolved struct {
	img images.Image
	err error
}

func (r *resolver) resolve(ref string) (images.Image, error) {
	if v, ok := r.cache[ref]; ok {
		return v.img, v.err
	}
	img, err := r.src.Resolve(ref)
	r.cache[ref] = resolved{img, err}
	return img, err
}

// need is a host that should be reimaged.
type need struct {
	name, target, ref, reason string
	manual                    bool
}

// reconcile runs one pass, taking in the BMC answers that came since the
// last one, and dispatches the BMC work it decided. It returns when the
// next pass is due at the latest (zero: no hurry).
func (c *Controller) reconcile(ctx context.Context, results []bmcResult) time.Time {
	c.mu.Lock()
	p := c.newPass(c.now())
	c.mergeReports()
	results = append(c.unapplied, results...)
	c.unapplied = nil
	failures := maps.Clone(c.failures) // checkStep takes from it
	for _, r := range results {
		c.applyResult(p, r)
	}
	c.evaluate(p)
	err := p.commit()
	if err != nil {
		// Nothing of the pass is kept: the BMC answers and failure
		// reports it took in go to the next one, or steps would wait for
		// their deadlines instead.
		c.unapplied, c.failures = slices.Clone(results), failures
	}
	c.mu.Unlock()
	if err != nil {
		c.log().Error("fleet pass not committed; retrying", "err", err)
		return c.now().Add(time.Second)
	}
	for _, j := range p.jobs {
		c.dispatch(ctx, j)
	}
	return p.next
}

// evaluate is the level-triggered heart: desired versus actual for every
// host, then rollout membership, then which steps may start.
func (c *Controller) evaluate(p *pass) {
	res := &resolver{src: c.Images, cache: map[string]resolved{}}
	var needs []need
	for _, name := range c.names {
		rec := p.get(name)
		ref := rec.Spec.Image
		if rec.Override != "" {
			ref = rec.Override
		}
		img, err := res.resolve(ref)
		if err == nil {
			// A channel may move to an image without a disk image. (Apply
			// and Reimage refuse this up front.)
			err = fitsMode(img, rec.Spec.Mode)
		}
		desired, desiredRef, desiredErr := img.Digest, img.Ref(), ""
		if err != nil {
			desired, desiredRef, desiredErr = "", "", err.Error()
		}
		if rec.Desired != desired || rec.DesiredRef != desiredRef || rec.DesiredErr != desiredErr {
			m := p.host(name)
			m.Desired, m.DesiredRef, m.DesiredErr = desired, desiredRef, desiredErr
			if desiredErr != "" {
				p.event(Event{Kind: "bad-image", Host: name, Message: desiredErr})
			}
			rec = m
		}
		rep := c.lastReport(rec)
		if rec.Step != nil {
			c.checkStep(p, name, rep)
			continue
		}
		if rec.Quarantined || desired == "" {
			continue
		}
		if rec.Hold != "" && rec.Hold != desired {
			p.host(name).Hold = ""
			rec = p.get(name)
		}
		converged := rep != nil && rep.Digest == desired && (rec.Assigned == desired || rec.Assigned == "")
		switch {
		case converged && rec.Force == "":
			if rec.Assigned == "" || !rec.ReadyAt.Equal(rep.Time) {
				m := p.host(name)
				if m.Assigned == "" {
					p.event(Event{Kind: "ready", Host: name, Digest: desired, Message: "first report of its image " + desiredRef})
				}
				m.Assigned, m.AssignedRef = desired, desiredRef
				c.markReady(p, m, rep.Time)
				rec = m
			}
			if c.policy.MaxAge > 0 && (rec.RefreshAt.IsZero() || rec.RefreshAt.After(rec.ReadyAt.Add(c.policy.MaxAge+c.policy.Splay))) {
				// Ready from before max_age was set or shortened: its
				// refresh time follows the policy now in force.
				m := p.host(name)
				c.markReady(p, m, m.ReadyAt)
				rec = m
			}
			if c.policy.MaxAge > 0 && !rec.RefreshAt.IsZero() {
				if p.now.Before(rec.RefreshAt) {
					p.wakeAt(rec.RefreshAt)
				} else {
					m := p.host(name)
					m.Force = "age"
					p.event(Event{Kind: "age", Host: name, Digest: desired, Message: fmt.Sprintf("running since %s, older than max age %s", rec.ReadyAt.Format(time.RFC3339), c.policy.MaxAge)})
					rec = m
				}
			}
		case rep != nil && rec.Assigned != "" && rep.Digest != rec.Assigned && rep.Time.After(rec.DriftSeen):
			m := p.host(name)
			m.DriftSeen = rep.Time
			msg := fmt.Sprintf("reports %s, assigned %s", rep.Digest, rec.Assigned)
			if c.policy.Drift == DriftReimage && rec.Force == "" {
				m.Force = "drift"
				msg += ": reimaging"
			}
			p.event(Event{Kind: "drift", Host: name, Digest: rep.Digest, Message: msg})
			rec = m
		}
		var reason string
		switch {
		case rec.Force != "":
			reason = rec.Force
		case rec.Assigned == "":
			reason = "new host"
		case rec.Assigned != desired:
			reason = fmt.Sprintf("image %s → %s", refOr(rec.AssignedRef, rec.Assigned), desiredRef)
		default:
			continue
		}
		if rec.Hold == desired && rec.Force == "" {
			continue
		}
		needs = append(needs, need{name: name, target: desired, ref: desiredRef, reason: reason, manual: rec.Force == "manual"})
	}
	c.plan(p, needs)
	c.schedule(p)
}

func refOr(ref, digest string) string {
	if ref != "" {
		return ref
	}
	return shortDigest(digest)
}

func shortDigest(d string) string {
	if h, ok := strings.CutPrefix(d, "sha256:"); ok && len(h) > 12 {
		return h[:12]
	}
	return d
}

// markReady records that m runs its assigned image since t.
func (c *Controller) markReady(p *pass, m *HostRecord, t time.Time) {
	m.ReadyAt = t
	m.RefreshAt = time.Time{}
	if c.policy.MaxAge > 0 {
		splay := time.Duration(0)
		if c.policy.Splay > 0 {
			splay = rand.N(c.policy.Splay)
		}
		m.RefreshAt = t.Add(c.policy.MaxAge + splay)
	}
}

// plan puts the hosts that need a reimage into the current rollout, or
// into a new one when there is none running. A halted rollout keeps its
// queued hosts (they are held, see halt) and gives way to a new one for
// whatever else needs doing.
func (c *Controller) plan(p *pass, needs []need) {
	R := p.ro()
	if !R.active() || R.State == RolloutHalted {
		R = nil
	}
	var adds []need
	inNeed := make(map[string]bool, len(needs))
	for _, n := range needs {
		if n.manual {
			continue // started directly by schedule
		}
		if p.get(n.name).Hold == n.target {
			continue // held by a halt later in this same pass
		}
		inNeed[n.name] = true
		if R != nil {
			if e := p.getEntry(n.name); e != nil && e.Target == n.target && (e.Status == HostPending || e.Status == HostActive) {
				continue
			}
		}
		adds = append(adds, n)
	}
	if R != nil {
		// Queued hosts that no longer need anything leave the rollout.
		for _, name := range p.order() {
			e := p.getEntry(name)
			if e.Status != HostPending || inNeed[name] {
				continue
			}
			m := p.entry(name)
			m.Finished = p.now
			if h := p.get(name); h != nil && h.Assigned == e.Target && !h.Quarantined {
				m.Status, m.Error = HostDone, "already current"
				p.mutRollout().Done++
			} else {
				m.Status = HostSuperseded
			}
		}
	}
	if len(adds) == 0 {
		return
	}
	if R == nil {
		R = &Rollout{ID: c.nextID, State: RolloutRunning, Revision: c.revision, Policy: c.policy, Created: p.now, Updated: p.now}
		if p.rollout != nil {
			// The current rollout changed in this pass (it halted): keep
			// its writes.
			p.extra.Rollouts = append(p.extra.Rollouts, p.rollout)
		}
		for _, e := range p.rhosts {
			p.extra.RolloutHosts = append(p.extra.RolloutHosts, e)
		}
		R.Reason = summarize(adds)
		p.rollout, p.replace, p.rhosts, p.newRH = R, true, map[string]*RolloutHost{}, nil
		p.event(Event{Kind: "rollout", Rollout: R.ID, Message: fmt.Sprintf("rollout %d started for %d hosts: %s", R.ID, len(adds), R.Reason)})
	}
	R = p.mutRollout()
	for _, n := range adds {
		if e := p.entry(n.name); e != nil {
			if e.Status == HostDone {
				R.Done--
			}
			e.Target, e.TargetRef, e.Reason, e.Status, e.Error, e.Attempts = n.target, n.ref, n.reason, HostPending, "", 0
			continue
		}
		e := &RolloutHost{Rollout: R.ID, Name: n.name, Order: R.Hosts, Target: n.target, TargetRef: n.ref, Reason: n.reason, Status: HostPending}
		e.Canary = p.replace && R.Hosts < R.Policy.Canary
		R.Hosts++
		p.rhosts[n.name] = e
		p.newRH = append(p.newRH, n.name)
	}
}

func summarize(adds []need) string {
	counts := map[string]int{}
	var keys []string
	for _, n := range adds {
		if counts[n.reason] == 0 {
			keys = append(keys, n.reason)
		}
		counts[n.reason]++
	}
	parts := make([]string, 0, len(keys))
	for i, k := range keys {
		if i == 3 {
			parts = append(parts, "…")
			break
		}
		parts = append(parts, fmt.Sprintf("%s (%d)", k, counts[k]))
	}
	return strings.Join(parts, ", ")
}

// schedule starts steps: manual reimages first, then the rollout's
// canaries alone, then the rest, never more than MaxUnavailable hosts in
// flight and never more than Batch of this rollout's.
func (c *Controller) schedule(p *pass) {
	inflight := c.inflight
	for name, h := range p.hosts {
		old := c.hosts[name]
		if old != nil && old.Step != nil {
			inflight--
		}
		if h.Step != nil {
			inflight++
		}
	}
	maxU := max(1, c.policy.MaxUnavailable)
	for _, name := range c.names {
		rec := p.get(name)
		if rec.Force != "manual" || rec.Step != nil || rec.Quarantined || rec.Desired == "" || c.powering[name] > 0 {
			continue
		}
		if inflight >= maxU {
			break
		}
		c.startStep(p, name, 0, "manual")
		inflight++
	}
	R := p.ro()
	if R == nil || R.State != RolloutRunning {
		return
	}
	var pending, active, canaryLeft int
	order := p.order()
	for _, name := range order {
		e := p.getEntry(name)
		switch e.Status {
		case HostPending:
			pending++
		case HostActive:
			active++
		}
		if e.Canary && (e.Status == HostPending || e.Status == HostActive) {
			canaryLeft++
		}
	}
	if pending == 0 && active == 0 {
		m := p.mutRollout()
		m.State = RolloutDone
		p.event(Event{Kind: "rollout", Rollout: m.ID, Message: fmt.Sprintf("rollout %d done: %d hosts, %d failed", m.ID, m.Hosts, m.Failures)})
		return
	}
	window := c.policy.window()
	for _, name := range order {
		if pending == 0 || inflight >= maxU || active >= window {
			break
		}
		e := p.getEntry(name)
		if e.Status != HostPending {
			continue
		}
		if canaryLeft > 0 && !e.Canary {
			break
		}
		rec := p.get(name)
		if rec == nil || rec.Quarantined || rec.Step != nil || c.powering[name] > 0 {
			continue
		}
		c.startStep(p, name, R.ID, e.Reason)
		pending--
		active++
		inflight++
	}
}

// fitsMode says why img cannot serve a host in mode, or nil. A disk-mode
// host needs a disk image: booting one without would install nothing, and
// the host would then be told to boot its unchanged disk.
func fitsMode(img images.Image, mode string) error {
	if mode != ModeDisk {
		return nil
	}
	if _, ok := img.Artifact(images.RoleDisk); !ok {
		return fmt.Errorf("image %s has no disk image, and the host runs in disk mode", img.Ref())
	}
	return nil
}

// startStep writes the intent to reimage name to its desired image.
func (c *Controller) startStep(p *pass, name string, rollout int64, reason string) {
	m := p.host(name)
	m.Force, m.Hold = "", ""
	m.Step = &Step{Rollout: rollout, Target: m.Desired, TargetRef: m.DesiredRef, Reason: reason, Attempt: 1, New: m.Assigned == ""}
	m.Assigned, m.AssignedRef = m.Desired, m.DesiredRef
	c.beginAttempt(p, m)
	if rollout != 0 {
		e := p.entry(name)
		e.Status, e.Started, e.Attempts = HostActive, p.now, 1
	}
	p.event(Event{Kind: "reimage", Host: name, Rollout: rollout, Digest: m.Desired, Message: fmt.Sprintf("reimaging to %s (%s)", m.DesiredRef, reason)})
}

// beginAttempt arms the current attempt of m's step: deadline, and the
// reset to send once the intent is committed.
func (c *Controller) beginAttempt(p *pass, m *HostRecord) {
	s := m.Step
	s.StartedAt = p.now
	s.ResetAt = time.Time{}
	s.NotBefore = time.Time{}
	s.Deadline = p.now.Add(orDefault(c.policy.BootDeadline, DefaultPolicy.BootDeadline))
	p.wakeAt(s.Deadline)
	if m.Spec.BMC == nil || c.BMCs == nil {
		s.Reset = ResetNone
		return
	}
	s.Reset = ResetSending
	p.jobs = append(p.jobs, bmcJob{name: m.Spec.Name, spec: m.Spec, override: c.policy.BootOverrideOnce,
		rollout: s.Rollout, attempt: s.Attempt, started: s.StartedAt})
}

// checkStep follows a host's step: success, failure, retry, deadline.
func (c *Controller) checkStep(p *pass, name string, rep *Report) {
	rec := p.get(name)
	s := rec.Step
	if rec.Desired != "" && rec.Desired != s.Target {
		// The desired image moved mid-step. The reset already sent (or
		// owed) stays the only one: the host fetches its script after
		// the reset, so it boots the new target.
		m := p.host(name)
		m.Step.Target, m.Step.TargetRef = m.Desired, m.DesiredRef
		m.Assigned, m.AssignedRef = m.Desired, m.DesiredRef
		m.Step.Deadline = p.now.Add(orDefault(c.policy.BootDeadline, DefaultPolicy.BootDeadline))
		if s.Rollout != 0 {
			if e := p.entry(name); e != nil && e.Rollout == s.Rollout {
				e.Target, e.TargetRef = m.Desired, m.DesiredRef
			}
		}
		p.event(Event{Kind: "retarget", Host: name, Rollout: s.Rollout, Digest: m.Desired, Message: "desired image changed during the step: now " + m.DesiredRef})
		rec, s = m, m.Step
	}
	switch s.Reset {
	case ResetWaiting:
		if p.now.Before(s.NotBefore) {
			p.wakeAt(s.NotBefore)
			return
		}
		m := p.host(name)
		c.beginAttempt(p, m)
		p.event(Event{Kind: "retry", Host: name, Rollout: s.Rollout, Digest: s.Target, Message: fmt.Sprintf("attempt %d", s.Attempt)})
		return
	}
	if f := c.takeFailure(rec, s); f != nil {
		c.attemptFailed(p, name, "host reported: "+f.Error)
		return
	}
	if rep != nil && !rep.Time.Before(s.StartedAt) && s.Reset != ResetSending {
		if rep.Digest == s.Target {
			c.finishStep(p, name, rep)
			return
		}
		if s.Reset == ResetSent || s.Reset == ResetNone {
			c.attemptFailed(p, name, fmt.Sprintf("reported %s instead of %s", rep.Digest, s.Target))
			return
		}
	}
	if rep != nil && rep.Digest == s.Target && (!rep.Time.Before(s.StartedAt) || s.New) {
		c.finishStep(p, name, rep)
		return
	}
	if !p.now.Before(s.Deadline) {
		c.attemptFailed(p, name, fmt.Sprintf("no report of %s within %s (reset %s)", refOr(s.TargetRef, s.Target), orDefault(c.policy.BootDeadline, DefaultPolicy.BootDeadline), s.Reset))
		return
	}
	p.wakeAt(s.Deadline)
}

func (c *Controller) finishStep(p *pass, name string, rep *Report) {
	m := p.host(name)
	s := m.Step
	m.Step = nil
	m.Assigned, m.AssignedRef = s.Target, s.TargetRef
	m.LastFailure = ""
	m.DriftSeen = rep.Time
	c.markReady(p, m, rep.Time)
	if e := p.entry(name); e != nil && e.Rollout == s.Rollout && s.Rollout != 0 && e.Status == HostActive {
		e.Status, e.Finished = HostDone, p.now
		if R := p.ro(); R != nil && R.ID == s.Rollout {
			p.mutRollout().Done++
		}
	}
	p.event(Event{Kind: "ready", Host: name, Rollout: s.Rollout, Digest: s.Target,
		Message: fmt.Sprintf("reports %s after %s (attempt %d)", refOr(s.TargetRef, s.Target), rep.Time.Sub(s.StartedAt).Round(time.Millisecond), s.Attempt)})
}

// attemptFailed retries the host's step, or quarantines the host when it
// has no retries left, halting the rollout past its failure budget.
func (c *Controller) attemptFailed(p *pass, name, why string) {
	m := p.host(name)
	s := m.Step
	p.event(Event{Kind: "attempt-failed", Host: name, Rollout: s.Rollout, Digest: s.Target, Message: fmt.Sprintf("attempt %d: %s", s.Attempt, why)})
	m.LastFailure = why
	if s.Attempt <= c.policy.Retries {
		backoff := orDefault(c.RetryBackoff, 10*time.Second) << min(s.Attempt-1, 6)
		s.Attempt++
		s.Reset, s.Error, s.NotBefore = ResetWaiting, why, p.now.Add(backoff)
		p.wakeAt(s.NotBefore)
		if e := p.entry(name); e != nil && e.Rollout == s.Rollout {
			e.Attempts, e.Error = s.Attempt, why
		}
		return
	}
	c.quarantine(p, name, fmt.Sprintf("failed %d attempts: %s", s.Attempt, why))
	if s.Rollout == 0 {
		return
	}
	e := p.entry(name)
	if e == nil || e.Rollout != s.Rollout {
		return
	}
	e.Status, e.Error, e.Finished = HostFailed, why, p.now
	R := p.ro()
	if R == nil || R.ID != s.Rollout {
		return
	}
	r := p.mutRollout()
	r.Failures++
	if r.State != RolloutRunning && r.State != RolloutPaused {
		return
	}
	switch {
	case e.Canary:
		c.halt(p, fmt.Sprintf("canary %s failed: %s", name, why))
	case r.Failures-r.BudgetBase > r.Policy.FailureBudget:
		c.halt(p, fmt.Sprintf("%d hosts failed, more than the failure budget of %d", r.Failures-r.BudgetBase, r.Policy.FailureBudget))
	}
}

// halt stops the current rollout from starting hosts. Its queued hosts
// are held at their target, so that no other rollout picks them up until
// the rollout is resumed or their desired image changes.
func (c *Controller) halt(p *pass, why string) {
	r := p.mutRollout()
	r.State, r.Halt = RolloutHalted, why
	for _, name := range p.order() {
		if e := p.getEntry(name); e.Status == HostPending && p.get(name) != nil {
			p.host(name).Hold = e.Target
		}
	}
	p.event(Event{Kind: "halt", Rollout: r.ID, Message: fmt.Sprintf("rollout %d halted: %s", r.ID, why)})
}

// quarantine takes the host out of phoenix's hands: no step, no reset,
// until released. Its recent events are kept with it.
func (c *Controller) quarantine(p *pass, name, why string) {
	m := p.host(name)
	m.Step = nil
	m.Quarantined, m.QuarantineReason, m.QuarantinedAt = true, why, p.now
	m.Force = ""
	p.event(Event{Kind: "quarantine", Host: name, Message: why})
	evs, err := c.Store.Events(EventFilter{Host: name, Limit: 50})
	if err != nil {
		c.log().Warn("cannot keep events of quarantined host", "host", name, "err", err)
	}
	var mine []Event
	for i := len(p.events) - 1; i >= 0; i-- {
		if p.events[i].Host == name {
			mine = append(mine, p.events[i])
		}
	}
	m.QuarantineEvents = append(mine, evs...)
}

// bmcJob is one reset to send, identified by its step attempt so that a
// late answer for an older attempt is ignored.
type bmcJob struct {
	name     string
	spec     HostSpec
	override bool
	rollout  int64
	attempt  int
	started  time.Time
}

type bmcResult struct {
	job    bmcJob
	action string
	err    error
	at     time.Time
}

func (c *Controller) dispatch(ctx context.Context, j bmcJob) {
	go func() {
		bctx, cancel := context.WithTimeout(ctx, orDefault(c.BMCTimeout, 2*time.Minute))
		action, err := c.reset(bctx, j)
		cancel()
		select {
		case c.results <- bmcResult{job: j, action: action, err: err, at: c.now()}:
		case <-ctx.Done():
		}
	}()
}

// reset sends one host its reset: the one-time network boot override if
// configured, then power on (when off) or a power cycle.
func (c *Controller) reset(ctx context.Context, j bmcJob) (string, error) {
	b, err := c.BMCs.Dial(ctx, j.spec)
	if err != nil {
		return "", fmt.Errorf("bmc %s: %w", j.spec.BMC.Endpoint, err)
	}
	// A BMC connection may hold a session; real BMCs allow only a few, so
	// every reset logs out again.
	if cl, ok := b.(io.Closer); ok {
		defer cl.Close()
	}
	if j.override {
		if err := b.SetNetworkBootOnce(ctx); err != nil {
			return "", fmt.Errorf("bmc %s: boot override: %w", j.spec.BMC.Endpoint, err)
		}
	}
	st, err := b.PowerState(ctx)
	if err != nil {
		return "", fmt.Errorf("bmc %s: power state: %w", j.spec.BMC.Endpoint, err)
	}
	if strings.EqualFold(st, "off") {
		if err := b.PowerOn(ctx); err != nil {
			return "", fmt.Errorf("bmc %s: power on: %w", j.spec.BMC.Endpoint, err)
		}
		return "power-on", nil
	}
	if err := b.PowerCycle(ctx); err != nil {
		return "", fmt.Errorf("bmc %s: power cycle: %w", j.spec.BMC.Endpoint, err)
	}
	return "power-cycle", nil
}

// applyResult takes in one BMC answer. The caller holds c.mu.
func (c *Controller) applyResult(p *pass, r bmcResult) {
	rec := p.get(r.job.name)
	if rec == nil || rec.Step == nil || rec.Step.Reset != ResetSending || rec.Step.Attempt != r.job.attempt ||
		rec.Step.Rollout != r.job.rollout || !rec.Step.StartedAt.Equal(r.job.started) {
		return // an answer for a step that has moved on
	}
	if r.err != nil {
		c.attemptFailed(p, r.job.name, r.err.Error())
		return
	}
	m := p.host(r.job.name)
	m.Step.Reset, m.Step.ResetAt = ResetSent, r.at
	p.event(Event{Kind: "reset", Host: r.job.name, Rollout: r.job.rollout, Digest: m.Step.Target, Message: fmt.Sprintf("%s sent (attempt %d)", r.action, r.job.attempt)})
}
