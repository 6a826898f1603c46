package redfish

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/schemas"
)

// BootOverride is a boot source override: where the system boots next.
type BootOverride struct {
	// Target is "Pxe", "UefiHttp", "Cd", "Hdd" or "None" (any case).
	Target string
	// Mode is "UEFI" or "Legacy"; "" keeps what the BMC has.
	Mode string
	// URI is the UEFI HTTP boot URL, for Target "UefiHttp".
	URI string
	// Continuous makes the override stick for every boot; the default is
	// the next boot only.
	Continuous bool
}

var bootTargets = map[string]schemas.BootSource{
	"pxe":      schemas.PxeBootSource,
	"uefihttp": schemas.UefiHTTPBootSource,
	"http":     schemas.UefiHTTPBootSource,
	"cd":       schemas.CdBootSource,
	"hdd":      schemas.HddBootSource,
	"disk":     schemas.HddBootSource,
	"none":     schemas.NoneBootSource,
}

// SetBootOverride sets the boot source override, handling vendor
// differences (mode sent every time, mode not writable, Continuous read
// back after Once, settings applied at the next reset), and reads it back.
func (c *Client) SetBootOverride(ctx context.Context, o BootOverride) error {
	target, ok := bootTargets[strings.ToLower(o.Target)]
	if !ok {
		return &Error{BMC: c.cfg.Endpoint, Op: "boot override", Message: fmt.Sprintf("unknown boot target %q (want Pxe, UefiHttp, Cd, Hdd or None)", o.Target)}
	}
	var mode schemas.BootSourceOverrideMode
	switch strings.ToLower(o.Mode) {
	case "":
	case "uefi":
		mode = schemas.UEFIBootSourceOverrideMode
	case "legacy":
		mode = schemas.LegacyBootSourceOverrideMode
	default:
		return &Error{BMC: c.cfg.Endpoint, Op: "boot override", Message: fmt.Sprintf("unknown boot mode %q (want UEFI or Legacy)", o.Mode)}
	}
	if o.URI != "" && target != schemas.UefiHTTPBootSource {
		return &Error{BMC: c.cfg.Endpoint, Op: "boot override", Message: "a boot URI needs target UefiHttp"}
	}
	enabled := schemas.OnceBootSourceOverrideEnabled
	if o.Continuous {
		enabled = schemas.ContinuousBootSourceOverrideEnabled
	}
	return c.do(ctx, "boot override", func(api *gofish.APIClient) error {
		s, err := c.system(api)
		if err != nil {
			return err
		}
		if av := s.Boot.AllowableBootSourceOverrideTargetValues; len(av) > 0 && !slices.Contains(av, target) {
			var names []string
			for _, v := range av {
				names = append(names, string(v))
			}
			return fmt.Errorf("boot target %s not allowed; the BMC allows %s", target, strings.Join(names, ", "))
		}
		q := c.quirks
		b := schemas.Boot{BootSourceOverrideTarget: target, BootSourceOverrideEnabled: enabled}
		switch {
		case q.noModeWrite:
			if mode != "" && s.Boot.BootSourceOverrideMode != "" && s.Boot.BootSourceOverrideMode != mode {
				return fmt.Errorf("%s BMCs refuse to write BootSourceOverrideMode; it is %s, change it to %s in the BIOS settings", q.name, s.Boot.BootSourceOverrideMode, mode)
			}
		case mode != "":
			b.BootSourceOverrideMode = mode
		case q.modeEveryTime:
			b.BootSourceOverrideMode = s.Boot.BootSourceOverrideMode
			if b.BootSourceOverrideMode == "" {
				b.BootSourceOverrideMode = schemas.UEFIBootSourceOverrideMode
			}
		}
		if o.URI != "" {
			uri := o.URI
			b.HTTPBootURI = &uri
		}
		c.log.Info("boot override", "target", string(target), "enabled", string(enabled), "mode", string(b.BootSourceOverrideMode), "uri", o.URI)
		err = s.SetBoot(&b)
		if statusOf(err) == http.StatusPreconditionFailed {
			// Someone changed the system between our GET and PATCH:
			// fetch it again and patch without the stale ETag.
			if s, err = c.system(api); err != nil {
				return err
			}
			s.DisableEtagMatch(true)
			err = s.SetBoot(&b)
		}
		if err != nil {
			return err
		}
		return c.checkBoot(api, b)
	})
}

// checkBoot reads the override back: a BMC that answers 204 and ignores
// the PATCH would otherwise send a host to its old OS silently.
func (c *Client) checkBoot(api *gofish.APIClient, want schemas.Boot) error {
	s, err := c.system(api)
	if err != nil {
		return err
	}
	got := s.Boot
	if got.BootSourceOverrideTarget == want.BootSourceOverrideTarget && got.BootSourceOverrideEnabled == want.BootSourceOverrideEnabled {
		return nil
	}
	q := c.quirks
	if q.settingsApply {
		c.log.Info("boot override pending in the BMC's settings; applies at the next reset", "target", string(got.BootSourceOverrideTarget))
		return nil
	}
	if got.BootSourceOverrideTarget == want.BootSourceOverrideTarget &&
		want.BootSourceOverrideEnabled == schemas.OnceBootSourceOverrideEnabled &&
		got.BootSourceOverrideEnabled == schemas.ContinuousBootSourceOverrideEnabled {
		if !q.onceReadsContinuous {
			c.log.Warn("BMC reads back Continuous after Once was set; assuming it honours Once", "target", string(got.BootSourceOverrideTarget))
		}
		return nil
	}
	return fmt.Errorf("BMC accepted the boot override but reads back target %q enabled %q", got.BootSourceOverrideTarget, got.BootSourceOverrideEnabled)
}
