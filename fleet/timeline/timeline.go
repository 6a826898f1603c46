// Package timeline follows each network boot through its phases — DHCP,
// TFTP (or UEFI HTTP boot), iPXE script, kernel, initrd, report — from the events the boot
// servers emit, keeps the last boots of every MAC for `phoenix host show`,
// and exports the phase times as Prometheus histograms.
//
// It only listens: it never changes what a host boots. Events arrive from
// several servers' goroutines; all methods are safe for concurrent use.
package timeline

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phoenixboot/phoenix/boot/dhcp"
	"github.com/phoenixboot/phoenix/boot/httpboot"
	"github.com/phoenixboot/phoenix/boot/tftp"
	"github.com/phoenixboot/phoenix/images"
)

// Phases of a boot, in the order a healthy boot passes them.
const (
	PhaseDHCPOffer = "dhcp-offer"
	PhaseDHCPAck   = "dhcp-ack"
	PhaseTFTP      = "tftp"
	PhaseHTTPBoot  = "http-boot" // UEFI HTTP boot fetched iPXE over HTTP, in place of tftp
	PhaseScript    = "script"
	PhaseKernel    = "kernel"
	PhaseInitrd    = "initrd"
	PhaseOSDHCP    = "os-dhcp" // the booted OS asked for an address again
	PhaseReport    = "report"
)

// Step is one phase reached, at an offset from the boot's start.
type Step struct {
	Phase  string        `json:"phase"`
	After  time.Duration `json:"after_ns"`
	Detail string        `json:"detail,omitempty"`
}

// Boot is one network boot of one MAC.
type Boot struct {
	MAC    string    `json:"mac"`
	Host   string    `json:"host,omitempty"`
	IP     string    `json:"ip,omitempty"`
	Start  time.Time `json:"start"`
	Steps  []Step    `json:"steps"`
	Digest string    `json:"digest,omitempty"` // the image digest served by the script
	// Done is set by the report; Failed names the first failure seen.
	Done   bool   `json:"done"`
	Failed string `json:"failed,omitempty"`
}

// Took is the time from the boot's start to its last step.
func (b Boot) Took() time.Duration {
	if len(b.Steps) == 0 {
		return 0
	}
	return b.Steps[len(b.Steps)-1].After
}

// ImageSource maps a served image digest to its artifacts, so blob fetches
// can be named kernel or initrd (satisfied by *images.Store).
type ImageSource interface {
	Resolve(ref string) (images.Image, error)
}

// keep is how many past boots are kept per MAC.
const keep = 10

// stale is when a boot in progress is given up and a new DHCP offer starts
// a new one.
const stale = 15 * time.Minute

// maxMACs and maxIPs bound what the timeline remembers: anything on the
// boot network can send DHCP with made-up MACs, and each must not cost
// memory for good. Past maxMACs, the quarter of MACs whose last boot
// started longest ago is forgotten; past maxIPs, addresses of MACs with
// no boot kept are.
const (
	maxMACs = 16384
	maxIPs  = 65536
)

// Timeline assembles boots from events. The zero value is not usable: call New.
type Timeline struct {
	images ImageSource
	now    func() time.Time

	mu    sync.Mutex
	boots map[string][]*Boot // by MAC, oldest first, the last one current
	byIP  map[string]string  // IP → MAC, learnt from DHCP and scripts
	// orphans are phases seen from an address no event has tied to a MAC
	// yet: in proxy mode another DHCP server hands out the addresses, so
	// a TFTP transfer or UEFI HTTP boot fetch comes from an unknown IP.
	// The first event that names the MAC at that address (its iPXE script
	// request) adopts them into its boot.
	orphans map[string][]orphan
	blobs   map[string]string // blob digest → role, learnt from served images
	phase   *prometheus.HistogramVec
	fails   *prometheus.CounterVec
	boots_  prometheus.Counter
}

// New returns a Timeline that names blobs through imgs (may be nil) and
// registers its metrics with reg (may be nil).
func New(imgs ImageSource, reg prometheus.Registerer) *Timeline {
	t := &Timeline{
		images: imgs, now: time.Now,
		boots: map[string][]*Boot{}, byIP: map[string]string{}, blobs: map[string]string{}, orphans: map[string][]orphan{},
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "phoenix_boot_phase_seconds",
			Help:    "Time from the start of a network boot (first DHCP offer) to each phase.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300},
		}, []string{"phase"}),
		fails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phoenix_boot_failures_total",
			Help: "Boot failures seen by the boot servers, by reason.",
		}, []string{"reason"}),
		boots_: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phoenix_boots_total",
			Help: "Network boots started (first DHCP offer of a boot).",
		}),
	}
	if reg != nil {
		reg.MustRegister(t.phase, t.fails, t.boots_)
	}
	return t
}

// current returns the boot in progress for mac, starting one if start is
// true and there is none (or the last one is done or stale).
func (t *Timeline) current(mac string, start bool) *Boot {
	list := t.boots[mac]
	now := t.now()
	if n := len(list); n > 0 {
		b := list[n-1]
		if !b.Done && now.Sub(b.Start) < stale {
			return b
		}
	}
	if !start {
		return nil
	}
	if list == nil && len(t.boots) >= maxMACs {
		t.forgetOldest()
	}
	b := &Boot{MAC: mac, Start: now}
	list = append(list, b)
	if len(list) > keep {
		list = list[len(list)-keep:]
	}
	t.boots[mac] = list
	t.boots_.Inc()
	return b
}

// forgetOldest drops the quarter of MACs whose last boot started longest
// ago, and the addresses that pointed at them.
func (t *Timeline) forgetOldest() {
	type last struct {
		mac   string
		start time.Time
	}
	all := make([]last, 0, len(t.boots))
	for mac, list := range t.boots {
		all = append(all, last{mac, list[len(list)-1].Start})
	}
	slices.SortFunc(all, func(a, b last) int { return a.start.Compare(b.start) })
	for _, l := range all[:len(all)/4+1] {
		delete(t.boots, l.mac)
	}
	t.pruneIPs()
}

// pruneIPs drops the addresses of MACs with no boot kept.
func (t *Timeline) pruneIPs() {
	for ip, mac := range t.byIP {
		if t.boots[mac] == nil {
			delete(t.byIP, ip)
		}
	}
}

// learnIP ties ip to mac.
func (t *Timeline) learnIP(ip, mac string) {
	if _, ok := t.byIP[ip]; !ok && len(t.byIP) >= maxIPs {
		t.pruneIPs()
		if len(t.byIP) >= maxIPs {
			clear(t.byIP) // a flood of acks for booting MACs: start over
		}
	}
	t.byIP[ip] = mac
}

// orphan is a phase reached from an address not yet tied to a MAC.
type orphan struct {
	phase, detail string
	at            time.Time
}

// maxOrphans bounds the addresses with orphans kept: addresses that never
// fetch a script (scanners, other servers' clients) must not grow memory.
const maxOrphans = 4096

// keepOrphan remembers phase reached from ip, which no event has tied to a
// MAC yet. Only the latest of each phase is kept per address (a boot takes
// a phase once, and an address that fetches again and again must not grow
// its list).
func (t *Timeline) keepOrphan(ip, phase, detail string) {
	if ip == "" {
		return
	}
	o := orphan{phase: phase, detail: detail, at: t.now()}
	list := t.orphans[ip]
	for i := range list {
		if list[i].phase == phase {
			list[i] = o
			return
		}
	}
	if list == nil && len(t.orphans) >= maxOrphans {
		clear(t.orphans)
	}
	t.orphans[ip] = append(list, o)
}

// adopt moves ip's orphans that happened during b into b.
func (t *Timeline) adopt(b *Boot, ip string) {
	for _, o := range t.orphans[ip] {
		if !o.at.Before(b.Start) {
			t.stepAt(b, o.phase, o.detail, o.at)
		}
	}
	delete(t.orphans, ip)
}

// step records phase on b (once per phase; repeats only update nothing).
func (t *Timeline) step(b *Boot, phase, detail string) {
	t.stepAt(b, phase, detail, t.now())
}

func (t *Timeline) stepAt(b *Boot, phase, detail string, at time.Time) {
	for _, s := range b.Steps {
		if s.Phase == phase {
			return
		}
	}
	after := at.Sub(b.Start)
	b.Steps = append(b.Steps, Step{Phase: phase, After: after, Detail: detail})
	t.phase.WithLabelValues(phase).Observe(after.Seconds())
}

func (t *Timeline) fail(b *Boot, reason string) {
	t.fails.WithLabelValues(reason).Inc()
	if b != nil && b.Failed == "" {
		b.Failed = reason
	}
}

// reached reports whether b has passed phase.
func reached(b *Boot, phase string) bool {
	for _, s := range b.Steps {
		if s.Phase == phase {
			return true
		}
	}
	return false
}

// DHCP takes a boot/dhcp event (dhcp.Server.OnEvent).
func (t *Timeline) DHCP(e dhcp.Event) {
	if e.MAC == nil {
		if e.Kind == "drop" {
			t.mu.Lock()
			t.fail(nil, "dhcp-malformed")
			t.mu.Unlock()
		}
		return
	}
	mac := e.MAC.String()
	t.mu.Lock()
	defer t.mu.Unlock()
	switch e.Kind {
	case "offer", "proxy-offer":
		b := t.current(mac, true)
		if reached(b, PhaseKernel) {
			t.step(b, PhaseOSDHCP, e.IP.String())
			return
		}
		t.step(b, PhaseDHCPOffer, e.Arch)
	case "ack", "proxy-ack":
		if e.IP != nil && !e.IP.IsUnspecified() {
			t.learnIP(e.IP.String(), mac)
		}
		// A PXE client's ack may start a boot (its offer may have gone to
		// a phoenix since restarted); any other client's, without a boot
		// under way, is a running system renewing its lease.
		b := t.current(mac, e.Arch != "")
		if b == nil {
			return
		}
		if reached(b, PhaseKernel) {
			t.step(b, PhaseOSDHCP, e.IP.String())
			return
		}
		if e.IP != nil && !e.IP.IsUnspecified() {
			b.IP = e.IP.String()
		}
		t.step(b, PhaseDHCPAck, e.Arch)
	case "nak":
		t.fail(t.current(mac, false), "dhcp-nak")
	}
}

// TFTP takes a finished boot/tftp transfer (tftp.Server.OnTransfer).
func (t *Timeline) TFTP(tr tftp.Transfer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	mac := t.byIP[hostOf(tr.Remote)]
	var b *Boot
	if mac != "" {
		b = t.current(mac, false)
	}
	switch {
	case tr.Aborted: // UEFI's size probe: normal
	case tr.Probe: // shim or GRUB looking for an optional file: normal
	case tr.Refused:
		t.fail(b, "tftp-refused")
	case tr.Err != nil:
		t.fail(b, "tftp-failed")
	case b != nil:
		t.step(b, PhaseTFTP, tr.File)
		// The Secure Boot chain's GRUB fetches kernel and initrd over
		// TFTP (boot/httpboot's TFTPFile), by digest.
		if h, ok := strings.CutPrefix(tr.File, "blobs/sha256/"); ok {
			t.blobStep(b, "sha256:"+h)
		}
	default:
		// No MAC known for the address, or the one last seen there has
		// no boot under way: in proxy mode the other DHCP server may
		// have given the address to another machine since. Keep it for
		// the script request that names the MAC.
		t.keepOrphan(hostOf(tr.Remote), PhaseTFTP, tr.File)
	}
}

// HTTP takes a boot/httpboot event (httpboot.Server.OnEvent).
func (t *Timeline) HTTP(e httpboot.Event) {
	ip := hostOf(addrString(e.RemoteAddr))
	var roles map[string]string
	if e.Kind == httpboot.EventScript && e.Digest != "" && t.images != nil {
		if img, err := t.images.Resolve(e.Digest); err == nil {
			roles = map[string]string{}
			for _, a := range img.Artifacts {
				roles[a.Digest] = a.Role
			}
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for d, r := range roles {
		t.blobs[d] = r
	}
	mac := ""
	if e.MAC != nil {
		mac = e.MAC.String()
		if ip != "" {
			t.learnIP(ip, mac)
		}
	} else {
		mac = t.byIP[ip]
		if mac != "" && t.current(mac, false) == nil {
			mac = "" // stale: see TFTP
		}
	}
	if mac == "" {
		if e.Kind == httpboot.EventBootFile && e.Status != http.StatusNotFound {
			t.keepOrphan(ip, PhaseHTTPBoot, e.Detail)
		}
		return
	}
	switch e.Kind {
	case httpboot.EventBootFile:
		b := t.current(mac, false)
		if b == nil {
			return
		}
		if e.Status == http.StatusNotFound {
			t.fail(b, "boot-file-not-found")
			return
		}
		t.step(b, PhaseHTTPBoot, e.Detail)
	case httpboot.EventUnknown:
		t.fail(t.current(mac, false), "unknown-host")
	case httpboot.EventScript:
		b := t.current(mac, true)
		b.Host = e.Host
		if e.Digest != "" {
			b.Digest = e.Digest
		}
		if e.Detail != "" && e.Detail != "local" {
			t.fail(b, "script-error")
		}
		t.adopt(b, ip)
		t.step(b, PhaseScript, e.Image)
	case httpboot.EventBlob:
		b := t.current(mac, false)
		if b == nil {
			return
		}
		if e.Status == 404 {
			t.fail(b, "blob-not-found")
			return
		}
		t.blobStep(b, "sha256:"+strings.TrimPrefix(e.Digest, "sha256:"))
	case httpboot.EventReport:
		b := t.current(mac, false)
		if b == nil {
			return
		}
		t.step(b, PhaseReport, e.Digest)
		switch {
		case e.Detail != "":
			// A failure report: the host says its boot failed, and why.
			t.fail(b, "reported-failure")
		case b.Digest != "" && e.Digest != b.Digest:
			t.fail(b, "wrong-digest")
		}
		b.Done = true
	}
}

// blobStep records the phase a fetched blob stands for: kernel or initrd,
// as the image of a script served earlier says.
func (t *Timeline) blobStep(b *Boot, digest string) {
	switch t.blobs[digest] {
	case images.RoleKernel:
		t.step(b, PhaseKernel, "")
	case images.RoleInitrd:
		t.step(b, PhaseInitrd, "")
	}
}

// Boots returns the kept boots of mac, newest first.
func (t *Timeline) Boots(mac net.HardwareAddr) []Boot {
	t.mu.Lock()
	defer t.mu.Unlock()
	list := t.boots[mac.String()]
	out := make([]Boot, 0, len(list))
	for i := len(list) - 1; i >= 0; i-- {
		b := *list[i]
		b.Steps = append([]Step(nil), b.Steps...)
		sort.SliceStable(b.Steps, func(i, j int) bool { return b.Steps[i].After < b.Steps[j].After })
		out = append(out, b)
	}
	return out
}

// ServeBoots answers GET /api/v1/boots/{mac}: the MAC's kept boots, newest
// first, as JSON; errors have the API's shape {"error": "..."}.
func (t *Timeline) ServeBoots(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	mac, err := net.ParseMAC(r.PathValue("mac"))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"error": fmt.Sprintf("mac %q: %v", r.PathValue("mac"), err)})
		return
	}
	json.NewEncoder(w).Encode(t.Boots(mac))
}

// hostOf returns the IP of a net.Addr or "ip:port" string.
func hostOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	switch v := a.(type) {
	case *net.UDPAddr:
		return v.IP.String()
	case *net.TCPAddr:
		return v.IP.String()
	}
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return h
}

// addrString adapts a "host:port" string to net.Addr for hostOf.
type addrString string

func (a addrString) Network() string { return "tcp" }
func (a addrString) String() string  { return string(a) }
