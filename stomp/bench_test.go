package stomp_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	stompgo "github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"

	"github.com/httpbus/httpbus/stomp"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

const benchPayload = 256

// BenchmarkRequestReply measures request/reply with a 256-byte body and a
// 256-byte answer, on each broker, through httpbus (http.Client →
// RoundTripper → stomp.Conn → broker → stomp.Listener → transport.Server →
// handler) and through raw go-stomp (SEND with reply-to a temp queue and a
// correlation-id; the responder acks client-individual after replying, as
// httpbus does), sequentially and with 16 callers in flight. raw-shaped is
// that bare go-stomp exchange carrying what httpbus's messages carry (the
// request and response frames as bodies, content-type
// application/x-httpbus, httpbus-version, and the deadline headers:
// httpbus-deadline plus expires on ActiveMQ or expiration on RabbitMQ),
// with no http.Client, codec or Server: what the broker and go-stomp cost
// for httpbus's messages before any httpbus code runs (BENCHMARKS.md
// "Floors"). raw-codec is raw-shaped plus the least work httpbus's design
// requires at each end: the caller is an http.Client that encodes the
// request frame and decodes the response frame
// (transporttest.CodecClient), the responder decodes the request frame,
// runs the handler and encodes its answer (transporttest.ServeFrame); no
// Server, RoundTripper bookkeeping or stream.
//
//	go test -run '^$' -bench RequestReply -benchtime 3s ./stomp/
func BenchmarkRequestReply(b *testing.B) {
	for _, br := range brokers {
		b.Run(br.name, func(b *testing.B) {
			addr := br.addr(b)
			for _, par := range []int{1, 16} {
				name := "serial"
				if par > 1 {
					name = "parallel" + strconv.Itoa(par)
				}
				b.Run("httpbus/"+name, func(b *testing.B) { benchHTTPBus(b, br, addr, par) })
				b.Run("raw/"+name, func(b *testing.B) { benchRaw(b, br, addr, par, rawPlain) })
				b.Run("raw-shaped/"+name, func(b *testing.B) { benchRaw(b, br, addr, par, rawShaped) })
				b.Run("raw-codec/"+name, func(b *testing.B) { benchRaw(b, br, addr, par, rawCodec) })
			}
		})
	}
}

// runParallel runs op b.N times with par goroutines.
func runParallel(b *testing.B, par int, op func() error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	b.ResetTimer()
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := op(); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d requests failed; first: %v", n, b.N, firstErr.Load())
	}
}

func benchHTTPBus(b *testing.B, br broker, addr string, par int) {
	j := newJanitor(b, br)
	url := "stomp://guest:guest@" + addr + "?prefetch=64"
	svc := unique("bench")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	j.service(svc)
	l, err := transport.Listen(ctx, url+"&service="+svc)
	if err != nil {
		b.Fatal(err)
	}
	answer := bytes.Repeat([]byte("r"), benchPayload)
	srv := &transport.Server{MaxInFlight: 64, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write(answer)
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() {
		srv.Shutdown(context.Background())
		<-served
	}()
	c, err := transport.Dial(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	client := transport.NewClient(c)
	payload := bytes.Repeat([]byte("q"), benchPayload)
	b.SetBytes(2 * benchPayload)
	b.ReportAllocs()
	runParallel(b, par, func() error { return postEcho(client, svc, payload) })
}

// postEcho POSTs payload to svc and checks the 200 and the answer's size.
func postEcho(client *http.Client, svc string, payload []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+svc+"/bench", bytes.NewReader(payload))
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || n != benchPayload {
		return &benchError{resp.StatusCode, n}
	}
	return nil
}

type benchError struct {
	status int
	n      int64
}

func (e *benchError) Error() string {
	return "status " + strconv.Itoa(e.status) + ", " + strconv.FormatInt(e.n, 10) + " bytes"
}

// rawDial dials go-stomp with the same options httpbus uses.
func rawDial(b testing.TB, addr string) *stompgo.Conn {
	c, err := stompgo.Dial("tcp", addr, append(stomp.ConnOptions(stomp.Config{}), stompgo.ConnOpt.Login("guest", "guest"))...)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// Modes of benchRaw (see BenchmarkRequestReply).
const (
	rawPlain  = iota // bare go-stomp
	rawShaped        // messages shaped as httpbus's
	rawCodec         // shaped, with an http.Client and the frame codec at both ends
)

// benchRaw is bare go-stomp request/reply; rawShaped, each message carries
// what httpbus's does, to tell their cost at the broker from httpbus's own;
// rawCodec adds the frame codec and net/http (see BenchmarkRequestReply).
func benchRaw(b *testing.B, br broker, addr string, par int, mode int) {
	shaped := mode != rawPlain
	j := newJanitor(b, br)
	svc := unique("rawbench")
	j.service(svc)
	dest := "/queue/" + svc
	payload := bytes.Repeat([]byte("q"), benchPayload)
	answer := bytes.Repeat([]byte("r"), benchPayload)
	ct := "application/octet-stream"
	if shaped {
		payload, answer = transporttest.EchoFrames(b, payload, answer)
		ct = transport.MediaType
	}

	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write(answer)
	})
	if mode == rawCodec {
		answer = bytes.Repeat([]byte("r"), benchPayload)
	}

	// Responder: client-individual ack after the reply, prefetch 64.
	sc := rawDial(b, addr)
	sub, err := sc.Subscribe(dest, stompgo.AckClientIndividual,
		stompgo.SubscribeOpt.Header("activemq.prefetchSize", "64"), stompgo.SubscribeOpt.Header("prefetch-count", "64"))
	if err != nil {
		b.Fatal(err)
	}
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() {
		defer rwg.Done()
		for m := range sub.C {
			if m.Err != nil {
				continue
			}
			opts := []func(*frame.Frame) error{stompgo.SendOpt.Header("correlation-id", m.Header.Get("correlation-id"))}
			if shaped {
				opts = append(opts, stompgo.SendOpt.Header("httpbus-version", transport.Version))
			}
			out := answer
			if mode == rawCodec {
				out = transporttest.ServeFrame(handler, m.Body)
			}
			sc.Send(m.Header.Get("reply-to"), ct, out, opts...)
			sc.Ack(m)
		}
	}()
	defer func() {
		sc.Disconnect()
		rwg.Wait()
	}()

	// Requester: one connection, one temp reply queue, replies matched by
	// correlation-id.
	cc := rawDial(b, addr)
	replyTo := "/temp-queue/" + unique("rawreply")
	var opts []func(*frame.Frame) error
	if br.dialect == stomp.DialectRabbitMQ {
		opts = append(opts, stompgo.SubscribeOpt.Header(stompgo.ReplyToHeader, replyTo))
	}
	rsub, err := cc.Subscribe(replyTo, stompgo.AckAuto, opts...)
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	pending := map[string]chan []byte{}
	var cwg sync.WaitGroup
	cwg.Add(1)
	go func() {
		defer cwg.Done()
		for m := range rsub.C {
			if m.Err != nil {
				continue
			}
			mu.Lock()
			ch := pending[m.Header.Get("correlation-id")]
			delete(pending, m.Header.Get("correlation-id"))
			mu.Unlock()
			if ch != nil {
				ch <- m.Body
			}
		}
	}()
	defer func() {
		cc.Disconnect()
		cwg.Wait()
	}()
	var seq atomic.Int64
	exchange := func(ctx context.Context, payload []byte) ([]byte, error) {
		id := strconv.FormatInt(seq.Add(1), 10)
		ch := make(chan []byte, 1)
		mu.Lock()
		pending[id] = ch
		mu.Unlock()
		opts := []func(*frame.Frame) error{stompgo.SendOpt.Header("reply-to", replyTo), stompgo.SendOpt.Header("correlation-id", id)}
		if shaped {
			dl := time.Now().Add(10 * time.Second)
			opts = append(opts, stompgo.SendOpt.Header("httpbus-version", transport.Version),
				stompgo.SendOpt.Header("httpbus-deadline", strconv.FormatInt(dl.UnixMilli(), 10)))
			if br.dialect == stomp.DialectRabbitMQ {
				opts = append(opts, stompgo.SendOpt.Header("expiration", "10000"))
			} else {
				opts = append(opts, stompgo.SendOpt.Header("expires", strconv.FormatInt(dl.UnixMilli(), 10)))
			}
		}
		if err := cc.Send(dest, ct, payload, opts...); err != nil {
			return nil, err
		}
		select {
		case body := <-ch:
			return body, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	b.SetBytes(2 * benchPayload)
	b.ReportAllocs()
	if mode == rawCodec {
		client := transporttest.CodecClient(func(ctx context.Context, _ string, frame []byte) ([]byte, error) {
			return exchange(ctx, frame)
		})
		body := bytes.Repeat([]byte("q"), benchPayload)
		runParallel(b, par, func() error { return postEcho(client, svc, body) })
		return
	}
	runParallel(b, par, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		body, err := exchange(ctx, payload)
		if err != nil {
			return err
		}
		if len(body) != len(answer) {
			return &benchError{200, int64(len(body))}
		}
		return nil
	})
}
