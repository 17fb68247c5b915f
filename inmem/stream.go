package inmem

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	"github.com/httpbus/httpbus/transport"
)

// InboxQueue is the number of stream messages an inbox buffers before Send
// waits for its reader (the core reads each inbox continuously; credit
// bounds what a stream may have in flight).
const InboxQueue = 256

// inbox is an endpoint's private address on a Bus (transport.Streamer).
type inbox struct {
	addr string
	ch   chan *transport.Message
	gone chan struct{}
}

// endpoint gives a Conn or Listener its inbox, opened on first use.
type endpoint struct {
	mu     sync.Mutex
	box    *inbox
	closed bool
}

func (e *endpoint) open(b *Bus) (*inbox, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, fmt.Errorf("transport/inmem: inbox: %w", transport.ErrClosed)
	}
	if e.box == nil {
		b.mu.Lock()
		b.nextBox++
		box := &inbox{addr: "inbox." + strconv.FormatUint(b.nextBox, 10), ch: make(chan *transport.Message, InboxQueue), gone: make(chan struct{})}
		b.inboxes[box.addr] = box
		b.mu.Unlock()
		e.box = box
	}
	return e.box, nil
}

func (e *endpoint) close(b *Bus) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.closed = true
	if e.box != nil {
		b.mu.Lock()
		delete(b.inboxes, e.box.addr)
		b.mu.Unlock()
		close(e.box.gone)
	}
}

func (e *endpoint) inbox(ctx context.Context, b *Bus) (string, error) {
	box, err := e.open(b)
	if err != nil {
		return "", err
	}
	return box.addr, nil
}

func (e *endpoint) receive(ctx context.Context, b *Bus) (*transport.Message, error) {
	box, err := e.open(b)
	if err != nil {
		return nil, err
	}
	select {
	case m := <-box.ch:
		return m, nil
	case <-box.gone:
		return nil, fmt.Errorf("transport/inmem: inbox: %w", transport.ErrClosed)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// send delivers a copy of m to the inbox at addr; an inbox that is gone
// takes nothing, without error (as a broker drops a message to a deleted
// temporary queue).
func (b *Bus) send(ctx context.Context, closed bool, addr string, m *transport.Message) error {
	if closed {
		return fmt.Errorf("transport/inmem: send: %w", transport.ErrClosed)
	}
	b.mu.Lock()
	box := b.inboxes[addr]
	b.mu.Unlock()
	if box == nil {
		return nil
	}
	c := *m
	c.Header = m.Header.Clone()
	select {
	case box.ch <- &c:
		return nil
	case <-box.gone:
		return nil
	case <-ctx.Done():
		return transport.ContextError(ctx)
	}
}

// Inbox implements transport.Streamer.
func (c *Conn) Inbox(ctx context.Context) (string, error) { return c.ends.inbox(ctx, c.bus) }

// ReceiveInbox implements transport.Streamer.
func (c *Conn) ReceiveInbox(ctx context.Context) (*transport.Message, error) {
	return c.ends.receive(ctx, c.bus)
}

// Send implements transport.Streamer.
func (c *Conn) Send(ctx context.Context, addr string, m *transport.Message) error {
	return c.bus.send(ctx, c.isClosed(), addr, m)
}

// Inbox implements transport.Streamer. The inbox stays open while the
// listener drains (streams in flight finish) and closes with Close.
func (l *Listener) Inbox(ctx context.Context) (string, error) { return l.ends.inbox(ctx, l.bus) }

// ReceiveInbox implements transport.Streamer.
func (l *Listener) ReceiveInbox(ctx context.Context) (*transport.Message, error) {
	return l.ends.receive(ctx, l.bus)
}

// Send implements transport.Streamer.
func (l *Listener) Send(ctx context.Context, addr string, m *transport.Message) error {
	l.ends.mu.Lock()
	closed := l.ends.closed
	l.ends.mu.Unlock()
	return l.bus.send(ctx, closed, addr, m)
}
