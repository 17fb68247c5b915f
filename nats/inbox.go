package nats

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/httpbus/httpbus/transport"
)

// DefaultInboxPendingBytes is the pending-bytes limit of an inbox
// subscription when Config.InboxPendingBytes is zero: 384 MiB, room for
// transport.DefaultMaxInFlight (128) streams that each have a full credit
// window in flight (at most 3 MiB: 2 MiB of credit in bytes and one part
// of at most 1 MiB, streamPartBytes, WIRE.md §7). It is a bound, not an
// allocation: memory is used only by parts received and not yet taken.
const DefaultInboxPendingBytes = 384 << 20

// streamPartBytes is the part size nats asks for under credit in bytes
// (transport.PartSizer): 1 MiB, which the core caps at the server's
// max_payload minus HeaderRoom minus 1 KiB (1,047,296 bytes at the default
// max_payload of 1 MiB). Against transport.LargePartBytes (512 KiB), 64
// MiB streams through nats-server moved 15–25% more bytes per second
// (issue 13: httpbus bench -stream both -raw, 3 alternating pairs: up
// 0.61–0.70 → 0.78–0.90 of raw publish, down 0.67–0.71 → 0.72–0.85),
// each part being one NATS message the server routes whole. A stream
// direction then holds at most 3 MiB in flight.
const streamPartBytes = 1 << 20

// StreamPartBytes implements transport.PartSizer (see streamPartBytes).
func (c *Conn) StreamPartBytes() int { return streamPartBytes }

// StreamPartBytes implements transport.PartSizer (see streamPartBytes).
func (l *Listener) StreamPartBytes() int { return streamPartBytes }

var (
	_ transport.PartSizer = (*Conn)(nil)
	_ transport.PartSizer = (*Listener)(nil)
)

// inboxFlushTimeout bounds the wait for the server to confirm an inbox
// subscription when ctx has no earlier deadline.
const inboxFlushTimeout = 5 * time.Second

// inbox is the stream inbox of a Conn or a Listener (transport.Streamer):
// a plain subscription, opened on first use, on a subject of its own.
//
// It is an asynchronous subscription whose callback hands each message to
// receive, not a synchronous one: nats.go gives every synchronous
// subscription a channel of natsgo.SyncQueueLen pointers (65,536: 512 KiB),
// which the garbage collector scans in every cycle whether or not it holds
// anything. With an inbox on each side that was ~10% of the instructions
// of a serial call (issue 13, callgrind). An asynchronous subscription
// keeps what waits in a list, under the same pending limits.
type inbox struct {
	nc  *natsgo.Conn
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	sub     *natsgo.Subscription
	closed  bool
	msgs    chan *natsgo.Msg // unbuffered: the callback hands a message to receive
	done    chan struct{}    // closed by close: the callback stops waiting
	gone    chan struct{}    // closed when the subscription has ended (nats.go)
	dropped int              // slow-consumer drops already logged
}

// open returns the inbox subscription, subscribing on first use. The
// subject is nc.NewInbox(): "<inbox prefix>.<nuid>", "_INBOX.<nuid>" unless
// the connection sets natsgo.CustomInboxPrefix. It waits (up to ctx's
// deadline or inboxFlushTimeout) for the server to confirm the
// subscription, so that a message another connection sends to the address
// once Inbox has returned reaches it; if that wait fails for any reason but
// ctx, the subscription stands (nats.go sends it before anything this
// connection publishes later, and again after a reconnect).
func (b *inbox) open(ctx context.Context) (*natsgo.Subscription, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, fmt.Errorf("transport/nats: inbox: %w", transport.ErrClosed)
	}
	if b.sub != nil {
		return b.sub, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, transport.ContextError(ctx)
	}
	subject := b.nc.NewInbox()
	if b.done == nil {
		b.msgs, b.done = make(chan *natsgo.Msg), make(chan struct{})
	}
	gone := make(chan struct{})
	sub, err := b.nc.Subscribe(subject, b.deliver)
	if err != nil {
		return nil, sendError("subscribe to inbox "+subject, err)
	}
	sub.SetClosedHandler(func(string) { close(gone) })
	// The credit window bounds what peers send, so only bytes need a
	// limit, as a guard against a peer that ignores credit.
	n := int(b.cfg.InboxPendingBytes)
	if n <= 0 {
		n = DefaultInboxPendingBytes
	}
	if err := sub.SetPendingLimits(-1, n); err != nil {
		sub.Unsubscribe()
		return nil, fmt.Errorf("transport/nats: pending limits on inbox %q: %w", subject, err)
	}
	fctx, cancel := context.WithTimeout(ctx, inboxFlushTimeout)
	err = b.nc.FlushWithContext(fctx)
	cancel()
	if err != nil && ctx.Err() != nil {
		sub.Unsubscribe()
		return nil, transport.ContextError(ctx)
	}
	if err != nil {
		b.log.Debug("transport/nats: inbox subscription not confirmed", "subject", subject, "err", err)
	}
	b.sub, b.gone = sub, gone
	return sub, nil
}

// deliver is the subscription's callback: it waits for receive to take m
// (meanwhile nats.go keeps what follows, within the pending limits), or
// for close.
func (b *inbox) deliver(m *natsgo.Msg) {
	select {
	case b.msgs <- m:
	case <-b.done:
	}
}

// address implements Streamer.Inbox.
func (b *inbox) address(ctx context.Context) (string, error) {
	sub, err := b.open(ctx)
	if err != nil {
		return "", err
	}
	return sub.Subject, nil
}

// receive implements Streamer.ReceiveInbox. A slow-consumer drop is logged
// and receiving goes on: the core sees the gap in the sequence numbers.
func (b *inbox) receive(ctx context.Context) (*transport.Message, error) {
	sub, err := b.open(ctx)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	gone := b.gone
	b.mu.Unlock()
	select {
	case m := <-b.msgs:
		b.noteDrops(sub)
		return inboxMessage(m), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.done:
		return nil, fmt.Errorf("transport/nats: inbox %q: %w", sub.Subject, transport.ErrClosed)
	case <-gone:
		return nil, fmt.Errorf("transport/nats: inbox %q: %w: subscription ended (connection closed)", sub.Subject, transport.ErrClosed)
	}
}

// noteDrops logs the messages nats.go dropped as a slow consumer since the
// last note.
func (b *inbox) noteDrops(sub *natsgo.Subscription) {
	n, err := sub.Dropped()
	if err != nil {
		return
	}
	b.mu.Lock()
	more := n > b.dropped
	b.dropped = max(b.dropped, n)
	b.mu.Unlock()
	if more {
		b.log.Warn("transport/nats: slow consumer: inbox messages dropped", "subject", sub.Subject, "dropped_total", n)
	}
}

// inboxMessage converts a message received on an inbox: every NATS header
// in Header (canonical keys, Content-Type included), ContentType from
// Content-Type, Deadline from Httpbus-Deadline (a malformed one is left in
// Header and read as none: the core decides).
func inboxMessage(m *natsgo.Msg) *transport.Message {
	h := receivedHeader(m.Header)
	out := &transport.Message{Body: m.Data, Header: h}
	if h != nil {
		out.ContentType = h.Get("Content-Type")
		if v := h.Get(transport.HeaderDeadline); v != "" {
			out.Deadline, _ = transport.ParseDeadline(v)
		}
	}
	return out
}

// close unsubscribes the inbox; receive then returns transport.ErrClosed.
func (b *inbox) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	if b.done != nil {
		close(b.done)
	}
	if b.sub != nil {
		b.sub.Unsubscribe() // ErrConnectionClosed when nc is gone: fine
	}
}

// send implements Streamer.Send on lim.nc.
func send(ctx context.Context, lim *payloadLimit, addr string, m *transport.Message) error {
	if err := ctx.Err(); err != nil {
		return transport.ContextError(ctx)
	}
	if err := checkSubject("inbox address", addr); err != nil {
		return err
	}
	out := newOutgoing(addr, m)
	defer out.release()
	if err := lim.check(&out.msg); err != nil {
		return err
	}
	if err := lim.nc.PublishMsg(&out.msg); err != nil {
		return sendError("send to "+addr, err)
	}
	return nil
}
