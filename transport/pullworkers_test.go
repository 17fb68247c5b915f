package transport_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/httpbus/httpbus/transport"
)

// TestPullWorkers: the pool starts once, grows to serve deliveries side by
// side up to its bound (SetMax, not changed once started) and never past
// it, hands a delivery taken after its context ended to abandon, and
// reports its end once pull fails.
func TestPullWorkers(t *testing.T) {
	const max = 4
	in := make(chan *transport.Delivery)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pullErr := make(chan struct{})
	pull := func(ctx context.Context) (*transport.Delivery, error) {
		select {
		case d := <-in:
			return d, nil
		case <-pullErr:
			return nil, transport.ErrClosed
		}
	}
	var running, peak atomic.Int32
	release := make(chan struct{})
	var served sync.WaitGroup
	serve := func(d *transport.Delivery) {
		n := running.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		running.Add(-1)
		served.Done()
	}
	abandoned := make(chan *transport.Delivery, 1)
	var p transport.PullWorkers
	p.SetMax(max)
	if !p.Start(ctx, pull, serve, func(d *transport.Delivery) { abandoned <- d }) {
		t.Fatal("Start of a new pool reported false")
	}
	if p.Start(ctx, pull, serve, nil) {
		t.Fatal("a second Start reported true")
	}
	p.SetMax(1) // ignored once started

	// max deliveries are taken at once: each send succeeds only when a
	// worker pulls, and a worker pulls only when it has nothing to serve.
	served.Add(max)
	for i := 0; i < max; i++ {
		select {
		case in <- &transport.Delivery{Service: "s"}:
		case <-time.After(5 * time.Second):
			t.Fatalf("delivery %d not taken: the pool did not grow", i)
		}
	}
	// One more is not taken while max are being served (a bound broken
	// shows within the wait; a kept one cannot fail it).
	select {
	case in <- &transport.Delivery{}:
		t.Fatal("a delivery was taken beyond the bound of 4 workers")
	case <-time.After(50 * time.Millisecond):
	}
	if got := peak.Load(); got != max {
		t.Fatalf("peak concurrency %d, want %d", got, max)
	}
	close(release)
	served.Wait()

	// After ctx ends, a delivery a worker still takes goes to abandon.
	cancel()
	last := &transport.Delivery{Service: "last"}
	select {
	case in <- last:
		if d := <-abandoned; d != last {
			t.Fatalf("abandoned %v, want the last delivery", d)
		}
	case <-p.Done():
		// Every worker saw ctx end before pulling again: nothing was taken.
	case <-time.After(5 * time.Second):
		t.Fatal("no worker took the delivery nor ended after ctx ended")
	}
	close(pullErr)
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after pull failed and ctx ended")
	}
}
