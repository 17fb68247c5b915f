package amqp

import (
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

// ackDelay is how long an acknowledgement may wait to be coalesced with
// others into one basic.ack with multiple set. A delivery whose ack cannot
// be coalesced (an older delivery of the channel is still in flight) is
// acked on its own at the latest two flushes after its reply.
const ackDelay = time.Millisecond

// maxOutOfOrder bounds the deliveries settled out of order that an acker
// remembers while an older one stays in flight (a handler that never
// returns, a Receive without Reply); past it the acker stops coalescing.
const maxOutOfOrder = 4096

// acker settles the deliveries of one channel. Acks are coalesced: Reply
// hands the tag over and returns; within ackDelay a flush acknowledges
// every delivery up to the newest tag whose older deliveries are all
// settled with one basic.ack (multiple=true), saving a frame, a write and
// the broker's work per request under load. An ack of the only delivery
// of the channel in flight (the newest, with every older one settled) is
// written at once instead: there is nothing to coalesce it with, and it
// costs no timer. Nacks are written at once.
// Delivery tags of a channel start at 1 and grow by one per delivery,
// including those of an automatically acknowledged consumer on the
// channel (the Listener's inbox), which the inbox reports with skip.
type acker struct {
	ch  *amqp091.Channel
	log *slog.Logger

	newest atomic.Uint64 // the newest delivery tag received on the channel

	mu      sync.Mutex
	low     uint64              // every tag below low is settled
	settled map[uint64]struct{} // tags at or above low settled on their own
	ready   []pendingAck        // acks not written yet
	timer   *time.Timer
	armed   bool
	off     bool // coalescing given up (maxOutOfOrder): acks are written at once
	dead    bool // the channel is gone: nothing more is written
}

type pendingAck struct {
	tag     uint64
	carried bool // left over from a flush: acked on its own at the next
}

func newAcker(ch *amqp091.Channel, log *slog.Logger) *acker {
	a := &acker{ch: ch, log: log, low: 1, settled: map[uint64]struct{}{}}
	a.timer = time.AfterFunc(time.Hour, a.flush)
	a.timer.Stop()
	return a
}

// delivered records tag as received on the channel.
func (a *acker) delivered(tag uint64) {
	for {
		n := a.newest.Load()
		if tag <= n || a.newest.CompareAndSwap(n, tag) {
			return
		}
	}
}

// ack acknowledges tag: at once when it is the only delivery in flight,
// else within ackDelay.
func (a *acker) ack(tag uint64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.off || a.dead {
		return a.ch.Ack(tag, false)
	}
	if tag == a.low && len(a.ready) == 0 && tag >= a.newest.Load() {
		if err := a.ch.Ack(tag, false); err != nil {
			a.dead = true
			return err
		}
		a.low++
		a.advance()
		return nil
	}
	a.ready = append(a.ready, pendingAck{tag: tag})
	if !a.armed && !a.dead {
		a.armed = true
		a.timer.Reset(ackDelay)
	}
	return nil
}

// nack settles tag at once with basic.nack.
func (a *acker) nack(tag uint64, requeue bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.ch.Nack(tag, false, requeue); err != nil {
		return err
	}
	a.settledAlone(tag)
	return nil
}

// skip records tag as needing no acknowledgement: a delivery of an
// automatically acknowledged consumer on the channel. Without it, the
// first such tag would stop every later multiple ack.
func (a *acker) skip(tag uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.delivered(tag)
	if !a.dead {
		a.settledAlone(tag)
	}
}

// settledAlone records tag as settled by a frame of its own (or needing
// none); a.mu is held.
func (a *acker) settledAlone(tag uint64) {
	if a.off {
		return
	}
	if tag == a.low {
		a.low++
		a.advance()
		return
	}
	a.settled[tag] = struct{}{}
	if len(a.settled) > maxOutOfOrder {
		// An old delivery stays unsettled: remembering everything
		// settled after it would grow without bound.
		a.off = true
		a.settled = nil
		a.log.Warn("transport/amqp: a delivery stays unacknowledged; acknowledgements are no longer coalesced on this channel", "oldest_unsettled_tag", a.low)
	}
}

// advance moves low past the tags settled on their own; a.mu is held.
func (a *acker) advance() {
	for {
		if _, ok := a.settled[a.low]; !ok {
			return
		}
		delete(a.settled, a.low)
		a.low++
	}
}

// flush writes the pending acks: one multiple ack for those contiguous
// with low, a single ack for each of the others that were already carried
// over once; the rest wait for the next flush.
func (a *acker) flush() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.armed = false
	a.flushLocked(false)
	if len(a.ready) > 0 && !a.dead {
		a.armed = true
		a.timer.Reset(ackDelay)
	}
}

func (a *acker) flushLocked(all bool) {
	if a.dead || len(a.ready) == 0 {
		return
	}
	ready := a.ready
	a.ready = nil
	if a.off {
		for _, p := range ready {
			a.write(p.tag, false)
		}
		return
	}
	slices.SortFunc(ready, func(x, y pendingAck) int {
		switch {
		case x.tag < y.tag:
			return -1
		case x.tag > y.tag:
			return 1
		}
		return 0
	})
	// The contiguous run from low: ready tags and tags settled alone.
	var top uint64 // newest ready tag of the run
	i := 0
	for {
		if i < len(ready) && ready[i].tag == a.low {
			top = a.low
			a.low++
			i++
			continue
		}
		if _, ok := a.settled[a.low]; ok {
			delete(a.settled, a.low)
			a.low++
			continue
		}
		break
	}
	if top != 0 {
		a.write(top, true)
	}
	for _, p := range ready[i:] {
		if p.carried || all {
			if a.write(p.tag, false) {
				a.settledAlone(p.tag)
			}
			continue
		}
		a.ready = append(a.ready, pendingAck{tag: p.tag, carried: true})
	}
}

// write sends basic.ack; a failure means the channel is gone (the broker
// redelivers what was not acknowledged).
func (a *acker) write(tag uint64, multiple bool) bool {
	if err := a.ch.Ack(tag, multiple); err != nil {
		a.dead = true
		a.ready = nil
		a.log.Warn("transport/amqp: acknowledgement not sent; the broker redelivers the requests", "tag", tag, "multiple", multiple, "err", err)
		return false
	}
	return true
}

// drain writes every pending ack; later ones are written at once, until
// the channel closes.
func (a *acker) drain() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.timer.Stop()
	a.armed = false
	a.flushLocked(true)
	a.off = true
	a.settled = nil
}

// stop drops the pending acks: the channel is gone, and the broker
// redelivers what was not acknowledged.
func (a *acker) stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.timer.Stop()
	a.dead = true
	a.ready = nil
}
