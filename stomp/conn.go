package stomp

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	stompgo "github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"

	"github.com/httpbus/httpbus/transport"
)

// Conn is the client side: it sends requests to /queue/<service> and
// receives their responses on a temporary queue of its connection. It
// implements transport.Conn, transport.SizeLimiter and
// transport.StateReporter.
type Conn struct {
	s       *session
	in      *inbox
	replyTo string // /temp-queue/httpbus-<random>, the same on every connection
}

// callResult is what a call waiting in a link's table (link.calls) gets:
// the response, or why there is none.
type callResult struct {
	m   *transport.Message
	err error
}

// NewConn returns the client side over conn, which the caller owns: Close
// leaves it open. With cfg.Redial set, a lost connection is replaced by a
// dialled one (which Close disconnects). Dial opens one from a URL.
func NewConn(ctx context.Context, conn *stompgo.Conn, cfg Config) (*Conn, error) {
	return newConn(ctx, conn, false, cfg)
}

func newConn(ctx context.Context, conn *stompgo.Conn, owned bool, cfg Config) (*Conn, error) {
	cfg = cfg.withDefaults()
	c := &Conn{replyTo: "/temp-queue/httpbus-" + newID()[:16]}
	c.s = newSession(cfg, "client", c)
	c.in = newInbox(c.s)
	if err := c.s.start(ctx, conn, owned); err != nil {
		return nil, fmt.Errorf("transport/stomp: client: %w", err)
	}
	return c, nil
}

// setup subscribes to the reply queue. ActiveMQ needs an explicit
// SUBSCRIBE to /temp-queue/NAME; RabbitMQ subscribes the session itself on
// the first SEND naming it in reply-to and rejects an explicit SUBSCRIBE
// (closing the connection), so go-stomp only registers it locally (the
// reply-to subscribe option).
func (c *Conn) setup(ctx context.Context, k *link) error {
	// Correlation ids: the link's number, then the call's (transport.Calls),
	// unique on this Conn's reply queue, which no other Conn shares.
	k.calls.Prefix = strconv.FormatUint(k.gen, 36) + "."
	var opts []func(*frame.Frame) error
	if k.dialect == DialectRabbitMQ {
		opts = append(opts, stompgo.SubscribeOpt.Header(stompgo.ReplyToHeader, c.replyTo))
	} else {
		k.mu.Lock()
		k.temps++
		k.mu.Unlock()
	}
	sub, err := k.c.Subscribe(c.replyTo, stompgo.AckAuto, opts...)
	if err != nil {
		return fmt.Errorf("transport/stomp: subscribe to %s: %w", c.replyTo, err)
	}
	c.s.pump(k, sub, k.dialect == DialectRabbitMQ, func(m *stompgo.Message) { c.dispatch(k, m) })
	return nil
}

// dispatch hands a reply that arrived on k to its waiting call.
func (c *Conn) dispatch(k *link, m *stompgo.Message) {
	id := m.Header.Get(hdrCorrelationID)
	r := callResult{m: &transport.Message{Body: m.Body, ContentType: m.ContentType, Header: httpbusHeader(m.Header)}}
	if !k.calls.Answer(id, r) {
		c.s.log.Debug("transport/stomp: dropped a reply with an unknown correlation-id (its caller gave up)", "correlation_id", id)
	}
}

// lost fails the calls waiting on a lost connection: their reply queue is
// gone with it.
func (c *Conn) lost(k *link, err error) {
	k.calls.AnswerAll(callResult{err: fmt.Errorf("transport/stomp: connection lost while waiting for the response (the request may have been served): %w: %w", transport.ErrUnavailable, err)})
}

func (c *Conn) release(*link) {}

// Call implements transport.Conn. It sends req to QueuePrefix+service
// (RabbitMQ, default prefix: /amq/queue/<service>, see the package doc) with
// content-type, content-length, correlation-id, reply-to, Httpbus-Version
// and, when the request has a deadline (req.Deadline, else ctx's),
// Httpbus-Deadline plus expires (ActiveMQ) or expiration (RabbitMQ), and
// waits for the response until ctx ends. STOMP cannot tell that no server
// listens (the request waits in the queue), so that case ends as
// transport.ErrTimeout at the deadline.
func (c *Conn) Call(ctx context.Context, service string, req *transport.Message) (*transport.Message, error) {
	if service == "" {
		return nil, errors.New("transport/stomp: call with no service name")
	}
	if err := checkSize(req, c.MaxMessageBytes()); err != nil {
		return nil, err
	}
	k, err := c.s.get(ctx)
	if err != nil {
		return nil, err
	}
	dl := req.Deadline
	if cd, ok := ctx.Deadline(); ok && (dl.IsZero() || cd.Before(dl)) {
		dl = cd
	}
	id, answer := k.calls.Start()
	defer k.calls.Done(id)
	if k.isDead() {
		// Lost between get and registering: lost() may have run already.
		return nil, fmt.Errorf("transport/stomp: send to %s%s: connection lost: %w: %w", c.s.cfg.QueuePrefix, service, transport.ErrUnavailable, k.err)
	}
	ct := req.ContentType
	if ct == "" {
		ct = transport.MediaType
	}
	sh := sendHeader{h: req.Header}
	sh.add(hdrCorrelationID, id)
	sh.add(hdrReplyTo, c.replyTo)
	sh.add(hdrVersion, transport.Version)
	sh.deadline(k.dialect, dl)
	dest := callDest(c.s.cfg, k.dialect, service)
	if err := k.c.Send(dest, ct, req.Body, sh.apply); err != nil {
		if isConnError(err) {
			c.s.fail(k, err)
		}
		return nil, fmt.Errorf("transport/stomp: send to %s: %w: %w", dest, transport.ErrUnavailable, err)
	}
	select {
	case r := <-answer:
		return r.m, r.err
	case <-ctx.Done():
		return nil, transport.ContextError(ctx)
	}
}

// Publish implements transport.Conn: it sends m to the topic's destination
// (/topic/<topic> on RabbitMQ, /topic/VirtualTopic.<topic> on ActiveMQ)
// with a receipt, and returns once the broker confirmed it.
func (c *Conn) Publish(ctx context.Context, topic string, m *transport.Message) error {
	return publish(ctx, c.s, topic, m, c.MaxMessageBytes())
}

// Close implements transport.Conn. Calls waiting for a response and
// ReceiveInbox fail with transport.ErrClosed.
func (c *Conn) Close() error {
	c.in.close()
	closed := callResult{err: fmt.Errorf("transport/stomp: client: %w", transport.ErrClosed)}
	k := c.s.current()
	if k != nil {
		k.calls.AnswerAll(closed)
	}
	c.s.close()
	if k != nil {
		k.calls.AnswerAll(closed) // calls that registered while it closed
	}
	return nil
}

// MaxMessageBytes implements transport.SizeLimiter.
func (c *Conn) MaxMessageBytes() int64 { return maxBytes(c.s) }

// State implements transport.StateReporter.
func (c *Conn) State() transport.State { return c.s.State() }
