package nats_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/internal/natsserver"
	natstransport "github.com/httpbus/httpbus/nats"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

// The backend side of streams (transport.Streamer, transport.Hold and
// broker headers both ways), called directly on Conn and Listener.

var (
	_ transport.Streamer = (*natstransport.Conn)(nil)
	_ transport.Streamer = (*natstransport.Listener)(nil)
)

// eachServer runs f on the broker brokertest resolves (the real server on
// CI) and on an embedded nats-server.
func eachServer(t *testing.T, f func(t *testing.T, url string)) {
	t.Run("broker", func(t *testing.T) { f(t, brokertest.NATS(t)) })
	t.Run("embedded", func(t *testing.T) { f(t, embedded(t, natsserver.Config{})) })
}

// endpoints returns a Conn and a Listener of a fresh service on url, each on
// its own connection, closed at cleanup.
func endpoints(t *testing.T, url string) (*natstransport.Conn, *natstransport.Listener, string) {
	t.Helper()
	svc := uniqueName("stream")
	l := listen(t, connect(t, url), transport.ListenConfig{Service: svc}, natstransport.Config{})
	t.Cleanup(func() { l.Close() })
	return dial(t, connect(t, url)), l, svc
}

func inboxOf(t *testing.T, s transport.Streamer) string {
	t.Helper()
	addr, err := s.Inbox(ctxTimeout(t, 10*time.Second))
	if err != nil {
		t.Fatalf("Inbox: %v", err)
	}
	return addr
}

func receiveInbox(t *testing.T, s transport.Streamer) *transport.Message {
	t.Helper()
	m, err := s.ReceiveInbox(ctxTimeout(t, 10*time.Second))
	if err != nil {
		t.Fatalf("ReceiveInbox: %v", err)
	}
	return m
}

// TestInboxAddress: Inbox returns one "_INBOX." subject per endpoint (the
// connection's custom inbox prefix where set), stable across calls, that
// a message from another, plain nats.go connection reaches at once.
func TestInboxAddress(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		c, l, _ := endpoints(t, url)
		custom, err := natstransport.NewConn(t.Context(), connect(t, url, natsgo.CustomInboxPrefix("_INBOX_httpbus_test")), natstransport.Config{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { custom.Close() })
		raw := connect(t, url)
		seen := map[string]bool{}
		for _, tc := range []struct {
			name   string
			s      transport.Streamer
			prefix string
		}{{"Conn", c, "_INBOX."}, {"Listener", l, "_INBOX."}, {"custom prefix", custom, "_INBOX_httpbus_test."}} {
			addr := inboxOf(t, tc.s)
			if !strings.HasPrefix(addr, tc.prefix) || strings.Count(addr, ".") != strings.Count(tc.prefix, ".") {
				t.Errorf("%s: Inbox %q, want %s<nuid>", tc.name, addr, tc.prefix)
			}
			if again := inboxOf(t, tc.s); again != addr {
				t.Errorf("%s: second Inbox %q, first %q", tc.name, again, addr)
			}
			if seen[addr] {
				t.Errorf("%s: Inbox %q shared with another endpoint", tc.name, addr)
			}
			seen[addr] = true
			// No wait between Inbox and the publish: Inbox returns once the
			// server has the subscription.
			err := raw.PublishMsg(&natsgo.Msg{Subject: addr, Data: []byte("hi " + tc.name), Header: natsgo.Header{"httpbus-seq": {"0"}}})
			if err != nil {
				t.Fatal(err)
			}
			m := receiveInbox(t, tc.s)
			if string(m.Body) != "hi "+tc.name || m.Header.Get(transport.HeaderSeq) != "0" {
				t.Errorf("%s: received %q, header %v", tc.name, m.Body, m.Header)
			}
			if _, ok := m.Header["Httpbus-Seq"]; !ok {
				t.Errorf("%s: header key not canonicalised: %v", tc.name, m.Header)
			}
		}
	})
}

// TestSendReceiveInbox: Send to a peer's inbox, both ways; the peer's
// ReceiveInbox has the body, content type, deadline and every header
// (case-insensitive lookups, several values, Httpbus-Version added unless
// given).
func TestSendReceiveInbox(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		c, l, _ := endpoints(t, url)
		ctx := ctxTimeout(t, 10*time.Second)
		cAddr, lAddr := inboxOf(t, c), inboxOf(t, l)
		dl := time.Now().Add(time.Minute).Truncate(time.Millisecond)

		err := l.Send(ctx, cAddr, &transport.Message{
			Body:        []byte("part 5"),
			ContentType: "application/octet-stream",
			Deadline:    dl,
			Header: http.Header{
				transport.HeaderStream:  {"s1"},
				transport.HeaderSeq:     {"5"},
				transport.HeaderEnd:     {"1"},
				transport.HeaderReplyTo: {lAddr},
				"X-Multi":               {"a", "b"},
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		m := receiveInbox(t, c)
		if string(m.Body) != "part 5" || m.ContentType != "application/octet-stream" || !m.Deadline.Equal(dl) {
			t.Errorf("received body %q, content type %q, deadline %v; want \"part 5\", application/octet-stream, %v", m.Body, m.ContentType, m.Deadline, dl)
		}
		for k, want := range map[string]string{
			"httpbus-stream": "s1", "HTTPBUS-SEQ": "5", "Httpbus-End": "1", "httpbus-reply-to": lAddr,
			"httpbus-version": transport.Version, "content-type": "application/octet-stream",
		} {
			if got := m.Header.Get(k); got != want {
				t.Errorf("Header.Get(%q) = %q, want %q (header %v)", k, got, want, m.Header)
			}
		}
		if got := m.Header.Values("x-multi"); len(got) != 2 || got[0] != "a" || got[1] != "b" {
			t.Errorf("X-Multi = %q, want [a b]", got)
		}

		// The other way, with the sender's own Httpbus-Version and an empty
		// content type (a frame).
		err = c.Send(ctx, lAddr, &transport.Message{
			Body:   []byte("credit"),
			Header: http.Header{transport.HeaderVersion: {"2"}, transport.HeaderControl: {"credit"}, transport.HeaderCredit: {"16"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		m = receiveInbox(t, l)
		if string(m.Body) != "credit" || m.ContentType != transport.MediaType || !m.Deadline.IsZero() {
			t.Errorf("received body %q, content type %q, deadline %v", m.Body, m.ContentType, m.Deadline)
		}
		if v := m.Header.Values(transport.HeaderVersion); len(v) != 1 || v[0] != "2" {
			t.Errorf("Httpbus-Version %q, want [2]", v)
		}
		if m.Header.Get("httpbus-control") != "credit" || m.Header.Get("httpbus-credit") != "16" {
			t.Errorf("header %v", m.Header)
		}
	})
}

// TestInboxOrder: 1000 messages sent by one endpoint arrive at the other's
// inbox in the order sent, each once.
func TestInboxOrder(t *testing.T) {
	const n = 1000
	eachServer(t, func(t *testing.T, url string) {
		c, l, _ := endpoints(t, url)
		ctx := ctxTimeout(t, 30*time.Second)
		addr := inboxOf(t, l)
		errc := make(chan error, 1)
		go func() {
			for i := range n {
				s := strconv.Itoa(i)
				if err := c.Send(ctx, addr, &transport.Message{Body: []byte(s), Header: http.Header{transport.HeaderSeq: {s}}}); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
		for i := range n {
			m, err := l.ReceiveInbox(ctx)
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			if s := strconv.Itoa(i); string(m.Body) != s || m.Header.Get(transport.HeaderSeq) != s {
				t.Fatalf("message %d: body %q, seq %q", i, m.Body, m.Header.Get(transport.HeaderSeq))
			}
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	})
}

// TestSendTooLarge: a message over max_payload (body plus NATS headers) is
// refused with *transport.TooLargeError and not sent.
func TestSendTooLarge(t *testing.T) {
	const maxPayload = 64 << 10
	url := embedded(t, natsserver.Config{MaxPayload: maxPayload})
	c, l, _ := endpoints(t, url)
	ctx := ctxTimeout(t, 10*time.Second)
	addr := inboxOf(t, l)
	// The body alone fits; with its headers it does not.
	err := c.Send(ctx, addr, &transport.Message{Body: make([]byte, maxPayload-8), Header: http.Header{transport.HeaderSeq: {"0"}}})
	var tl *transport.TooLargeError
	if !errors.As(err, &tl) || !errors.Is(err, transport.ErrTooLarge) {
		t.Fatalf("Send over max_payload: %v, want *transport.TooLargeError", err)
	}
	if tl.Limit != maxPayload || tl.Size <= maxPayload {
		t.Errorf("TooLargeError limit %d size %d, want limit %d and size above it", tl.Limit, tl.Size, maxPayload)
	}
	if err := c.Send(ctx, addr, &transport.Message{Body: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	if m := receiveInbox(t, l); string(m.Body) != "after" {
		t.Errorf("first message received is %d bytes, want the one sent after the refused one", len(m.Body))
	}
}

// TestStreamerClosed: after Close, Inbox, ReceiveInbox and Send return
// errors matching transport.ErrClosed, and a ReceiveInbox blocked at Close
// returns one too; on endpoints from NewConn/NewListener and from URLs.
func TestStreamerClosed(t *testing.T) {
	url := brokertest.NATS(t)
	peer := dial(t, connect(t, url))
	peerAddr := inboxOf(t, peer)
	type endpoint interface {
		transport.Streamer
		Close() error
	}
	open := map[string]func(t *testing.T) endpoint{
		"NewConn": func(t *testing.T) endpoint { return dial(t, connect(t, url)) },
		"NewListener": func(t *testing.T) endpoint {
			return listen(t, connect(t, url), transport.ListenConfig{Service: uniqueName("closed")}, natstransport.Config{})
		},
		"Dial": func(t *testing.T) endpoint {
			c, err := transport.Dial(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			return c.(endpoint)
		},
		"Listen": func(t *testing.T) endpoint {
			l, err := transport.Listen(context.Background(), url+"?service="+uniqueName("closed"))
			if err != nil {
				t.Fatal(err)
			}
			return l.(endpoint)
		},
	}
	for name, open := range open {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			inboxOf(t, s)
			blocked := make(chan error, 1)
			go func() {
				_, err := s.ReceiveInbox(context.Background())
				blocked <- err
			}()
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if err := <-blocked; !errors.Is(err, transport.ErrClosed) {
				t.Errorf("ReceiveInbox blocked at Close: %v, want ErrClosed", err)
			}
			ctx := ctxTimeout(t, 5*time.Second)
			if _, err := s.Inbox(ctx); !errors.Is(err, transport.ErrClosed) {
				t.Errorf("Inbox after Close: %v, want ErrClosed", err)
			}
			if _, err := s.ReceiveInbox(ctx); !errors.Is(err, transport.ErrClosed) {
				t.Errorf("ReceiveInbox after Close: %v, want ErrClosed", err)
			}
			if err := s.Send(ctx, peerAddr, &transport.Message{Body: []byte("x")}); !errors.Is(err, transport.ErrClosed) {
				t.Errorf("Send after Close: %v, want ErrClosed", err)
			}
		})
	}
	t.Run("never opened", func(t *testing.T) {
		c := dial(t, connect(t, url))
		c.Close()
		if _, err := c.ReceiveInbox(context.Background()); !errors.Is(err, transport.ErrClosed) {
			t.Errorf("ReceiveInbox after Close: %v, want ErrClosed", err)
		}
	})
}

// TestInboxSlowConsumer: past Config.InboxPendingBytes the inbox drops
// messages; the drop is logged and ReceiveInbox goes on with the next
// message kept.
func TestInboxSlowConsumer(t *testing.T) {
	url := brokertest.NATS(t)
	var logs syncBuffer
	rnc := connect(t, url)
	r, err := natstransport.NewConn(t.Context(), rnc, natstransport.Config{InboxPendingBytes: 1000, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	snc := connect(t, url)
	s := dial(t, snc)
	ctx := ctxTimeout(t, 10*time.Second)
	addr := inboxOf(t, r)
	for i := range 5 {
		if err := s.Send(ctx, addr, &transport.Message{Body: []byte(strconv.Itoa(i) + strings.Repeat(".", 599))}); err != nil {
			t.Fatal(err)
		}
	}
	// Once the sender's flush returns, the server has routed the five
	// messages; once the receiver's returns, its client has read them.
	if err := snc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := rnc.Flush(); err != nil {
		t.Fatal(err)
	}
	if m := receiveInbox(t, r); m.Body[0] != '0' {
		t.Errorf("first message kept is %q, want 0", m.Body[:1])
	}
	if !strings.Contains(logs.String(), "slow consumer") {
		t.Errorf("no slow-consumer warning logged; logs:\n%s", logs.String())
	}
}

// TestReplyHold: a response sent with Hold reaches the caller (Call
// returns it) and the delivery stays held until a Reply with nil response
// settles it; the caller receives exactly the responses sent, nothing
// more; Requeue of a held delivery does not republish it. Headers travel
// both ways.
func TestReplyHold(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		c, l, svc := endpoints(t, url)
		ctx := ctxTimeout(t, 20*time.Second)
		cAddr, lAddr := inboxOf(t, c), inboxOf(t, l)

		t.Run("Call", func(t *testing.T) {
			type result struct {
				m   *transport.Message
				err error
			}
			done := make(chan result, 1)
			go func() {
				m, err := c.Call(ctx, svc, &transport.Message{
					Body: []byte("request"),
					Header: http.Header{
						transport.HeaderReplyTo: {cAddr}, transport.HeaderStream: {"7"}, "X-Req": {"a"},
					},
				})
				done <- result{m, err}
			}()
			d, err := l.Receive(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for k, want := range map[string]string{
				"httpbus-reply-to": cAddr, "httpbus-stream": "7", "x-req": "a",
				"httpbus-version": transport.Version, "content-type": transport.MediaType,
			} {
				if got := d.Header.Get(k); got != want {
					t.Errorf("delivery Header.Get(%q) = %q, want %q (header %v)", k, got, want, d.Header)
				}
			}
			if d.Deadline.IsZero() {
				t.Error("delivery has no deadline (ctx has one)")
			}
			resp := &transport.Message{Body: []byte("first part"), Header: http.Header{
				transport.HeaderReplyTo: {lAddr}, transport.HeaderStream: {"7"}, transport.HeaderSeq: {"0"},
			}}
			if err := l.Reply(ctx, d, resp, transport.Hold); err != nil {
				t.Fatal(err)
			}
			if n := natstransport.HeldOf(l); n != 1 {
				t.Errorf("held after Hold: %d, want 1", n)
			}
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			if string(r.m.Body) != "first part" || r.m.ContentType != transport.MediaType {
				t.Errorf("Call returned %q, content type %q", r.m.Body, r.m.ContentType)
			}
			for k, want := range map[string]string{"httpbus-reply-to": lAddr, "httpbus-stream": "7", "httpbus-seq": "0", "httpbus-version": transport.Version} {
				if got := r.m.Header.Get(k); got != want {
					t.Errorf("reply Header.Get(%q) = %q, want %q (header %v)", k, got, want, r.m.Header)
				}
			}
			if err := l.Reply(ctx, d, nil, transport.Ack); err != nil {
				t.Fatal(err)
			}
			if n := natstransport.HeldOf(l); n != 0 {
				t.Errorf("held after the settling Reply: %d, want 0", n)
			}
		})

		// A raw caller counts what reaches its reply subject: after the
		// settling Reply, the listener's connection publishes a marker
		// there; NATS keeps one connection's order, so anything the
		// settling Reply had sent would come before it.
		raw := connect(t, url)
		rawRequest := func(t *testing.T) (*transport.Delivery, *natsgo.Subscription) {
			t.Helper()
			reply := raw.NewInbox()
			sub, err := raw.SubscribeSync(reply)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sub.Unsubscribe() })
			err = raw.PublishMsg(&natsgo.Msg{
				Subject: natstransport.ServiceSubject("", svc), Reply: reply, Data: []byte("raw request"),
				Header: natsgo.Header{"Content-Type": {transport.MediaType}},
			})
			if err != nil {
				t.Fatal(err)
			}
			d, err := l.Receive(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return d, sub
		}
		expect := func(t *testing.T, sub *natsgo.Subscription, bodies ...string) {
			t.Helper()
			if err := l.NATSConn().Publish(sub.Subject, []byte("marker")); err != nil {
				t.Fatal(err)
			}
			for _, want := range append(bodies, "marker") {
				m, err := sub.NextMsgWithContext(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if string(m.Data) != want {
					t.Fatalf("reply subject received %q, want %q (sequence %q then the marker)", m.Data, want, bodies)
				}
			}
		}

		t.Run("exactly one response", func(t *testing.T) {
			d, sub := rawRequest(t)
			if err := l.Reply(ctx, d, &transport.Message{Body: []byte("held")}, transport.Hold); err != nil {
				t.Fatal(err)
			}
			if err := l.Reply(ctx, d, nil, transport.Ack); err != nil {
				t.Fatal(err)
			}
			expect(t, sub, "held")
		})

		t.Run("Hold twice", func(t *testing.T) {
			d, sub := rawRequest(t)
			for _, b := range []string{"one", "two"} {
				if err := l.Reply(ctx, d, &transport.Message{Body: []byte(b)}, transport.Hold); err != nil {
					t.Fatal(err)
				}
			}
			if n := natstransport.HeldOf(l); n != 1 {
				t.Errorf("held after two Holds: %d, want 1", n)
			}
			if err := l.Reply(ctx, d, nil, transport.Reject); err != nil {
				t.Fatal(err)
			}
			if n := natstransport.HeldOf(l); n != 0 {
				t.Errorf("held after Reject: %d, want 0", n)
			}
			expect(t, sub, "one", "two")
		})

		t.Run("Requeue of a held delivery", func(t *testing.T) {
			d, sub := rawRequest(t)
			if err := l.Reply(ctx, d, &transport.Message{Body: []byte("held")}, transport.Hold); err != nil {
				t.Fatal(err)
			}
			if err := l.Reply(ctx, d, nil, transport.Requeue); err != nil {
				t.Fatal(err)
			}
			if n := natstransport.HeldOf(l); n != 0 {
				t.Errorf("held after Requeue: %d, want 0", n)
			}
			expect(t, sub, "held")
			// A republished request would reach the service subject before
			// this marker, published after it on the same connection.
			if err := l.NATSConn().Publish(natstransport.ServiceSubject("", svc), []byte("marker")); err != nil {
				t.Fatal(err)
			}
			next, err := l.Receive(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if string(next.Body) != "marker" {
				t.Errorf("after Requeue of a held delivery the listener received %q (redelivered %v), want the marker", next.Body, next.Redelivered)
			}
		})
	})
}

// TestStreamPartBytes: nats cuts stream parts of 1 MiB (StreamPartBytes),
// capped at max_payload minus HeaderRoom minus 1 KiB, both ways through the
// server once the receiver grants credit in bytes: the largest part a
// caller's inbox receives on a 6 MiB download, and a server's inbox on a
// 6 MiB upload. (The transporttest credit wrappers hide PartSizer, so the
// conformance suite does not cover it.)
func TestStreamPartBytes(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		const size = 6 << 20
		svc := uniqueName("parts")
		nc := connect(t, url)
		want := min(1<<20, int(nc.MaxPayload())-natstransport.HeaderRoom-1024)
		l := listen(t, nc, transport.ListenConfig{Service: svc}, natstransport.Config{})
		sl := &listenerParts{Listener: l}
		uploaded := make(chan int64, 1)
		serve(t, &transport.Server{Logger: testLogger(t), Handler: transporttest.PartBytesHandler(size, uploaded)}, sl)
		cp := &connParts{Conn: dial(t, connect(t, url))}
		if cp.StreamPartBytes() != 1<<20 || l.StreamPartBytes() != 1<<20 {
			t.Fatalf("StreamPartBytes: Conn %d, Listener %d, want %d", cp.StreamPartBytes(), l.StreamPartBytes(), 1<<20)
		}
		client := &http.Client{Transport: transport.NewRoundTripper(cp)}
		transporttest.CheckPartBytes(t, client, svc, size, want, &cp.LargestPart, &sl.LargestPart, uploaded)
	})
}

// connParts is a Conn that records the largest message its inbox received.
type connParts struct {
	*natstransport.Conn
	transporttest.LargestPart
}

func (c *connParts) ReceiveInbox(ctx context.Context) (*transport.Message, error) {
	return c.See(c.Conn.ReceiveInbox(ctx))
}

// listenerParts is a Listener that records the largest message its inbox
// received.
type listenerParts struct {
	*natstransport.Listener
	transporttest.LargestPart
}

func (l *listenerParts) ReceiveInbox(ctx context.Context) (*transport.Message, error) {
	return l.See(l.Listener.ReceiveInbox(ctx))
}
