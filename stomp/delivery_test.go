package stomp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	stompgo "github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"

	"github.com/httpbus/httpbus/stomp"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

// TestRedeliveryToOtherInstance: instance A takes requests and stops
// (Server.Close, no ack) while its handler still holds them; the broker
// redelivers every one to instance B, which sees Httpbus-Redelivered: true,
// and every caller gets B's answer.
func TestRedeliveryToOtherInstance(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		url := brokerURL(addr)
		svc := unique("redeliver")
		const n = 20
		entered := make(chan struct{}, n)
		release := make(chan struct{})
		defer close(release)
		lA := listen(t, j, url, transport.ListenConfig{Service: svc})
		srvA := &transport.Server{Logger: testLogger(t), MaxInFlight: n, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			entered <- struct{}{}
			<-release
			io.WriteString(w, "A")
		})}
		servedA := make(chan error, 1)
		go func() { servedA <- srvA.Serve(lA) }()
		client := transport.NewClient(dial(t, j, url))
		type result struct {
			status int
			body   string
			redel  string
		}
		results := make(chan result, n)
		for i := range n {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://%s/%d", svc, i), nil)
				resp, err := client.Do(req)
				if err != nil {
					results <- result{body: err.Error()}
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				results <- result{resp.StatusCode, string(body), resp.Header.Get("X-Redelivered")}
			}()
		}
		for range n {
			select {
			case <-entered:
			case <-time.After(10 * time.Second):
				t.Fatal("requests did not reach instance A")
			}
		}
		lB := listen(t, j, url, transport.ListenConfig{Service: svc})
		serve(t, lB, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Redelivered", r.Header.Get(transport.HeaderRedelivered))
			io.WriteString(w, "B")
		}))
		srvA.Close() // A stops without acknowledging what it holds
		if err := <-servedA; !errors.Is(err, transport.ErrServerClosed) {
			t.Errorf("A's Serve returned %v", err)
		}
		answered := 0
		for range n {
			r := <-results
			if r.status != 200 || r.body != "B" || r.redel != "true" {
				t.Errorf("request answered %d %q (redelivered %q), want 200 \"B\" with Httpbus-Redelivered true", r.status, r.body, r.redel)
				continue
			}
			answered++
		}
		t.Logf("%d of %d requests held by the stopped instance were redelivered and answered by the other", answered, n)
	})
}

// TestSettle checks the dispositions on the wire: Reject is a NACK that
// does not come back (dead letter), Requeue returns the message marked
// redelivered (RabbitMQ: at once, by NACK requeue:true; ActiveMQ, whose
// NACK dead-letters: when the listener closes).
func TestSettle(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		url := brokerURL(addr)
		svc := unique("settle")
		l := listen(t, j, url, transport.ListenConfig{Service: svc})
		c := dial(t, j, url)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		defer wg.Wait()
		callCtx, stopCalls := context.WithCancel(ctx)
		defer stopCalls()
		send := func(body string) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.Call(callCtx, svc, &transport.Message{Body: []byte(body), ContentType: "text/plain"})
			}()
		}
		recv := func(l transport.Listener) *transport.Delivery {
			t.Helper()
			d, err := l.Receive(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		send("reject me")
		d := recv(l)
		if string(d.Body) != "reject me" || d.Redelivered {
			t.Fatalf("got %q redelivered=%v", d.Body, d.Redelivered)
		}
		if err := l.Reply(ctx, d, nil, transport.Reject); err != nil {
			t.Fatal(err)
		}
		send("fence")
		if d := recv(l); string(d.Body) != "fence" {
			t.Fatalf("after Reject got %q, want the next message (a rejected message must not come back)", d.Body)
		} else if err := l.Reply(ctx, d, nil, transport.Ack); err != nil {
			t.Fatal(err)
		}
		send("requeue me")
		d = recv(l)
		if err := l.Reply(ctx, d, nil, transport.Requeue); err != nil {
			t.Fatal(err)
		}
		if b.dialect == stomp.DialectActiveMQ {
			l.Close()
			l = listen(t, j, url, transport.ListenConfig{Service: svc})
		}
		d = recv(l)
		if string(d.Body) != "requeue me" || !d.Redelivered {
			t.Fatalf("after Requeue got %q redelivered=%v, want the same message, redelivered", d.Body, d.Redelivered)
		}
		if err := l.Reply(ctx, d, nil, transport.Ack); err != nil {
			t.Fatal(err)
		}
	})
}

// TestCollidingHeaderNames: HTTP headers named like STOMP frame headers
// travel inside the frame body, untouched, both ways.
func TestCollidingHeaderNames(t *testing.T) {
	names := []string{"Destination", "Reply-To", "Correlation-Id", "Message-Id", "Subscription", "Ack", "Receipt", "Expires", "Expiration", "Transaction", "Redelivered", "Httpbus-Version"}
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		url := brokerURL(addr)
		svc := unique("hdr")
		l := listen(t, j, url, transport.ListenConfig{Service: svc})
		serve(t, l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for _, n := range names {
				w.Header().Set("X-Got-"+n, r.Header.Get(n))
				w.Header().Set(n, "response "+n+` a:b\c`)
			}
			w.Header().Set("Content-Type", "text/x-response")
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("X-Got-Content-Type", r.Header.Get("Content-Type"))
			w.Header().Set("X-Got-Content-Length", fmt.Sprint(r.ContentLength))
			w.Write(body)
		}))
		client := transport.NewClient(dial(t, j, url))
		req, _ := http.NewRequest("POST", "http://"+svc+"/h", strings.NewReader("body"))
		for _, n := range names {
			req.Header.Set(n, "request "+n+` a:b\c`)
		}
		req.Header.Set("Content-Type", "text/x-request")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := client.Do(req.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "body" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		for _, n := range names {
			if g, w := resp.Header.Get("X-Got-"+n), "request "+n+` a:b\c`; g != w {
				t.Errorf("handler saw %s %q, want %q", n, g, w)
			}
			if g, w := resp.Header.Get(n), "response "+n+` a:b\c`; g != w {
				t.Errorf("caller saw %s %q, want %q", n, g, w)
			}
		}
		for k, w := range map[string]string{"X-Got-Content-Type": "text/x-request", "X-Got-Content-Length": "4", "Content-Type": "text/x-response"} {
			if g := resp.Header.Get(k); g != w {
				t.Errorf("%s = %q, want %q", k, g, w)
			}
		}
	})
}

// rawClient is a plain go-stomp connection with a reply subscription, as a
// non-httpbus producer would use.
func rawClient(t *testing.T, b broker, addr string) (*stompgo.Conn, string, *stompgo.Subscription) {
	t.Helper()
	c, err := stompgo.Dial("tcp", addr, append(stomp.ConnOptions(stomp.Config{}), stompgo.ConnOpt.Login("guest", "guest"))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Disconnect() })
	replyTo := "/temp-queue/" + unique("raw")
	var opts []func(*frame.Frame) error
	if b.dialect == stomp.DialectRabbitMQ {
		opts = append(opts, stompgo.SubscribeOpt.Header(stompgo.ReplyToHeader, replyTo))
	}
	sub, err := c.Subscribe(replyTo, stompgo.AckAuto, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c, replyTo, sub
}

// TestForeignMessageHeaders: a plain STOMP message (not message/http) is
// served as a POST whose headers are the STOMP headers, unescaped as STOMP
// 1.2 says (\c → ':', \\ → '\', \n → LF), and the reply (a message/http
// frame) reaches the raw sender's reply-to with its correlation-id.
func TestForeignMessageHeaders(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		svc := unique("foreign")
		j.service(svc)
		l := listen(t, j, brokerURL(addr), transport.ListenConfig{Service: svc})
		serve(t, l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %s %q %q %q %s", r.Method, r.URL.Path, r.Header.Get("X-Weird"), r.Header.Get("Content-Type"), r.Header.Get("Correlation-Id"), body)
		}))
		c, replyTo, sub := rawClient(t, b, addr)
		err := c.Send("/queue/"+svc, "application/json", []byte(`{"n":1}`),
			stompgo.SendOpt.Header("x-weird", "a:b\\c"),
			stompgo.SendOpt.Header("correlation-id", "raw-1"),
			stompgo.SendOpt.Header("reply-to", replyTo))
		if err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-sub.C:
			if m.Err != nil {
				t.Fatal(m.Err)
			}
			if m.ContentType != transport.MediaType || m.Header.Get("correlation-id") != "raw-1" {
				t.Errorf("reply content-type %q correlation-id %q", m.ContentType, m.Header.Get("correlation-id"))
			}
			resp, err := transport.DecodeResponse(m.Body, nil, transport.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			want := `POST / "a:b\\c" "application/json" "raw-1" {"n":1}`
			if resp.StatusCode != 200 || string(got) != want {
				t.Errorf("reply %d %s, want 200 %s", resp.StatusCode, got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no reply to the raw message")
		}
	})
}

// TestSizeLimit: a body over the broker's frame limit is refused with 413
// before it is sent (ActiveMQ would drop the connection without an ERROR
// frame), and the connection keeps working.
func TestSizeLimit(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		url := brokerURL(addr)
		svc := unique("size")
		l := listen(t, j, url, transport.ListenConfig{Service: svc})
		serve(t, l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprint(w, n)
		}))
		c := dial(t, j, url)
		want := int64(stomp.ActiveMQMaxFrameBytes - stomp.HeaderReserve)
		if b.dialect == stomp.DialectRabbitMQ {
			want = stomp.RabbitMQMaxFrameBytes - stomp.HeaderReserve
		}
		if got := c.(transport.SizeLimiter).MaxMessageBytes(); got != want {
			t.Errorf("MaxMessageBytes %d, want %d", got, want)
		}
		// A small configured frame limit for the rest of the test.
		small := dial(t, j, brokerURL(addr, "max_frame=1048576"))
		if _, err := small.Call(context.Background(), svc, &transport.Message{Body: make([]byte, 1<<20)}); !errors.Is(err, transport.ErrTooLarge) {
			t.Errorf("Call over the limit: %v, want ErrTooLarge", err)
		}
		// A version-1 caller (one message per request): 413 over the limit.
		// A version-2 caller streams it: the stream conformance cases.
		rt := &transport.RoundTripper{Conn: transporttest.Version1(small), MaxBodyBytes: -1}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		post := func(n int) (int, string) {
			req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+svc+"/", bytes.NewReader(make([]byte, n)))
			resp, err := (&http.Client{Transport: rt}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, resp.Header.Get(transport.HeaderError) + string(body)
		}
		if status, msg := post(2 << 20); status != http.StatusRequestEntityTooLarge || !strings.Contains(msg, "larger than the limit") {
			t.Errorf("2 MiB over a 1 MiB frame limit: %d %q, want 413", status, msg)
		}
		if status, msg := post(512 << 10); status != 200 || !strings.HasSuffix(msg, "524288") {
			t.Errorf("next request: %d %q", status, msg)
		}
		if b.dialect == stomp.DialectActiveMQ {
			// The real limit: 10 MiB + headers is over ActiveMQ's 10 MiB frame.
			rt := &transport.RoundTripper{Conn: transporttest.Version1(c), MaxBodyBytes: -1}
			req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+svc+"/", bytes.NewReader(make([]byte, 10<<20)))
			resp, err := (&http.Client{Transport: rt}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge {
				t.Errorf("10 MiB to ActiveMQ: %d, want 413", resp.StatusCode)
			}
			if s := c.(transport.StateReporter).State(); s != transport.StateConnected {
				t.Errorf("client state %v after a refused 10 MiB body", s)
			}
		}
	})
}

// TestCallerOwnedConnection: NewConn and NewListener over connections the
// caller dialled; Close leaves them open.
func TestCallerOwnedConnection(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		cfg := stomp.Config{Logger: testLogger(t)}
		rawDial := func() *stompgo.Conn {
			c, err := stompgo.Dial("tcp", addr, append(stomp.ConnOptions(cfg), stompgo.ConnOpt.Login("guest", "guest"))...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Disconnect() })
			return c
		}
		sc, cc := rawDial(), rawDial()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		svc := unique("owned")
		j.service(svc)
		l, err := stomp.NewListener(ctx, sc, transport.ListenConfig{Service: svc}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		c, err := stomp.NewConn(ctx, cc, cfg)
		if err != nil {
			t.Fatal(err)
		}
		srv := &transport.Server{Handler: http.HandlerFunc(hello), Logger: testLogger(t)}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(l) }()
		if status, body := get(t, transport.NewClient(c), "http://"+svc+"/x", 10*time.Second); status != 200 || body != "hello /x" {
			t.Errorf("%d %q", status, body)
		}
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		<-served
		c.Close()
		if l.State() != transport.StateClosed || c.State() != transport.StateClosed {
			t.Errorf("states after Close: %v %v", l.State(), c.State())
		}
		for _, raw := range []*stompgo.Conn{sc, cc} {
			if err := raw.Send("/queue/"+svc, "text/plain", []byte("still open"), stompgo.SendOpt.Receipt); err != nil {
				t.Errorf("caller's connection unusable after Close: %v", err)
			}
		}
	})
}

// TestNoReplyAddress: a request frame without reply-to (sent by hand) is
// served and acknowledged, never answered, and the server goes on.
func TestNoReplyAddress(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		svc := unique("noreply")
		ran := make(chan string, 1)
		l := listen(t, j, brokerURL(addr), transport.ListenConfig{Service: svc})
		serve(t, l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/fire" {
				ran <- r.Method + " " + r.URL.Path
			}
			io.WriteString(w, "ok")
		}))
		c, _, _ := rawClient(t, b, addr)
		frame := "POST /fire HTTP/1.1\r\nHost: " + svc + "\r\nContent-Length: 2\r\n\r\nhi"
		if err := c.Send("/queue/"+svc, transport.MediaType, []byte(frame), stompgo.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-ran:
			if got != "POST /fire" {
				t.Errorf("handler saw %s", got)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a request without reply-to was not served")
		}
		client := transport.NewClient(dial(t, j, brokerURL(addr)))
		if status, body := get(t, client, "http://"+svc+"/next", 10*time.Second); status != 200 || body != "ok" {
			t.Fatalf("next request: %d %q", status, body)
		}
	})
}

// TestUnknownCorrelationID: replies the caller is not waiting for (a
// duplicate, an unknown correlation-id, none at all) are dropped, and the
// caller goes on.
func TestUnknownCorrelationID(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		svc := unique("dup")
		j.service(svc)
		srv, _, _ := rawClient(t, b, addr)
		sub, err := srv.Subscribe("/queue/"+svc, stompgo.AckClientIndividual)
		if err != nil {
			t.Fatal(err)
		}
		ok := []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		odd := []byte("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 3\r\n\r\nodd")
		go func() {
			for m := range sub.C {
				if m.Err != nil {
					return
				}
				rt, id := m.Header.Get("reply-to"), m.Header.Get("correlation-id")
				srv.Send(rt, transport.MediaType, odd, stompgo.SendOpt.Header("correlation-id", "no-such-call"))
				srv.Send(rt, transport.MediaType, odd)
				srv.Send(rt, transport.MediaType, ok, stompgo.SendOpt.Header("correlation-id", id))
				srv.Send(rt, transport.MediaType, odd, stompgo.SendOpt.Header("correlation-id", id)) // a duplicate
				srv.Ack(m)
			}
		}()
		client := transport.NewClient(dial(t, j, brokerURL(addr)))
		for i := range 3 {
			if status, body := get(t, client, fmt.Sprintf("http://%s/%d", svc, i), 10*time.Second); status != 200 || body != "ok" {
				t.Errorf("call %d: %d %q, want the reply with its own correlation-id", i, status, body)
			}
		}
	})
}
