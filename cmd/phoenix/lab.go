package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/phoenixboot/phoenix/fleet"
	"github.com/phoenixboot/phoenix/fleet/lab"
	"github.com/phoenixboot/phoenix/redfish/vbmc"
)

// labVM is one machine of the lab.
type labVM struct {
	name, mac  string
	firmware   string
	httpBoot   bool // UEFI HTTP boot instead of PXE
	secureBoot bool // OVMF enforcing Secure Boot: shim and GRUB instead of iPXE
}

// labVMs are the lab's machines: one of each network boot path phoenix
// answers (BIOS PXE with iPXE in the NIC ROM, UEFI PXE, UEFI HTTP boot,
// UEFI PXE with Secure Boot). The last needs the signed loaders.
var labVMs = []labVM{
	{"node1", "52:54:00:99:00:01", vbmc.BIOS, false, false},
	{"node2", "52:54:00:99:00:02", vbmc.UEFI, false, false},
	{"node3", "52:54:00:99:00:03", vbmc.UEFI, true, false},
	{"node4", "52:54:00:99:00:04", vbmc.UEFI, false, true},
}

func newLabCmd() *cobra.Command {
	var kernel, initrd, work, secureBootDir string
	var once bool
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run a QEMU lab: phoenix, a virtual BMC and four VMs (SeaBIOS+iPXE, OVMF PXE, OVMF HTTP boot, OVMF Secure Boot) that netboot from it",
		Long: `lab creates a private network namespace with a bridge and tap devices, a
virtual BMC (Redfish over QMP) in front of four powered-off QEMU VMs, and
phoenix in full DHCP mode with the demo image promoted to demo@stable and a
fleet file naming the VMs and their BMC. phoenix's fleet controller powers
the VMs on through the BMC (PXE once); they netboot, report, and the hosts
table shows them ready. It keeps running until Ctrl-C (or exits with --once)
and prints the commands to promote a new version and watch the rollout;
everything it created vanishes with it. Needs root, qemu-system-x86, ovmf, ipxe.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if !lab.InPrivateNetns() {
				self, err := os.Executable()
				if err != nil {
					return err
				}
				c, err := lab.PrivateNetnsCmd(ctx, append([]string{self}, os.Args[1:]...))
				if err != nil {
					return err
				}
				err = c.Run()
				if ctx.Err() != nil && c.ProcessState != nil && c.ProcessState.Success() {
					return nil // Ctrl-C: the inner lab stopped cleanly
				}
				return err
			}
			if work == "" {
				d, err := os.MkdirTemp("", "phoenix-lab-")
				if err != nil {
					return err
				}
				work = d
				// A lab leaves nothing behind unless --work asked to keep it.
				defer os.RemoveAll(d)
			}
			return runLab(ctx, kernel, initrd, secureBootDir, work, once)
		},
	}
	cmd.AddCommand(newLabBenchCmd())
	cmd.Flags().StringVar(&kernel, "kernel", "build/demo/vmlinuz", "demo kernel (make demo-image)")
	cmd.Flags().StringVar(&initrd, "initrd", "build/demo/initrd.img", "demo initrd (make demo-image)")
	cmd.Flags().StringVar(&secureBootDir, "secureboot-dir", "build/secureboot", "signed shimx64.efi and grubx64.efi for the Secure Boot VM (make secureboot-loaders); without them that VM is left out")
	cmd.Flags().StringVar(&work, "work", "", "work directory for state and logs (default: a new temp dir, removed at exit)")
	cmd.Flags().BoolVar(&once, "once", false, "exit after the VMs reported instead of serving until Ctrl-C")
	return cmd
}

// runLab runs the lab inside the private namespace.
func runLab(ctx context.Context, kernel, initrd, secureBootDir, work string, once bool) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	for _, f := range []string{kernel, initrd} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("demo image: %w (run make demo-image)", err)
		}
	}
	shim, grub := filepath.Join(secureBootDir, "shimx64.efi"), filepath.Join(secureBootDir, "grubx64.efi")
	vms := labVMs
	var extra []string
	if _, err := os.Stat(shim); err == nil {
		if _, err = os.Stat(grub); err == nil {
			extra = []string{"--shim-file", shim, "--grub-file", grub}
		}
	}
	if extra == nil {
		vms = vms[:len(vms)-1]
		fmt.Printf("lab: no signed shim and GRUB in %s (make secureboot-loaders): the Secure Boot VM is left out\n", secureBootDir)
	}
	// The virtual BMC listens on the namespace's loopback.
	ln, err := net.Listen("tcp", "127.0.0.1:8000")
	if err != nil {
		return err
	}
	const bmcUser, bmcPassword = "admin", "lab-password"
	os.Setenv("PHOENIX_LAB_BMC_PASSWORD", bmcPassword) // phoenix serve inherits it
	var hosts strings.Builder
	var taps []string
	var machines []*vbmc.Machine
	var systems []vbmc.System
	for i, v := range vms {
		tap := fmt.Sprintf("tap%d", i)
		taps = append(taps, tap)
		m := &vbmc.Machine{Name: v.name, MAC: v.mac, Tap: tap, Firmware: v.firmware, UEFIHTTPBoot: v.httpBoot, SecureBoot: v.secureBoot,
			WorkDir: filepath.Join(work, v.name), SerialLog: filepath.Join(work, v.name+".serial.log")}
		machines = append(machines, m)
		systems = append(systems, m)
		boot := ""
		if v.httpBoot {
			boot = ", boot: uefi-http" // its firmware has no PXE option for a Pxe override
		}
		secure := ""
		if v.secureBoot {
			secure = ", secure_boot: true" // shim and GRUB, both signed, instead of iPXE
		}
		fmt.Fprintf(&hosts, "  - {name: %s, macs: [%q]%s, bmc: {endpoint: \"https://%s\", system: %s%s}, labels: {rack: lab}}\n", v.name, v.mac, secure, ln.Addr(), v.name, boot)
	}
	fleetFile := `# the lab's fleet: every host follows demo@stable, powered through the virtual BMC
defaults:
  image: demo@stable
  bmc: {username: ` + bmcUser + `, credentials: env:PHOENIX_LAB_BMC_PASSWORD, insecure: true}
policy:
  canary: 1
  batch: 1
  max_unavailable: 2
  boot_deadline: 3m
  retries: 1
  failure_budget: 1
  boot_override_once: true
hosts:
` + hosts.String()
	site := &lab.Site{
		Name: "lab", Net: lab.Net{Bridge: "br0", CIDR: "10.99.0.1/24", Taps: taps},
		Phoenix: self, Dir: work, DHCP: "full", Range: "10.99.0.100-10.99.0.199", HTTPPort: 80,
		ImageRef: "demo:1", Kernel: kernel, Initrd: initrd, Cmdline: "console=ttyS0 quiet",
		FleetFile: fleetFile, NetReady: true, Extra: extra,
		PreStart: [][]string{{"image", "promote", "demo:1", "--channel", "stable"}},
	}
	if err := site.Net.Setup(); err != nil {
		return err
	}
	for _, m := range machines {
		if err := m.Start(ctx); err != nil {
			return err
		}
		defer m.Stop()
	}
	// HTTPS with a self-signed certificate, as a BMC fresh from the factory.
	bmcTLS, _, err := vbmc.SelfSignedTLS()
	if err != nil {
		return err
	}
	srv := &vbmc.Server{Systems: systems, Username: bmcUser, Password: bmcPassword, TLS: bmcTLS}
	go srv.Serve(ctx, ln)
	fmt.Printf("lab: work dir %s (phoenix log: %s)\n", work, filepath.Join(work, "phoenix.log"))
	fmt.Printf("lab: virtual BMC at https://%s (%s/%s, self-signed certificate) with %d powered-off VMs (%s)\n", ln.Addr(), bmcUser, bmcPassword, len(machines), vbmc.Accel())
	if err := site.Start(ctx); err != nil {
		return err
	}
	defer site.Stop()
	fmt.Printf("lab: phoenix is up at %s; its fleet controller powers the VMs on through the BMC\n", site.URL())

	// Show progress until every host is ready.
	start := time.Now()
	last := ""
	for {
		status, err := site.HostStatus()
		if err != nil {
			return err
		}
		var parts []string
		ready := 0
		for _, h := range status {
			parts = append(parts, h.Name+"="+h.State)
			if h.State == fleet.StateReady {
				ready++
			}
		}
		line := strings.Join(parts, " ")
		if line != last {
			fmt.Printf("lab: %5.1fs %s\n", time.Since(start).Seconds(), line)
			last = line
		}
		if ready == len(vms) {
			fmt.Println()
			printHosts(os.Stdout, status)
			break
		}
		if time.Since(start) > 8*time.Minute {
			printHosts(os.Stdout, status)
			return fmt.Errorf("lab: only %d of %d hosts ready after %s (serial logs in %s)", ready, len(vms), time.Since(start).Round(time.Second), work)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	fmt.Printf("\nlab: every host booted from phoenix and reported the digest it was served (%s).\n", time.Since(start).Round(time.Second))
	if once {
		return nil
	}
	tok, _ := os.ReadFile(filepath.Join(work, "state", fleet.TokenFile))
	in := fmt.Sprintf("nsenter -t %d -n env PHOENIX_SERVER=%s PHOENIX_TOKEN=%s %s", os.Getpid(), site.URL(), strings.TrimSpace(string(tok)), self)
	fmt.Printf(`lab: phoenix keeps serving. From another shell (as root):
  %[1]s image import demo:2 --kernel %[2]s --initrd %[3]s --cmdline 'console=ttyS0 quiet'
  %[1]s image promote demo:2 --channel stable     # canary first, then the rest
  %[1]s rollout ls; %[1]s host ls                # watch the rollout
  %[1]s image rollback demo --channel stable
lab: the dashboard is at %[4]s/ inside the lab's network namespace; a picture of it:
  nsenter -t %[5]d -n chromium --headless --no-sandbox --window-size=1280,900 --screenshot=/tmp/phoenix.png %[4]s/
lab: Ctrl-C stops and removes everything.
`, in, filepath.Join(filepath.Dir(kernel)+"2", "vmlinuz"), filepath.Join(filepath.Dir(initrd)+"2", "initrd.img"), site.URL(), os.Getpid())
	<-ctx.Done()
	fmt.Println("lab: stopping phoenix, the BMC and the VMs; the network namespace goes with them")
	return nil
}
