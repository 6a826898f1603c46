package main

import "github.com/spf13/cobra"

// newApplyCmd is a placeholder until its issue lands; hidden so help stays honest.
func newApplyCmd() *cobra.Command {
	return &cobra.Command{Use: "apply", Short: "(not yet implemented)", Hidden: true}
}
