package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/phoenixboot/phoenix/fleet/lab"
	"github.com/phoenixboot/phoenix/fleet/lab/bench"
)

func newLabBenchCmd() *cobra.Command {
	var o bench.Options
	var only, work, stormClient string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark phoenix against dnsmasq, Kea, tftpd-hpa and nginx (DHCP, TFTP, HTTP, boot storm, QEMU boot)",
		Long: `bench runs phoenix and its peers side by side in private network namespaces
(a veth pair; no traffic leaves them) and prints one table of medians,
[min–max] spreads and phoenix/peer ratios. Needs root and the Debian packages
dnsmasq-base kea-admin kea-dhcp4-server tftpd-hpa nginx-light
qemu-system-x86 ipxe, and the demo image (make demo-image).
--quick finishes in a few minutes; the full run takes about 12.`,
		Example: `  phoenix lab bench --quick
  phoenix lab bench --only dhcp,storm --work /tmp/bench`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if stormClient != "" {
				// The storm's load generator, started by the bench inside
				// the client namespace; it prints its result as JSON.
				data, err := os.ReadFile(stormClient)
				if err != nil {
					return err
				}
				var cfg bench.StormConfig
				if err := json.Unmarshal(data, &cfg); err != nil {
					return fmt.Errorf("storm config: %w", err)
				}
				res, err := bench.RunStormClient(ctx, cfg)
				if err != nil {
					return err
				}
				return json.NewEncoder(os.Stdout).Encode(res)
			}
			if !lab.InPrivateNetns() {
				self, err := os.Executable()
				if err != nil {
					return err
				}
				c, err := lab.PrivateNetnsCmd(ctx, append([]string{self}, os.Args[1:]...))
				if err != nil {
					return err
				}
				return c.Run()
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			o.Phoenix = self
			if only != "" {
				o.Only = strings.Split(only, ",")
			}
			for _, f := range []*string{&o.Kernel, &o.Initrd} {
				if abs, err := filepath.Abs(*f); err == nil {
					*f = abs
				}
			}
			o.Dir = work
			if o.Dir == "" {
				d, err := os.MkdirTemp("", "phoenix-bench-")
				if err != nil {
					return err
				}
				o.Dir = d
				defer os.RemoveAll(d)
			} else if err := os.MkdirAll(o.Dir, 0o755); err != nil {
				return err
			}
			// tftpd-hpa and nginx workers read the test files as nobody.
			os.Chmod(o.Dir, 0o755)
			o.Progress = os.Stderr
			rep, err := bench.Run(ctx, o)
			if rep != nil {
				fmt.Println()
				rep.WriteTable(os.Stdout, o)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.Quick, "quick", false, "fewer runs and smaller sizes (a few minutes)")
	f.IntVar(&o.Runs, "runs", 0, "runs per figure (default 3, 1 with --quick)")
	f.StringVar(&only, "only", "", "comma-separated parts to run: "+strings.Join(bench.Parts, ","))
	f.StringVar(&work, "work", "", "work directory to keep configs and logs in (default: a temp dir, removed)")
	f.StringVar(&o.Kernel, "kernel", "build/demo/vmlinuz", "demo kernel (make demo-image)")
	f.StringVar(&o.Initrd, "initrd", "build/demo/initrd.img", "demo initrd (make demo-image)")
	f.StringVar(&stormClient, "storm-client", "", "internal: run the boot storm's load generator with this config")
	f.MarkHidden("storm-client")
	return cmd
}
