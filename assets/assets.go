// Package assets holds the files phoenix embeds in its binary: today the iPXE
// script templates (ipxe/*.tmpl); the demo image recipe lives under demo/.
//
// It is not a renderer: boot/ipxe parses and executes the templates and owns
// the escaping rules for everything that is substituted into them.
package assets

import "embed"

// IPXE holds the iPXE script templates, embedded so that the scripts a host
// boots with always match the binary that renders them: a boot server that is
// rebuilt from an image cannot lose or drift from its templates, and nothing
// has to be installed next to the binary.
//
//go:embed ipxe/*.tmpl
var IPXE embed.FS
