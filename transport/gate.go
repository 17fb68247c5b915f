package transport

import (
	"context"
	"sync"
	"sync/atomic"
)

// Gate is the connection state of a backend endpoint that reconnects by
// itself, for the callers that must wait for it: the backend calls Open
// once a connection is up and set up (subscriptions made again), Shut when
// it is lost, and Close once, for good, when the endpoint closes. Calls,
// publishes and sends Wait for an open gate (up to their context) instead
// of failing during a reconnect; State reports it for health checks
// (StateReporter).
//
// The zero value is a shut gate (StateReconnecting until the first Open).
// A Gate is safe for concurrent use and must not be copied after first use.
// Wait on an open gate, Done and Context take no lock.
type Gate struct {
	open   atomic.Bool
	closed atomic.Bool

	once   sync.Once
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc

	mu    sync.Mutex
	ready chan struct{} // closed while open; replaced at Shut
}

// init makes the context and the first ready channel, once.
func (g *Gate) init() {
	g.once.Do(func() {
		g.ctx, g.cancel = context.WithCancel(context.Background())
		g.ready = make(chan struct{})
	})
}

// Open marks the connection usable and releases the callers waiting for
// it. A no-op when open or closed.
func (g *Gate) Open() {
	g.init()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed.Load() || g.open.Load() {
		return
	}
	g.open.Store(true)
	close(g.ready)
}

// Shut marks the connection lost: callers Wait from now on until the next
// Open. A no-op when shut or closed.
func (g *Gate) Shut() {
	g.init()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open.Load() {
		g.open.Store(false)
		g.ready = make(chan struct{})
	}
}

// Close closes the gate for good: Wait returns ErrClosed, Done is closed
// and Context cancelled.
// It reports whether this call closed it (false after the first).
func (g *Gate) Close() bool {
	g.init()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed.Swap(true) {
		return false
	}
	g.open.Store(false)
	g.cancel()
	return true
}

// Closed reports whether Close was called.
func (g *Gate) Closed() bool { return g.closed.Load() }

// Done returns a channel closed by Close, for selects.
func (g *Gate) Done() <-chan struct{} { return g.Context().Done() }

// Context returns a context cancelled by Close, to bound work that must
// not outlive the endpoint (with context.AfterFunc, say).
func (g *Gate) Context() context.Context {
	g.init()
	return g.ctx
}

// Wait returns nil once the gate is open (at once when it is), ErrClosed
// once it is closed, and ctx.Err() if ctx ends first.
func (g *Gate) Wait(ctx context.Context) error {
	if g.open.Load() {
		return nil
	}
	g.init()
	g.mu.Lock()
	ready := g.ready
	g.mu.Unlock()
	select {
	case <-ready:
		if g.closed.Load() {
			return ErrClosed
		}
		return nil
	case <-g.ctx.Done():
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// State returns StateConnected while open, StateClosed after Close, else
// StateReconnecting.
func (g *Gate) State() State {
	switch {
	case g.closed.Load():
		return StateClosed
	case g.open.Load():
		return StateConnected
	}
	return StateReconnecting
}
