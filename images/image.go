package images

import (
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Role names of artifacts: what a layer is for when a host boots.
const (
	RoleKernel = "kernel"
	RoleInitrd = "initrd"
	RoleRootfs = "rootfs"
	RoleDisk   = "disk"
)

// Boot modes of an image.
const (
	// ModeMemory boots the kernel and initrd and mounts the rootfs
	// read-only with a tmpfs overlay; nothing persists on the host.
	ModeMemory = "memory"
	// ModeDisk streams the raw disk image to the host's disk, which then
	// boots locally until its desired image changes.
	ModeDisk = "disk"
)

// DefaultArch is the architecture of an image whose spec names none.
const DefaultArch = "amd64"

// Media types of the OCI manifest parts. They are how standard OCI tools and
// registries tell a phoenix image from a container image.
const (
	// ArtifactType marks the manifest of one image version.
	ArtifactType = "application/vnd.phoenix.image.v1+json"
	// ConfigMediaType is the config blob holding name, version, arch, mode,
	// command line, created time and description.
	ConfigMediaType = "application/vnd.phoenix.image.config.v1+json"
	// MediaTypeKernel is the layer holding the kernel.
	MediaTypeKernel = "application/vnd.phoenix.kernel"
	// MediaTypeInitrd is the layer holding the initrd.
	MediaTypeInitrd = "application/vnd.phoenix.initrd"
	// MediaTypeRootfs is the layer holding the squashfs root file system.
	MediaTypeRootfs = "application/vnd.phoenix.rootfs.squashfs"
	// MediaTypeDisk is the layer holding a raw disk image.
	MediaTypeDisk = "application/vnd.phoenix.disk.raw"
)

// OCI annotation keys this package reads and writes.
const (
	annotationTitle   = "org.opencontainers.image.title"
	annotationRefName = "org.opencontainers.image.ref.name"
	annotationCreated = "org.opencontainers.image.created"
)

// roles lists the known roles in the order their layers appear in a
// manifest, so that identical imports produce identical manifests.
var roles = []struct {
	name      string
	mediaType types.MediaType
}{
	{RoleKernel, MediaTypeKernel},
	{RoleInitrd, MediaTypeInitrd},
	{RoleRootfs, MediaTypeRootfs},
	{RoleDisk, MediaTypeDisk},
}

func roleMediaType(role string) (types.MediaType, bool) {
	for _, r := range roles {
		if r.name == role {
			return r.mediaType, true
		}
	}
	return "", false
}

func mediaTypeRole(mt types.MediaType) string {
	for _, r := range roles {
		if r.mediaType == mt {
			return r.name
		}
	}
	return ""
}

// Artifact is one file of an image version, stored as one blob.
type Artifact struct {
	Role      string // RoleKernel, RoleInitrd, RoleRootfs or RoleDisk
	MediaType string
	Digest    string // "sha256:<hex>"; the blob's name, see Store.BlobPath
	Size      int64
}

// Image is one published, immutable image version.
type Image struct {
	Name, Version string
	// Digest is the manifest digest "sha256:<hex>": THE identity of an image
	// version. Hosts report it; two images are the same iff digests are equal.
	Digest      string
	Arch        string
	Mode        string // ModeMemory or ModeDisk
	Cmdline     string // kernel command line, without phoenix's own parameters
	Description string
	Created     time.Time
	Artifacts   []Artifact // in role order: kernel, initrd, rootfs, disk
}

// Ref returns "NAME:VERSION".
func (i Image) Ref() string { return i.Name + ":" + i.Version }

// Artifact returns the artifact with the given role, if the image has one.
func (i Image) Artifact(role string) (Artifact, bool) {
	for _, a := range i.Artifacts {
		if a.Role == role {
			return a, true
		}
	}
	return Artifact{}, false
}

// ImportSpec describes an image version to import.
type ImportSpec struct {
	Name, Version string
	Arch          string // DefaultArch if empty
	Mode          string // ModeMemory if empty
	Cmdline       string
	Description   string
	// Created is recorded in the config; time.Now() if zero. It does not
	// take part in the identical-content check of a re-import.
	Created time.Time
	// Files maps a role to the path of its file. RoleKernel is required,
	// and RoleDisk too in ModeDisk (from Files or Readers).
	Files map[string]string
	// Readers maps a role to an artifact that is not a file of its own: a
	// file inside an ISO, an HTTP upload. A role is in Files or Readers,
	// never both.
	Readers map[string]ImportSource
}

// ImportSource is an artifact's content as a stream, read once.
type ImportSource struct {
	R io.Reader
	// Size is how many bytes R yields, or -1 if unknown. A source that
	// yields a different number fails the import (a truncated upload or a
	// short read inside an ISO) before anything is published.
	Size int64
}

// imageConfig is the JSON of the config blob. Field order is fixed by the
// struct, so identical specs give identical bytes and digests.
type imageConfig struct {
	Name        string    `json:"name"`
	Version     string    `json:"version"`
	Arch        string    `json:"arch"`
	Mode        string    `json:"mode"`
	Cmdline     string    `json:"cmdline"`
	Created     time.Time `json:"created"`
	Description string    `json:"description"`
}

var archRE = regexp.MustCompile(`^[a-z0-9_]{1,32}$`)

// config checks spec and returns the config it describes, with defaults.
func (spec ImportSpec) config(now time.Time) (imageConfig, error) {
	c, err := spec.baseConfig(now)
	if err != nil {
		return c, err
	}
	present := map[string]bool{}
	for role, path := range spec.Files {
		if path == "" {
			if _, ok := roleMediaType(role); ok {
				return c, fmt.Errorf("artifact %s: empty path", role)
			}
		}
		present[role] = true
	}
	for role, src := range spec.Readers {
		if present[role] {
			return c, fmt.Errorf("artifact %s: given both as a file and as a reader", role)
		}
		if src.R == nil {
			return c, fmt.Errorf("artifact %s: nil reader", role)
		}
		present[role] = true
	}
	if err := checkRoles(c.Mode, present); err != nil {
		return c, err
	}
	return c, nil
}

// baseConfig checks everything in spec but its artifacts.
func (spec ImportSpec) baseConfig(now time.Time) (imageConfig, error) {
	c := imageConfig{
		Name:        spec.Name,
		Version:     spec.Version,
		Arch:        spec.Arch,
		Mode:        spec.Mode,
		Cmdline:     spec.Cmdline,
		Created:     spec.Created,
		Description: spec.Description,
	}
	if c.Arch == "" {
		c.Arch = DefaultArch
	}
	if c.Mode == "" {
		c.Mode = ModeMemory
	}
	if err := c.check(); err != nil {
		return c, err
	}
	if c.Created.IsZero() {
		c.Created = now
	}
	// RFC 3339 without fractions, in UTC: what the format promises.
	c.Created = c.Created.UTC().Truncate(time.Second)

	return c, nil
}

// check checks a config's fields, whoever wrote it (an import here, or
// the phoenix that pushed a pulled version).
func (c imageConfig) check() error {
	if err := checkName(c.Name); err != nil {
		return err
	}
	if err := checkVersion(c.Version); err != nil {
		return err
	}
	if !archRE.MatchString(c.Arch) {
		return fmt.Errorf("bad arch %q: want a GOARCH-style name like amd64 or arm64", c.Arch)
	}
	if c.Mode != ModeMemory && c.Mode != ModeDisk {
		return fmt.Errorf("bad mode %q: want %q or %q", c.Mode, ModeMemory, ModeDisk)
	}
	// The command line ends up inside an iPXE script line; a control
	// character there is never intended and could end the line.
	if i := strings.IndexFunc(c.Cmdline, func(r rune) bool { return r < 0x20 || r == 0x7f }); i >= 0 {
		return fmt.Errorf("bad cmdline: control character at byte %d", i)
	}
	return nil
}

// checkRoles checks that present names only known roles and every role
// that mode requires.
func checkRoles(mode string, present map[string]bool) error {
	for role := range present {
		if _, ok := roleMediaType(role); !ok {
			return fmt.Errorf("unknown artifact role %q: want kernel, initrd, rootfs or disk", role)
		}
	}
	if !present[RoleKernel] {
		return fmt.Errorf("artifact %s: required", RoleKernel)
	}
	if mode == ModeDisk && !present[RoleDisk] {
		return fmt.Errorf("artifact %s: required in mode %s", RoleDisk, ModeDisk)
	}
	return nil
}

// sameContent reports whether a and b differ only in their created time and
// therefore digest, and describes the first difference if not.
func sameContent(a, b Image) (bool, string) {
	switch {
	case a.Arch != b.Arch:
		return false, fmt.Sprintf("arch %q != %q", a.Arch, b.Arch)
	case a.Mode != b.Mode:
		return false, fmt.Sprintf("mode %q != %q", a.Mode, b.Mode)
	case a.Cmdline != b.Cmdline:
		return false, fmt.Sprintf("cmdline %q != %q", a.Cmdline, b.Cmdline)
	case a.Description != b.Description:
		return false, fmt.Sprintf("description %q != %q", a.Description, b.Description)
	}
	for _, r := range roles {
		x, xok := a.Artifact(r.name)
		y, yok := b.Artifact(r.name)
		switch {
		case xok != yok:
			return false, fmt.Sprintf("%s present %v != %v", r.name, xok, yok)
		case x.Digest != y.Digest:
			return false, fmt.Sprintf("%s %s != %s", r.name, x.Digest, y.Digest)
		}
	}
	return true, ""
}
