package lab

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phoenixboot/phoenix/fleet"
	"github.com/phoenixboot/phoenix/images"
)

// TestE2EChannel boots a VM that follows the channel demo@stable through
// promote v1, promote v2 and rollback, and checks that each boot reports
// the digest the channel pointed at.
func TestE2EChannel(t *testing.T) {
	if !InPrivateNetns() {
		root := requireLab(t)
		if _, err := os.Stat(filepath.Join(demo2Dir(root), "initrd.img")); err != nil {
			msg := "e2e channel test needs build/demo2 (make demo-image)"
			if os.Getenv("CI") != "" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
		runInNetns(t, root, "TestE2EChannel")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	defer cancel()
	demo, demo2 := os.Getenv("PHOENIX_DEMO_DIR"), os.Getenv("PHOENIX_DEMO2_DIR")
	bin := os.Getenv("PHOENIX_BIN")
	dir := t.TempDir()
	site := &Site{
		Name: "chan", Net: Net{Bridge: "br0", CIDR: "10.97.0.1/24", Taps: []string{"tap0"}},
		Phoenix: bin, Dir: dir, DHCP: "full", Range: "10.97.0.100-10.97.0.199", HTTPPort: 8080,
		ImageRef: "demo:1", Kernel: filepath.Join(demo, "vmlinuz"), Initrd: filepath.Join(demo, "initrd.img"),
		Cmdline: "console=ttyS0 quiet",
		Hosts:   []fleet.Host{{Name: "chan1", MACs: []string{"52:54:00:97:00:01"}, Image: "demo@stable"}},
		PreStart: [][]string{
			{"image", "import", "demo:2", "--kernel", filepath.Join(demo2, "vmlinuz"), "--initrd", filepath.Join(demo2, "initrd.img"), "--cmdline", "console=ttyS0 quiet"},
			{"image", "promote", "demo:1", "--channel", "stable"},
		},
	}
	if err := site.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(site.Stop)
	cli := siteCLI(ctx, t, site)
	digestOf := func(ref string) string {
		var info images.ImageInfo
		if err := json.Unmarshal([]byte(cli("image", "show", ref, "-o", "json")), &info); err != nil || info.Digest == "" {
			t.Fatalf("image show %s: %v", ref, err)
		}
		return info.Digest
	}
	v1, v2 := digestOf("demo:1"), digestOf("demo:2")
	if v1 == v2 {
		t.Fatal("demo:1 and demo:2 have the same digest")
	}
	boot := func(step, want string) {
		vm := &VM{Name: "chan1-" + strings.ReplaceAll(step, "=", "-"), MAC: "52:54:00:97:00:01", Tap: "tap0", Firmware: BIOS}
		res := BootAll(ctx, site, []*VM{vm}, 4*time.Minute, testWriter{t})
		vm.Stop()
		r := res[0]
		if r.Err != nil {
			t.Fatalf("%s: %v", step, r.Err)
		}
		if !strings.Contains(r.Line, want) || r.Digest != want {
			t.Fatalf("%s: booted %q (recorded %s), want %s", step, r.Line, r.Digest, want)
		}
		t.Logf("CHANNEL %s: booted %s in %s", step, want, r.Took.Round(100*time.Millisecond))
	}
	boot("stable=v1", v1)
	cli("image", "promote", "demo:2", "--channel", "stable")
	boot("promoted-v2", v2)
	cli("image", "rollback", "demo", "--channel", "stable")
	boot("rolled-back-v1", v1)
	t.Logf("history:\n%s", cli("image", "history", "demo"))
}

func demo2Dir(root string) string {
	if d := os.Getenv("PHOENIX_DEMO2_DIR"); d != "" {
		return d
	}
	return filepath.Join(root, "build", "demo2")
}
