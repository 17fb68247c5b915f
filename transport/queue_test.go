package transport

import (
	"context"
	"errors"
	"sync"
	"testing"
)

func TestQueue(t *testing.T) {
	q := NewQueue[int](2)
	if !q.Put(1) || !q.Put(2) {
		t.Fatal("Put into a queue with room refused")
	}
	if q.Put(3) {
		t.Fatal("Put into a full queue accepted")
	}
	if q.Len() != 2 {
		t.Fatalf("Len = %d, want 2", q.Len())
	}
	ctx := context.Background()
	if v, err := q.Take(ctx); v != 1 || err != nil {
		t.Fatalf("Take = %d, %v; want 1", v, err)
	}
	if !q.Close() || q.Close() {
		t.Fatal("Close: want true, then false")
	}
	if q.Put(4) {
		t.Fatal("Put after Close accepted")
	}
	if v, err := q.Take(ctx); v != 2 || err != nil {
		t.Fatalf("Take after Close = %d, %v; want the value still queued", v, err)
	}
	if _, err := q.Take(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Take of an empty closed queue = %v, want ErrClosed", err)
	}
	if _, ok := q.TryTake(); ok {
		t.Fatal("TryTake of an empty queue reported a value")
	}
}

func TestQueueTakeWaits(t *testing.T) {
	q := NewQueue[string](1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := q.Take(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Take with a cancelled ctx = %v", err)
	}
	got := make(chan string)
	go func() {
		v, _ := q.Take(context.Background())
		got <- v
	}()
	q.Put("x")
	if v := <-got; v != "x" {
		t.Fatalf("waiting Take = %q", v)
	}
	go func() {
		_, err := q.Take(context.Background())
		got <- err.Error()
	}()
	q.Close()
	if v := <-got; v != ErrClosed.Error() {
		t.Fatalf("Take released by Close: %q", v)
	}
}

func TestQueueConcurrentClose(t *testing.T) {
	q := NewQueue[int](1000)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 100 {
				q.Put(i*100 + j)
			}
		}()
	}
	q.Close()
	wg.Wait()
	n := 0
	for {
		if _, err := q.Take(context.Background()); err != nil {
			break
		}
		n++
	}
	if n > 800 {
		t.Fatalf("took %d values, more than were put", n)
	}
}
