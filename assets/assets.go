// Package assets holds the files phoenix embeds in its binary: the iPXE
// script templates (ipxe/*.tmpl), the GRUB config templates of the Secure
// Boot chain (grub/*.tmpl) and the web dashboard (web/); the demo image
// recipe lives under demo/.
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

// GRUB holds the templates of the GRUB configs served over TFTP to hosts
// that boot through shim and Debian's signed GRUB (Secure Boot), embedded
// for the same reason.
//
//go:embed grub/*.tmpl
var GRUB embed.FS

// Web is the dashboard phoenix serve shows at / (web/index.html, with its
// script and style under /ui/): a read-only view of the fleet API. It is
// embedded for the same reason as the templates: the page always matches
// the API of the binary that serves it.
//
//go:embed web
var Web embed.FS
