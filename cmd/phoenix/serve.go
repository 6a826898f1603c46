package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	"gopkg.in/yaml.v3"

	"github.com/phoenixboot/phoenix/boot/dhcp"
	"github.com/phoenixboot/phoenix/boot/httpboot"
	"github.com/phoenixboot/phoenix/boot/ra"
	"github.com/phoenixboot/phoenix/boot/tftp"
	"github.com/phoenixboot/phoenix/fleet"
	"github.com/phoenixboot/phoenix/fleet/hostlogs"
	"github.com/phoenixboot/phoenix/fleet/timeline"
	"github.com/phoenixboot/phoenix/images"
)

// Boot file names looked up in --ipxe-dir. Debian's ipxe package ships the
// first three; an ARM64 iPXE is served when the operator adds one.
const (
	biosBootFile  = "undionly.kpxe"
	snpBootFile   = "snponly.efi"
	efi64BootFile = "ipxe.efi"
	arm64BootFile = "ipxe-arm64.efi"
)

// uefiBootFile is the x86-64 UEFI iPXE handed out: flag, the name given by
// --efi-boot-file; else snponly.efi when dir has it, else ipxe.efi.
//
// snponly.efi drives the NIC through the firmware's own network driver and
// gives control back to the firmware when a script exits, so a host told
// to boot from its local disk (or an unknown one) goes on to its next boot
// device. Debian's ipxe.efi (iPXE 2019, all its own drivers) never returns
// from exit under OVMF: the machine hangs after "No more network devices"
// (fleet/lab TestE2EDiskUEFI). snponly.efi is also a fifth of the size,
// which a rack's worth of TFTP transfers feels.
func uefiBootFile(dir, flag string) string {
	if flag != "" {
		return flag
	}
	if fi, err := os.Stat(filepath.Join(dir, snpBootFile)); err == nil && fi.Mode().IsRegular() {
		return snpBootFile
	}
	return efi64BootFile
}

// serveOptions are serve's flags; a --config YAML file may set any of them
// by flag name, and flags given on the command line win.
type serveOptions struct {
	config           string
	state            string
	stateAllowShared bool
	iface            string
	serverIP         string
	dhcpMode         string
	dhcpRange        string
	netmask          string
	router           string
	dns              []string
	leaseTime        time.Duration
	reservations     []string
	httpAddr         string
	tftpAddr         string
	ipxeDir          string
	efiBootFile      string
	shimFile         string
	grubFile         string
	hostsFile        string
	routerAdvert     bool
	requireSigned    string
	syslogAddr       string
	hostNetworks     []netip.Prefix
	logCap           int64
}

func newServeCmd() *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the boot server (DHCP, TFTP, HTTP) on a state volume",
		Example: `  phoenix serve --state /var/lib/phoenix --interface eth1 --dhcp-range 10.0.0.100-10.0.0.200 --hosts hosts.yaml
  phoenix serve --config /etc/phoenix/serve.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.config != "" {
				if err := applyConfigFile(cmd.Flags(), o.config); err != nil {
					return err
				}
			}
			return serve(cmd.Context(), logger(cmd), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.config, "config", "", "YAML file whose keys are serve's flag names (flags on the command line win)")
	f.StringVar(&o.state, "state", "", "state directory: must be its own mount point (required)")
	f.BoolVar(&o.stateAllowShared, "state-allow-shared", false, "allow a state directory that is not a mount point (labs and tests only)")
	f.StringVar(&o.iface, "interface", "", "boot network interface to bind DHCP to (and take --server-ip from)")
	f.StringVar(&o.serverIP, "server-ip", "", "address hosts reach phoenix at (default: the interface's first IPv4 address)")
	f.StringVar(&o.dhcpMode, "dhcp", "full", "DHCP mode: full (hand out addresses), proxy (boot info beside another DHCP server), off")
	f.StringVar(&o.dhcpRange, "dhcp-range", "", "full mode: address pool FIRST-LAST")
	f.StringVar(&o.netmask, "netmask", "", "full mode: subnet mask (default: the interface's)")
	f.StringVar(&o.router, "router", "", "full mode: default gateway to hand out (option 3)")
	f.StringSliceVar(&o.dns, "dns", nil, "full mode: DNS servers to hand out (option 6)")
	f.DurationVar(&o.leaseTime, "lease-time", time.Hour, "full mode: lease time")
	f.StringSliceVar(&o.reservations, "reserve", nil, "full mode: static reservation MAC=IP (repeatable)")
	f.StringVar(&o.httpAddr, "http-addr", ":80", "HTTP listen address (iPXE scripts, artifacts, API)")
	f.StringVar(&o.tftpAddr, "tftp-addr", ":69", "TFTP listen address")
	f.StringVar(&o.ipxeDir, "ipxe-dir", "/usr/lib/ipxe", "directory holding undionly.kpxe and snponly.efi or ipxe.efi (Debian package ipxe)")
	f.StringVar(&o.efiBootFile, "efi-boot-file", "", "iPXE file in --ipxe-dir for x86-64 UEFI PXE and HTTP boot (default: snponly.efi if there, else ipxe.efi)")
	f.StringVar(&o.shimFile, "shim-file", "/usr/lib/shim/shimx64.efi.signed", "signed shim for Secure Boot hosts (fleet file secure_boot), served as shimx64.efi (Debian package shim-signed)")
	f.StringVar(&o.grubFile, "grub-file", "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed", "signed network GRUB that shim loads, served as grubx64.efi (Debian package grub-efi-amd64-signed)")
	f.StringVar(&o.hostsFile, "hosts", "", "fleet file (YAML: hosts with name, macs, image NAME:VERSION or NAME@CHANNEL, bmc; rollout policy), applied at start when changed")
	f.StringVar(&o.requireSigned, "require-signed", "", "minisign public key file: boot only image versions it has signed (others get an error script)")
	f.BoolVar(&o.routerAdvert, "router-advert", false, "send IPv6 router advertisements (lifetime 0) on --interface so iPXE skips its ~13 s IPv6 wait")
	f.Func("host-networks", "comma-separated networks (CIDR) hosts live on: reports and log uploads from elsewhere get 403 (default: from anywhere)", func(v string) error {
		for _, c := range strings.Split(v, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(c))
			if err != nil {
				return fmt.Errorf("want CIDRs like 10.99.0.0/24: %w", err)
			}
			o.hostNetworks = append(o.hostNetworks, p.Masked())
		}
		return nil
	})
	f.StringVar(&o.syslogAddr, "syslog-addr", "", "UDP address for hosts' syslog (e.g. :514); kept per host under DIR/logs (off when empty)")
	f.Int64Var(&o.logCap, "host-log-cap", hostlogs.DefaultMaxBytes, "bytes per host log file; at the cap it rotates to log.1.txt (so at most twice this is kept)")
	return cmd
}

// applyConfigFile sets every flag named in the YAML file at path that was not
// given on the command line. Unknown keys are an error, so typos surface.
func applyConfigFile(fs *pflag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var kv map[string]any
	if err := yaml.Unmarshal(data, &kv); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fl := fs.Lookup(k)
		if fl == nil || k == "config" {
			return fmt.Errorf("config %s: unknown key %q (keys are serve's flag names)", path, k)
		}
		if fl.Changed {
			continue
		}
		var val string
		switch v := kv[k].(type) {
		case []any:
			parts := make([]string, len(v))
			for i, p := range v {
				parts[i] = fmt.Sprint(p)
			}
			val = strings.Join(parts, ",")
		default:
			val = fmt.Sprint(v)
		}
		if err := fs.Set(k, val); err != nil {
			return fmt.Errorf("config %s: %s: %w", path, k, err)
		}
	}
	return nil
}

// serveGCPercent is the garbage collector's target for serve, unless the
// GOGC environment variable sets one. Answering a packet allocates a few
// KiB that die at once, while the live heap stays a few MiB, so Go's
// default (100) collects dozens of times a second under a boot storm; on
// a busy core each cycle holds the answers up, and they leave in bursts
// that overflow switch and client buffers. At 400 the collector runs a
// fifth as often for a heap that still stays small (measured: DHCP at
// 10,000 exchanges/s without loss, against 8,000 at 100; README).
const serveGCPercent = 400

// serve opens the state volume, checks the whole configuration and opens
// every socket, and only then runs the services until ctx is done or one of
// them fails: a bad flag never leaves half a server running.
func serve(ctx context.Context, log *slog.Logger, o serveOptions) error {
	if o.state == "" {
		return errors.New("serve: --state DIR is required (a dedicated mounted volume)")
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(serveGCPercent)
	}
	setTimerSlack(log, serveTimerSlack)
	st, err := fleet.OpenState(o.state, o.stateAllowShared, log)
	if err != nil {
		return err
	}
	defer st.Close()
	store, err := images.Open(st.Join("images"), st.Join("tmp"))
	if err != nil {
		return err
	}
	db, err := fleet.OpenStore(st.Join("phoenix.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	token, err := fleet.LoadOrCreateToken(st.Join(fleet.TokenFile))
	if err != nil {
		return err
	}
	// The fleet controller decides what every host boots; --hosts is a
	// fleet file (a plain hosts file is one) applied at start when it
	// differs from the current revision.
	ctrl := &fleet.Controller{Store: db, Images: store, BMCs: redfishDialer{}, Log: log.With("svc", "fleet")}
	if err := ctrl.Load(); err != nil {
		return err
	}
	// Checked now, applied only once every other check has passed and
	// every socket is open: a start that fails must not leave a new fleet
	// revision behind for the next start to roll out.
	var hostsData []byte
	if o.hostsFile != "" {
		if hostsData, err = os.ReadFile(o.hostsFile); err != nil {
			return fmt.Errorf("hosts file: %w", err)
		}
		if _, err := ctrl.Plan(hostsData); err != nil {
			return fmt.Errorf("hosts file %s: %w", o.hostsFile, err)
		}
	}
	var bootImages httpboot.Images = store
	if o.requireSigned != "" {
		b, err := os.ReadFile(o.requireSigned)
		if err != nil {
			return fmt.Errorf("--require-signed: %w", err)
		}
		key, err := images.ParsePublicKey(b)
		if err != nil {
			return fmt.Errorf("--require-signed %s: %w", o.requireSigned, err)
		}
		bootImages = images.SignedOnly{Store: store, Key: key}
	}
	efiFlag := o.efiBootFile
	o.efiBootFile = uefiBootFile(o.ipxeDir, efiFlag)
	bootFiles, err := tftp.ResolveFiles(o.ipxeDir, []string{biosBootFile, o.efiBootFile}, []string{snpBootFile, efi64BootFile, arm64BootFile})
	if err != nil {
		if efiFlag != "" {
			err = fmt.Errorf("%w; --efi-boot-file names a file in --ipxe-dir", err)
		}
		return err
	}
	secureBootFiles(bootFiles, o.shimFile, o.grubFile, log)
	serverIP, ifNet, err := serverAddress(o.iface, o.serverIP)
	if err != nil {
		return err
	}
	if o.routerAdvert && o.iface == "" {
		return errors.New("--router-advert needs --interface")
	}

	// Sockets: every one is open before any service starts.
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close() // no-op for sockets the services already closed
		}
	}()
	httpLn, err := net.Listen("tcp", o.httpAddr)
	if err != nil {
		return fmt.Errorf("http: %w (is another web server running? pass --http-addr)", err)
	}
	closers = append(closers, httpLn)
	httpPort := httpLn.Addr().(*net.TCPAddr).Port
	baseURL := "http://" + serverIP.String()
	if httpPort != 80 {
		baseURL += ":" + strconv.Itoa(httpPort)
	}
	tftpConn, err := tftp.Listen(ctx, o.tftpAddr)
	if err != nil {
		return fmt.Errorf("tftp: %w (is another TFTP server running? pass --tftp-addr)", err)
	}
	closers = append(closers, tftpConn)
	var dhcpSrv *dhcp.Server
	var dhcpConns []net.PacketConn
	if o.dhcpMode != "off" {
		cfg, err := dhcpConfig(o, serverIP, ifNet, baseURL)
		if err != nil {
			return err
		}
		if _, ok := bootFiles[arm64BootFile]; ok {
			cfg.ARM64BootFile = arm64BootFile
		}
		cfg.SecureBoot = ctrl.SecureBoot
		dhcpSrv = &dhcp.Server{Config: cfg, Leases: db, Log: log.With("svc", "dhcp")}
		addrs := []string{":67"}
		if cfg.Mode == dhcp.ModeProxy {
			addrs = append(addrs, ":4011")
		}
		for _, a := range addrs {
			conn, err := dhcp.Listen(o.iface, a)
			if err != nil {
				return fmt.Errorf("dhcp %s: %w (is another DHCP server running here? use --dhcp proxy or off)", a, err)
			}
			closers = append(closers, conn)
			dhcpConns = append(dhcpConns, conn)
		}
	}

	var syslogConn net.PacketConn
	if o.syslogAddr != "" && o.dhcpMode != "full" {
		log.Warn("--syslog-addr: senders are matched to hosts through phoenix's own DHCP leases; with --dhcp " + o.dhcpMode + " there are none, so syslog lines are dropped (hosts can still POST their logs)")
	}
	if o.syslogAddr != "" {
		if syslogConn, err = net.ListenPacket("udp", o.syslogAddr); err != nil {
			return fmt.Errorf("syslog: %w (pass another --syslog-addr, or none)", err)
		}
		closers = append(closers, syslogConn)
	}

	// Boot timelines and metrics watch every service's events.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	tl := timeline.New(store, reg)
	bootSrv := &httpboot.Server{Hosts: ctrl, Images: bootImages, Recorder: ctrl, BaseURL: baseURL,
		BootFiles: bootFiles, Log: log.With("svc", "http"), OnEvent: tl.HTTP}
	tftpSrv := &tftp.Server{Files: bootFiles, Log: log.With("svc", "tftp"), OnTransfer: tl.TFTP,
		Virtual: bootSrv.TFTPFile, Optional: httpboot.OptionalTFTPFiles}
	api := &fleet.API{Controller: ctrl, Store: db, Log: log.With("svc", "api")}
	// The API: reads are open, changes need the token (fleet.RequireToken).
	apiMux := http.NewServeMux()
	api.Register(apiMux)
	// The image store's API. A version is in use (shown, and not
	// removable) while a host's image ref resolves to it.
	imagesAPI := &images.API{Store: store, Log: log.With("svc", "images"), Users: ctrl.HostsUsing}
	imagesAPI.Register(apiMux)
	apiMux.HandleFunc("GET /api/v1/boots/{mac}", tl.ServeBoots)
	mux := http.NewServeMux()
	mux.Handle("/api/v1/", fleet.RequireToken(token, apiMux))
	// Phone-home comes from hosts, which hold no token.
	mux.Handle("POST /api/v1/report", httpboot.FromNetworks(o.hostNetworks, bootSrv.Handler()))
	logs := &hostlogs.Store{Dir: st.Join("logs"), MaxBytes: o.logCap, Log: log.With("svc", "logs"),
		Known: ctrl.HasHost,
		HostOf: func(ip net.IP) (string, bool) {
			leases, err := db.Leases()
			if err != nil {
				return "", false
			}
			for _, l := range leases {
				if l.IP.Equal(ip) {
					name, _, ok := ctrl.Lookup(l.MAC)
					return name, ok
				}
			}
			return "", false
		}}
	// Hosts send their logs without a token, like their reports.
	logMux := http.NewServeMux()
	logs.Register(logMux)
	mux.Handle("POST /api/v1/hosts/{name}/logs", httpboot.FromNetworks(o.hostNetworks, logMux))
	mux.Handle("GET /api/v1/hosts/{name}/logs", logMux)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// The dashboard: exactly "/" and its files under /ui/.
	ui := uiHandler()
	mux.Handle("GET /{$}", ui)
	mux.Handle("GET /ui/", ui)
	mux.Handle("/", bootSrv.Handler())

	if hostsData != nil {
		if _, err := ctrl.Apply(hostsData, "serve --hosts "+o.hostsFile); err != nil {
			return fmt.Errorf("hosts file %s: %w", o.hostsFile, err)
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return httpboot.ServeHandler(ctx, httpLn, mux, log) })
	g.Go(func() error { return tftpSrv.Serve(ctx, tftpConn) })
	if dhcpSrv != nil {
		dhcpSrv.OnEvent = tl.DHCP
		reg.MustRegister(statsCollector("phoenix_dhcp", "DHCP server", func() any { return dhcpSrv.Stats() }))
		for _, conn := range dhcpConns {
			g.Go(func() error { return dhcpSrv.Serve(ctx, conn) })
		}
	}
	reg.MustRegister(statsCollector("phoenix_tftp", "TFTP server", func() any { return tftpSrv.Stats() }))
	if syslogConn != nil {
		g.Go(func() error { return logs.ServeSyslog(ctx, syslogConn) })
	}
	g.Go(func() error { return ctrl.Run(ctx) })
	// A channel move changes what hosts following it should run: wake the
	// reconciler now instead of at its next periodic pass.
	moves, unsubscribe := store.Subscribe()
	defer unsubscribe()
	g.Go(func() error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-moves:
				ctrl.Wake()
			}
		}
	})
	if o.routerAdvert {
		s := &ra.Sender{Interface: o.iface, Log: log.With("svc", "ra")}
		g.Go(func() error { return s.Run(ctx) })
	}
	log.Info("phoenix serving", "state", st.Path, "url", baseURL, "dhcp", o.dhcpMode, "interface", o.iface, "ipxe_dir", o.ipxeDir, "uefi_boot_file", o.efiBootFile)
	return g.Wait()
}

// serverAddress decides the address hosts reach phoenix at, and the subnet
// of the boot interface when one is named.
func serverAddress(iface, explicit string) (net.IP, *net.IPNet, error) {
	var ifNet *net.IPNet
	if iface != "" {
		ifi, err := net.InterfaceByName(iface)
		if err != nil {
			return nil, nil, fmt.Errorf("interface %s: %w", iface, err)
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			return nil, nil, fmt.Errorf("interface %s: %w", iface, err)
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				ifNet = &net.IPNet{IP: n.IP.To4(), Mask: n.Mask}
				break
			}
		}
	}
	if explicit != "" {
		ip := net.ParseIP(explicit).To4()
		if ip == nil {
			return nil, nil, fmt.Errorf("--server-ip %q is not an IPv4 address", explicit)
		}
		return ip, ifNet, nil
	}
	if ifNet == nil {
		return nil, nil, errors.New("cannot tell which address hosts reach phoenix at: pass --interface (with an IPv4 address) or --server-ip")
	}
	return ifNet.IP, ifNet, nil
}

// secureBootFiles adds the signed shim and GRUB to files, under the names
// the chain asks for: DHCP names shimx64.efi, and shim loads grubx64.efi
// from the same directory. Without them Secure Boot hosts cannot netboot;
// that is logged, not fatal, since most fleets have none.
func secureBootFiles(files map[string]string, shim, grub string, log *slog.Logger) {
	for name, path := range map[string]string{dhcp.DefaultSecureBootFile: shim, "grubx64.efi": grub} {
		if path == "" {
			continue
		}
		fi, err := os.Stat(path)
		if err == nil && !fi.Mode().IsRegular() {
			err = fmt.Errorf("%s: not a regular file", path)
		}
		if err != nil {
			log.Info("secure boot: no signed loader, so Secure Boot hosts cannot netboot (install shim-signed and grub-efi-amd64-signed)", "file", name, "err", err)
			continue
		}
		files[name] = path
	}
}

// dhcpConfig turns serve's flags into the DHCP server's configuration.
func dhcpConfig(o serveOptions, serverIP net.IP, ifNet *net.IPNet, baseURL string) (dhcp.Config, error) {
	cfg := dhcp.Config{
		ServerIP:      serverIP,
		BIOSBootFile:  biosBootFile,
		EFI64BootFile: o.efiBootFile,
		LeaseTime:     o.leaseTime,
		ScriptURL:     baseURL + "/boot.ipxe?mac=${netX/mac}",
		HTTPBootURL:   baseURL + "/ipxe/" + o.efiBootFile,
	}
	switch o.dhcpMode {
	case "proxy":
		cfg.Mode = dhcp.ModeProxy
		return cfg, nil
	case "full":
		cfg.Mode = dhcp.ModeFull
		if ifNet == nil {
			return cfg, errors.New("--dhcp full needs --interface: handing out addresses on every network this machine is on would make phoenix a rogue DHCP server")
		}
	default:
		return cfg, fmt.Errorf("--dhcp %q: want full, proxy or off", o.dhcpMode)
	}
	first, last, ok := strings.Cut(o.dhcpRange, "-")
	cfg.PoolStart, cfg.PoolEnd = net.ParseIP(strings.TrimSpace(first)).To4(), net.ParseIP(strings.TrimSpace(last)).To4()
	if !ok || cfg.PoolStart == nil || cfg.PoolEnd == nil {
		return cfg, fmt.Errorf("--dhcp-range %q: want FIRST-LAST IPv4 addresses (or --dhcp proxy beside an existing DHCP server)", o.dhcpRange)
	}
	switch {
	case o.netmask != "":
		m := net.ParseIP(o.netmask).To4()
		if m == nil {
			return cfg, fmt.Errorf("--netmask %q is not a mask", o.netmask)
		}
		cfg.Netmask = net.IPMask(m)
	default:
		cfg.Netmask = ifNet.Mask
	}
	subnet := &net.IPNet{IP: ifNet.IP.Mask(cfg.Netmask), Mask: cfg.Netmask}
	for what, ip := range map[string]net.IP{"first pool address": cfg.PoolStart, "last pool address": cfg.PoolEnd, "--server-ip": serverIP} {
		if !subnet.Contains(ip) {
			return cfg, fmt.Errorf("%s %s is outside %s, the subnet of --interface %s", what, ip, subnet, o.iface)
		}
	}
	if o.router != "" {
		if cfg.Router = net.ParseIP(o.router).To4(); cfg.Router == nil {
			return cfg, fmt.Errorf("--router %q is not an IPv4 address", o.router)
		}
	}
	for _, d := range o.dns {
		ip := net.ParseIP(d).To4()
		if ip == nil {
			return cfg, fmt.Errorf("--dns %q is not an IPv4 address", d)
		}
		cfg.DNS = append(cfg.DNS, ip)
	}
	if len(o.reservations) > 0 {
		cfg.Reservations = map[string]net.IP{}
	}
	for _, r := range o.reservations {
		m, a, _ := strings.Cut(r, "=")
		mac, err := net.ParseMAC(m)
		ip := net.ParseIP(a).To4()
		if err != nil || ip == nil {
			return cfg, fmt.Errorf("--reserve %q: want MAC=IPv4", r)
		}
		cfg.Reservations[mac.String()] = ip
	}
	return cfg, nil
}
