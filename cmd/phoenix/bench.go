package main

import "github.com/spf13/cobra"

// newLabBenchCmd is a placeholder until the benchmarks land; hidden so help stays honest.
func newLabBenchCmd() *cobra.Command {
	return &cobra.Command{Use: "bench", Short: "(not yet implemented)", Hidden: true}
}
