package main

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
)

// serveTimerSlack is the timer slack serve gives its threads, in
// nanoseconds (the kernel's default is 50 µs): how late the kernel may end
// a timed sleep, so that it can end several at once.
//
// While serve is busy, the Go runtime's monitor thread (sysmon) sleeps
// 20 µs between checks, and a syscall that outlasts a check may lose its
// processor to another thread. On a virtual machine, where each sleep and
// wake-up goes through the hypervisor, that monitor alone took a fifth of
// serve's CPU in a storm of 200 TFTP transfers (a short send and receive
// per block). With 1 ms of slack the storm took 1.17–1.31× dnsmasq's CPU
// instead of 1.33–1.49× (once 1.61×; bench, README). Nothing in serve needs timers
// finer than that: its shortest timeouts, TFTP's and DHCP's, are seconds.
const serveTimerSlack = 1_000_000

// setTimerSlack sets ns of timer slack on every thread of the process;
// threads started later inherit it from the one that starts them. The Go
// runtime's threads already run when main starts, so each is set through
// /proc (which needs CAP_SYS_NICE for threads other than the caller's).
// A second pass catches a thread started during the first by one not yet
// set. Failing is harmless: the server is only slower.
func setTimerSlack(log *slog.Logger, ns int) {
	value := []byte(strconv.Itoa(ns))
	done := map[string]bool{}
	for range 2 {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			log.Debug("timer slack not set", "err", err)
			return
		}
		for _, t := range tasks {
			if done[t.Name()] {
				continue
			}
			done[t.Name()] = true
			if err := os.WriteFile(fmt.Sprintf("/proc/%s/timerslack_ns", t.Name()), value, 0); err != nil {
				log.Debug("timer slack not set", "thread", t.Name(), "err", err)
			}
		}
	}
}
