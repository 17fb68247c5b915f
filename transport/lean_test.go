package transport

import (
	"bytes"
	"net/http"
	"net/url"
	"testing"
)

// FuzzLeanEncode is the differential test of the lean encoders (issue 13):
// for every input, a frame that leanRequest or leanResponse writes must be
// byte for byte the frame net/http's Request.Write or Response.Write
// writes. Run it for longer with
//
//	go test -run '^$' -fuzz FuzzLeanEncode -fuzztime 10m ./transport/
func FuzzLeanEncode(f *testing.F) {
	f.Add("GET", "/a/b", "", "x=1", "svc", "Accept", "*/*", "X-A", "1", []byte(nil), 200)
	f.Add("POST", "/echo", "", "", "echo", "Content-Type", "application/json", "User-Agent", " agent\r\n ", []byte(`{"a":1}`), 201)
	f.Add("DELETE", "/a b", "/a%20b", "", "orders.v1", "x-lower", "v", "Bad Key", "v", []byte{}, 204)
	f.Add("", "", "", "", "s", "Content-Length", "99", "Trailer", "X", []byte("hello"), 404)
	f.Add("PATCH", "/é", "", "q", "s-1_2", "Transfer-Encoding", "chunked", "Host", "evil", []byte("x"), 999)
	f.Add("NOTIFY", "//x", "", "", "topic", "Set-Cookie", "a=1", "Set-Cookie", "b=2", []byte("body"), 500)
	f.Add("GET", "/", "", "", "[::1]", "K", "\x00", "K2", "\t", []byte(nil), 304)
	f.Add("OPTIONS", "*", "", "", "svc%zone", "User-Agent", "", "X", "a\nb", []byte(nil), 1000)
	f.Fuzz(func(t *testing.T, method, path, rawPath, rawQuery, service, k1, v1, k2, v2 string, body []byte, status int) {
		h := http.Header{}
		h[k1] = append(h[k1], v1)
		h[k2] = append(h[k2], v2)
		r := &http.Request{Method: method, URL: &url.URL{Path: path, RawPath: rawPath, RawQuery: rawQuery}, Header: h}
		if lean, ok := leanRequest(nil, r, service, body); ok {
			ref, err := encodeRequestSlow(r, service, body)
			if err != nil {
				t.Fatalf("lean wrote a request net/http refuses (%v):\n%q", err, lean)
			}
			if !bytes.Equal(lean, ref) {
				t.Fatalf("request frames differ:\nlean    %q\nnet/http %q", lean, ref)
			}
		}
		for _, m := range []string{method, http.MethodGet, http.MethodPost, ""} {
			if lean, ok := leanResponse(nil, status, h, body, m); ok {
				ref, err := encodeResponseSlow(status, h, body, m, int64(len(body)))
				if err != nil {
					t.Fatalf("lean wrote a response net/http refuses (%v):\n%q", err, lean)
				}
				if !bytes.Equal(lean, ref) {
					t.Fatalf("response frames differ (method %q):\nlean    %q\nnet/http %q", m, lean, ref)
				}
			}
		}
	})
}
