package fleet

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"sort"

	"gopkg.in/yaml.v3"

	"github.com/phoenixboot/phoenix/images"
)

// Host is one machine phoenix boots, as declared by the operator.
type Host struct {
	// Name identifies the host; it appears in logs, scripts and the API.
	Name string `yaml:"name" json:"name"`
	// MACs are the host's boot NICs in lowercase colon form.
	MACs []string `yaml:"macs" json:"macs"`
	// Image is what the host should run: NAME:VERSION, NAME@CHANNEL (follow
	// a channel) or a manifest digest.
	Image string `yaml:"image" json:"image"`
}

// hostsFile is the YAML document a hosts file holds.
type hostsFile struct {
	Hosts []Host `yaml:"hosts"`
}

// Hosts is an immutable, validated set of hosts indexed by MAC. It answers
// "which image does this MAC boot" for the boot HTTP server.
type Hosts struct {
	list  []Host
	byMAC map[string]int
}

var hostNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// LoadHosts reads and validates a hosts file. Every problem found is
// reported, not just the first, and nothing is returned unless all is well.
func LoadHosts(path string) (*Hosts, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("hosts file: %w", err)
	}
	h, err := ParseHosts(data)
	if err != nil {
		return nil, fmt.Errorf("hosts file %s: %w", path, err)
	}
	return h, nil
}

// ParseHosts parses and validates a hosts file's contents.
func ParseHosts(data []byte) (*Hosts, error) {
	var f hostsFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	// An empty file is a file with no hosts.
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return NewHosts(f.Hosts)
}

// NewHosts validates hosts (unique names and MACs, well-formed MACs and
// image references) and indexes them.
func NewHosts(hosts []Host) (*Hosts, error) {
	h := &Hosts{byMAC: map[string]int{}}
	names := map[string]bool{}
	var errs []error
	for i, host := range hosts {
		where := fmt.Sprintf("host %d (%q)", i+1, host.Name)
		if !hostNameRE.MatchString(host.Name) {
			errs = append(errs, fmt.Errorf("%s: name must match %s", where, hostNameRE))
		} else if names[host.Name] {
			errs = append(errs, fmt.Errorf("%s: duplicate name", where))
		}
		names[host.Name] = true
		if len(host.MACs) == 0 {
			errs = append(errs, fmt.Errorf("%s: no macs", where))
		}
		if err := images.CheckRef(host.Image); err != nil {
			errs = append(errs, fmt.Errorf("%s: image: %w (want NAME:VERSION, NAME@CHANNEL or sha256:<hex>)", where, err))
		}
		norm := make([]string, 0, len(host.MACs))
		for _, m := range host.MACs {
			hw, err := net.ParseMAC(m)
			if err != nil || len(hw) != 6 {
				errs = append(errs, fmt.Errorf("%s: bad mac %q", where, m))
				continue
			}
			key := hw.String()
			if j, dup := h.byMAC[key]; dup {
				errs = append(errs, fmt.Errorf("%s: mac %s already belongs to %q", where, key, hosts[j].Name))
				continue
			}
			h.byMAC[key] = i
			norm = append(norm, key)
		}
		host.MACs = norm
		h.list = append(h.list, host)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return h, nil
}

// Lookup returns the host that owns mac and the image it should boot.
func (h *Hosts) Lookup(mac net.HardwareAddr) (host, image string, ok bool) {
	if h == nil {
		return "", "", false
	}
	i, ok := h.byMAC[mac.String()]
	if !ok {
		return "", "", false
	}
	return h.list[i].Name, h.list[i].Image, true
}

// List returns the hosts sorted by name.
func (h *Hosts) List() []Host {
	if h == nil {
		return nil
	}
	out := append([]Host(nil), h.list...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
