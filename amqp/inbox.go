package amqp

import (
	"context"
	"fmt"
	"sync"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/httpbus/httpbus/transport"
)

// inboxTagPrefix starts the consumer tag of every inbox consumer, so that a
// Listener can tell the broker's cancel of its inbox (the queue was deleted:
// the next Inbox opens another) from that of its request queues (a loss).
const inboxTagPrefix = "httpbus-inbox-"

// inbox is one generation's inbox (transport.Streamer): a server-named,
// exclusive, auto-delete, non-durable queue, declared on first use and
// consumed with automatic acknowledgement on the generation's channel. Its
// messages go to out, which outlives generations, so that ReceiveInbox
// waits across a reconnection.
type inbox struct {
	ch   *amqp091.Channel
	cfg  *Config
	stop <-chan struct{} // the generation's: closed at teardown
	out  chan<- *transport.Message
	lost chan<- error   // told (without blocking) when an open inbox is lost
	wg   sync.WaitGroup // the goroutine opening and pumping the inbox
	// taken, when set, is told the delivery tag of each message: an
	// automatically acknowledged delivery takes a tag of the channel
	// too, which the channel's acker must skip.
	taken func(tag uint64)

	mu    sync.Mutex
	name  string        // the queue, once consumed
	err   error         // why the last opening failed
	ready chan struct{} // non-nil while opening or open; closed once done
	dead  bool          // teardown began: nothing more starts
}

func newInbox(ch *amqp091.Channel, cfg *Config, stop <-chan struct{}, out chan<- *transport.Message, lost chan<- error) *inbox {
	return &inbox{ch: ch, cfg: cfg, stop: stop, out: out, lost: lost}
}

// lose reports the loss of the open inbox name to ReceiveInbox; b.mu is
// held. A loss not yet taken is not reported twice.
func (b *inbox) lose(name, why string) {
	err := fmt.Errorf("transport/amqp: inbox %q lost (%s); Inbox returns a new address: %w", name, why, transport.ErrUnavailable)
	select {
	case b.lost <- err:
	default:
	}
}

// address returns the inbox's queue name, declaring and consuming the queue
// on first use (again after a failed attempt or a cancelled consumer). It
// waits for that until ctx ends or the generation is torn down
// (transport.ErrUnavailable).
func (b *inbox) address(ctx context.Context) (string, error) {
	b.mu.Lock()
	if b.name != "" {
		name := b.name
		b.mu.Unlock()
		return name, nil
	}
	if b.dead {
		b.mu.Unlock()
		return "", fmt.Errorf("transport/amqp: inbox: connection lost: %w", transport.ErrUnavailable)
	}
	if b.ready == nil {
		b.ready, b.err = make(chan struct{}), nil
		b.wg.Add(1)
		go b.open(b.ready)
	}
	ready := b.ready
	b.mu.Unlock()
	select {
	case <-ready:
	case <-b.stop:
		return "", fmt.Errorf("transport/amqp: inbox: connection lost while declaring it: %w", transport.ErrUnavailable)
	case <-ctx.Done():
		return "", fmt.Errorf("transport/amqp: inbox: declaring it: %w", transport.ContextError(ctx))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		err := b.err
		if b.ready == ready {
			b.ready = nil // the next call tries again
		}
		return "", err
	}
	if b.name == "" {
		// Opened, then its consumer ended at once (the queue deleted).
		return "", fmt.Errorf("transport/amqp: inbox: the broker cancelled its consumer: %w", transport.ErrUnavailable)
	}
	return b.name, nil
}

// open declares and consumes the queue, then pumps its messages to out
// until the consumer or the generation ends. amqp091's declare and consume
// block until the broker answers or the channel closes (teardown closes it).
func (b *inbox) open(ready chan struct{}) {
	defer b.wg.Done()
	q, err := b.ch.QueueDeclare("", false, true, true, false, nil)
	var deliveries <-chan amqp091.Delivery
	if err == nil {
		deliveries, err = b.ch.Consume(q.Name, inboxTagPrefix+randomID(8), true, true, false, false, nil)
	}
	b.mu.Lock()
	if err != nil {
		b.err = fmt.Errorf("transport/amqp: declare and consume the inbox: %w: %w", transport.ErrUnavailable, err)
	} else {
		b.name = q.Name
	}
	close(ready)
	b.mu.Unlock()
	if err == nil {
		b.pump(q.Name, deliveries)
	}
}

// pump hands each message of the inbox to out, in order. A message in hand
// when the generation ends is dropped: the peer's stream sees a gap (or
// its deadline), and the inbox address has changed anyway.
func (b *inbox) pump(name string, deliveries <-chan amqp091.Delivery) {
	for {
		select {
		case d, ok := <-deliveries:
			if !ok {
				// The broker cancelled the consumer (the queue was
				// deleted) or the channel closed: the next Inbox
				// declares a new queue, if the generation lives on.
				b.mu.Lock()
				if b.name == name {
					b.name, b.ready = "", nil
					if !b.dead {
						b.lose(name, "the broker cancelled its consumer")
					}
				}
				b.mu.Unlock()
				return
			}
			if b.taken != nil {
				b.taken(d.DeliveryTag)
			}
			h := foreignHeader(&d)
			m := &transport.Message{Body: d.Body, ContentType: d.ContentType, Header: h, Deadline: headerDeadline(h, b.cfg, name)}
			select {
			case b.out <- m:
			case <-b.stop:
				return
			}
		case <-b.stop:
			return
		}
	}
}

// kill stops new openings and reports the loss of an open inbox; call it
// before closing the channel, then wait.
func (b *inbox) kill() {
	b.mu.Lock()
	b.dead = true
	if b.name != "" {
		b.lose(b.name, "the connection or its channel closed")
		b.name = ""
	}
	b.mu.Unlock()
}

// wait waits for the opening and pumping goroutine, once the channel is
// closed and stop is closed.
func (b *inbox) wait() { b.wg.Wait() }

// receiveInbox is ReceiveInbox of a Conn or Listener: the next message of
// in, the loss of the inbox (an error matching transport.ErrUnavailable),
// transport.ErrClosed once closed is closed, or ctx's error.
func receiveInbox(ctx context.Context, in <-chan *transport.Message, lost <-chan error, closed <-chan struct{}) (*transport.Message, error) {
	select {
	case <-closed:
		return nil, transport.ErrClosed
	default:
	}
	select {
	case m := <-in:
		return m, nil
	case err := <-lost:
		select {
		case <-closed:
			return nil, transport.ErrClosed
		default:
		}
		return nil, err
	case <-closed:
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// sendInbox publishes m on ch to the default exchange with routing key
// addr: not mandatory, transient, m.Header (and
// Httpbus-Deadline from m.Deadline) in the headers table. A queue that no
// longer exists drops the message silently.
func sendInbox(ctx context.Context, ch *amqp091.Channel, addr string, m *transport.Message) error {
	if addr == "" || len(addr) > 255 {
		return fmt.Errorf("transport/amqp: bad inbox address %.40q: want 1 to 255 bytes", addr)
	}
	headers, pooled := messageHeaders(m.Header, m.Deadline)
	pub := amqp091.Publishing{
		ContentType:  m.ContentType,
		Headers:      headers,
		DeliveryMode: amqp091.Transient,
		Body:         m.Body,
	}
	err := ch.PublishWithContext(ctx, "", addr, false, false, pub)
	releaseHeaders(headers, pooled)
	if err != nil {
		if ctx.Err() != nil {
			return transport.ContextError(ctx)
		}
		return fmt.Errorf("transport/amqp: send to inbox %q: %w: %w", addr, transport.ErrUnavailable, err)
	}
	return nil
}

// Inbox implements transport.Streamer. On first use after each
// (re)connection it declares a server-named queue ("amq.gen-…";
// exclusive, auto-delete, non-durable) on the call channel and consumes it
// with automatic acknowledgement; it returns the queue name, which any
// client of the broker can publish to through the default exchange. After
// a reconnection it returns a new name. Errors: transport.ErrClosed after
// Close; ErrUnavailable when the connection is lost meanwhile; ctx's error
// (matching ErrTimeout on a deadline) while it waits for the connection or
// the broker.
func (c *Conn) Inbox(ctx context.Context) (string, error) {
	if c.sup.ctx.Err() != nil {
		return "", transport.ErrClosed
	}
	g, err := c.sup.current(ctx)
	if err != nil {
		return "", err
	}
	return g.inbox.address(ctx)
}

// ReceiveInbox implements transport.Streamer: the next message that reached
// the inbox, with Body, ContentType, Header (the headers table and the
// properties, as for a foreign message: see the package doc) and Deadline
// (from Httpbus-Deadline). When an open inbox is lost (the connection or
// channel closed, or the queue was deleted), it returns once an error
// matching transport.ErrUnavailable: streams bound to the old address are
// broken, and Inbox returns a new one. It waits across reconnections; it
// returns transport.ErrClosed after Close and ctx.Err() when ctx ends
// first.
func (c *Conn) ReceiveInbox(ctx context.Context) (*transport.Message, error) {
	return receiveInbox(ctx, c.inboxc, c.inboxLost, c.sup.ctx.Done())
}

// Send implements transport.Streamer: it publishes m to the default exchange
// with routing key addr (a peer's inbox) on the call channel, as Call
// publishes a request but not mandatory and without reply_to, expiration
// or publisher confirm: it returns once amqp091 has written the message.
// A Send to an inbox that no longer exists is dropped by the broker and is
// not an error. Messages sent by one Conn to one inbox arrive in the order
// of their Sends. While the broker blocks publishers, Send waits (until
// ctx ends). Errors: *transport.TooLargeError over MaxMessageBytes (nothing
// sent), ErrUnavailable, ErrClosed, ctx's error.
func (c *Conn) Send(ctx context.Context, addr string, m *transport.Message) error {
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
	return sendInbox(ctx, g.calls, addr, m)
}

// Inbox implements transport.Streamer as Conn.Inbox does, with the queue
// declared and consumed on the Listener's consuming channel. The inbox
// keeps working while the Listener drains (Drain cancels only the request
// and notification consumers) until Close.
func (l *Listener) Inbox(ctx context.Context) (string, error) {
	if l.sup.ctx.Err() != nil {
		return "", transport.ErrClosed
	}
	g, err := l.sup.current(ctx)
	if err != nil {
		return "", err
	}
	return g.inbox.address(ctx)
}

// ReceiveInbox implements transport.Streamer as Conn.ReceiveInbox does.
func (l *Listener) ReceiveInbox(ctx context.Context) (*transport.Message, error) {
	return receiveInbox(ctx, l.inboxc, l.inboxLost, l.done)
}

// Send implements transport.Streamer as Conn.Send does, publishing on the
// consuming channel as Reply does. Sends to one inbox keep their order; a
// Send and a Reply go to different queues (the inbox, the caller's
// reply_to), between which RabbitMQ keeps no order.
func (l *Listener) Send(ctx context.Context, addr string, m *transport.Message) error {
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
	return sendInbox(ctx, g.ch, addr, m)
}

// SendCopiesBody implements transport.SendCopier: amqp091's Publish
// writes the body's frames to the connection's buffered writer before it
// returns (Channel.sendOpen, Connection.sendUnflushed), and keeps nothing.
func (c *Conn) SendCopiesBody() bool { return true }

// SendCopiesBody implements transport.SendCopier, as Conn.SendCopiesBody.
func (l *Listener) SendCopiesBody() bool { return true }

var (
	_ transport.Streamer   = (*Conn)(nil)
	_ transport.Streamer   = (*Listener)(nil)
	_ transport.SendCopier = (*Conn)(nil)
	_ transport.SendCopier = (*Listener)(nil)
)
