package main

import "github.com/spf13/cobra"

// newBMCCmd is a placeholder until its issue lands; hidden so help stays honest.
func newBMCCmd() *cobra.Command {
	return &cobra.Command{Use: "bmc", Short: "(not yet implemented)", Hidden: true}
}
