package lab

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"time"
)

// ReportMarker is what the demo image prints on its serial console once
// phoenix accepted its report (see assets/demo/init).
const ReportMarker = "PHOENIX-REPORTED"

// Result is how one VM's network boot went.
type Result struct {
	VM       string
	Firmware Firmware
	// Line is the serial line with ReportMarker.
	Line string
	// Took is the time from QEMU start to the marker.
	Took time.Duration
	// Digest is what the site's phoenix recorded for the VM ("" if none).
	Digest string
	// Want is the digest phoenix served the VM.
	Want string
	// State is phoenix's view of the host (ready, drift, pending).
	State string
	Err   error
}

// BootAll starts every VM in parallel on site, waits for each to print
// ReportMarker within timeout, then checks what the site's phoenix recorded.
// Progress lines go to out.
func BootAll(ctx context.Context, site *Site, vms []*VM, timeout time.Duration, out io.Writer) []Result {
	results := make([]Result, len(vms))
	var wg sync.WaitGroup
	for i, vm := range vms {
		if vm.Serial == "" {
			vm.Serial = filepath.Join(site.Dir, vm.Name+".serial.log")
		}
		results[i] = Result{VM: vm.Name, Firmware: vm.Firmware}
		if err := vm.Start(ctx, site.Dir); err != nil {
			results[i].Err = err
			continue
		}
		fmt.Fprintf(out, "[%s] %s (%s, %s) powered on, netbooting from %s (%s DHCP); serial: %s\n", site.Name, vm.Name, vm.Firmware, Accel(), site.URL(), site.DHCP, vm.Serial)
		wg.Add(1)
		go func(r *Result, vm *VM) {
			defer wg.Done()
			wctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			r.Line, r.Took, r.Err = vm.WaitFor(wctx, ReportMarker)
			if r.Err == nil {
				fmt.Fprintf(out, "[%s] %s reported after %s: %s\n", site.Name, vm.Name, r.Took.Round(100*time.Millisecond), r.Line)
			} else {
				fmt.Fprintf(out, "[%s] %s FAILED: %v\n", site.Name, vm.Name, r.Err)
			}
		}(&results[i], vm)
	}
	wg.Wait()
	status, err := site.HostStatus()
	for i, vm := range vms {
		r := &results[i]
		if err != nil {
			if r.Err == nil {
				r.Err = fmt.Errorf("host status: %w", err)
			}
			continue
		}
		for _, h := range status {
			for _, m := range h.MACs {
				if m == vm.MAC {
					r.Want, r.State = h.Digest, h.State
					if h.LastReport != nil {
						r.Digest = h.LastReport.Digest
					}
				}
			}
		}
		if r.Err == nil && (r.State != "ready" || r.Digest != r.Want || r.Want == "") {
			r.Err = fmt.Errorf("vm %s: phoenix shows state %q, reported digest %q, served %q", vm.Name, r.State, r.Digest, r.Want)
		}
	}
	return results
}
