package nats_test

import (
	"context"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/internal/natsserver"
	natstransport "github.com/httpbus/httpbus/nats"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, brokertest.IgnoreToxiproxy()...) }

// frameRoom is what the conformance suite's large body leaves for the
// frame's own request line and headers (and the response's), in bytes.
const frameRoom = 4096

// connect opens a NATS connection that the test closes at cleanup.
func connect(t testing.TB, url string, opts ...natsgo.Option) *natsgo.Conn {
	t.Helper()
	nc, err := natsgo.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func features(t testing.TB, url string) transporttest.Features {
	nc := connect(t, url)
	return transporttest.Features{MaxBodyBytes: nc.MaxPayload() - natstransport.HeaderRoom - frameRoom}
}

// TestConformance runs the suite on the broker brokertest resolves (the
// real server on CI), through the URL openers.
func TestConformance(t *testing.T) {
	transporttest.Run(t, urlHarness(t))
}

// TestDifferential compares what callers and handlers see through NATS with
// net/http (transporttest.RunDifferential), on the broker brokertest
// resolves.
func TestDifferential(t *testing.T) {
	transporttest.RunDifferential(t, urlHarness(t))
}

// urlHarness opens both sides through the URL openers.
func urlHarness(t *testing.T) transporttest.Harness {
	url := brokertest.NATS(t)
	return transporttest.Harness{
		Listen: func(t testing.TB, cfg transport.ListenConfig) transport.Listener {
			u := url + "?service=" + cfg.Service
			if len(cfg.Topics) > 0 {
				u += "&topics=" + joinComma(cfg.Topics)
			}
			l, err := transport.Listen(context.Background(), u)
			if err != nil {
				t.Fatal(err)
			}
			return l
		},
		Dial: func(t testing.TB) transport.Conn {
			c, err := transport.Dial(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
		Features: features(t, url),
	}
}

// TestConformanceEmbedded runs the suite on an embedded nats-server,
// through NewListener and NewConn over caller-owned connections.
func TestConformanceEmbedded(t *testing.T) {
	url := embedded(t, natsserver.Config{})
	transporttest.Run(t, transporttest.Harness{
		Listen: func(t testing.TB, cfg transport.ListenConfig) transport.Listener {
			l, err := natstransport.NewListener(t.Context(), connect(t, url), cfg, natstransport.Config{Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			return l
		},
		Dial: func(t testing.TB) transport.Conn {
			c, err := natstransport.NewConn(t.Context(), connect(t, url), natstransport.Config{})
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
		Features: features(t, url),
	})
}

func embedded(t testing.TB, cfg natsserver.Config) string {
	t.Helper()
	url, stop, err := natsserver.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return url
}

func joinComma(s []string) string {
	out := ""
	for i, v := range s {
		if i > 0 {
			out += ","
		}
		out += v
	}
	return out
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
