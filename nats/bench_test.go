package nats_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	natsgo "github.com/nats-io/nats.go"

	"github.com/httpbus/httpbus/internal/brokertest"
	natstransport "github.com/httpbus/httpbus/nats"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

// benchParallelism is the b.SetParallelism of the parallel cases.
const benchParallelism = 16

// BenchmarkRequestReply measures one request/reply with a 256-byte body
// each way through httpbus (http.Client → RoundTripper → NATS → Server →
// handler) next to raw nats.go (Request to a queue subscriber that
// responds), on the same server in the same run; serial and with
// b.RunParallel (benchParallelism × GOMAXPROCS callers: 32 on a 2-core
// machine, as in BENCHMARKS.md's request/reply table).
func BenchmarkRequestReply(b *testing.B) {
	url := brokertest.NATS(b)
	payload := bytes.Repeat([]byte("x"), 256)

	b.Run("httpbus", func(b *testing.B) {
		client, svc := benchHTTPBus(b, url, payload)
		serialAndParallel(b, len(payload), func(b *testing.B) { httpbusCall(b, client, svc, payload) })
	})

	// raw-shaped is raw nats.go carrying what httpbus carries, with no
	// http.Client, codec or Server: the request and response frames of
	// this benchmark's call as payloads, httpbus's NATS headers both ways
	// (Content-Type and Httpbus-Version, plus Httpbus-Deadline on the
	// request), a synchronous queue subscription served by a pool of
	// workers as Listener.Push does. Its gap to raw is the floor that
	// message shape sets under any NATS backend of httpbus (BENCHMARKS.md).
	b.Run("raw-shaped", func(b *testing.B) {
		nc, subject, reqFrame := benchShaped(b, url, payload)
		serialAndParallel(b, len(payload), func(b *testing.B) { shapedCall(b, nc, subject, reqFrame) })
	})

	// raw-codec is raw-shaped plus the least work that httpbus's design
	// requires at each end: the caller is an http.Client whose
	// RoundTripper encodes the request frame and decodes the response
	// frame (transporttest.CodecClient), the responder decodes the request
	// frame, runs the same handler and encodes its response
	// (transporttest.ServeFrame). No Server, RoundTripper bookkeeping or
	// stream: its gap to raw is the floor under any httpbus over NATS.
	b.Run("raw-codec", func(b *testing.B) {
		client, svc := benchCodec(b, url, payload)
		serialAndParallel(b, len(payload), func(b *testing.B) { httpbusCall(b, client, svc, payload) })
	})

	b.Run("raw", func(b *testing.B) {
		nc, subject := benchRaw(b, url, payload)
		serialAndParallel(b, len(payload), func(b *testing.B) { rawCall(b, nc, subject, payload) })
	})
}

// serialAndParallel runs call as the sub-benchmarks "serial" and
// "parallel" (benchParallelism × GOMAXPROCS goroutines), size bytes each.
func serialAndParallel(b *testing.B, size int, call func(*testing.B)) {
	b.Run("serial", func(b *testing.B) {
		b.SetBytes(int64(size))
		b.ReportAllocs()
		for b.Loop() {
			call(b)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetBytes(int64(size))
		b.ReportAllocs()
		b.SetParallelism(benchParallelism)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				call(b)
			}
		})
	})
}

// echoHandler answers with payload after reading the request's body.
func echoHandler(payload []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(payload)
	})
}

func benchHTTPBus(b *testing.B, url string, payload []byte) (*http.Client, string) {
	svc := uniqueName("bench")
	serve(b, &transport.Server{Handler: echoHandler(payload), Logger: discardLogger()}, listen(b, connect(b, url), transport.ListenConfig{Service: svc}, natstransport.Config{Logger: discardLogger()}))
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

// benchShaped starts raw-shaped's responder and returns the requester's
// connection, the subject and the request frame to send.
func benchShaped(b *testing.B, url string, payload []byte) (*natsgo.Conn, string, []byte) {
	reqFrame, respFrame := transporttest.EchoFrames(b, payload, payload)
	subject := "bench.shaped." + uniqueName("svc")
	serveFrames(b, url, subject, func([]byte) []byte { return respFrame })
	return connect(b, url), subject, reqFrame
}

// serveFrames answers the requests on subject with answer(request data),
// with httpbus's reply headers, from a synchronous queue subscription
// served by a pool of workers as Listener.Push does.
func serveFrames(b *testing.B, url, subject string, answer func([]byte) []byte) {
	snc := connect(b, url)
	sub, err := snc.QueueSubscribeSync(subject, "frames")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sub.Unsubscribe() })
	replyHeader := natsgo.Header{"Content-Type": {transport.MediaType}, transport.HeaderVersion: {transport.Version}}
	for range 8 {
		go func() {
			for {
				m, err := sub.NextMsgWithContext(context.Background())
				if err != nil {
					return // unsubscribed
				}
				snc.PublishMsg(&natsgo.Msg{Subject: m.Reply, Data: answer(m.Data), Header: replyHeader}) //nolint:errcheck // the requester fails
			}
		}()
	}
	if err := snc.Flush(); err != nil {
		b.Fatal(err)
	}
}

// benchCodec starts raw-codec's responder (serveFrames on the service's
// subject, each request through transporttest.ServeFrame) and returns its
// http.Client and the service name.
func benchCodec(b *testing.B, url string, payload []byte) (*http.Client, string) {
	svc := uniqueName("bench")
	h := echoHandler(payload)
	serveFrames(b, url, natstransport.ServiceSubject("", svc), func(req []byte) []byte { return transporttest.ServeFrame(h, req) })
	nc := connect(b, url)
	return transporttest.CodecClient(func(ctx context.Context, service string, frame []byte) ([]byte, error) {
		return requestShaped(ctx, nc, natstransport.ServiceSubject("", service), frame)
	}), svc
}

// requestShaped sends frame to subject as httpbus's Conn.Call does (its
// NATS headers, a deadline DefaultReplyTimeout away) and returns the
// reply's data.
func requestShaped(ctx context.Context, nc *natsgo.Conn, subject string, frame []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, transport.DefaultReplyTimeout)
	defer cancel()
	dl, _ := ctx.Deadline()
	h := natsgo.Header{"Content-Type": {transport.MediaType}, transport.HeaderVersion: {transport.Version},
		transport.HeaderDeadline: {transport.FormatDeadline(dl)}}
	m, err := nc.RequestMsgWithContext(ctx, &natsgo.Msg{Subject: subject, Data: frame, Header: h})
	if err != nil {
		return nil, err
	}
	return m.Data, nil
}

func shapedCall(b *testing.B, nc *natsgo.Conn, subject string, frame []byte) {
	data, err := requestShaped(context.Background(), nc, subject, frame)
	if err != nil {
		b.Fatal(err)
	}
	if len(data) <= len(frame)/2 {
		b.Fatalf("%d bytes", len(data))
	}
}
