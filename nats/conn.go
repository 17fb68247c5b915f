package nats

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	natsgo "github.com/nats-io/nats.go"

	"github.com/httpbus/httpbus/transport"
)

// Conn is the client side over a NATS connection: Call is NATS
// request/reply on the connection's shared ("muxed") response inbox. It
// implements transport.Conn, transport.Streamer, transport.SizeLimiter and
// transport.StateReporter.
type Conn struct {
	nc     *natsgo.Conn
	own    bool
	cfg    Config
	closed atomic.Bool
	inbox  inbox
	limit  *payloadLimit
}

// NewConn returns a client side over nc, which the caller owns (Close
// leaves it open). It does not block: ctx is there so that every backend
// opens with one shape. Errors: a nil nc, an invalid Config.Prefix.
func NewConn(ctx context.Context, nc *natsgo.Conn, cfg Config) (*Conn, error) {
	return newConn(nc, cfg)
}

func newConn(nc *natsgo.Conn, cfg Config) (*Conn, error) {
	if nc == nil {
		return nil, errors.New("transport/nats: nil connection")
	}
	if err := checkSubject("prefix", cfg.prefix()); err != nil {
		return nil, err
	}
	return &Conn{nc: nc, cfg: cfg, inbox: inbox{nc: nc, cfg: cfg, log: cfg.logger()}, limit: newPayloadLimit(nc)}, nil
}

// Call implements transport.Conn. It sends req to the service's subject
// with each req.Header entry and Content-Type, Httpbus-Version and
// Httpbus-Deadline (from req.Deadline, else ctx's deadline) as NATS
// headers, and waits for the reply until ctx ends. The reply's NATS
// headers are in its Header (canonical keys, Content-Type included).
// Errors: transport.ErrNoResponders at once when no server subscribes
// (NATS no-responders status), transport.ErrTimeout when ctx's deadline
// passes, ctx's error when it is cancelled, *transport.TooLargeError for a
// message over max_payload (nothing is sent), transport.ErrClosed
// after Close, transport.ErrUnavailable for other connection failures.
func (c *Conn) Call(ctx context.Context, service string, req *transport.Message) (*transport.Message, error) {
	if c.closed.Load() {
		return nil, fmt.Errorf("transport/nats: call: %w", transport.ErrClosed)
	}
	if err := checkService(service); err != nil {
		return nil, fmt.Errorf("%w (%w)", err, transport.ErrNoResponders)
	}
	m := *req
	if m.Deadline.IsZero() {
		if dl, ok := ctx.Deadline(); ok {
			m.Deadline = dl
		}
	}
	out := newOutgoing(ServiceSubject(c.cfg.Prefix, service), &m)
	if err := c.limit.check(&out.msg); err != nil {
		out.release()
		return nil, err
	}
	resp, err := c.nc.RequestMsgWithContext(ctx, &out.msg)
	out.release()
	if err != nil {
		return nil, c.callError(ctx, service, err)
	}
	r := &transport.Message{Body: resp.Data, Header: receivedHeader(resp.Header)}
	r.ContentType = r.Header.Get("Content-Type")
	return r, nil
}

func (c *Conn) callError(ctx context.Context, service string, err error) error {
	switch {
	case errors.Is(err, natsgo.ErrNoResponders):
		return fmt.Errorf("transport/nats: service %q: %w: %w", service, transport.ErrNoResponders, err)
	case ctx.Err() != nil:
		return transport.ContextError(ctx)
	case errors.Is(err, natsgo.ErrTimeout):
		return transport.Timeout(err)
	case c.closed.Load():
		return fmt.Errorf("transport/nats: call: %w: %w", transport.ErrClosed, err)
	default:
		return sendError(fmt.Sprintf("request to service %q", service), err)
	}
}

// Publish implements transport.Conn: it publishes m to topic's subject,
// <prefix>.notify.<topic>, without waiting for subscribers.
func (c *Conn) Publish(ctx context.Context, topic string, m *transport.Message) error {
	if c.closed.Load() {
		return fmt.Errorf("transport/nats: publish: %w", transport.ErrClosed)
	}
	return publishNotification(ctx, c.limit, c.cfg, topic, m)
}

// Inbox implements transport.Streamer: the subject of the Conn's stream
// inbox, subscribed on first use (see Listener.Inbox for the subject and
// its lifetime). Errors: transport.ErrClosed after Close, ctx's error,
// transport.ErrUnavailable when the subscription fails.
func (c *Conn) Inbox(ctx context.Context) (string, error) {
	if c.closed.Load() {
		return "", fmt.Errorf("transport/nats: inbox: %w", transport.ErrClosed)
	}
	return c.inbox.address(ctx)
}

// ReceiveInbox implements transport.Streamer: the next message sent to the
// Conn's inbox (opening it if Inbox was not called yet), with its NATS
// headers in Header (canonical keys, Content-Type included), ContentType
// and Deadline (from Httpbus-Deadline) set. Errors: ctx's error,
// transport.ErrClosed after Close.
func (c *Conn) ReceiveInbox(ctx context.Context) (*transport.Message, error) {
	if c.closed.Load() {
		return nil, fmt.Errorf("transport/nats: inbox: %w", transport.ErrClosed)
	}
	return c.inbox.receive(ctx)
}

// Send implements transport.Streamer: it publishes m to subject addr with
// m.Header, Content-Type and Httpbus-Version as NATS headers (see
// Listener.Send).
func (c *Conn) Send(ctx context.Context, addr string, m *transport.Message) error {
	if c.closed.Load() {
		return fmt.Errorf("transport/nats: send: %w", transport.ErrClosed)
	}
	return send(ctx, c.limit, addr, m)
}

// SendCopiesBody implements transport.SendCopier: nats.go's PublishMsg
// copies the payload into the connection's write buffer (or, while
// reconnecting, its pending buffer) before it returns.
func (c *Conn) SendCopiesBody() bool { return true }

// Close implements transport.Conn. It unsubscribes the stream inbox. A
// Conn opened from a URL closes its connection (flushing what was
// published); one from NewConn leaves it to the caller.
func (c *Conn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.inbox.close()
	if c.own {
		c.nc.Close()
	}
	return nil
}

// MaxMessageBytes implements transport.SizeLimiter: the server's
// max_payload minus HeaderRoom.
func (c *Conn) MaxMessageBytes() int64 { return c.limit.messageBytes() }

// State implements transport.StateReporter from the connection's status.
func (c *Conn) State() transport.State {
	if c.closed.Load() {
		return transport.StateClosed
	}
	return state(c.nc)
}

// NATSConn returns the underlying connection.
func (c *Conn) NATSConn() *natsgo.Conn { return c.nc }
