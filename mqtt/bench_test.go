package mqtt_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/httpbus/httpbus/internal/brokertest"
	mqtttransport "github.com/httpbus/httpbus/mqtt"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

// BenchmarkRequestReply measures one request/reply with a 256-byte body
// each way through httpbus (http.Client → RoundTripper → MQTT → Server →
// handler) next to raw paho.golang as httpbus bench -raw runs it (QoS 1
// request with Response Topic and Correlation Data to a shared
// subscription whose handler publishes the payload back at QoS 1), on the
// same broker in the same run; serial and with b.RunParallel (32 callers).
// B/op and allocs/op count the whole process (both ends).
func BenchmarkRequestReply(b *testing.B) {
	raw := brokertest.MQTT(b)
	payload := bytes.Repeat([]byte("x"), 256)
	b.Run("httpbus", func(b *testing.B) {
		svc := unique("bench")
		cfg := mqtttransport.Config{Logger: transporttest.DiscardLogger()}
		l, err := mqtttransport.Listen(b.Context(), raw, transport.ListenConfig{Service: svc}, cfg)
		if err != nil {
			b.Fatal(err)
		}
		srv := &transport.Server{Logger: transporttest.DiscardLogger(), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Write(payload)
		})}
		go srv.Serve(l)
		b.Cleanup(func() { srv.Shutdown(context.Background()) })
		c, err := mqtttransport.Dial(b.Context(), raw, cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		client := transport.NewClient(c)
		call := func() {
			resp, err := client.Post("http://"+svc+"/echo", "application/octet-stream", bytes.NewReader(payload))
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
		runBoth(b, call)
	})
	b.Run("raw", func(b *testing.B) {
		call := rawPaho(b, raw, payload)
		runBoth(b, call)
	})
}

func runBoth(b *testing.B, call func()) {
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			call()
		}
	})
	b.Run("parallel32", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(16) // 32 callers on 2 CPUs
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				call()
			}
		})
	})
}

// rawPaho connects a responder and a requester as httpbus bench's raw
// twin does and returns one call.
func rawPaho(b *testing.B, raw string, payload []byte) func() {
	u, err := url.Parse(raw)
	if err != nil {
		b.Fatal(err)
	}
	topic, reply := unique("bench-raw"), unique("bench-raw-reply")
	connect := func(h func(paho.PublishReceived) (bool, error), filter string) *paho.Client {
		conn, err := mqtttransport.DialQuickAck(b.Context(), autopaho.ClientConfig{}, &url.URL{Host: u.Host})
		if err != nil {
			b.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){h}})
		ctx, cancel := context.WithTimeout(b.Context(), 10*time.Second)
		defer cancel()
		if _, err := c.Connect(ctx, &paho.Connect{ClientID: unique("raw"), CleanStart: true, KeepAlive: 30}); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
		if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}}); err != nil {
			b.Fatal(err)
		}
		return c
	}
	connect(func(pr paho.PublishReceived) (bool, error) {
		p := pr.Packet
		go pr.Client.Publish(context.Background(), &paho.Publish{Topic: p.Properties.ResponseTopic, QoS: 1, Payload: p.Payload,
			Properties: &paho.PublishProperties{CorrelationData: p.Properties.CorrelationData}})
		return true, nil
	}, "$share/responders/"+topic)
	var mu sync.Mutex
	pending := map[string]chan []byte{}
	cli := connect(func(pr paho.PublishReceived) (bool, error) {
		if pr.Packet.Properties != nil {
			mu.Lock()
			ch := pending[string(pr.Packet.Properties.CorrelationData)]
			mu.Unlock()
			if ch != nil {
				ch <- pr.Packet.Payload
			}
		}
		return true, nil
	}, reply)
	var next atomic.Uint64
	return func() {
		corr := strconv.AppendUint(nil, next.Add(1), 36)
		ch := make(chan []byte, 1)
		mu.Lock()
		pending[string(corr)] = ch
		mu.Unlock()
		defer func() {
			mu.Lock()
			delete(pending, string(corr))
			mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := cli.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload,
			Properties: &paho.PublishProperties{ResponseTopic: reply, CorrelationData: corr}}); err != nil {
			b.Fatal(err)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			b.Fatal("no reply within 10s")
		}
	}
}
