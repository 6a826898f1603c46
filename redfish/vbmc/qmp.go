package vbmc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// qmp is a client of QEMU's machine protocol on a unix socket. QMP is a few
// lines of JSON each way, so the package speaks it itself rather than pull in
// a library: one command in flight at a time (QEMU answers in order), and
// asynchronous events fanned out to waiters.
type qmp struct {
	conn net.Conn
	mu   sync.Mutex // one command at a time
	id   int

	replies chan qmpReply
	evMu    sync.Mutex
	waiters map[chan qmpEvent]struct{}
	closed  chan struct{}
}

type qmpReply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
	ID    any             `json:"id"`
}

// qmpEvent is an asynchronous QMP event, e.g. RESET with data
// {"guest": true, "reason": "guest-reset"}.
type qmpEvent struct {
	Name string
	Data json.RawMessage
}

// guest reports whether the event was caused by the guest (a RESET or
// SHUTDOWN the firmware or OS asked for) rather than by a QMP command.
func (e qmpEvent) guest() bool {
	var d struct {
		Guest bool `json:"guest"`
	}
	json.Unmarshal(e.Data, &d)
	return d.Guest
}

// dialQMP connects to path, retrying until QEMU created the socket or ctx is
// done, and leaves capabilities negotiation mode.
func dialQMP(ctx context.Context, path string) (*qmp, error) {
	var conn net.Conn
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			conn = c
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("qmp %s: %w", path, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	q := &qmp{conn: conn, replies: make(chan qmpReply, 1), waiters: map[chan qmpEvent]struct{}{}, closed: make(chan struct{})}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	// The greeting comes first, before any command.
	if !sc.Scan() {
		conn.Close()
		return nil, fmt.Errorf("qmp %s: no greeting: %v", path, sc.Err())
	}
	go q.read(sc)
	if _, err := q.run(ctx, "qmp_capabilities", nil); err != nil {
		q.close()
		return nil, err
	}
	return q, nil
}

func (q *qmp) read(sc *bufio.Scanner) {
	defer close(q.closed)
	for sc.Scan() {
		var r qmpReply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue
		}
		if r.Event != "" {
			q.evMu.Lock()
			for w := range q.waiters {
				select {
				case w <- qmpEvent{Name: r.Event, Data: r.Data}:
				default: // a slow waiter misses events rather than block QMP
				}
			}
			q.evMu.Unlock()
			continue
		}
		q.replies <- r
	}
}

// errQMPClosed means QEMU went away (the VM process exited).
var errQMPClosed = errors.New("qmp connection closed (qemu exited)")

// run executes one command and returns its "return" value.
func (q *qmp) run(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.id++
	msg := map[string]any{"execute": cmd, "id": q.id}
	if args != nil {
		msg["arguments"] = args
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return nil, err
	}
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	select {
	case r := <-q.replies:
		if r.Error != nil {
			return nil, fmt.Errorf("qmp %s: %s: %s", cmd, r.Error.Class, r.Error.Desc)
		}
		return r.Return, nil
	case <-q.closed:
		return nil, fmt.Errorf("qmp %s: %w", cmd, errQMPClosed)
	case <-ctx.Done():
		// The answer may still come; drop the connection so that a late
		// reply can never be taken for the next command's.
		q.conn.Close()
		return nil, fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	}
}

// subscribe returns a channel of events until cancel is called.
func (q *qmp) subscribe() (ch chan qmpEvent, cancel func()) {
	ch = make(chan qmpEvent, 16)
	q.evMu.Lock()
	q.waiters[ch] = struct{}{}
	q.evMu.Unlock()
	return ch, func() {
		q.evMu.Lock()
		delete(q.waiters, ch)
		q.evMu.Unlock()
	}
}

func (q *qmp) close() { q.conn.Close() }
