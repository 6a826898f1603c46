package main

import "github.com/spf13/cobra"

// newVBMCCmd is a placeholder until its issue lands; hidden so help stays honest.
func newVBMCCmd() *cobra.Command {
	return &cobra.Command{Use: "vbmc", Short: "(not yet implemented)", Hidden: true}
}
