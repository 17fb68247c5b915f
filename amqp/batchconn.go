package amqp

import (
	"net"
	"sync"
	"time"
)

// amqp091 writes each publish (method, header and body frames) with one
// flush, hence one write(2), under the connection's send lock: concurrent
// publishers on one connection queue on that lock and make a system call
// each, and the broker reads a TCP segment per message. batchConn, the
// connection amqp091 gets from dial, lets the flush return once its bytes
// are queued: one goroutine writes everything queued meanwhile in one
// system call, so under load many publishes share a write, and the broker
// reads them together. A lone publish costs a goroutine switch instead of
// nothing. Large writes (bodies of at least batchInline bytes) skip the
// queue once what was queued before them is written.
//
// Errors: a failed write closes the socket, so amqp091's reader fails and
// the connection is reported lost as any broken socket is; the write
// error is returned by every later Write. A Write that returned nil was
// queued, not sent: as with a socket buffer, bytes queued when the
// connection breaks are lost, which the protocol already allows for
// (unacknowledged deliveries are redelivered; a caller in flight gets
// ErrUnavailable).
type batchConn struct {
	net.Conn

	mu      sync.Mutex
	cond    sync.Cond // broadcast when bytes are queued, a write ends, or Close
	buf     []byte    // queued, not yet written
	spare   []byte    // the buffer of the previous write, for reuse
	busy    bool      // a write to Conn is under way
	running bool      // the writer goroutine is started
	closed  bool
	err     error         // the first failed write
	done    chan struct{} // closed when the writer goroutine returns
}

const (
	// batchInline: a Write of at least this many bytes is written by its
	// caller (after the queue), not copied into the queue.
	batchInline = 32 << 10
	// batchMax bounds the queue: a Write that would grow it past this
	// waits for the writer, so that a stalled socket pushes back.
	batchMax = 256 << 10
	// batchKeep: a buffer that grew past this is dropped after its
	// write rather than kept for reuse.
	batchKeep = 64 << 10
)

func newBatchConn(c net.Conn) *batchConn {
	b := &batchConn{Conn: c, done: make(chan struct{})}
	b.cond.L = &b.mu
	return b
}

// Write queues p for the writer goroutine, or writes it itself when it is
// at least batchInline bytes. It returns the error of an earlier failed
// write, or net.ErrClosed after Close.
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	for {
		switch {
		case b.err != nil:
			err := b.err
			b.mu.Unlock()
			return 0, err
		case b.closed:
			b.mu.Unlock()
			return 0, net.ErrClosed
		case len(p) >= batchInline:
			if b.busy || len(b.buf) > 0 {
				b.cond.Wait()
				continue
			}
			b.busy = true
			b.mu.Unlock()
			n, err := b.Conn.Write(p)
			b.mu.Lock()
			b.busy = false
			if err != nil {
				b.fail(err)
			}
			b.cond.Broadcast()
			b.mu.Unlock()
			return n, err
		case len(b.buf) > 0 && len(b.buf)+len(p) > batchMax:
			b.cond.Wait()
			continue
		}
		b.buf = append(b.buf, p...)
		if !b.running {
			b.running = true
			go b.writer()
		}
		b.cond.Broadcast()
		b.mu.Unlock()
		return len(p), nil
	}
}

// writer writes what is queued, in one write per batch, until the
// connection is closed (after writing what was queued before) or a write
// fails.
func (b *batchConn) writer() {
	defer close(b.done)
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		for len(b.buf) == 0 || b.busy {
			if b.err != nil || (b.closed && len(b.buf) == 0) {
				return
			}
			b.cond.Wait()
		}
		if b.err != nil {
			return
		}
		p := b.buf
		b.buf, b.spare = b.spare[:0], nil
		b.busy = true
		b.mu.Unlock()
		_, err := b.Conn.Write(p)
		b.mu.Lock()
		b.busy = false
		if cap(p) <= batchKeep {
			b.spare = p[:0]
		}
		if err != nil {
			b.fail(err)
		}
		b.cond.Broadcast()
	}
}

// fail records the first write error and closes the socket, so that the
// reader sees the connection break; b.mu is held.
func (b *batchConn) fail(err error) {
	if b.err == nil {
		b.err = err
		b.buf = nil
		b.Conn.Close()
	}
}

// batchCloseWait bounds how long Close waits for queued bytes to be
// written (amqp091 closes after connection.close-ok, with little queued).
const batchCloseWait = time.Second

// Close writes what is queued, within batchCloseWait, then closes the
// socket.
func (b *batchConn) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return net.ErrClosed
	}
	b.closed = true
	running := b.running
	b.cond.Broadcast()
	b.mu.Unlock()
	if running {
		b.Conn.SetWriteDeadline(time.Now().Add(batchCloseWait))
		<-b.done
	}
	return b.Conn.Close()
}
