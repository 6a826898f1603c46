package main

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"aead.dev/minisign"
	"github.com/spf13/cobra"

	"github.com/phoenixboot/phoenix/fleet"
	"github.com/phoenixboot/phoenix/images"
	"github.com/phoenixboot/phoenix/images/iso"
)

func newImageCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Manage the versioned image store (through the server's API, or --state DIR offline)",
		Long: `Every image subcommand talks to the running server's API (--server, --token).
With --state DIR it opens the state volume directly instead, which works only
while no server runs on it (the volume is locked): for first setup and labs.`,
	}
	cmd.PersistentFlags().String("state", "", "offline: open this state directory directly (no server may run on it)")
	cmd.PersistentFlags().Bool("state-allow-shared", false, "offline: allow a state directory that is not a mount point (labs and tests only)")
	addClientFlags(cmd)
	cmd.AddCommand(newImageImportCmd(), newImageLsCmd(), newImageShowCmd(), newImagePromoteCmd(),
		newImageRollbackCmd(), newImageHistoryCmd(), newImageVerifyCmd(), newImageRmCmd(),
		newImageGCCmd(), newImagePushCmd(), newImagePullCmd(), newImageSignCmd(), newImageKeygenCmd())
	return cmd
}

// imageClient returns an API client: of the server, or with --state of an
// in-process API over the store opened directly (the same code path, so
// offline and online behave alike). done releases the state volume.
func imageClient(cmd *cobra.Command) (c *apiClient, done func(), err error) {
	dir, _ := cmd.Flags().GetString("state")
	if dir == "" {
		return newClient(cmd), func() {}, nil
	}
	shared, _ := cmd.Flags().GetBool("state-allow-shared")
	st, err := fleet.OpenState(dir, shared, logger(cmd))
	if err != nil {
		if errors.Is(err, fleet.ErrLocked) {
			err = fmt.Errorf("%w (a server runs on it: drop --state and use its API)", err)
		}
		return nil, nil, err
	}
	store, err := images.Open(st.Join("images"), st.Join("tmp"))
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	// The fleet's hosts, as the server last saw them, so that rm and gc
	// refuse a version a host runs or is to run, as they do online.
	db, err := fleet.OpenStore(st.Join("phoenix.db"))
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	ctrl := &fleet.Controller{Store: db, Images: store, Log: logger(cmd)}
	if err := ctrl.Load(); err != nil {
		db.Close()
		st.Close()
		return nil, nil, err
	}
	mux := http.NewServeMux()
	(&images.API{Store: store, Users: ctrl.HostsUsing}).Register(mux)
	c = &apiClient{server: "http://state", http: &http.Client{Transport: handlerTransport{mux}}}
	return c, func() { db.Close(); st.Close() }, nil
}

// handlerTransport answers requests with an in-process handler. The
// request body streams straight into the handler; answers are small JSON.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	r := req.Clone(req.Context())
	r.RemoteAddr = "local"
	t.h.ServeHTTP(rec, r)
	if req.Body != nil {
		req.Body.Close()
	}
	return rec.Result(), nil
}

// withImageClient runs fn with an image API client.
func withImageClient(cmd *cobra.Command, fn func(c *apiClient) error) error {
	c, done, err := imageClient(cmd)
	if err != nil {
		return err
	}
	defer done()
	return fn(c)
}

func who() string {
	u := strconv.Itoa(os.Getuid())
	if cu, err := user.Current(); err == nil {
		u = cu.Username
	}
	h, _ := os.Hostname()
	return u + "@" + h
}

func refPath(ref string) string { return url.PathEscape(ref) }

func addOutputFlag(cmd *cobra.Command, output *string) {
	cmd.Flags().StringVarP(output, "output", "o", "table", "output format: table or json")
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// source is one artifact to upload.
type source struct {
	role, name string
	r          io.Reader
	size       int64
	close      func() error
}

// dirPatterns find artifacts in an --dir directory, by role, first match
// wins; two files matching one pattern are ambiguous.
var dirPatterns = []struct{ role, pattern string }{
	{images.RoleKernel, "vmlinuz*"},
	{images.RoleKernel, "bzImage"},
	{images.RoleInitrd, "initrd*"},
	{images.RoleInitrd, "initramfs*"},
	{images.RoleRootfs, "rootfs.squashfs"},
	{images.RoleDisk, "disk.raw*"},
}

func findInDir(dir string) (map[string]string, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("--dir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("--dir %s: not a directory", dir)
	}
	out := map[string]string{}
	for _, p := range dirPatterns {
		if _, ok := out[p.role]; ok {
			continue
		}
		m, err := filepath.Glob(filepath.Join(dir, p.pattern))
		if err != nil {
			return nil, err
		}
		switch len(m) {
		case 0:
		case 1:
			out[p.role] = m[0]
		default:
			return nil, fmt.Errorf("--dir %s: %s is ambiguous: %s (name it with --%s)", dir, p.role, strings.Join(m, ", "), p.role)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--dir %s: no vmlinuz*, initrd*, rootfs.squashfs or disk.raw* in it", dir)
	}
	return out, nil
}

func newImageImportCmd() *cobra.Command {
	var (
		arch, mode, cmdline, description string
		dir, isoPath, kernelPath         string
		initrdPath                       string
		paths                            = map[string]*string{}
	)
	cmd := &cobra.Command{
		Use:   "import NAME:VERSION (--kernel FILE [--initrd FILE] [--rootfs FILE] [--disk FILE] | --dir DIR | --iso FILE)",
		Short: "Import artifacts as a new, read-only image version (streamed to the server)",
		Example: `  phoenix image import demo:1 --kernel build/demo/vmlinuz --initrd build/demo/initrd.img --cmdline 'console=ttyS0'
  phoenix image import debian:12.8 --iso debian-12.8.0-amd64-netinst.iso --cmdline 'console=ttyS0'
  phoenix image import app:7 --dir out/ --mode disk`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, version, err := images.ParseRef(args[0])
			if err != nil {
				return err
			}
			files := map[string]string{}
			if dir != "" {
				if files, err = findInDir(dir); err != nil {
					return err
				}
			}
			for role, p := range paths {
				if *p != "" {
					files[role] = *p // explicit flags win over --dir
				}
			}
			var srcs []source
			defer func() {
				for _, s := range srcs {
					s.close()
				}
			}()
			if isoPath != "" {
				isrcs, err := isoSources(isoPath, kernelPath, initrdPath, files)
				if err != nil {
					return err
				}
				srcs = append(srcs, isrcs...)
			} else if kernelPath != "" || initrdPath != "" {
				return errors.New("--kernel-path and --initrd-path need --iso")
			}
			for _, role := range []string{images.RoleKernel, images.RoleInitrd, images.RoleRootfs, images.RoleDisk} {
				p, ok := files[role]
				if !ok {
					continue
				}
				f, err := os.Open(p)
				if err != nil {
					return fmt.Errorf("%s: %w", role, err)
				}
				fi, err := f.Stat()
				if err == nil && !fi.Mode().IsRegular() {
					err = errors.New("not a regular file")
				}
				if err != nil {
					f.Close()
					return fmt.Errorf("%s %s: %w", role, p, err)
				}
				srcs = append(srcs, source{role: role, name: filepath.Base(p), r: f, size: fi.Size(), close: f.Close})
			}
			if !slices.ContainsFunc(srcs, func(s source) bool { return s.role == images.RoleKernel }) {
				return errors.New("no kernel: give --kernel, --dir or --iso")
			}
			q := url.Values{"name": {name}, "version": {version}, "arch": {arch}, "mode": {mode}, "cmdline": {cmdline}, "description": {description}}
			for _, s := range srcs {
				q.Set("size."+s.role, strconv.FormatInt(s.size, 10))
			}
			return withImageClient(cmd, func(c *apiClient) error {
				img, err := upload(cmd, c, q, srcs)
				if err != nil {
					return err
				}
				fmt.Printf("%s %s\n", img.Ref(), img.Digest)
				return nil
			})
		},
	}
	f := cmd.Flags()
	for _, role := range []string{images.RoleKernel, images.RoleInitrd, images.RoleRootfs, images.RoleDisk} {
		paths[role] = new(string)
	}
	f.StringVar(paths[images.RoleKernel], "kernel", "", "kernel file")
	f.StringVar(paths[images.RoleInitrd], "initrd", "", "initrd file")
	f.StringVar(paths[images.RoleRootfs], "rootfs", "", "root filesystem (squashfs)")
	f.StringVar(paths[images.RoleDisk], "disk", "", "raw disk image")
	f.StringVar(&dir, "dir", "", "directory holding vmlinuz*, initrd*, rootfs.squashfs, disk.raw*")
	f.StringVar(&isoPath, "iso", "", "distribution ISO to take kernel and initrd from (layout detected)")
	f.StringVar(&kernelPath, "kernel-path", "", "with --iso: kernel path inside the ISO")
	f.StringVar(&initrdPath, "initrd-path", "", "with --iso: initrd path inside the ISO")
	f.StringVar(&cmdline, "cmdline", "", "kernel command line")
	f.StringVar(&arch, "arch", "amd64", "architecture")
	f.StringVar(&mode, "mode", "memory", "boot mode: memory or disk")
	f.StringVar(&description, "description", "", "free-form description")
	return cmd
}

// isoSources finds the kernel and initrd in an ISO (by its layout, or at
// the given paths); roles already in files come from there instead.
func isoSources(path, kernelPath, initrdPath string, files map[string]string) ([]source, error) {
	img, err := iso.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--iso %s: %w", path, err)
	}
	var srcs []source
	ok := false
	defer func() {
		if !ok {
			for _, s := range srcs {
				s.close()
			}
			img.Close()
		}
	}()
	want := map[string]string{images.RoleKernel: kernelPath, images.RoleInitrd: initrdPath}
	if kernelPath == "" || initrdPath == "" {
		l, err := img.Detect()
		if err != nil {
			return nil, fmt.Errorf("--iso %s: %w (name the files with --kernel-path and --initrd-path)", path, err)
		}
		if want[images.RoleKernel] == "" {
			want[images.RoleKernel] = l.Kernel
		}
		if want[images.RoleInitrd] == "" {
			want[images.RoleInitrd] = l.Initrd
		}
	}
	for _, role := range []string{images.RoleKernel, images.RoleInitrd} {
		if _, given := files[role]; given || want[role] == "" {
			continue
		}
		r, size, err := img.File(want[role])
		if err != nil {
			return nil, fmt.Errorf("--iso %s: %s %s: %w", path, role, want[role], err)
		}
		srcs = append(srcs, source{role: role, name: filepath.Base(want[role]), r: r, size: size, close: func() error { return nil }})
	}
	// The last source closes the ISO once everything is sent.
	srcs = append(srcs, source{role: "", close: img.Close})
	ok = true
	return srcs, nil
}

// upload streams every source as one multipart request: the server writes
// each part to disk as it arrives, so nothing is held in memory here or
// there. A progress bar goes to stderr when it is a terminal.
func upload(cmd *cobra.Command, c *apiClient, q url.Values, srcs []source) (images.Image, error) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	tty := isTerminal(os.Stderr)
	go func() {
		buf := make([]byte, 1<<20)
		for _, s := range srcs {
			if s.role == "" {
				continue
			}
			part, err := mw.CreateFormFile(s.role, s.name)
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			var r io.Reader = s.r
			if tty {
				r = &progress{r: s.r, label: s.role, total: s.size, start: time.Now()}
			}
			_, err = io.CopyBuffer(part, struct{ io.Reader }{r}, buf)
			if tty {
				fmt.Fprintln(os.Stderr)
			}
			if err != nil {
				pw.CloseWithError(fmt.Errorf("%s: %w", s.role, err))
				return
			}
		}
		pw.CloseWithError(mw.Close())
	}()
	var img images.Image
	err := c.do(cmd, http.MethodPost, "/api/v1/images?"+q.Encode(), pr, mw.FormDataContentType(), &img)
	pr.CloseWithError(errors.New("upload ended")) // stops the writer if the server answered early
	return img, err
}

// isTerminal reports whether f is a character device: a terminal, not a
// pipe or file, so progress output never litters logs.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progress draws a one-line progress bar as bytes pass through.
type progress struct {
	r           io.Reader
	label       string
	total, done int64
	start, last time.Time
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	if now := time.Now(); now.Sub(p.last) > 200*time.Millisecond || err == io.EOF {
		p.last = now
		pct := 100.0
		if p.total > 0 {
			pct = float64(p.done) * 100 / float64(p.total)
		}
		rate := float64(p.done) / max(now.Sub(p.start).Seconds(), 1e-3) / (1 << 20)
		const width = 30
		fill := int(pct * width / 100)
		fill = min(max(fill, 0), width)
		fmt.Fprintf(os.Stderr, "\r%-7s [%s%s] %5.1f%% %s / %s %6.1f MiB/s", p.label,
			strings.Repeat("=", fill), strings.Repeat(" ", width-fill), pct, humanSize(p.done), humanSize(p.total), rate)
	}
	return n, err
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func newImageLsCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List image versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withImageClient(cmd, func(c *apiClient) error {
				var list []images.ImageInfo
				if err := c.getJSON(cmd, "/api/v1/images", &list); err != nil {
					return err
				}
				if output == "json" {
					return printJSON(list)
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "IMAGE\tDIGEST\tARCH\tMODE\tSIZE\tCHANNELS\tSIGNED\tCREATED")
				for _, i := range list {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%v\t%s\n", i.Ref(), shortDigest(i.Digest), i.Arch, i.Mode, humanSize(i.Size),
						dashIfEmpty(strings.Join(i.Channels, ",")), i.Signed, i.Created.Local().Format("2006-01-02 15:04"))
				}
				return tw.Flush()
			})
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newImageShowCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "show NAME:VERSION|NAME@CHANNEL|DIGEST",
		Short: "Show an image version: artifacts, sizes, digests, channels, hosts using it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withImageClient(cmd, func(c *apiClient) error {
				var i images.ImageInfo
				if err := c.getJSON(cmd, "/api/v1/images/"+refPath(args[0]), &i); err != nil {
					return err
				}
				if output == "json" {
					return printJSON(i)
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "image:\t%s\ndigest:\t%s\narch:\t%s\nmode:\t%s\ncmdline:\t%s\ncreated:\t%s\n", i.Ref(), i.Digest, i.Arch, i.Mode, i.Cmdline, i.Created.Local().Format(time.RFC3339))
				if i.Description != "" {
					fmt.Fprintf(tw, "description:\t%s\n", i.Description)
				}
				fmt.Fprintf(tw, "channels:\t%s\nsigned:\t%v\nhosts:\t%s\nsize:\t%s\n", dashIfEmpty(strings.Join(i.Channels, ", ")), i.Signed,
					dashIfEmpty(strings.Join(i.Users, ", ")), humanSize(i.Size))
				fmt.Fprintln(tw, "\nARTIFACT\tSIZE\tDIGEST\tMEDIA TYPE")
				for _, a := range i.Artifacts {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Role, humanSize(a.Size), a.Digest, a.MediaType)
				}
				return tw.Flush()
			})
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func printMove(m images.ChannelMove) {
	from := m.FromVersion
	if m.From == "" {
		from = "(new)"
	}
	if m.From == m.To {
		fmt.Printf("%s@%s already at %s (%s)\n", m.Name, m.Channel, m.ToVersion, shortDigest(m.To))
		return
	}
	fmt.Printf("%s@%s: %s -> %s (%s)\n", m.Name, m.Channel, from, m.ToVersion, shortDigest(m.To))
}

func newImagePromoteCmd() *cobra.Command {
	var channel string
	cmd := &cobra.Command{
		Use:     "promote NAME:VERSION --channel CHANNEL",
		Short:   "Point a channel at a version (hosts following NAME@CHANNEL move to it)",
		Example: "  phoenix image promote demo:2 --channel stable",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withImageClient(cmd, func(c *apiClient) error {
				var m images.ChannelMove
				if err := c.sendJSON(cmd, http.MethodPost, "/api/v1/images/"+refPath(args[0])+"/promote", map[string]string{"channel": channel, "who": who()}, &m); err != nil {
					return err
				}
				printMove(m)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&channel, "channel", "", "channel name, e.g. stable or canary (required)")
	cmd.MarkFlagRequired("channel")
	return cmd
}

func newImageRollbackCmd() *cobra.Command {
	var channel string
	cmd := &cobra.Command{
		Use:     "rollback NAME --channel CHANNEL",
		Short:   "Point a channel back at the version it had before its last promotion",
		Example: "  phoenix image rollback demo --channel stable",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withImageClient(cmd, func(c *apiClient) error {
				var m images.ChannelMove
				if err := c.sendJSON(cmd, http.MethodPost, "/api/v1/images/"+refPath(args[0])+"/rollback", map[string]string{"channel": channel, "who": who()}, &m); err != nil {
					return err
				}
				printMove(m)
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&channel, "channel", "", "channel name (required)")
	cmd.MarkFlagRequired("channel")
	return cmd
}

func newImageHistoryCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "history NAME",
		Short: "Show every channel move of an image: who, when, from, to",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withImageClient(cmd, func(c *apiClient) error {
				var h []images.ChannelMove
				if err := c.getJSON(cmd, "/api/v1/images/"+refPath(args[0])+"/history", &h); err != nil {
					return err
				}
				if output == "json" {
					return printJSON(h)
				}
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TIME\tCHANNEL\tKIND\tFROM\tTO\tDIGEST\tWHO")
				for _, m := range h {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Time.Local().Format("2006-01-02 15:04:05"), m.Channel, m.Kind,
						dashIfEmpty(m.FromVersion), m.ToVersion, shortDigest(m.To), m.Who)
				}
				return tw.Flush()
			})
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func newImageVerifyCmd() *cobra.Command {
	var output, keyFile string
	cmd := &cobra.Command{
		Use:   "verify [REF] [--key PUBKEY]",
		Short: "Re-hash every blob (of REF, or all); quarantine corrupt ones; check a signature with --key",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := map[string]string{}
			if len(args) == 1 {
				req["ref"] = args[0]
			}
			if keyFile != "" {
				b, err := os.ReadFile(keyFile)
				if err != nil {
					return fmt.Errorf("--key: %w", err)
				}
				if _, err := images.ParsePublicKey(b); err != nil {
					return fmt.Errorf("--key %s: %w", keyFile, err)
				}
				req["key"] = string(b)
			}
			return withImageClient(cmd, func(c *apiClient) error {
				var res images.VerifyResult
				if err := c.sendJSON(cmd, http.MethodPost, "/api/v1/images/verify", req, &res); err != nil {
					return err
				}
				if output == "json" {
					if err := printJSON(res); err != nil {
						return err
					}
				} else {
					fmt.Printf("%d blobs, %s re-hashed\n", res.Blobs, humanSize(res.Bytes))
					for _, cb := range res.Corrupt {
						fmt.Printf("CORRUPT %s (content is %s), quarantined; used by %s\n", cb.Digest, cb.Got, dashIfEmpty(strings.Join(cb.Images, ", ")))
					}
					for _, m := range res.Missing {
						fmt.Printf("MISSING %s\n", m)
					}
					if res.Signature != "" {
						fmt.Printf("signature: %s\n", res.Signature)
					}
				}
				switch {
				case !res.OK():
					return fmt.Errorf("verify: %d corrupt, %d missing blobs", len(res.Corrupt), len(res.Missing))
				case res.Signature != "" && res.Signature != "ok":
					return errors.New("verify: bad or missing signature")
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "minisign public key file: also check REF's signature")
	addOutputFlag(cmd, &output)
	return cmd
}

func newImageRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME:VERSION",
		Short: "Remove a version (refused while a channel or host uses it; blobs go at the next gc)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withImageClient(cmd, func(c *apiClient) error {
				var img images.Image
				if err := c.do(cmd, http.MethodDelete, "/api/v1/images/"+refPath(args[0]), nil, "", &img); err != nil {
					return err
				}
				fmt.Printf("removed %s %s\n", img.Ref(), img.Digest)
				return nil
			})
		},
	}
}

func newImageGCCmd() *cobra.Command {
	var output string
	var keep int
	cmd := &cobra.Command{
		Use:   "gc [--keep N]",
		Short: "Delete unreferenced blobs and archived versions beyond the last N of every channel",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withImageClient(cmd, func(c *apiClient) error {
				var rep images.GCReport
				if err := c.sendJSON(cmd, http.MethodPost, "/api/v1/images/gc", map[string]int{"keep": keep}, &rep); err != nil {
					return err
				}
				if output == "json" {
					return printJSON(rep)
				}
				for _, r := range rep.Removed {
					fmt.Printf("removed %s\n", r)
				}
				fmt.Printf("%d blobs deleted, %s freed\n", rep.Blobs, humanSize(rep.Bytes))
				if rep.Quarantined > 0 {
					fmt.Printf("%d corrupt blobs in quarantine (kept for post-mortem)\n", rep.Quarantined)
				}
				return nil
			})
		},
	}
	cmd.Flags().IntVar(&keep, "keep", 3, "versions of every channel's history to keep (the current one always)")
	addOutputFlag(cmd, &output)
	return cmd
}

func newImagePushCmd() *cobra.Command {
	var insecure bool
	cmd := &cobra.Command{
		Use:     "push NAME:VERSION REGISTRY/REPO:TAG",
		Short:   "Push a version to an OCI registry (same manifest digest there)",
		Example: "  phoenix image push demo:2 registry.example.com/phoenix/demo:2",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withImageClient(cmd, func(c *apiClient) error {
				var out struct{ Digest string }
				if err := c.sendJSON(cmd, http.MethodPost, "/api/v1/images/"+refPath(args[0])+"/push", map[string]any{"dest": args[1], "insecure": insecure}, &out); err != nil {
					return err
				}
				fmt.Printf("%s@%s\n", args[1], out.Digest)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&insecure, "insecure", false, "plain HTTP registry")
	return cmd
}

func newImagePullCmd() *cobra.Command {
	var insecure bool
	cmd := &cobra.Command{
		Use:     "pull REGISTRY/REPO:TAG [NAME:VERSION]",
		Short:   "Pull a version from an OCI registry (NAME:VERSION, if given, must match its config)",
		Example: "  phoenix image pull registry.example.com/phoenix/demo:2 demo:2",
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := map[string]any{"source": args[0], "insecure": insecure}
			if len(args) == 2 {
				if _, _, err := images.ParseRef(args[1]); err != nil {
					return err
				}
				req["ref"] = args[1]
			}
			return withImageClient(cmd, func(c *apiClient) error {
				var img images.Image
				if err := c.sendJSON(cmd, http.MethodPost, "/api/v1/images/pull", req, &img); err != nil {
					return err
				}
				fmt.Printf("%s %s\n", img.Ref(), img.Digest)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&insecure, "insecure", false, "plain HTTP registry")
	return cmd
}

// readPrivateKey reads a minisign secret key: encrypted with the password
// in PHOENIX_SIGN_PASSWORD, or unencrypted.
func readPrivateKey(path string) (minisign.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return minisign.PrivateKey{}, err
	}
	pw, havePW := os.LookupEnv("PHOENIX_SIGN_PASSWORD")
	var k minisign.PrivateKey
	if minisign.IsEncrypted(b) {
		if !havePW {
			return k, fmt.Errorf("key %s is encrypted: set PHOENIX_SIGN_PASSWORD", path)
		}
		k, err = minisign.DecryptKey(pw, b)
	} else {
		err = k.UnmarshalText(b)
	}
	if err != nil {
		return k, fmt.Errorf("key %s: %w", path, err)
	}
	return k, nil
}

func newImageSignCmd() *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "sign NAME:VERSION --key SECKEY",
		Short: "Sign a version's manifest digest with a minisign key (the key stays here; only the signature is sent)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			key, err := readPrivateKey(keyFile)
			if err != nil {
				return err
			}
			return withImageClient(cmd, func(c *apiClient) error {
				var i images.ImageInfo
				if err := c.getJSON(cmd, "/api/v1/images/"+refPath(args[0]), &i); err != nil {
					return err
				}
				sig := images.SignDigest(key, i.Ref(), i.Digest)
				var img images.Image
				if err := c.do(cmd, http.MethodPost, "/api/v1/images/"+refPath(i.Digest)+"/signature", strings.NewReader(string(sig)), "text/plain", &img); err != nil {
					return err
				}
				fmt.Printf("signed %s %s with key %016X\n", img.Ref(), img.Digest, key.ID())
				return nil
			})
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "minisign secret key file (password in env PHOENIX_SIGN_PASSWORD if encrypted) (required)")
	cmd.MarkFlagRequired("key")
	return cmd
}

func newImageKeygenCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen --out PREFIX",
		Short: "Make a minisign key pair PREFIX.key (encrypted if PHOENIX_SIGN_PASSWORD is set) and PREFIX.pub",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pub, priv, err := minisign.GenerateKey(rand.Reader)
			if err != nil {
				return err
			}
			var sec []byte
			if pw := os.Getenv("PHOENIX_SIGN_PASSWORD"); pw != "" {
				sec, err = minisign.EncryptKey(pw, priv)
			} else {
				sec, err = priv.MarshalText()
			}
			if err != nil {
				return err
			}
			pubText, err := pub.MarshalText()
			if err != nil {
				return err
			}
			if err := writeNew(out+".key", append(sec, '\n'), 0o600); err != nil {
				return err
			}
			if err := writeNew(out+".pub", append(pubText, '\n'), 0o644); err != nil {
				return err
			}
			fmt.Printf("key %016X: %s.key %s.pub\n", pub.ID(), out, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "phoenix-sign", "file name prefix")
	return cmd
}

// writeNew creates path, refusing to overwrite a key.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// shortDigest abbreviates a digest for tables, like git does.
func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
