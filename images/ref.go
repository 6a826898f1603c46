package images

import (
	"fmt"
	"regexp"
	"strings"
)

// Name and version grammars. Both are subsets of what an OCI tag and a
// repository path component allow, so a version can be pushed to a registry
// as NAME:VERSION unchanged, and neither can contain '/', ':' or "..", so
// they are safe in URLs and file names.
var (
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
	versionRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	digestRE  = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// ParseRef splits "NAME:VERSION" and checks both parts. NAME matches
// [a-z0-9][a-z0-9._-]{0,63}; VERSION matches [A-Za-z0-9_][A-Za-z0-9._-]{0,127}.
func ParseRef(ref string) (name, version string, err error) {
	name, version, ok := strings.Cut(ref, ":")
	if !ok {
		return "", "", fmt.Errorf("image ref %q: want NAME:VERSION", ref)
	}
	if err := checkName(name); err != nil {
		return "", "", fmt.Errorf("image ref %q: %w", ref, err)
	}
	if err := checkVersion(version); err != nil {
		return "", "", fmt.Errorf("image ref %q: %w", ref, err)
	}
	return name, version, nil
}

func checkName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("bad name %q: want 1-64 of [a-z0-9._-], starting with [a-z0-9]", name)
	}
	return nil
}

func checkVersion(version string) error {
	if !versionRE.MatchString(version) {
		return fmt.Errorf("bad version %q: want 1-128 of [A-Za-z0-9._-], starting with [A-Za-z0-9_]", version)
	}
	return nil
}

// checkDigest accepts only "sha256:" and 64 lowercase hex digits, so that a
// digest can be joined to a directory without any chance of traversal.
func checkDigest(digest string) error {
	if !digestRE.MatchString(digest) {
		return fmt.Errorf("bad digest %q: want sha256:<64 lowercase hex digits>", digest)
	}
	return nil
}

// CheckRef checks anything Store.Resolve accepts: "NAME:VERSION",
// "NAME@CHANNEL" or a manifest digest "sha256:<hex>". Hosts files and
// fleet files use it, so that a host can follow a channel.
func CheckRef(ref string) error {
	if name, channel, ok := strings.Cut(ref, "@"); ok {
		if err := checkName(name); err != nil {
			return fmt.Errorf("image ref %q: %w", ref, err)
		}
		if err := checkChannel(channel); err != nil {
			return fmt.Errorf("image ref %q: %w", ref, err)
		}
		return nil
	}
	if strings.HasPrefix(ref, "sha256:") {
		return checkDigest(ref)
	}
	_, _, err := ParseRef(ref)
	return err
}
