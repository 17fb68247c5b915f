package brokertest

import "go.uber.org/goleak"

// IgnoreToxiproxy returns goleak options that ignore the goroutines of an
// in-process toxiproxy (github.com/Shopify/toxiproxy/v2), for the TestMain
// of a package whose fault tests put one in front of the broker.
// Proxy.Stop closes a link's connections but does not wait for the link's
// pipeline (its reader, writer and one goroutine per toxic); a toxic left
// blocked sending to a stage that has already returned stays so
// (toxics.(*NoopToxic).Pipe in "chan send", seen on stomp in CI). Those are
// the test tool's goroutines, not httpbus's: every other goroutine is still
// checked.
func IgnoreToxiproxy() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2/toxics.(*ToxicStub).Run"),
		goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).read"),
		goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).write"),
		goleak.IgnoreAnyFunction("github.com/Shopify/toxiproxy/v2.(*ToxicLink).RemoveToxic.func1"),
	}
}

// IgnoreGoStompUnsubscribeWait returns a goleak option that ignores the
// goroutine go-stomp v3.1.5 starts in Subscription.Unsubscribe to wait,
// with a timeout, for the subscription to close (waitWithTimeout,
// subscription.go:124, from go-stomp PR #133). It calls sync.Cond.Wait
// after the caller checked the state: when the subscription closes and
// broadcasts in between, the goroutine misses the signal and waits for
// good, after Unsubscribe has returned (seen once in cmd/httpbus's tests
// in CI, 2026-12-01). That is go-stomp's goroutine, not httpbus's: every
// other goroutine is still checked.
func IgnoreGoStompUnsubscribeWait() goleak.Option {
	return goleak.IgnoreAnyFunction("github.com/go-stomp/stomp/v3.waitWithTimeout.func1")
}
