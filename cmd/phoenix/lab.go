package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/phoenixboot/phoenix/fleet"
	"github.com/phoenixboot/phoenix/fleet/lab"
)

func newLabCmd() *cobra.Command {
	var kernel, initrd, work string
	var once bool
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run a QEMU lab: phoenix plus two VMs (SeaBIOS+iPXE, OVMF UEFI) that netboot from it",
		Long: `lab creates a private network namespace with a bridge and tap devices, starts
phoenix on it in full DHCP mode with the demo image, powers on two QEMU VMs
that boot from the network, and prints the hosts table once both reported.
It keeps running until Ctrl-C (or exits at once with --once); everything it
created vanishes with it. Needs root, qemu-system-x86, ovmf and ipxe.`,
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
			self, err := os.Executable()
			if err != nil {
				return err
			}
			for _, f := range []string{kernel, initrd} {
				if _, err := os.Stat(f); err != nil {
					return fmt.Errorf("demo image: %w (run make demo-image)", err)
				}
			}
			site := &lab.Site{
				Name: "lab", Net: lab.Net{Bridge: "br0", CIDR: "10.99.0.1/24", Taps: []string{"tap0", "tap1"}},
				Phoenix: self, Dir: work, DHCP: "full", Range: "10.99.0.100-10.99.0.199", HTTPPort: 80,
				ImageRef: "demo:1", Kernel: kernel, Initrd: initrd, Cmdline: "console=ttyS0 quiet",
				Hosts: []fleet.Host{
					{Name: "vm-bios", MACs: []string{"52:54:00:99:00:01"}, Image: "demo:1"},
					{Name: "vm-uefi", MACs: []string{"52:54:00:99:00:02"}, Image: "demo:1"},
				},
			}
			fmt.Printf("lab: work dir %s (phoenix log: %s)\n", work, filepath.Join(work, "phoenix.log"))
			if err := site.Start(ctx); err != nil {
				return err
			}
			defer site.Stop()
			fmt.Printf("lab: phoenix is up at %s\n", site.URL())
			vms := []*lab.VM{
				{Name: "vm-bios", MAC: "52:54:00:99:00:01", Tap: "tap0", Firmware: lab.BIOS},
				{Name: "vm-uefi", MAC: "52:54:00:99:00:02", Tap: "tap1", Firmware: lab.UEFI},
			}
			defer func() {
				for _, vm := range vms {
					vm.Stop()
				}
			}()
			results := lab.BootAll(ctx, site, vms, 5*time.Minute, os.Stdout)
			status, err := site.HostStatus()
			if err != nil {
				return err
			}
			fmt.Println()
			printHosts(os.Stdout, status)
			failed := 0
			for _, r := range results {
				if r.Err != nil {
					failed++
					fmt.Printf("lab: %s: %v\n", r.VM, r.Err)
				}
			}
			if failed > 0 {
				return fmt.Errorf("lab: %d of %d VMs did not report", failed, len(results))
			}
			fmt.Println("\nlab: both hosts booted from phoenix and reported the digest they were served.")
			if once {
				return nil
			}
			fmt.Printf("lab: phoenix keeps serving; from another shell: nsenter -t %d -n %s host ls --server %s\nlab: Ctrl-C stops and removes everything.\n", os.Getpid(), self, site.URL())
			<-ctx.Done()
			fmt.Println("lab: stopping phoenix and the VMs; the network namespace goes with them")
			return nil
		},
	}
	cmd.AddCommand(newLabBenchCmd())
	cmd.Flags().StringVar(&kernel, "kernel", "build/demo/vmlinuz", "demo kernel (make demo-image)")
	cmd.Flags().StringVar(&initrd, "initrd", "build/demo/initrd.img", "demo initrd (make demo-image)")
	cmd.Flags().StringVar(&work, "work", "", "work directory for state and logs (default: a new temp dir)")
	cmd.Flags().BoolVar(&once, "once", false, "exit after the VMs reported instead of serving until Ctrl-C")
	return cmd
}
