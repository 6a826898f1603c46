package fleet

import "regexp"

// Host is one machine phoenix boots, as declared by the operator.
type Host struct {
	// Name identifies the host; it appears in logs, scripts and the API.
	Name string `yaml:"name" json:"name"`
	// MACs are the host's boot NICs in lowercase colon form.
	MACs []string `yaml:"macs" json:"macs"`
	// Image is what the host should run: NAME:VERSION, NAME@CHANNEL (follow
	// a channel) or a manifest digest.
	Image string `yaml:"image" json:"image"`
	// SecureBoot: the host's firmware enforces UEFI Secure Boot, so it
	// netboots through the signed shim and GRUB (fleet file secure_boot).
	SecureBoot bool `yaml:"secure_boot,omitempty" json:"secure_boot,omitempty"`
}

var hostNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
