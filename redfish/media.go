package redfish

import (
	"context"
	"errors"
	"slices"

	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/schemas"
)

// Media is the state of the system's virtual CD/DVD drive.
type Media struct {
	Inserted bool   `json:"inserted"`
	Image    string `json:"image,omitempty"`
}

// InsertMedia attaches the ISO at url to the virtual CD drive, ejecting
// whatever was there first (BMCs refuse an insert over an inserted image).
func (c *Client) InsertMedia(ctx context.Context, url string) error {
	return c.do(ctx, "insert media", func(api *gofish.APIClient) error {
		vm, err := c.virtualMedia(api)
		if err != nil {
			return err
		}
		if inserted(vm) || c.quirks.ejectAlways {
			if err := c.eject(ctx, api, vm); err != nil && !c.quirks.ejectAlways {
				return err
			}
			if vm, err = schemas.GetVirtualMedia(api, vm.ODataID); err != nil {
				return err
			}
		}
		c.log.Info("insert media", "image", url)
		yes := true
		task, err := vm.InsertMedia(&schemas.VirtualMediaInsertMediaParameters{Image: url, Inserted: &yes, WriteProtected: &yes})
		if err != nil {
			return err
		}
		return c.waitTask(ctx, api, task)
	})
}

// EjectMedia detaches the virtual CD drive's image; an empty drive is
// left alone.
func (c *Client) EjectMedia(ctx context.Context) error {
	return c.do(ctx, "eject media", func(api *gofish.APIClient) error {
		vm, err := c.virtualMedia(api)
		if err != nil {
			return err
		}
		if !inserted(vm) {
			return nil
		}
		return c.eject(ctx, api, vm)
	})
}

func (c *Client) eject(ctx context.Context, api *gofish.APIClient, vm *schemas.VirtualMedia) error {
	c.log.Info("eject media", "image", vm.Image)
	task, err := vm.EjectMedia()
	if err != nil {
		return err
	}
	return c.waitTask(ctx, api, task)
}

// MediaState reports what the virtual CD drive holds.
func (c *Client) MediaState(ctx context.Context) (Media, error) {
	var m Media
	err := c.do(ctx, "media state", func(api *gofish.APIClient) error {
		vm, err := c.virtualMedia(api)
		if err != nil {
			return err
		}
		m = Media{Inserted: inserted(vm), Image: vm.Image}
		return nil
	})
	return m, err
}

func inserted(vm *schemas.VirtualMedia) bool {
	if vm.Inserted != nil {
		return *vm.Inserted
	}
	return vm.Image != ""
}

// virtualMedia finds the system's virtual CD/DVD drive: under the system
// itself (newer services) or under the managers that manage it (most
// BMCs). Collections come back in any order, so the choice is by media
// type, not position.
func (c *Client) virtualMedia(api *gofish.APIClient) (*schemas.VirtualMedia, error) {
	s, err := c.system(api)
	if err != nil {
		return nil, err
	}
	all, err := s.VirtualMedia()
	if err != nil {
		return nil, err
	}
	if len(all) == 0 {
		managers, err := s.ManagedBy()
		if err != nil {
			return nil, err
		}
		for _, m := range managers {
			vms, err := m.VirtualMedia()
			if err != nil {
				return nil, err
			}
			all = append(all, vms...)
		}
	}
	if len(all) == 0 {
		return nil, errors.New("the BMC offers no virtual media for this system")
	}
	slices.SortFunc(all, func(a, b *schemas.VirtualMedia) int {
		if a.ODataID < b.ODataID {
			return -1
		}
		if a.ODataID > b.ODataID {
			return 1
		}
		return 0
	})
	for _, vm := range all {
		if slices.Contains(vm.MediaTypes, schemas.CDVirtualMediaType) || slices.Contains(vm.MediaTypes, schemas.DVDVirtualMediaType) {
			return vm, nil
		}
	}
	return all[0], nil
}
