package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/phoenixboot/phoenix/boot/ra"
	"github.com/phoenixboot/phoenix/fleet"
	"github.com/phoenixboot/phoenix/fleet/lab"
)

// benchBoot times one QEMU VM (SeaBIOS + iPXE) from power-on to the demo
// image's report: served by phoenix, then by dnsmasq (DHCP + TFTP of
// undionly.kpxe) and nginx (script, kernel, initrd, report endpoint).
func benchBoot(ctx context.Context, e *env) ([]Row, error) {
	if e.o.Kernel == "" || e.o.Initrd == "" {
		return nil, fmt.Errorf("no demo image (--kernel, --initrd; make demo-image)")
	}
	for _, f := range []string{e.o.Kernel, e.o.Initrd, "/usr/lib/ipxe/undionly.kpxe"} {
		if _, err := os.Stat(f); err != nil {
			return nil, err
		}
	}
	var ph, peer []float64
	for run := 0; run < e.o.runs(); run++ {
		d, err := e.bootPhoenix(ctx, run)
		if err != nil {
			return nil, fmt.Errorf("phoenix: %w", err)
		}
		ph = append(ph, d.Seconds())
		d, err = e.bootPeer(ctx, run)
		if err != nil {
			return nil, fmt.Errorf("dnsmasq+nginx: %w", err)
		}
		peer = append(peer, d.Seconds())
		e.o.logf("boot run %d: phoenix %.1fs, dnsmasq+nginx %.1fs", run+1, ph[len(ph)-1], peer[len(peer)-1])
	}
	r := Row{Part: "boot", Metric: "QEMU BIOS power-on → report", Unit: "s", Phoenix: ph, PeerName: "dnsmasq+nginx", Peer: peer, Goal: "≤ 1.05×",
		Note: "accel " + lab.Accel() + "; same RA for both"}
	r.Met = yesNo(r.Ratio() <= 1.05)
	return []Row{r}, nil
}

const bootMAC = "52:54:00:77:00:01"

func (e *env) bootPhoenix(ctx context.Context, run int) (time.Duration, error) {
	dir, err := e.partDir(fmt.Sprintf("boot/phoenix-%d", run))
	if err != nil {
		return 0, err
	}
	n := lab.Net{Bridge: fmt.Sprintf("bbp%d", run), CIDR: fmt.Sprintf("10.78.%d.1/24", run), Taps: []string{fmt.Sprintf("tbp%d", run)}}
	pre := strings.TrimSuffix(n.IP(), ".1")
	site := &lab.Site{Name: "bench", Net: n, Phoenix: e.o.Phoenix, Dir: dir, DHCP: "full", Range: pre + ".100-" + pre + ".199",
		HTTPPort: 8090, ImageRef: "demo:1", Kernel: e.o.Kernel, Initrd: e.o.Initrd, Cmdline: "console=ttyS0 quiet",
		Hosts: []fleet.Host{{Name: "vm1", MACs: []string{bootMAC}, Image: "demo:1"}}}
	if err := site.Start(ctx); err != nil {
		return 0, err
	}
	defer site.Stop()
	return e.bootVM(ctx, dir, n.Taps[0])
}

func (e *env) bootVM(ctx context.Context, dir, tap string) (time.Duration, error) {
	vm := &lab.VM{Name: "vm1", MAC: bootMAC, Tap: tap, Firmware: lab.BIOS, Serial: filepath.Join(dir, "vm1.serial.log")}
	if err := vm.Start(ctx, dir); err != nil {
		return 0, err
	}
	defer vm.Stop()
	wctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	_, took, err := vm.WaitFor(wctx, lab.ReportMarker)
	return took, err
}

func (e *env) bootPeer(ctx context.Context, run int) (time.Duration, error) {
	dir, err := e.partDir(fmt.Sprintf("boot/peer-%d", run))
	if err != nil {
		return 0, err
	}
	n := lab.Net{Bridge: fmt.Sprintf("bbd%d", run), CIDR: fmt.Sprintf("10.79.%d.1/24", run), Taps: []string{fmt.Sprintf("tbd%d", run)}}
	if err := n.Setup(); err != nil {
		return 0, err
	}
	ip := n.IP()
	pre := strings.TrimSuffix(ip, ".1")
	www := filepath.Join(dir, "www")
	os.MkdirAll(filepath.Join(www, "api", "v1"), 0o755)
	for name, src := range map[string]string{"vmlinuz": e.o.Kernel, "initrd.img": e.o.Initrd} {
		data, err := os.ReadFile(src)
		if err != nil {
			return 0, err
		}
		if err := os.WriteFile(filepath.Join(www, name), data, 0o644); err != nil {
			return 0, err
		}
	}
	base := fmt.Sprintf("http://%s:%d", ip, nginxPort)
	// The same command line phoenix would give, minus its boot ID.
	script := fmt.Sprintf(`#!ipxe
kernel %[1]s/vmlinuz initrd=initrd console=ttyS0 quiet phoenix.digest=sha256:%[2]s phoenix.host=vm1 phoenix.mac=%[3]s phoenix.server=%[1]s
initrd --name initrd %[1]s/initrd.img
boot
`, base, strings.Repeat("0", 64), bootMAC)
	if err := os.WriteFile(filepath.Join(www, "boot.ipxe"), []byte(script), 0o644); err != nil {
		return 0, err
	}
	ng, err := e.startNginx(ctx, dir, www, fmt.Sprintf("%s:%d", ip, nginxPort))
	if err != nil {
		return 0, err
	}
	defer ng.Stop()
	// dnsmasq as operators run it for iPXE chainloading, with the same
	// no-ProxyDHCP-wait option (175/176) phoenix sends.
	dns, err := e.start(ctx, "dnsmasq", dir, udpBound(67), "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
		"--interface="+n.Bridge, "--bind-interfaces", "--dhcp-range="+pre+".100,"+pre+".199,1h", "--no-ping",
		"--dhcp-leasefile="+filepath.Join(dir, "dnsmasq.leases"), "--pid-file=", "--user=root",
		"--enable-tftp", "--tftp-root=/usr/lib/ipxe", "--dhcp-match=set:ipxe,175",
		"--dhcp-boot=tag:!ipxe,undionly.kpxe", "--dhcp-boot=tag:ipxe,"+base+"/boot.ipxe",
		"--dhcp-option=tag:ipxe,encap:175,176,1b", "--log-dhcp")
	if err != nil {
		return 0, err
	}
	defer dns.Stop()
	// The same router advertisement phoenix's --router-advert sends, so
	// iPXE skips its IPv6 wait in both setups.
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go (&ra.Sender{Interface: n.Bridge}).Run(rctx)
	return e.bootVM(ctx, dir, n.Taps[0])
}
