package stomp_test

import (
	"context"
	"net/http"
	"os"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/stomp"
	"github.com/httpbus/httpbus/transport"
)

// A call for a service no instance ever listened to (a misspelt name) ends
// as 504 at the caller's deadline on both brokers, and on RabbitMQ leaves no
// queue behind (the SEND goes to /amq/queue/<service>, which declares
// nothing). ActiveMQ creates the queue on SEND; nothing over STOMP can
// prevent or delete it (see the package doc).
func TestUnknownServiceLeavesNoQueue(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		url := brokerURL(addr)
		client := transport.NewClient(dial(t, j, url))
		missing := unique("misspelt")
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+missing+"/", nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusGatewayTimeout {
			t.Errorf("call for %s: %s, want 504", missing, resp.Status)
		}
		if b.dialect != stomp.DialectRabbitMQ {
			return
		}
		amqpURL := os.Getenv(brokertest.EnvAMQP)
		if amqpURL == "" {
			t.Skipf("%s not set: cannot look for the queue", brokertest.EnvAMQP)
		}
		conn, err := amqp091.Dial(amqpURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if q, err := ch.QueueDeclarePassive(missing, true, false, false, false, nil); err == nil {
			ch.QueueDelete(missing, false, false, false)
			t.Fatalf("RabbitMQ has a queue %q (%d messages) after a call for a service nobody serves", q.Name, q.Messages)
		}
	})
}
