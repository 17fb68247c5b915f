package amqp

import (
	"context"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/transport"
)

// TestAckerSkipsInboxTags interleaves inbox messages (an automatically
// acknowledged consumer on the Listener's channel, whose deliveries take
// delivery tags too) with requests, and checks that one flush acknowledges
// every answered request with the acker left with nothing pending: the
// inbox's tags must not stop the multiple ack.
func TestAckerSkipsInboxTags(t *testing.T) {
	url := brokertest.AMQP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	svc := "acker-skip-" + randomID(6)
	l, err := Listen(ctx, url+"?durable=false", transport.ListenConfig{Service: svc}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		l.Close()
		if c, err := amqp091.Dial(url); err == nil {
			if ch, err := c.Channel(); err == nil {
				ch.QueueDelete(l.Queue(), false, false, false)
			}
			c.Close()
		}
	}()
	c, err := Dial(ctx, url, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	addr, err := l.Inbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const rounds = 3
	for range rounds {
		if err := c.Send(ctx, addr, &transport.Message{Body: []byte("part"), ContentType: transport.MediaType}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.ReceiveInbox(ctx); err != nil {
			t.Fatal(err)
		}
		called := make(chan error, 1)
		go func() {
			_, err := c.Call(ctx, svc, &transport.Message{Body: []byte("req"), ContentType: transport.MediaType})
			called <- err
		}()
		d, err := l.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Reply(ctx, d, &transport.Message{Body: []byte("resp"), ContentType: transport.MediaType}, transport.Ack); err != nil {
			t.Fatal(err)
		}
		if err := <-called; err != nil {
			t.Fatal(err)
		}
	}
	g, ok := l.sup.now()
	if !ok {
		t.Fatal("listener not connected")
	}
	g.acks.flush()
	a := g.acks
	a.mu.Lock()
	defer a.mu.Unlock()
	if want := uint64(2*rounds + 1); a.low != want || len(a.ready) != 0 || len(a.settled) != 0 || a.off {
		t.Errorf("after the flush: low %d (want %d), %d acks pending, %d tags settled out of order, coalescing off %t",
			a.low, want, len(a.ready), len(a.settled), a.off)
	}
}
