package main

import "github.com/spf13/cobra"

// newPlanCmd is a placeholder until its issue lands; hidden so help stays honest.
func newPlanCmd() *cobra.Command {
	return &cobra.Command{Use: "plan", Short: "(not yet implemented)", Hidden: true}
}
