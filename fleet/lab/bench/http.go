package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/phoenixboot/phoenix/fleet"
	"github.com/phoenixboot/phoenix/fleet/lab"
)

const nginxPort = 8081

func httpPing(url string) error {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// startNginx runs nginx in the foreground with root as its document root
// and POST /api/v1/report answered 200 (the demo image's phone-home).
func (e *env) startNginx(ctx context.Context, dir, root, listen string) (*lab.Process, error) {
	tmp := filepath.Join(dir, "nginx-tmp")
	os.MkdirAll(tmp, 0o755)
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes auto;
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  client_body_temp_path %[2]s/body;
  proxy_temp_path %[2]s/proxy;
  fastcgi_temp_path %[2]s/fastcgi;
  uwsgi_temp_path %[2]s/uwsgi;
  scgi_temp_path %[2]s/scgi;
  server {
    listen %[3]s;
    root %[4]s;
    location = /api/v1/report { return 200 "ok\n"; }
  }
}
`, dir, tmp, listen, root)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return e.start(ctx, "nginx", dir, httpAnswers("http://"+listen+"/"), "nginx", "-c", path, "-p", dir, "-e", dir+"/nginx-error.log")
}

// fetchAll has n clients GET url once each, at the same time, and returns
// the bytes read and the wall time. Every body must arrive whole.
func fetchAll(ctx context.Context, url string, n int) (fetchResult, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: n, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Minute}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var total int64
	var firstErr error
	t0 := time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := hc.Get(url)
			var got int64
			if err == nil {
				got, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && got != resp.ContentLength {
					err = fmt.Errorf("short body: %d of %d bytes", got, resp.ContentLength)
				}
			}
			mu.Lock()
			total += got
			if err != nil && firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return fetchResult{Bytes: float64(total), Requests: float64(n), Seconds: time.Since(t0).Seconds()}, firstErr
}

// fetchResult is one fetchAll run.
type fetchResult struct {
	Bytes    float64
	Requests float64
	Seconds  float64
}

// benchHTTP: 100 clients each fetching a 64 MiB artifact at once from phoenix's
// /blobs/sha256/… and from nginx (sendfile); then phoenix's iPXE script at a
// fixed 1,000 requests/s.
func benchHTTP(ctx context.Context, e *env) ([]Row, error) {
	dir, err := e.partDir("http")
	if err != nil {
		return nil, err
	}
	size := 64 << 20
	secs := 10
	if e.o.Quick {
		secs = 5
	}
	big := filepath.Join(dir, "artifact.bin")
	if err := writeRandom(big, size); err != nil {
		return nil, err
	}
	kernel := filepath.Join(dir, "kernel.bin")
	if err := writeRandom(kernel, 4096); err != nil {
		return nil, err
	}
	data, _ := os.ReadFile(big)
	sum := sha256.Sum256(data)
	data = nil
	hexsum := hex.EncodeToString(sum[:])
	www := filepath.Join(dir, "www", "blobs", "sha256")
	os.MkdirAll(www, 0o755)
	if err := os.Link(big, filepath.Join(www, hexsum)); err != nil && !os.IsExist(err) {
		return nil, err
	}
	mac := "02:00:00:00:99:01"
	hosts := filepath.Join(dir, "hosts.yaml")
	if err := writeHosts(hosts, []string{mac}, "bench:1"); err != nil {
		return nil, err
	}
	path := "/blobs/sha256/" + hexsum
	thr := map[string][]float64{}
	cpu := map[string][]float64{}
	var rss, p99s, p50s, achieved []float64
	for run := 0; run < e.o.runs(); run++ {
		for _, name := range []string{"phoenix", "nginx"} {
			rdir, err := e.partDir(fmt.Sprintf("http/%s-%d", name, run))
			if err != nil {
				return nil, err
			}
			var p *lab.Process
			url := ""
			if name == "phoenix" {
				p, err = e.startPhoenix(ctx, rdir, phoenixOpts{dhcp: "off", ipxeDir: e.ipxeDir, logLevel: "warn", hosts: hosts,
					image: [3]string{"bench:1", kernel, big}})
				url = fmt.Sprintf("http://%s:%d", serverIP, httpPort)
			} else {
				p, err = e.startNginx(ctx, rdir, filepath.Join(dir, "www"), fmt.Sprintf("%s:%d", serverIP, nginxPort))
				url = fmt.Sprintf("http://%s:%d", serverIP, nginxPort)
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			c0 := procCPU(p.PID())
			w, err := fetchAll(ctx, url+path, 100)
			c1 := procCPU(p.PID())
			if err != nil {
				p.Stop()
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			gib := w.Bytes / (1 << 30)
			thr[name] = append(thr[name], w.Bytes/w.Seconds/1e6)
			cpu[name] = append(cpu[name], (c1-c0)/gib)
			e.o.logf("http run %d %s: %.0f MB/s, %.0f requests, %.2f CPU s/GiB", run+1, name, w.Bytes/w.Seconds/1e6, w.Requests, (c1-c0)/gib)
			if name == "phoenix" {
				p50, p99, got, err := scriptLatency(ctx, url+"/boot.ipxe?mac="+mac, 1000, secs)
				if err != nil {
					p.Stop()
					return nil, err
				}
				e.o.logf("http run %d phoenix script: %.0f req/s, p50 %.2f ms, p99 %.2f ms", run+1, got, p50, p99)
				p50s, p99s, achieved = append(p50s, p50), append(p99s, p99), append(achieved, got)
				rss = append(rss, procHWM(p.PID()))
			}
			p.Stop()
		}
	}
	t := Row{Part: "http", Metric: "100 clients × 64 MiB at once", Unit: "MB/s", Phoenix: thr["phoenix"], PeerName: "nginx", Peer: thr["nginx"], Goal: "≥ 0.9×"}
	t.Met = yesNo(t.Ratio() >= 0.9)
	rows := []Row{t,
		{Part: "http", Metric: "CPU per GiB served", Unit: "s/GiB", Phoenix: cpu["phoenix"], PeerName: "nginx", Peer: cpu["nginx"], Note: "server user+sys CPU"},
		{Part: "http", Metric: "phoenix peak RSS (VmHWM)", Unit: "MiB", Phoenix: rss, Goal: "< 100 MiB", Met: yesNo(median(rss) < 100), Note: "after the 64 MiB load and the script load"},
		{Part: "http", Metric: "iPXE script p99 at 1000 req/s", Unit: "ms", Phoenix: p99s, Goal: "≤ 5 ms", Met: yesNo(median(p99s) <= 5),
			Note: fmt.Sprintf("p50 %s ms, achieved %s req/s", num(median(p50s)), num(median(achieved)))},
	}
	return rows, nil
}

// scriptLatency sends GETs to url at a fixed rate for secs seconds (open
// loop: a slow answer does not delay the next request, so queueing shows up
// in the latencies) and returns p50 and p99 in ms and the achieved rate.
func scriptLatency(ctx context.Context, url string, rate, secs int) (p50, p99, achieved float64, err error) {
	tr := &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	// Warm the connection pool.
	for range 20 {
		if resp, err := c.Get(url); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	n := rate * secs
	lat := make([]float64, 0, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	failed := 0
	interval := time.Second / time.Duration(rate)
	t0 := time.Now()
	for i := range n {
		due := t0.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Get(url)
			ok := err == nil
			if ok {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				ok = err == nil && resp.StatusCode == 200
			}
			// From when the request was due, not when it was sent.
			d := time.Since(due).Seconds() * 1000
			mu.Lock()
			if ok {
				lat = append(lat, d)
			} else {
				failed++
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(t0).Seconds()
	if len(lat) == 0 || failed > 0 {
		return 0, 0, 0, fmt.Errorf("script load: %d of %d requests failed", failed, n)
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)], float64(len(lat)) / el, nil
}

// writeHosts writes a hosts file with one host per MAC, all booting image.
func writeHosts(path string, macs []string, image string) error {
	var hs []fleet.Host
	for i, m := range macs {
		hs = append(hs, fleet.Host{Name: fmt.Sprintf("node%04d", i), MACs: []string{m}, Image: image})
	}
	var b strings.Builder
	b.WriteString("hosts:\n")
	for _, h := range hs {
		fmt.Fprintf(&b, "  - name: %s\n    macs: [%q]\n    image: %q\n", h.Name, h.MACs[0], h.Image)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
