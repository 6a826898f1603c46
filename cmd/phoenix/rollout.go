package main

import "github.com/spf13/cobra"

// newRolloutCmd is a placeholder until its issue lands; hidden so help stays honest.
func newRolloutCmd() *cobra.Command {
	return &cobra.Command{Use: "rollout", Short: "(not yet implemented)", Hidden: true}
}
