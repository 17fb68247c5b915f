package nats

// PendingOf returns the messages l's service subscription holds, received
// but not taken by Receive (for tests).
func PendingOf(l *Listener) int {
	n, _, _ := l.subs[0].Pending()
	return n
}
