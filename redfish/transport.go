package redfish

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

// transport is the one place where requests to a BMC are bounded and
// retried: at most MaxConcurrent in flight, each attempt limited to
// Timeout, and answers that mean "not now" (409 busy, 429, 5xx except 501)
// retried with exponential backoff and jitter, a bounded number of times.
// gofish sits on top of it and never sees the retries.
type transport struct {
	base    http.RoundTripper
	sem     chan struct{}
	timeout time.Duration
	retries int
	backoff time.Duration
	log     *slog.Logger
}

// maxBackoff caps one wait between retries, whatever Retry-After says.
const maxBackoff = 30 * time.Second

func newTransport(cfg Config, log *slog.Logger) (*transport, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.Insecure} //nolint:gosec // only when asked
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA bundle: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA bundle %s: no PEM certificates in it", cfg.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	// Our own transport, built from scratch: gofish ignores Insecure when
	// it is handed a transport, so TLS settings must live here.
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.TLSClientConfig = tlsConf
	base.MaxIdleConnsPerHost = cfg.MaxConcurrent
	return &transport{
		base:    base,
		sem:     make(chan struct{}, cfg.MaxConcurrent),
		timeout: cfg.Timeout,
		retries: cfg.retries,
		backoff: cfg.retryBase,
		log:     log,
	}, nil
}

func (t *transport) CloseIdleConnections() {
	if ci, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// retryable reports whether an answer with status may be retried. 409,
// 429 and 503 say the BMC did not act on the request (busy, or another
// operation holds the resource), so any method is sent again. 500, 502
// and 504 say nothing of the kind: the BMC (or a proxy in front of it)
// may have carried a POST out (a Reset, an InsertMedia) before failing its
// answer, so only requests that may run twice are sent again.
func retryable(method string, status int) bool {
	switch status {
	case http.StatusConflict, http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return true
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusGatewayTimeout:
		return method != http.MethodPost
	}
	return false
}

// RoundTrip implements http.RoundTripper.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	for attempt := 0; ; attempt++ {
		body := req.Body
		if attempt > 0 && req.GetBody != nil {
			b, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			body = b
		}
		resp, err := t.once(req, body)
		if err != nil {
			return nil, err
		}
		if !retryable(req.Method, resp.StatusCode) || !replayable || attempt >= t.retries {
			if n, ok := ctx.Value(changesKey{}).(*atomic.Int32); ok && resp.StatusCode < 300 && req.Method == http.MethodPost {
				n.Add(1)
			}
			return resp, nil
		}
		wait := t.backoff << attempt
		wait = wait/2 + rand.N(wait/2+1) // jitter: racks of BMCs must not retry in step
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && ra >= 0 {
			wait = time.Duration(ra) * time.Second
		}
		wait = min(wait, maxBackoff)
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		t.log.Debug("BMC busy; retrying", "status", resp.StatusCode, "method", req.Method, "path", req.URL.Path, "wait", wait, "attempt", attempt+1)
		if err := sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// once sends one attempt, holding a concurrency slot until the headers are
// in, and cancels the attempt's deadline only when the body is closed.
func (t *transport) once(req *http.Request, body io.ReadCloser) (*http.Response, error) {
	ctx := req.Context()
	select {
	case t.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	actx, cancel := context.WithTimeout(ctx, t.timeout)
	r := req.Clone(actx)
	r.Body = body
	resp, err := t.base.RoundTrip(r)
	<-t.sem
	if err != nil {
		timedOut := actx.Err() != nil && ctx.Err() == nil
		cancel()
		if timedOut {
			return nil, fmt.Errorf("no answer within %s", t.timeout)
		}
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
