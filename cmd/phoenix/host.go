package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/phoenixboot/phoenix/fleet"
	"github.com/phoenixboot/phoenix/fleet/timeline"
)

func newHostCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "host", Short: "Hosts: desired image versus what they report; reimage, quarantine, release, power"}
	addClientFlags(cmd)
	cmd.AddCommand(newHostLsCmd(), newHostShowCmd(), newHostReimageCmd(), newHostQuarantineCmd(), newHostReleaseCmd(), newHostPowerCmd())
	return cmd
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// emitJSON writes v as indented JSON for -o json.
func emitJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func hostPath(name string) string { return "/api/v1/hosts/" + url.PathEscape(name) }

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
func printHosts(w io.Writer, list []fleet.HostStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tMAC\tIMAGE\tDIGEST\tSTATE\tREPORTED\tNOTE")
	for _, h := range list {
		reported := "-"
		if h.LastReport != nil {
			reported = h.LastReport.Time.Local().Format("15:04:05") + " " + shortDigest(h.LastReport.Digest)
		}
		image := h.Image
		if h.DesiredRef != "" && h.DesiredRef != h.Image {
			image += " (" + h.DesiredRef + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Name, strings.Join(h.MACs, ","), image, shortDigest(h.Digest), h.State, reported, hostNote(h))
	}
	return tw.Flush()
}

// hostNote is the one thing worth knowing about a host's state.
func hostNote(h fleet.HostStatus) string {
	switch {
	case h.Quarantine != "":
		return h.Quarantine
	case h.Error != "":
		return h.Error
	case h.Step != nil:
		s := fmt.Sprintf("rollout %d, attempt %d, reset %s", h.Step.Rollout, h.Step.Attempt, h.Step.Reset)
		if h.Step.Rollout == 0 {
			s = fmt.Sprintf("manual, attempt %d, reset %s", h.Step.Attempt, h.Step.Reset)
		}
		return s
	case h.State == fleet.StateOutdated:
		return "runs " + h.AssignedRef + ", waiting for its turn"
	}
	return ""
}

func newHostShowCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show one host: spec, assignment, step in flight, quarantine and events",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var d hostShow
			c := newClient(cmd)
			if err := c.getJSON(cmd, hostPath(args[0]), &d.HostStatusDetail); err != nil {
				return err
			}
			d.Boots = fetchBoots(cmd, c, d.MACs)
			if output == "json" {
				return emitJSON(d)
			}
			if err := printHostDetail(os.Stdout, d.HostStatusDetail); err != nil {
				return err
			}
			printBoots(os.Stdout, d.Boots)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// hostShow is `host show -o json`: the host and its last network boots,
// phase by phase (what the boot servers saw).
type hostShow struct {
	fleet.HostStatusDetail
	Boots []timeline.Boot `json:"boots"`
}

// fetchBoots asks the server for the boot timelines of macs, newest first.
// A server that cannot answer leaves them out: they are a diagnosis aid.
func fetchBoots(cmd *cobra.Command, c *apiClient, macs []string) []timeline.Boot {
	var all []timeline.Boot
	for _, m := range macs {
		var b []timeline.Boot
		if c.getJSON(cmd, "/api/v1/boots/"+url.PathEscape(m), &b) == nil {
			all = append(all, b...)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Start.After(all[j].Start) })
	return all
}

// printBoots prints boot timelines: when each phase was reached.
func printBoots(w io.Writer, boots []timeline.Boot) {
	if len(boots) == 0 {
		return
	}
	fmt.Fprintf(w, "\nBoots (newest first; time since the first DHCP offer):\n")
	for _, b := range boots {
		var parts []string
		for _, st := range b.Steps {
			parts = append(parts, fmt.Sprintf("%s %.1fs", st.Phase, st.After.Seconds()))
		}
		state := "in progress"
		switch {
		case b.Failed != "":
			state = "failed: " + b.Failed
		case b.Done:
			state = "reported"
		}
		fmt.Fprintf(w, "  %s %s (%s): %s\n", b.Start.Local().Format(time.DateTime), b.MAC, state, strings.Join(parts, ", "))
	}
}

func printHostDetail(w io.Writer, d fleet.HostStatusDetail) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	row("Host", d.Name)
	row("State", d.State)
	row("MACs", strings.Join(d.MACs, ", "))
	row("Image", d.Image)
	row("Desired", strings.TrimSpace(d.DesiredRef+" "+d.Digest))
	row("Assigned", strings.TrimSpace(d.AssignedRef+" "+d.Assigned))
	row("Override", d.Override)
	row("Mode", d.Mode)
	row("BMC", d.BMC)
	if len(d.Labels) > 0 {
		keys := make([]string, 0, len(d.Labels))
		for k := range d.Labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + d.Labels[k]
		}
		row("Labels", strings.Join(parts, ", "))
	}
	if r := d.LastReport; r != nil {
		row("Reported", fmt.Sprintf("%s %s from %s", r.Time.Local().Format(time.DateTime), r.Digest, r.RemoteAddr))
	}
	if !d.ReadyAt.IsZero() {
		row("Running since", d.ReadyAt.Local().Format(time.DateTime))
	}
	if !d.RefreshAt.IsZero() {
		row("Rebuild by age", d.RefreshAt.Local().Format(time.DateTime))
	}
	if s := d.Step; s != nil {
		row("Step", fmt.Sprintf("to %s (%s), rollout %d, attempt %d, reset %s, deadline %s", s.TargetRef, s.Reason, s.Rollout, s.Attempt, s.Reset, s.Deadline.Local().Format(time.TimeOnly)))
		row("Previous attempt", s.Error)
	}
	row("Last failure", d.LastFailure)
	row("Quarantined", d.Quarantine)
	if err := tw.Flush(); err != nil {
		return err
	}
	printEvents := func(title string, evs []fleet.Event) {
		if len(evs) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s:\n", title)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for i := len(evs) - 1; i >= 0; i-- {
			e := evs[i]
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Kind, e.Message)
		}
		tw.Flush()
	}
	printEvents("Events", d.Events)
	printEvents("Events kept at quarantine", d.QuarantineEvents)
	return nil
}

// reimagePoll is how often `host reimage --wait` asks the server.
const reimagePoll = time.Second

// reimageOutcome is `host reimage -o json`'s answer.
type reimageOutcome struct {
	fleet.ReimageRequest
	// Result is "requested" (no --wait), "ready", "failed" or "timeout".
	Result string `json:"result"`
	Error  string `json:"error,omitempty"`
	// Events is the host's timeline since the request, oldest first.
	Events []fleet.Event `json:"events,omitempty"`
	// Boots are the network boots (phase by phase) since the request.
	Boots []timeline.Boot `json:"boots,omitempty"`
}

func newHostReimageCmd() *cobra.Command {
	var image, output string
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "reimage NAME [--image NAME:VERSION] [--wait [--timeout D]]",
		Short: "Reimage one host now (ahead of rollouts, within max-unavailable)",
		Long: `reimage resets the host into its desired image now, or into --image, which the
host then keeps until its fleet file image changes. With --wait it returns once
the host reports the wanted digest (exit 0), or fails with the reason: the host
was quarantined after its retries, or --timeout passed. This is what a CI system
reflashing test hardware between runs needs.`,
		Example: `  phoenix host reimage rack1-07 --wait
  phoenix host reimage ci-board-3 --image testos:2026.11.2 --wait --timeout 20m -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c := newClient(cmd)
			var req fleet.ReimageRequest
			if err := c.sendJSON(cmd, "POST", hostPath(args[0])+"/reimage", map[string]string{"image": image}, &req); err != nil {
				return err
			}
			out := reimageOutcome{ReimageRequest: req, Result: "requested"}
			if !wait {
				if output == "json" {
					return emitJSON(out)
				}
				fmt.Printf("Host %s will be reimaged to %s (%s).\n", req.Host, req.TargetRef, shortDigest(req.Target))
				return nil
			}
			if output != "json" {
				fmt.Fprintf(os.Stderr, "Reimaging %s to %s (%s)…\n", req.Host, req.TargetRef, shortDigest(req.Target))
			}
			err := waitReimage(cmd, c, req, timeout, output != "json", &out)
			if output == "json" {
				if jerr := emitJSON(out); jerr != nil {
					return jerr
				}
			} else if err == nil {
				fmt.Printf("Host %s reports %s (%s).\n", req.Host, req.TargetRef, req.Target)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&image, "image", "", "image to reimage to (NAME:VERSION, NAME@CHANNEL or digest); default: the host's desired image")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the host reports the wanted digest")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "with --wait: give up after this long")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json (with --wait: the boot's timeline)")
	return cmd
}

// waitReimage polls the host until it reports req.Target after the
// request, is quarantined, or timeout passes.
func waitReimage(cmd *cobra.Command, c *apiClient, req fleet.ReimageRequest, timeout time.Duration, progress bool, out *reimageOutcome) error {
	deadline := time.Now().Add(timeout)
	lastNote := ""
	for {
		var d fleet.HostStatusDetail
		if err := c.getJSON(cmd, hostPath(req.Host), &d); err != nil {
			return err
		}
		out.Events = eventsSince(d.Events, req.Requested)
		r := d.LastReport
		switch {
		case r != nil && r.Digest == req.Target && !r.Time.Before(req.Requested) && d.Step == nil:
			out.Result = "ready"
			for _, b := range fetchBoots(cmd, c, d.MACs) {
				if !b.Start.Before(req.Requested) {
					out.Boots = append(out.Boots, b)
				}
			}
			return nil
		case d.Quarantine != "":
			out.Result, out.Error = "failed", fmt.Sprintf("host %s quarantined: %s", req.Host, d.Quarantine)
			return errors.New(out.Error)
		case d.State == fleet.StateBadImage:
			out.Result, out.Error = "failed", fmt.Sprintf("host %s: %s", req.Host, d.Error)
			return errors.New(out.Error)
		}
		if note := hostNote(d.HostStatus); progress && note != lastNote && note != "" {
			fmt.Fprintf(os.Stderr, "  %s: %s\n", time.Now().Format(time.TimeOnly), note)
			lastNote = note
		}
		if time.Now().After(deadline) {
			why := "state " + d.State
			if d.LastFailure != "" {
				why += ", last failure: " + d.LastFailure
			}
			out.Result, out.Error = "timeout", fmt.Sprintf("host %s did not report %s within %s (%s)", req.Host, req.TargetRef, timeout, why)
			return errors.New(out.Error)
		}
		select {
		case <-cmd.Context().Done():
			return cmd.Context().Err()
		case <-time.After(reimagePoll):
		}
	}
}

// eventsSince returns the events (newest first, as the API sends them)
// at or after t, oldest first.
func eventsSince(evs []fleet.Event, t time.Time) []fleet.Event {
	var out []fleet.Event
	for i := len(evs) - 1; i >= 0; i-- {
		if !evs[i].Time.Before(t) {
			out = append(out, evs[i])
		}
	}
	return out
}

func newHostQuarantineCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "quarantine NAME",
		Short: "Take a host out of phoenix's hands: never reset until released",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := newClient(cmd).sendJSON(cmd, "POST", hostPath(args[0])+"/quarantine", map[string]string{"reason": reason}, nil); err != nil {
				return err
			}
			fmt.Printf("Host %s is quarantined.\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, kept with the host")
	return cmd
}

func newHostReleaseCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "release NAME",
		Short: "Return a quarantined host to phoenix (it is reimaged if not current)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := newClient(cmd).sendJSON(cmd, "POST", hostPath(args[0])+"/release", nil, nil); err != nil {
				return err
			}
			fmt.Printf("Host %s is released.\n", args[0])
			return nil
		},
	}
}

func newHostPowerCmd() *cobra.Command {
	var graceful time.Duration
	var output string
	cmd := &cobra.Command{
		Use:   "power NAME [status|on|off|cycle]",
		Short: "A host's power through its BMC, with the credentials phoenix holds (off and cycle: quarantined hosts only)",
		Long: `Read or change a host's power through the BMC its fleet file names, with the
credentials the server holds: the operator needs no BMC password.

phoenix powers hosts itself when it reimages them, so off and cycle are for
quarantined hosts (phoenix host quarantine NAME first; a host in service is
rebuilt with phoenix host reimage), and on is refused while a reimage is
powering the host. Every change is recorded in the host's events.`,
		Args:      cobra.RangeArgs(1, 2),
		ValidArgs: []string{fleet.ActionPowerStatus, fleet.ActionPowerOn, fleet.ActionPowerOff, fleet.ActionPowerCycle},
		RunE: func(cmd *cobra.Command, args []string) error {
			action := fleet.ActionPowerStatus
			if len(args) == 2 {
				action = args[1]
			}
			body := map[string]string{"power": action, "graceful": graceful.String()}
			if action == fleet.ActionPowerOff && graceful > 0 {
				fmt.Fprintf(os.Stderr, "Asking %s's OS to shut down; forced off after %s.\n", args[0], graceful)
			}
			var out fleet.PowerResult
			if err := newClient(cmd).sendJSON(cmd, "POST", hostPath(args[0])+"/power", body, &out); err != nil {
				return err
			}
			if output == "json" {
				return json.NewEncoder(os.Stdout).Encode(out)
			}
			fmt.Printf("Host %s: power %s\n", out.Host, out.Power)
			return nil
		},
	}
	cmd.Flags().DurationVar(&graceful, "graceful", 2*time.Minute, "for off: time the OS gets to shut down before the BMC forces it off (0 = at once)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}
