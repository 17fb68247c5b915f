package transport

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// waitIdle waits until n workers of p wait, failing after 10 s.
func waitIdle(t *testing.T, p *PushWorkers, n int32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for p.idle.Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers idle, want %d", p.idle.Load(), n)
		}
		runtime.Gosched()
	}
}

// TestPushWorkersReuse: a worker that finished serves the next delivery,
// with no goroutine started for it.
func TestPushWorkersReuse(t *testing.T) {
	var p PushWorkers
	defer p.Close()
	ran := make(chan int, 1)
	p.Serve(func(*Delivery) { ran <- runtime.NumGoroutine() }, nil)
	<-ran
	waitIdle(t, &p, 1)
	before := runtime.NumGoroutine()
	p.Serve(func(*Delivery) { ran <- runtime.NumGoroutine() }, nil)
	if during := <-ran; during != before {
		t.Fatalf("%d goroutines while the second delivery ran, %d before: a worker was started instead of reused", during, before)
	}
	waitIdle(t, &p, 1)
}

// TestPushWorkersNeverBlock: Serve starts workers for as many deliveries
// as arrive while the others are busy, each handed its own delivery, and
// at most MaxIdlePushWorkers of them stay once they are done; Close ends
// the idle ones.
func TestPushWorkersNeverBlock(t *testing.T) {
	var p PushWorkers
	const n = 3 * MaxIdlePushWorkers
	var started, release sync.WaitGroup
	started.Add(n)
	release.Add(1)
	got := make(chan *Delivery, n)
	for i := range n {
		d := &Delivery{Service: string(rune('a' + i))}
		p.Serve(func(d *Delivery) {
			got <- d
			started.Done()
			release.Wait() // all n run at once, or this never returns
		}, d)
	}
	allStarted := make(chan struct{})
	go func() { started.Wait(); close(allStarted) }()
	select {
	case <-allStarted:
	case <-time.After(10 * time.Second):
		t.Fatalf("not all %d deliveries were being served at once after 10 s: Serve waited for a busy worker", n)
	}
	release.Done()
	seen := map[string]bool{}
	for range n {
		seen[(<-got).Service] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct deliveries served, want %d", len(seen), n)
	}
	waitIdle(t, &p, MaxIdlePushWorkers)
	before := runtime.NumGoroutine()
	p.Close()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before-MaxIdlePushWorkers {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines 10 s after Close, want at most %d", runtime.NumGoroutine(), before-MaxIdlePushWorkers)
		}
		runtime.Gosched()
	}
	// After Close a delivery is still served.
	done := make(chan struct{})
	p.Serve(func(*Delivery) { close(done) }, nil)
	<-done
}
