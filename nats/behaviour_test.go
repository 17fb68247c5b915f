package nats_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/internal/natsserver"
	natstransport "github.com/httpbus/httpbus/nats"
	"github.com/httpbus/httpbus/transport"
)

// TestForeignMessage: a plain NATS request (as "nats req" sends it), with
// lowercase header keys, is served as POST / with canonical header keys.
func TestForeignMessage(t *testing.T) {
	url := brokertest.NATS(t)
	svc := uniqueName("foreign")
	got := make(chan *http.Request, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(b)))
		got <- r
		io.WriteString(w, "got "+string(b))
	})
	serve(t, &transport.Server{Handler: h}, listen(t, connect(t, url), transport.ListenConfig{Service: svc}, natstransport.Config{}))
	nc := connect(t, url)
	m := &natsgo.Msg{
		Subject: natstransport.ServiceSubject("", svc),
		Data:    []byte("hello"),
		Header: natsgo.Header{
			"traceparent":  {"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
			"x-multi":      {"a", "b"},
			"content-type": {"text/plain"},
		},
	}
	resp, err := nc.RequestMsgWithContext(ctxTimeout(t, 10*time.Second), m)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != transport.MediaType {
		t.Errorf("response Content-Type %q, want %s", ct, transport.MediaType)
	}
	r, err := transport.DecodeResponse(resp.Data, nil, transport.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 || string(b) != "got hello" {
		t.Errorf("response %d %q, want 200 \"got hello\"", r.StatusCode, b)
	}
	req := <-got
	if req.Method != "POST" || req.URL.Path != "/" {
		t.Errorf("served as %s %s, want POST /", req.Method, req.URL.Path)
	}
	if v := req.Header.Get("Traceparent"); !strings.HasPrefix(v, "00-0af7") {
		t.Errorf("Header.Get(Traceparent) = %q: lowercase NATS header key not canonicalised (header %v)", v, req.Header)
	}
	if v := req.Header.Values("X-Multi"); len(v) != 2 {
		t.Errorf("X-Multi = %q, want two values", v)
	}
	if v := req.Header.Get("Content-Type"); v != "text/plain" {
		t.Errorf("Content-Type = %q, want text/plain", v)
	}
}

// TestMaxPayload: on a server with a 64 KiB max_payload, MaxMessageBytes
// reports the limit; a request and a response over it cross as streams
// (binding version 2), whole and promptly; Conn.Call, which sends one
// message, refuses one over it with *transport.TooLargeError before
// sending.
func TestMaxPayload(t *testing.T) {
	const maxPayload = 64 << 10
	url := embedded(t, natsserver.Config{MaxPayload: maxPayload})
	svc := uniqueName("maxpayload")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big-response" {
			w.Write(bytes.Repeat([]byte("r"), 3*maxPayload))
			return
		}
		io.Copy(w, r.Body)
	})
	l := listen(t, connect(t, url), transport.ListenConfig{Service: svc}, natstransport.Config{})
	if got, want := l.MaxMessageBytes(), int64(maxPayload-natstransport.HeaderRoom); got != want {
		t.Errorf("listener MaxMessageBytes %d, want %d", got, want)
	}
	serve(t, &transport.Server{Handler: h, Logger: discardLogger()}, l)
	conn := dial(t, connect(t, url))
	client := transport.NewClient(conn)
	do := func(path string, body []byte) (*http.Response, []byte, time.Duration) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctxTimeout(t, 10*time.Second), "POST", "http://"+svc+path, bytes.NewReader(body))
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("%s: reading the body: %v", path, err)
		}
		return resp, b, time.Since(start)
	}
	big := bytes.Repeat([]byte("q"), 3*maxPayload)
	resp, b, _ := do("/big-request", big)
	if resp.StatusCode != 200 || !bytes.Equal(b, big) {
		t.Errorf("request over max_payload: %d, %d bytes echoed, want 200 and %d", resp.StatusCode, len(b), len(big))
	}
	resp, b, el := do("/big-response", nil)
	if resp.StatusCode != 200 || len(b) != 3*maxPayload {
		t.Errorf("response over max_payload: %d, %d bytes, want 200 and %d", resp.StatusCode, len(b), 3*maxPayload)
	}
	if el > 5*time.Second {
		t.Errorf("a streamed response over max_payload took %v", el)
	}
	// Conn.Call reports the typed error itself.
	_, err := conn.Call(ctxTimeout(t, 5*time.Second), svc, &transport.Message{Body: make([]byte, maxPayload), ContentType: transport.MediaType})
	var tl *transport.TooLargeError
	if !errors.As(err, &tl) || tl.Limit != maxPayload {
		t.Errorf("Call over max_payload: %v, want *TooLargeError with Limit %d", err, maxPayload)
	}
	if resp, _, _ := do("/echo", []byte("small")); resp.StatusCode != 200 {
		t.Errorf("next request: %d", resp.StatusCode)
	}
}

// TestDrainServesPending: requests received but not yet taken (the server
// runs one at a time) are all answered by Shutdown's drain.
func TestDrainServesPending(t *testing.T) {
	url := brokertest.NATS(t)
	svc := uniqueName("drain")
	const n = 20
	entered := make(chan struct{}, n)
	release := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		io.WriteString(w, r.URL.Path)
	})
	l := listen(t, connect(t, url), transport.ListenConfig{Service: svc}, natstransport.Config{})
	srv := &transport.Server{Handler: h, MaxInFlight: 1, Logger: testLogger(t)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()

	cnc := connect(t, url)
	inbox := natsgo.NewInbox()
	replies := make(chan *natsgo.Msg, n)
	sub, err := cnc.ChanSubscribe(inbox, replies)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	for i := range n {
		frame, _ := transport.EncodeRequest(httpRequest("GET", "/p/"+string(rune('a'+i))), svc, nil)
		cnc.PublishMsg(&natsgo.Msg{Subject: natstransport.ServiceSubject("", svc), Reply: inbox, Data: frame, Header: natsgo.Header{"Content-Type": {transport.MediaType}}})
	}
	cnc.Flush()
	<-entered // one runs; the other n-1 wait in the listener
	// A flush on the listener's connection after the client's flush: the
	// server has delivered all n to the listener's connection.
	if err := l.NATSConn().Flush(); err != nil {
		t.Fatal(err)
	}
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	<-served
	// After Serve returned, a new request finds no responder.
	if _, err := dial(t, cnc).Call(ctxTimeout(t, 5*time.Second), svc, &transport.Message{Body: []byte("x"), ContentType: "text/plain"}); !errors.Is(err, transport.ErrNoResponders) {
		t.Errorf("call after Shutdown stopped intake: %v, want ErrNoResponders", err)
	}
	close(release)
	seen := map[string]bool{}
	timeout := time.After(30 * time.Second)
	for len(seen) < n {
		select {
		case m := <-replies:
			r, err := transport.DecodeResponse(m.Data, nil, transport.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(r.Body)
			if r.StatusCode != 200 {
				t.Errorf("drained request answered %d %q", r.StatusCode, b)
			}
			seen[string(b)] = true
		case <-timeout:
			t.Fatalf("%d of %d pending requests answered during Shutdown", len(seen), n)
		}
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

// TestNoResponders: 503 at once, not a timeout.
func TestNoResponders(t *testing.T) {
	url := brokertest.NATS(t)
	conn := dial(t, connect(t, url))
	start := time.Now()
	_, err := conn.Call(ctxTimeout(t, 10*time.Second), uniqueName("nobody"), &transport.Message{Body: []byte("x"), ContentType: "text/plain"})
	if !errors.Is(err, transport.ErrNoResponders) || !errors.Is(err, natsgo.ErrNoResponders) {
		t.Errorf("Call: %v, want ErrNoResponders (ours and nats.go's)", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("no responders took %v", el)
	}
}

func TestURLErrors(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct{ url, want string }{
		{"nats://u:secret@127.0.0.1:1?bogus=1", `unknown option "bogus"`},
		{"nats://u:secret@127.0.0.1:1?reconnect_wait=soon", `bad value "soon"`},
		{"nats://u:secret@127.0.0.1:1/path", "has a path"},
		{"nats://u:secret@127.0.0.1:1?tls_cert=a.pem", "tls_cert and tls_key go together"},
		{"nats://u:secret@127.0.0.1:1?prefix=a.*", "not a literal NATS subject"},
		{"nats://u:secret@127.0.0.1:1?connect_timeout=200ms", "transport: broker unavailable"},
	} {
		_, err := transport.Dial(ctx, c.url)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Dial(%q): %v, want an error containing %q", c.url, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("Dial(%q): error shows the password: %v", c.url, err)
		}
	}
	for _, c := range []struct{ url, want string }{
		{"nats://127.0.0.1:1", "empty service name"},
		{"nats://127.0.0.1:1?service=notify.x", "reserved"},
		{"nats://127.0.0.1:1?service=a+b", "not a literal NATS subject"},
		{"nats://127.0.0.1:1?service=a..b", "empty subject token"},
	} {
		_, err := transport.Listen(ctx, c.url)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Listen(%q): %v, want an error containing %q", c.url, err, c.want)
		}
	}
}

// TestURLOptions: prefix and queue from the URL reach the subjects and the
// queue group, and a caller with the same prefix reaches the service.
func TestURLOptions(t *testing.T) {
	raw := brokertest.NATS(t)
	u, _ := url.Parse(raw)
	prefix := uniqueName("pfx")
	svc := uniqueName("svc")
	l, err := transport.Listen(context.Background(), raw+"?prefix="+prefix+"&queue=workers&name=test-listener&service="+svc)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, &transport.Server{Handler: echoID}, l)
	nl := l.(*natstransport.Listener)
	if name := nl.NATSConn().Opts.Name; name != "test-listener" {
		t.Errorf("connection name %q", name)
	}
	c, err := transport.Dial(context.Background(), "nats://"+u.Host+"?prefix="+prefix)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := c.Call(ctxTimeout(t, 10*time.Second), svc, &transport.Message{Body: []byte("x"), ContentType: "text/plain"})
	if err != nil {
		t.Fatalf("call with prefix %q: %v", prefix, err)
	}
	if r, err := transport.DecodeResponse(resp.Body, nil, transport.Limits{}); err != nil || r.StatusCode != 200 {
		t.Fatalf("response %v %v", r, err)
	}
	// Raw NATS sees the subject <prefix>.<service>.
	nc := connect(t, raw)
	m, err := nc.RequestWithContext(ctxTimeout(t, 10*time.Second), prefix+"."+svc, []byte("raw"))
	if err != nil {
		t.Fatalf("raw request to %s.%s: %v", prefix, svc, err)
	}
	if !strings.Contains(string(m.Data), "raw") {
		t.Errorf("raw response %q", m.Data)
	}
	if s := c.(transport.StateReporter).State(); s != transport.StateConnected {
		t.Errorf("state %v", s)
	}
	c.Close()
	if _, err := c.Call(context.Background(), svc, &transport.Message{}); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Call after Close: %v, want ErrClosed", err)
	}
}

// TestLowercaseRoutingHeaders: a client in another language may spell the
// routing headers in lower case; they are matched case-insensitively.
func TestLowercaseRoutingHeaders(t *testing.T) {
	url := brokertest.NATS(t)
	svc := uniqueName("lower")
	serve(t, &transport.Server{Handler: echoID}, listen(t, connect(t, url), transport.ListenConfig{Service: svc}, natstransport.Config{}))
	nc := connect(t, url)
	frame, _ := transport.EncodeRequest(httpRequest("POST", "/lower"), svc, []byte("frame body"))
	send := func(deadline time.Time) *http.Response {
		t.Helper()
		m := &natsgo.Msg{Subject: natstransport.ServiceSubject("", svc), Data: frame, Header: natsgo.Header{
			"content-type":     {"Message/HTTP; charset=binary"},
			"httpbus-version":  {"1"},
			"httpbus-deadline": {transport.FormatDeadline(deadline)},
		}}
		resp, err := nc.RequestMsgWithContext(ctxTimeout(t, 10*time.Second), m)
		if err != nil {
			t.Fatal(err)
		}
		r, err := transport.DecodeResponse(resp.Data, nil, transport.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := send(time.Now().Add(10 * time.Second)); r.StatusCode != 200 || r.Header.Get("X-Path") != "/lower" {
		t.Errorf("frame with lowercase routing headers: %d, path %q; want 200 /lower (served as a frame)", r.StatusCode, r.Header.Get("X-Path"))
	}
	if r := send(time.Now().Add(-time.Second)); r.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("expired lowercase httpbus-deadline: %d, want 504", r.StatusCode)
	}
}

// TestBadInputNATS: the NATS-specific entries of the bad-input catalogue
// (the codec's own are in the conformance suite): a bad Httpbus-Deadline,
// an empty frame, a frame with no reply subject (served, its response
// dropped), a stray message on the caller's reply inbox (dropped by
// nats.go). After each the server answers the next good request.
func TestBadInputNATS(t *testing.T) {
	url := brokertest.NATS(t)
	svc := uniqueName("badinput")
	var noReply atomic.Int64
	noReplyRan := make(chan struct{}, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/no-reply" {
			noReply.Add(1)
			noReplyRan <- struct{}{}
		}
		echoID.ServeHTTP(w, r)
	})
	serve(t, &transport.Server{Handler: h, Logger: discardLogger()}, listen(t, connect(t, url), transport.ListenConfig{Service: svc}, natstransport.Config{Logger: discardLogger()}))
	nc := connect(t, url)
	conn := dial(t, nc)
	subject := natstransport.ServiceSubject("", svc)
	good := func(what string) {
		t.Helper()
		resp, err := conn.Call(ctxTimeout(t, 10*time.Second), svc, &transport.Message{Body: []byte("good"), ContentType: "text/plain"})
		if err != nil {
			t.Fatalf("good request after %s: %v", what, err)
		}
		if r, err := transport.DecodeResponse(resp.Body, nil, transport.Limits{}); err != nil || r.StatusCode != 200 {
			t.Fatalf("good request after %s: %v %v", what, r, err)
		}
	}
	status := func(m *natsgo.Msg) int {
		t.Helper()
		resp, err := nc.RequestMsgWithContext(ctxTimeout(t, 10*time.Second), m)
		if err != nil {
			t.Fatal(err)
		}
		r, err := transport.DecodeResponse(resp.Data, nil, transport.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		return r.StatusCode
	}
	frame, _ := transport.EncodeRequest(httpRequest("GET", "/x"), svc, nil)
	for _, c := range []struct {
		name string
		m    *natsgo.Msg
		want int
	}{
		{"bad Httpbus-Deadline", &natsgo.Msg{Subject: subject, Data: frame, Header: natsgo.Header{"Content-Type": {transport.MediaType}, transport.HeaderDeadline: {"soon"}}}, 400},
		{"negative Httpbus-Deadline", &natsgo.Msg{Subject: subject, Data: frame, Header: natsgo.Header{"Content-Type": {transport.MediaType}, transport.HeaderDeadline: {"-5"}}}, 400},
		{"empty frame", &natsgo.Msg{Subject: subject, Header: natsgo.Header{"Content-Type": {transport.MediaType}}}, 400},
		{"garbage frame", &natsgo.Msg{Subject: subject, Data: []byte("\x00\xff garbage\r\n\r\n"), Header: natsgo.Header{"Content-Type": {transport.MediaType}}}, 400},
	} {
		if got := status(c.m); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
		good(c.name)
	}

	// No reply subject: served (the handler runs), the response dropped.
	f, _ := transport.EncodeRequest(httpRequest("POST", "/no-reply"), svc, []byte("x"))
	if err := nc.PublishMsg(&natsgo.Msg{Subject: subject, Data: f, Header: natsgo.Header{"Content-Type": {transport.MediaType}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-noReplyRan:
	case <-time.After(10 * time.Second):
		t.Fatal("a frame with no reply subject was not served")
	}
	good("a frame with no reply subject")
	if n := noReply.Load(); n != 1 {
		t.Errorf("frame with no reply subject served %d times, want 1", n)
	}

	// A stray reply on the caller's response inbox is dropped.
	if err := nc.Publish(nc.NewRespInbox(), []byte("HTTP/1.1 200 OK\r\n\r\nstray")); err != nil {
		t.Fatal(err)
	}
	good("a stray reply on the caller's inbox")
}

// TestRequeue: a request handed back with transport.Requeue is republished
// with its reply subject: another instance answers it and sees
// Httpbus-Redelivered.
func TestRequeue(t *testing.T) {
	url := brokertest.NATS(t)
	svc := uniqueName("requeue")
	a := listen(t, connect(t, url), transport.ListenConfig{Service: svc}, natstransport.Config{})
	t.Cleanup(func() { a.Close() })
	conn := dial(t, connect(t, url))
	client := transport.NewClient(conn)
	type result struct {
		code int
		body string
		err  error
	}
	call := func() <-chan result {
		out := make(chan result, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctxTimeout(t, 10*time.Second), "POST", "http://"+svc+"/r", strings.NewReader("again"))
			resp, err := client.Do(req)
			if err != nil {
				out <- result{err: err}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			out <- result{code: resp.StatusCode, body: string(b)}
		}()
		return out
	}
	take := func() *transport.Delivery {
		t.Helper()
		d, err := a.Receive(ctxTimeout(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	// Another instance takes the requeued request.
	res := call()
	d := take()
	redelivered := make(chan string, 1)
	b := listen(t, connect(t, url), transport.ListenConfig{Service: svc}, natstransport.Config{})
	serve(t, &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redelivered <- r.Header.Get(transport.HeaderRedelivered)
		io.Copy(w, r.Body)
	})}, b)
	// A leaves the queue group first, so the republished request goes to B.
	if err := a.Drain(); err != nil {
		t.Fatal(err)
	}
	if err := a.Reply(ctxTimeout(t, 5*time.Second), d, nil, transport.Requeue); err != nil {
		t.Fatal(err)
	}
	if r := <-res; r.err != nil || r.code != 200 || r.body != "again" {
		t.Fatalf("requeued request: %+v, want 200 \"again\"", r)
	}
	if v := <-redelivered; v != "true" {
		t.Errorf("the other instance saw %s %q, want \"true\"", transport.HeaderRedelivered, v)
	}
}

// TestCloseHandsBack: requests a listener received but nobody took are
// handed back to the broker by Close, and another instance answers them.
func TestCloseHandsBack(t *testing.T) {
	url := brokertest.NATS(t)
	svc := uniqueName("handback")
	anc := connect(t, url)
	a := listen(t, anc, transport.ListenConfig{Service: svc}, natstransport.Config{})
	client := transport.NewClient(dial(t, connect(t, url)))
	const n = 5
	results := make(chan string, n)
	for i := range n {
		go func() {
			body := strconv.Itoa(i)
			req, _ := http.NewRequestWithContext(ctxTimeout(t, 10*time.Second), "POST", "http://"+svc+"/", strings.NewReader(body))
			resp, err := client.Do(req)
			if err != nil {
				results <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- fmt.Sprintf("%d %s %s", resp.StatusCode, b, resp.Header.Get("X-Redelivered"))
		}()
	}
	// Wait until A holds all n (nobody takes them: no Server runs on A);
	// each check follows a round trip to the server.
	deadline := time.Now().Add(10 * time.Second)
	for natstransport.PendingOf(a) < n {
		if time.Now().After(deadline) {
			t.Fatalf("listener holds %d of %d requests", natstransport.PendingOf(a), n)
		}
		if err := anc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	b := listen(t, connect(t, url), transport.ListenConfig{Service: svc}, natstransport.Config{})
	serve(t, &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Redelivered", r.Header.Get(transport.HeaderRedelivered))
		io.Copy(w, r.Body)
	})}, b)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range n {
		r := <-results
		var code int
		var body, redelivered string
		fmt.Sscanf(r, "%d %s %s", &code, &body, &redelivered)
		if code != 200 || redelivered != "true" {
			t.Errorf("handed-back request answered %q, want 200 <body> true", r)
		}
		seen[body] = true
	}
	if len(seen) != n {
		t.Errorf("answers %v, want %d distinct", seen, n)
	}
}
