package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
)

// correlator matches replies to requests by correlation id, for the raw
// twins that do request/reply by hand (amqp, stomp).
type correlator struct {
	seq     atomic.Uint64
	mu      sync.Mutex
	pending map[string]chan []byte
}

// call registers a new correlation id, runs send with it, and waits for
// the reply that deliver hands over, checking that it has want bytes.
func (c *correlator) call(ctx context.Context, want int, send func(id string) error) error {
	id := strconv.FormatUint(c.seq.Add(1), 36)
	ch := make(chan []byte, 1)
	c.mu.Lock()
	if c.pending == nil {
		c.pending = map[string]chan []byte{}
	}
	c.pending[id] = ch
	c.mu.Unlock()
	err := send(id)
	if err == nil {
		select {
		case b := <-ch:
			if len(b) != want {
				return fmt.Errorf("echo of %d bytes came back with %d", want, len(b))
			}
			return nil
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
	return err
}

// deliver hands a reply to the caller waiting for id; a reply nobody waits
// for (late, or from an earlier run) is dropped.
func (c *correlator) deliver(id string, body []byte) {
	c.mu.Lock()
	ch := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if ch != nil {
		ch <- body
	}
}
