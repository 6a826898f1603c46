// Package ipxe renders the per-host boot scripts phoenix serves: boot an
// image, boot from the local disk, refuse an unknown MAC, or explain an error.
// It writes them in two dialects: iPXE scripts (IPXE), fetched over HTTP by
// the iPXE phoenix hands to firmware, and GRUB configs (GRUB), fetched over
// TFTP by the signed GRUB of the Secure Boot chain (firmware → shim → GRUB),
// which cannot run an unsigned iPXE.
//
// Every value substituted into a script goes through a template func that
// validates or formats it, because iPXE gives meaning to many characters a
// host name, command line or URL could carry: whitespace splits arguments,
// "${...}" expands settings, a word starting with '#' starts a comment, the
// words "||", "&&" and ";" chain commands, a leading '-' is an option, and a
// newline starts a new command. GRUB's script language has the same traps
// and globbing on top; there every value also sits in single quotes. A value
// that does not fit its grammar fails the render; only free text for echo
// lines is rewritten instead (see RenderError). A failed render writes
// nothing, so a half script never runs.
//
// The package does not decide what a host boots (that is boot/httpboot and
// the fleet) and does not fetch anything; the templates live in package assets.
package ipxe

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"text/template"

	"github.com/phoenixboot/phoenix/assets"
)

// BootParams is everything the boot script needs. The server fills it in from
// its hosts and images; the renderer trusts none of it.
type BootParams struct {
	Host        string           // host name from the hosts file
	MAC         net.HardwareAddr // the MAC that asked
	ImageRef    string           // NAME:VERSION
	ImageDigest string           // manifest digest, sha256:<64 hex>
	KernelURL   string           // absolute http(s) URL of the kernel
	InitrdURL   string           // absolute http(s) URL of the initrd
	// Cmdline is the image's kernel command line (from its manifest),
	// appended word by word after validation.
	Cmdline string
	// Params are the phoenix.* kernel parameters added by the server,
	// rendered after Cmdline as key=value, sorted by key so that the same
	// inputs always give the same script.
	Params map[string]string
}

// Grammars of the values that may reach a script. None of them admits
// whitespace, '$', '{', '}', '#', '|', '&', ';', quotes or backslashes.
var (
	hostRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`)
	refRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,254}$`)
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	// wordRE is one kernel command line word (or parameter value): the
	// characters Linux command lines use in practice, minus quotes, which
	// iPXE would pass through literally and Linux would then interpret.
	wordRE     = regexp.MustCompile(`^[A-Za-z0-9._,:/=+@%~^!*\[\]-]*$`)
	paramKeyRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$`)
	urlRE      = regexp.MustCompile(`^[A-Za-z0-9._~:/?=%+,@!*\[\]-]+$`)
)

const (
	maxURLLen     = 2048
	maxCmdlineLen = 4096 // Linux's COMMAND_LINE_SIZE on x86 is 2048; leave room for params, fail beyond
	maxTextLen    = 400
)

// CheckHost reports whether name may be used as a host name in a script:
// 1-253 of [A-Za-z0-9._-], starting with a letter or digit (so that it can
// never be read as an option).
func CheckHost(name string) error {
	if !hostRE.MatchString(name) {
		return fmt.Errorf("bad host name %q: want 1-253 of [A-Za-z0-9._-], starting with [A-Za-z0-9]", name)
	}
	return nil
}

func fmtHost(name string) (string, error) {
	if err := CheckHost(name); err != nil {
		return "", err
	}
	return name, nil
}

// fmtMAC formats a parsed hardware address; String only ever emits hex digits
// and colons, so only the length needs checking.
func fmtMAC(mac net.HardwareAddr) (string, error) {
	if len(mac) == 0 || len(mac) > 20 {
		return "", fmt.Errorf("bad mac %q: want 1-20 bytes", mac.String())
	}
	return mac.String(), nil
}

func fmtRef(ref string) (string, error) {
	if !refRE.MatchString(ref) {
		return "", fmt.Errorf("bad image ref %q", ref)
	}
	return ref, nil
}

func fmtDigest(d string) (string, error) {
	if !digestRE.MatchString(d) {
		return "", fmt.Errorf("bad digest %q: want sha256:<64 lowercase hex digits>", d)
	}
	return d, nil
}

// fmtURL accepts only absolute http(s) URLs without credentials or fragment
// whose every character is inert to iPXE's parser.
func fmtURL(s string) (string, error) {
	if len(s) > maxURLLen || !urlRE.MatchString(s) {
		return "", fmt.Errorf("bad url %q: characters outside [A-Za-z0-9._~:/?=%%+,@!*[]-]", s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("bad url %q: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("bad url %q: want http or https", s)
	}
	if u.Host == "" || u.User != nil || u.Opaque != "" {
		return "", fmt.Errorf("bad url %q: want scheme://host/path without credentials", s)
	}
	return s, nil
}

// fmtCmdline validates the image's command line word by word and returns it
// with a leading space (or empty), ready to follow "initrd=initrd". Words are
// separated by spaces only: a tab or newline is an error, not a separator,
// so a line break in a manifest can never start a new iPXE command.
func fmtCmdline(cmdline string) (string, error) {
	if len(cmdline) > maxCmdlineLen {
		return "", fmt.Errorf("bad command line: %d bytes, want at most %d", len(cmdline), maxCmdlineLen)
	}
	var b strings.Builder
	for _, w := range strings.Split(cmdline, " ") {
		if w == "" {
			continue
		}
		if err := checkWord(w); err != nil {
			return "", fmt.Errorf("bad command line: %w", err)
		}
		b.WriteByte(' ')
		b.WriteString(w)
	}
	return b.String(), nil
}

func checkWord(w string) error {
	if !wordRE.MatchString(w) {
		return fmt.Errorf("word %q: characters outside [A-Za-z0-9._,:/=+@%%~^!*[]-]", w)
	}
	// iPXE's getopt stops at the first non-option, and the kernel URL comes
	// first, so a leading '-' is harmless today; refusing it keeps that true
	// if the template ever changes.
	if strings.HasPrefix(w, "-") {
		return fmt.Errorf("word %q: must not start with '-'", w)
	}
	return nil
}

// fmtParams renders params as " key=value" pairs sorted by key.
func fmtParams(params map[string]string) (string, error) {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		if !paramKeyRE.MatchString(k) {
			return "", fmt.Errorf("bad kernel parameter name %q", k)
		}
		w := k + "=" + params[k]
		if err := checkWord(w); err != nil {
			return "", fmt.Errorf("bad kernel parameter %s: %w", k, err)
		}
		b.WriteByte(' ')
		b.WriteString(w)
	}
	if b.Len() > maxCmdlineLen {
		return "", fmt.Errorf("bad kernel parameters: %d bytes, want at most %d", b.Len(), maxCmdlineLen)
	}
	return b.String(), nil
}

// SafeText rewrites free text (an error message, say) so that it can follow
// "echo phoenix: " on one script line: every character outside
// [A-Za-z0-9 .,:/_=+@()-] becomes '?', and the result is cut to 400 bytes.
// Text is rewritten rather than refused because it is only ever displayed.
func SafeText(s string) string {
	var b strings.Builder
	for _, r := range s {
		if b.Len() >= maxTextLen {
			b.WriteString("...")
			break
		}
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			strings.ContainsRune(" .,:/_=+@()-", r):
			b.WriteRune(r)
		default:
			b.WriteByte('?')
		}
	}
	return b.String()
}

// retries are the waits, in seconds, before each fetch attempt.
func retries() []int { return []int{0, 2, 5} }

// funcs are the only way a template may print a value: each validates (or,
// for text, rewrites) its input. TestTemplatesOnlyPrintThroughFuncs checks
// that the templates print nothing else.
var funcs = template.FuncMap{
	"host":    fmtHost,
	"mac":     fmtMAC,
	"ref":     fmtRef,
	"digest":  fmtDigest,
	"url":     fmtURL,
	"cmdline": fmtCmdline,
	"params":  fmtParams,
	"text":    SafeText,
	"retries": retries,
}

// grubFuncs are funcs for GRUB configs: funcs' grammars, plus TFTP paths
// for kernel and initrd, and command line words single-quoted.
var grubFuncs = func() template.FuncMap {
	fm := maps.Clone(funcs)
	fm["path"] = fmtBlobPath
	fm["cmdline"] = func(c string) (string, error) { return quoteWords(fmtCmdline(c)) }
	fm["params"] = func(p map[string]string) (string, error) { return quoteWords(fmtParams(p)) }
	return fm
}()

// Dialect is the boot loader a script is written for.
type Dialect struct {
	name      string // the templates' middle extension: boot.<name>.tmpl
	templates *template.Template
}

// The two dialects. IPXE's kernel and initrd locations are http(s) URLs;
// GRUB's are TFTP paths of blobs (BlobPath), read from the server GRUB
// was loaded from.
var (
	IPXE = Dialect{"ipxe", parseTemplates(assets.IPXE, "ipxe/*.tmpl", funcs)}
	GRUB = Dialect{"grub", parseTemplates(assets.GRUB, "grub/*.tmpl", grubFuncs)}
)

func parseTemplates(fsys fs.FS, glob string, fm template.FuncMap) *template.Template {
	return template.Must(template.New("").Funcs(fm).Option("missingkey=error").ParseFS(fsys, glob))
}

// String names the dialect ("ipxe" or "grub").
func (d Dialect) String() string { return d.name }

// render executes one template into a buffer and copies it to w only when
// the whole script rendered.
func (d Dialect) render(w io.Writer, kind string, data any) error {
	name := kind + "." + d.name + ".tmpl"
	var buf bytes.Buffer
	if err := d.templates.ExecuteTemplate(&buf, name, data); err != nil {
		var execErr template.ExecError
		if errors.As(err, &execErr) && errors.Unwrap(execErr.Err) != nil {
			// Strip text/template's position prefix: the caller wants the
			// validation error, which names the offending value.
			err = errors.Unwrap(execErr.Err)
		}
		return fmt.Errorf("render %s: %w", name, err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// RenderBoot writes the script that boots p's image. In iPXE: fetch the
// kernel with p's command line and parameters (retrying twice), fetch the
// initrd under the name "initrd" (which 2019 iPXE on UEFI needs on the
// command line as initrd=initrd), and boot. In GRUB: load both over TFTP
// (which retransmits by itself) and boot. If a fetch fails for good, the
// script exits so that the firmware tries its next boot device.
func (d Dialect) RenderBoot(w io.Writer, p BootParams) error {
	return d.render(w, "boot", p)
}

// RenderUnknown writes the script for a MAC phoenix has no host for: it
// names the MAC, says how to register it and exits without booting anything.
func (d Dialect) RenderUnknown(w io.Writer, mac net.HardwareAddr, serverURL string) error {
	return d.render(w, "unknown", struct {
		MAC       net.HardwareAddr
		ServerURL string
	}{mac, serverURL})
}

// RenderLocal writes the script for a known host that should boot from its
// local disk: it says so and exits to the firmware's next boot device.
func (d Dialect) RenderLocal(w io.Writer, host string) error {
	return d.render(w, "localboot", struct{ Host string }{host})
}

// RenderError writes a script that echoes msg (through SafeText) and exits
// with an error, for requests the server cannot build a boot script for. It
// never falls back to another image.
func (d Dialect) RenderError(w io.Writer, msg string) error {
	return d.render(w, "error", struct{ Message string }{msg})
}

// BlobPath is the TFTP path under which the server serves the blob with
// digest ("sha256:<hex>"): the same path as over HTTP, /blobs/sha256/<hex>.
func BlobPath(digest string) (string, error) {
	h, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || !digestRE.MatchString(digest) {
		return "", fmt.Errorf("bad artifact digest %q", digest)
	}
	return "/blobs/sha256/" + h, nil
}

var blobPathRE = regexp.MustCompile(`^/blobs/sha256/[0-9a-f]{64}$`)

func fmtBlobPath(p string) (string, error) {
	if !blobPathRE.MatchString(p) {
		return "", fmt.Errorf("bad blob path %q: want /blobs/sha256/<64 lowercase hex digits>", p)
	}
	return p, nil
}

// quoteWords single-quotes each word of a validated " w1 w2" list for
// GRUB. The word grammar has no quote, so no word can end its quoting.
func quoteWords(s string, err error) (string, error) {
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, w := range strings.Fields(s) {
		b.WriteString(" '")
		b.WriteString(w)
		b.WriteByte('\'')
	}
	return b.String(), nil
}
