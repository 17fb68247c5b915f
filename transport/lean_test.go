package transport

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// FuzzLeanEncode is the differential test of the lean encoders (issue 13):
// for every input, a frame that leanRequest or leanResponse writes must be
// byte for byte the frame net/http's Request.Write or Response.Write
// writes. Run it for longer with
//
//	go test -run '^$' -fuzz FuzzLeanEncode -fuzztime 9000000x -timeout 30m ./transport/
//
// (about 10 minutes on a 2-core machine). A count rather than a duration:
// with Go 1.26 a -fuzztime duration can end in a spurious "context deadline
// exceeded" failure with no failing input (golang/go#75804, fixed in Go
// 1.27).
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
			// The frame built in front of the handler's buffer (the
			// body written in two pieces) is net/http's too.
			var bb bodyBuf
			bb.Write(body[:len(body)/2])
			bb.Write(body[len(body)/2:])
			if inPlace, ok := bb.frame(status, h, m); ok {
				ref, err := encodeResponseSlow(status, h, body, m, int64(len(body)))
				if err != nil || !bytes.Equal(inPlace, ref) {
					t.Fatalf("in-place response frame differs (method %q, %v):\nin place %q\nnet/http %q", m, err, inPlace, ref)
				}
			} else if !bytes.Equal(bb.Bytes(), body) {
				t.Fatalf("bodyBuf declined (method %q) and lost the body: %q, want %q", m, bb.Bytes(), body)
			}
		}
	})
}

// TestBodyBufFrame: a response frame is built in front of the body when
// its head fits the room (the body is not copied: the frame shares its
// array), and left to EncodeResponse, with the body intact, when the head
// is larger than the room, the body empty or the method HEAD.
func TestBodyBufFrame(t *testing.T) {
	h := http.Header{"Content-Type": {"text/plain"}}
	var bb bodyBuf
	bb.Write([]byte("hello, "))
	bb.Write([]byte("world"))
	body := bb.Bytes()
	f, ok := bb.frame(200, h, http.MethodGet)
	want := "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n\r\nhello, world"
	if !ok || string(f) != want {
		t.Fatalf("frame %q (ok %v), want %q", f, ok, want)
	}
	if &f[len(f)-len(body)] != &body[0] {
		t.Error("the frame does not share the body's array: the body was copied")
	}
	if bb.Len() != 0 {
		t.Error("the buffer still holds the body after giving up its frame")
	}

	big := http.Header{"X-Big": {strings.Repeat("v", respHeadRoom)}}
	var b2 bodyBuf
	b2.Write([]byte("body"))
	if _, ok := b2.frame(200, big, http.MethodGet); ok || string(b2.Bytes()) != "body" {
		t.Errorf("head over the room: ok %v, body %q; want declined and the body intact", ok, b2.Bytes())
	}
	if _, ok := b2.frame(200, h, http.MethodHead); ok {
		t.Error("HEAD: want declined (EncodeResponse's rules)")
	}
	var empty bodyBuf
	if _, ok := empty.frame(200, h, http.MethodGet); ok {
		t.Error("no body: want declined")
	}
}

// FuzzLeanDecode is the differential test of the lean decoders (issue 13):
// for every input that leanParseRequest or leanParseResponse accepts,
// http.ReadRequest and http.ReadResponse must accept the same bytes and give
// the same method, URL, protocol, header, host, target, status, length and
// framing. Run it for longer with
//
//	go test -run '^$' -fuzz FuzzLeanDecode -fuzztime 9000000x -timeout 30m ./transport/
//
// (about 10 minutes on a 2-core machine). A count rather than a duration:
// with Go 1.26 a -fuzztime duration can end in a spurious "context deadline
// exceeded" failure with no failing input (golang/go#75804, fixed in Go
// 1.27).
func FuzzLeanDecode(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add([]byte(s))
	}
	for _, s := range []string{
		"GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: svc\r\nUser-Agent: Go-http-client/1.1\r\nAccept: */*\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
		"POST /echo? HTTP/1.1\r\nHost: echo\r\nContent-Length: 5\r\nContent-Type: text/plain\r\nX-Empty:\r\n\r\nhello",
		"GET //x/y:z@w HTTP/1.1\r\nHost: s\r\nContent-Length: 007\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain; charset=utf-8\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nhello",
		"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 599 \r\nContent-Length: 0\r\nX:\t v\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		end := headerEnd(frame, -1)
		if end < 0 {
			return
		}
		block := string(frame[:end])
		// The decoders hand the parsers the whole frame (leanHead): they
		// must take the same inputs as from the block alone and find the
		// block's end where headerEnd does, the end net/http reads to.
		var dst http.Request
		var box leanURLBox
		_, headEnd, headOK := leanParseRequestInto(string(frame), &dst, &box)
		_, _, blockOK := leanParseRequest(block)
		if headOK != blockOK || headOK && headEnd != end {
			t.Fatalf("request: from the frame ok %v, end %d; from the block ok %v, end %d:\n%q", headOK, headEnd, blockOK, end, frame)
		}
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			req := &http.Request{Method: method}
			_, _, _, headEnd, headOK := leanParseResponseHead(string(frame), req)
			_, _, blockOK := leanParseResponse(block, req)
			if headOK != blockOK || headOK && headEnd != end {
				t.Fatalf("response: from the frame ok %v, end %d; from the block ok %v, end %d:\n%q", headOK, headEnd, blockOK, end, frame)
			}
		}
		if lean, length, ok := leanParseRequest(block); ok {
			ref, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(frame)))
			if err != nil {
				t.Fatalf("lean read a request net/http refuses (%v):\n%q", err, block)
			}
			n, err := strconv.ParseInt(length, 10, 64)
			if length == "" {
				n, err = 0, nil
			}
			if err == nil {
				lean.ContentLength = n
				compareRequests(t, block, lean, ref)
			}
		}
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			req := &http.Request{Method: method}
			lean, length, ok := leanParseResponse(block, req)
			if !ok {
				continue
			}
			ref, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(frame)), req)
			if err != nil {
				t.Fatalf("lean read a response net/http refuses (%v):\n%q", err, block)
			}
			if n, err := strconv.ParseInt(length, 10, 64); err == nil {
				lean.ContentLength = n
				compareResponses(t, block, lean, ref)
			}
		}
	})
}

func compareRequests(t *testing.T, block string, a, b *http.Request) {
	t.Helper()
	type view struct {
		Method, Proto, Host, RequestURI string
		Major, Minor                    int
		URL                             url.URL
		Header, Trailer                 http.Header
		ContentLength                   int64
		TransferEncoding                []string
		Close                           bool
	}
	va := view{a.Method, a.Proto, a.Host, a.RequestURI, a.ProtoMajor, a.ProtoMinor, *a.URL, a.Header, a.Trailer, a.ContentLength, a.TransferEncoding, a.Close}
	vb := view{b.Method, b.Proto, b.Host, b.RequestURI, b.ProtoMajor, b.ProtoMinor, *b.URL, b.Header, b.Trailer, b.ContentLength, b.TransferEncoding, b.Close}
	if !reflect.DeepEqual(va, vb) {
		t.Fatalf("requests differ for %q:\nlean     %+v\nnet/http %+v", block, va, vb)
	}
}

func compareResponses(t *testing.T, block string, a, b *http.Response) {
	t.Helper()
	type view struct {
		Status, Proto            string
		StatusCode, Major, Minor int
		Header, Trailer          http.Header
		ContentLength            int64
		TransferEncoding         []string
		Close, Uncompressed      bool
		Request                  *http.Request
	}
	va := view{a.Status, a.Proto, a.StatusCode, a.ProtoMajor, a.ProtoMinor, a.Header, a.Trailer, a.ContentLength, a.TransferEncoding, a.Close, a.Uncompressed, a.Request}
	vb := view{b.Status, b.Proto, b.StatusCode, b.ProtoMajor, b.ProtoMinor, b.Header, b.Trailer, b.ContentLength, b.TransferEncoding, b.Close, b.Uncompressed, b.Request}
	if !reflect.DeepEqual(va, vb) {
		t.Fatalf("responses differ for %q:\nlean     %+v\nnet/http %+v", block, va, vb)
	}
}

// TestLeanDecodeTakesOwnFrames checks that the frames httpbus's own encoders
// write for ordinary exchanges take the lean path (else FuzzLeanDecode would
// prove nothing about the frames that matter).
func TestLeanDecodeTakesOwnFrames(t *testing.T) {
	h := http.Header{"Accept": {"*/*"}, "X-Trace": {"a", "b"}, "Content-Type": {"application/json"}}
	r := &http.Request{Method: http.MethodPost, URL: &url.URL{Path: "/orders/42", RawQuery: "expand=items&x=%20"}, Header: h}
	frame, err := EncodeRequest(r, "orders", []byte(`{"n":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, ok := leanParseRequest(string(frame[:headerEnd(frame, -1)])); !ok {
		t.Errorf("lean declines httpbus's request frame %q", frame)
	}
	for _, status := range []int{200, 201, 404, 500} {
		frame, err := EncodeResponse(status, h, []byte("body"), http.MethodGet)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, ok := leanParseResponse(string(frame[:headerEnd(frame, -1)]), r); !ok {
			t.Errorf("lean declines httpbus's response frame %q", frame)
		}
	}
}

// TestLeanManyFields: a header block with more lines than leanParseFields
// keeps on its stack (leanStackFields) is still taken by the lean decoder,
// with every field, and one past leanMaxFields is declined.
func TestLeanManyFields(t *testing.T) {
	for _, n := range []int{leanStackFields - 1, leanStackFields, leanStackFields + 1, leanMaxFields - 2} {
		h := http.Header{}
		for i := range n {
			h.Set(fmt.Sprintf("X-Field-%d", i), strconv.Itoa(i))
		}
		r := &http.Request{Method: http.MethodGet, URL: &url.URL{Path: "/"}, Header: h}
		frame, err := EncodeRequest(r, "orders", nil)
		if err != nil {
			t.Fatal(err)
		}
		req, _, ok := leanParseRequest(string(frame[:headerEnd(frame, -1)]))
		if !ok {
			t.Fatalf("%d fields: lean declines httpbus's request frame", n)
		}
		for i := range n {
			if got := req.Header.Get(fmt.Sprintf("X-Field-%d", i)); got != strconv.Itoa(i) {
				t.Fatalf("%d fields: X-Field-%d = %q, want %d", n, i, got, i)
			}
		}
	}
	block := "GET / HTTP/1.1\r\nHost: orders\r\n" + strings.Repeat("X-A: 1\r\n", leanMaxFields) + "\r\n"
	if _, _, ok := leanParseRequest(block); ok {
		t.Fatalf("lean takes a block of %d fields, more than leanMaxFields", leanMaxFields+1)
	}
}

// TestEncodeForceQuery: a URL ending in a bare "?" keeps it on the wire,
// as net/http's Request.Write writes it (FuzzDecodeRequest found the
// re-encode dropping it; the seed is in testdata).
func TestEncodeForceQuery(t *testing.T) {
	r, err := http.NewRequest(http.MethodGet, "http://svc/p?", nil)
	if err != nil {
		t.Fatal(err)
	}
	var ref bytes.Buffer
	if err := r.Write(&ref); err != nil {
		t.Fatal(err)
	}
	lean, ok := leanRequest(nil, r, "svc", nil)
	if !ok {
		t.Fatal("lean declines GET /p?")
	}
	// An empty service name is not one the lean encoder writes: net/http's.
	slow, err := EncodeRequest(&http.Request{Method: http.MethodPost, URL: r.URL, ProtoMajor: 1, Header: http.Header{}}, "", []byte("b"))
	if err != nil {
		t.Fatal(err)
	}
	want := "GET /p? HTTP/1.1\r\n"
	if !strings.HasPrefix(ref.String(), want) || !strings.HasPrefix(string(lean), want) || !strings.HasPrefix(string(slow), "POST /p? HTTP/1.1\r\n") {
		t.Fatalf("request lines: net/http %q, lean %q, EncodeRequest %q", firstLine(ref.String()), firstLine(string(lean)), firstLine(string(slow)))
	}
}

func firstLine(s string) string {
	if i := strings.Index(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

// leanParseRequest (test helper) parses the header block of a request frame (through its
// blank line), or returns ok false where it declines. Body, ContentLength
// and the checks on them are the caller's.
func leanParseRequest(block string) (req *http.Request, length string, ok bool) {
	lr := new(leanReqBox)
	length, end, ok := leanParseRequestInto(block, &lr.req, &lr.leanURLBox)
	if !ok || end != len(block) {
		return nil, "", false
	}
	return &lr.req, length, true
}

// leanParseResponse (test helper) parses the header block of a response frame answering
// req, or returns ok false where it declines. Body and the checks on it are
// the caller's; the returned length is the Content-Length value.
func leanParseResponse(block string, req *http.Request) (resp *http.Response, length string, ok bool) {
	resp, _, length, end, ok := leanParseResponseHead(block, req)
	if !ok || end != len(block) {
		return nil, "", false
	}
	return resp, length, true
}
