package main

import (
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// newRoot builds the command tree. Subcommands are thin: they parse flags
// and call into packages.
func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "phoenix",
		Short:         "Bare-metal immutable boot server",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn, error")
	root.AddCommand(newServeCmd(), newImageCmd(), newHostCmd(), newLabCmd(), newTokenCmd(),
		newBMCCmd(), newVBMCCmd(), newPlanCmd(), newApplyCmd(), newRolloutCmd())
	return root
}

// logger returns the process logger at the level the --log-level flag asks for.
func logger(cmd *cobra.Command) *slog.Logger {
	lvl, _ := cmd.Flags().GetString("log-level")
	var l slog.Level
	switch strings.ToLower(lvl) {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}
