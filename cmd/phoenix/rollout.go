package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/phoenixboot/phoenix/fleet"
)

func newRolloutCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "rollout", Short: "Watch and steer rollouts: ls, show, pause, resume, abort"}
	addClientFlags(cmd)
	cmd.AddCommand(newRolloutLsCmd(), newRolloutShowCmd())
	for _, a := range []struct{ name, short string }{
		{fleet.ActionPause, "Stop starting hosts; steps in flight finish"},
		{fleet.ActionResume, "Continue a paused or halted rollout (a halted one gets its failure budget afresh)"},
		{fleet.ActionAbort, "Stop for good: queued hosts stay on their old image"},
	} {
		cmd.AddCommand(newRolloutActionCmd(a.name, a.short))
	}
	return cmd
}

func newRolloutLsCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List rollouts, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var list []fleet.Rollout
			if err := newClient(cmd).getJSON(cmd, "/api/v1/rollouts", &list); err != nil {
				return err
			}
			if output == "json" {
				return emitJSON(list)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATE\tHOSTS\tDONE\tFAILED\tREVISION\tSTARTED\tREASON")
			for _, r := range list {
				reason := r.Reason
				if r.Halt != "" {
					reason += "; halted: " + r.Halt
				}
				fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%d\t%s\t%s\n", r.ID, r.State, r.Hosts, r.Done, r.Failures, r.Revision,
					r.Created.Local().Format("2006-01-02 15:04:05"), reason)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func rolloutID(arg string) (int64, error) {
	id, err := strconv.ParseInt(arg, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("rollout id %q: want a positive number (see phoenix rollout ls)", arg)
	}
	return id, nil
}

func newRolloutShowCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show a rollout and where each of its hosts is",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := rolloutID(args[0])
			if err != nil {
				return err
			}
			var d fleet.RolloutDetail
			if err := newClient(cmd).getJSON(cmd, "/api/v1/rollouts/"+strconv.FormatInt(id, 10), &d); err != nil {
				return err
			}
			if output == "json" {
				return emitJSON(d)
			}
			return printRollout(os.Stdout, d)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// printRollout writes a rollout for people.
func printRollout(w io.Writer, d fleet.RolloutDetail) error {
	fmt.Fprintf(w, "Rollout %d: %s (revision %d, started %s)\n", d.ID, d.State, d.Revision, d.Created.Local().Format(time.DateTime))
	fmt.Fprintf(w, "Reason:  %s\n", d.Reason)
	if d.Halt != "" {
		fmt.Fprintf(w, "Halted:  %s\n", d.Halt)
	}
	p := d.Policy
	fmt.Fprintf(w, "Policy:  canary %d, batch %d, max unavailable %d, boot deadline %s, retries %d, failure budget %d\n",
		p.Canary, p.Batch, p.MaxUnavailable, p.BootDeadline, p.Retries, p.FailureBudget)
	fmt.Fprintf(w, "Hosts:   %d, %d done, %d failed\n\n", d.Hosts, d.Done, d.Failures)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tHOST\tSTATUS\tTARGET\tATTEMPTS\tREASON\tERROR")
	for _, h := range d.HostList {
		name := h.Name
		if h.Canary {
			name += " (canary)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", h.Order+1, name, h.Status, h.TargetRef, h.Attempts, h.Reason, h.Error)
	}
	return tw.Flush()
}

func newRolloutActionCmd(action, short string) *cobra.Command {
	return &cobra.Command{
		Use:   action + " ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := rolloutID(args[0])
			if err != nil {
				return err
			}
			var r fleet.Rollout
			if err := newClient(cmd).sendJSON(cmd, "POST", fmt.Sprintf("/api/v1/rollouts/%d/%s", id, action), nil, &r); err != nil {
				return err
			}
			fmt.Printf("Rollout %d is %s.\n", r.ID, r.State)
			return nil
		},
	}
}
