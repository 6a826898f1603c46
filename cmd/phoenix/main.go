// Command phoenix is the bare-metal immutable boot server: it answers DHCP,
// serves iPXE over TFTP and images over HTTP, and records what hosts report.
// See the README for the quick start.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "phoenix:", err)
		os.Exit(1)
	}
}
