package transport

import (
	"context"
	"sync"
	"time"
)

// lazyDeadline is a context that ends at its deadline (none if zero), at
// cancel, or when its parent ends, and whose channel, timer and watch on
// the parent exist only once Done is called: most handlers and most
// backends' Reply never ask for Done, and a context.WithDeadline per
// request (timer, parent registration) was up to 10% of an inmem round
// trip's CPU (issue 13). Err works without Done: it compares the deadline
// with the clock and asks the parent.
type lazyDeadline struct {
	context.Context               // the parent: values, and its end
	deadline        time.Time     // zero: none
	slack           time.Duration // the parent's end within slack of the deadline reads as the deadline (tcp: the caller hangs up at its deadline)

	mu    sync.Mutex
	done  chan struct{}
	timer *time.Timer
	stop  func() bool // ends the watch on the parent
	err   error
}

func (c *lazyDeadline) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

func (c *lazyDeadline) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil {
		return c.done
	}
	c.done = make(chan struct{})
	c.check()
	if c.err != nil {
		close(c.done)
		return c.done
	}
	if !c.deadline.IsZero() {
		c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.end(context.DeadlineExceeded) })
	}
	if c.Context.Done() != nil {
		c.stop = context.AfterFunc(c.Context, func() { c.end(c.parentErr()) })
	}
	return c.done
}

func (c *lazyDeadline) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.check()
		if c.err != nil && c.done != nil {
			c.release()
		}
	}
	return c.err
}

// check sets err if the deadline passed or the parent ended; c.mu held.
func (c *lazyDeadline) check() {
	switch {
	case c.err != nil:
	case !c.deadline.IsZero() && !time.Now().Before(c.deadline):
		c.err = context.DeadlineExceeded
	case c.Context.Err() != nil:
		c.err = c.parentErr()
	}
}

// parentErr is this context's error once its parent ended.
func (c *lazyDeadline) parentErr() error {
	if c.slack > 0 && !c.deadline.IsZero() && time.Until(c.deadline) <= c.slack {
		return context.DeadlineExceeded
	}
	if err := c.Context.Err(); err != nil {
		return err
	}
	return context.Canceled
}

func (c *lazyDeadline) end(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	if c.done != nil {
		c.release()
	}
}

// release closes done and stops the timer and the watch; c.mu held, err set.
func (c *lazyDeadline) release() {
	close(c.done)
	if c.timer != nil {
		c.timer.Stop()
	}
	if c.stop != nil {
		c.stop()
	}
}

func (c *lazyDeadline) cancel() { c.end(context.Canceled) }
