package transport

import (
	"context"
	"net/http"
	"time"
)

// MediaType is the content type of a frame: one whole HTTP/1.1 message
// (RFC 9112 §10.1).
const MediaType = "message/http"

// Version is the wire binding version carried in HeaderVersion on a
// message that is one whole exchange, readable by a version-1 peer.
const Version = "1"

// Version2 is the binding version carried on stream parts and control
// messages (WIRE.md §7).
const Version2 = "2"

// Routing header names of the wire binding (WIRE.md). Backends carry them as
// broker headers (or, for tcp, as HTTP headers); the frame itself is untouched.
const (
	// HeaderVersion carries Version.
	HeaderVersion = "Httpbus-Version"
	// HeaderDeadline carries the caller's absolute deadline as decimal Unix
	// time in milliseconds (FormatDeadline, ParseDeadline).
	HeaderDeadline = "Httpbus-Deadline"
	// HeaderCorrelationID carries the correlation id where the broker has no
	// native property for it.
	HeaderCorrelationID = "Httpbus-Correlation-Id"
	// HeaderRedelivered is set to "true" on the request a handler sees when
	// the broker delivers it again (after a server died holding it), so that
	// handlers can be idempotent.
	HeaderRedelivered = "Httpbus-Redelivered"
	// HeaderError is set on a response made by httpbus itself, not by the
	// handler (an expired request, a malformed frame, a transport error at
	// the caller): its value is the error text.
	HeaderError = "Httpbus-Error"

	// Stream headers (binding version 2, WIRE.md §7). Backends carry them as
	// broker headers, in both directions, on every message (see
	// Message.Header).

	// HeaderReplyTo carries the sender's inbox address (Streamer.Inbox): a
	// request with it may be answered by a stream; a stream message with it
	// tells the peer where to send credit, parts and cancel.
	HeaderReplyTo = "Httpbus-Reply-To"
	// HeaderStream carries the stream id, chosen by the caller, unique per
	// caller inbox; every message of one exchange carries it.
	HeaderStream = "Httpbus-Stream"
	// HeaderSeq carries a part's sequence number in its direction, from 0.
	HeaderSeq = "Httpbus-Seq"
	// HeaderEnd is "1" on the last part of a message.
	HeaderEnd = "Httpbus-End"
	// HeaderControl names a control message: "continue", "credit",
	// "cancel" or "abort".
	HeaderControl = "Httpbus-Control"
	// HeaderCredit carries the receiver's credit: the sender may send the
	// parts whose sequence number is lower than this decimal value.
	HeaderCredit = "Httpbus-Credit"
	// HeaderCreditBytes carries the receiver's credit in bytes, next to
	// HeaderCredit (WIRE.md §7, flow control): the sender may start a part
	// while the body bytes of the parts it sent in this direction (from
	// part 0) are fewer than this decimal value. A receiver that counts
	// parts only omits it; httpbus grants DefaultWindowBytes beyond what
	// it consumed.
	HeaderCreditBytes = "Httpbus-Credit-Bytes"
)

// MethodNotify is the method of a notification: a request published to a
// topic, delivered once to each subscribing service, never answered.
const MethodNotify = "NOTIFY"

// Message is one broker message as the core sees it.
//
// Ownership: a Message passed to a Transport method is owned by the callee
// only until the method returns, except Body, which the callee may keep but
// never modifies. A Message returned by a Transport belongs to the caller.
type Message struct {
	// Body is the message payload: a frame (ContentType MediaType) or, for
	// a message from a producer that knows nothing of httpbus, any bytes.
	Body []byte
	// ContentType is the broker-level content type; MediaType for frames.
	ContentType string
	// Header holds broker headers, canonicalised (http.CanonicalHeaderKey).
	// On a received message backends fill it with the broker headers; the
	// Server maps them onto the request of a foreign (non-frame) message.
	// On a message to send, backends write each entry as a broker header
	// (the stream headers HeaderReplyTo, HeaderStream, HeaderSeq, HeaderEnd,
	// HeaderControl, HeaderCredit and HeaderError among them). A received
	// frame must carry at least every "Httpbus-" header that was sent.
	Header http.Header
	// Deadline is the caller's absolute deadline; zero means none.
	Deadline time.Time
}

// Delivery is a message received by a Listener: a request (Topic empty) or
// a notification (Topic set).
type Delivery struct {
	Message
	// Service is the service the request was addressed to.
	Service string
	// Topic is the notification's topic; empty for a request.
	Topic string
	// RemoteAddr is the sender's address where the backend knows it (tcp),
	// else a reply address or empty. It becomes http.Request.RemoteAddr.
	RemoteAddr string
	// Redelivered reports that the broker delivered this message before.
	Redelivered bool

	// Request and ResponseWriter are set by backends that speak HTTP
	// natively (tcp): the Server then runs the handler on them directly, with
	// no frame in between, and Reply is called with a nil response.
	Request        *http.Request
	ResponseWriter http.ResponseWriter

	// Token is the backend's own bookkeeping (reply address, delivery tag).
	Token any
}

// Disposition says how a Listener settles a delivery after replying.
type Disposition int

const (
	// Ack acknowledges the delivery: the broker forgets it.
	Ack Disposition = iota
	// Reject refuses it without requeue: the broker drops it or moves it to
	// a dead-letter destination where one is configured.
	Reject
	// Requeue returns it to the broker for another delivery (used for
	// deliveries taken but not started when the server shuts down).
	Requeue
	// Hold sends the response (a stream's first message) and leaves the
	// delivery unsettled: the Server sends the rest of the stream with
	// Streamer.Send and settles the delivery with a later Reply whose
	// response is nil. A second Reply with Hold sends without settling
	// again.
	Hold
)

// Listener is the server side of a transport: what a Server needs to serve
// one service. It receives notifications but does not send them: a program
// publishes through a Conn (Conn.Publish, or a NOTIFY request through
// RoundTripper).
//
// All methods are safe for concurrent use. After Close, Receive returns
// ErrClosed and the other methods return errors matching ErrClosed.
type Listener interface {
	// Receive blocks until the next request or notification arrives, ctx is
	// done (it returns ctx's error), or the listener is closed or drained
	// (ErrClosed).
	Receive(ctx context.Context) (*Delivery, error)

	// Reply sends resp to d's reply address, if d has one and resp is not
	// nil, and then settles d as disp. The response is sent before the
	// delivery is acknowledged: a request is never acked unanswered.
	Reply(ctx context.Context, d *Delivery, resp *Message, disp Disposition) error

	// Close stops intake and releases the listener. Deliveries taken but not
	// settled return to the broker where it can redeliver them.
	Close() error
}

// Conn is the client side of a transport.
//
// All methods are safe for concurrent use. After Close they return errors
// matching ErrClosed.
type Conn interface {
	// Call sends req to service and waits for the response, until ctx is
	// done. Errors match ErrNoResponders, ErrTimeout, ErrTooLarge,
	// ErrUnavailable or ErrClosed.
	Call(ctx context.Context, service string, req *Message) (*Message, error)

	// Publish sends a notification to topic without waiting for handlers.
	Publish(ctx context.Context, topic string, m *Message) error

	// Close releases the connection.
	Close() error
}

// Optional interfaces, discovered by type assertion (as database/sql/driver
// does).

// Drainer is implemented by a Listener that can stop intake while it still
// replies: after Drain returns, Receive returns the deliveries already taken
// from the broker and then ErrClosed. Server.Shutdown uses it.
type Drainer interface {
	Drain() error
}

// Pusher is implemented by a Listener that already runs a goroutine per
// request (tcp: net/http's connection goroutine). The Server calls Push once,
// before its first Receive, with the function that serves one delivery; the
// listener then calls it on its own goroutine instead of handing the
// delivery to Receive, which saves a handoff and a goroutine per request.
// serve blocks while the Server's in-flight bound is reached, and returns
// once the delivery is answered and settled. Receive still reports the end
// of the listener (ErrClosed).
type Pusher interface {
	Push(serve func(*Delivery))
}

// Prefetcher is implemented by a Listener whose broker pushes up to a
// prefetch count of unacknowledged messages to each consumer (amqp: basic.qos;
// stomp: activemq.prefetchSize and prefetch-count). Server.Serve calls
// SetPrefetch once, before its first Receive (and before Push), with its
// in-flight bound (Server.MaxInFlight, or DefaultMaxInFlight), so that a
// busy instance does not hoard requests an idle one could serve. A prefetch
// set explicitly (in the backend's Config or the URL) wins: the listener
// then ignores the call. n is a message count, at least 1. The listener
// logs a failure to apply it and keeps its previous prefetch.
type Prefetcher interface {
	SetPrefetch(n int)
}

// SizeLimiter is implemented by a Listener or Conn whose broker caps the
// size of one message. The core checks frames against it before sending
// and answers 413 instead.
type SizeLimiter interface {
	// MaxMessageBytes returns the largest message body the broker takes, in
	// bytes; 0 means no limit.
	MaxMessageBytes() int64
}

// PartSizer is implemented by a Streamer whose broker moves streams
// faster in parts of another size than LargePartBytes once the receiver
// grants credit in bytes (WIRE.md §7). The core cuts parts of at most
// StreamPartBytes (and the SizeLimiter's bound) then.
type PartSizer interface {
	// StreamPartBytes returns the largest part body to cut under credit in
	// bytes, in bytes; at least 1024.
	StreamPartBytes() int
}

// SendCopier is implemented by a Streamer whose Send is done with
// Message.Body once it returns: the broker client has copied the bytes or
// written them out. Message's ownership rule lets a callee keep Body; a
// SendCopier promises it does not, so the core cuts a stream's parts into
// one buffer that it reuses from part to part instead of allocating one
// per part (a 512 KiB allocation each, which sets the garbage collector's
// pace on a stream).
type SendCopier interface {
	// SendCopiesBody reports whether every Send is done with Message.Body
	// when it returns.
	SendCopiesBody() bool
}

// State is a connection's health, for health checks (StateReporter).
type State int

const (
	// StateConnected: the connection to the broker is up; calls and
	// deliveries flow.
	StateConnected State = iota
	// StateReconnecting: the connection was lost and the backend is
	// reconnecting with backoff; new calls wait (up to their deadline) and
	// calls in flight fail with ErrUnavailable.
	StateReconnecting
	// StateClosed: Close was called; every method returns ErrClosed.
	StateClosed
)

// String returns "connected", "reconnecting", "closed" or "unknown", for
// health-check output and logs.
func (s State) String() string {
	switch s {
	case StateConnected:
		return "connected"
	case StateReconnecting:
		return "reconnecting"
	case StateClosed:
		return "closed"
	}
	return "unknown"
}

// Streamer is implemented by a Conn and a Listener whose backend carries
// streams (binding version 2, WIRE.md §7): messages larger than one broker
// message, flushed responses, request bodies sent as they are read, credit
// and cancellation. The core owns the protocol (sequence, credit, cancel,
// deadline); a backend only gives each endpoint an inbox and sends to an
// address.
//
// All methods are safe for concurrent use. After Close they return errors
// matching ErrClosed.
type Streamer interface {
	// Inbox returns the address of this endpoint's inbox, opening it on
	// first use. Any client of the same broker can Send to the address; a
	// message sent there reaches this endpoint only (never a queue group or
	// competing consumer). The address stays valid until Close or a lost
	// connection (after a reconnect Inbox returns a new one).
	Inbox(ctx context.Context) (string, error)

	// ReceiveInbox blocks until a message arrives at the inbox, ctx ends
	// (ctx's error) or the endpoint is closed (ErrClosed). Messages sent by
	// one endpoint to one inbox arrive in the order they were sent. The
	// returned Message has Header filled (canonical keys) and belongs to the
	// caller.
	ReceiveInbox(ctx context.Context) (*Message, error)

	// Send sends m to addr, an inbox address (from a peer's HeaderReplyTo),
	// with m.Header as broker headers, and returns once the broker has it
	// (or the client library has buffered it). It does not wait for an
	// answer. Errors: *TooLargeError (nothing sent), ErrUnavailable,
	// ErrClosed. A send to an inbox that no longer exists is not an error
	// where the broker does not tell.
	Send(ctx context.Context, addr string, m *Message) error
}

// StateReporter is implemented by a Listener or Conn that reconnects.
type StateReporter interface {
	State() State
}
