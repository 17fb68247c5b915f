package tcp_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/httpbus/httpbus/tcp"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

// BenchmarkRequestReply measures one request/reply with a 256-byte body
// each way through httpbus over tcp (http.Client → RoundTripper → tcp.Conn
// → net/http's Transport → loopback → net/http's Server → tcp.Listener →
// Server → handler) next to raw net/http (the same handler behind an
// http.Server, called by an http.Client), in the same run; serial and with
// b.RunParallel (16 × GOMAXPROCS callers: 32 on a 2-core machine, as in
// BENCHMARKS.md's request/reply table). Each call has a deadline, as
// `httpbus bench` gives both sides. raw is the floor: tcp is net/http on
// the wire, so what httpbus adds is its Server and RoundTripper.
//
//	go test -run '^$' -bench RequestReply -benchmem ./tcp/
//	scripts/instructions.sh ./tcp/ 'RequestReply/httpbus/serial'
func BenchmarkRequestReply(b *testing.B) {
	payload := bytes.Repeat([]byte("x"), 256)
	h := echoHandler(payload)

	b.Run("httpbus", func(b *testing.B) {
		l, err := tcp.Listen(b.Context(), "tcp://127.0.0.1:0", transport.ListenConfig{Service: "echo"}, tcp.Config{Logger: transporttest.Logger(b)})
		if err != nil {
			b.Fatal(err)
		}
		transporttest.Serve(b, &transport.Server{Handler: h, Logger: transporttest.Logger(b)}, l)
		conn, err := tcp.Dial(b.Context(), "tcp://"+l.Addr().String(), tcp.Config{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		serialAndParallel(b, transport.NewClient(conn), "http://echo/echo", payload)
	})

	b.Run("raw", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ln) }()
		tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
		b.Cleanup(func() {
			tr.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				b.Error(err)
			}
			if err := <-done; !errors.Is(err, http.ErrServerClosed) {
				b.Error(err)
			}
		})
		serialAndParallel(b, &http.Client{Transport: tr}, "http://"+ln.Addr().String()+"/echo", payload)
	})
}

// serialAndParallel runs calls to url as the sub-benchmarks "serial" and
// "parallel" (16 × GOMAXPROCS goroutines).
func serialAndParallel(b *testing.B, c *http.Client, url string, payload []byte) {
	b.Run("serial", func(b *testing.B) {
		b.SetBytes(int64(len(payload)))
		b.ReportAllocs()
		for b.Loop() {
			benchCall(b, c, url, payload)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetBytes(int64(len(payload)))
		b.ReportAllocs()
		b.SetParallelism(16)
		transporttest.ReportCPU(b, func() {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					benchCall(b, c, url, payload)
				}
			})
		})
	})
}

// echoHandler answers with payload after reading the request's body.
func echoHandler(payload []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) //nolint:errcheck // the caller checks the answer
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(payload) //nolint:errcheck // the caller checks the answer
	})
}

func benchCall(b *testing.B, c *http.Client, url string, payload []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), transport.DefaultReplyTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || n != int64(len(payload)) {
		b.Fatalf("status %d, %d bytes: %s", resp.StatusCode, n, resp.Header.Get(transport.HeaderError))
	}
}
