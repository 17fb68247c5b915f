package nats_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"

	natsgo "github.com/nats-io/nats.go"

	"github.com/httpbus/httpbus/internal/brokertest"
	natstransport "github.com/httpbus/httpbus/nats"
	"github.com/httpbus/httpbus/transport"
)

// BenchmarkRequestReply measures one request/reply with a 256-byte body
// each way through httpbus (http.Client → RoundTripper → NATS → Server →
// handler) next to raw nats.go (Request to a queue subscriber that
// responds), on the same server in the same run; serial and with
// b.RunParallel (GOMAXPROCS callers).
func BenchmarkRequestReply(b *testing.B) {
	url := brokertest.NATS(b)
	payload := bytes.Repeat([]byte("x"), 256)

	b.Run("httpbus", func(b *testing.B) {
		client, svc := benchHTTPBus(b, url, payload)
		b.Run("serial", func(b *testing.B) {
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				httpbusCall(b, client, svc, payload)
			}
		})
		b.Run("parallel", func(b *testing.B) {
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					httpbusCall(b, client, svc, payload)
				}
			})
		})
	})

	b.Run("raw", func(b *testing.B) {
		nc, subject := benchRaw(b, url, payload)
		b.Run("serial", func(b *testing.B) {
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			for b.Loop() {
				rawCall(b, nc, subject, payload)
			}
		})
		b.Run("parallel", func(b *testing.B) {
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					rawCall(b, nc, subject, payload)
				}
			})
		})
	})
}

func benchHTTPBus(b *testing.B, url string, payload []byte) (*http.Client, string) {
	svc := uniqueName("bench")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(payload)
	})
	serve(b, &transport.Server{Handler: h, Logger: discardLogger()}, listen(b, connect(b, url), transport.ListenConfig{Service: svc}, natstransport.Config{Logger: discardLogger()}))
	return transport.NewClient(dial(b, connect(b, url))), svc
}

func httpbusCall(b *testing.B, client *http.Client, svc string, payload []byte) {
	resp, err := client.Post("http://"+svc+"/echo", "application/octet-stream", bytes.NewReader(payload))
	if err != nil {
		b.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || n != int64(len(payload)) {
		b.Fatalf("status %d, %d bytes", resp.StatusCode, n)
	}
}

func benchRaw(b *testing.B, url string, payload []byte) (*natsgo.Conn, string) {
	subject := "bench.raw." + uniqueName("svc")
	snc := connect(b, url)
	sub, err := snc.QueueSubscribe(subject, "raw", func(m *natsgo.Msg) { m.Respond(payload) })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sub.Unsubscribe() })
	if err := snc.Flush(); err != nil {
		b.Fatal(err)
	}
	return connect(b, url), subject
}

func rawCall(b *testing.B, nc *natsgo.Conn, subject string, payload []byte) {
	m, err := nc.Request(subject, payload, transport.DefaultReplyTimeout)
	if err != nil {
		b.Fatal(err)
	}
	if len(m.Data) != len(payload) {
		b.Fatalf("%d bytes", len(m.Data))
	}
}
