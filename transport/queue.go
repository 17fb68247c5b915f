package transport

import (
	"context"
	"sync"
)

// Queue is the bounded hand-off between a client library's receive
// callback and a backend's Listener.Receive or Streamer.ReceiveInbox: Put
// never blocks the library's goroutine (a full queue refuses the value;
// the backend settles or drops it, and logs), Take waits for the next
// value. Close ends intake as Drainer.Drain promises: Take returns the
// values already queued, then ErrClosed.
//
// Make one with NewQueue. A Queue is safe for concurrent use.
type Queue[T any] struct {
	c chan T

	mu     sync.RWMutex // Put holds it shared, so that Close never races a send
	closed bool
	done   chan struct{} // closed by Close
}

// NewQueue returns an empty queue that holds up to size values (at least
// one).
func NewQueue[T any](size int) *Queue[T] {
	return &Queue[T]{c: make(chan T, max(1, size)), done: make(chan struct{})}
}

// Put queues v and reports true, or reports false at once when the queue
// is full or closed.
func (q *Queue[T]) Put(v T) bool {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		return false
	}
	select {
	case q.c <- v:
		return true
	default:
		return false
	}
}

// Take returns the next value, waiting for one. After Close it returns
// the values still queued, then ErrClosed; it returns ctx.Err() if ctx
// ends first.
func (q *Queue[T]) Take(ctx context.Context) (T, error) {
	select {
	case v := <-q.c:
		return v, nil
	default:
	}
	var zero T
	select {
	case v := <-q.c:
		return v, nil
	case <-q.done:
		if v, ok := q.TryTake(); ok {
			return v, nil
		}
		return zero, ErrClosed
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// TryTake returns the next value without waiting; false when the queue is
// empty.
func (q *Queue[T]) TryTake() (T, bool) {
	select {
	case v := <-q.c:
		return v, true
	default:
		var zero T
		return zero, false
	}
}

// Close ends intake: Put refuses values from now on, and Take returns
// ErrClosed once the queue is empty. It reports whether this call closed
// it (false after the first).
func (q *Queue[T]) Close() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	q.closed = true
	close(q.done)
	return true
}

// Len returns the number of values queued.
func (q *Queue[T]) Len() int { return len(q.c) }
