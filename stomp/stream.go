package stomp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	stompgo "github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"

	"github.com/httpbus/httpbus/transport"
)

// Inboxes (transport.Streamer). See "# Streams" in the package doc for
// why each broker gets its own kind of queue.
const (
	// rabbitInboxPrefix names a RabbitMQ inbox queue:
	// httpbus.inbox.<32 hex digits>.
	rabbitInboxPrefix = "httpbus.inbox."
	// activeMQInboxPrefix is the local name of an ActiveMQ inbox, a
	// temporary queue: /temp-queue/httpbus-inbox-<16 hex digits>.
	activeMQInboxPrefix = "/temp-queue/httpbus-inbox-"
	// hdrProbe marks the message an ActiveMQ inbox sends itself to check
	// the global name it computed; receivers drop it.
	hdrProbe = "httpbus-inbox-probe"
	// probeTimeout bounds the wait for that message.
	probeTimeout = 10 * time.Second
)

// inbox is the private queue of a Listener or Conn: opened on the current
// connection at the first Inbox call after each (re)connection, read by
// ReceiveInbox across connections.
type inbox struct {
	s    *session
	what string
	sem  chan struct{} // held while opening (buffered 1)

	mu     sync.Mutex
	k      *link  // link on which addr is open
	addr   string // the address peers SEND to
	probe  string // id of the ActiveMQ probe awaited, or ""
	probed chan struct{}
	q      []*transport.Message
	wake   chan struct{} // buffered 1: q grew or done closed
	done   chan struct{} // closed at Close
	closed bool
}

func newInbox(s *session) *inbox {
	return &inbox{s: s, what: s.what, sem: make(chan struct{}, 1), wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// close makes ReceiveInbox return ErrClosed; queued messages are dropped.
func (in *inbox) close() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if !in.closed {
		in.closed = true
		in.q = nil
		close(in.done)
	}
}

func (in *inbox) errClosed() error {
	return fmt.Errorf("transport/stomp: %s: %w", in.what, transport.ErrClosed)
}

// address returns the inbox address on the current connection, opening
// the inbox there if it is not open yet.
func (in *inbox) address(ctx context.Context) (string, error) {
	for {
		k, err := in.s.get(ctx)
		if err != nil {
			return "", err
		}
		in.mu.Lock()
		if in.k == k && !k.isDead() {
			addr := in.addr
			in.mu.Unlock()
			return addr, nil
		}
		in.mu.Unlock()
		select {
		case in.sem <- struct{}{}:
		case <-in.done:
			return "", in.errClosed()
		case <-ctx.Done():
			return "", fmt.Errorf("transport/stomp: %s: open inbox: %w", in.what, transport.ContextError(ctx))
		}
		in.mu.Lock()
		opened := in.k == k
		in.mu.Unlock()
		if !opened {
			err = in.open(ctx, k)
		}
		<-in.sem
		if err != nil {
			return "", err
		}
		// Loop: return the address if k is still current.
	}
}

// open opens the inbox on k.
func (in *inbox) open(ctx context.Context, k *link) error {
	var addr string
	var err error
	if k.dialect == DialectRabbitMQ {
		addr, err = in.openRabbitMQ(ctx, k)
	} else {
		addr, err = in.openActiveMQ(ctx, k)
	}
	if err != nil {
		return err
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.closed {
		return in.errClosed()
	}
	in.k, in.addr = k, addr
	return nil
}

// openRabbitMQ declares an exclusive, auto-delete, non-durable queue
// httpbus.inbox.<id> by subscribing to /queue/<name> with those
// properties; peers send to /amq/queue/<name>, which publishes to the
// existing queue without declaring it (a /queue/<name> SEND would declare
// it durable and fail with precondition_failed). The broker deletes the
// queue with the connection.
func (in *inbox) openRabbitMQ(ctx context.Context, k *link) (string, error) {
	name := rabbitInboxPrefix + newID()
	sub, err := k.c.Subscribe("/queue/"+name, stompgo.AckAuto,
		stompgo.SubscribeOpt.Header("durable", "false"),
		stompgo.SubscribeOpt.Header("auto-delete", "true"),
		stompgo.SubscribeOpt.Header("exclusive", "true"))
	if err != nil {
		return "", in.connErr(k, "subscribe to /queue/"+name, err)
	}
	in.s.pump(k, sub, false, in.deliver)
	if err := in.s.sync(ctx, k); err != nil {
		return "", fmt.Errorf("transport/stomp: %s: inbox queue %s not confirmed: %w", in.what, name, err)
	}
	return "/amq/queue/" + name, nil
}

// openActiveMQ subscribes to a temporary queue of k's connection. Others
// reach it as /remote-temp-queue/<connection id>:<n>, where the
// connection id is the session header of CONNECTED and n counts the
// temporary destinations the connection created (ActiveMQ 5.x's STOMP
// ProtocolConverter). The computed name is checked by sending a probe to
// it and waiting for it on the subscription.
func (in *inbox) openActiveMQ(ctx context.Context, k *link) (string, error) {
	k.mu.Lock()
	k.temps++
	n := k.temps
	k.mu.Unlock()
	local := activeMQInboxPrefix + newID()[:16]
	sub, err := k.c.Subscribe(local, stompgo.AckAuto)
	if err != nil {
		return "", in.connErr(k, "subscribe to "+local, err)
	}
	in.s.pump(k, sub, false, in.deliver)
	addr := "/remote-temp-queue/" + k.c.Session() + ":" + strconv.Itoa(n)
	id := newID()
	probed := make(chan struct{})
	in.mu.Lock()
	in.probe, in.probed = id, probed
	in.mu.Unlock()
	defer func() {
		in.mu.Lock()
		if in.probe == id {
			in.probe, in.probed = "", nil
		}
		in.mu.Unlock()
	}()
	if err := k.c.Send(addr, "", nil, stompgo.SendOpt.Header(hdrProbe, id)); err != nil {
		return "", in.connErr(k, "send to "+addr, err)
	}
	t := time.NewTimer(probeTimeout)
	defer t.Stop()
	select {
	case <-probed:
		return addr, nil
	case <-k.dead:
		return "", fmt.Errorf("transport/stomp: %s: open inbox: connection lost: %w: %w", in.what, transport.ErrUnavailable, k.err)
	case <-in.done:
		return "", in.errClosed()
	case <-ctx.Done():
		return "", fmt.Errorf("transport/stomp: %s: open inbox: %w", in.what, transport.ContextError(ctx))
	case <-t.C:
		return "", fmt.Errorf("transport/stomp: %s: inbox %s (as %s) unreachable after %v: the broker names temporary queues otherwise (not ActiveMQ 5.x, or a connection given to NewConn or NewListener that made temporary queues before): %w",
			in.what, local, addr, probeTimeout, transport.ErrUnavailable)
	}
}

func (in *inbox) connErr(k *link, what string, err error) error {
	if isConnError(err) {
		in.s.fail(k, err)
	}
	return fmt.Errorf("transport/stomp: %s: inbox: %s: %w: %w", in.what, what, transport.ErrUnavailable, err)
}

// deliver queues a message from the inbox subscription. It never blocks
// (see session.pump); the stream protocol's credit bounds the queue.
func (in *inbox) deliver(m *stompgo.Message) {
	if id, ok := m.Header.Contains(hdrProbe); ok {
		in.mu.Lock()
		if id == in.probe && in.probed != nil {
			close(in.probed)
			in.probe, in.probed = "", nil
		}
		in.mu.Unlock()
		return
	}
	msg := &transport.Message{Body: m.Body, ContentType: m.ContentType, Header: headerOf(m.Header)}
	if dl, err := deliveryDeadline(m.Header); err == nil {
		msg.Deadline = dl
	}
	in.mu.Lock()
	if in.closed {
		in.mu.Unlock()
		return
	}
	in.q = append(in.q, msg)
	in.mu.Unlock()
	in.signal()
}

func (in *inbox) signal() {
	select {
	case in.wake <- struct{}{}:
	default:
	}
}

// receive returns the next inbox message.
func (in *inbox) receive(ctx context.Context) (*transport.Message, error) {
	for {
		in.mu.Lock()
		if in.closed {
			in.mu.Unlock()
			return nil, in.errClosed()
		}
		if len(in.q) > 0 {
			m := in.q[0]
			in.q[0] = nil
			in.q = in.q[1:]
			more := len(in.q) > 0
			in.mu.Unlock()
			if more {
				in.signal()
			}
			return m, nil
		}
		in.mu.Unlock()
		in.s.mu.Lock()
		final := in.s.err
		in.s.mu.Unlock()
		if final != nil {
			return nil, final
		}
		select {
		case <-in.wake:
		case <-in.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// sendTo is Streamer.Send for a Listener or Conn; with receipt it waits
// for the broker's RECEIPT.
func sendTo(ctx context.Context, s *session, addr string, m *transport.Message, max int64, receipt bool) error {
	if addr == "" {
		return errors.New("transport/stomp: send with no address")
	}
	if err := checkSize(m, max); err != nil {
		return err
	}
	k, err := s.get(ctx)
	if err != nil {
		return err
	}
	sh := sendHeader{h: m.Header}
	sh.add(hdrVersion, transport.Version)
	sh.deadline(k.dialect, m.Deadline)
	opts := []func(*frame.Frame) error{sh.apply}
	if receipt {
		opts = append(opts, stompgo.SendOpt.Receipt)
		err = s.await(ctx, func() error { return k.c.Send(addr, m.ContentType, m.Body, opts...) })
		if errors.Is(err, transport.ErrTimeout) || errors.Is(err, context.Canceled) || errors.Is(err, transport.ErrClosed) {
			return err
		}
	} else {
		err = k.c.Send(addr, m.ContentType, m.Body, opts...)
	}
	if err != nil {
		if isConnError(err) {
			s.fail(k, err)
		}
		return fmt.Errorf("transport/stomp: send to %s: %w: %w", addr, transport.ErrUnavailable, err)
	}
	return nil
}

// maxHeaderBytes bounds the STOMP headers a Message.Header may add: half
// of HeaderReserve, the rest being left for the headers of this package.
const maxHeaderBytes = HeaderReserve / 2

// checkSize refuses a message whose body is over max (0: no limit) or
// whose Header is over maxHeaderBytes, before anything is sent: ActiveMQ
// drops the connection on a frame over its limit.
func checkSize(m *transport.Message, max int64) error {
	if max > 0 && int64(len(m.Body)) > max {
		return &transport.TooLargeError{What: "message", Limit: max, Size: int64(len(m.Body))}
	}
	if len(m.Header) > 0 {
		n := 0
		for k, vs := range m.Header {
			for _, v := range vs {
				n += len(k) + len(v) + 2
			}
		}
		if n > maxHeaderBytes {
			return &transport.TooLargeError{What: "header", Limit: maxHeaderBytes, Size: int64(n)}
		}
	}
	return nil
}

// reserved lists the STOMP header names a Message.Header entry never
// sets: the frame headers of STOMP 1.2 and the headers either broker
// gives a meaning (ActiveMQ's JMS mapping, RabbitMQ's AMQP properties).
// Such entries are left out of the frame.
var reserved = map[string]bool{
	"content-length": true, "content-type": true, "destination": true,
	"receipt": true, "receipt-id": true, "transaction": true, "ack": true,
	"id": true, "subscription": true, "message-id": true, "message": true,
	"host": true, "login": true, "passcode": true, "heart-beat": true,
	"accept-version": true, "version": true, "session": true, "server": true,
	hdrReplyTo: true, hdrCorrelationID: true, hdrExpires: true,
	hdrExpiration: true, hdrRedelivered: true, "persistent": true,
	"priority": true, "type": true, "timestamp": true, "user-id": true,
	"app-id": true, "content-encoding": true, "amqp-message-id": true,
	"durable": true, "auto-delete": true, "exclusive": true, "selector": true,
	hdrProbe: true,
}

// stompNames spells the routing and stream headers of package transport
// as STOMP header names (lower case), without allocating.
var stompNames = map[string]string{
	transport.HeaderVersion:       hdrVersion,
	transport.HeaderDeadline:      hdrDeadline,
	transport.HeaderCorrelationID: "httpbus-correlation-id",
	transport.HeaderRedelivered:   "httpbus-redelivered",
	transport.HeaderError:         "httpbus-error",
	transport.HeaderReplyTo:       "httpbus-reply-to",
	transport.HeaderStream:        "httpbus-stream",
	transport.HeaderSeq:           "httpbus-seq",
	transport.HeaderEnd:           "httpbus-end",
	transport.HeaderControl:       "httpbus-control",
	transport.HeaderCredit:        "httpbus-credit",
	transport.HeaderCreditBytes:   "httpbus-credit-bytes",
}

// httpNames is stompNames reversed: canonical names without allocating.
var httpNames = func() map[string]string {
	m := make(map[string]string, len(stompNames))
	for h, s := range stompNames {
		m[s] = h
	}
	return m
}()

// stompName returns the STOMP header name of Header key k (lower case), or
// "" for a name this package does not write (reserved, or not a valid
// header name).
func stompName(k string) string {
	if s, ok := stompNames[k]; ok {
		return s
	}
	s := strings.ToLower(k)
	if s == "" || reserved[s] || strings.HasPrefix(s, "activemq.") || strings.HasPrefix(s, "jms") ||
		strings.ContainsAny(s, ":\r\n\x00") {
		return ""
	}
	return s
}

// sendHeader is the headers of a SEND beyond the ones go-stomp writes
// (content-length, destination, content-type): pairs added with add, then
// the entries of h (lower-case names, several values joined by ", ",
// reserved names left out), each replacing the header of the same name
// written before it. Its apply method is one go-stomp option that sets
// them all at once: one header slice of the right size, where an option
// per header would allocate a closure each and grow the slice as it goes.
type sendHeader struct {
	kv [10]string // name, value pairs added by add
	n  int
	h  http.Header
}

func (s *sendHeader) add(k, v string) {
	s.kv[s.n], s.kv[s.n+1] = k, v
	s.n += 2
}

func (s *sendHeader) apply(f *frame.Frame) error {
	var buf [32]string
	all := buf[:0]
	for i := 0; i < f.Header.Len(); i++ {
		k, v := f.Header.GetAt(i)
		all = append(all, k, v)
	}
	all = append(all, s.kv[:s.n]...)
	for k, vs := range s.h {
		if len(vs) == 0 {
			continue
		}
		name := stompName(k)
		if name == "" {
			continue
		}
		v := vs[0]
		if len(vs) > 1 {
			v = strings.Join(vs, ", ")
		}
		all = setPair(all, name, v)
	}
	f.Header = frame.NewHeader(all...)
	return nil
}

// setPair sets the value of the first pair named k in kv, or appends the
// pair (as frame.Header.Set does).
func setPair(kv []string, k, v string) []string {
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == k {
			kv[i+1] = v
			return kv
		}
	}
	return append(kv, k, v)
}

// httpbusHeader returns the httpbus- headers of a received frame, with
// canonical keys; nil if there are none. It is the Header of a received
// frame (message/http): cheaper than headerOf on the request/reply path.
func httpbusHeader(h *frame.Header) http.Header {
	n := 0
	for i := 0; i < h.Len(); i++ {
		if k, _ := h.GetAt(i); isHttpbus(k) {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	// A map of the right size and one backing array for all values: the
	// request/reply path pays little for its headers.
	out := make(http.Header, n)
	vals := make([]string, 0, n)
	for i := 0; i < h.Len(); i++ {
		k, v := h.GetAt(i)
		if !isHttpbus(k) {
			continue
		}
		name, ok := httpNames[k]
		if !ok {
			name = http.CanonicalHeaderKey(k)
		}
		if prev, ok := out[name]; ok {
			out[name] = append(prev[:len(prev):len(prev)], v)
			continue
		}
		vals = append(vals, v)
		out[name] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	return out
}

func isHttpbus(k string) bool {
	// The first byte rules out most names (destination, message-id, …)
	// before the case-insensitive compare, which was 1% of a call's
	// instructions on the serving side.
	return len(k) >= 8 && k[0]|0x20 == 'h' && strings.EqualFold(k[:8], "httpbus-")
}

// Inbox implements transport.Streamer: see "# Streams" in the package doc.
func (c *Conn) Inbox(ctx context.Context) (string, error) { return c.in.address(ctx) }

// ReceiveInbox implements transport.Streamer. Header holds every STOMP
// header of the message but content-length and content-type, with
// canonical keys.
func (c *Conn) ReceiveInbox(ctx context.Context) (*transport.Message, error) {
	return c.in.receive(ctx)
}

// Send implements transport.Streamer: a SEND to addr with content-type
// m.ContentType (none if empty), httpbus-version, m.Header as STOMP
// headers (see the package doc) and, with m.Deadline, the deadline
// headers of a request. It returns once go-stomp has queued the frame.
func (c *Conn) Send(ctx context.Context, addr string, m *transport.Message) error {
	return sendTo(ctx, c.s, addr, m, c.MaxMessageBytes(), false)
}

// Inbox implements transport.Streamer; see Conn.Inbox.
func (l *Listener) Inbox(ctx context.Context) (string, error) { return l.in.address(ctx) }

// ReceiveInbox implements transport.Streamer; see Conn.ReceiveInbox.
func (l *Listener) ReceiveInbox(ctx context.Context) (*transport.Message, error) {
	return l.in.receive(ctx)
}

// Send implements transport.Streamer; see Conn.Send. While draining it
// waits for the broker's receipt, as Reply does.
func (l *Listener) Send(ctx context.Context, addr string, m *transport.Message) error {
	l.mu.Lock()
	draining := l.draining
	l.mu.Unlock()
	return sendTo(ctx, l.s, addr, m, l.MaxMessageBytes(), draining)
}

// rabbitMQPartBytes is the part size stomp asks for under credit in bytes
// on RabbitMQ (transport.PartSizer): 1 MiB rather than
// transport.LargePartBytes. RabbitMQ's STOMP plugin costs much per message
// (issue 13 put it at ~0.2 ms), and within the same 2 MiB window 1 MiB
// parts moved 64 MiB streams 14–19% faster than 512 KiB parts (httpbus
// bench -stream both, old and new build alternating, 3 pairs); a stream
// direction then holds at most 3 MiB in flight. On ActiveMQ the same trial
// showed no difference, so it keeps LargePartBytes (2.5 MiB in flight).
// Both are far below the brokers' frame limits; a smaller
// Config.MaxFrameBytes caps them.
const rabbitMQPartBytes = 1 << 20

func streamPartBytes(s *session) int {
	if s.dialect() == DialectRabbitMQ {
		return rabbitMQPartBytes
	}
	return transport.LargePartBytes
}

// StreamPartBytes implements transport.PartSizer: 1 MiB on RabbitMQ,
// transport.LargePartBytes (512 KiB) on ActiveMQ (see rabbitMQPartBytes).
func (c *Conn) StreamPartBytes() int { return streamPartBytes(c.s) }

// StreamPartBytes implements transport.PartSizer, as Conn.StreamPartBytes.
func (l *Listener) StreamPartBytes() int { return streamPartBytes(l.s) }

var (
	_ transport.Streamer  = (*Conn)(nil)
	_ transport.Streamer  = (*Listener)(nil)
	_ transport.PartSizer = (*Conn)(nil)
	_ transport.PartSizer = (*Listener)(nil)
)
