package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/phoenixboot/phoenix/fleet"
)

func newTokenCmd() *cobra.Command {
	var state string
	cmd := &cobra.Command{
		Use:   "token --state DIR",
		Short: "Print the API token (made at the server's first start, mode 0600)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if state == "" {
				return errors.New("--state DIR is required")
			}
			b, err := os.ReadFile(filepath.Join(state, fleet.TokenFile))
			if err != nil {
				return fmt.Errorf("token: %w (has phoenix serve run on this state dir yet?)", err)
			}
			fmt.Println(strings.TrimSpace(string(b)))
			return nil
		},
	}
	cmd.Flags().StringVar(&state, "state", "", "the server's state directory")
	return cmd
}
