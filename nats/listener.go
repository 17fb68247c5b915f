package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/httpbus/httpbus/transport"
)

// Listener is the server side of one service over a NATS connection: a
// queue subscription on the service subject and one on each topic subject.
// It implements transport.Listener, transport.Pusher, transport.Prefetcher
// (to size its pool of workers only), transport.Drainer, transport.Streamer,
// transport.SizeLimiter and transport.StateReporter.
type Listener struct {
	nc      *natsgo.Conn
	own     bool // close nc on Close (URL opener)
	cfg     Config
	log     *slog.Logger
	service string
	subs    []*natsgo.Subscription
	// direct is the only subscription of a listener with no topics:
	// Receive takes from it itself, with no forwarder in between.
	direct *natsgo.Subscription

	ch      chan *transport.Delivery // unbuffered: forwarders hand over one at a time
	ctx     context.Context          // ends at Close
	cancel  context.CancelFunc
	fwd     sync.WaitGroup
	stopped chan struct{} // closed when every forwarder has returned

	inbox inbox
	limit *payloadLimit

	// Push mode (Push): a pool of workers serves deliveries where they
	// are received, up to the Server's in-flight bound (SetPrefetch).
	workers  transport.PullWorkers
	pushCtx  context.Context // ends when the Server stops intake, or at Close
	pushStop context.CancelFunc

	// held counts the entries of heldMsgs, so that Reply looks at the map
	// (under mu) only while some delivery is held.
	held atomic.Int64

	mu       sync.Mutex
	closed   bool
	draining bool
	err      error // why the forwarders stopped, when not Drain or Close
	// heldMsgs holds the requests answered with transport.Hold and not yet
	// settled: in flight, as far as this listener is concerned, until their
	// final Reply.
	heldMsgs map[*natsgo.Msg]struct{}
}

// NewListener subscribes to lc.Service's subject and lc.Topics' subjects on
// nc, which the caller owns (Close leaves it open). It does not wait for
// the server: ctx is there so that every backend opens with one shape.
// Errors: a nil nc, an empty or invalid service or topic name, a failed
// subscription.
func NewListener(ctx context.Context, nc *natsgo.Conn, lc transport.ListenConfig, cfg Config) (*Listener, error) {
	return newListener(nc, false, lc, cfg)
}

func newListener(nc *natsgo.Conn, own bool, lc transport.ListenConfig, cfg Config) (*Listener, error) {
	if nc == nil {
		return nil, errors.New("transport/nats: nil connection")
	}
	if err := checkService(lc.Service); err != nil {
		return nil, err
	}
	if err := checkSubject("prefix", cfg.prefix()); err != nil {
		return nil, err
	}
	queue := cfg.Queue
	if queue == "" {
		queue = lc.Service
	}
	if err := checkSubject("queue group", queue); err != nil {
		return nil, err
	}
	for _, t := range lc.Topics {
		if err := checkSubject("topic", t); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Listener{
		nc: nc, own: own, cfg: cfg, log: cfg.logger(), service: lc.Service,
		ch: make(chan *transport.Delivery), ctx: ctx, cancel: cancel,
		stopped: make(chan struct{}),
		inbox:   inbox{nc: nc, cfg: cfg, log: cfg.logger()},
		limit:   newPayloadLimit(nc),
	}
	l.pushCtx, l.pushStop = context.WithCancel(ctx)
	msgs, bytes := cfg.pending(nc.Opts.SubChanLen)
	subscribe := func(subject, topic string) error {
		s, err := nc.QueueSubscribeSync(subject, queue)
		if err != nil {
			return fmt.Errorf("transport/nats: subscribe to %q (queue group %q): %w", subject, queue, err)
		}
		l.subs = append(l.subs, s)
		if err := s.SetPendingLimits(msgs, bytes); err != nil {
			return fmt.Errorf("transport/nats: pending limits on %q: %w", subject, err)
		}
		if len(lc.Topics) == 0 {
			l.direct = s
			return nil
		}
		l.fwd.Add(1)
		go l.forward(s, topic)
		return nil
	}
	err := subscribe(ServiceSubject(cfg.Prefix, lc.Service), "")
	for _, t := range lc.Topics {
		if err != nil {
			break
		}
		err = subscribe(TopicSubject(cfg.Prefix, t), t)
	}
	if err == nil {
		// The subscriptions are registered at the server when Flush returns:
		// a request sent after NewListener returns reaches this listener.
		err = nc.Flush()
		if err != nil {
			err = fmt.Errorf("transport/nats: flush subscriptions: %w: %w", transport.ErrUnavailable, err)
		}
	}
	go func() { l.fwd.Wait(); close(l.stopped) }()
	if err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// next returns the next delivery from s, answering malformed routing
// headers with 400 itself and logging slow-consumer drops.
func (l *Listener) next(ctx context.Context, s *natsgo.Subscription, topic string) (*transport.Delivery, *natsgo.Msg, error) {
	for {
		m, err := s.NextMsgWithContext(ctx)
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return nil, nil, ctx.Err()
			case errors.Is(err, natsgo.ErrSlowConsumer):
				dropped, _ := s.Dropped()
				l.log.Warn("transport/nats: slow consumer: messages dropped", "subject", s.Subject, "dropped_total", dropped)
				continue
			case errors.Is(err, natsgo.ErrBadSubscription):
				// Drained or unsubscribed.
				return nil, nil, transport.ErrClosed
			default:
				l.mu.Lock()
				if l.err == nil {
					l.err = fmt.Errorf("transport/nats: subscription %q ended: %w: %w", s.Subject, transport.ErrClosed, err)
				}
				err = l.err
				l.mu.Unlock()
				return nil, nil, err
			}
		}
		d, err := l.delivery(m, topic)
		if err != nil {
			l.log.Warn("transport/nats: bad message", "subject", m.Subject, "err", err)
			if m.Reply != "" {
				l.publish(&natsgo.Msg{Subject: m.Reply, Data: transport.ErrorResponse(err), Header: frameHeader})
			}
			continue
		}
		return d, m, nil
	}
}

// forward moves messages from one subscription to Receive, for listeners
// with several subscriptions. It returns when the subscription ends
// (drained, closed, connection closed) or at Close.
func (l *Listener) forward(s *natsgo.Subscription, topic string) {
	defer l.fwd.Done()
	for {
		d, m, err := l.next(l.ctx, s, topic)
		if err != nil {
			return
		}
		select {
		case l.ch <- d:
		case <-l.ctx.Done():
			// Closed while holding it: hand it back to the subject, where
			// another instance may take it.
			if topic == "" {
				l.requeue(m)
			}
			return
		}
	}
}

// delivery converts a received message. A frame's Header is its NATS
// header block with canonical keys (Content-Type included), shared with m
// when the keys are canonical already (receivedHeader): requeue reads m's
// header later, and the Server never modifies a delivery's Header. A
// foreign message's Header is a copy without Content-Type.
func (l *Listener) delivery(m *natsgo.Msg, topic string) (*transport.Delivery, error) {
	d := &transport.Delivery{Service: l.service, Topic: topic, RemoteAddr: m.Reply, Token: m}
	d.Body = m.Data
	if h := receivedHeader(m.Header); h != nil {
		if vs := h["Content-Type"]; len(vs) > 0 && transport.IsFrame(vs[0]) {
			d.ContentType = vs[0]
			d.Header = h
			dl, err := transport.ParseDeadline(transport.HeaderValue(h, transport.HeaderDeadline))
			if err != nil {
				return nil, err
			}
			d.Deadline = dl
			d.Redelivered = transport.HeaderValue(h, transport.HeaderRedelivered) == "true"
			return d, nil
		}
	}
	h := httpHeader(m.Header)
	d.ContentType = h.Get("Content-Type")
	dl, err := transport.ParseDeadline(h.Get(transport.HeaderDeadline))
	if err != nil {
		return nil, err
	}
	d.Deadline = dl
	d.Redelivered = h.Get(transport.HeaderRedelivered) == "true"
	if !transport.IsFrame(d.ContentType) {
		h.Del("Content-Type")
		d.Header = h
	}
	return d, nil
}

// Receive implements transport.Listener. After Drain it returns the
// messages the subscriptions already hold, then transport.ErrClosed.
func (l *Listener) Receive(ctx context.Context) (*transport.Delivery, error) {
	if l.workers.Started() {
		return nil, l.waitPushed(ctx)
	}
	if l.direct != nil {
		d, _, err := l.next(ctx, l.direct, "")
		if err != nil && ctx.Err() == nil && l.ctx.Err() != nil {
			return nil, transport.ErrClosed
		}
		return d, err
	}
	select {
	case d := <-l.ch:
		return d, nil
	case <-l.stopped:
		return nil, l.endError()
	case <-l.ctx.Done():
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// waitPushed is Receive in push mode (Push): it waits for the end of the
// workers.
func (l *Listener) waitPushed(ctx context.Context) error {
	select {
	case <-l.workers.Done():
		return l.endError()
	case <-l.ctx.Done():
		return transport.ErrClosed
	case <-ctx.Done():
		l.pushStop()
		return ctx.Err()
	}
}

// endError is what Receive returns once the subscriptions have ended:
// transport.ErrClosed after Drain or Close, else why they ended.
func (l *Listener) endError() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil && !l.closed && !l.draining {
		return l.err
	}
	return transport.ErrClosed
}

// Reply implements transport.Listener: it publishes resp to the request's
// reply subject (nothing for a notification or a request published without
// one), with resp.Header, Content-Type and Httpbus-Version as NATS headers.
// NATS core keeps no delivery state, so Ack and Reject only differ from
// each other in name; Requeue with no response republishes the request to
// its subject, marked Httpbus-Redelivered, for another instance.
//
// Hold publishes resp and leaves d held: in flight until a later Reply
// with another disposition settles it (with resp nil, as the Server does
// after the stream, or with a last response). A held request has been
// answered in part, so Requeue settles it without republishing it (another
// instance would answer a caller that already has a response); Close does
// not hand it back either.
func (l *Listener) Reply(ctx context.Context, d *transport.Delivery, resp *transport.Message, disp transport.Disposition) error {
	m, _ := d.Token.(*natsgo.Msg)
	if m == nil {
		return errors.New("transport/nats: Reply of a delivery not received from this listener")
	}
	if err := ctx.Err(); err != nil {
		return transport.ContextError(ctx)
	}
	if disp == transport.Hold {
		l.hold(m)
	} else if l.held.Load() > 0 && l.unhold(m) && disp == transport.Requeue && resp == nil {
		l.log.Debug("transport/nats: requeue of a request answered in part: settled without redelivery", "subject", m.Subject)
		return nil
	}
	if disp == transport.Requeue && resp == nil {
		if d.Topic == "" {
			return l.requeue(m)
		}
		return nil
	}
	if resp == nil || m.Reply == "" || d.Topic != "" {
		return nil
	}
	// A response carries no deadline.
	out := newOutgoing(m.Reply, &transport.Message{Body: resp.Body, ContentType: resp.ContentType, Header: resp.Header})
	defer out.release()
	if err := l.limit.check(&out.msg); err != nil {
		// The Server checks MaxMessageBytes first; this is the last
		// resort: answer with the error rather than leave the caller to
		// time out.
		l.publish(&natsgo.Msg{Subject: m.Reply, Data: transport.ErrorResponse(err), Header: frameHeader})
		return err
	}
	return l.publish(&out.msg)
}

// hold marks m held (Reply with transport.Hold); holding it again is a
// no-op.
func (l *Listener) hold(m *natsgo.Msg) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.heldMsgs[m]; ok {
		return
	}
	if l.heldMsgs == nil {
		l.heldMsgs = make(map[*natsgo.Msg]struct{})
	}
	l.heldMsgs[m] = struct{}{}
	l.held.Add(1)
}

// unhold settles a held m and reports whether it was held.
func (l *Listener) unhold(m *natsgo.Msg) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.heldMsgs[m]; !ok {
		return false
	}
	delete(l.heldMsgs, m)
	l.held.Add(-1)
	return true
}

func (l *Listener) publish(m *natsgo.Msg) error {
	if err := l.nc.PublishMsg(m); err != nil {
		return sendError("publish to "+m.Subject, err)
	}
	return nil
}

func (l *Listener) requeue(m *natsgo.Msg) error {
	h := natsgo.Header{}
	for k, vs := range m.Header {
		h[k] = vs
	}
	h[transport.HeaderRedelivered] = []string{"true"}
	return l.publish(&natsgo.Msg{Subject: m.Subject, Reply: m.Reply, Header: h, Data: m.Data})
}

// Publish publishes m to topic's subject, as Conn.Publish does (an extra:
// transport.Listener has no Publish).
func (l *Listener) Publish(ctx context.Context, topic string, m *transport.Message) error {
	if l.isClosed() {
		return fmt.Errorf("transport/nats: publish: %w", transport.ErrClosed)
	}
	return publishNotification(ctx, l.limit, l.cfg, topic, m)
}

func publishNotification(ctx context.Context, lim *payloadLimit, cfg Config, topic string, m *transport.Message) error {
	if err := ctx.Err(); err != nil {
		return transport.ContextError(ctx)
	}
	if err := checkSubject("topic", topic); err != nil {
		return err
	}
	out := newOutgoing(TopicSubject(cfg.Prefix, topic), m)
	defer out.release()
	if err := lim.check(&out.msg); err != nil {
		return err
	}
	if err := lim.nc.PublishMsg(&out.msg); err != nil {
		return sendError("publish to "+out.msg.Subject, err)
	}
	return nil
}

// Inbox implements transport.Streamer: the subject of the listener's
// stream inbox, subscribed on first use with a plain (not queue)
// subscription, so that only this instance receives what is sent there.
// The subject is the connection's nc.NewInbox(): "_INBOX.<nuid>", or
// "<prefix>.<nuid>" when the connection was opened with
// natsgo.CustomInboxPrefix. That is the namespace NATS permissions already
// grant a requester (subscribe "_INBOX.>" for request/reply), and a
// deployment that isolates users by inbox prefix keeps doing so for
// streams. It stays the same for the listener's life: nats.go restores
// the subscription after a reconnect (messages sent while this side was
// disconnected are lost, and the core sees the gap). Errors:
// transport.ErrClosed after Close, ctx's error, transport.ErrUnavailable
// when the subscription fails.
func (l *Listener) Inbox(ctx context.Context) (string, error) {
	if l.isClosed() {
		return "", fmt.Errorf("transport/nats: inbox: %w", transport.ErrClosed)
	}
	return l.inbox.address(ctx)
}

// ReceiveInbox implements transport.Streamer: the next message sent to the
// listener's inbox (opening it if Inbox was not called yet), with its NATS
// headers in Header (canonical keys, Content-Type included), ContentType
// and Deadline (from Httpbus-Deadline) set. A slow-consumer drop
// (Config.InboxPendingBytes) is logged and receiving goes on. Errors:
// ctx's error, transport.ErrClosed after Close.
func (l *Listener) ReceiveInbox(ctx context.Context) (*transport.Message, error) {
	if l.isClosed() {
		return nil, fmt.Errorf("transport/nats: inbox: %w", transport.ErrClosed)
	}
	return l.inbox.receive(ctx)
}

// Send implements transport.Streamer: it publishes m to subject addr with
// each m.Header entry, Content-Type (m.ContentType, message/http when
// empty), Httpbus-Version (transport.Version unless m.Header has one) and
// Httpbus-Deadline (m.Deadline, when set) as NATS headers, and returns
// once nats.go has buffered it. Errors: *transport.TooLargeError when it
// does not fit in max_payload (nothing sent), an error for an addr that is
// not a literal subject, ctx's error, transport.ErrClosed after Close,
// transport.ErrUnavailable for other publish failures (nats.go's error
// wrapped too). NATS does not tell whether anyone subscribes to addr.
func (l *Listener) Send(ctx context.Context, addr string, m *transport.Message) error {
	if l.isClosed() {
		return fmt.Errorf("transport/nats: send: %w", transport.ErrClosed)
	}
	return send(ctx, l.limit, addr, m)
}

// SendCopiesBody implements transport.SendCopier, as Conn.SendCopiesBody.
func (l *Listener) SendCopiesBody() bool { return true }

func (l *Listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// drainFlushTimeout bounds Drain's wait for the server to confirm the
// unsubscriptions.
const drainFlushTimeout = 5 * time.Second

// Drain implements transport.Drainer: it unsubscribes at the server (no
// new messages arrive) while Receive still returns the messages already
// received; once they are taken, Receive returns transport.ErrClosed.
// nats.go checks a draining subscription every 100 ms, so the last
// ErrClosed comes up to 100 ms after the last message. The stream inbox
// stays open until Close: streams in flight still receive credit, parts
// and cancel.
func (l *Listener) Drain() error {
	l.mu.Lock()
	if l.closed || l.draining {
		l.mu.Unlock()
		return nil
	}
	l.draining = true
	l.mu.Unlock()
	var errs []error
	for _, s := range l.subs {
		if err := s.Drain(); err != nil && !errors.Is(err, natsgo.ErrBadSubscription) {
			errs = append(errs, fmt.Errorf("transport/nats: drain %q: %w", s.Subject, err))
		}
	}
	// When the PONG arrives the server has processed the UNSUBs: a request
	// sent after Drain returns goes to another instance (or gets no
	// responders), never to this one.
	if err := l.nc.FlushTimeout(drainFlushTimeout); err != nil && len(errs) == 0 {
		l.log.Warn("transport/nats: drain: flush", "err", err)
	}
	return errors.Join(errs...)
}

// closeHandBackTimeout bounds Close's wait for the server to confirm the
// unsubscription while it hands requests back.
const closeHandBackTimeout = 5 * time.Second

// Close implements transport.Listener. Requests received but not taken by
// Receive go back to the broker as the Listener contract asks: Close
// unsubscribes the service subject at the server and republishes each of
// them to it (marked Httpbus-Redelivered, reply subject kept), so that
// another instance answers it (with none left, its caller gets 504 at its
// deadline). Notifications not yet taken are dropped (republishing would
// repeat them to every other subscribing service). A listener opened from
// a URL then closes its connection, flushing what was published.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	l.cancel()
	l.inbox.close()
	if n := l.held.Load(); n > 0 {
		l.log.Info("transport/nats: close: requests held (answered in part) are not handed back", "service", l.service, "count", n)
	}
	l.fwd.Wait()
	for i, s := range l.subs {
		if i == 0 {
			l.handBack(s)
			continue
		}
		if n, _, _ := s.Pending(); n > 0 {
			l.log.Warn("transport/nats: close: notifications not taken are dropped", "subject", s.Subject, "count", n)
		}
		s.Unsubscribe() // ErrBadSubscription after Drain: fine
	}
	if l.own {
		l.nc.Close()
	}
	return nil
}

// handBack drains the service subscription and republishes what it still
// holds.
func (l *Listener) handBack(s *natsgo.Subscription) {
	if !l.nc.IsConnected() {
		s.Unsubscribe() // nowhere to hand them back to
		return
	}
	if err := s.Drain(); err != nil {
		s.Unsubscribe()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeHandBackTimeout)
	defer cancel()
	n := 0
	for {
		m, err := s.NextMsgWithContext(ctx)
		if err != nil {
			break // drained (ErrBadSubscription), connection closed, or timeout
		}
		if l.requeue(m) == nil {
			n++
		}
	}
	if ctx.Err() != nil {
		s.Unsubscribe()
	}
	if n > 0 {
		l.log.Info("transport/nats: close: requests handed back to the broker", "subject", s.Subject, "count", n)
	}
}

// MaxMessageBytes implements transport.SizeLimiter: the server's
// max_payload (as the connection last saw it) minus HeaderRoom.
func (l *Listener) MaxMessageBytes() int64 { return l.limit.messageBytes() }

// State implements transport.StateReporter from the connection's status.
func (l *Listener) State() transport.State {
	if l.isClosed() {
		return transport.StateClosed
	}
	return state(l.nc)
}

// NATSConn returns the underlying connection.
func (l *Listener) NATSConn() *natsgo.Conn { return l.nc }
