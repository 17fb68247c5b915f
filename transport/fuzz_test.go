package transport

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"testing"
)

// Seeds beyond testdata/fuzz: valid frames, every error class, and
// smuggling attempts.
var requestSeeds = []string{
	"GET / HTTP/1.1\r\nHost: svc\r\n\r\n",
	"POST /a?b=c HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: svc\r\n\r\nGET /second HTTP/1.1\r\nHost: evil\r\n\r\n",
	"GET / HTTP/1.0\n\n",
	"NOTIFY /events HTTP/1.1\r\nHost: topic\r\nContent-Length: 0\r\n\r\n",
	"\x00\xff garbage",
}

func FuzzDecodeRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		lim := Limits{MaxHeaderBytes: 4096, MaxBodyBytes: 1 << 16}
		r, err := DecodeRequest(frame, lim)
		if err != nil {
			if !errors.Is(err, ErrMalformedFrame) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error %v matches no sentinel", err)
			}
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Fatalf("body of a decoded frame fails: %v", err)
		}
		if (r.ContentLength >= 0 && int64(len(body)) != r.ContentLength) || int64(len(body)) > lim.MaxBodyBytes {
			t.Fatalf("body %d bytes, ContentLength %d, limit %d", len(body), r.ContentLength, lim.MaxBodyBytes)
		}
		// What decodes must survive a re-encode unchanged: one request,
		// same method, target, host and body.
		again, err := EncodeRequest(r, r.Host, body)
		if err != nil {
			return // net/http refuses to write some inputs it reads (bad host)
		}
		r2, err := DecodeRequest(again, Limits{MaxHeaderBytes: -1, MaxBodyBytes: -1})
		if err != nil {
			t.Fatalf("re-encoded frame does not decode: %v\n%q", err, again)
		}
		body2, _ := io.ReadAll(r2.Body)
		if r2.Method != r.Method || r2.URL.RequestURI() != r.URL.RequestURI() || r2.Host != r.Host || !bytes.Equal(body, body2) {
			t.Fatalf("re-encode changed the request: %s %s %q → %s %s %q", r.Method, r.URL.RequestURI(), r.Host, r2.Method, r2.URL.RequestURI(), r2.Host)
		}
	})
}

func FuzzDecodeResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
		"HTTP/1.1 500 Internal Server Error\r\n\r\nbody to the end",
		"HTTP/1.1 999\r\n\r\n",
	} {
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, frame []byte, head bool) {
		var req *http.Request
		if head {
			req = &http.Request{Method: http.MethodHead}
		}
		resp, err := DecodeResponse(frame, req, Limits{MaxHeaderBytes: 4096, MaxBodyBytes: 1 << 16})
		if err != nil {
			if !errors.Is(err, ErrMalformedFrame) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error %v matches no sentinel", err)
			}
			return
		}
		if _, err := io.ReadAll(resp.Body); err != nil {
			t.Fatalf("body of a decoded response fails: %v", err)
		}
	})
}

// FuzzServer feeds arbitrary frames to a Server: every one is answered with
// a response that decodes, and the server never panics.
func FuzzServer(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s), "message/http")
	}
	f.Add([]byte("plain"), "text/plain")
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, r.Body)
	}), Logger: discard, MaxBodyBytes: 1 << 16, MaxHeaderBytes: 4096}
	f.Fuzz(func(t *testing.T, frame []byte, ct string) {
		l := &oneShot{}
		srv.serveDelivery(t.Context(), l, &Delivery{Message: Message{Body: frame, ContentType: ct}, Service: "svc"})
		if l.resp == nil {
			t.Fatal("no reply")
		}
		if _, err := DecodeResponse(l.resp.Body, nil, Limits{MaxBodyBytes: -1}); err != nil {
			t.Fatalf("reply does not decode: %v", err)
		}
	})
}
