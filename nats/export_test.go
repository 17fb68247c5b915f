package nats

// PendingOf returns the messages l's service subscription holds, received
// but not taken by Receive (for tests).
func PendingOf(l *Listener) int {
	n, _, _ := l.subs[0].Pending()
	return n
}

// HeldOf returns the deliveries l holds (replied with transport.Hold and
// not yet settled), for tests.
func HeldOf(l *Listener) int { return int(l.held.Load()) }
