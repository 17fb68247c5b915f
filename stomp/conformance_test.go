package stomp_test

import (
	"net/http"
	"testing"

	"github.com/httpbus/httpbus/stomp"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

// TestConformance runs the transport conformance suite on ActiveMQ and on
// RabbitMQ's STOMP plugin, through URL-opened listeners and clients.
func TestConformance(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		transporttest.Run(t, harness(t, b, addr))
	})
}

// TestDifferential compares what callers and handlers see through ActiveMQ
// and RabbitMQ's STOMP plugin with net/http (transporttest.RunDifferential).
func TestDifferential(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		transporttest.RunDifferential(t, harness(t, b, addr))
	})
}

// harness opens both sides through the URL openers.
func harness(t *testing.T, b broker, addr string) transporttest.Harness {
	url := brokerURL(addr)
	j := newJanitor(t, b)
	return transporttest.Harness{
		Listen: func(t testing.TB, cfg transport.ListenConfig) transport.Listener {
			return listen(t, j, url, cfg)
		},
		Dial: func(t testing.TB) transport.Conn {
			return dial(t, j, url)
		},
		Features: transporttest.Features{
			// A STOMP broker keeps a request for a service nobody
			// listens to in its queue: the caller cannot be told.
			NoRespondersStatus: http.StatusGatewayTimeout,
			RequeueAtClose:     requeueAtClose(b),
		},
	}
}

// requeueAtClose is ActiveMQ's Requeue rule (stomp/doc.go).
func requeueAtClose(b broker) string {
	if b.dialect == stomp.DialectActiveMQ {
		return "ActiveMQ's STOMP NACK dead-letters, so a requeued request stays unacknowledged until the listener closes"
	}
	return ""
}
