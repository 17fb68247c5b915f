package amqp

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/httpbus/httpbus/transport"
)

func init() {
	transport.Register(listenURL, dialURL, "amqp", "amqps")
}

func listenURL(ctx context.Context, u *url.URL, lc transport.ListenConfig) (transport.Listener, error) {
	return Listen(ctx, u.String(), lc, Config{})
}

func dialURL(ctx context.Context, u *url.URL) (transport.Conn, error) {
	return Dial(ctx, u.String(), Config{})
}

// Listener is the server side of one service: it consumes the service's
// request queue (and, when it subscribes to topics, its notification queue)
// with manual acknowledgements and the configured prefetch, and replies to
// each request's reply_to with its correlation id before acknowledging it.
// It implements transport.Listener, transport.Pusher (a transport.Server
// gets each delivery on a pool of workers, see Push), transport.Drainer,
// transport.Streamer (see Inbox), transport.SizeLimiter and
// transport.StateReporter, and is safe for concurrent use.
type Listener struct {
	cfg    Config
	lc     transport.ListenConfig
	queue  string
	nqueue string // notification queue; "" without topics
	sup    *supervisor[*listenerGen]

	in        chan *transport.Delivery
	inboxc    chan *transport.Message // the inbox's messages (Streamer), across generations
	inboxLost chan error              // the loss of an open inbox, for ReceiveInbox
	done      chan struct{}           // closed by Close
	closeOnce sync.Once
	pumps     sync.WaitGroup // pumps handing deliveries to Receive (not workers serving pushed ones)

	// push is the Server's serve function (transport.Pusher): once set,
	// the pumps serve deliveries themselves on a pool of workers.
	push atomic.Pointer[func(*transport.Delivery)]
	// prefetchN is the prefetch set by SetPrefetch (prefetch.go); 0: none.
	prefetchN atomic.Int32

	mu            sync.Mutex
	draining      bool
	live          int           // running pumps
	drained       chan struct{} // closed when draining and no pump is left
	drainedClosed bool
}

// Listen connects to the broker at rawURL (amqp:// or amqps://, see the
// package doc) and serves lc.Service, subscribed to lc.Topics, reconnecting
// by itself. The first connection and the topology are set up before
// Listen returns, within ctx.
func Listen(ctx context.Context, rawURL string, lc transport.ListenConfig, cfg Config) (*Listener, error) {
	dialURL, ucfg, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	cfg = merge(cfg, ucfg, rawURL)
	return newListener(ctx, nil, dialURL, lc, cfg)
}

// NewListener serves lc.Service over conn, which the caller owns and closes
// (after closing the Listener). The Listener opens its own channels on conn
// and reopens them if they close; if conn itself closes, it does not
// reconnect: Receive keeps waiting and State reports closed.
func NewListener(ctx context.Context, conn *amqp091.Connection, lc transport.ListenConfig, cfg Config) (*Listener, error) {
	if conn == nil {
		return nil, errors.New("transport/amqp: NewListener with a nil connection")
	}
	return newListener(ctx, conn, "", lc, cfg)
}

func newListener(ctx context.Context, conn *amqp091.Connection, dialURL string, lc transport.ListenConfig, cfg Config) (*Listener, error) {
	l := &Listener{
		cfg:       cfg,
		lc:        lc,
		queue:     cfg.queue(lc.Service),
		in:        make(chan *transport.Delivery),
		inboxc:    make(chan *transport.Message),
		inboxLost: make(chan error, 1),
		done:      make(chan struct{}),
		drained:   make(chan struct{}),
	}
	if lc.Service == "" {
		return nil, errors.New("transport/amqp: no service name (the URL's service parameter)")
	}
	if err := checkName("queue", l.queue); err != nil {
		return nil, err
	}
	if len(lc.Topics) > 0 {
		l.nqueue = l.queue + NotifyQueueSuffix
		if err := checkName("queue", l.nqueue); err != nil {
			return nil, err
		}
		for _, t := range lc.Topics {
			if t == "" || len(t) > 255 {
				return nil, fmt.Errorf("transport/amqp: bad topic %.40q: want 1 to 255 bytes", t)
			}
		}
	}
	name := cfg.ConnectionName
	if name == "" {
		name = "httpbus listener " + lc.Service
	}
	var d func(context.Context) (*amqp091.Connection, error)
	if conn == nil {
		d = func(ctx context.Context) (*amqp091.Connection, error) { return dial(ctx, dialURL, &l.cfg, name) }
	}
	l.sup = newSupervisor(&l.cfg, "listener "+lc.Service, d, l.setup)
	if err := l.sup.start(ctx, conn); err != nil {
		return nil, err
	}
	return l, nil
}

// listenerGen is the state of one connection: the consuming channel (which
// also carries replies and acknowledgements) and the confirm-mode channel
// for notifications.
type listenerGen struct {
	l     *Listener
	ch    *amqp091.Channel
	acks  *acker // settles the deliveries of ch
	inbox *inbox // on ch, opened on first use
	notes *amqp091.Channel
	tags  []string // consumer tags, guarded by l.mu
	lostc <-chan error
	stop  chan struct{}
	dead  atomic.Bool
}

func (g *listenerGen) lost() <-chan error { return g.lostc }

func (g *listenerGen) teardown(error) {
	g.dead.Store(true)
	g.inbox.kill()
	close(g.stop)
	if g.acks != nil {
		g.acks.stop()
	}
	g.closeChannels()
	g.inbox.wait()
}

func (g *listenerGen) closeChannels() {
	if g.ch != nil {
		g.ch.Close()
	}
	if g.notes != nil {
		g.notes.Close()
	}
}

// token is a delivery's bookkeeping.
type token struct {
	g       *listenerGen
	tag     uint64
	replyTo string
	corrID  string
}

func (l *Listener) queueArgs() amqp091.Table {
	if l.cfg.DeadLetterExchange == "" {
		return nil
	}
	return amqp091.Table{"x-dead-letter-exchange": l.cfg.DeadLetterExchange}
}

func (l *Listener) setup(ctx context.Context, conn *amqp091.Connection) (g *listenerGen, err error) {
	// The cleanup holds its own reference: an error return sets g to nil.
	gen := &listenerGen{l: l, stop: make(chan struct{})}
	g = gen
	defer func() {
		if err != nil {
			gen.dead.Store(true)
			close(gen.stop)
			if gen.acks != nil {
				gen.acks.stop()
			}
			gen.closeChannels()
		}
	}()
	durable := !l.cfg.Transient
	if g.ch, err = conn.Channel(); err != nil {
		return nil, fmt.Errorf("transport/amqp: open channel: %w: %w", transport.ErrUnavailable, err)
	}
	g.acks = newAcker(g.ch, l.cfg.logger())
	g.inbox = newInbox(g.ch, &l.cfg, g.stop, l.inboxc, l.inboxLost)
	g.inbox.taken = g.acks.skip
	if p := l.prefetch(); p > 0 {
		if err = g.ch.Qos(p, 0, false); err != nil {
			return nil, fmt.Errorf("transport/amqp: basic.qos %d: %w", p, err)
		}
	}
	if _, err = g.ch.QueueDeclare(l.queue, durable, false, false, false, l.queueArgs()); err != nil {
		return nil, fmt.Errorf("transport/amqp: declare queue %q (durable %t): %w", l.queue, durable, err)
	}
	if g.notes, err = conn.Channel(); err != nil {
		return nil, fmt.Errorf("transport/amqp: open channel: %w: %w", transport.ErrUnavailable, err)
	}
	if err = g.notes.Confirm(false); err != nil {
		return nil, fmt.Errorf("transport/amqp: confirm mode: %w: %w", transport.ErrUnavailable, err)
	}
	if err = declareExchange(g.notes, &l.cfg); err != nil {
		return nil, err
	}
	if l.nqueue != "" {
		if _, err = g.ch.QueueDeclare(l.nqueue, durable, false, false, false, l.queueArgs()); err != nil {
			return nil, fmt.Errorf("transport/amqp: declare queue %q (durable %t): %w", l.nqueue, durable, err)
		}
		for _, t := range l.lc.Topics {
			if err = g.ch.QueueBind(l.nqueue, t, l.cfg.exchange(), false, nil); err != nil {
				return nil, fmt.Errorf("transport/amqp: bind queue %q to topic %q of exchange %q: %w", l.nqueue, t, l.cfg.exchange(), err)
			}
		}
	}
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	var signal func(error)
	g.lostc, signal = watch(g.stop, conn, g.ch, g.notes)
	// A consumer the broker cancels (its queue was deleted) is a loss too:
	// the next generation declares the queue again. The inbox's consumer
	// is not: the next Inbox declares a new inbox.
	cancels := g.ch.NotifyCancel(make(chan string, 2))
	go func() {
		for {
			select {
			case tag, ok := <-cancels:
				if !ok {
					return
				}
				if strings.HasPrefix(tag, inboxTagPrefix) {
					continue
				}
				signal(fmt.Errorf("the broker cancelled consumer %s (queue deleted?)", tag))
				return
			case <-g.stop:
				return
			}
		}
	}()
	if err = l.consume(g, l.queue, false); err != nil {
		return nil, err
	}
	if l.nqueue != "" {
		if err = l.consume(g, l.nqueue, true); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// consume starts a consumer on queue and a pump that hands its deliveries
// to Receive; nothing when draining.
func (l *Listener) consume(g *listenerGen, queue string, notify bool) error {
	l.mu.Lock()
	dr := l.draining
	l.mu.Unlock()
	if dr {
		return nil
	}
	tag := "httpbus-" + randomID(8)
	deliveries, err := g.ch.Consume(queue, tag, false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("transport/amqp: consume queue %q: %w", queue, err)
	}
	l.mu.Lock()
	l.live++
	g.tags = append(g.tags, tag)
	dr = l.draining
	l.mu.Unlock()
	l.pumps.Add(1)
	go l.pump(g, deliveries, notify)
	if dr {
		g.ch.Cancel(tag, false)
	}
	return nil
}

func (l *Listener) pump(g *listenerGen, deliveries <-chan amqp091.Delivery, notify bool) {
	tracked := true
	defer func() {
		if tracked {
			l.pumps.Done()
		}
	}()
	defer l.exited()
	for {
		var d amqp091.Delivery
		var ok bool
		select {
		case d, ok = <-deliveries:
			if !ok {
				return
			}
		case <-g.stop:
			return // the channel is gone; the broker requeues the delivery
		case <-l.done:
			return
		}
		td := l.delivery(g, &d, notify)
		if serve := l.push.Load(); serve != nil && l.cfg.prefetch() > 0 {
			// A Server serves this listener: from now on a pool of workers
			// (transport.PullWorkers, up to the prefetch: a busy worker
			// holds an unacknowledged delivery, so the broker never hands
			// the consumer more than there are workers) reads the
			// deliveries and serves each where it took it, with no handoff
			// to Receive and no goroutine per request. This goroutine no
			// longer counts as a pump (Close does not wait for handlers,
			// as transport.Server.Close promises); it stays live for Drain
			// until the last worker has returned.
			tracked = false
			l.pumps.Done()
			l.servePushed(g, deliveries, notify, *serve, td)
			return
		}
		select {
		case l.in <- td:
		case <-g.stop:
			return // the channel is gone; the broker requeues the delivery
		case <-l.done:
			return
		}
	}
}

// servePushed serves a consumer's deliveries on a transport.PullWorkers
// pool, first (taken by the pump already), until the consumer ends (its
// channel closed, g stopped, or the listener done), and returns once every
// worker has.
func (l *Listener) servePushed(g *listenerGen, deliveries <-chan amqp091.Delivery, notify bool, serve func(*transport.Delivery), first *transport.Delivery) {
	var pending atomic.Pointer[transport.Delivery]
	pending.Store(first)
	pull := func(context.Context) (*transport.Delivery, error) {
		if d := pending.Swap(nil); d != nil {
			return d, nil
		}
		select {
		case d, ok := <-deliveries:
			if !ok {
				return nil, transport.ErrClosed
			}
			return l.delivery(g, &d, notify), nil
		case <-g.stop:
			return nil, transport.ErrClosed // the channel is gone; the broker requeues
		case <-l.done:
			return nil, transport.ErrClosed
		}
	}
	var w transport.PullWorkers
	w.SetMax(l.cfg.prefetch())
	// The workers end with the consumer (pull's errors), never for a
	// context: a Server that stops its intake drains the listener.
	w.Start(context.Background(), pull, serve, nil)
	<-w.Done()
}

// exited records the end of a pump.
func (l *Listener) exited() {
	l.mu.Lock()
	l.live--
	if l.draining && l.live == 0 {
		l.closeDrained()
	}
	l.mu.Unlock()
}

// Push implements transport.Pusher. transport.Server calls it before its
// first Receive; from then on the Listener serves each delivery with serve
// on a pool of worker goroutines (transport.PullWorkers) that read the
// consumer's deliveries directly (at most the prefetch of them per
// consumer, started as needed), instead of handing them to Receive, which
// saves two goroutine handoffs and a goroutine per request. Receive still
// reports the end of the Listener (transport.ErrClosed after Drain, once
// every worker is done). With no prefetch limit (Config.Prefetch negative)
// deliveries keep going through Receive.
func (l *Listener) Push(serve func(*transport.Delivery)) {
	if serve != nil {
		l.push.Store(&serve)
	}
}

// closeDrained closes l.drained once; l.mu is held.
func (l *Listener) closeDrained() {
	if !l.drainedClosed {
		l.drainedClosed = true
		close(l.drained)
	}
}

func (l *Listener) delivery(g *listenerGen, d *amqp091.Delivery, notify bool) *transport.Delivery {
	// One allocation for the delivery, its token and room for the values
	// of its header (a request has two to four entries).
	x := &struct {
		transport.Delivery
		tok  token
		vals [4]string
	}{
		Delivery: transport.Delivery{
			Message:     transport.Message{Body: d.Body, ContentType: d.ContentType},
			Service:     l.lc.Service,
			RemoteAddr:  d.ReplyTo,
			Redelivered: d.Redelivered,
		},
		tok: token{g: g, tag: d.DeliveryTag, replyTo: d.ReplyTo, corrID: d.CorrelationId},
	}
	g.acks.delivered(d.DeliveryTag)
	td := &x.Delivery
	td.Token = &x.tok
	if notify {
		td.Topic = d.RoutingKey
	}
	if transport.IsFrame(d.ContentType) {
		td.Header = tableHeader(d.Headers, x.vals[:0])
	} else {
		td.Header = foreignHeader(d)
	}
	td.Deadline = headerDeadline(td.Header, &l.cfg, l.queue)
	return td
}

// Receive implements transport.Listener. After Drain it returns the
// deliveries the broker had already pushed, then transport.ErrClosed.
func (l *Listener) Receive(ctx context.Context) (*transport.Delivery, error) {
	select {
	case d := <-l.in:
		return d, nil
	default:
	}
	select {
	case d := <-l.in:
		return d, nil
	case <-l.drained:
		return nil, transport.ErrClosed
	case <-l.done:
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Reply implements transport.Listener: it publishes resp to the request's
// reply_to through the default exchange with the request's correlation id
// and each entry of resp.Header in the headers table, then settles the
// delivery: Ack acks it, Reject nacks it without requeue (to the
// dead-letter exchange when one is configured), Requeue nacks it with
// requeue, and Hold leaves it unacknowledged (a stream's first message: the
// delivery stays in flight, counted against the prefetch, until a later
// Reply, usually with a nil resp, settles it; if the Listener closes or its
// channel is lost first, the broker redelivers the request). Nacks are sent
// before Reply returns; so is the ack of the only delivery of the channel in
// flight; other acks within a millisecond, coalesced with the channel's
// other acks into one basic.ack with multiple set (a delivery acked while an
// older one of the channel is still in flight gets its own basic.ack within
// two milliseconds), and Close sends the pending ones before closing the
// channel. A request without reply_to and a notification are only settled.
// If the channel the delivery came on has closed, the reply is still sent on
// the new channel, but the delivery cannot be settled: the broker redelivers
// it, and Reply returns an error matching transport.ErrUnavailable.
func (l *Listener) Reply(ctx context.Context, d *transport.Delivery, resp *transport.Message, disp transport.Disposition) error {
	tok, ok := d.Token.(*token)
	if !ok || tok == nil || tok.g == nil || tok.g.l != l {
		return errors.New("transport/amqp: Reply with a delivery this listener did not return")
	}
	if resp != nil && d.Topic == "" && tok.replyTo != "" {
		if err := l.sendReply(ctx, tok, resp); err != nil {
			return err
		}
	}
	if disp == transport.Hold {
		return nil
	}
	if tok.g.dead.Load() {
		return fmt.Errorf("transport/amqp: delivery %d of queue %q not settled: its channel closed, so the broker redelivers it: %w", tok.tag, l.queue, transport.ErrUnavailable)
	}
	var err error
	switch disp {
	case transport.Ack:
		err = tok.g.acks.ack(tok.tag)
	case transport.Reject:
		err = tok.g.acks.nack(tok.tag, false)
	case transport.Requeue:
		err = tok.g.acks.nack(tok.tag, true)
	default:
		return fmt.Errorf("transport/amqp: unknown disposition %d", disp)
	}
	if err != nil {
		return fmt.Errorf("transport/amqp: settle delivery %d of queue %q: %w: %w", tok.tag, l.queue, transport.ErrUnavailable, err)
	}
	return nil
}

func (l *Listener) sendReply(ctx context.Context, tok *token, resp *transport.Message) error {
	ch := tok.g.ch
	if tok.g.dead.Load() {
		g, ok := l.sup.now()
		if !ok {
			return fmt.Errorf("transport/amqp: reply to %q not sent: disconnected (the broker redelivers the request): %w", tok.replyTo, transport.ErrUnavailable)
		}
		ch = g.ch
	}
	body, ct, h := resp.Body, resp.ContentType, resp.Header
	if max := l.cfg.maxMessageBytes(); max > 0 && int64(len(body)) > max {
		err := &transport.TooLargeError{What: "response message", Limit: max, Size: int64(len(body))}
		l.cfg.logger().Error("transport/amqp: response not sent", "queue", l.queue, "err", err)
		// The error response replaces the message, stream headers and all.
		body, ct, h = transport.ErrorResponse(err), transport.MediaType, nil
	}
	headers, pooled := messageHeaders(h, time.Time{})
	pub := amqp091.Publishing{
		ContentType:   ct,
		CorrelationId: tok.corrID,
		Headers:       headers,
		DeliveryMode:  amqp091.Transient,
		Body:          body,
	}
	err := ch.PublishWithContext(ctx, "", tok.replyTo, false, false, pub)
	releaseHeaders(headers, pooled)
	if err != nil {
		return fmt.Errorf("transport/amqp: reply to %q: %w: %w", tok.replyTo, transport.ErrUnavailable, err)
	}
	return nil
}

// Publish sends a notification to topic, as Conn.Publish does, over the
// Listener's connection (an extra: transport.Listener has no Publish).
func (l *Listener) Publish(ctx context.Context, topic string, m *transport.Message) error {
	if l.sup.ctx.Err() != nil {
		return transport.ErrClosed
	}
	if max := l.cfg.maxMessageBytes(); max > 0 && int64(len(m.Body)) > max {
		return &transport.TooLargeError{What: "message", Limit: max, Size: int64(len(m.Body))}
	}
	g, err := l.sup.current(ctx)
	if err != nil {
		return err
	}
	return publishNotification(ctx, g.notes, &l.cfg, topic, m)
}

// Drain implements transport.Drainer: it cancels the consumers (basic.cancel),
// so the broker sends nothing more; Receive then returns the deliveries
// already received and finally transport.ErrClosed. Replies and
// acknowledgements keep working until Close.
func (l *Listener) Drain() error {
	l.mu.Lock()
	if l.draining {
		l.mu.Unlock()
		return nil
	}
	l.draining = true
	if l.live == 0 {
		l.closeDrained()
	}
	g, ok := l.sup.now()
	var tags []string
	if ok {
		tags = append(tags, g.tags...)
	}
	l.mu.Unlock()
	if len(tags) == 0 {
		return nil
	}
	errc := make(chan error, 1)
	go func() {
		var errs []error
		for _, tag := range tags {
			if err := g.ch.Cancel(tag, false); err != nil && !g.dead.Load() {
				errs = append(errs, err)
			}
		}
		errc <- errors.Join(errs...)
	}()
	t := time.NewTimer(l.cfg.setupTimeout())
	defer t.Stop()
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("transport/amqp: cancel consumers of %q: %w", l.queue, err)
		}
		return nil
	case <-t.C:
		return fmt.Errorf("transport/amqp: cancel consumers of %q: no answer from the broker in %v: %w", l.queue, l.cfg.setupTimeout(), transport.ErrUnavailable)
	}
}

// Close implements transport.Listener: it closes the channels (the broker
// requeues every unacknowledged delivery for another instance) and the
// connection when the Listener dialled it.
func (l *Listener) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		if g, ok := l.sup.now(); ok {
			// What was answered is acknowledged before the channel closes,
			// within closeTimeout (a write to a dead network can block
			// until the connection is closed below).
			done := make(chan struct{})
			go func() {
				defer close(done)
				g.acks.drain()
			}()
			t := time.NewTimer(closeTimeout)
			select {
			case <-done:
			case <-t.C:
			}
			t.Stop()
		}
		l.sup.close()
		l.pumps.Wait()
	})
	return nil
}

// MaxMessageBytes implements transport.SizeLimiter.
func (l *Listener) MaxMessageBytes() int64 { return l.cfg.maxMessageBytes() }

// StreamPartBytes implements transport.PartSizer (see streamPartBytes).
func (l *Listener) StreamPartBytes() int { return streamPartBytes }

// State implements transport.StateReporter.
func (l *Listener) State() transport.State { return l.sup.State() }

// Queue returns the name of the service's request queue.
func (l *Listener) Queue() string { return l.queue }

// NotifyQueue returns the name of the service's notification queue, or ""
// when it subscribes to no topic.
func (l *Listener) NotifyQueue() string { return l.nqueue }
