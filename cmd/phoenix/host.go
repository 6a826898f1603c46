package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/phoenixboot/phoenix/fleet"
)

func newHostCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "host", Short: "Show hosts: desired image versus what they report"}
	addClientFlags(cmd)
	cmd.AddCommand(newHostLsCmd())
	return cmd
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func newHostLsCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List hosts with their desired image and last report",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var list []fleet.HostStatus
			if err := newClient(cmd).getJSON(cmd, "/api/v1/hosts", &list); err != nil {
				return err
			}
			if output == "json" {
				return json.NewEncoder(os.Stdout).Encode(list)
			}
			return printHosts(os.Stdout, list)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// printHosts writes the human table of hosts.
func printHosts(w *os.File, list []fleet.HostStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tMAC\tIMAGE\tDIGEST\tSTATE\tREPORTED")
	for _, h := range list {
		reported := "-"
		if h.LastReport != nil {
			reported = h.LastReport.Time.Local().Format("15:04:05") + " " + shortDigest(h.LastReport.Digest)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, strings.Join(h.MACs, ","), h.Image, shortDigest(h.Digest), h.State, reported)
	}
	return tw.Flush()
}
