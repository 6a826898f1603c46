//go:build !race

package redfish

// raceEnabled is true in `go test -race` builds.
const raceEnabled = false
