package redfish

import "strings"

// quirks are the vendor differences this package knows about. They live
// in this one table so that adding a vendor is one line here and one test
// case in vendor_test.go, never a special case scattered through the code.
type quirks struct {
	name string
	// modeEveryTime: the BMC resets BootSourceOverrideMode to Legacy unless
	// every boot override PATCH names it (Supermicro X11/X12).
	modeEveryTime bool
	// noModeWrite: the BMC rejects a PATCH that contains
	// BootSourceOverrideMode; the mode is a BIOS setting (HPE iLO 5/6).
	noModeWrite bool
	// onceReadsContinuous: after BootSourceOverrideEnabled=Once the BMC
	// reads back Continuous although it honours Once (Supermicro).
	onceReadsContinuous bool
	// settingsApply: boot changes may land in the @Redfish.Settings
	// resource and show only after the next reset, so a read-back that
	// still shows the old override is not an error (Dell iDRAC).
	settingsApply bool
	// ejectAlways: InsertMedia fails unless EjectMedia ran first, even when
	// the slot reads empty (Supermicro).
	ejectAlways bool
}

// vendorQuirks is matched against the system's Manufacturer and the
// service root's Vendor, case-insensitively, by prefix.
var vendorQuirks = []struct {
	prefixes []string
	q        quirks
}{
	{[]string{"supermicro"}, quirks{name: "Supermicro", modeEveryTime: true, onceReadsContinuous: true, ejectAlways: true}},
	{[]string{"hpe", "hp", "hewlett"}, quirks{name: "HPE", noModeWrite: true}},
	{[]string{"dell"}, quirks{name: "Dell", settingsApply: true}},
}

// quirksFor returns the quirks of the vendor named by manufacturer (from
// the ComputerSystem) or vendor (from the ServiceRoot); zero quirks for
// vendors that follow the spec.
func quirksFor(manufacturer, vendor string) quirks {
	for _, s := range []string{manufacturer, vendor} {
		s = strings.ToLower(strings.TrimSpace(s))
		if s == "" {
			continue
		}
		for _, v := range vendorQuirks {
			for _, p := range v.prefixes {
				if strings.HasPrefix(s, p) {
					return v.q
				}
			}
		}
	}
	return quirks{}
}
