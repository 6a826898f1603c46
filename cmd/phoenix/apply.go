package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/phoenixboot/phoenix/fleet"
)

func newApplyCmd() *cobra.Command {
	var file, output, note string
	var revision int64
	cmd := &cobra.Command{
		Use:   "apply -f FLEET.yaml | --revision N",
		Short: "Commit a fleet file as the new desired state; the reconciler rolls it out",
		Long: `apply validates the fleet file as a whole (nothing is applied if anything is
wrong), commits it as a new revision and lets the reconciler start what the plan
says. --revision N applies an earlier revision's file again, as a new revision.
Follow the rollout with phoenix rollout ls / show.`,
		Example: `  phoenix apply -f fleet.yaml
  phoenix apply --revision 3`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (file == "") == (revision == 0) {
				return errors.New("apply: give either -f FILE or --revision N")
			}
			q := url.Values{}
			var body *bytes.Reader
			if revision != 0 {
				q.Set("revision", strconv.FormatInt(revision, 10))
				body = bytes.NewReader(nil)
			} else {
				data, err := readFleetArg(file)
				if err != nil {
					return err
				}
				body = bytes.NewReader(data)
				if note == "" {
					note = "apply -f " + file
				}
			}
			if note != "" {
				q.Set("note", note)
			}
			var res fleet.ApplyResult
			if err := newClient(cmd).do(cmd, "POST", "/api/v1/apply?"+q.Encode(), body, "application/yaml", &res); err != nil {
				return err
			}
			if output == "json" {
				return emitJSON(res)
			}
			if res.Plan.Unchanged {
				fmt.Printf("Nothing to apply: the file is revision %d already.\n", res.Revision)
				return nil
			}
			if err := printPlan(os.Stdout, res.Plan); err != nil {
				return err
			}
			fmt.Printf("\nRevision %d applied.", res.Revision)
			if len(res.Plan.Reimage) > 0 {
				fmt.Print(" Follow the rollout: phoenix rollout ls; phoenix rollout show ID")
			}
			fmt.Println()
			return nil
		},
	}
	addClientFlags(cmd)
	cmd.Flags().StringVarP(&file, "file", "f", "", "fleet file (YAML); - reads standard input")
	cmd.Flags().Int64Var(&revision, "revision", 0, "apply this earlier revision again")
	cmd.Flags().StringVar(&note, "note", "", "note kept with the revision")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}
