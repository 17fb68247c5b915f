package transport

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"testing"
)

// serveAs serves one request with method through h and decodes the
// response as a RoundTripper does (with a request of that method and ctx).
func serveAs(t *testing.T, ctx context.Context, method string, h http.HandlerFunc) (*http.Response, string) {
	t.Helper()
	l := &oneShot{}
	(&Server{Handler: h, Logger: discard}).serveDelivery(context.Background(), l, frameOf(t, method, "/", ""))
	if l.resp == nil {
		t.Fatal("no reply")
	}
	req, _ := http.NewRequestWithContext(ctx, method, "http://svc/", nil)
	resp, err := DecodeResponse(l.resp.Body, req, Limits{})
	if err != nil {
		t.Fatalf("DecodeResponse: %v\n%s", err, l.resp.Body)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// Content-Type sniffing follows net/http's chunkWriter.writeHeader: after
// an explicit WriteHeader too, on the bytes before the first Flush, never
// with Content-Encoding or a Content-Type key (even nil).
func TestResponseWriterSniffing(t *testing.T) {
	for _, c := range []struct {
		name string
		h    http.HandlerFunc
		want []string // nil: no Content-Type
	}{
		{"after WriteHeader", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, "created")
		}, []string{"text/plain; charset=utf-8"}},
		{"after 103", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "<!DOCTYPE html><p>")
		}, []string{"text/html; charset=utf-8"}},
		{"several writes", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "  ")
			io.WriteString(w, "<!DOCTYPE html><p>")
		}, []string{"text/html; charset=utf-8"}},
		{"first flushed bytes", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "x")
			w.(http.Flusher).Flush()
			io.WriteString(w, "<!DOCTYPE html><p>")
		}, []string{"text/plain; charset=utf-8"}},
		{"flush before any byte", func(w http.ResponseWriter, r *http.Request) {
			w.(http.Flusher).Flush()
			io.WriteString(w, "<!DOCTYPE html><p>")
		}, nil},
		{"Content-Encoding", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Write([]byte{0x1f, 0x8b, 8, 0})
		}, nil},
		{"nil Content-Type", func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = nil
			io.WriteString(w, "<!DOCTYPE html><p>")
		}, nil},
		{"304", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotModified)
		}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, _ := serveAs(t, context.Background(), "GET", c.h)
			if got := resp.Header["Content-Type"]; len(got) != len(c.want) || (len(got) > 0 && got[0] != c.want[0]) {
				t.Errorf("Content-Type %q, want %q", got, c.want)
			}
		})
	}
}

// A HEAD response keeps an explicit Content-Length, gets the length of what
// the handler wrote, or has none, as from net/http.
func TestResponseWriterHEAD(t *testing.T) {
	for _, c := range []struct {
		name   string
		h      http.HandlerFunc
		length int64
		header []string
	}{
		{"explicit", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "10240")
		}, 10240, []string{"10240"}},
		{"written", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "hello")
		}, 5, []string{"5"}},
		{"nothing", func(w http.ResponseWriter, r *http.Request) {}, -1, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := serveAs(t, context.Background(), "HEAD", c.h)
			got := resp.Header["Content-Length"]
			if resp.ContentLength != c.length || body != "" || len(got) != len(c.header) || (len(got) > 0 && got[0] != c.header[0]) || resp.Close {
				t.Errorf("ContentLength %d, header %q, body %q, Close %v; want %d, %q, empty, false", resp.ContentLength, got, body, resp.Close, c.length, c.header)
			}
		})
	}
}

func TestResponseWriterContentLengthBoundsWrites(t *testing.T) {
	var err error
	serveAs(t, context.Background(), "GET", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "3")
		io.WriteString(w, "abc")
		_, err = io.WriteString(w, "d")
	})
	if !errors.Is(err, http.ErrContentLength) {
		t.Fatalf("write past Content-Length: %v, want http.ErrContentLength", err)
	}
}

// 1xx responses travel in the frame before the final one and reach the
// caller's httptrace Got1xxResponse, with the header as it was then.
func TestResponseWriterInterim(t *testing.T) {
	var got []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		got = append(got, http.StatusText(code)+": "+h.Get("Link"))
		return nil
	}}
	ctx := httptrace.WithClientTrace(context.Background(), trace)
	resp, body := serveAs(t, ctx, "GET", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</a.css>")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Set("Link", "</b.js>")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "final")
	})
	if want := []string{"Early Hints: </a.css>", "Early Hints: </b.js>"}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Got1xxResponse saw %q, want %q", got, want)
	}
	if resp.StatusCode != 200 || body != "final" || resp.Header.Get("Link") != "</b.js>" {
		t.Errorf("final response %d %q Link %q", resp.StatusCode, body, resp.Header.Get("Link"))
	}
	// Without a trace the interim responses are skipped; an error from
	// Got1xxResponse is returned.
	frame := []byte("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
	if r, err := DecodeResponse(frame, nil, Limits{}); err != nil || r.StatusCode != 204 {
		t.Errorf("DecodeResponse without a request: %v, %v", r, err)
	}
	stop := errors.New("stop")
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got1xxResponse: func(int, textproto.MIMEHeader) error { return stop },
	}), "GET", "http://svc/", nil)
	if _, err := DecodeResponse(frame, req, Limits{}); !errors.Is(err, stop) {
		t.Errorf("DecodeResponse with a failing Got1xxResponse: %v, want its error", err)
	}
	// A frame holding only an interim response is malformed.
	if _, err := DecodeResponse(frame[:44], nil, Limits{}); !errors.Is(err, ErrMalformedFrame) {
		t.Errorf("interim response alone: %v, want ErrMalformedFrame", err)
	}
}

// A response with trailers is a chunked frame; the caller sees it as from
// net/http: ContentLength -1, TransferEncoding ["chunked"], the trailers.
func TestDecodeResponseChunked(t *testing.T) {
	resp, body := serveAs(t, context.Background(), "GET", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "body")
		w.Header().Set("X-Sum", "42")
	})
	if body != "body" || resp.ContentLength != -1 || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" || resp.Trailer.Get("X-Sum") != "42" {
		t.Errorf("got %q ContentLength %d TransferEncoding %q Trailer %v", body, resp.ContentLength, resp.TransferEncoding, resp.Trailer)
	}
}
