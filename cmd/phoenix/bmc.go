package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/phoenixboot/phoenix/redfish"
)

// newBMCCmd is `phoenix bmc`: direct control of one BMC given by
// --endpoint. Targeting "a host known to the server" (its BMC address and
// credentials from the fleet) comes with the fleet controller; until then
// every subcommand needs --endpoint.
func newBMCCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bmc",
		Short: "Control a server's BMC over Redfish: status, power, boot override, virtual media",
		Long: `Control one BMC over Redfish.

Credentials come from PHOENIX_BMC_USER and PHOENIX_BMC_PASSWORD, or from
--credentials FILE ("user:password" or YAML username/password, mode 0600).
--username overrides the user name; passwords are never taken as flags.`,
	}
	f := cmd.PersistentFlags()
	f.String("endpoint", os.Getenv("PHOENIX_BMC_ENDPOINT"), "BMC URL, e.g. https://10.0.0.5 (env PHOENIX_BMC_ENDPOINT)")
	f.String("username", "", "BMC user name (default: from the credentials)")
	f.String("credentials", "", "file with the BMC credentials (user:password or YAML)")
	f.Bool("insecure", false, "do not verify the BMC's TLS certificate")
	f.String("ca", "", "PEM bundle of CAs to trust for the BMC's certificate")
	f.String("system", "", "system ID, name, UUID or serial when the BMC has several")
	f.Duration("timeout", 30*time.Second, "per-request timeout")
	f.Duration("wait", 5*time.Minute, "how long to wait for tasks and power state changes")
	cmd.AddCommand(newBMCStatusCmd(), newBMCPowerCmd(), newBMCBootCmd(), newBMCMediaCmd())
	return cmd
}

// dialBMC builds a redfish.Client from the bmc flags.
func dialBMC(cmd *cobra.Command) (*redfish.Client, error) {
	fl := cmd.Flags()
	endpoint, _ := fl.GetString("endpoint")
	if endpoint == "" {
		return nil, fmt.Errorf("bmc: --endpoint is required (a host known to the server cannot be targeted yet)")
	}
	var user, pass string
	var err error
	if file, _ := fl.GetString("credentials"); file != "" {
		user, pass, err = redfish.CredentialsFromFile(file)
	} else {
		user, pass, err = redfish.CredentialsFromEnv("PHOENIX_BMC")
	}
	if err != nil {
		return nil, err
	}
	if u, _ := fl.GetString("username"); u != "" {
		user = u
	}
	insecure, _ := fl.GetBool("insecure")
	ca, _ := fl.GetString("ca")
	system, _ := fl.GetString("system")
	timeout, _ := fl.GetDuration("timeout")
	wait, _ := fl.GetDuration("wait")
	return redfish.Dial(cmd.Context(), redfish.Config{
		Endpoint: endpoint, Username: user, Password: pass,
		Insecure: insecure, CAFile: ca, System: system,
		Timeout: timeout, WaitTimeout: wait, Log: logger(cmd),
	})
}

// withBMC dials, runs fn and logs out.
func withBMC(cmd *cobra.Command, fn func(ctx context.Context, c *redfish.Client) error) error {
	c, err := dialBMC(cmd)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(cmd.Context(), c)
}

func newBMCStatusCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the system's identity, power state, boot override and virtual media",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withBMC(cmd, func(ctx context.Context, c *redfish.Client) error {
				st, err := c.Status(ctx)
				if err != nil {
					return err
				}
				// Not every BMC has virtual media; status still works.
				m, merr := c.MediaState(ctx)
				out := struct {
					redfish.Status
					Media *redfish.Media `json:"media,omitempty"`
				}{Status: st}
				if merr == nil {
					out.Media = &m
				}
				if output == "json" {
					return json.NewEncoder(os.Stdout).Encode(out)
				}
				return printBMCStatus(os.Stdout, st, out.Media)
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func printBMCStatus(w io.Writer, st redfish.Status, m *redfish.Media) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	fmt.Fprintf(tw, "SYSTEM\t%s\n", st.System)
	fmt.Fprintf(tw, "MODEL\t%s\n", dash(strings.TrimSpace(st.Manufacturer+" "+st.Model)))
	fmt.Fprintf(tw, "SERIAL\t%s\n", dash(st.Serial))
	fmt.Fprintf(tw, "POWER\t%s\n", dash(st.PowerState))
	boot := dash(st.BootTarget) + " (" + dash(st.BootEnabled) + ", " + dash(st.BootMode) + ")"
	if st.BootURI != "" {
		boot += " " + st.BootURI
	}
	fmt.Fprintf(tw, "BOOT\t%s\n", boot)
	if m != nil {
		media := "empty"
		if m.Inserted {
			media = m.Image
		}
		fmt.Fprintf(tw, "MEDIA\t%s\n", media)
	}
	return tw.Flush()
}

func newBMCPowerCmd() *cobra.Command {
	var graceful time.Duration
	cmd := &cobra.Command{
		Use:       "power on|off|cycle",
		Short:     "Power the system on, off (graceful, then forced) or cycle it",
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		ValidArgs: []string{"on", "off", "cycle"},
		RunE: func(cmd *cobra.Command, args []string) error {
			return withBMC(cmd, func(ctx context.Context, c *redfish.Client) error {
				switch args[0] {
				case "on":
					return c.PowerOn(ctx)
				case "off":
					return c.PowerOff(ctx, graceful)
				default:
					return c.PowerCycle(ctx)
				}
			})
		},
	}
	cmd.Flags().DurationVar(&graceful, "graceful", 2*time.Minute, "for off: time the OS gets to shut down before ForceOff (0 = force at once)")
	return cmd
}

func newBMCBootCmd() *cobra.Command {
	var uri, mode string
	var once bool
	cmd := &cobra.Command{
		Use:       "boot pxe|http|cd|hdd|none",
		Short:     "Set the boot source override (next boot only, unless --once=false)",
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		ValidArgs: []string{"pxe", "http", "cd", "hdd", "none"},
		RunE: func(cmd *cobra.Command, args []string) error {
			return withBMC(cmd, func(ctx context.Context, c *redfish.Client) error {
				return c.SetBootOverride(ctx, redfish.BootOverride{Target: args[0], Mode: mode, URI: uri, Continuous: !once})
			})
		},
	}
	cmd.Flags().StringVar(&uri, "uri", "", "for http: the UEFI HTTP boot URL")
	cmd.Flags().StringVar(&mode, "mode", "", "boot mode UEFI or Legacy (default: keep the BMC's)")
	cmd.Flags().BoolVar(&once, "once", true, "override the next boot only; --once=false for every boot")
	return cmd
}

func newBMCMediaCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "media", Short: "Virtual CD: insert an ISO by URL, eject it"}
	cmd.AddCommand(&cobra.Command{
		Use:   "insert URL",
		Short: "Insert the ISO at URL into the virtual CD drive (ejecting what was there)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withBMC(cmd, func(ctx context.Context, c *redfish.Client) error {
				return c.InsertMedia(ctx, args[0])
			})
		},
	}, &cobra.Command{
		Use:   "eject",
		Short: "Eject the virtual CD drive's image",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withBMC(cmd, func(ctx context.Context, c *redfish.Client) error {
				return c.EjectMedia(ctx)
			})
		},
	})
	return cmd
}
