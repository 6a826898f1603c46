// Package redfish drives one server's BMC over the DMTF Redfish API: power
// state and resets, the one-time boot override that sends a host to the
// network boot, and virtual media. It hides gofish (the only package that
// imports it) and the differences between BMC vendors behind a small API, and
// it retries what BMCs commonly refuse for a moment (409 busy, 5xx) with
// bounded backoff.
//
// It is not a fleet controller: it knows nothing of hosts, images or
// rollouts, and it is not a Redfish server (see redfish/vbmc for that).
// Credentials passed in Config never appear in logs or errors.
package redfish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stmcginnis/gofish"
	"github.com/stmcginnis/gofish/schemas"
)

// Config says which BMC to talk to and how. Only Endpoint is required.
type Config struct {
	// Endpoint is the BMC's base URL, "https://10.0.0.5" or
	// "http://127.0.0.1:8000". It must not carry credentials.
	Endpoint string
	// Username and Password authenticate to the BMC. They are never
	// logged, never put in errors, events or API output. Empty Username
	// means an unauthenticated service (labs, mocks).
	Username, Password string
	// Insecure skips TLS certificate verification (self-signed BMCs).
	Insecure bool
	// CAFile is a PEM bundle of extra CAs to trust for the BMC's
	// certificate, on top of the system pool.
	CAFile string
	// Timeout bounds each HTTP request (default 30s).
	Timeout time.Duration
	// MaxConcurrent bounds requests in flight to this BMC (default 2):
	// BMCs are small computers that fall over under parallel load.
	MaxConcurrent int
	// System picks the computer system when the BMC exposes several, by
	// ID, Name, UUID or SerialNumber. Empty means the only one; Dial fails
	// listing them if there are several.
	System string
	// WaitTimeout bounds waiting for a task or a power state change after
	// a request was accepted (default 5m: real BMCs take seconds to
	// minutes).
	WaitTimeout time.Duration
	// Log receives progress and retries; nil discards.
	Log *slog.Logger

	// Knobs for tests: how long to wait between polls of a task or the
	// power state, and the first retry backoff.
	pollInterval time.Duration
	retryBase    time.Duration
	retries      int
}

// Error is what every failed operation returns: which BMC, what was asked
// and what the BMC answered, on one line. Status is the HTTP status when
// the BMC answered one, 0 otherwise (unreachable, TLS, timeout).
type Error struct {
	BMC     string
	Op      string
	Status  int
	Message string
	err     error
}

// Error formats as "bmc https://..: power on: 409: <BMC's own message>".
func (e *Error) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("bmc %s: %s: %d: %s", e.BMC, e.Op, e.Status, e.Message)
	}
	return fmt.Sprintf("bmc %s: %s: %s", e.BMC, e.Op, e.Message)
}

// Unwrap gives the underlying error, so errors.Is(err, context.Canceled)
// works through an *Error.
func (e *Error) Unwrap() error { return e.err }

// Client controls one computer system behind one BMC. Its methods are safe
// for concurrent use; requests to the BMC are bounded by MaxConcurrent.
type Client struct {
	cfg       Config
	log       *slog.Logger
	http      *http.Client
	vendor    string // ServiceRoot Vendor, "" when not reported
	sessions  string // URI of the Sessions collection, "" without SessionService
	systemURI string
	quirks    quirks

	mu  sync.Mutex
	api *gofish.APIClient
}

// Dial connects to the BMC, logs in (a Redfish session when the service
// offers one, Basic auth otherwise) and finds the system to control.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 2
	}
	if cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = 5 * time.Minute
	}
	if cfg.pollInterval <= 0 {
		cfg.pollInterval = 2 * time.Second
	}
	if cfg.retryBase <= 0 {
		cfg.retryBase = 500 * time.Millisecond
	}
	if cfg.retries <= 0 {
		cfg.retries = 5
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// Never echo a URL that failed to parse: it might hold a password.
		return nil, &Error{BMC: redactEndpoint(cfg.Endpoint), Op: "connect", Message: "endpoint must be an http:// or https:// URL"}
	}
	if u.User != nil {
		return nil, &Error{BMC: redactEndpoint(cfg.Endpoint), Op: "connect", Message: "credentials in the endpoint URL are not accepted; use the username/password settings"}
	}
	cfg.Endpoint = strings.TrimRight(u.Scheme+"://"+u.Host+u.Path, "/")
	c := &Client{cfg: cfg, log: log.With("bmc", cfg.Endpoint)}
	tr, err := newTransport(cfg, c.log)
	if err != nil {
		return nil, c.fail("connect", err)
	}
	c.http = &http.Client{Transport: tr}
	if err := c.probe(ctx); err != nil {
		return nil, c.fail("connect", err)
	}
	if err := c.login(ctx); err != nil {
		return nil, err
	}
	if err := c.pickSystem(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// redactEndpoint keeps only scheme and host of a URL for error messages.
func redactEndpoint(s string) string {
	if u, err := url.Parse(s); err == nil && u.Host != "" {
		return u.Scheme + "://" + u.Host
	}
	return "(invalid endpoint)"
}

// probe reads the service root without credentials (the spec requires it
// to be readable unauthenticated) to learn the vendor and whether the
// service offers sessions, before deciding how to log in.
func (c *Client) probe(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.cfg.Endpoint+"/redfish/v1/", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusUnauthorized {
		// Some BMCs guard even the root; assume sessions at the
		// standard place and let the login say whether that works.
		c.sessions = "/redfish/v1/SessionService/Sessions"
		return nil
	}
	if resp.StatusCode/100 != 2 {
		return schemas.ConstructError(resp.StatusCode, b)
	}
	var root struct {
		Vendor         string
		SessionService *struct {
			ODataID string `json:"@odata.id"`
		}
		Links struct {
			Sessions *struct {
				ODataID string `json:"@odata.id"`
			}
		}
	}
	if err := json.Unmarshal(b, &root); err != nil {
		return fmt.Errorf("service root at /redfish/v1/ is not Redfish JSON: %w", err)
	}
	c.vendor = root.Vendor
	if root.SessionService != nil && root.Links.Sessions != nil {
		c.sessions = root.Links.Sessions.ODataID
	}
	return nil
}

// login (re)creates the gofish client: a session when the service has a
// SessionService and accepts one, Basic auth otherwise.
func (c *Client) login(ctx context.Context) error {
	base := gofish.ClientConfig{
		Endpoint:   c.cfg.Endpoint,
		Username:   c.cfg.Username,
		Password:   c.cfg.Password,
		HTTPClient: c.http,
		// The transport is ours (TLS, retries, timeouts): gofish must
		// not touch it, and its own semaphore would hold a slot through
		// our backoff sleeps, so ours does the bounding.
		NoModifyTransport:     true,
		MaxConcurrentRequests: 1 << 10,
		ReuseConnections:      true,
	}
	useBasic := c.sessions == "" || c.cfg.Username == ""
	if !useBasic {
		cfg := base
		api, err := gofish.ConnectContext(ctx, cfg)
		switch {
		case err == nil:
			if s, serr := api.GetSession(); serr == nil && s.Token != "" {
				c.setAPI(api)
				c.log.Debug("logged in with a session")
				return nil
			}
			// A "session" without a token is no session: some mocks
			// and old firmware answer 201 and ignore it.
			c.log.Debug("service returned no session token; using Basic auth")
		case statusOf(err) == http.StatusUnauthorized, statusOf(err) == http.StatusForbidden:
			return c.fail("login", err)
		case statusOf(err) == 0 && !isNoTarget(err):
			return c.fail("login", err)
		default:
			c.log.Debug("sessions refused; using Basic auth", "status", statusOf(err))
		}
	} else if c.cfg.Username != "" {
		c.log.Debug("no SessionService; using Basic auth")
	}
	cfg := base
	cfg.BasicAuth = c.cfg.Username != ""
	if !cfg.BasicAuth {
		cfg.Username, cfg.Password = "", ""
	}
	api, err := gofish.ConnectContext(ctx, cfg)
	if err != nil {
		return c.fail("login", err)
	}
	c.setAPI(api)
	return nil
}

func (c *Client) setAPI(api *gofish.APIClient) {
	c.mu.Lock()
	c.api = api
	c.mu.Unlock()
}

func (c *Client) client(ctx context.Context) (*gofish.APIClient, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.api == nil {
		return nil, false // closed
	}
	return c.api.WithContext(ctx), true
}

// Close logs out the session, if there is one.
func (c *Client) Close() error {
	c.mu.Lock()
	api := c.api
	c.api = nil
	c.mu.Unlock()
	if api == nil {
		return nil
	}
	defer c.http.CloseIdleConnections()
	if s, err := api.GetSession(); err == nil && s.ID != "" {
		// A fresh context: Close often runs after the caller's ctx ended,
		// and a BMC has only a few session slots to leak.
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
		defer cancel()
		if err := schemas.DeleteSession(api.WithContext(ctx), s.ID); err != nil {
			return c.fail("logout", err)
		}
	}
	return nil
}

// do runs fn against the BMC as operation op. A 401 (the session expired
// or the BMC rebooted) logs in again once and repeats fn, unless the BMC
// had already accepted an action during fn (a Reset, an InsertMedia: POSTs,
// which may not run twice), so the failure is returned instead.
// Any failure comes back as an *Error.
func (c *Client) do(ctx context.Context, op string, fn func(api *gofish.APIClient) error) error {
	closed := &Error{BMC: c.cfg.Endpoint, Op: op, Message: "client is closed"}
	changes := new(atomic.Int32)
	ctx = context.WithValue(ctx, changesKey{}, changes)
	api, ok := c.client(ctx)
	if !ok {
		return closed
	}
	err := fn(api)
	if err != nil && statusOf(err) == http.StatusUnauthorized && c.cfg.Username != "" {
		changed := changes.Load() > 0 // before the login's own POST
		c.log.Info("BMC refused the session; logging in again", "op", op)
		if lerr := c.login(ctx); lerr != nil {
			return lerr
		}
		if changed {
			return &Error{BMC: c.cfg.Endpoint, Op: op, Status: http.StatusUnauthorized,
				Message: "the BMC accepted the change, then ended the session before it could be followed; not repeating it"}
		}
		if api, ok = c.client(ctx); !ok {
			return closed
		}
		err = fn(api)
	}
	if err != nil {
		return c.fail(op, err)
	}
	return nil
}

// changesKey marks a do call's context with the count of actions (POSTs
// answered 2xx) the BMC accepted in it; the transport counts them.
type changesKey struct{}

// fail turns any error into an *Error for op, with the BMC's own message
// (@Message.ExtendedInfo) when it sent one.
func (c *Client) fail(op string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	err = unwrapCollection(err)
	out := &Error{BMC: c.cfg.Endpoint, Op: op, err: err}
	var se *schemas.Error
	if errors.As(err, &se) {
		out.Status = se.HTTPReturnedStatusCode
		prefix := strings.TrimSuffix(err.Error(), se.Error())
		out.Message = prefix + bmcMessage(se)
	} else {
		var ue *url.Error
		if errors.As(err, &ue) {
			// The URL is the endpoint, already named; keep the cause.
			out.Message = strings.TrimSuffix(err.Error(), ue.Error()) + ue.Err.Error()
		} else {
			out.Message = err.Error()
		}
	}
	out.Message = oneLine(out.Message)
	if c.cfg.Password != "" {
		out.Message = strings.ReplaceAll(out.Message, c.cfg.Password, "***")
	}
	return out
}

// bmcMessage extracts the human text of a Redfish error body.
func bmcMessage(se *schemas.Error) string {
	var parts []string
	for _, m := range se.ExtendedInfos {
		switch {
		case m.Message != "":
			parts = append(parts, m.Message)
		case m.MessageID != "":
			// HPE iLO sends only the registry's id and its arguments,
			// e.g. iLO.2.15.PropertyNotWritableOrUnknown(BootSourceOverrideMode).
			parts = append(parts, m.MessageID+"("+strings.Join(m.MessageArgs, ", ")+")")
		}
	}
	if len(parts) == 0 && se.Message != "" {
		parts = append(parts, se.Message)
	}
	if len(parts) == 0 {
		if t := strings.TrimSpace(se.Error()); t != "" {
			// No Redfish error body: the raw text after the status.
			_, rest, ok := strings.Cut(t, ": ")
			if ok {
				t = rest
			}
			parts = append(parts, t)
		}
	}
	if len(parts) == 0 {
		return http.StatusText(se.HTTPReturnedStatusCode)
	}
	return strings.Join(parts, "; ")
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return s
}

// statusOf returns the HTTP status of a Redfish error, 0 for other errors.
func statusOf(err error) int {
	var se *schemas.Error
	if errors.As(unwrapCollection(err), &se) {
		return se.HTTPReturnedStatusCode
	}
	return 0
}

// unwrapCollection digs the first failure out of gofish's CollectionError,
// which otherwise flattens the BMC's answer (and its status) into JSON.
func unwrapCollection(err error) error {
	var ce *schemas.CollectionError
	if !errors.As(err, &ce) || len(ce.Failures) == 0 {
		return err
	}
	links := slices.Sorted(maps.Keys(ce.Failures))
	return fmt.Errorf("%s: %w", links[0], ce.Failures[links[0]])
}

// isNoTarget recognises gofish's "no target provided", which it says both
// for a missing action and for a missing SessionService.
func isNoTarget(err error) bool {
	return err != nil && strings.Contains(err.Error(), "no target provided")
}

// pickSystem resolves Config.System to one ComputerSystem URI.
func (c *Client) pickSystem(ctx context.Context) error {
	return c.do(ctx, "find system", func(api *gofish.APIClient) error {
		systems, err := api.Service.Systems()
		if err != nil {
			return err
		}
		if len(systems) == 0 {
			return errors.New("the BMC lists no computer systems")
		}
		want := c.cfg.System
		var names []string
		for _, s := range systems {
			names = append(names, describeSystem(s))
			if want == "" {
				continue
			}
			if s.ID == want || s.Name == want || strings.EqualFold(s.UUID, want) || (s.SerialNumber != "" && s.SerialNumber == want) {
				c.systemURI = s.ODataID
				c.quirks = quirksFor(s.Manufacturer, c.vendor)
				return nil
			}
		}
		if want == "" && len(systems) == 1 {
			c.systemURI = systems[0].ODataID
			c.quirks = quirksFor(systems[0].Manufacturer, c.vendor)
			return nil
		}
		if want == "" {
			return fmt.Errorf("the BMC has %d systems, pick one by ID, name, UUID or serial: %s", len(systems), strings.Join(names, ", "))
		}
		return fmt.Errorf("no system %q; the BMC has: %s", want, strings.Join(names, ", "))
	})
}

func describeSystem(s *schemas.ComputerSystem) string {
	d := s.ID
	var extra []string
	if s.Name != "" && s.Name != s.ID {
		extra = append(extra, "name "+s.Name)
	}
	if s.UUID != "" {
		extra = append(extra, "uuid "+s.UUID)
	}
	if s.SerialNumber != "" {
		extra = append(extra, "serial "+s.SerialNumber)
	}
	if len(extra) > 0 {
		d += " (" + strings.Join(extra, ", ") + ")"
	}
	return d
}

// system fetches the chosen system afresh (state and ETag).
func (c *Client) system(api *gofish.APIClient) (*schemas.ComputerSystem, error) {
	return schemas.GetComputerSystem(api, c.systemURI)
}

// Status is a snapshot of the system as the BMC reports it.
type Status struct {
	System       string `json:"system"`
	Manufacturer string `json:"manufacturer,omitempty"`
	Model        string `json:"model,omitempty"`
	Serial       string `json:"serial,omitempty"`
	PowerState   string `json:"powerState"`
	BootTarget   string `json:"bootTarget,omitempty"`
	BootEnabled  string `json:"bootEnabled,omitempty"`
	BootMode     string `json:"bootMode,omitempty"`
	BootURI      string `json:"bootURI,omitempty"`
}

// Status reads the system's identity, power state and boot override.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.do(ctx, "status", func(api *gofish.APIClient) error {
		s, err := c.system(api)
		if err != nil {
			return err
		}
		st = Status{
			System:       s.ID,
			Manufacturer: s.Manufacturer,
			Model:        s.Model,
			Serial:       s.SerialNumber,
			PowerState:   string(s.PowerState),
			BootTarget:   string(s.Boot.BootSourceOverrideTarget),
			BootEnabled:  string(s.Boot.BootSourceOverrideEnabled),
			BootMode:     string(s.Boot.BootSourceOverrideMode),
		}
		if s.Boot.HTTPBootURI != nil {
			st.BootURI = *s.Boot.HTTPBootURI
		}
		return nil
	})
	return st, err
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
