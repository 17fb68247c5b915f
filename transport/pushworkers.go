package transport

import (
	"sync"
	"sync/atomic"
)

// PushWorkers is how a listener whose deliveries arrive on a goroutine of
// its broker client (go-stomp's subscription channel, paho's callback)
// serves each on a goroutine other than that one, which must not wait for
// a handler: Serve hands the delivery to an idle worker if one is waiting,
// else starts a new worker. It never blocks, and it bounds nothing (the
// broker's prefetch does, or the Server's in-flight bound). The Server
// serves a pull listener's deliveries (Receive) on one too.
//
// It exists so that a worker's stack outlives its request. A new goroutine
// per request starts from the runtime's initial stack and grows it, copying
// it, to the depth of a Server's path on every request: on stomp over
// RabbitMQ that was ~33,000 of ~280,000 instructions per serial call in the
// serving process (callgrind, issue 13). A kept worker's stack stays grown.
//
// A worker that finishes waits for the next delivery while fewer than
// MaxIdlePushWorkers wait; others return. Close makes the waiting ones
// return and the busy ones return when done. The zero value is ready.
type PushWorkers struct {
	initOnce sync.Once
	work     chan pushed // unbuffered: a send succeeds only with a worker waiting
	stop     chan struct{}
	idle     atomic.Int32
	stopOnce sync.Once
}

type pushed struct {
	serve func(*Delivery)
	d     *Delivery
}

// MaxIdlePushWorkers is how many PushWorkers wait for deliveries at most:
// every delivery that finds no idle worker starts a goroutine, whose stack
// then grows again (MaxIdlePullWorkers is the same for the same reason).
const MaxIdlePushWorkers = 8

func (p *PushWorkers) init() {
	p.initOnce.Do(func() {
		p.work = make(chan pushed)
		p.stop = make(chan struct{})
	})
}

// Serve runs serve(d) on a worker, at once. It never blocks. After Close
// it still runs it, on a goroutine of its own.
func (p *PushWorkers) Serve(serve func(*Delivery), d *Delivery) {
	p.init()
	select {
	case p.work <- pushed{serve, d}:
	default:
		go p.run(pushed{serve, d})
	}
}

func (p *PushWorkers) run(w pushed) {
	for {
		w.serve(w.d)
		w = pushed{} // keeps nothing of the last request while idle
		if p.idle.Add(1) > MaxIdlePushWorkers {
			p.idle.Add(-1)
			return
		}
		select {
		case w = <-p.work:
			p.idle.Add(-1)
		case <-p.stop:
			p.idle.Add(-1)
			return
		}
	}
}

// Close makes the idle workers return, and the busy ones once they are
// done. It does not wait for them.
func (p *PushWorkers) Close() {
	p.init()
	p.stopOnce.Do(func() { close(p.stop) })
}
