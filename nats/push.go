package nats

import (
	"sync/atomic"

	natsgo "github.com/nats-io/nats.go"

	"github.com/httpbus/httpbus/transport"
)

// workerPool counts the goroutines serving a Listener's deliveries in push
// mode (Listener.Push).
type workerPool struct {
	total atomic.Int32  // workers running
	idle  atomic.Int32  // workers waiting for a delivery
	done  chan struct{} // closed when the last worker has returned
}

// SetPrefetch implements transport.Prefetcher, only to learn the Server's
// in-flight bound n: it is the most goroutines Push serves deliveries on
// at once, so that no received request waits for an in-flight slot out of
// the subscription's reach (where Close could not hand it back). NATS core
// has no prefetch: the pending limits stay as configured (Config.PendingMsgs,
// Config.PendingBytes; see the package doc, Delivery). Calls after Push
// are ignored; n below 1 counts as 1.
func (l *Listener) SetPrefetch(n int) {
	if l.serve.Load() != nil {
		return
	}
	l.maxWorkers.Store(int32(max(n, 1)))
}

// Push implements transport.Pusher. transport.Server calls it before its
// first Receive; from then on the Listener serves each delivery with serve
// on the goroutine that received it, from a pool of workers started as
// needed (one more whenever every worker is busy) up to the in-flight
// bound (SetPrefetch; transport.DefaultMaxInFlight when it was not called),
// of which at most maxIdleWorkers (2) stay waiting once the load has
// passed, instead of handing it to Receive: that saves a goroutine handoff and a
// goroutine per request. A worker takes a message only when it has nothing
// to serve, so the messages not yet taken stay in the subscription as in
// pull mode (pending limits, Close hands them back). Receive then only
// waits for the end: transport.ErrClosed once every worker has returned
// after Drain or Close (or the subscription's error), ctx's error when ctx
// ends first, which also stops the workers from taking more messages (the
// Server has stopped its intake).
func (l *Listener) Push(serve func(*transport.Delivery)) {
	if serve == nil || !l.serve.CompareAndSwap(nil, &serve) {
		return
	}
	if l.maxWorkers.Load() <= 0 {
		l.maxWorkers.Store(transport.DefaultMaxInFlight)
	}
	l.workers.total.Store(1)
	l.workers.idle.Store(1)
	go l.work(serve)
}

// work serves deliveries until the listener ends or its Server stops its
// intake.
func (l *Listener) work(serve func(*transport.Delivery)) {
	defer l.workerExited()
	for l.pushCtx.Err() == nil {
		d, err := l.pull()
		if err != nil {
			return
		}
		l.workers.idle.Add(-1)
		if l.pushCtx.Err() != nil {
			// Taken as the intake stopped: back to the broker, as Close
			// does with what it holds.
			if m, _ := d.Token.(*natsgo.Msg); m != nil && d.Topic == "" {
				l.requeue(m)
			}
			return
		}
		if l.workers.idle.Load() <= 0 {
			l.grow(serve)
		}
		serve(d)
		if !l.workers.rest() {
			return
		}
	}
}

// maxIdleWorkers is how many workers wait for deliveries at most: one
// more that finishes serving returns instead.
const maxIdleWorkers = 2

// rest counts a worker that finished serving as idle, unless
// maxIdleWorkers already are: then it reports false and the worker ends.
func (p *workerPool) rest() bool {
	for {
		n := p.idle.Load()
		if n >= maxIdleWorkers {
			return false
		}
		if p.idle.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// pull returns the next delivery for a worker.
func (l *Listener) pull() (*transport.Delivery, error) {
	if l.direct != nil {
		d, _, err := l.next(l.pushCtx, l.direct, "")
		return d, err
	}
	select {
	case d := <-l.ch:
		return d, nil
	case <-l.stopped:
		return nil, transport.ErrClosed
	case <-l.pushCtx.Done():
		return nil, transport.ErrClosed
	}
}

// grow starts one more worker unless the pool is full.
func (l *Listener) grow(serve func(*transport.Delivery)) {
	for {
		n := l.workers.total.Load()
		if n >= l.maxWorkers.Load() {
			return
		}
		if l.workers.total.CompareAndSwap(n, n+1) {
			break
		}
	}
	l.workers.idle.Add(1)
	go l.work(serve)
}

func (l *Listener) workerExited() {
	if l.workers.total.Add(-1) == 0 {
		close(l.workers.done)
	}
}
