package transport

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func mustRequest(t *testing.T, method, target string, h http.Header) *http.Request {
	t.Helper()
	r, err := http.NewRequest(method, "http://ignored"+target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range h {
		r.Header[k] = vs
	}
	return r
}

func TestRequestRoundTrip(t *testing.T) {
	cases := []struct {
		name, method, target string
		header               http.Header
		body                 []byte
	}{
		{"get", "GET", "/items/42", nil, nil},
		{"query", "GET", "/search?q=a+b&q=c&x=%2F", nil, nil},
		{"escaped path", "DELETE", "/a%2Fb/%E2%82%AC", nil, nil},
		{"multi header", "POST", "/", http.Header{"X-A": {"1", "2"}, "Accept": {"text/plain"}}, []byte("x")},
		{"binary body", "PUT", "/bin", nil, []byte{0, 1, 2, 255, '\r', '\n', '\r', '\n'}},
		{"custom method", "PROPFIND", "/dav", nil, nil},
		{"notify", MethodNotify, "/events", nil, []byte(`{"id":1}`)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := mustRequest(t, c.method, c.target, c.header)
			frame, err := EncodeRequest(in, "orders", c.body)
			if err != nil {
				t.Fatal(err)
			}
			out, err := DecodeRequest(frame, Limits{})
			if err != nil {
				t.Fatalf("decode %q: %v", frame, err)
			}
			if out.Method != c.method || out.Host != "orders" || out.URL.RequestURI() != in.URL.RequestURI() {
				t.Errorf("got %s %s host %q, want %s %s host orders", out.Method, out.URL.RequestURI(), out.Host, c.method, in.URL.RequestURI())
			}
			for k, vs := range c.header {
				if got := out.Header.Values(k); strings.Join(got, "|") != strings.Join(vs, "|") {
					t.Errorf("header %s = %q, want %q", k, got, vs)
				}
			}
			body, _ := io.ReadAll(out.Body)
			if !bytes.Equal(body, c.body) || out.ContentLength != int64(len(c.body)) {
				t.Errorf("body %q (ContentLength %d), want %q", body, out.ContentLength, c.body)
			}
		})
	}
}

func TestResponseRoundTrip(t *testing.T) {
	h := http.Header{"X-Multi": {"a", "b"}, "Content-Type": {"application/json"}}
	for _, status := range []int{200, 201, 204, 304, 404, 418, 500, 599} {
		body := []byte(`{"ok":true}`)
		if status == 204 || status == 304 {
			body = nil
		}
		frame, err := EncodeResponse(status, h, body, "GET")
		if err != nil {
			t.Fatal(err)
		}
		resp, err := DecodeResponse(frame, nil, Limits{})
		if err != nil {
			t.Fatalf("%d: %v", status, err)
		}
		got, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != status || !bytes.Equal(got, body) || len(resp.Header.Values("X-Multi")) != 2 {
			t.Errorf("%d: got %d %q %v", status, resp.StatusCode, got, resp.Header)
		}
	}
}

func TestHeadResponseHasNoBody(t *testing.T) {
	frame, err := EncodeResponse(200, http.Header{}, []byte("hello"), http.MethodHead)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := DecodeResponse(frame, &http.Request{Method: http.MethodHead}, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(resp.Body); len(b) != 0 {
		t.Errorf("HEAD response body %q, want none", b)
	}
}

func TestDecodeRequestErrors(t *testing.T) {
	cases := []struct {
		name   string
		frame  string
		lim    Limits
		target error
		status int
	}{
		{"garbage", "hello world", Limits{}, ErrMalformedFrame, 400},
		{"not http", "this is not HTTP\r\n\r\n", Limits{}, ErrMalformedFrame, 400},
		{"truncated header", "GET / HTTP/1.1\r\nHost: x\r\n", Limits{}, ErrMalformedFrame, 400},
		{"short body", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nshort", Limits{}, ErrMalformedFrame, 400},
		{"long body", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nlonger", Limits{}, ErrMalformedFrame, 400},
		{"bad content length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", Limits{}, ErrMalformedFrame, 400},
		{"nul in target", "GET /\x00 HTTP/1.1\r\n\r\n", Limits{}, ErrMalformedFrame, 400},
		{"bad chunk", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", Limits{}, ErrMalformedFrame, 400},
		{"header over limit", "GET / HTTP/1.1\r\nX-Big: " + strings.Repeat("a", 200) + "\r\n\r\n", Limits{MaxHeaderBytes: 64}, ErrTooLarge, 431},
		{"no end over limit", "GET / HTTP/1.1\r\nX-Big: " + strings.Repeat("a", 200), Limits{MaxHeaderBytes: 64}, ErrTooLarge, 431},
		{"body over limit", "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", Limits{MaxBodyBytes: 4}, ErrTooLarge, 413},
		{"chunked over limit", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", Limits{MaxBodyBytes: 4}, ErrTooLarge, 413},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeRequest([]byte(c.frame), c.lim)
			if !errors.Is(err, c.target) {
				t.Fatalf("err = %v, want %v", err, c.target)
			}
			if s := StatusOf(err); s != c.status {
				t.Errorf("StatusOf = %d, want %d", s, c.status)
			}
		})
	}
}

func TestChunkedRequestDecodes(t *testing.T) {
	frame := "POST /up HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
	r, err := DecodeRequest([]byte(frame), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	// As net/http's server: a chunked body has no length.
	if string(b) != "hello world" || r.ContentLength != -1 || len(r.TransferEncoding) != 1 || r.TransferEncoding[0] != "chunked" {
		t.Fatalf("body %q, ContentLength %d, TransferEncoding %q", b, r.ContentLength, r.TransferEncoding)
	}
}

// A header value holding CR, LF or NUL must not smuggle a header line or a
// second request through the codec.
func TestNoSmuggling(t *testing.T) {
	for _, v := range []string{
		"a\r\nX-Injected: 1",
		"a\r\n\r\nGET /second HTTP/1.1\r\nHost: evil\r\n\r\n",
		"a\nX-Injected: 1",
		"a\rX-Injected: 1",
		"a\x00X-Injected: 1",
	} {
		in := mustRequest(t, "GET", "/first", http.Header{"X-Value": {v}})
		frame, err := EncodeRequest(in, "svc", nil)
		if err != nil {
			continue // refusing to encode is safe too
		}
		out, err := DecodeRequest(frame, Limits{})
		if err != nil {
			continue // refusing to decode is safe too
		}
		if out.Header.Get("X-Injected") != "" || out.URL.Path != "/first" || out.Host != "svc" {
			t.Errorf("value %q smuggled: %s %s host %q header %v", v, out.Method, out.URL, out.Host, out.Header)
		}
	}
	// A header name with CR/LF is dropped by net/http's writer.
	in := mustRequest(t, "GET", "/first", http.Header{"X-A\r\nX-Injected": {"1"}})
	frame, err := EncodeRequest(in, "svc", nil)
	if err == nil {
		if out, err := DecodeRequest(frame, Limits{}); err == nil && out.Header.Get("X-Injected") != "" {
			t.Errorf("header name smuggled a header: %q", frame)
		}
	}
}

func TestForeignRequest(t *testing.T) {
	d := &Delivery{Message: Message{Body: []byte("payload"), ContentType: "text/plain", Header: http.Header{"Message-Id": {"7"}}}, Service: "svc"}
	r := ForeignRequest(d)
	b, _ := io.ReadAll(r.Body)
	if r.Method != "POST" || r.URL.Path != "/" || r.Host != "svc" || string(b) != "payload" || r.Header.Get("Content-Type") != "text/plain" || r.Header.Get("Message-Id") != "7" {
		t.Fatalf("got %s %s host %q body %q header %v", r.Method, r.URL, r.Host, b, r.Header)
	}
	d.Topic = "prices"
	if r := ForeignRequest(d); r.Method != MethodNotify || r.Host != "prices" {
		t.Fatalf("notification became %s to %q", r.Method, r.Host)
	}
}

func TestIsFrame(t *testing.T) {
	for ct, want := range map[string]bool{
		"message/http": true, "Message/HTTP; msgtype=request": true, " message/http ": true,
		"": false, "text/plain": false, "message/https": false,
	} {
		if IsFrame(ct) != want {
			t.Errorf("IsFrame(%q) = %v", ct, !want)
		}
	}
}

func TestDeadlineFormat(t *testing.T) {
	now := time.UnixMilli(time.Now().UnixMilli())
	got, err := ParseDeadline(FormatDeadline(now))
	if err != nil || !got.Equal(now) {
		t.Fatalf("round trip %v → %v, %v", now, got, err)
	}
	for _, bad := range []string{"x", "-5", "0", "1.5"} {
		if _, err := ParseDeadline(bad); !errors.Is(err, ErrMalformedFrame) {
			t.Errorf("ParseDeadline(%q) = %v, want ErrMalformedFrame", bad, err)
		}
	}
	if d, err := ParseDeadline(""); err != nil || !d.IsZero() {
		t.Errorf(`ParseDeadline("") = %v, %v`, d, err)
	}
}

func TestErrorsMapToStatus(t *testing.T) {
	cases := map[error]int{
		ErrNoResponders:   503,
		Timeout(nil):      504,
		ErrMalformedFrame: 400,
		ErrUnavailable:    502,
		&TooLargeError{What: "body", Limit: 1, Size: 2}:   413,
		&TooLargeError{What: "header", Limit: 1, Size: 2}: 431,
	}
	for err, want := range cases {
		if got := StatusOf(err); got != want {
			t.Errorf("StatusOf(%v) = %d, want %d", err, got, want)
		}
	}
	if err := Timeout(nil); !errors.Is(err, ErrTimeout) || !errors.Is(err, context_DeadlineExceeded) {
		t.Errorf("Timeout does not match ErrTimeout and context.DeadlineExceeded")
	}
}
