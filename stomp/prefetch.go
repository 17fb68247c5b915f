package stomp

import "fmt"

// SetPrefetch implements transport.Prefetcher: a transport.Server calls it
// with its in-flight bound before it takes the first delivery, so that the
// broker keeps at most n unacknowledged messages out to each subscription of
// this listener and a busy instance does not hoard requests that an idle one
// could serve.
//
// It applies only when the prefetch was not set explicitly (Config.Prefetch
// zero and no prefetch= in the URL). STOMP fixes the prefetch
// (activemq.prefetchSize, prefetch-count) at SUBSCRIBE, on both brokers,
// and a subscription cannot be replaced in place on a connection without
// settling what it already delivered; so when n differs from the prefetch
// the listener subscribed with, it drops its connection and subscribes
// again on a new one (logged as a lost connection), which takes one
// reconnection (tens of milliseconds) while requests wait in the broker's
// queue; whatever the old connection held unacknowledged is redelivered.
// On a caller's connection without Config.Redial it cannot reconnect: it
// logs and keeps its prefetch (set Config.Prefetch to match
// Server.MaxInFlight instead).
func (l *Listener) SetPrefetch(n int) {
	if n <= 0 || l.prefetchExplicit {
		return
	}
	old := l.prefetch()
	l.prefetchN.Store(int32(n))
	if n == old {
		return
	}
	k := l.s.current()
	if k == nil {
		return // reconnecting: the next connection subscribes with n
	}
	if l.s.cfg.Redial == nil {
		l.s.log.Info("transport/stomp: prefetch kept: no Redial to resubscribe with the Server's MaxInFlight; set Config.Prefetch",
			"service", l.service, "prefetch", old, "max_in_flight", n)
		l.prefetchN.Store(int32(old))
		return
	}
	l.s.fail(k, fmt.Errorf("resubscribing with prefetch %d (the Server's MaxInFlight) instead of %d", n, old))
}

// prefetch is the prefetch to subscribe with: SetPrefetch's value when it
// applied, else Config.Prefetch (defaulted).
func (l *Listener) prefetch() int {
	if n := l.prefetchN.Load(); n > 0 {
		return int(n)
	}
	return l.s.cfg.Prefetch
}
