package inmem_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/httpbus/httpbus/inmem"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

// Round trips through the in-memory backend: http.Client → RoundTripper →
// frame → Server → handler → frame → caller, with no network. This is the
// floor under every broker backend's cost. Run with
//
//	go test -run '^$' -bench . -benchmem ./inmem/

func echo(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(r.ContentLength, 10))
	io.Copy(w, r.Body) //nolint:errcheck // the caller checks the length
}

// startEcho serves echo on a fresh bus and returns a client for it.
func startEcho(b *testing.B) *http.Client {
	bus := inmem.NewBus()
	l, err := bus.Listen(b.Context(), transport.ListenConfig{Service: "echo"})
	if err != nil {
		b.Fatal(err)
	}
	transporttest.Serve(b, &transport.Server{Handler: http.HandlerFunc(echo), MaxBodyBytes: -1}, l)
	conn, err := bus.Dial(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return &http.Client{Transport: &transport.RoundTripper{Conn: conn, MaxBodyBytes: -1}}
}

func call(b *testing.B, c *http.Client, body []byte) {
	req, err := http.NewRequest(http.MethodPost, "http://echo/echo", bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || n != int64(len(body)) {
		b.Fatalf("status %d, %d of %d bytes: %s", resp.StatusCode, n, len(body), resp.Header.Get(transport.HeaderError))
	}
}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

func BenchmarkRoundTrip(b *testing.B) {
	for _, n := range []int{0, 256, 64 << 10, 1 << 20} {
		b.Run(sizeName(n), func(b *testing.B) {
			c, body := startEcho(b), make([]byte, n)
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				call(b, c, body)
			}
		})
	}
}

func BenchmarkRoundTripParallel(b *testing.B) {
	c, body := startEcho(b), make([]byte, 256)
	b.ReportAllocs()
	b.SetBytes(256)
	b.SetParallelism(16) // 16×GOMAXPROCS callers
	transporttest.ReportCPU(b, func() {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				call(b, c, body)
			}
		})
	})
}
