package fleet

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/phoenixboot/phoenix/images"
)

// Boot modes a host can run its image in.
const (
	// ModeMemory boots the image into RAM on every boot; nothing persists.
	ModeMemory = "memory"
	// ModeDisk writes the image to the host's disk once, then boots locally
	// until the host's image changes.
	ModeDisk = "disk"
)

// Drift actions.
const (
	// DriftReimage rebuilds a host that reports a digest other than the one
	// it was assigned.
	DriftReimage = "reimage"
	// DriftAlert only records a drift event.
	DriftAlert = "alert"
)

// BMCSpec says how to reach a host's BMC. It never holds a secret: the
// password is referenced, so fleet files can live in version control.
type BMCSpec struct {
	// Endpoint is the Redfish service root, e.g. https://10.0.0.5.
	Endpoint string `json:"endpoint"`
	// Username logs in to the BMC.
	Username string `json:"username,omitempty"`
	// Credentials references the password: "env:NAME" (an environment
	// variable of the server) or "file:/path" (a file it reads).
	Credentials string `json:"credentials,omitempty"`
	// Insecure skips TLS verification (self-signed BMC certificates).
	Insecure bool `json:"insecure,omitempty"`
	// System is the ComputerSystem's path when the BMC has several.
	System string `json:"system,omitempty"`
	// Boot is how the host netboots when phoenix asks its BMC for a
	// one-time network boot: BootPXE (the default) or BootUEFIHTTP, for
	// firmware set to UEFI HTTP boot only, which has no PXE boot option
	// for a Pxe override to pick.
	Boot string `json:"boot,omitempty"`
}

// Network boot kinds of BMCSpec.Boot.
const (
	BootPXE      = "pxe"
	BootUEFIHTTP = "uefi-http"
)

// Password resolves the credential reference. It is for BMCDialer
// implementations; the value must never be logged.
func (b BMCSpec) Password() (string, error) {
	kind, ref, _ := strings.Cut(b.Credentials, ":")
	switch kind {
	case "":
		return "", nil
	case "env":
		v, ok := os.LookupEnv(ref)
		if !ok {
			return "", fmt.Errorf("bmc %s: credentials: environment variable %s is not set", b.Endpoint, ref)
		}
		return v, nil
	case "file":
		data, err := os.ReadFile(ref)
		if err != nil {
			return "", fmt.Errorf("bmc %s: credentials: %w", b.Endpoint, err)
		}
		return strings.TrimRight(string(data), "\r\n"), nil
	}
	return "", fmt.Errorf("bmc %s: credentials %q: want env:NAME or file:PATH", b.Endpoint, b.Credentials)
}

// HostSpec is one host as the fleet file declares it, with the file's
// defaults applied.
type HostSpec struct {
	Name string   `json:"name"`
	MACs []string `json:"macs"`
	// Image is NAME@CHANNEL (follows the channel), NAME:VERSION (pinned)
	// or a manifest digest sha256:<hex>.
	Image string `json:"image"`
	// Mode is ModeMemory or ModeDisk.
	Mode string `json:"mode"`
	// SecureBoot says the host's UEFI firmware enforces Secure Boot, so it
	// runs only signed programs: it netboots through shim and GRUB, both
	// signed, instead of iPXE. Its image's kernel must be signed too.
	SecureBoot bool `json:"secure_boot,omitempty"`
	// BMC is nil for a host phoenix cannot power-control: its steps wait
	// for it to reboot by itself.
	BMC    *BMCSpec          `json:"bmc,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	// Line is where the host is declared in its fleet file.
	Line int `json:"-"`
}

// equal reports whether two specs declare the same host.
func (h HostSpec) equal(o HostSpec) bool {
	if h.Name != o.Name || h.Image != o.Image || h.Mode != o.Mode || h.SecureBoot != o.SecureBoot || !slicesEqual(h.MACs, o.MACs) || len(h.Labels) != len(o.Labels) {
		return false
	}
	for k, v := range h.Labels {
		if o.Labels[k] != v {
			return false
		}
	}
	if (h.BMC == nil) != (o.BMC == nil) {
		return false
	}
	return h.BMC == nil || *h.BMC == *o.BMC
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Policy is how phoenix rolls a change out across the fleet.
type Policy struct {
	// Canary hosts are reimaged first, alone; the rest wait until they all
	// report their new image. Default 1.
	Canary int `json:"canary"`
	// Batch is how many hosts are reimaged at once after the canaries.
	// Default: MaxUnavailable.
	Batch int `json:"batch"`
	// MaxUnavailable caps the hosts out of service (reset, not yet
	// reported) at any moment. Default: Batch, or 1.
	MaxUnavailable int `json:"max_unavailable"`
	// BootDeadline is how long a reset host has to report. Default 15m.
	BootDeadline time.Duration `json:"boot_deadline"`
	// Retries is how many times a failed host is reset again before it is
	// quarantined. Default 1.
	Retries int `json:"retries"`
	// FailureBudget is how many hosts a rollout may quarantine before it
	// halts. Default 0: the first failure halts it. A failed canary always
	// halts its rollout.
	FailureBudget int `json:"failure_budget"`
	// MaxAge rebuilds hosts that have run one boot this long; 0 never.
	MaxAge time.Duration `json:"max_age,omitempty"`
	// Splay is the random extra age added per host so that racks do not
	// reboot together.
	Splay time.Duration `json:"splay,omitempty"`
	// Drift is DriftReimage (default) or DriftAlert.
	Drift string `json:"drift"`
	// BootOverrideOnce sets a one-time network boot override before each
	// reset, for hosts that cannot keep the network first in boot order.
	BootOverrideOnce bool `json:"boot_override_once,omitempty"`
}

// window is how many hosts may be in flight at once.
func (p Policy) window() int {
	return max(1, min(p.Batch, p.MaxUnavailable))
}

// File is a parsed, validated fleet file: the desired state of every host
// and how to roll changes out.
type File struct {
	Hosts  []HostSpec `json:"hosts"`
	Policy Policy     `json:"policy"`
	// Digest is the sha256 of the file's bytes, to tell revisions apart.
	Digest string `json:"digest"`
}

// ImageSource resolves what a host should run (satisfied by *images.Store):
// ref is NAME:VERSION, NAME@CHANNEL or sha256:<hex>.
type ImageSource interface {
	Resolve(ref string) (images.Image, error)
}

// ErrInvalid wraps every fleet file validation error, so that callers (the
// API) can tell bad input from a failure of the server.
var ErrInvalid = errors.New("invalid fleet file")

var (
	channelRefRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}@[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	digestRefRE  = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	labelKeyRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$`)
)

// checkImageRef checks the syntax of an image reference a host may name.
func checkImageRef(ref string) error {
	switch {
	case ref == "":
		return errors.New("no image (set it on the host or in defaults)")
	case strings.HasPrefix(ref, "sha256:"):
		if !digestRefRE.MatchString(ref) {
			return fmt.Errorf("image %q: bad digest", ref)
		}
	case strings.Contains(ref, "@"):
		if !channelRefRE.MatchString(ref) {
			return fmt.Errorf("image %q: want NAME@CHANNEL", ref)
		}
	default:
		if _, _, err := images.ParseRef(ref); err != nil {
			return err
		}
	}
	return nil
}

// ParseFile parses and validates a fleet file as a whole. Every error found
// is returned (joined, each with its line), and nothing is returned unless
// the whole file is valid. When src is not nil every image reference must
// resolve, so unknown channels and versions are refused too.
//
// The simple hosts file (hosts: [{name, macs, image}]) is a fleet file.
func ParseFile(data []byte, src ImageSource) (*File, error) {
	p := &fileParser{policyLines: map[string]int{}}
	f := p.parse(data)
	if src != nil {
		p.resolveImages(f, src)
	}
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].line < p.errs[j].line })
		errs := make([]error, len(p.errs))
		for i, e := range p.errs {
			errs[i] = e
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	sum := sha256.Sum256(data)
	f.Digest = "sha256:" + hex.EncodeToString(sum[:])
	return f, nil
}

// lineError is one problem in a fleet file.
type lineError struct {
	line int
	msg  string
}

func (e *lineError) Error() string {
	if e.line == 0 {
		return e.msg
	}
	return "line " + strconv.Itoa(e.line) + ": " + e.msg
}

type fileParser struct {
	errs []*lineError
	// policyLines remembers where policy keys were, for errors about how
	// they combine.
	policyLines map[string]int
}

func (p *fileParser) errf(n *yaml.Node, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.errs = append(p.errs, &lineError{line: line, msg: fmt.Sprintf(format, args...)})
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// mapping calls fn for every key of a mapping node; keys fn does not know
// (fn returns false) are reported as unknown.
func (p *fileParser) mapping(n *yaml.Node, what string, fn func(key string, v *yaml.Node) bool) {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			return
		}
		p.errf(n, "%s: want a mapping", what)
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], deref(n.Content[i+1])
		if seen[k.Value] {
			p.errf(k, "%s: key %q given twice", what, k.Value)
			continue
		}
		seen[k.Value] = true
		if !fn(k.Value, v) {
			p.errf(k, "%s: unknown key %q", what, k.Value)
		}
	}
}

func (p *fileParser) str(n *yaml.Node, what string) string {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.errf(n, "%s: want a string", what)
		return ""
	}
	return n.Value
}

func (p *fileParser) integer(n *yaml.Node, what string) int {
	v, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil || v < 0 {
		p.errf(n, "%s: want a whole number ≥ 0", what)
		return 0
	}
	return v
}

func (p *fileParser) boolean(n *yaml.Node, what string) bool {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
		p.errf(n, "%s: want true or false", what)
	}
	return b
}

func (p *fileParser) duration(n *yaml.Node, what string) time.Duration {
	s := n.Value
	mult := time.Duration(1)
	if d, ok := strings.CutSuffix(s, "d"); ok {
		s, mult = d+"h", 24
	}
	d, err := time.ParseDuration(s)
	if n.Kind != yaml.ScalarNode || err != nil || d < 0 {
		p.errf(n, "%s: want a duration such as 90s, 15m, 12h or 30d", what)
		return 0
	}
	return d * mult
}

func (p *fileParser) strList(n *yaml.Node, what string) []string {
	if n.Kind == yaml.ScalarNode && n.Tag != "!!null" {
		return []string{n.Value}
	}
	if n.Kind != yaml.SequenceNode {
		p.errf(n, "%s: want a list", what)
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for _, c := range n.Content {
		out = append(out, p.str(deref(c), what))
	}
	return out
}

func (p *fileParser) labels(n *yaml.Node, what string) map[string]string {
	out := map[string]string{}
	p.mapping(n, what, func(k string, v *yaml.Node) bool {
		if !labelKeyRE.MatchString(k) {
			p.errf(v, "%s: bad label key %q", what, k)
		}
		out[k] = p.str(v, what+"."+k)
		return true
	})
	return out
}

func (p *fileParser) bmc(n *yaml.Node, what string, b *BMCSpec) {
	p.mapping(n, what, func(k string, v *yaml.Node) bool {
		switch k {
		case "endpoint":
			b.Endpoint = p.str(v, what+".endpoint")
			if u, err := url.Parse(b.Endpoint); b.Endpoint != "" && (err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "") {
				p.errf(v, "%s.endpoint %q: want http(s)://HOST[:PORT]", what, b.Endpoint)
			}
		case "username":
			b.Username = p.str(v, what+".username")
		case "credentials":
			b.Credentials = p.str(v, what+".credentials")
			if kind, ref, _ := strings.Cut(b.Credentials, ":"); (kind != "env" && kind != "file") || ref == "" {
				p.errf(v, "%s.credentials %q: want env:NAME or file:PATH (never the password itself)", what, b.Credentials)
			}
		case "insecure":
			b.Insecure = p.boolean(v, what+".insecure")
		case "system":
			b.System = p.str(v, what+".system")
		case "boot":
			b.Boot = p.str(v, what+".boot")
			if b.Boot != BootPXE && b.Boot != BootUEFIHTTP {
				p.errf(v, "%s.boot %q: want %s or %s", what, b.Boot, BootPXE, BootUEFIHTTP)
			}
		default:
			return false
		}
		return true
	})
}

// hostDraft is a host before defaults are applied; nil/unset fields take
// the default.
type hostDraft struct {
	spec      HostSpec
	modeSet   bool
	imageSet  bool
	secureSet bool
	bmc       *yaml.Node
	line      int
	nameNode  *yaml.Node
	macNodes  []*yaml.Node
	node      *yaml.Node
}

func (p *fileParser) parse(data []byte) *File {
	f := &File{}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		p.errs = append(p.errs, &lineError{msg: err.Error()})
		return f
	}
	var defaults struct {
		image, mode string
		secureBoot  bool
		bmc         *yaml.Node
		labels      map[string]string
	}
	var hostsNode *yaml.Node
	policySet := map[string]bool{}
	if len(doc.Content) > 0 {
		p.mapping(doc.Content[0], "fleet file", func(k string, v *yaml.Node) bool {
			switch k {
			case "hosts":
				hostsNode = v
			case "defaults":
				p.mapping(v, "defaults", func(k string, v *yaml.Node) bool {
					switch k {
					case "image":
						defaults.image = p.str(v, "defaults.image")
					case "mode":
						defaults.mode = p.str(v, "defaults.mode")
					case "secure_boot":
						defaults.secureBoot = p.boolean(v, "defaults.secure_boot")
					case "bmc":
						defaults.bmc = v
					case "labels":
						defaults.labels = p.labels(v, "defaults.labels")
					default:
						return false
					}
					return true
				})
			case "policy":
				p.policy(v, &f.Policy, policySet)
			default:
				return false
			}
			return true
		})
	}
	p.applyPolicyDefaults(&f.Policy, policySet)

	var drafts []hostDraft
	if hostsNode == nil {
		// An empty body (a truncated upload, `apply -f -` on empty stdin)
		// must not remove every host: that takes an explicit list.
		p.errs = append(p.errs, &lineError{msg: "no hosts: a fleet file lists its hosts (`hosts: []` removes them all)"})
	}
	if hostsNode != nil {
		if hostsNode.Kind != yaml.SequenceNode {
			if hostsNode.Tag != "!!null" {
				p.errf(hostsNode, "hosts: want a list")
			}
		} else {
			drafts = make([]hostDraft, 0, len(hostsNode.Content))
			for i, hn := range hostsNode.Content {
				drafts = append(drafts, p.host(deref(hn), i+1))
			}
		}
	}
	names := make(map[string]int, len(drafts))
	macs := make(map[string]string, len(drafts))
	f.Hosts = make([]HostSpec, 0, len(drafts))
	for _, d := range drafts {
		h := d.spec
		where := fmt.Sprintf("host %q", h.Name)
		if !hostNameRE.MatchString(h.Name) {
			p.errf(d.nameNode, "%s: name must match %s", where, hostNameRE)
		} else if first, dup := names[h.Name]; dup {
			p.errf(d.nameNode, "%s: duplicate name (first at line %d)", where, first)
		} else {
			names[h.Name] = d.line
		}
		if !d.imageSet {
			h.Image = defaults.image
		}
		if err := checkImageRef(h.Image); err != nil {
			p.errf(d.node, "%s: %v", where, err)
		}
		if !d.modeSet {
			h.Mode = defaults.mode
		}
		if h.Mode == "" {
			h.Mode = ModeMemory
		}
		if !d.secureSet {
			h.SecureBoot = defaults.secureBoot
		}
		if h.Mode != ModeMemory && h.Mode != ModeDisk {
			p.errf(d.node, "%s: mode %q: want memory or disk", where, h.Mode)
		}
		if len(h.MACs) == 0 {
			p.errf(d.node, "%s: no macs", where)
		}
		for i, m := range h.MACs {
			hw, err := net.ParseMAC(m)
			if err != nil || len(hw) != 6 {
				p.errf(d.macNodes[i], "%s: bad mac %q", where, m)
				continue
			}
			key := hw.String()
			if other, dup := macs[key]; dup {
				p.errf(d.macNodes[i], "%s: mac %s already belongs to %q", where, key, other)
			}
			macs[key] = h.Name
			h.MACs[i] = key
		}
		if defaults.bmc != nil || d.bmc != nil {
			b := &BMCSpec{}
			if defaults.bmc != nil {
				p.bmc(defaults.bmc, "defaults.bmc", b)
			}
			if d.bmc != nil {
				p.bmc(d.bmc, where+": bmc", b)
			}
			if b.Endpoint == "" {
				if d.bmc != nil {
					p.errf(d.bmc, "%s: bmc: no endpoint", where)
				}
				// Defaults alone (credentials for all) do not make a BMC.
				b = nil
			}
			h.BMC = b
		}
		if len(defaults.labels) > 0 {
			merged := make(map[string]string, len(defaults.labels)+len(h.Labels))
			for k, v := range defaults.labels {
				merged[k] = v
			}
			for k, v := range h.Labels {
				merged[k] = v
			}
			h.Labels = merged
		}
		f.Hosts = append(f.Hosts, h)
	}
	return f
}

func (p *fileParser) host(n *yaml.Node, index int) hostDraft {
	d := hostDraft{line: n.Line, node: n, nameNode: n}
	what := fmt.Sprintf("host %d", index)
	if n.Kind == yaml.MappingNode {
		// Name the host in every error, whatever the order of its keys.
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "name" && n.Content[i+1].Kind == yaml.ScalarNode {
				what = fmt.Sprintf("host %q", n.Content[i+1].Value)
			}
		}
	}
	p.mapping(n, what, func(k string, v *yaml.Node) bool {
		switch k {
		case "name":
			d.spec.Name, d.nameNode = p.str(v, what+": name"), v
		case "macs":
			d.spec.MACs = p.strList(v, what+": macs")
			if v.Kind == yaml.SequenceNode {
				d.macNodes = append(d.macNodes, v.Content...)
			} else {
				d.macNodes = []*yaml.Node{v}
			}
			if len(d.macNodes) != len(d.spec.MACs) {
				d.spec.MACs = nil
			}
		case "image":
			d.spec.Image, d.imageSet = p.str(v, what+": image"), true
		case "mode":
			d.spec.Mode, d.modeSet = p.str(v, what+": mode"), true
		case "secure_boot":
			d.spec.SecureBoot, d.secureSet = p.boolean(v, what+": secure_boot"), true
		case "bmc":
			d.bmc = v
		case "labels":
			d.spec.Labels = p.labels(v, what+": labels")
		default:
			return false
		}
		return true
	})
	d.spec.Line = d.line
	return d
}

func (p *fileParser) policy(n *yaml.Node, pol *Policy, set map[string]bool) {
	p.mapping(n, "policy", func(k string, v *yaml.Node) bool {
		what := "policy." + k
		set[k] = true
		switch k {
		case "canary":
			pol.Canary = p.integer(v, what)
		case "batch":
			pol.Batch = p.integer(v, what)
		case "max_unavailable":
			pol.MaxUnavailable = p.integer(v, what)
		case "boot_deadline":
			pol.BootDeadline = p.duration(v, what)
		case "retries":
			pol.Retries = p.integer(v, what)
		case "failure_budget":
			pol.FailureBudget = p.integer(v, what)
		case "max_age":
			pol.MaxAge = p.duration(v, what)
		case "splay":
			pol.Splay = p.duration(v, what)
		case "drift":
			pol.Drift = p.str(v, what)
			if pol.Drift != DriftReimage && pol.Drift != DriftAlert {
				p.errf(v, "%s %q: want reimage or alert", what, pol.Drift)
			}
		case "boot_override_once":
			pol.BootOverrideOnce = p.boolean(v, what)
		default:
			delete(set, k)
			return false
		}
		p.policyLines[k] = v.Line
		return true
	})
}

// DefaultPolicy is the policy of a fleet file that sets none.
var DefaultPolicy = Policy{Canary: 1, Batch: 1, MaxUnavailable: 1, BootDeadline: 15 * time.Minute, Retries: 1, Drift: DriftReimage}

func (p *fileParser) applyPolicyDefaults(pol *Policy, set map[string]bool) {
	if !set["canary"] {
		pol.Canary = DefaultPolicy.Canary
	}
	if !set["retries"] {
		pol.Retries = DefaultPolicy.Retries
	}
	if !set["boot_deadline"] {
		pol.BootDeadline = DefaultPolicy.BootDeadline
	}
	if pol.Drift == "" {
		pol.Drift = DefaultPolicy.Drift
	}
	switch {
	case set["batch"] && !set["max_unavailable"]:
		pol.MaxUnavailable = pol.Batch
	case !set["batch"] && set["max_unavailable"]:
		pol.Batch = pol.MaxUnavailable
	case !set["batch"] && !set["max_unavailable"]:
		pol.Batch, pol.MaxUnavailable = DefaultPolicy.Batch, DefaultPolicy.MaxUnavailable
	}
	if pol.MaxUnavailable < 1 && (set["max_unavailable"] || set["batch"]) {
		p.errs = append(p.errs, &lineError{line: max(p.policyLines["max_unavailable"], p.policyLines["batch"]),
			msg: "policy: max_unavailable (or batch) must be at least 1, or nothing could ever be reimaged"})
	}
	if pol.Batch > pol.MaxUnavailable {
		p.errs = append(p.errs, &lineError{line: p.policyLines["batch"],
			msg: fmt.Sprintf("policy: batch %d is larger than max_unavailable %d: the plan would exceed max_unavailable by itself", pol.Batch, pol.MaxUnavailable)})
	}
	if pol.Canary > pol.MaxUnavailable && pol.MaxUnavailable >= 1 {
		p.errs = append(p.errs, &lineError{line: p.policyLines["canary"],
			msg: fmt.Sprintf("policy: canary %d is larger than max_unavailable %d", pol.Canary, pol.MaxUnavailable)})
	}
	if pol.BootDeadline <= 0 {
		p.errs = append(p.errs, &lineError{line: p.policyLines["boot_deadline"], msg: "policy: boot_deadline must be positive"})
	}
	if pol.Splay > 0 && pol.MaxAge == 0 {
		p.errs = append(p.errs, &lineError{line: p.policyLines["splay"], msg: "policy: splay without max_age means nothing"})
	}
}

// resolveImages asks src about every distinct image reference, reporting
// an unknown one at the first host that names it, and a disk-mode host
// whose image has no disk image to install (it would report, then be told
// to boot a disk nothing was written to).
func (p *fileParser) resolveImages(f *File, src ImageSource) {
	type answer struct {
		img images.Image
		err error
	}
	seen := map[string]*answer{}
	for _, h := range f.Hosts {
		if checkImageRef(h.Image) != nil {
			continue
		}
		a := seen[h.Image]
		if a == nil {
			a = &answer{}
			a.img, a.err = src.Resolve(h.Image)
			seen[h.Image] = a
			if a.err != nil {
				p.errs = append(p.errs, &lineError{line: h.Line, msg: fmt.Sprintf("host %q: %v", h.Name, a.err)})
			}
		}
		if a.err != nil || h.Mode != ModeDisk {
			continue
		}
		if _, ok := a.img.Artifact(images.RoleDisk); !ok {
			p.errs = append(p.errs, &lineError{line: h.Line, msg: fmt.Sprintf("host %q: mode disk, but image %s has no disk image (import one with --disk)", h.Name, a.img.Ref())})
		}
	}
}
