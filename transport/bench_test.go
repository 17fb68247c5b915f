package transport_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
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

// BenchmarkFloor measures what one call costs before httpbus's own work,
// for the floors BENCHMARKS.md gives next to issue 13's targets. Both
// cases serve the echo handler of inmem's BenchmarkRoundTrip (256 B each
// way) through an http.Client, on the caller's goroutine:
//
//   - net/http: the RoundTripper runs the handler on an
//     httptest.ResponseRecorder (what net/http alone costs: the Client's
//     request copy, the Request, the ResponseWriter, the Response);
//   - codec: the RoundTripper also writes and reads both frames
//     (EncodeRequest, DecodeRequest, EncodeResponse, DecodeResponse);
//   - handoff: the raw-codec floor of the broker benchmarks
//     (transporttest.CodecClient and ServeFrame) with the server's half on
//     a pool of goroutines, reached over a channel and answering over
//     another.
//
// inmem's BenchmarkRoundTrip/256B is codec plus a Server (in-flight bound,
// deadline, panic guard, stream bookkeeping) and the handoff to a server
// goroutine and back. Each case has a parallel variant: 32 callers on a
// 2-core machine (16 × GOMAXPROCS), as BENCHMARKS.md's mem row, reporting
// the process's CPU per call (cpu-µs/op) beside ns/op.
func BenchmarkFloor(b *testing.B) {
	payload := make([]byte, 256)
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) //nolint:errcheck // bytes.Reader
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(payload) //nolint:errcheck // recorder
	})
	for _, c := range []struct {
		name string
		rt   http.RoundTripper
	}{
		{"net/http", floorDirect{echo}},
		{"codec", floorCodec{echo}},
		{"handoff", newFloorHandoff(b, echo)},
	} {
		client := &http.Client{Transport: c.rt}
		post := func(b *testing.B) {
			resp, err := client.Post("http://orders/echo", "application/octet-stream", bytes.NewReader(payload))
			if err != nil {
				b.Fatal(err)
			}
			if n, _ := io.Copy(io.Discard, resp.Body); n != int64(len(payload)) {
				b.Fatalf("echo of %d bytes came back with %d", len(payload), n)
			}
			resp.Body.Close()
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				post(b)
			}
		})
		// parallel: 32 callers on this machine's 2 cores, as the mem row of
		// BENCHMARKS.md (httpbus bench -url mem://x -c 32), with the
		// process's CPU time per call (user + system, µs) beside ns/op.
		b.Run(c.name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(payload)))
			b.SetParallelism(16)
			transporttest.ReportCPU(b, func() {
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						post(b)
					}
				})
			})
		})
	}
}

// newFloorHandoff is the raw-codec floor of the broker benchmarks
// (transporttest.CodecClient and ServeFrame) with a pool of goroutines for
// a broker: the request frame goes to a worker over a channel and the
// response frame comes back over another, the least hand-off a server that
// runs handlers off the caller's goroutine makes (inmem's Server makes the
// same two).
func newFloorHandoff(b *testing.B, h http.Handler) http.RoundTripper {
	type call struct {
		frame []byte
		reply chan []byte
	}
	calls := make(chan call)
	for range 32 {
		go func() {
			for c := range calls {
				c.reply <- transporttest.ServeFrame(h, c.frame)
			}
		}()
	}
	b.Cleanup(func() { close(calls) })
	return transporttest.CodecClient(func(_ context.Context, _ string, frame []byte) ([]byte, error) {
		reply := make(chan []byte, 1)
		calls <- call{frame, reply}
		return <-reply, nil
	}).Transport
}

type floorDirect struct{ h http.Handler }

func (f floorDirect) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, r)
	resp := rec.Result()
	resp.Request = r
	return resp, nil
}

type floorCodec struct{ h http.Handler }

func (f floorCodec) RoundTrip(r *http.Request) (*http.Response, error) {
	lim := transport.Limits{MaxBodyBytes: -1}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	frame, err := transport.EncodeRequest(r, r.URL.Host, body)
	if err != nil {
		return nil, err
	}
	in, err := transport.DecodeRequest(frame, lim)
	if err != nil {
		return nil, err
	}
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, in)
	out, err := transport.EncodeResponse(rec.Code, rec.Header(), rec.Body.Bytes(), in.Method)
	if err != nil {
		return nil, err
	}
	return transport.DecodeResponse(out, r, lim)
}
