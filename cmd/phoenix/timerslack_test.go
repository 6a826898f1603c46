package main

import (
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// threadSlacks reads the timer slack of every thread of the test process.
func threadSlacks(t *testing.T) map[string]string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Skip("no /proc/self/task:", err)
	}
	out := map[string]string{}
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/" + task.Name() + "/timerslack_ns")
		if err == nil {
			out[task.Name()] = strings.TrimSpace(string(b))
		}
	}
	return out
}

// TestSetTimerSlack: every thread gets the slack, and so does a thread
// the runtime starts afterwards.
func TestSetTimerSlack(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("setting other threads' timer slack needs CAP_SYS_NICE")
	}
	before := threadSlacks(t)
	t.Cleanup(func() {
		for tid, v := range before {
			os.WriteFile("/proc/"+tid+"/timerslack_ns", []byte(v), 0)
		}
	})
	setTimerSlack(slog.New(slog.DiscardHandler), 123_456)
	for tid, v := range threadSlacks(t) {
		if v != "123456" {
			t.Errorf("thread %s: timer slack %s", tid, v)
		}
	}

	// Goroutines that lock and hold their threads make the runtime start
	// new ones for the rest (in a fresh test process); they inherit the
	// slack.
	release := make(chan struct{})
	defer close(release)
	var locked sync.WaitGroup
	for range 4 {
		locked.Add(1)
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			locked.Done()
			<-release
		}()
	}
	locked.Wait()
	for tid, v := range threadSlacks(t) {
		if v != "123456" {
			t.Errorf("thread %s, started later: timer slack %s", tid, v)
		}
	}
}
