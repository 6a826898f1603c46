package main

import (
	"context"
	"time"

	"github.com/phoenixboot/phoenix/fleet"
	"github.com/phoenixboot/phoenix/redfish"
)

// redfishDialer lets the fleet controller power hosts through their BMCs
// (fleet.BMCDialer over package redfish).
type redfishDialer struct{}

// Dial connects to h's BMC with the credentials its fleet file references.
func (redfishDialer) Dial(ctx context.Context, h fleet.HostSpec) (fleet.BMC, error) {
	pw, err := h.BMC.Password()
	if err != nil {
		return nil, err
	}
	c, err := redfish.Dial(ctx, redfish.Config{
		Endpoint: h.BMC.Endpoint, Username: h.BMC.Username, Password: pw,
		Insecure: h.BMC.Insecure, System: h.BMC.System, Timeout: 30 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	target := "Pxe"
	if h.BMC.Boot == fleet.BootUEFIHTTP {
		target = "UefiHttp"
	}
	return redfishBMC{c, target}, nil
}

// redfishBMC adapts a redfish.Client to fleet.BMC.
type redfishBMC struct {
	*redfish.Client
	netTarget string // the Redfish boot target of a network boot
}

// SetNetworkBootOnce asks for a one-time network boot: PXE, or UEFI HTTP
// boot for hosts whose fleet file says bmc.boot: uefi-http. The firmware
// takes the URL from DHCP, as without an override.
func (b redfishBMC) SetNetworkBootOnce(ctx context.Context) error {
	return b.SetBootOverride(ctx, redfish.BootOverride{Target: b.netTarget})
}
