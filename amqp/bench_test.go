package amqp_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/httpbus/httpbus/amqp"
	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

const benchPayload = 256

// BenchmarkRequestReply256 measures one request/reply of a 256-byte body,
// echoed, through httpbus (http.Client → RoundTripper → Conn → RabbitMQ →
// Listener → Server → handler and back) next to bare amqp091 doing the same
// exchange (direct reply-to, correlation ids, manual acks, a goroutine per
// request on the server), in one run: serially and with 64 requests in
// flight. raw-shaped is that bare amqp091 exchange carrying what httpbus's
// messages carry (the request and response frames, content type
// application/x-httpbus, the Httpbus-Deadline header and a per-message TTL
// for the deadline) with no http.Client, codec or Server: what RabbitMQ
// and amqp091 cost for httpbus's messages before any httpbus code runs
// (BENCHMARKS.md "Floors"). raw-codec is raw-shaped plus the least work
// httpbus's design adds at each end, as in the nats and stomp benchmarks:
// the caller an http.Client whose RoundTripper encodes the request frame
// and decodes the response frame (transporttest.CodecClient), the
// responder decoding the request frame, running the same handler and
// encoding its answer (transporttest.ServeFrame); no Server, deadline
// bookkeeping, stream or in-flight bound.
func BenchmarkRequestReply256(b *testing.B) {
	url := brokertest.AMQP(b)
	payload := bytes.Repeat([]byte("x"), benchPayload)
	for _, par := range []int{1, 64} {
		name := "serial"
		if par > 1 {
			name = "inflight" + strconv.Itoa(par)
		}
		b.Run("httpbus/"+name, func(b *testing.B) { benchHTTPBus(b, url, payload, par) })
		b.Run("raw-amqp091/"+name, func(b *testing.B) { benchRaw(b, url, payload, par, rawPlain) })
		b.Run("raw-shaped/"+name, func(b *testing.B) { benchRaw(b, url, payload, par, rawShaped) })
		b.Run("raw-codec/"+name, func(b *testing.B) { benchRaw(b, url, payload, par, rawCodec) })
	}
}

func runConcurrent(b *testing.B, par int, op func() error) {
	b.SetBytes(benchPayload)
	b.ReportAllocs()
	b.ResetTimer()
	if par == 1 {
		for b.Loop() {
			if err := op(); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	total := int64(b.N)
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n.Add(1) <= total {
				if err := op(); err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
}

func benchHTTPBus(b *testing.B, url string, payload []byte, par int) {
	ctx := context.Background()
	svc := unique("bench")
	l, err := amqp.Listen(ctx, url, transport.ListenConfig{Service: svc}, amqp.Config{})
	if err != nil {
		b.Fatal(err)
	}
	deleteQueues(b, url, l.Queue())
	srv := &transport.Server{Handler: echoHandler}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() { srv.Shutdown(ctx); <-served; l.Close() }()
	c, err := amqp.Dial(ctx, url, amqp.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	client := transport.NewClient(c)
	target := "http://" + svc + "/echo"
	runConcurrent(b, par, func() error { return postEcho(client, target, payload) })
}

// postEcho POSTs payload to url with client and checks that it came back.
func postEcho(client *http.Client, url string, payload []byte) error {
	resp, err := client.Post(url, "application/octet-stream", bytes.NewReader(payload))
	if err != nil {
		return err
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(got) != len(payload) {
		return fmt.Errorf("status %d, %d of %d bytes back", resp.StatusCode, len(got), len(payload))
	}
	return nil
}

// echoHandler answers with the request's body, with the Content-Type that
// raw-shaped's response frame carries (transporttest.EchoFrames): without
// it the Server would sniff one, as net/http does, ~7,000 instructions per
// call that raw-shaped skips.
var echoHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	io.Copy(w, r.Body) //nolint:errcheck // the caller checks the length
})

// The raw variants of BenchmarkRequestReply256.
const (
	rawPlain  = iota // bare amqp091, the payload as the body
	rawShaped        // httpbus's messages: frames, content type, deadline header and TTL
	rawCodec         // rawShaped plus the frame codec and an http.Client at the caller, ServeFrame at the responder
)

func benchRaw(b *testing.B, url string, payload []byte, par int, mode int) {
	queue := unique("rawbench")
	shaped := mode != rawPlain
	reqBody, respBody, ct := payload, payload, ""
	if shaped {
		reqBody, respBody = transporttest.EchoFrames(b, payload, payload)
		ct = transport.MediaType
	}
	// Server: manual acks, reply then ack, a goroutine per delivery.
	sconn, err := amqp091.Dial(url)
	if err != nil {
		b.Fatal(err)
	}
	defer sconn.Close()
	sch, _ := sconn.Channel()
	if _, err := sch.QueueDeclare(queue, false, true, false, false, nil); err != nil {
		b.Fatal(err)
	}
	sch.Qos(128, 0, false)
	deliveries, err := sch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	var swg sync.WaitGroup
	swg.Add(1)
	go func() {
		defer swg.Done()
		for d := range deliveries {
			swg.Add(1)
			go func() {
				defer swg.Done()
				reply := amqp091.Publishing{CorrelationId: d.CorrelationId, Body: d.Body}
				if shaped {
					body := respBody
					if mode == rawCodec {
						body = transporttest.ServeFrame(echoHandler, d.Body)
					}
					reply = amqp091.Publishing{ContentType: ct, CorrelationId: d.CorrelationId, DeliveryMode: amqp091.Transient, Body: body}
				}
				sch.Publish("", d.ReplyTo, false, false, reply)
				d.Ack(false)
			}()
		}
	}()
	defer swg.Wait()
	defer sch.Close()

	// Client: one channel, direct reply-to, replies matched by correlation id.
	cconn, err := amqp091.Dial(url)
	if err != nil {
		b.Fatal(err)
	}
	defer cconn.Close()
	cch, _ := cconn.Channel()
	replies, err := cch.Consume(amqp.DirectReplyTo, "", true, false, false, false, nil)
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	pending := map[string]chan []byte{}
	var dwg sync.WaitGroup
	dwg.Add(1)
	go func() {
		defer dwg.Done()
		for d := range replies {
			mu.Lock()
			ch := pending[d.CorrelationId]
			delete(pending, d.CorrelationId)
			mu.Unlock()
			if ch != nil {
				ch <- d.Body
			}
		}
	}()
	defer dwg.Wait()
	defer cch.Close()
	var ids atomic.Uint64
	exchange := func(body []byte) ([]byte, error) {
		id := strconv.FormatUint(ids.Add(1), 10)
		ch := make(chan []byte, 1)
		mu.Lock()
		pending[id] = ch
		mu.Unlock()
		pub := amqp091.Publishing{CorrelationId: id, ReplyTo: amqp.DirectReplyTo, Body: body}
		if shaped {
			dl := time.Now().Add(transport.DefaultReplyTimeout)
			pub.ContentType, pub.DeliveryMode = ct, amqp091.Transient
			pub.Headers = amqp091.Table{transport.HeaderDeadline: transport.FormatDeadline(dl)}
			pub.Expiration = strconv.FormatInt(transport.DefaultReplyTimeout.Milliseconds(), 10)
		}
		if err := cch.Publish("", queue, true, false, pub); err != nil {
			return nil, err
		}
		return <-ch, nil
	}
	if mode == rawCodec {
		client := transporttest.CodecClient(func(_ context.Context, _ string, frame []byte) ([]byte, error) { return exchange(frame) })
		runConcurrent(b, par, func() error { return postEcho(client, "http://"+queue+"/echo", payload) })
		return
	}
	runConcurrent(b, par, func() error {
		got, err := exchange(reqBody)
		if err != nil {
			return err
		}
		if len(got) != len(respBody) {
			b.Errorf("%d bytes back", len(got))
		}
		return nil
	})
}
