package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Power actions an operator takes on a host through its BMC (Power).
const (
	ActionPowerStatus = "status" // read the power state; changes nothing
	ActionPowerOn     = "on"
	ActionPowerOff    = "off"   // graceful shutdown, then forced after a grace time
	ActionPowerCycle  = "cycle" // off and on again at once
)

// ErrBMC wraps a BMC's own failure (unreachable, refused credentials, an
// error answer), so that the API can tell it from a bad request.
var ErrBMC = errors.New("bmc")

// PowerResult is the answer to Power: the host's power state as its BMC
// reads it after the action.
type PowerResult struct {
	Host   string `json:"host"`
	Action string `json:"action"`
	Power  string `json:"power"`
}

// Power acts on name's power through its BMC for an operator: status, on,
// off (graceful for up to graceful, then forced; 0 forces at once) or cycle.
//
// phoenix powers hosts itself during reimages, so a hand on the power must
// not cross one: off and cycle are for quarantined hosts only (quarantine
// takes a host out of phoenix's hands; a host in service is rebuilt with
// `host reimage`), and on is refused while a reimage step is in flight.
// While an action runs, no step starts on the host and Release refuses it.
// Every action but status leaves an event with its outcome, the BMC's own
// error text on failure.
func (c *Controller) Power(ctx context.Context, name, action string, graceful time.Duration) (PowerResult, error) {
	out := PowerResult{Host: name, Action: action}
	switch action {
	case ActionPowerStatus, ActionPowerOn, ActionPowerOff, ActionPowerCycle:
	default:
		return out, fmt.Errorf("%w: power action %q: want status, on, off or cycle", errBadRequest, action)
	}
	if err := c.Load(); err != nil {
		return out, err
	}
	c.mu.Lock()
	rec := c.hosts[name]
	var spec HostSpec
	var err error
	switch {
	case rec == nil:
		err = fmt.Errorf("host %s: %w", name, ErrNotFound)
	case rec.Spec.BMC == nil:
		err = fmt.Errorf("host %s: %w: its fleet file gives it no bmc", name, ErrState)
	case (action == ActionPowerOff || action == ActionPowerCycle) && !rec.Quarantined:
		err = fmt.Errorf("host %s: %w: power %s is for quarantined hosts (phoenix host quarantine %s first; `host reimage` rebuilds a host in service)", name, ErrState, action, name)
	case action == ActionPowerOn && rec.Step != nil && !rec.Quarantined:
		err = fmt.Errorf("host %s: %w: a reimage step is powering it (attempt %d)", name, ErrState, rec.Step.Attempt)
	default:
		spec = rec.Spec
		if action != ActionPowerStatus {
			if c.powering == nil {
				c.powering = map[string]int{}
			}
			c.powering[name]++
		}
	}
	c.mu.Unlock()
	if err != nil {
		return out, err
	}
	if action != ActionPowerStatus {
		defer func() {
			c.mu.Lock()
			if c.powering[name]--; c.powering[name] <= 0 {
				delete(c.powering, name)
			}
			c.mu.Unlock()
			c.Wake() // a step held back by this action may start now
		}()
	}

	out.Power, err = c.power(ctx, spec, action, graceful)
	if action == ActionPowerStatus {
		return out, err
	}
	what := "power " + action
	if action == ActionPowerOff {
		what += fmt.Sprintf(" (graceful for %s)", graceful)
	}
	ev := Event{Kind: "power", Host: name, Message: what + " by the operator: now " + out.Power}
	if err != nil {
		ev.Message = what + " by the operator failed: " + err.Error()
	}
	if rerr := c.mutate(func(p *pass) error { p.event(ev); return nil }); rerr != nil && err == nil {
		err = rerr
	}
	return out, err
}

// power carries out action on spec's BMC and reads the power state after.
func (c *Controller) power(ctx context.Context, spec HostSpec, action string, graceful time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, orDefault(c.BMCTimeout, 2*time.Minute)+graceful)
	defer cancel()
	ep := spec.BMC.Endpoint
	b, err := c.BMCs.Dial(ctx, spec)
	if err != nil {
		return "", fmt.Errorf("%w %s: %w", ErrBMC, ep, err)
	}
	if cl, ok := b.(io.Closer); ok {
		defer cl.Close()
	}
	switch action {
	case ActionPowerOn:
		err = b.PowerOn(ctx)
	case ActionPowerOff:
		err = b.PowerOff(ctx, graceful)
	case ActionPowerCycle:
		err = b.PowerCycle(ctx)
	}
	if err != nil {
		return "", fmt.Errorf("%w %s: power %s: %w", ErrBMC, ep, action, err)
	}
	st, err := b.PowerState(ctx)
	if err != nil {
		return "", fmt.Errorf("%w %s: power state: %w", ErrBMC, ep, err)
	}
	return strings.TrimSpace(st), nil
}
