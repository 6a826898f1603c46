package redfish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/schemas"
)

// errResetRefused marks a reset type the BMC does not offer.
var errResetRefused = errors.New("reset type not allowed")

// PowerState returns the system's power state as the BMC reports it:
// "On", "Off", "PoweringOn", "PoweringOff".
func (c *Client) PowerState(ctx context.Context) (string, error) {
	var st string
	err := c.do(ctx, "power state", func(api *gofish.APIClient) error {
		s, err := c.system(api)
		if err != nil {
			return err
		}
		st = string(s.PowerState)
		return nil
	})
	return st, err
}

// PowerOn turns the system on and waits until the BMC reports it on.
// A system that is already on is left alone.
func (c *Client) PowerOn(ctx context.Context) error {
	return c.do(ctx, "power on", func(api *gofish.APIClient) error {
		return c.powerOn(ctx, api)
	})
}

func (c *Client) powerOn(ctx context.Context, api *gofish.APIClient) error {
	s, err := c.system(api)
	if err != nil {
		return err
	}
	if s.PowerState == schemas.OnPowerState {
		return nil
	}
	rt, err := firstAllowed(s, schemas.OnResetType, schemas.ForceOnResetType, schemas.PushPowerButtonResetType)
	if err != nil {
		return err
	}
	c.log.Info("power on", "reset", string(rt))
	if err := c.reset(ctx, api, s, rt); err != nil {
		return err
	}
	return c.waitPower(ctx, api, schemas.OnPowerState, c.cfg.WaitTimeout)
}

// PowerOff shuts the system down: GracefulShutdown and up to graceful for
// the OS to stop, then ForceOff. graceful <= 0 forces off at once. It
// returns when the BMC reports the system off.
func (c *Client) PowerOff(ctx context.Context, graceful time.Duration) error {
	return c.do(ctx, "power off", func(api *gofish.APIClient) error {
		return c.powerOff(ctx, api, graceful)
	})
}

func (c *Client) powerOff(ctx context.Context, api *gofish.APIClient, graceful time.Duration) error {
	s, err := c.system(api)
	if err != nil {
		return err
	}
	if s.PowerState == schemas.OffPowerState {
		return nil
	}
	if graceful > 0 && allowed(s, schemas.GracefulShutdownResetType) {
		c.log.Info("power off", "reset", "GracefulShutdown", "grace", graceful)
		if err := c.reset(ctx, api, s, schemas.GracefulShutdownResetType); err != nil {
			return err
		}
		err := c.waitPower(ctx, api, schemas.OffPowerState, graceful)
		if err == nil || ctx.Err() != nil {
			return err
		}
		c.log.Info("graceful shutdown did not finish; forcing off", "grace", graceful)
		if s, err = c.system(api); err != nil {
			return err
		}
	}
	if _, err := firstAllowed(s, schemas.ForceOffResetType); err != nil {
		return err
	}
	c.log.Info("power off", "reset", "ForceOff")
	if err := c.reset(ctx, api, s, schemas.ForceOffResetType); err != nil {
		return err
	}
	return c.waitPower(ctx, api, schemas.OffPowerState, c.cfg.WaitTimeout)
}

// PowerCycle makes the system boot afresh: a system that is off is
// powered on; one that is on gets ForceRestart, or PowerCycle, or ForceOff
// then On where the BMC allows neither. It returns once the BMC has
// accepted the reset (and its task, if it made one, has finished) and
// reports the system on. A restart may never show as Off to polling, so
// on a BMC that acts asynchronously this can be before the host has gone
// down: callers judge the reboot by what the host reports next, not by
// when this returns.
func (c *Client) PowerCycle(ctx context.Context) error {
	return c.do(ctx, "power cycle", func(api *gofish.APIClient) error {
		s, err := c.system(api)
		if err != nil {
			return err
		}
		if s.PowerState == schemas.OffPowerState {
			return c.powerOn(ctx, api)
		}
		for _, rt := range []schemas.ResetType{schemas.ForceRestartResetType, schemas.PowerCycleResetType} {
			if !allowed(s, rt) {
				continue
			}
			c.log.Info("power cycle", "reset", string(rt))
			err := c.reset(ctx, api, s, rt)
			if st := statusOf(err); st == http.StatusBadRequest || st == http.StatusMethodNotAllowed || st == http.StatusNotImplemented {
				// Listed but refused (stale AllowableValues): try the next way.
				c.log.Info("BMC refused the reset type it listed", "reset", string(rt), "status", st)
				continue
			}
			if err != nil {
				return err
			}
			return c.waitPower(ctx, api, schemas.OnPowerState, c.cfg.WaitTimeout)
		}
		c.log.Info("power cycle by ForceOff and On")
		if err := c.powerOff(ctx, api, 0); err != nil {
			return err
		}
		return c.powerOn(ctx, api)
	})
}

// resetAction returns the target and allowed values of the system's Reset
// action as the BMC lists them, and whether it has one at all. gofish
// would only say "no target provided" for a missing action.
func resetAction(s *schemas.ComputerSystem) (target string, ok bool) {
	var raw struct {
		Actions map[string]struct {
			Target string `json:"target"`
		}
	}
	if json.Unmarshal(s.RawData, &raw) != nil {
		return "", false
	}
	a, ok := raw.Actions["#ComputerSystem.Reset"]
	return a.Target, ok && a.Target != ""
}

// allowed reports whether the BMC offers reset type rt; a BMC that lists
// no allowable values is taken to allow everything.
func allowed(s *schemas.ComputerSystem, rt schemas.ResetType) bool {
	types, err := s.GetSupportedResetTypes()
	if err != nil || len(types) == 0 {
		return true
	}
	return slices.Contains(types, rt)
}

// firstAllowed picks the first of the wanted reset types the BMC offers,
// or says plainly which it offers instead.
func firstAllowed(s *schemas.ComputerSystem, want ...schemas.ResetType) (schemas.ResetType, error) {
	if _, ok := resetAction(s); !ok {
		return "", fmt.Errorf("system %s has no ComputerSystem.Reset action: this BMC cannot change its power", s.ID)
	}
	for _, rt := range want {
		if allowed(s, rt) {
			return rt, nil
		}
	}
	types, _ := s.GetSupportedResetTypes()
	var names []string
	for _, t := range types {
		names = append(names, string(t))
	}
	var wantNames []string
	for _, t := range want {
		wantNames = append(wantNames, string(t))
	}
	return "", fmt.Errorf("%w: wanted %s, the BMC allows only %s", errResetRefused, strings.Join(wantNames, " or "), strings.Join(names, ", "))
}

// reset posts ComputerSystem.Reset and follows a task monitor if the BMC
// answers 202 with one.
func (c *Client) reset(ctx context.Context, api *gofish.APIClient, s *schemas.ComputerSystem, rt schemas.ResetType) error {
	if _, ok := resetAction(s); !ok {
		return fmt.Errorf("system %s has no ComputerSystem.Reset action: this BMC cannot change its power", s.ID)
	}
	task, err := s.Reset(rt)
	if err != nil {
		return fmt.Errorf("reset %s: %w", rt, err)
	}
	return c.waitTask(ctx, api, task)
}

// waitTask polls a task monitor until the task is done, failed, or
// WaitTimeout passes. A nil task or one without a monitor URI means the
// request completed synchronously (or the BMC gives no way to know).
func (c *Client) waitTask(ctx context.Context, api *gofish.APIClient, task *schemas.TaskMonitorInfo) error {
	if task == nil || task.TaskMonitor == "" {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, c.cfg.WaitTimeout)
	defer cancel()
	wapi := api.WithContext(wctx)
	uri := task.TaskMonitor
	if i := strings.Index(uri, "/redfish/"); i > 0 {
		uri = uri[i:] // gofish wants a path; some BMCs send an absolute URL
	}
	delay := c.firstPoll()
	for ; ; delay = min(2*delay, c.cfg.pollInterval) {
		resp, err := wapi.Get(uri)
		if err != nil {
			if wctx.Err() != nil && ctx.Err() == nil {
				return fmt.Errorf("task %s not finished after %s", uri, c.cfg.WaitTimeout)
			}
			return fmt.Errorf("task %s: %w", uri, err)
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		var t struct {
			TaskState string
			Messages  []struct{ Message string }
		}
		_ = json.Unmarshal(b, &t)
		running := resp.StatusCode == http.StatusAccepted
		switch schemas.TaskState(t.TaskState) {
		case schemas.NewTaskState, schemas.StartingTaskState, schemas.RunningTaskState,
			schemas.PendingTaskState, schemas.StoppingTaskState, schemas.CancellingTaskState,
			schemas.SuspendedTaskState, schemas.ServiceTaskState:
			running = true
		case schemas.CompletedTaskState:
			// Finished, whatever the status: some monitors answer 202
			// until they are deleted.
			running = false
		case schemas.ExceptionTaskState, schemas.KilledTaskState, schemas.CancelledTaskState, schemas.InterruptedTaskState:
			var msgs []string
			for _, m := range t.Messages {
				msgs = append(msgs, m.Message)
			}
			return fmt.Errorf("task %s ended %s: %s", uri, t.TaskState, strings.Join(msgs, "; "))
		}
		if !running {
			return nil
		}
		if err := sleep(wctx, delay); err != nil {
			if ctx.Err() == nil {
				return fmt.Errorf("task %s not finished after %s", uri, c.cfg.WaitTimeout)
			}
			return err
		}
	}
}

// waitPower polls the system until it reports want: real BMCs accept a
// reset at once and change the power state seconds later.
func (c *Client) waitPower(ctx context.Context, api *gofish.APIClient, want schemas.PowerState, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wapi := api.WithContext(wctx)
	last := "unknown"
	for delay := c.firstPoll(); ; delay = min(2*delay, c.cfg.pollInterval) {
		s, err := schemas.GetComputerSystem(wapi, c.systemURI)
		if err == nil {
			if s.PowerState == want {
				return nil
			}
			last = string(s.PowerState)
		} else if wctx.Err() == nil {
			return err
		}
		if err := sleep(wctx, delay); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("power state still %s after %s, wanted %s", last, timeout, want)
		}
	}
}

// firstPoll is the first wait before polling again: short, because many
// BMCs finish quickly, then doubling up to the poll interval so slow ones
// are not hammered.
func (c *Client) firstPoll() time.Duration {
	return max(c.cfg.pollInterval/8, time.Millisecond)
}
