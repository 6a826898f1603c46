package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/phoenixboot/phoenix/fleet"
)

func newHostCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "host", Short: "Show hosts: desired image versus what they report"}
	cmd.PersistentFlags().String("server", envOr("PHOENIX_SERVER", "http://127.0.0.1"), "phoenix server URL (env PHOENIX_SERVER)")
	cmd.AddCommand(newHostLsCmd())
	return cmd
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// fetchHosts asks a running server for its hosts' status.
func fetchHosts(server string) ([]fleet.HostStatus, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(strings.TrimRight(server, "/") + "/api/v1/hosts")
	if err != nil {
		return nil, fmt.Errorf("server %s: %w", server, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("server %s: %s", server, resp.Status)
	}
	var out []fleet.HostStatus
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("server %s: %w", server, err)
	}
	return out, nil
}

func newHostLsCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List hosts with their desired image and last report",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			server, _ := cmd.Flags().GetString("server")
			list, err := fetchHosts(server)
			if err != nil {
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
