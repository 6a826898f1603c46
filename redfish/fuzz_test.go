package redfish

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stmcginnis/gofish/schemas"
)

// FuzzBMCError feeds arbitrary error bodies, as a BMC might send, through
// the error path: it must not panic and must stay one line.
func FuzzBMCError(f *testing.F) {
	f.Add(409, []byte(`{"error":{"code":"Base.1.8.GeneralError","message":"busy","@Message.ExtendedInfo":[{"Message":"The resource is busy."}]}}`))
	f.Add(500, []byte("<html>\n<body>Internal Server Error</body></html>"))
	f.Add(401, []byte(`{"error":{"@Message.ExtendedInfo":[{}]}}`))
	c := &Client{cfg: Config{Endpoint: "https://bmc.example", Password: "pw"}}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		err := c.fail("power on", schemas.ConstructError(status, body))
		msg := err.Error()
		if strings.ContainsAny(msg, "\n\r") {
			t.Errorf("not one line: %q", msg)
		}
		if !strings.HasPrefix(msg, "bmc https://bmc.example: power on: ") {
			t.Errorf("bad prefix: %q", msg)
		}
	})
}

// FuzzResetAction parses arbitrary ComputerSystem JSON and looks for the
// Reset action the way the power functions do.
func FuzzResetAction(f *testing.F) {
	f.Add([]byte(`{"Id":"1","Actions":{"#ComputerSystem.Reset":{"target":"/redfish/v1/Systems/1/Actions/ComputerSystem.Reset","ResetType@Redfish.AllowableValues":["On","ForceOff"]}}}`))
	f.Add([]byte(`{"Id":"1","Actions":{}}`))
	f.Add([]byte(`{"Actions":{"#ComputerSystem.Reset":null}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s schemas.ComputerSystem
		if json.Unmarshal(b, &s) != nil {
			return
		}
		target, ok := resetAction(&s)
		if ok != (target != "") {
			t.Errorf("resetAction = %q, %v", target, ok)
		}
	})
}
