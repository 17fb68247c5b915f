package amqp

// SetPrefetch implements transport.Prefetcher: a transport.Server calls it
// with its in-flight bound before it takes the first delivery, and the
// broker then keeps at most n unacknowledged deliveries out to this
// listener, so that a busy instance does not hoard requests that an idle one
// could serve.
//
// It applies only when the prefetch was not set explicitly (Config.Prefetch
// zero and no prefetch= in the URL). On the current channel it issues
// basic.qos with global set, which RabbitMQ applies at once to the consumers
// already running on the channel (a per-consumer basic.qos only applies to
// consumers started after it); channels opened after a reconnection set it
// per consumer before consuming. A failure is logged and the previous
// prefetch stays.
func (l *Listener) SetPrefetch(n int) {
	if n <= 0 || l.cfg.Prefetch != 0 {
		return
	}
	old := l.prefetch()
	l.prefetchN.Store(int32(n))
	if n == old {
		return
	}
	g, ok := l.sup.now()
	if !ok {
		return // the next channel's setup applies it
	}
	if err := g.ch.Qos(n, 0, true); err != nil {
		l.cfg.logger().Warn("transport/amqp: basic.qos (global) failed; the prefetch stays", "service", l.lc.Service, "prefetch", old, "want", n, "err", err)
	}
}

// prefetch is the basic.qos prefetch count for the listener's consumers:
// SetPrefetch's value when it applied, else Config.Prefetch's; 0 means no
// limit.
func (l *Listener) prefetch() int {
	if n := l.prefetchN.Load(); n > 0 {
		return int(n)
	}
	return l.cfg.prefetch()
}
