package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/phoenixboot/phoenix/fleet"
	"github.com/phoenixboot/phoenix/images"
)

// TestMain lets tests run this test binary as the phoenix command, so the
// CLI is tested as users run it: a separate process (which kill -9 needs).
func TestMain(m *testing.M) {
	if os.Getenv("PHOENIX_TEST_AS_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// phoenixCmd returns the phoenix command line args run by this binary.
func phoenixCmd(args ...string) *exec.Cmd {
	c := exec.Command(os.Args[0], args...)
	c.Env = append(os.Environ(), "PHOENIX_TEST_AS_MAIN=1")
	return c
}

// run runs phoenix and returns stdout, failing the test if want is not
// the command's success.
func run(t *testing.T, wantOK bool, args ...string) (string, string) {
	t.Helper()
	c := phoenixCmd(args...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	if (err == nil) != wantOK {
		t.Fatalf("phoenix %s: err %v (want ok=%v)\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, wantOK, out.String(), errb.String())
	}
	return out.String(), errb.String()
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// offlineState makes a state directory in a temp dir and returns the
// flags that open it directly (--state).
func offlineState(t *testing.T) (dir, state string, flags []string) {
	dir = t.TempDir()
	state = filepath.Join(dir, "state")
	os.Mkdir(state, 0o755)
	return dir, state, []string{"--state", state, "--state-allow-shared", "--log-level", "error"}
}

// TestImageCommandsOffline runs every image subcommand against a real
// state dir opened directly (--state), as labs and first setup do.
func TestImageCommandsOffline(t *testing.T) {
	dir, state, st := offlineState(t)
	k1 := writeFile(t, dir, "k1", "kernel one")
	k2 := writeFile(t, dir, "k2", "kernel two")
	initrd := writeFile(t, dir, "initrd", "initrd")
	art := filepath.Join(dir, "art")
	os.Mkdir(art, 0o755)
	writeFile(t, art, "vmlinuz-6.1", "kernel three")
	writeFile(t, art, "initrd.img-6.1", "initrd")
	writeFile(t, art, "rootfs.squashfs", "squash")

	a := func(args ...string) []string { return append(args, st...) }
	out, _ := run(t, true, a("image", "import", "demo:1", "--kernel", k1, "--initrd", initrd, "--cmdline", "console=ttyS0")...)
	if !strings.HasPrefix(out, "demo:1 sha256:") {
		t.Errorf("import output %q", out)
	}
	run(t, true, a("image", "import", "demo:2", "--kernel", k2, "--initrd", initrd)...)
	run(t, true, a("image", "import", "demo:3", "--dir", art)...)
	_, stderr := run(t, false, a("image", "import", "demo:2", "--kernel", k1)...)
	if !strings.Contains(stderr, "immutable") {
		t.Errorf("changed re-import: %s", stderr)
	}
	for _, bad := range [][]string{
		{"image", "import", "Demo:1", "--kernel", k1},
		{"image", "import", "demo:4", "--kernel", filepath.Join(dir, "missing")},
		{"image", "import", "demo:4", "--dir", filepath.Join(dir, "missing")},
		{"image", "import", "demo:4", "--iso", k1},
		{"image", "import", "demo:4", "--initrd", initrd},
		{"image", "show", "demo:9"},
		{"image", "rollback", "demo", "--channel", "stable"},
	} {
		_, stderr := run(t, false, a(bad...)...)
		if lines := strings.Count(strings.TrimSpace(stderr), "\n"); lines != 0 || !strings.HasPrefix(stderr, "phoenix: ") {
			t.Errorf("%v: want a one-line error, got %q", bad, stderr)
		}
	}

	var list []images.ImageInfo
	out, _ = run(t, true, a("image", "ls", "-o", "json")...)
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 3 {
		t.Fatalf("ls -o json = %v, %s", err, out)
	}
	if _, ok := list[2].Artifact(images.RoleRootfs); !ok {
		t.Errorf("--dir import lost the rootfs: %+v", list[2])
	}
	run(t, true, a("image", "promote", "demo:1", "--channel", "stable")...)
	out, _ = run(t, true, a("image", "promote", "demo:2", "--channel", "stable")...)
	if !strings.Contains(out, "demo@stable: 1 -> 2") {
		t.Errorf("promote output %q", out)
	}
	out, _ = run(t, true, a("image", "show", "demo@stable")...)
	if !strings.Contains(out, "demo:2") || !strings.Contains(out, "kernel") {
		t.Errorf("show output %q", out)
	}
	out, _ = run(t, true, a("image", "rollback", "demo", "--channel", "stable")...)
	if !strings.Contains(out, "2 -> 1") {
		t.Errorf("rollback output %q", out)
	}
	var hist []images.ChannelMove
	out, _ = run(t, true, a("image", "history", "demo", "-o", "json")...)
	if err := json.Unmarshal([]byte(out), &hist); err != nil || len(hist) != 3 || hist[0].Who == "" {
		t.Errorf("history = %v %s", err, out)
	}
	_, stderr = run(t, false, a("image", "rm", "demo:1")...)
	if !strings.Contains(stderr, "in use by channel demo@stable") {
		t.Errorf("rm of a channel's version: %s", stderr)
	}
	run(t, true, a("image", "rm", "demo:3")...)
	out, _ = run(t, true, a("image", "gc", "--keep", "2")...)
	if !strings.Contains(out, "blobs deleted") {
		t.Errorf("gc output %q", out)
	}
	// Signatures: keygen, sign (unencrypted and encrypted keys), verify.
	key := filepath.Join(dir, "sign")
	run(t, true, "image", "keygen", "--out", key)
	run(t, false, "image", "keygen", "--out", key) // never overwrites a key
	run(t, true, a("image", "sign", "demo:1", "--key", key+".key")...)
	out, _ = run(t, true, a("image", "verify", "demo:1", "--key", key+".pub")...)
	if !strings.Contains(out, "signature: ok") {
		t.Errorf("verify output %q", out)
	}
	run(t, false, a("image", "verify", "demo:2", "--key", key+".pub")...)
	// Encrypted keys (PHOENIX_SIGN_PASSWORD) are not exercised here:
	// minisign's scrypt costs 1 GiB and seconds per key operation.

	out, _ = run(t, true, a("image", "verify")...)
	if !strings.Contains(out, "re-hashed") {
		t.Errorf("verify output %q", out)
	}
	// A corrupt blob: verify fails, reports and quarantines it.
	var img images.ImageInfo
	out, _ = run(t, true, a("image", "show", "demo:1", "-o", "json")...)
	json.Unmarshal([]byte(out), &img)
	k, _ := img.Artifact(images.RoleKernel)
	blob := filepath.Join(state, "images", "blobs", "sha256", strings.TrimPrefix(k.Digest, "sha256:"))
	os.Chmod(blob, 0o644)
	os.WriteFile(blob, []byte("kernel onE"), 0o444)
	out, _ = run(t, false, a("image", "verify")...)
	if !strings.Contains(out, "CORRUPT "+k.Digest) {
		t.Errorf("verify of a corrupt store: %q", out)
	}
	if _, err := os.Stat(filepath.Join(state, "images", "quarantine", strings.TrimPrefix(k.Digest, "sha256:"))); err != nil {
		t.Errorf("not quarantined: %v", err)
	}
}

// serveDirs makes what serve needs in a temp dir: a state directory and
// an iPXE directory with stand-ins for the boot files.
func serveDirs(t *testing.T) (dir, state, ipxe string) {
	dir = t.TempDir()
	state, ipxe = filepath.Join(dir, "state"), filepath.Join(dir, "ipxe")
	os.Mkdir(state, 0o755)
	os.Mkdir(ipxe, 0o755)
	writeFile(t, ipxe, "undionly.kpxe", "x")
	writeFile(t, ipxe, "ipxe.efi", "x")
	return dir, state, ipxe
}

// TestImageCommandsOnline runs the CLI against a running server's API,
// with its token, and checks --state is refused while the server runs.
func TestImageCommandsOnline(t *testing.T) {
	dir, state, ipxe := serveDirs(t)
	port := freePort(t)
	srv := phoenixCmd("serve", "--state", state, "--state-allow-shared", "--dhcp", "off", "--server-ip", "127.0.0.1",
		"--http-addr", fmt.Sprintf("127.0.0.1:%d", port), "--tftp-addr", "127.0.0.1:0", "--ipxe-dir", ipxe, "--log-level", "warn")
	var srvErr bytes.Buffer
	srv.Stderr = &srvErr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		srv.Process.Signal(syscall.SIGTERM)
		srv.Wait()
	}()
	server := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(time.Minute)
	for {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not start: %s", srvErr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	tokenBytes, err := os.ReadFile(filepath.Join(state, fleet.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tokenBytes))
	k := writeFile(t, dir, "k", "kernel")

	// Without the token, changes are refused.
	run(t, false, "image", "import", "demo:1", "--kernel", k, "--server", server, "--token", "wrong")
	on := []string{"--server", server, "--token", token}
	run(t, true, append([]string{"image", "import", "demo:1", "--kernel", k}, on...)...)
	run(t, true, append([]string{"image", "promote", "demo:1", "--channel", "stable"}, on...)...)
	out, _ := run(t, true, append([]string{"image", "ls"}, on...)...)
	if !strings.Contains(out, "demo@stable") {
		t.Errorf("ls = %q", out)
	}
	_, stderr := run(t, false, "image", "ls", "--state", state, "--state-allow-shared")
	if !strings.Contains(stderr, "drop --state") {
		t.Errorf("offline while a server runs: %q", stderr)
	}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestImportKill9 kills `phoenix image import` of a 64 MiB file at random
// points: ls must never show a partial version, and verify stays clean.
func TestImportKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: 20+ imports of 64 MiB")
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	os.Mkdir(state, 0o755)
	st := []string{"--state", state, "--state-allow-shared", "--log-level", "error"}
	bigFile := filepath.Join(dir, "disk.raw")
	f, err := os.Create(bigFile)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := range 64 {
		rand.Read(chunk[:64])
		chunk[100] = byte(i)
		f.Write(chunk)
	}
	f.Close()

	// One uninterrupted import gives the time range to kill in.
	start := time.Now()
	run(t, true, append([]string{"image", "import", "ref:1", "--kernel", bigFile}, st...)...)
	full := time.Since(start)
	t.Logf("one import of 64 MiB takes %v", full)

	const kills = 24
	completed := 0
	for i := range kills {
		c := phoenixCmd(append([]string{"image", "import", fmt.Sprintf("k:%d", i), "--kernel", bigFile, "--mode", "disk", "--disk", bigFile}, st...)...)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(2*full)))
		time.Sleep(time.Duration(n.Int64()))
		c.Process.Signal(syscall.SIGKILL)
		if c.Wait() == nil {
			completed++
		}
		var list []images.ImageInfo
		out, _ := run(t, true, append([]string{"image", "ls", "-o", "json"}, st...)...)
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatal(err)
		}
		for _, img := range list {
			if img.Name == "k" && (len(img.Artifacts) != 2 || img.Artifacts[0].Size != 64<<20 || img.Artifacts[1].Size != 64<<20) {
				t.Errorf("kill %d: partial version listed: %+v", i, img)
			}
		}
		if ents, _ := os.ReadDir(filepath.Join(state, "tmp")); len(ents) != 0 {
			t.Errorf("kill %d: leftovers in tmp after the next start: %v", i, ents)
		}
	}
	t.Logf("%d kills, %d imports completed before their kill", kills, completed)
	out, _ := run(t, true, append([]string{"image", "verify"}, st...)...)
	t.Logf("verify: %s", strings.TrimSpace(out))
	out, _ = run(t, true, append([]string{"image", "gc"}, st...)...)
	t.Logf("gc: %s", strings.TrimSpace(out))
	run(t, true, append([]string{"image", "verify"}, st...)...)
}

// TestImageImportISO imports kernel and initrd from ISOs built with
// xorriso: by detected layout, by explicit paths, and refuses an ISO with
// no known layout in one line.
func TestImageImportISO(t *testing.T) {
	if _, err := exec.LookPath("xorriso"); err != nil {
		t.Skip("xorriso not installed (Debian package xorriso): cannot build test ISOs")
	}
	dir := t.TempDir()
	mkISO := func(name string, files map[string]string) string {
		src := filepath.Join(dir, name+"-src")
		for p, c := range files {
			os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755)
			writeFile(t, filepath.Dir(filepath.Join(src, p)), filepath.Base(p), c)
		}
		out := filepath.Join(dir, name+".iso")
		if b, err := exec.Command("xorriso", "-outdev", out, "-rockridge", "on", "-map", src, "/").CombinedOutput(); err != nil {
			t.Fatalf("xorriso: %v %s", err, b)
		}
		return out
	}
	fedora := mkISO("fedora", map[string]string{"images/pxeboot/vmlinuz": "fedora kernel", "images/pxeboot/initrd.img": "fedora initrd"})
	odd := mkISO("odd", map[string]string{"k/kern": "odd kernel", "k/init": "odd initrd"})
	state := filepath.Join(dir, "state")
	os.Mkdir(state, 0o755)
	st := []string{"--state", state, "--state-allow-shared", "--log-level", "error"}

	run(t, true, append([]string{"image", "import", "fedora:1", "--iso", fedora}, st...)...)
	run(t, true, append([]string{"image", "import", "odd:1", "--iso", odd, "--kernel-path", "/k/kern", "--initrd-path", "/k/init"}, st...)...)
	_, stderr := run(t, false, append([]string{"image", "import", "odd:2", "--iso", odd}, st...)...)
	if !strings.Contains(stderr, "--kernel-path") || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
		t.Errorf("ISO without a layout: %q", stderr)
	}
	trunc := filepath.Join(dir, "trunc.iso")
	b, _ := os.ReadFile(fedora)
	os.WriteFile(trunc, b[:20<<10], 0o644) // inside the volume descriptors
	run(t, false, append([]string{"image", "import", "trunc:1", "--iso", trunc}, st...)...)

	for ref, want := range map[string][2]string{"fedora:1": {"fedora kernel", "fedora initrd"}, "odd:1": {"odd kernel", "odd initrd"}} {
		var img images.ImageInfo
		out, _ := run(t, true, append([]string{"image", "show", ref, "-o", "json"}, st...)...)
		json.Unmarshal([]byte(out), &img)
		for i, role := range []string{images.RoleKernel, images.RoleInitrd} {
			a, ok := img.Artifact(role)
			if !ok || a.Digest != sha256Of(want[i]) {
				t.Errorf("%s %s = %+v, want content %q", ref, role, a, want[i])
			}
		}
	}
	var list []images.ImageInfo
	out, _ := run(t, true, append([]string{"image", "ls", "-o", "json"}, st...)...)
	if json.Unmarshal([]byte(out), &list); len(list) != 2 {
		t.Errorf("ls after ISO imports = %s", out)
	}
}

func sha256Of(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// TestImageRmOfflineRespectsHosts: offline (--state), rm refuses a version
// a fleet host is to run, as the server's API does.
func TestImageRmOfflineRespectsHosts(t *testing.T) {
	dir, state, st := offlineState(t)
	k := writeFile(t, dir, "k", "kernel")
	run(t, true, append([]string{"image", "import", "demo:1", "--kernel", k}, st...)...)

	// What a server left on the volume: a fleet whose host n1 runs demo:1.
	store, err := images.Open(filepath.Join(state, "images"), filepath.Join(state, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := fleet.OpenStore(filepath.Join(state, "phoenix.db"))
	if err != nil {
		t.Fatal(err)
	}
	ctrl := &fleet.Controller{Store: db, Images: store, Interval: 50 * time.Millisecond}
	if _, err := ctrl.Apply([]byte("hosts:\n- {name: n1, macs: [\"52:54:00:00:00:01\"], image: demo:1}\n"), ""); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ctrl.Run(ctx); close(done) }()
	img, _ := store.Resolve("demo:1")
	for deadline := time.Now().Add(5 * time.Second); len(ctrl.HostsUsing(img.Digest)) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the controller never settled on demo:1 for n1")
		}
	}
	cancel()
	<-done
	db.Close()

	_, stderr := run(t, false, append([]string{"image", "rm", "demo:1"}, st...)...)
	if !strings.Contains(stderr, "in use by host n1") {
		t.Errorf("offline rm of a host's version: %s", stderr)
	}
}

// TestServeFailedStartAppliesNoHosts: a serve that fails to start (here:
// its HTTP port is taken) leaves no fleet revision from --hosts behind.
func TestServeFailedStartAppliesNoHosts(t *testing.T) {
	dir, state, ipxe := serveDirs(t)
	k := writeFile(t, dir, "k", "kernel")
	run(t, true, "image", "import", "demo:1", "--kernel", k, "--state", state, "--state-allow-shared", "--log-level", "error")
	hosts := writeFile(t, dir, "hosts.yaml", "hosts:\n- {name: n1, macs: [\"52:54:00:00:00:01\"], image: demo:1}\n")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, stderr := run(t, false, "serve", "--state", state, "--state-allow-shared", "--dhcp", "off", "--server-ip", "127.0.0.1",
		"--http-addr", busy.Addr().String(), "--tftp-addr", "127.0.0.1:0", "--ipxe-dir", ipxe, "--hosts", hosts, "--log-level", "error")
	if !strings.Contains(stderr, "http:") {
		t.Fatalf("serve with its port taken: %s", stderr)
	}
	db, err := fleet.OpenStore(filepath.Join(state, "phoenix.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if revs, err := db.Revisions(); err != nil || len(revs) != 0 {
		t.Errorf("revisions after a failed start: %+v, %v; want none", revs, err)
	}
}
