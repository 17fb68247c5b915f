package amqp

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/httpbus/httpbus/transport"
)

// Conn is the client side: it calls services and publishes notifications
// over one AMQP connection. All callers share one channel whose consumer
// on the direct reply-to pseudo-queue receives every response; responses
// are matched to callers by correlation id. It implements transport.Conn,
// transport.Streamer (see Inbox), transport.SizeLimiter and
// transport.StateReporter, and is safe for concurrent use.
type Conn struct {
	cfg Config
	sup *supervisor[*clientGen]
	// calls are the calls waiting for a reply, by correlation id:
	// "<random>-<counter>" (the prefix is random per Conn), on whichever
	// connection they were sent; a caller stops waiting when its
	// connection is lost (clientGen.stop).
	calls transport.Calls[result]

	discarded atomic.Uint64
	closeOnce sync.Once

	inboxc    chan *transport.Message // the inbox's messages (Streamer), across generations
	inboxLost chan error              // the loss of an open inbox, for ReceiveInbox
}

// Dial connects to the broker at rawURL (amqp:// or amqps://, see the
// package doc for its options; cfg's fields are used where the URL has no
// option) and returns a Conn that reconnects by itself. The first
// connection is made before Dial returns, within ctx.
func Dial(ctx context.Context, rawURL string, cfg Config) (*Conn, error) {
	dialURL, ucfg, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	cfg = merge(cfg, ucfg, rawURL)
	return newConn(ctx, nil, dialURL, cfg)
}

// NewConn returns a Conn over conn, which the caller owns and closes (after
// closing the Conn). The Conn opens its own channels on conn and reopens
// them if they close; if conn itself closes, the Conn does not reconnect:
// calls fail with transport.ErrUnavailable.
func NewConn(ctx context.Context, conn *amqp091.Connection, cfg Config) (*Conn, error) {
	if conn == nil {
		return nil, errors.New("transport/amqp: NewConn with a nil connection")
	}
	return newConn(ctx, conn, "", cfg)
}

func newConn(ctx context.Context, conn *amqp091.Connection, dialURL string, cfg Config) (*Conn, error) {
	c := &Conn{cfg: cfg, inboxc: make(chan *transport.Message), inboxLost: make(chan error, 1)}
	c.calls.Prefix = randomID(6) + "-"
	name := cfg.ConnectionName
	if name == "" {
		name = "httpbus client"
	}
	var d func(context.Context) (*amqp091.Connection, error)
	if conn == nil {
		d = func(ctx context.Context) (*amqp091.Connection, error) { return dial(ctx, dialURL, &c.cfg, name) }
	}
	c.sup = newSupervisor(&c.cfg, "client "+name, d, c.setup)
	if err := c.sup.start(ctx, conn); err != nil {
		return nil, err
	}
	return c, nil
}

// clientGen is the state of one connection: the call channel (requests,
// direct reply-to consumer, returns) and the confirm-mode notification
// channel.
type clientGen struct {
	c     *Conn
	calls *amqp091.Channel
	notes *amqp091.Channel
	inbox *inbox // on calls, opened on first use

	mu      sync.Mutex
	err     error         // set at teardown
	blocked chan struct{} // non-nil while the broker blocks publishers; closed when it unblocks

	isBlocked atomic.Bool // blocked != nil, read without mu on every call

	lostc <-chan error
	stop  chan struct{} // closed at teardown: callers stop waiting
	wg    sync.WaitGroup
}

type result struct {
	m   *transport.Message
	err error
}

func (g *clientGen) lost() <-chan error { return g.lostc }

func (c *Conn) setup(ctx context.Context, conn *amqp091.Connection) (g *clientGen, err error) {
	// The cleanup holds its own reference: an error return sets g to nil.
	gen := &clientGen{c: c, stop: make(chan struct{})}
	g = gen
	defer func() {
		if err != nil {
			gen.closeChannels()
		}
	}()
	if g.calls, err = conn.Channel(); err != nil {
		return nil, fmt.Errorf("transport/amqp: open channel: %w: %w", transport.ErrUnavailable, err)
	}
	returns := g.calls.NotifyReturn(make(chan amqp091.Return, 16))
	replies, err := g.calls.Consume(DirectReplyTo, "", true, false, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("transport/amqp: consume %s: %w: %w", DirectReplyTo, transport.ErrUnavailable, err)
	}
	if g.notes, err = conn.Channel(); err != nil {
		return nil, fmt.Errorf("transport/amqp: open channel: %w: %w", transport.ErrUnavailable, err)
	}
	if err = g.notes.Confirm(false); err != nil {
		return nil, fmt.Errorf("transport/amqp: confirm mode: %w: %w", transport.ErrUnavailable, err)
	}
	if err = declareExchange(g.notes, &c.cfg); err != nil {
		return nil, err
	}
	g.inbox = newInbox(g.calls, &c.cfg, g.stop, c.inboxc, c.inboxLost)
	g.lostc, _ = watch(g.stop, conn, g.calls, g.notes)
	blockings := conn.NotifyBlocked(make(chan amqp091.Blocking, 4))
	g.wg.Add(1)
	go g.dispatch(replies, returns, blockings)
	return g, nil
}

func declareExchange(ch *amqp091.Channel, cfg *Config) error {
	// Always durable, so that services with and without Transient share it.
	if err := ch.ExchangeDeclare(cfg.exchange(), "topic", true, false, false, false, nil); err != nil {
		return fmt.Errorf("transport/amqp: declare topic exchange %q: %w", cfg.exchange(), err)
	}
	return nil
}

func (g *clientGen) closeChannels() {
	if g.calls != nil {
		g.calls.Close()
	}
	if g.notes != nil {
		g.notes.Close()
	}
}

func (g *clientGen) teardown(cause error) {
	g.mu.Lock()
	g.err = cause
	g.mu.Unlock()
	g.inbox.kill()
	close(g.stop)
	g.closeChannels()
	g.wg.Wait()
	g.inbox.wait()
}

// dispatch hands each reply to its caller and each returned request's
// caller ErrNoResponders. Replies nobody waits for are counted and dropped.
func (g *clientGen) dispatch(replies <-chan amqp091.Delivery, returns <-chan amqp091.Return, blockings <-chan amqp091.Blocking) {
	defer g.wg.Done()
	defer g.setBlocked(false, "")
	for replies != nil || returns != nil {
		select {
		case d, ok := <-replies:
			if !ok {
				replies = nil
				continue
			}
			// One allocation for the message and room for the values
			// of its header (a reply has one or two entries).
			x := &struct {
				transport.Message
				vals [2]string
			}{Message: transport.Message{Body: d.Body, ContentType: d.ContentType}}
			x.Header = tableHeader(d.Headers, x.vals[:0])
			m := &x.Message
			if !g.c.calls.Answer(d.CorrelationId, result{m: m}) {
				n := g.c.discarded.Add(1)
				g.c.cfg.logger().Debug("transport/amqp: discarded a reply nobody waits for (late or unknown correlation id)", "correlation_id", d.CorrelationId, "discarded", n)
			}
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			err := fmt.Errorf("transport/amqp: no queue %q bound for the request (returned %d %s): %w", r.RoutingKey, r.ReplyCode, r.ReplyText, transport.ErrNoResponders)
			g.c.calls.Answer(r.CorrelationId, result{err: err})
		case b, ok := <-blockings:
			if !ok {
				blockings = nil
				continue
			}
			g.setBlocked(b.Active, b.Reason)
		case <-g.stop:
			return
		}
	}
}

// setBlocked records connection.blocked and connection.unblocked: while
// the broker blocks publishers (a memory or disk alarm), a publish would
// wait in TCP pushback where no context can interrupt it, so calls wait
// for the unblock, or their deadline, before publishing.
func (g *clientGen) setBlocked(active bool, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case active && g.blocked == nil:
		g.blocked = make(chan struct{})
		g.isBlocked.Store(true)
		g.c.cfg.logger().Warn("transport/amqp: the broker blocks publishing", "reason", reason)
	case !active && g.blocked != nil:
		close(g.blocked)
		g.blocked = nil
		g.isBlocked.Store(false)
	}
}

// waitUnblocked waits while the broker blocks publishers.
func (g *clientGen) waitUnblocked(ctx context.Context) error {
	if !g.isBlocked.Load() {
		return nil
	}
	g.mu.Lock()
	b := g.blocked
	g.mu.Unlock()
	if b == nil {
		return nil
	}
	select {
	case <-b:
		return nil
	case <-g.stop:
		return fmt.Errorf("transport/amqp: connection lost while the broker blocked publishing: %w", transport.ErrUnavailable)
	case <-ctx.Done():
		return fmt.Errorf("transport/amqp: the broker blocks publishing (resource alarm): %w", transport.ContextError(ctx))
	}
}

// failed returns why the generation ended, nil while it serves.
func (g *clientGen) failed() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

func (c *Conn) checkSize(m *transport.Message) error {
	if max := c.cfg.maxMessageBytes(); max > 0 && int64(len(m.Body)) > max {
		return &transport.TooLargeError{What: "message", Limit: max, Size: int64(len(m.Body))}
	}
	return nil
}

// Call implements transport.Conn. It publishes req to the service's queue
// on the default exchange (mandatory, reply_to amq.rabbitmq.reply-to, a
// fresh correlation id, expiration and Httpbus-Deadline from req.Deadline,
// each entry of req.Header in the headers table) and waits for the first
// reply, whose Header holds the reply's headers table (canonical keys).
// While the connection is down, Call waits for it until ctx ends. Errors: transport.ErrNoResponders when no queue is bound
// (the broker returned the request), ErrTimeout when ctx's deadline passes,
// ErrUnavailable when the connection is lost with the request in flight,
// ErrTooLarge, ErrClosed.
func (c *Conn) Call(ctx context.Context, service string, req *transport.Message) (*transport.Message, error) {
	if c.sup.ctx.Err() != nil {
		return nil, transport.ErrClosed
	}
	queue := c.cfg.queue(service)
	if err := checkName("queue", queue); err != nil {
		return nil, err
	}
	if err := c.checkSize(req); err != nil {
		return nil, err
	}
	deadline := req.Deadline
	if dl, ok := ctx.Deadline(); ok && (deadline.IsZero() || dl.Before(deadline)) {
		deadline = dl
	}
	if !deadline.IsZero() && !time.Now().Before(deadline) {
		return nil, transport.Timeout(errors.New("deadline passed before the request was sent"))
	}
	g, err := c.sup.current(ctx)
	if err != nil {
		return nil, err
	}
	if err := g.waitUnblocked(ctx); err != nil {
		return nil, err
	}
	if err := g.failed(); err != nil {
		return nil, err
	}
	id, rc := c.calls.Start()
	defer c.calls.Done(id)
	headers, pooled := messageHeaders(req.Header, deadline)
	pub := amqp091.Publishing{
		ContentType:   req.ContentType,
		CorrelationId: id,
		ReplyTo:       DirectReplyTo,
		Headers:       headers,
		DeliveryMode:  amqp091.Transient,
		Body:          req.Body,
	}
	if !deadline.IsZero() {
		pub.Expiration = expiration(deadline)
	}
	err = g.calls.PublishWithContext(ctx, "", queue, true, false, pub)
	releaseHeaders(headers, pooled)
	if err != nil {
		if ctx.Err() != nil {
			return nil, transport.ContextError(ctx)
		}
		return nil, fmt.Errorf("transport/amqp: publish request to queue %q: %w: %w", queue, transport.ErrUnavailable, err)
	}
	select {
	case r := <-rc:
		return r.m, r.err
	case <-g.stop:
		select {
		case r := <-rc:
			return r.m, r.err
		default:
		}
		if c.sup.ctx.Err() != nil {
			return nil, transport.ErrClosed
		}
		return nil, fmt.Errorf("transport/amqp: request to %q in flight when the connection was lost: %w", queue, transport.ErrUnavailable)
	case <-ctx.Done():
		return nil, transport.ContextError(ctx)
	}
}

// Publish implements transport.Conn: it publishes m (m.Header in the
// headers table) to the notification exchange with routing key topic and
// waits for the broker's publisher
// confirm. The notification carries no deadline (m.Deadline bounds only
// the publish). While the connection is down, Publish waits for it until ctx
// ends.
func (c *Conn) Publish(ctx context.Context, topic string, m *transport.Message) error {
	if c.sup.ctx.Err() != nil {
		return transport.ErrClosed
	}
	if err := c.checkSize(m); err != nil {
		return err
	}
	g, err := c.sup.current(ctx)
	if err != nil {
		return err
	}
	if err := g.waitUnblocked(ctx); err != nil {
		return err
	}
	return publishNotification(ctx, g.notes, &c.cfg, topic, m)
}

func publishNotification(ctx context.Context, ch *amqp091.Channel, cfg *Config, topic string, m *transport.Message) error {
	if topic == "" || len(topic) > 255 {
		return fmt.Errorf("transport/amqp: bad topic %.40q: want 1 to 255 bytes", topic)
	}
	mode := amqp091.Persistent
	if cfg.Transient {
		mode = amqp091.Transient
	}
	headers, pooled := messageHeaders(m.Header, time.Time{})
	pub := amqp091.Publishing{
		ContentType:  m.ContentType,
		Headers:      headers,
		DeliveryMode: mode,
		Timestamp:    time.Now(),
		Body:         m.Body,
	}
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, cfg.exchange(), topic, false, false, pub)
	releaseHeaders(headers, pooled)
	if err != nil {
		if ctx.Err() != nil {
			return transport.ContextError(ctx)
		}
		return fmt.Errorf("transport/amqp: publish notification %q: %w: %w", topic, transport.ErrUnavailable, err)
	}
	ok, err := dc.WaitContext(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("transport/amqp: notification %q: waiting for the publisher confirm: %w", topic, transport.ContextError(ctx))
		}
		return fmt.Errorf("transport/amqp: notification %q: %w: %w", topic, transport.ErrUnavailable, err)
	}
	if !ok {
		return fmt.Errorf("transport/amqp: notification %q: the broker nacked it: %w", topic, transport.ErrUnavailable)
	}
	return nil
}

// MaxMessageBytes implements transport.SizeLimiter.
func (c *Conn) MaxMessageBytes() int64 { return c.cfg.maxMessageBytes() }

// streamPartBytes is the part size amqp asks for under credit in bytes:
// transport.DefaultPartBytes, not transport.LargePartBytes. Unlike the other
// brokers, RabbitMQ over AMQP moved 64 MiB streams 10–15% slower in parts of
// 512 KiB than of 128 KiB (issue 13: httpbus bench -stream both, 3
// alternating pairs); AMQP splits a message into frames of frame_max (128
// KiB) anyway.
const streamPartBytes = transport.DefaultPartBytes

// StreamPartBytes implements transport.PartSizer.
func (c *Conn) StreamPartBytes() int { return streamPartBytes }

// State implements transport.StateReporter: connected, reconnecting, or
// closed (after Close, or when a caller-owned connection closed).
func (c *Conn) State() transport.State { return c.sup.State() }

// DiscardedReplies returns how many replies arrived that no caller was
// waiting for: late (the caller's deadline had passed), duplicate (a
// redelivered request answered twice) or with an unknown correlation id.
func (c *Conn) DiscardedReplies() uint64 { return c.discarded.Load() }

// Close implements transport.Conn: callers still waiting get
// transport.ErrClosed; the channels are closed, and the connection too when
// the Conn dialled it.
func (c *Conn) Close() error {
	c.closeOnce.Do(c.sup.close)
	return nil
}

// merge overlays the options given in a URL onto cfg: fields the URL sets
// explicitly win, the rest keep cfg's values.
func merge(cfg, fromURL Config, rawURL string) Config {
	q := queryOf(rawURL)
	if q.Has("queue_prefix") {
		cfg.QueuePrefix = fromURL.QueuePrefix
	}
	if q.Has("durable") {
		cfg.Transient = fromURL.Transient
	}
	if q.Has("prefetch") {
		cfg.Prefetch = fromURL.Prefetch
	}
	if q.Has("exchange") {
		cfg.Exchange = fromURL.Exchange
	}
	if q.Has("dead_letter_exchange") {
		cfg.DeadLetterExchange = fromURL.DeadLetterExchange
	}
	if q.Has("max_message_size") {
		cfg.MaxMessageBytes = fromURL.MaxMessageBytes
	}
	if q.Has("connection_name") {
		cfg.ConnectionName = fromURL.ConnectionName
	}
	if q.Has("reconnect_min") {
		cfg.ReconnectMin = fromURL.ReconnectMin
	}
	if q.Has("reconnect_max") {
		cfg.ReconnectMax = fromURL.ReconnectMax
	}
	if q.Has("setup_timeout") {
		cfg.SetupTimeout = fromURL.SetupTimeout
	}
	return cfg
}
