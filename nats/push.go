package nats

import (
	"context"

	natsgo "github.com/nats-io/nats.go"

	"github.com/httpbus/httpbus/transport"
)

// SetPrefetch implements transport.Prefetcher, only to learn the Server's
// in-flight bound n: it is the most goroutines Push serves deliveries on
// at once, so that no received request waits for an in-flight slot out of
// the subscription's reach (where Close could not hand it back). NATS core
// has no prefetch: the pending limits stay as configured (Config.PendingMsgs,
// Config.PendingBytes; see the package doc, Delivery). Calls after Push
// are ignored; n below 1 counts as 1.
func (l *Listener) SetPrefetch(n int) { l.workers.SetMax(n) }

// Push implements transport.Pusher. transport.Server calls it before its
// first Receive; from then on the Listener serves each delivery with serve
// on the goroutine that received it, from a transport.PullWorkers pool of
// up to the in-flight bound (SetPrefetch; transport.DefaultMaxInFlight when
// it was not called), instead of handing it to Receive. A worker takes a
// message only when it has nothing to serve, so the messages not yet taken
// stay in the subscription as in pull mode (pending limits, Close hands
// them back). Receive then only waits for the end: transport.ErrClosed
// once every worker has returned after Drain or Close (or the
// subscription's error), ctx's error when ctx ends first, which also stops
// the workers from taking more messages (the Server has stopped its
// intake); a request taken just then goes back to its subject as Close
// hands requests back.
func (l *Listener) Push(serve func(*transport.Delivery)) {
	l.workers.Start(l.pushCtx, l.pull, serve, l.abandon)
}

// pull returns the next delivery for a worker.
func (l *Listener) pull(ctx context.Context) (*transport.Delivery, error) {
	if l.direct != nil {
		d, _, err := l.next(ctx, l.direct, "")
		return d, err
	}
	select {
	case d := <-l.ch:
		return d, nil
	case <-l.stopped:
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, transport.ErrClosed
	}
}

// abandon hands back a request a worker took as the intake stopped.
func (l *Listener) abandon(d *transport.Delivery) {
	if m, _ := d.Token.(*natsgo.Msg); m != nil && d.Topic == "" {
		l.requeue(m)
	}
}
