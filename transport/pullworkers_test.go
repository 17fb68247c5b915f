package transport

import (
	"context"
	"testing"
	"time"
)

// TestPullWorkers: the pool starts once, grows to serve deliveries side by
// side up to its bound (SetMax, not changed once started) and not past it,
// hands a delivery taken after its context ended to abandon, and reports
// its end once pull fails.
func TestPullWorkers(t *testing.T) {
	const max = 4
	in := make(chan *Delivery)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	pullErr := make(chan struct{})
	pull := func(ctx context.Context) (*Delivery, error) {
		select {
		case d := <-in:
			return d, nil
		case <-pullErr:
			return nil, ErrClosed
		}
	}
	started := make(chan struct{}, max)
	release := make(chan struct{})
	serve := func(d *Delivery) {
		started <- struct{}{}
		<-release
	}
	abandoned := make(chan *Delivery, 1)
	var p PullWorkers
	p.SetMax(max)
	if !p.Start(ctx, pull, serve, func(d *Delivery) { abandoned <- d }) {
		t.Fatal("Start of a new pool reported false")
	}
	if p.Start(ctx, pull, serve, nil) {
		t.Fatal("a second Start reported true")
	}
	p.SetMax(1) // ignored once started

	// max deliveries are taken and served side by side: each send succeeds
	// only when a worker pulls, and a worker pulls only when it has
	// nothing to serve.
	for i := range max {
		select {
		case in <- &Delivery{Service: "s"}:
		case <-time.After(5 * time.Second):
			t.Fatalf("delivery %d not taken: the pool did not grow", i)
		}
	}
	for range max {
		<-started
	}
	// Every worker is serving and none is left to pull: the pool is at its
	// bound (a worker grows the pool before it serves, so this is final).
	if total, idle := p.total.Load(), p.idle.Load(); total != max || idle != 0 {
		t.Fatalf("with %d deliveries in service: %d workers, %d idle; want %d and 0", max, total, idle, max)
	}
	close(release)

	// After ctx ends, a delivery a worker still takes goes to abandon.
	cancel()
	last := &Delivery{Service: "last"}
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
