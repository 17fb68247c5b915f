package transport

import (
	"context"
	"sync/atomic"
)

// PullWorkers is how a listener that takes its deliveries with a blocking
// call of its own (a NATS synchronous subscription, inmem's channel)
// implements Pusher: a pool of goroutines of which each takes the next
// delivery itself, only when it has none to serve, and serves it where it
// took it. Compared with handing each delivery from Receive to a Server
// worker this saves a goroutine handoff per request, and the deliveries not
// yet taken stay where the listener keeps them (a broker's pending limits,
// Close handing them back).
//
// The pool starts with one worker and starts one more whenever the last
// idle one takes a delivery, up to max workers (the Server's in-flight
// bound, learnt through Prefetcher.SetPrefetch, so that no taken delivery
// waits for an in-flight slot out of the listener's reach); once the load
// has passed, at most MaxIdlePullWorkers stay waiting, the others return.
//
// The zero value is ready: a listener keeps one as a field, passes
// Prefetcher.SetPrefetch on to SetMax and Pusher.Push on to Start.
type PullWorkers struct {
	max     atomic.Int32
	claimed atomic.Bool // Start has begun
	started atomic.Bool // Start has set the pool up (done is set)
	ctx     context.Context
	pull    func(context.Context) (*Delivery, error)
	serve   func(*Delivery)
	abandon func(*Delivery)
	total   atomic.Int32  // workers running
	idle    atomic.Int32  // workers waiting in pull
	done    chan struct{} // closed when the last worker has returned
}

// MaxIdlePullWorkers is how many PullWorkers wait for deliveries at most:
// one more that finishes serving returns instead. It was 2: with 32
// callers on 2 cores the number of idle workers swings past that all the
// time, and the pool started a goroutine (whose stack then grew to the
// Server's depth) every 13 calls on inmem and every 16 on nats; at 8,
// about one in 100,000 calls on inmem and one in 40 on nats (the
// runtime/metrics count /sched/goroutines-created, issue 13).
const MaxIdlePullWorkers = 8

// SetMax sets the most workers that serve at once: the Server's in-flight
// bound, which a listener learns through Prefetcher.SetPrefetch. n below 1
// counts as 1; without a call the bound is DefaultMaxInFlight. Ignored
// once Start has run.
func (p *PullWorkers) SetMax(n int) {
	if !p.claimed.Load() {
		p.max.Store(int32(max(n, 1)))
	}
}

// Start starts the pool, once (a later call does nothing and returns
// false): it serves with serve (the function Pusher.Push was given) what
// pull returns. pull blocks until the next delivery or until its context
// ends; an error from it ends the worker that called it (every worker, in
// practice: a listener's end shows to all of them). The workers stop
// taking deliveries once ctx ends (the Server stopped its intake, or the
// listener closed): a delivery pull returned just then is given to
// abandon instead of serve (a backend hands it back to its broker), or
// dropped when abandon is nil. Done reports the end of the last worker.
func (p *PullWorkers) Start(ctx context.Context, pull func(context.Context) (*Delivery, error), serve func(*Delivery), abandon func(*Delivery)) bool {
	if serve == nil || !p.claimed.CompareAndSwap(false, true) {
		return false
	}
	if p.max.Load() < 1 {
		p.max.Store(DefaultMaxInFlight)
	}
	p.ctx, p.pull, p.serve, p.abandon = ctx, pull, serve, abandon
	p.done = make(chan struct{})
	p.total.Store(1)
	p.idle.Store(1)
	p.started.Store(true)
	go p.work()
	return true
}

// Started reports whether Start has run: the listener is in push mode.
func (p *PullWorkers) Started() bool { return p.started.Load() }

// Done is closed once every worker has returned; nil before Start.
func (p *PullWorkers) Done() <-chan struct{} { return p.done }

func (p *PullWorkers) work() {
	defer p.exited()
	for p.ctx.Err() == nil {
		d, err := p.pull(p.ctx)
		if err != nil {
			return
		}
		p.idle.Add(-1)
		if p.ctx.Err() != nil {
			if p.abandon != nil {
				p.abandon(d)
			}
			return
		}
		if p.idle.Load() <= 0 {
			p.grow()
		}
		p.serve(d)
		if !p.rest() {
			return
		}
	}
}

// rest counts a worker that finished serving as idle, unless
// MaxIdlePullWorkers already are: then it reports false and the worker
// ends.
func (p *PullWorkers) rest() bool {
	for {
		n := p.idle.Load()
		if n >= MaxIdlePullWorkers {
			return false
		}
		if p.idle.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// grow starts one more worker unless the pool is full.
func (p *PullWorkers) grow() {
	for {
		n := p.total.Load()
		if n >= p.max.Load() {
			return
		}
		if p.total.CompareAndSwap(n, n+1) {
			break
		}
	}
	p.idle.Add(1)
	go p.work()
}

func (p *PullWorkers) exited() {
	if p.total.Add(-1) == 0 {
		close(p.done)
	}
}
