package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/phoenixboot/phoenix/fleet"
)

func newPlanCmd() *cobra.Command {
	var file, output string
	cmd := &cobra.Command{
		Use:   "plan -f FLEET.yaml",
		Short: "Show what applying a fleet file would change, without changing anything",
		Long: `plan sends the fleet file to the server, which validates it as a whole (every
error with its line; unknown images and channels, duplicate names or MACs and a
batch larger than max_unavailable are refused) and compares it with the current
revision: hosts added, removed and changed, and the hosts it would reimage, and why.`,
		Example: `  phoenix plan -f fleet.yaml
  phoenix plan -f fleet.yaml -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			data, err := readFleetArg(file)
			if err != nil {
				return err
			}
			var pl fleet.Plan
			if err := newClient(cmd).do(cmd, "POST", "/api/v1/plan", strings.NewReader(string(data)), "application/yaml", &pl); err != nil {
				return err
			}
			if output == "json" {
				return emitJSON(pl)
			}
			return printPlan(os.Stdout, pl)
		},
	}
	addClientFlags(cmd)
	cmd.Flags().StringVarP(&file, "file", "f", "", "fleet file (YAML); - reads standard input")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.MarkFlagRequired("file")
	return cmd
}

// readFleetArg reads the fleet file named by -f.
func readFleetArg(path string) ([]byte, error) {
	if path == "-" {
		return io.ReadAll(os.Stdin)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("fleet file: %w", err)
	}
	return data, nil
}

// printPlan writes a plan for people.
func printPlan(w io.Writer, pl fleet.Plan) error {
	against := "no revision yet"
	if pl.Revision > 0 {
		against = fmt.Sprintf("revision %d", pl.Revision)
	}
	fmt.Fprintf(w, "Plan against %s: %d hosts in the file (%s)\n", against, pl.Hosts, shortDigest(pl.Digest))
	if pl.Unchanged {
		fmt.Fprintln(w, "The file is the current revision: nothing to apply.")
	}
	if len(pl.PolicyChanged) > 0 {
		fmt.Fprintf(w, "Policy changes: %s\n", strings.Join(pl.PolicyChanged, ", "))
	}
	list := func(sign, what string, names []string) {
		if len(names) == 0 {
			return
		}
		shown := names
		if len(shown) > 20 {
			shown = append(shown[:20:20], fmt.Sprintf("… %d more", len(names)-20))
		}
		fmt.Fprintf(w, "%s %s (%d): %s\n", sign, what, len(names), strings.Join(shown, ", "))
	}
	list("+", "added", pl.Added)
	list("-", "removed", pl.Removed)
	changed := make([]string, 0, len(pl.Changed))
	for _, c := range pl.Changed {
		changed = append(changed, c.Name+" ("+strings.Join(c.Fields, ", ")+")")
	}
	list("~", "changed", changed)
	if len(pl.Reimage) == 0 {
		fmt.Fprintln(w, "No host needs a reimage.")
		return nil
	}
	fmt.Fprintf(w, "\nHosts to reimage (%d), in rollout order after canaries (policy: canary %d, batch %d, max unavailable %d):\n",
		len(pl.Reimage), pl.Policy.Canary, pl.Policy.Batch, pl.Policy.MaxUnavailable)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tFROM\tTO\tREASON\tNOTE")
	for _, r := range pl.Reimage {
		from := r.FromRef
		if from == "" {
			from = shortDigest(r.From)
		}
		if from == "" {
			from = "-"
		}
		note := r.Skipped
		if note != "" {
			note = "skipped: " + note
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, from, r.ToRef, r.Reason, note)
	}
	return tw.Flush()
}
