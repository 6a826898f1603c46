// Package fleet owns what phoenix knows about its hosts and decides what
// each one boots: the declarative fleet file (hosts, defaults, rollout
// policy; fleetfile.go), the fleet controller that reconciles desired
// against reported images through rollouts with canaries, a failure budget,
// drift and age rebuilds and quarantine (controller.go, ops.go), its
// durable state behind the StateStore interface with an embedded bbolt
// implementation (store.go, statestore.go), the REST API over all of it
// (api.go), and the state volume it lives on (state.go).
//
// fleet never speaks DHCP, TFTP or HTTP boot itself: boot/* packages call
// into it through the small interfaces they define (the Controller is
// httpboot.Hosts and httpboot.Recorder). Nor does it speak Redfish: BMCs
// come in through the BMC and BMCDialer interfaces, so the redfish package
// stays a leaf. A plain list of hosts
// (name, macs, image) is a valid fleet file.
package fleet
