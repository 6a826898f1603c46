// Package fleet owns what phoenix knows about its hosts: which image each
// host should boot, what each host last reported, DHCP leases, and the state
// volume all of that lives on.
//
// Today the desired state comes from a hosts file (YAML) and the store is an
// embedded bbolt database; the fleet controller (rollouts, drift, quarantine)
// grows here. fleet never speaks DHCP, TFTP or HTTP boot itself: boot/*
// packages call into it through the small interfaces they define.
package fleet
