package amqp

import (
	"errors"
	"fmt"
)

// FlushAcks runs l's acknowledgement flush twice on its current channel,
// as the coalescing timer would over two periods: an ack still waiting is
// written (coalesced into a multiple ack where it can be, else on its own
// at the second flush). Tests call it instead of sleeping past ackDelay.
func FlushAcks(l *Listener) error {
	g, ok := l.sup.now()
	if !ok {
		return errors.New("listener not connected")
	}
	g.acks.flush()
	g.acks.flush()
	return nil
}

// SyncChannel makes a synchronous round trip (a passive queue.declare of
// l's queue) on l's consuming channel, the one that carries its acks. The
// broker handles a channel's methods in order, so a nil error means it
// accepted every ack written before; a wrong one (an unknown delivery tag)
// closes the channel with PRECONDITION_FAILED, and this returns that
// error.
func SyncChannel(l *Listener) error {
	g, ok := l.sup.now()
	if !ok {
		return errors.New("listener not connected")
	}
	if _, err := g.ch.QueueDeclarePassive(l.queue, !l.cfg.Transient, false, false, false, l.queueArgs()); err != nil {
		return fmt.Errorf("round trip on the consuming channel: %w", err)
	}
	return nil
}
