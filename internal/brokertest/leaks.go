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
