package stomp_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	stompgo "github.com/go-stomp/stomp/v3"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/stomp"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

// streamers returns a Conn and a Listener of a fresh service, both as
// transport.Streamer, closed at cleanup.
func streamers(t *testing.T, b broker, addr string, query ...string) (transport.Streamer, transport.Streamer) {
	t.Helper()
	j := newJanitor(t, b)
	url := brokerURL(addr, query...)
	l := listen(t, j, url, transport.ListenConfig{Service: unique("inbox")})
	c := dial(t, j, url).(recordingConn).Conn
	return c.(transport.Streamer), l.(transport.Streamer)
}

func inboxOf(t *testing.T, s transport.Streamer) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	addr, err := s.Inbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.Inbox(ctx)
	if err != nil || again != addr {
		t.Fatalf("second Inbox: %q %v, want %q", again, err, addr)
	}
	return addr
}

func receiveInbox(t *testing.T, s transport.Streamer) *transport.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := s.ReceiveInbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestInbox: the inbox of a Conn and of a Listener is reached from other
// connections (an httpbus Conn and a plain go-stomp connection), with the
// body, content type and headers (Httpbus-* and others, values with
// STOMP's escaped characters, several values joined) preserved, reserved
// STOMP names left out.
func TestInbox(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		c, l := streamers(t, b, addr)
		_, peer := streamers(t, b, addr)
		raw, _, _ := rawClient(t, b, addr)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for name, s := range map[string]transport.Streamer{"Conn": c, "Listener": l} {
			inbox := inboxOf(t, s)
			t.Logf("%s inbox %s", name, inbox)
			h := http.Header{}
			h.Set(transport.HeaderStream, "s-1")
			h.Set(transport.HeaderSeq, "0")
			h.Set(transport.HeaderEnd, "1")
			h.Set(transport.HeaderControl, "credit")
			h.Set(transport.HeaderCredit, "8")
			h.Set(transport.HeaderReplyTo, "/queue/elsewhere")
			h.Set("X-Escaped", "a:b\\c\nd")
			h["X-Multi"] = []string{"1", "2"}
			h.Set("Destination", "/queue/hijack")
			h.Set("Reply-To", "/queue/hijack")
			m := &transport.Message{Body: []byte("part 0"), ContentType: "application/octet-stream", Header: h,
				Deadline: time.Now().Add(time.Minute).Truncate(time.Millisecond)}
			if err := peer.Send(ctx, inbox, m); err != nil {
				t.Fatal(err)
			}
			got := receiveInbox(t, s)
			if string(got.Body) != "part 0" || got.ContentType != "application/octet-stream" {
				t.Errorf("%s: got %q %q", name, got.Body, got.ContentType)
			}
			for _, k := range []string{transport.HeaderStream, transport.HeaderSeq, transport.HeaderEnd, transport.HeaderControl, transport.HeaderCredit, transport.HeaderReplyTo, "X-Escaped"} {
				if g, w := got.Header.Get(k), h.Get(k); g != w {
					t.Errorf("%s: header %s = %q, want %q", name, k, g, w)
				}
			}
			if g := got.Header.Get("X-Multi"); g != "1, 2" {
				t.Errorf("%s: X-Multi %q, want \"1, 2\"", name, g)
			}
			if got.Header.Get("Reply-To") != "" || got.Header.Get("Destination") == "/queue/hijack" {
				t.Errorf("%s: reserved headers written: %v", name, got.Header)
			}
			if !got.Deadline.Equal(m.Deadline) {
				t.Errorf("%s: deadline %v, want %v", name, got.Deadline, m.Deadline)
			}
			// Any STOMP client can send there.
			if err := raw.Send(inbox, "text/plain", []byte("raw"), stompgo.SendOpt.Header("httpbus-seq", "1")); err != nil {
				t.Fatal(err)
			}
			if got := receiveInbox(t, s); string(got.Body) != "raw" || got.Header.Get(transport.HeaderSeq) != "1" {
				t.Errorf("%s: from a raw client got %q %v", name, got.Body, got.Header)
			}
		}
	})
}

// TestInboxOrder: 1000 messages from one sender arrive in order.
func TestInboxOrder(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		c, l := streamers(t, b, addr)
		inbox := inboxOf(t, l)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		const n = 1000
		sent := make(chan error, 1)
		go func() {
			for i := range n {
				seq := strconv.Itoa(i)
				m := &transport.Message{Body: []byte(seq), Header: http.Header{transport.HeaderSeq: {seq}}}
				if err := c.Send(ctx, inbox, m); err != nil {
					sent <- err
					return
				}
			}
			sent <- nil
		}()
		for i := range n {
			m, err := l.ReceiveInbox(ctx)
			if err != nil {
				t.Fatalf("after %d messages: %v", i, err)
			}
			if seq := strconv.Itoa(i); string(m.Body) != seq || m.Header.Get(transport.HeaderSeq) != seq {
				t.Fatalf("message %d: body %q seq %q", i, m.Body, m.Header.Get(transport.HeaderSeq))
			}
		}
		if err := <-sent; err != nil {
			t.Fatal(err)
		}
	})
}

// TestSendTooLarge: a body over the frame limit, or a header block over
// its share, is refused with *transport.TooLargeError before sending, and
// the connection stays up (ActiveMQ would drop it).
func TestSendTooLarge(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		c, l := streamers(t, b, addr, "max_frame=1048576")
		inbox := inboxOf(t, l)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var tl *transport.TooLargeError
		err := c.Send(ctx, inbox, &transport.Message{Body: make([]byte, 1<<20)})
		if !errors.As(err, &tl) || !errors.Is(err, transport.ErrTooLarge) || tl.Limit != 1<<20-stomp.HeaderReserve {
			t.Errorf("1 MiB body: %v, want a TooLargeError with limit %d", err, 1<<20-stomp.HeaderReserve)
		}
		err = c.Send(ctx, inbox, &transport.Message{Header: http.Header{"X-Big": {strings.Repeat("x", stomp.HeaderReserve)}}})
		if !errors.As(err, &tl) {
			t.Errorf("64 KiB header: %v, want a TooLargeError", err)
		}
		if err := c.Send(ctx, inbox, &transport.Message{Body: make([]byte, 512<<10)}); err != nil {
			t.Fatal(err)
		}
		if m := receiveInbox(t, l); len(m.Body) != 512<<10 {
			t.Errorf("got %d bytes", len(m.Body))
		}
		if s := c.(transport.StateReporter).State(); s != transport.StateConnected {
			t.Errorf("state %v", s)
		}
	})
}

// TestInboxClosed: after Close, ReceiveInbox (also one already waiting),
// Inbox and Send fail with ErrClosed; a send to the inbox of a closed
// endpoint is not an error and the sender's connection stays up; on
// RabbitMQ the inbox queue is gone.
func TestInboxClosed(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		c, l := streamers(t, b, addr)
		inbox := inboxOf(t, l)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		waiting := make(chan error, 1)
		go func() {
			_, err := l.ReceiveInbox(ctx)
			waiting <- err
		}()
		l.(transport.Listener).Close()
		if err := <-waiting; !errors.Is(err, transport.ErrClosed) {
			t.Errorf("waiting ReceiveInbox: %v, want ErrClosed", err)
		}
		if _, err := l.ReceiveInbox(ctx); !errors.Is(err, transport.ErrClosed) {
			t.Errorf("ReceiveInbox: %v, want ErrClosed", err)
		}
		if _, err := l.Inbox(ctx); !errors.Is(err, transport.ErrClosed) {
			t.Errorf("Inbox: %v, want ErrClosed", err)
		}
		if err := l.Send(ctx, inbox, &transport.Message{}); !errors.Is(err, transport.ErrClosed) {
			t.Errorf("Send: %v, want ErrClosed", err)
		}
		if err := c.Send(ctx, inbox, &transport.Message{Body: []byte("to nobody")}); err != nil {
			t.Errorf("send to a closed inbox: %v", err)
		}
		// The sender goes on: its own inbox still gets what it sends.
		own := inboxOf(t, c)
		if err := c.Send(ctx, own, &transport.Message{Body: []byte("still here")}); err != nil {
			t.Fatal(err)
		}
		if m := receiveInbox(t, c); string(m.Body) != "still here" {
			t.Errorf("got %q", m.Body)
		}
		if s := c.(transport.StateReporter).State(); s != transport.StateConnected {
			t.Errorf("sender state %v after sending to a closed inbox", s)
		}
		if b.dialect == stomp.DialectRabbitMQ {
			assertNoQueue(t, strings.TrimPrefix(inbox, "/amq/queue/"))
		}
		c.(transport.Conn).Close()
		if _, err := c.ReceiveInbox(ctx); !errors.Is(err, transport.ErrClosed) {
			t.Errorf("Conn ReceiveInbox: %v, want ErrClosed", err)
		}
	})
}

// assertNoQueue checks over AMQP that RabbitMQ has no queue name.
func assertNoQueue(t *testing.T, name string) {
	t.Helper()
	url := os.Getenv(brokertest.EnvAMQP)
	if url == "" {
		t.Logf("%s not set: not checking that queue %s is gone", brokertest.EnvAMQP, name)
		return
	}
	conn, err := amqp091.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	_, err = ch.QueueDeclarePassive(name, false, true, true, false, nil)
	var ae *amqp091.Error
	if !errors.As(err, &ae) || ae.Code != amqp091.NotFound {
		t.Errorf("queue %s after Close: %v, want NOT_FOUND", name, err)
	}
}

// TestHold: Reply with Hold sends the response and leaves the request
// unacknowledged (closing the listener then makes the broker redeliver
// it); the later Reply(nil, Ack) sends nothing and acknowledges it.
func TestHold(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		url := brokerURL(addr)
		svc := unique("hold")
		raw, replyTo, replies := rawClient(t, b, addr)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		request := func(body string) {
			t.Helper()
			err := raw.Send("/queue/"+svc, "text/plain", []byte(body),
				stompgo.SendOpt.Header("reply-to", replyTo), stompgo.SendOpt.Header("correlation-id", body))
			if err != nil {
				t.Fatal(err)
			}
		}
		nextReply := func() *stompgo.Message {
			t.Helper()
			select {
			case m := <-replies.C:
				if m.Err != nil {
					t.Fatal(m.Err)
				}
				return m
			case <-ctx.Done():
				t.Fatal("no reply")
				return nil
			}
		}
		receive := func(l transport.Listener) *transport.Delivery {
			t.Helper()
			d, err := l.Receive(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		resp := func(s string) *transport.Message {
			return &transport.Message{Body: []byte(s), ContentType: "text/plain", Header: http.Header{transport.HeaderStream: {s}}}
		}

		// 1: Hold, then Ack: one response; "one" never comes back.
		l1 := listen(t, j, url, transport.ListenConfig{Service: svc})
		request("one")
		d := receive(l1)
		if err := l1.Reply(ctx, d, resp("first"), transport.Hold); err != nil {
			t.Fatal(err)
		}
		if m := nextReply(); string(m.Body) != "first" || m.Header.Get("correlation-id") != "one" || m.Header.Get("httpbus-stream") != "first" {
			t.Errorf("held response: %q %v", m.Body, m.Header)
		}
		if err := l1.Reply(ctx, d, nil, transport.Ack); err != nil {
			t.Fatal(err)
		}
		// Nothing else was sent to the caller: the next message there is
		// this marker, sent after the settling Reply on the same connection.
		if err := l1.(transport.Streamer).Send(ctx, d.RemoteAddr, &transport.Message{Body: []byte("marker")}); err != nil {
			t.Fatal(err)
		}
		if m := nextReply(); string(m.Body) != "marker" {
			t.Errorf("after Reply(nil, Ack) the caller got %q, want only the marker", m.Body)
		}
		l1.Close()

		// 2: Hold, then close: the request comes back, redelivered.
		l2 := listen(t, j, url, transport.ListenConfig{Service: svc})
		request("two")
		d = receive(l2)
		if string(d.Body) != "two" {
			t.Fatalf("got %q, want two (one was acknowledged)", d.Body)
		}
		if err := l2.Reply(ctx, d, resp("second"), transport.Hold); err != nil {
			t.Fatal(err)
		}
		if m := nextReply(); string(m.Body) != "second" {
			t.Errorf("held response: %q", m.Body)
		}
		l2.Close()
		l3 := listen(t, j, url, transport.ListenConfig{Service: svc})
		d = receive(l3)
		if string(d.Body) != "two" || !d.Redelivered {
			t.Fatalf("after closing with a held delivery got %q redelivered=%v, want two redelivered", d.Body, d.Redelivered)
		}
		if err := l3.Reply(ctx, d, nil, transport.Ack); err != nil {
			t.Fatal(err)
		}
	})
}

// TestHeaderRoundTrip: Message.Header travels as STOMP headers on the
// request/reply path: Call's request header reaches the Delivery, the
// Reply's header reaches Call's result.
func TestHeaderRoundTrip(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		url := brokerURL(addr)
		svc := unique("hdrtrip")
		l := listen(t, j, url, transport.ListenConfig{Service: svc})
		c := dial(t, j, url)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		reqH := http.Header{
			transport.HeaderReplyTo: {"/amq/queue/x"},
			transport.HeaderStream:  {"42"},
			"Httpbus-Future":        {"a:b\\c"},
		}
		respH := http.Header{
			transport.HeaderStream: {"42"},
			transport.HeaderSeq:    {"0"},
			transport.HeaderEnd:    {"1"},
			transport.HeaderError:  {"none: really"},
			"Correlation-Id":       {"forged"},
		}
		type result struct {
			m   *transport.Message
			err error
		}
		done := make(chan result, 1)
		go func() {
			m, err := c.Call(ctx, svc, &transport.Message{Body: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), Header: reqH})
			done <- result{m, err}
		}()
		d, err := l.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for k := range reqH {
			if g, w := d.Header.Get(k), reqH.Get(k); g != w {
				t.Errorf("delivery header %s = %q, want %q", k, g, w)
			}
		}
		if d.Header.Get(transport.HeaderVersion) != transport.Version || d.Header.Get(transport.HeaderDeadline) == "" {
			t.Errorf("delivery header %v lacks version or deadline", d.Header)
		}
		if err := l.Reply(ctx, d, &transport.Message{Body: []byte("HTTP/1.1 204 No Content\r\n\r\n"), Header: respH}, transport.Ack); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		for _, k := range []string{transport.HeaderStream, transport.HeaderSeq, transport.HeaderEnd, transport.HeaderError} {
			if g, w := r.m.Header.Get(k), respH.Get(k); g != w {
				t.Errorf("reply header %s = %q, want %q", k, g, w)
			}
		}
	})
}

// TestInboxAfterReconnect: after the connection is lost and replaced,
// Inbox gives an address on the new connection, which works.
func TestInboxAfterReconnect(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		p := newProxy(t, addr)
		c, _ := streamers(t, b, p.Listen, "reconnect_max=200ms")
		_, peer := streamers(t, b, addr)
		before := inboxOf(t, c)
		p.Stop()
		waitState(t, "client", c.(transport.StateReporter), transport.StateReconnecting, 10*time.Second)
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		waitState(t, "client", c.(transport.StateReporter), transport.StateConnected, 10*time.Second)
		after := inboxOf(t, c)
		if after == before {
			t.Errorf("inbox %s kept across a reconnect", after)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := peer.Send(ctx, after, &transport.Message{Body: []byte("again")}); err != nil {
			t.Fatal(err)
		}
		if m := receiveInbox(t, c); string(m.Body) != "again" {
			t.Errorf("got %q", m.Body)
		}
	})
}

// TestStreamPartBytes: under credit in bytes a stream over RabbitMQ's STOMP
// plugin is cut in 1 MiB parts and one over ActiveMQ in
// transport.LargePartBytes, by the broker each end is connected to. A
// streamed 6 MiB download arrives whole, and the largest part the caller's
// inbox received has exactly that size (transporttest.CheckPartBytes).
func TestStreamPartBytes(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		c, l := streamers(t, b, addr)
		want := transport.LargePartBytes
		if b.dialect == stomp.DialectRabbitMQ {
			want = 1 << 20
		}
		for name, e := range map[string]transport.Streamer{"Conn": c, "Listener": l} {
			ps, ok := e.(transport.PartSizer)
			if !ok {
				t.Fatalf("%s is not a transport.PartSizer", name)
			}
			if got := ps.StreamPartBytes(); got != want {
				t.Errorf("%s.StreamPartBytes() = %d, want %d", name, got, want)
			}
		}
		const size = 6 << 20
		svc := unique("parts")
		j := newJanitor(t, b)
		url := brokerURL(addr)
		srv := &transport.Server{Logger: testLogger(t), Handler: transporttest.PartBytesHandler(size, nil)}
		ln := listen(t, j, url, transport.ListenConfig{Service: svc})
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		pc := &partsSeen{recordingConn: dial(t, j, url).(recordingConn)}
		client := &http.Client{Transport: transport.NewRoundTripper(pc)}
		transporttest.CheckPartBytes(t, client, svc, size, want, &pc.LargestPart, nil, nil)
	})
}

// partsSeen is a Conn that records the largest message its inbox received.
type partsSeen struct {
	recordingConn
	transporttest.LargestPart
}

func (c *partsSeen) ReceiveInbox(ctx context.Context) (*transport.Message, error) {
	return c.See(c.recordingConn.ReceiveInbox(ctx))
}
