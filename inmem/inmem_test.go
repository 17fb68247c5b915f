package inmem_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/httpbus/httpbus/inmem"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	bus := inmem.NewBus()
	transporttest.Run(t, transporttest.Harness{
		Listen: func(t testing.TB, cfg transport.ListenConfig) transport.Listener {
			l, err := bus.Listen(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			return l
		},
		Dial: func(t testing.TB) transport.Conn {
			c, err := bus.Dial(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
	})
}

// TestDifferential compares what callers and handlers see through inmem
// with net/http (transporttest.RunDifferential).
func TestDifferential(t *testing.T) {
	bus := inmem.NewBus()
	transporttest.RunDifferential(t, transporttest.Harness{
		Listen: func(t testing.TB, cfg transport.ListenConfig) transport.Listener {
			l, err := bus.Listen(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			return l
		},
		Dial: func(t testing.TB) transport.Conn {
			c, err := bus.Dial(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
	})
}
