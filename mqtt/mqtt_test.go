package mqtt_test

import (
	"context"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"

	_ "github.com/httpbus/httpbus/mqtt"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, brokertest.IgnoreToxiproxy()...) }

// TestConformance runs the suite on the broker brokertest resolves
// (Mosquitto on CI), through the URL openers.
func TestConformance(t *testing.T) {
	transporttest.Run(t, urlHarness(t, brokertest.MQTT(t)))
}

// TestDifferential compares what callers and handlers see through MQTT
// with net/http (transporttest.RunDifferential).
func TestDifferential(t *testing.T) {
	transporttest.RunDifferential(t, urlHarness(t, brokertest.MQTT(t)))
}

func urlHarness(t *testing.T, url string) transporttest.Harness {
	return transporttest.Harness{
		Listen: func(t testing.TB, cfg transport.ListenConfig) transport.Listener {
			u := url + "?service=" + cfg.Service
			if len(cfg.Topics) > 0 {
				u += "&topics=" + strings.Join(cfg.Topics, ",")
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
	}
}
