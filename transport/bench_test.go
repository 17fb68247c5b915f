package transport_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/httpbus/httpbus/transport"
)

// Frame codec benchmarks: the per-message cost every broker backend pays on
// both sides (BENCHMARKS.md records allocs/op). Run with
//
//	go test -run '^$' -bench . -benchmem ./transport/
var benchSizes = []int{0, 256, 64 << 10, 1 << 20}

func sizeName(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// benchRequest is a request as an http.Client hands it to a RoundTripper.
func benchRequest(b *testing.B) *http.Request {
	r, err := http.NewRequest(http.MethodPost, "http://orders/items/42?expand=lines", nil)
	if err != nil {
		b.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Accept", "application/json")
	r.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	return r
}

func benchResponseHeader() http.Header {
	return http.Header{
		"Content-Type": {"application/json"},
		"Date":         {"Sun, 22 Nov 2026 03:00:00 GMT"},
	}
}

func BenchmarkEncodeRequest(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(sizeName(n), func(b *testing.B) {
			r, body := benchRequest(b), make([]byte, n)
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				if _, err := transport.EncodeRequest(r, "orders", body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeRequest(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(sizeName(n), func(b *testing.B) {
			frame, err := transport.EncodeRequest(benchRequest(b), "orders", make([]byte, n))
			if err != nil {
				b.Fatal(err)
			}
			lim := transport.Limits{MaxBodyBytes: -1}
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				r, err := transport.DecodeRequest(frame, lim)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, r.Body) //nolint:errcheck // bytes.Reader
			}
		})
	}
}

func BenchmarkEncodeResponse(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(sizeName(n), func(b *testing.B) {
			h, body := benchResponseHeader(), make([]byte, n)
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				if _, err := transport.EncodeResponse(http.StatusOK, h, body, http.MethodPost); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeResponse(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(sizeName(n), func(b *testing.B) {
			frame, err := transport.EncodeResponse(http.StatusOK, benchResponseHeader(), make([]byte, n), http.MethodPost)
			if err != nil {
				b.Fatal(err)
			}
			req := benchRequest(b)
			lim := transport.Limits{MaxBodyBytes: -1}
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				resp, err := transport.DecodeResponse(frame, req, lim)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body) //nolint:errcheck // bytes.Reader
			}
		})
	}
}

// BenchmarkFrameRoundTrip is the whole codec work of one call: encode the
// request, decode it, encode the response, decode it (what caller and
// server do together, minus the broker and the handler).
func BenchmarkFrameRoundTrip(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(sizeName(n), func(b *testing.B) {
			req, body := benchRequest(b), make([]byte, n)
			h := benchResponseHeader()
			lim := transport.Limits{MaxBodyBytes: -1}
			var buf bytes.Buffer
			b.ReportAllocs()
			b.SetBytes(int64(n))
			for b.Loop() {
				frame, err := transport.EncodeRequest(req, "orders", body)
				if err != nil {
					b.Fatal(err)
				}
				in, err := transport.DecodeRequest(frame, lim)
				if err != nil {
					b.Fatal(err)
				}
				buf.Reset()
				buf.ReadFrom(in.Body) //nolint:errcheck // bytes.Reader
				out, err := transport.EncodeResponse(http.StatusOK, h, buf.Bytes(), in.Method)
				if err != nil {
					b.Fatal(err)
				}
				resp, err := transport.DecodeResponse(out, req, lim)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body) //nolint:errcheck // bytes.Reader
			}
		})
	}
}
