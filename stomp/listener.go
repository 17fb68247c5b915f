package stomp

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	stompgo "github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"

	"github.com/httpbus/httpbus/transport"
)

// Listener is the server side of one service: it takes requests from
// QueuePrefix+service and notifications for its topics, and implements
// transport.Listener, transport.Drainer, transport.Pusher,
// transport.SizeLimiter and transport.StateReporter.
type Listener struct {
	s       *session
	in      *inbox
	service string
	topics  []string
	closeMu sync.Once

	mu       sync.Mutex
	queue    []*transport.Delivery // received, not yet taken by Receive
	held     []*token              // taken from the broker but not to be served (after Drain, Requeue on ActiveMQ)
	holding  map[*token]struct{}   // answered with Hold, not yet settled
	draining bool
	wake     chan struct{} // signalled when queue grows or the state changes
	done     chan struct{} // closed by Close
	active   int           // pushed deliveries being served (Push)

	push    atomic.Pointer[func(*transport.Delivery)] // set by Push: l.serve on the Server's serve function
	workers transport.PushWorkers                     // where pushed deliveries are served

	prefetchExplicit bool         // Config.Prefetch set: SetPrefetch keeps it (prefetch.go)
	prefetchN        atomic.Int32 // the prefetch set by SetPrefetch; 0: none
}

// token is a delivery's bookkeeping: where it came from and where to reply.
type token struct {
	l       *link
	msg     *stompgo.Message
	replyTo string
	corrID  string
}

// NewListener returns the server side of service lc.Service on conn, which the
// caller owns: Close unsubscribes but leaves conn open. It subscribes
// before returning (the broker has confirmed the subscriptions). With
// cfg.Redial set, a lost connection is replaced by a dialled one (which
// Close disconnects). Errors: no service name, or the broker refused a
// subscription.
func NewListener(ctx context.Context, conn *stompgo.Conn, lc transport.ListenConfig, cfg Config) (*Listener, error) {
	return newListener(ctx, conn, false, lc, cfg)
}

func newListener(ctx context.Context, conn *stompgo.Conn, owned bool, lc transport.ListenConfig, cfg Config) (*Listener, error) {
	if lc.Service == "" {
		if owned {
			conn.MustDisconnect()
		}
		return nil, errors.New("transport/stomp: no service name")
	}
	explicit := cfg.Prefetch > 0
	cfg = cfg.withDefaults()
	l := &Listener{
		service: lc.Service,
		topics:  append([]string(nil), lc.Topics...),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		holding: map[*token]struct{}{},
	}
	l.prefetchExplicit = explicit
	l.s = newSession(cfg, "listener "+lc.Service, l)
	l.in = newInbox(l.s)
	if err := l.s.start(ctx, conn, owned); err != nil {
		return nil, fmt.Errorf("transport/stomp: listen for service %q: %w", lc.Service, err)
	}
	return l, nil
}

// requestDest is the destination callers send requests for the service to.
func (l *Listener) requestDest() string { return l.s.cfg.QueuePrefix + l.service }

// topicSub returns the destination and extra SUBSCRIBE headers by which
// the service receives topic's notifications, one copy per service shared
// among its instances.
func topicSub(cfg Config, d Dialect, service, topic string) (string, []func(*frame.Frame) error) {
	if d == DialectRabbitMQ {
		// A named durable queue per service bound to amq.topic with the
		// topic as routing key; instances declare the same queue and
		// compete on it. A plain UNSUBSCRIBE keeps it.
		return cfg.TopicPrefix + topic, []func(*frame.Frame) error{
			stompgo.SubscribeOpt.Header("durable", "true"),
			stompgo.SubscribeOpt.Header("auto-delete", "false"),
			stompgo.SubscribeOpt.Header("x-queue-name", RabbitMQTopicQueue(service, topic)),
		}
	}
	// ActiveMQ virtual topic: the broker copies each message published to
	// VirtualTopic.<topic> into every queue Consumer.<name>.VirtualTopic.<topic>.
	return cfg.QueuePrefix + ActiveMQTopicQueue(service, topic), nil
}

// ActiveMQTopicQueue is the queue (without prefix) in which ActiveMQ keeps
// topic's notifications for service: Consumer.<service>.VirtualTopic.<topic>,
// dots in the service name replaced by "_" (the consumer name is one
// segment of the broker's default pattern Consumer.*.VirtualTopic.>).
func ActiveMQTopicQueue(service, topic string) string {
	return "Consumer." + strings.ReplaceAll(service, ".", "_") + ".VirtualTopic." + topic
}

// RabbitMQTopicQueue is the durable queue in which RabbitMQ keeps topic's
// notifications for service: httpbus.<service>.<topic>, bound to the
// amq.topic exchange with routing key <topic>.
func RabbitMQTopicQueue(service, topic string) string {
	return "httpbus." + service + "." + topic
}

// publishDest is where notifications for topic are sent.
func publishDest(cfg Config, d Dialect, topic string) string {
	if d == DialectRabbitMQ {
		return cfg.TopicPrefix + topic
	}
	return cfg.TopicPrefix + "VirtualTopic." + topic
}

func (l *Listener) setup(ctx context.Context, k *link) error {
	cfg := l.s.cfg
	prefetch := strconv.Itoa(l.prefetch())
	common := []func(*frame.Frame) error{
		stompgo.SubscribeOpt.Header("activemq.prefetchSize", prefetch),
		stompgo.SubscribeOpt.Header("prefetch-count", prefetch),
	}
	sub, err := k.c.Subscribe(l.requestDest(), stompgo.AckClientIndividual, common...)
	if err != nil {
		return fmt.Errorf("transport/stomp: subscribe to %s: %w", l.requestDest(), err)
	}
	l.s.pump(k, sub, false, func(m *stompgo.Message) { l.enqueue(k, m, "") })
	for _, topic := range l.topics {
		dest, extra := topicSub(cfg, k.dialect, l.service, topic)
		sub, err := k.c.Subscribe(dest, stompgo.AckClientIndividual, append(append([]func(*frame.Frame) error(nil), common...), extra...)...)
		if err != nil {
			return fmt.Errorf("transport/stomp: subscribe to %s: %w", dest, err)
		}
		l.s.pump(k, sub, false, func(m *stompgo.Message) { l.enqueue(k, m, topic) })
	}
	if err := l.s.sync(ctx, k); err != nil {
		return fmt.Errorf("transport/stomp: subscriptions of service %q not confirmed: %w", l.service, err)
	}
	return nil
}

// enqueue turns a MESSAGE into a delivery for Receive. It never blocks.
func (l *Listener) enqueue(k *link, m *stompgo.Message, topic string) {
	h := m.Header
	tok := &token{l: k, msg: m, replyTo: h.Get(hdrReplyTo), corrID: h.Get(hdrCorrelationID)}
	d := &transport.Delivery{
		Message:     transport.Message{Body: m.Body, ContentType: m.ContentType},
		Service:     l.service,
		Topic:       topic,
		RemoteAddr:  tok.replyTo,
		Redelivered: h.Get(hdrRedelivered) == "true",
		Token:       tok,
	}
	dl, err := deliveryDeadline(h)
	if err != nil {
		l.s.log.Warn("transport/stomp: ignoring a bad deadline", "service", l.service, "err", err)
	}
	d.Deadline = dl
	if transport.IsFrame(m.ContentType) {
		d.Header = httpbusHeader(h)
	} else {
		d.Header = headerOf(h)
	}
	l.mu.Lock()
	if k.isDead() {
		// The link was declared lost (lost has run or runs next): the
		// broker redelivers what it sent on it.
		l.mu.Unlock()
		return
	}
	if l.draining {
		l.held = append(l.held, tok)
	} else if serve := l.push.Load(); serve != nil {
		l.active++
		l.mu.Unlock()
		l.workers.Serve(*serve, d)
		return
	} else {
		l.queue = append(l.queue, d)
	}
	l.mu.Unlock()
	l.signal()
}

// Push implements transport.Pusher: from then on each delivery is served
// with serve on a worker goroutine (transport.PushWorkers), handed over
// where the subscription delivers it, instead of going through Receive,
// which saves a handoff per request. Deliveries received before Push still
// go through Receive. After Drain, Receive returns transport.ErrClosed
// once every pushed delivery has been served.
func (l *Listener) Push(serve func(*transport.Delivery)) {
	if serve != nil {
		counted := func(d *transport.Delivery) { l.serve(serve, d) }
		l.push.Store(&counted)
	}
}

// serve runs a pushed delivery and counts it done.
func (l *Listener) serve(serve func(*transport.Delivery), d *transport.Delivery) {
	serve(d)
	l.mu.Lock()
	l.active--
	// Receive waits for the last pushed delivery only while draining;
	// otherwise waking it would cost a goroutine wake-up per request
	// whenever the listener goes idle (every request, one at a time).
	last := l.active == 0 && l.draining
	l.mu.Unlock()
	if last {
		l.signal()
	}
}

func (l *Listener) signal() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// lost forgets the deliveries of a lost connection that Receive has not
// returned: the broker delivers them again.
func (l *Listener) lost(k *link, err error) {
	l.mu.Lock()
	kept := l.queue[:0]
	dropped := 0
	for _, d := range l.queue {
		if d.Token.(*token).l == k {
			dropped++
			continue
		}
		kept = append(kept, d)
	}
	clear(l.queue[len(kept):])
	l.queue = kept
	heldKept := l.held[:0]
	for _, t := range l.held {
		if t.l != k {
			heldKept = append(heldKept, t)
		}
	}
	clear(l.held[len(heldKept):])
	l.held = heldKept
	for t := range l.holding {
		if t.l == k {
			delete(l.holding, t)
		}
	}
	l.mu.Unlock()
	if dropped > 0 {
		l.s.log.Info("transport/stomp: unserved deliveries left to the broker for redelivery", "service", l.service, "count", dropped)
	}
	l.signal()
}

// release hands back, on a caller's connection at Close, what was taken
// but not served, or answered with Hold and not settled: RabbitMQ keeps
// unacknowledged messages of a cancelled subscription until NACKed;
// ActiveMQ redelivers them at UNSUBSCRIBE.
func (l *Listener) release(k *link) {
	l.mu.Lock()
	var toks []*token
	for _, d := range l.queue {
		toks = append(toks, d.Token.(*token))
	}
	toks = append(toks, l.held...)
	for t := range l.holding {
		toks = append(toks, t)
	}
	l.queue, l.held = nil, nil
	clear(l.holding)
	l.mu.Unlock()
	if k.dialect != DialectRabbitMQ {
		return
	}
	for _, t := range toks {
		if t.l == k {
			nack(k, t.msg, true)
		}
	}
}

// Receive implements transport.Listener.
func (l *Listener) Receive(ctx context.Context) (*transport.Delivery, error) {
	for {
		l.mu.Lock()
		select {
		case <-l.done:
			l.mu.Unlock()
			return nil, transport.ErrClosed
		default:
		}
		if len(l.queue) > 0 {
			d := l.queue[0]
			l.queue[0] = nil
			l.queue = l.queue[1:]
			more := len(l.queue) > 0
			l.mu.Unlock()
			if more {
				l.signal()
			}
			return d, nil
		}
		draining, active := l.draining, l.active
		l.mu.Unlock()
		if draining && active == 0 {
			return nil, transport.ErrClosed
		}
		l.s.mu.Lock()
		final := l.s.err
		l.s.mu.Unlock()
		if final != nil {
			return nil, final
		}
		select {
		case <-l.wake:
		case <-l.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Reply implements transport.Listener: it sends resp to the reply-to
// destination of d (with its correlation-id), then settles d — ACK, or
// NACK for Reject (RabbitMQ requeue:false: dead-lettered or dropped;
// ActiveMQ: to its dead-letter queue for persistent messages, else
// dropped). Requeue is a NACK with requeue:true on RabbitMQ; on ActiveMQ,
// whose NACK dead-letters, the message is left unacknowledged and returns
// to the queue when the listener closes. Hold sends resp and leaves d
// unsettled (in flight: Close returns it to the broker) until a later
// Reply with another disposition settles it. While draining, the reply is
// sent with a receipt. If d's connection was lost, the reply goes out on
// the new one and d is not acknowledged: the broker delivers it again.
// resp.Header travels as STOMP headers (see Conn.Send).
func (l *Listener) Reply(ctx context.Context, d *transport.Delivery, resp *transport.Message, disp transport.Disposition) error {
	tok, ok := d.Token.(*token)
	if !ok {
		return errors.New("transport/stomp: Reply with a delivery from another listener")
	}
	if resp != nil && tok.replyTo != "" && d.Topic == "" {
		if err := l.sendReply(ctx, tok, resp); err != nil {
			return err
		}
	}
	l.mu.Lock()
	if disp == transport.Hold {
		l.holding[tok] = struct{}{}
	} else {
		delete(l.holding, tok)
	}
	l.mu.Unlock()
	if disp == transport.Hold {
		return nil
	}
	k := tok.l
	if k.isDead() {
		l.s.log.Debug("transport/stomp: delivery not settled: its connection was lost; the broker redelivers it", "service", l.service)
		return nil
	}
	var err error
	switch disp {
	case transport.Ack:
		err = k.c.Ack(tok.msg)
	case transport.Reject:
		err = nack(k, tok.msg, false)
	case transport.Requeue:
		if k.dialect == DialectRabbitMQ {
			err = nack(k, tok.msg, true)
		} else {
			l.mu.Lock()
			l.held = append(l.held, tok)
			l.mu.Unlock()
		}
	}
	if err != nil {
		if isConnError(err) {
			l.s.fail(k, err)
		}
		return fmt.Errorf("transport/stomp: settle delivery of service %q: %w: %w", l.service, transport.ErrUnavailable, err)
	}
	return nil
}

func (l *Listener) sendReply(ctx context.Context, tok *token, resp *transport.Message) error {
	if err := checkSize(resp, l.MaxMessageBytes()); err != nil {
		if tl, ok := err.(*transport.TooLargeError); ok {
			tl.What = "response " + tl.What
		}
		return err
	}
	k, err := l.s.get(ctx)
	if err != nil {
		return err
	}
	ct := resp.ContentType
	if ct == "" {
		ct = transport.MediaType
	}
	sh := sendHeader{h: resp.Header}
	sh.add(hdrVersion, transport.Version)
	if tok.corrID != "" {
		sh.add(hdrCorrelationID, tok.corrID)
	}
	opts := []func(*frame.Frame) error{sh.apply}
	l.mu.Lock()
	draining := l.draining
	l.mu.Unlock()
	if draining {
		opts = append(opts, stompgo.SendOpt.Receipt)
		err = l.s.await(ctx, func() error { return k.c.Send(tok.replyTo, ct, resp.Body, opts...) })
	} else {
		err = k.c.Send(tok.replyTo, ct, resp.Body, opts...)
	}
	if err != nil {
		if isConnError(err) {
			l.s.fail(k, err)
		}
		return fmt.Errorf("transport/stomp: reply to %s: %w: %w", tok.replyTo, transport.ErrUnavailable, err)
	}
	return nil
}

// nack sends NACK for m, with RabbitMQ's requeue header.
func nack(k *link, m *stompgo.Message, requeue bool) error {
	var hdr []string
	switch k.c.Version() {
	case stompgo.V12:
		hdr = []string{"id", m.Header.Get(frame.Ack)}
	default:
		hdr = []string{"subscription", m.Subscription.Id(), "message-id", m.Header.Get(frame.MessageId)}
	}
	hdr = append(hdr, "requeue", strconv.FormatBool(requeue))
	return k.c.Send("", "", nil, rawFrame("NACK", hdr...))
}

// Publish sends a notification to topic, as Conn.Publish does (an extra:
// transport.Listener has no Publish).
func (l *Listener) Publish(ctx context.Context, topic string, m *transport.Message) error {
	return publish(ctx, l.s, topic, m, l.MaxMessageBytes())
}

// Drain implements transport.Drainer: Receive returns the deliveries
// already received and then, once the pushed ones (see Push) have been
// served, transport.ErrClosed. Messages the broker pushes afterwards
// (prefetch) are not served; Close returns them.
func (l *Listener) Drain() error {
	l.mu.Lock()
	l.draining = true
	l.mu.Unlock()
	l.signal()
	return nil
}

// Close implements transport.Listener: deliveries not settled return to
// the broker, which redelivers them (marked redelivered).
func (l *Listener) Close() error {
	l.closeMu.Do(func() {
		l.mu.Lock()
		l.draining = true
		close(l.done)
		l.mu.Unlock()
		l.in.close()
		l.s.close()
		l.workers.Close()
	})
	return nil
}

// MaxMessageBytes implements transport.SizeLimiter: the frame limit minus
// HeaderReserve, for the dialect of the current connection.
func (l *Listener) MaxMessageBytes() int64 { return maxBytes(l.s) }

// State implements transport.StateReporter.
func (l *Listener) State() transport.State { return l.s.State() }

func maxBytes(s *session) int64 { return s.cfg.maxMessageBytes(s.dialect()) }

// publish sends a notification with a receipt, so that a nil error means
// the broker has it.
func publish(ctx context.Context, s *session, topic string, m *transport.Message, max int64) error {
	if topic == "" {
		return errors.New("transport/stomp: publish with no topic")
	}
	if max > 0 && int64(len(m.Body)) > max {
		return &transport.TooLargeError{What: "message", Limit: max, Size: int64(len(m.Body))}
	}
	k, err := s.get(ctx)
	if err != nil {
		return err
	}
	ct := m.ContentType
	if ct == "" {
		ct = transport.MediaType
	}
	sh := sendHeader{}
	sh.add(hdrVersion, transport.Version)
	sh.deadline(k.dialect, m.Deadline)
	opts := []func(*frame.Frame) error{sh.apply, stompgo.SendOpt.Receipt}
	dest := publishDest(s.cfg, k.dialect, topic)
	err = s.await(ctx, func() error { return k.c.Send(dest, ct, m.Body, opts...) })
	if err != nil {
		if errors.Is(err, transport.ErrTimeout) || errors.Is(err, context.Canceled) || errors.Is(err, transport.ErrClosed) {
			return err
		}
		if isConnError(err) {
			s.fail(k, err)
		}
		return fmt.Errorf("transport/stomp: publish to %s: %w: %w", dest, transport.ErrUnavailable, err)
	}
	return nil
}
