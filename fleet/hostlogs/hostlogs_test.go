package hostlogs

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestAppendCap(t *testing.T) {
	s := &Store{Dir: t.TempDir(), MaxBytes: 100, Known: func(h string) bool { return h == "n1" }}
	for i := 0; i < 30; i++ {
		if err := s.Append("n1", []byte("0123456789")); err != nil {
			t.Fatal(err)
		}
	}
	b, err := s.Read("n1", 0)
	if err != nil || len(b) > 200 || len(b) < 100 {
		t.Fatalf("kept %d bytes, %v", len(b), err)
	}
	// The tail spans both files, newest last.
	s.Append("n1", []byte("END"))
	if tail, err := s.Read("n1", 13); err != nil || string(tail) != "0123456789END" {
		t.Errorf("tail 13 = %q, %v", tail, err)
	}
	if err := s.Append("other", []byte("x")); err == nil {
		t.Fatal("unknown host accepted")
	}
	if err := s.Append("../etc", []byte("x")); err == nil {
		t.Fatal("traversal accepted")
	}
}

func TestHTTP(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	mux := http.NewServeMux()
	s.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/api/v1/hosts/n1/logs", "text/plain", strings.NewReader("kernel panic\n"))
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("post: %v %v", resp.Status, err)
	}
	resp, _ = http.Get(srv.URL + "/api/v1/hosts/n1/logs")
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	if !strings.Contains(buf.String(), "kernel panic") {
		t.Fatalf("got %q", buf.String())
	}
	resp, _ = http.Post(srv.URL+"/api/v1/hosts/n1/logs", "text/plain", bytes.NewReader(make([]byte, maxPost+1)))
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized upload: %s", resp.Status)
	}
	// A web page cannot post through an operator's browser.
	req, _ := http.NewRequest("POST", srv.URL+"/api/v1/hosts/n1/logs", strings.NewReader("forged\n"))
	req.Header.Set("Origin", "http://evil.example")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("post with an Origin: %v %v", resp.Status, err)
	}
}

func TestSyslog(t *testing.T) {
	s := &Store{Dir: t.TempDir(), HostOf: func(ip net.IP) (string, bool) { return "n1", ip.IsLoopback() }}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.ServeSyslog(ctx, pc) }()
	c, _ := net.Dial("udp", pc.LocalAddr().String())
	c.Write([]byte("<13>Nov 23 03:00:00 n1 init: disk write failed"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := s.Read("n1", 0)
		if strings.Contains(string(b), "init: disk write failed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("syslog line not stored")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestParseSyslog(t *testing.T) {
	for _, tc := range []struct {
		in   string
		pri  int
		rest string
	}{
		{"<13>hello", 13, "hello"}, {"<191>x", 191, "x"}, {"<192>x", -1, "<192>x"}, {"<>x", -1, "<>x"},
		{"<1", -1, "<1"}, {"plain", -1, "plain"}, {"<12345>x", -1, "<12345>x"}, {"<1a>x", -1, "<1a>x"},
	} {
		pri, rest := ParseSyslog([]byte(tc.in))
		if pri != tc.pri || string(rest) != tc.rest {
			t.Errorf("ParseSyslog(%q) = %d %q", tc.in, pri, rest)
		}
	}
}

func FuzzParseSyslog(f *testing.F) {
	for _, s := range []string{"<13>hello", "<191>", "<", "<1>", "x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		pri, rest := ParseSyslog(b)
		if pri < -1 || pri > 191 || len(rest) > len(b) {
			t.Fatalf("ParseSyslog(%q) = %d, %d bytes", b, pri, len(rest))
		}
	})
}
