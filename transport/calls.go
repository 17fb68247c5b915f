package transport

import (
	"strconv"
	"sync"
	"sync/atomic"
)

// Calls is a table of calls in flight keyed by correlation id, for a
// backend that matches replies to calls itself (the shape of net/rpc's
// Client.pending): Start registers a call and gives it a fresh id to send
// with the request, the goroutine reading replies hands each one to its
// call with Answer, and the caller removes its entry with Done when it
// stops waiting (answered, timed out or cancelled). AnswerAll answers every
// call in flight at once, for a connection that is lost or closed.
//
// Ids are Prefix followed by a base-36 counter: unique among the table's
// calls for its life (2^64 calls), short, and plain ASCII, so they fit any
// broker's correlation field (MQTT Correlation Data, AMQP correlation_id,
// a STOMP header). T is what a reply carries, such as *Message or a
// message-and-error pair.
//
// The zero value is an empty table. A Calls is safe for concurrent use and
// must not be copied after first use.
type Calls[T any] struct {
	// Prefix is put before every id, for ids unique across tables (a
	// reply topic or queue shared by several processes). Set it before
	// the first Start.
	Prefix string

	next atomic.Uint64
	mu   sync.Mutex
	m    map[string]chan T
}

// Start registers a new call and returns its id and the channel its answer
// arrives on: one value at most, buffered, so that Answer never blocks.
// The caller must call Done(id) once it stops waiting.
func (c *Calls[T]) Start() (id string, answer <-chan T) {
	var b [48]byte // the id is built here and copied once
	id = string(strconv.AppendUint(append(b[:0], c.Prefix...), c.next.Add(1), 36))
	ch := make(chan T, 1)
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[string]chan T)
	}
	c.m[id] = ch
	c.mu.Unlock()
	return id, ch
}

// Answer hands v to the call id and removes it from the table. It reports
// false, and drops v, when no call has that id: its caller gave up, or
// this is a second reply to one call.
func (c *Calls[T]) Answer(id string, v T) bool {
	c.mu.Lock()
	ch, ok := c.m[id]
	delete(c.m, id)
	c.mu.Unlock()
	if ok {
		ch <- v
	}
	return ok
}

// Done removes the call id; a no-op when it was answered already.
func (c *Calls[T]) Done(id string) {
	c.mu.Lock()
	delete(c.m, id)
	c.mu.Unlock()
}

// AnswerAll answers every call in flight with v (an error, typically) and
// empties the table; it returns how many it answered. Calls started later
// are not affected.
func (c *Calls[T]) AnswerAll(v T) int {
	c.mu.Lock()
	m := c.m
	c.m = nil
	c.mu.Unlock()
	for _, ch := range m {
		ch <- v
	}
	return len(m)
}

// Len returns the number of calls in flight.
func (c *Calls[T]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
