package nats

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/httpbus/httpbus/transport"
)

// DefaultPrefix is the first subject token of every subject httpbus uses
// when Config.Prefix is empty.
const DefaultPrefix = "httpbus"

// Defaults for the per-subscription pending limits (Config.PendingMsgs,
// Config.PendingBytes).
const (
	DefaultPendingMsgs  = 64 * 1024 // messages; nats.go's default sync queue length
	DefaultPendingBytes = 64 << 20  // bytes
)

// HeaderRoom is the part of the server's max_payload kept for the NATS
// header block httpbus sends with every message (Content-Type,
// Httpbus-Version, Httpbus-Deadline: under 100 bytes), in bytes.
// MaxMessageBytes returns max_payload minus HeaderRoom.
const HeaderRoom = 256

// notifyToken is the subject token between the prefix and a topic.
const notifyToken = "notify"

// Config configures a Listener or a Conn. The zero value is usable.
type Config struct {
	// Prefix is prepended to every subject: requests for service S go to
	// "<Prefix>.S", notifications for topic T to "<Prefix>.notify.T". It
	// may hold several tokens ("acme.httpbus"). Empty means DefaultPrefix.
	Prefix string

	// Queue is the queue group a Listener joins on its service subject and
	// on each topic subject, so that the instances of one service share its
	// requests and each notification reaches the service once. Empty means
	// the service name. All instances of a service must use the same queue
	// group, and two services subscribed to one topic different ones (those
	// sharing a group share its notifications). Ignored by Conn.
	Queue string

	// PendingMsgs and PendingBytes bound the messages a Listener's
	// subscription holds in the client, received from the server but not yet
	// taken by Receive (the Server takes one whenever it has fewer than
	// MaxInFlight requests running). Past either bound nats.go drops
	// messages as a slow consumer (logged). Zero means DefaultPendingMsgs
	// messages and DefaultPendingBytes bytes; PendingMsgs is also capped by
	// the connection's sync queue length (natsgo.SyncQueueLen, 65,536 by
	// default), which URL openers set to PendingMsgs. Ignored by Conn.
	PendingMsgs  int
	PendingBytes int64

	// InboxPendingBytes bounds the bytes the stream inbox subscription
	// (Inbox, ReceiveInbox) holds in the client, received but not yet taken
	// by ReceiveInbox; past it nats.go drops messages as a slow consumer
	// (logged; the core detects the gap). Zero means
	// DefaultInboxPendingBytes. Its message count is not bounded (it is an
	// asynchronous subscription, not bound by natsgo.SyncQueueLen). Peers send
	// within the credit the core grants, so in practice the inbox holds at
	// most the sum of the credit windows of the streams in flight.
	InboxPendingBytes int64

	// Logger receives slow-consumer warnings and malformed-message notes;
	// nil means slog.Default().
	Logger *slog.Logger
}

func (c Config) prefix() string {
	if c.Prefix == "" {
		return DefaultPrefix
	}
	return c.Prefix
}

func (c Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// pending returns the pending limits, msgs capped by queueLen (the
// connection's sync queue length) when that is positive.
func (c Config) pending(queueLen int) (msgs, bytes int) {
	msgs, bytes = c.PendingMsgs, int(c.PendingBytes)
	if msgs <= 0 {
		msgs = DefaultPendingMsgs
	}
	if bytes <= 0 {
		bytes = DefaultPendingBytes
	}
	if queueLen > 0 && msgs > queueLen {
		msgs = queueLen
	}
	return msgs, bytes
}

// ServiceSubject returns the subject requests for service go to under
// prefix ("" means DefaultPrefix).
func ServiceSubject(prefix, service string) string {
	return Config{Prefix: prefix}.prefix() + "." + service
}

// TopicSubject returns the subject notifications for topic go to under
// prefix ("" means DefaultPrefix).
func TopicSubject(prefix, topic string) string {
	return Config{Prefix: prefix}.prefix() + "." + notifyToken + "." + topic
}

// checkSubject reports whether s is usable as (part of) a literal NATS
// subject: non-empty tokens, no wildcards, no white space.
func checkSubject(what, s string) error {
	if s == "" {
		return fmt.Errorf("transport/nats: empty %s", what)
	}
	for rest := s; ; {
		tok, more, found := strings.Cut(rest, ".")
		if tok == "" {
			return fmt.Errorf("transport/nats: %s %q has an empty subject token (leading, trailing or double dot)", what, s)
		}
		if tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n\x00") {
			return fmt.Errorf("transport/nats: %s %q is not a literal NATS subject (wildcard or white space)", what, s)
		}
		if !found {
			return nil
		}
		rest = more
	}
}

func checkService(service string) error {
	if err := checkSubject("service name", service); err != nil {
		return err
	}
	if service == notifyToken || strings.HasPrefix(service, notifyToken+".") {
		// "notify" alone is fine as a subject, but reserve it to keep the
		// two namespaces apart.
		return fmt.Errorf("transport/nats: service name %q is reserved: subjects <prefix>.notify.* carry notifications", service)
	}
	return nil
}

// frameHeader is the header block of a message with no deadline and no
// other header carrying a frame (every single-message reply). Shared and
// never modified: nats.go only reads a message's Header when it encodes it.
// Its value slices are shared too (outgoing.header).
var frameHeader = natsgo.Header{
	"Content-Type":          {transport.MediaType},
	transport.HeaderVersion: {transport.Version},
}

// outgoing is a message to publish with room for its NATS header block,
// pooled (newOutgoing, release): nats.go encodes the header and copies the
// payload before PublishMsg or RequestMsgWithContext returns, and keeps
// neither the Msg nor its Header.
type outgoing struct {
	msg natsgo.Msg
	h   natsgo.Header // msg.Header unless that is frameHeader
	ct  [1]string     // Content-Type's value, when not MediaType
	dl  [1]string     // Httpbus-Deadline's value
}

var outgoingPool = sync.Pool{New: func() any { return &outgoing{h: make(natsgo.Header, 8)} }}

// newOutgoing returns a message to subject carrying m: m.Body as payload,
// and as NATS headers each m.Header entry (except Content-Type and names
// under the reserved "Nats-" prefix), then Content-Type (m.ContentType,
// MediaType when empty), Httpbus-Version (transport.Version unless m.Header
// carries one) and Httpbus-Deadline (from m.Deadline, when set). The value
// slices of m.Header are shared, not copied. Call release once it is
// published.
func newOutgoing(subject string, m *transport.Message) *outgoing {
	o := outgoingPool.Get().(*outgoing)
	o.msg = natsgo.Msg{Subject: subject, Data: m.Body, Header: o.header(m)}
	return o
}

// release returns o to the pool; o must not be used afterwards.
func (o *outgoing) release() {
	clear(o.h)
	o.msg = natsgo.Msg{}
	o.ct[0], o.dl[0] = "", ""
	outgoingPool.Put(o)
}

// header fills o.h for m (see newOutgoing), or returns frameHeader, shared,
// when m adds nothing to it.
func (o *outgoing) header(m *transport.Message) natsgo.Header {
	ct := m.ContentType
	if ct == "" {
		ct = transport.MediaType
	}
	if len(m.Header) == 0 && ct == transport.MediaType && m.Deadline.IsZero() {
		return frameHeader
	}
	h := o.h
	for k, vs := range m.Header {
		if len(vs) == 0 || k == "Content-Type" || strings.HasPrefix(k, "Nats-") {
			continue
		}
		h[k] = vs
	}
	if ct == transport.MediaType {
		h["Content-Type"] = frameHeader["Content-Type"]
	} else {
		o.ct[0] = ct
		h["Content-Type"] = o.ct[:]
	}
	if _, ok := h[transport.HeaderVersion]; !ok {
		h[transport.HeaderVersion] = frameHeader[transport.HeaderVersion]
	}
	if !m.Deadline.IsZero() {
		o.dl[0] = transport.FormatDeadline(m.Deadline)
		h[transport.HeaderDeadline] = o.dl[:]
	}
	return h
}

// headerSize is the wire size of h as nats.go encodes it.
func headerSize(h natsgo.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}

// payloadLimit reads the server's max_payload for size checks, cached:
// nc.MaxPayload takes the connection's lock, which every publish, request
// and received reply takes too, and the size checks asked for it five
// times per call (the core before it sends on either side, the backend
// before it publishes), enough to show as lock contention in `httpbus
// bench -trace` (go tool trace -pprof=sync). The value is read again at
// most every payloadLimitTTL; one gone stale after a reconnect to a server
// with a smaller limit is still caught by nats.go's own check at publish
// (natsgo.ErrMaxPayload, mapped to transport.ErrTooLarge by sendError).
type payloadLimit struct {
	nc   *natsgo.Conn
	max  atomic.Int64 // bytes; 0 until the connection has seen the server's INFO
	read atomic.Int64 // when max was read: ns on the monotonic clock since clockStart
}

// payloadLimitTTL is how long payloadLimit keeps a max_payload it read.
const payloadLimitTTL = time.Second

var clockStart = time.Now()

func newPayloadLimit(nc *natsgo.Conn) *payloadLimit { return &payloadLimit{nc: nc} }

// bytes returns max_payload in bytes (0: not known yet, no check).
func (p *payloadLimit) bytes() int64 {
	now := int64(time.Since(clockStart))
	if max := p.max.Load(); max > 0 && now-p.read.Load() < int64(payloadLimitTTL) {
		return max
	}
	max := p.nc.MaxPayload()
	p.max.Store(max)
	p.read.Store(now)
	return max
}

// check returns a *transport.TooLargeError when m does not fit in the
// server's max_payload.
func (p *payloadLimit) check(m *natsgo.Msg) error {
	max := p.bytes()
	if max <= 0 {
		return nil
	}
	size := int64(len(m.Data) + headerSize(m.Header))
	if size > max {
		return &transport.TooLargeError{What: "message (max_payload)", Limit: max, Size: size}
	}
	return nil
}

// messageBytes is SizeLimiter.MaxMessageBytes: max_payload minus HeaderRoom
// (0 while not known).
func (p *payloadLimit) messageBytes() int64 {
	max := p.bytes()
	if max <= 0 {
		return 0
	}
	if max <= HeaderRoom {
		return 1
	}
	return max - HeaderRoom
}

// httpHeader canonicalises NATS header keys (case-sensitive in nats.go)
// into a new http.Header, so that Header.Get finds a lowercase
// "traceparent".
func httpHeader(h natsgo.Header) http.Header {
	if len(h) == 0 {
		return nil
	}
	out := make(http.Header, len(h))
	for k, vs := range h {
		ck := http.CanonicalHeaderKey(k)
		out[ck] = append(out[ck], vs...)
	}
	return out
}

// receivedHeader returns the header of a received message as an
// http.Header with canonical keys. When every key is already canonical (as
// httpbus and most clients send them) it is h itself, converted without a
// copy, so that the single-message path allocates nothing for it; else a
// canonicalised copy (httpHeader). Either way, nats.go allocated h for this
// message alone.
func receivedHeader(h natsgo.Header) http.Header {
	for k := range h {
		if http.CanonicalHeaderKey(k) != k {
			return httpHeader(h)
		}
	}
	if len(h) == 0 {
		return nil
	}
	return http.Header(h)
}

// sendError maps an error of nats.go's publish path.
func sendError(what string, err error) error {
	switch {
	case errors.Is(err, natsgo.ErrMaxPayload):
		return fmt.Errorf("transport/nats: %s: %w: %w", what, transport.ErrTooLarge, err)
	case errors.Is(err, natsgo.ErrConnectionClosed), errors.Is(err, natsgo.ErrConnectionDraining):
		return fmt.Errorf("transport/nats: %s: %w: %w", what, transport.ErrClosed, err)
	default:
		return fmt.Errorf("transport/nats: %s: %w: %w", what, transport.ErrUnavailable, err)
	}
}

func state(nc *natsgo.Conn) transport.State {
	switch nc.Status() {
	case natsgo.CONNECTED:
		return transport.StateConnected
	case natsgo.CLOSED, natsgo.DRAINING_PUBS, natsgo.DRAINING_SUBS:
		return transport.StateClosed
	default:
		return transport.StateReconnecting
	}
}
