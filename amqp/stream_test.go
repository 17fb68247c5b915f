package amqp_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/httpbus/httpbus/amqp"
	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

// listen returns a Listener for a fresh service, with its queues deleted and
// the Listener closed at cleanup.
func listen(t *testing.T, url string, cfg amqp.Config) *amqp.Listener {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	l, err := amqp.Listen(ctx, url, transport.ListenConfig{Service: unique("stream")}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	deleteQueues(t, url, l.Queue())
	t.Cleanup(func() { l.Close() })
	return l
}

// testCtx bounds a test's waits: generous, as the broker and this machine
// may be shared and loaded.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func inbox(t *testing.T, ctx context.Context, s transport.Streamer) string {
	t.Helper()
	name, err := s.Inbox(ctx)
	if err != nil {
		t.Fatalf("Inbox: %v", err)
	}
	if name == "" {
		t.Fatal("Inbox returned an empty address")
	}
	return name
}

// TestInboxReachable: an inbox takes messages published by hand from
// another connection through the default exchange, for a Conn and a
// Listener; Inbox returns the same address until a reconnection.
func TestInboxReachable(t *testing.T) {
	url := brokertest.AMQP(t)
	ctx := testCtx(t)
	for _, tc := range []struct {
		name string
		s    transport.Streamer
	}{
		{"conn", dialConn(t, url, amqp.Config{})},
		{"listener", listen(t, url, amqp.Config{})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := inbox(t, ctx, tc.s)
			if again := inbox(t, ctx, tc.s); again != addr {
				t.Errorf("second Inbox %q, want %q", again, addr)
			}
			_, ch := rawChannel(t, url)
			err := ch.PublishWithContext(ctx, "", addr, true, false, amqp091.Publishing{
				ContentType: "text/plain",
				MessageId:   "m-1",
				Headers:     amqp091.Table{"x-from": "raw", "Httpbus-Seq": "3"},
				Body:        []byte("hello inbox"),
			})
			if err != nil {
				t.Fatal(err)
			}
			m, err := tc.s.ReceiveInbox(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if string(m.Body) != "hello inbox" || m.ContentType != "text/plain" {
				t.Errorf("got %q (%s)", m.Body, m.ContentType)
			}
			for k, want := range map[string]string{"X-From": "raw", transport.HeaderSeq: "3", amqp.HeaderMessageID: "m-1", amqp.HeaderRoutingKey: addr} {
				if got := m.Header[k]; len(got) != 1 || got[0] != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

// TestSendReceiveInbox: Send from a Conn to a Listener's inbox and back
// preserves body, content type, every header (canonical keys, a repeated
// one joined) and the deadline.
func TestSendReceiveInbox(t *testing.T) {
	url := brokertest.AMQP(t)
	ctx := testCtx(t)
	c := dialConn(t, url, amqp.Config{})
	l := listen(t, url, amqp.Config{})
	deadline := time.Now().Add(time.Minute).Truncate(time.Millisecond)
	for _, dir := range []struct {
		name     string
		from, to transport.Streamer
	}{{"conn-to-listener", c, l}, {"listener-to-conn", l, c}} {
		t.Run(dir.name, func(t *testing.T) {
			addr := inbox(t, ctx, dir.to)
			h := http.Header{
				transport.HeaderReplyTo: {"peer-inbox"},
				transport.HeaderStream:  {"42"},
				transport.HeaderSeq:     {"0"},
				transport.HeaderEnd:     {"1"},
				transport.HeaderControl: {"credit"},
				transport.HeaderCredit:  {"8"},
				transport.HeaderError:   {"none"},
				"X-Multi":               {"a", "b"},
			}
			err := dir.from.Send(ctx, addr, &transport.Message{Body: []byte("part 0"), ContentType: transport.MediaType, Header: h, Deadline: deadline})
			if err != nil {
				t.Fatal(err)
			}
			m, err := dir.to.ReceiveInbox(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if string(m.Body) != "part 0" || m.ContentType != transport.MediaType {
				t.Errorf("got %q (%s)", m.Body, m.ContentType)
			}
			for k, vs := range h {
				want := strings.Join(vs, ", ")
				if got := m.Header[k]; len(got) != 1 || got[0] != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			if got, ok := m.Header[transport.HeaderVersion]; ok {
				t.Errorf("version header %q: version 1 is left out (WIRE.md §2)", got)
			}
			if !m.Deadline.Equal(deadline) {
				t.Errorf("deadline %v, want %v", m.Deadline, deadline)
			}
		})
	}
}

// TestInboxOrder: 1000 messages sent by one endpoint to one inbox arrive in
// the order sent.
func TestInboxOrder(t *testing.T) {
	url := brokertest.AMQP(t)
	ctx := testCtx(t)
	c := dialConn(t, url, amqp.Config{})
	l := listen(t, url, amqp.Config{})
	addr := inbox(t, ctx, c)
	const n = 1000
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			h := http.Header{transport.HeaderSeq: {strconv.Itoa(i)}}
			if err := l.Send(ctx, addr, &transport.Message{Body: []byte(strconv.Itoa(i)), ContentType: transport.MediaType, Header: h}); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	for i := range n {
		m, err := c.ReceiveInbox(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got := m.Header.Get(transport.HeaderSeq); got != strconv.Itoa(i) || string(m.Body) != got {
			t.Fatalf("message %d: seq %q body %q", i, got, m.Body)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestSendTooLarge: a message over MaxMessageBytes is refused with a
// *transport.TooLargeError and nothing is sent (the next message is the
// first to arrive).
func TestSendTooLarge(t *testing.T) {
	url := brokertest.AMQP(t)
	ctx := testCtx(t)
	cfg := amqp.Config{MaxMessageBytes: 1024}
	c := dialConn(t, url, cfg)
	l := listen(t, url, cfg)
	for _, dir := range []struct {
		name     string
		from, to transport.Streamer
	}{{"conn", c, l}, {"listener", l, c}} {
		t.Run(dir.name, func(t *testing.T) {
			addr := inbox(t, ctx, dir.to)
			err := dir.from.Send(ctx, addr, &transport.Message{Body: make([]byte, 1025), ContentType: transport.MediaType})
			var tl *transport.TooLargeError
			if !errors.As(err, &tl) || tl.Limit != 1024 || tl.Size != 1025 || !errors.Is(err, transport.ErrTooLarge) {
				t.Fatalf("Send 1025 bytes: %v, want a TooLargeError 1025 > 1024", err)
			}
			if err := dir.from.Send(ctx, addr, &transport.Message{Body: []byte("small")}); err != nil {
				t.Fatal(err)
			}
			m, err := dir.to.ReceiveInbox(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if string(m.Body) != "small" {
				t.Errorf("first message received is %d bytes, want the small one", len(m.Body))
			}
		})
	}
}

// TestStreamerClosed: after Close, Inbox, ReceiveInbox and Send return
// ErrClosed, and a ReceiveInbox waiting at Close returns it too.
func TestStreamerClosed(t *testing.T) {
	url := brokertest.AMQP(t)
	ctx := testCtx(t)
	peer := dialConn(t, url, amqp.Config{})
	addr := inbox(t, ctx, peer)
	for _, tc := range []struct {
		name string
		s    interface {
			transport.Streamer
			Close() error
		}
	}{
		{"conn", dialConn(t, url, amqp.Config{})},
		{"listener", listen(t, url, amqp.Config{})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inbox(t, ctx, tc.s)
			waiting := make(chan error, 1)
			go func() {
				_, err := tc.s.ReceiveInbox(ctx)
				waiting <- err
			}()
			tc.s.Close()
			if err := <-waiting; !errors.Is(err, transport.ErrClosed) {
				t.Errorf("waiting ReceiveInbox: %v, want ErrClosed", err)
			}
			if _, err := tc.s.Inbox(ctx); !errors.Is(err, transport.ErrClosed) {
				t.Errorf("Inbox: %v, want ErrClosed", err)
			}
			if _, err := tc.s.ReceiveInbox(ctx); !errors.Is(err, transport.ErrClosed) {
				t.Errorf("ReceiveInbox: %v, want ErrClosed", err)
			}
			if err := tc.s.Send(ctx, addr, &transport.Message{Body: []byte("x")}); !errors.Is(err, transport.ErrClosed) {
				t.Errorf("Send: %v, want ErrClosed", err)
			}
		})
	}
}

// TestInboxAfterReconnect: when the connection is lost, a waiting
// ReceiveInbox reports it (ErrUnavailable), and Inbox returns a new address
// once reconnected, which works; a Send to the old one is not an error.
func TestInboxAfterReconnect(t *testing.T) {
	url := brokertest.AMQP(t)
	ctx := testCtx(t)
	name := "httpbus inbox test " + randHex(4)
	c := dialConn(t, url, amqp.Config{ConnectionName: name, ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond})
	peer := dialConn(t, url, amqp.Config{})
	old := inbox(t, ctx, c)
	waiting := make(chan error, 1)
	rctx := ctx
	go func() {
		_, err := c.ReceiveInbox(rctx)
		waiting <- err
	}()
	closeConnection(t, name) // rabbitmqctl may take seconds
	ctx = testCtx(t)
	if err := <-waiting; !errors.Is(err, transport.ErrUnavailable) || errors.Is(err, transport.ErrClosed) {
		t.Errorf("ReceiveInbox waiting when the inbox was lost: %v, want ErrUnavailable", err)
	}
	var addr string
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		a, err := c.Inbox(ctx)
		if err == nil && a != old {
			addr = a
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("Inbox still %q (err %v) after the connection was closed", a, err)
		}
		<-tick.C
	}
	if err := peer.Send(ctx, old, &transport.Message{Body: []byte("to the old inbox")}); err != nil {
		t.Errorf("Send to a vanished inbox: %v, want nil", err)
	}
	if err := peer.Send(ctx, addr, &transport.Message{Body: []byte("to the new inbox")}); err != nil {
		t.Fatal(err)
	}
	m, err := c.ReceiveInbox(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Body) != "to the new inbox" {
		t.Errorf("got %q", m.Body)
	}
}

// call runs c.Call in the background.
func call(ctx context.Context, c *amqp.Conn, service string, req *transport.Message) <-chan result {
	out := make(chan result, 1)
	go func() {
		m, err := c.Call(ctx, service, req)
		out <- result{m, err}
	}()
	return out
}

type result struct {
	m   *transport.Message
	err error
}

// readyMessages returns the number of messages ready in queue.
func readyMessages(t *testing.T, url, queue string) int {
	t.Helper()
	_, ch := rawChannel(t, url)
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	return q.Messages
}

// TestReplyHold: Reply with Hold sends the response, which Call returns,
// and leaves the request unacknowledged: closed then, the Listener leaves
// it to the broker, which redelivers it; settled by a second Reply with a
// nil response, it is acked then, and nothing more is sent.
func TestReplyHold(t *testing.T) {
	url := brokertest.AMQP(t)
	ctx := testCtx(t)
	c := dialConn(t, url, amqp.Config{})
	svc := unique("hold")
	lc := transport.ListenConfig{Service: svc}
	newListener := func() *amqp.Listener {
		l, err := amqp.Listen(ctx, url, lc, amqp.Config{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	l1 := newListener()
	deleteQueues(t, url, l1.Queue())

	// Hold, then Close without settling: the request is redelivered.
	rc := call(ctx, c, svc, &transport.Message{Body: []byte("req 1"), ContentType: transport.MediaType})
	d, err := l1.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := &transport.Message{Body: []byte("first"), ContentType: transport.MediaType, Header: http.Header{transport.HeaderStream: {"1"}, transport.HeaderReplyTo: {"server-inbox"}}}
	if err := l1.Reply(ctx, d, first, transport.Hold); err != nil {
		t.Fatal(err)
	}
	r := <-rc
	if r.err != nil || string(r.m.Body) != "first" || r.m.Header.Get(transport.HeaderStream) != "1" || r.m.Header.Get(transport.HeaderReplyTo) != "server-inbox" {
		t.Fatalf("Call after Hold: %v, %+v", r.err, r.m)
	}
	l1.Close()
	// The broker requeues a closed channel's unacked deliveries before it
	// confirms the close.
	if n := readyMessages(t, url, svc); n != 1 {
		t.Errorf("%d messages ready after closing with a held delivery, want 1 (requeued)", n)
	}
	l2 := newListener()
	d, err = l2.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Redelivered || string(d.Body) != "req 1" {
		t.Fatalf("after Close: got %q redelivered %t, want the held request again", d.Body, d.Redelivered)
	}
	if err := l2.Reply(ctx, d, nil, transport.Ack); err != nil {
		t.Fatal(err)
	}

	// Hold, Hold again, then settle with Reply(nil, Ack): acked only then.
	rc = call(ctx, c, svc, &transport.Message{Body: []byte("req 2"), ContentType: transport.MediaType})
	d, err = l2.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.Redelivered || string(d.Body) != "req 2" {
		t.Fatalf("got %q redelivered %t, want req 2, fresh", d.Body, d.Redelivered)
	}
	if err := l2.Reply(ctx, d, first, transport.Hold); err != nil {
		t.Fatal(err)
	}
	if r := <-rc; r.err != nil || string(r.m.Body) != "first" {
		t.Fatalf("Call after Hold: %v, %+v", r.err, r.m)
	}
	if err := l2.Reply(ctx, d, nil, transport.Hold); err != nil {
		t.Fatal(err)
	}
	if err := l2.Reply(ctx, d, nil, transport.Ack); err != nil {
		t.Fatal(err)
	}
	// One more exchange on the same paths: a second response to the held
	// request would reach the Conn before this one and be discarded.
	rc = call(ctx, c, svc, &transport.Message{Body: []byte("req 3"), ContentType: transport.MediaType})
	d, err = l2.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := l2.Reply(ctx, d, &transport.Message{Body: []byte("third"), ContentType: transport.MediaType}, transport.Ack); err != nil {
		t.Fatal(err)
	}
	if r := <-rc; r.err != nil || string(r.m.Body) != "third" {
		t.Fatalf("third Call: %v, %+v", r.err, r.m)
	}
	if n := c.DiscardedReplies(); n != 0 {
		t.Errorf("%d replies discarded, want 0: the held request was answered once", n)
	}
	l2.Close()
	if n := readyMessages(t, url, svc); n != 0 {
		t.Errorf("%d messages ready after closing, want 0: the held request was acked at its last Reply", n)
	}
}

// TestHeaderRoundTrip: Call carries req.Header to the Listener's delivery
// (with Httpbus-Deadline; Httpbus-Version 1 is left out, WIRE.md §2), and
// Reply carries resp.Header back to Call's result.
func TestHeaderRoundTrip(t *testing.T) {
	url := brokertest.AMQP(t)
	ctx := testCtx(t)
	c := dialConn(t, url, amqp.Config{})
	l := listen(t, url, amqp.Config{})
	svc := l.Queue() // no queue prefix: the service name
	deadline := time.Now().Add(time.Minute).Truncate(time.Millisecond)
	dctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	reqHeader := http.Header{transport.HeaderReplyTo: {"caller-inbox"}, transport.HeaderStream: {"9"}, "X-App": {"1"}}
	rc := call(dctx, c, svc, &transport.Message{Body: []byte("frame"), ContentType: transport.MediaType, Header: reqHeader})
	d, err := l.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := http.Header{
		transport.HeaderDeadline: {transport.FormatDeadline(deadline)},
	}
	for k, v := range reqHeader {
		want[k] = v
	}
	if !headerEqual(d.Header, want) {
		t.Errorf("delivery header %v, want %v", d.Header, want)
	}
	if !d.Deadline.Equal(deadline) {
		t.Errorf("delivery deadline %v, want %v", d.Deadline, deadline)
	}
	respHeader := http.Header{transport.HeaderStream: {"9"}, transport.HeaderSeq: {"0"}, transport.HeaderControl: {"continue"}}
	if err := l.Reply(ctx, d, &transport.Message{Body: []byte("resp"), ContentType: transport.MediaType, Header: respHeader}, transport.Ack); err != nil {
		t.Fatal(err)
	}
	r := <-rc
	if r.err != nil {
		t.Fatal(r.err)
	}
	want = http.Header{}
	for k, v := range respHeader {
		want[k] = v
	}
	if !headerEqual(r.m.Header, want) || !bytes.Equal(r.m.Body, []byte("resp")) {
		t.Errorf("reply %q header %v, want %v", r.m.Body, r.m.Header, want)
	}

	// Without headers or deadline the fast path carries no headers table.
	rc = call(context.Background(), c, svc, &transport.Message{Body: []byte("frame"), ContentType: transport.MediaType})
	if d, err = l.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if len(d.Header) != 0 {
		t.Errorf("delivery header %v, want none", d.Header)
	}
	if err := l.Reply(ctx, d, &transport.Message{Body: []byte("resp"), ContentType: transport.MediaType}, transport.Ack); err != nil {
		t.Fatal(err)
	}
	if r := <-rc; r.err != nil || len(r.m.Header) != 0 {
		t.Errorf("reply: %v, header %v, want none", r.err, r.m.Header)
	}
}

func headerEqual(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w := b[k]
		if len(v) != len(w) {
			return false
		}
		for i := range v {
			if v[i] != w[i] {
				return false
			}
		}
	}
	return true
}

// TestHoldNotCoveredByCoalescedAcks: deliveries newer than a held one are
// acked (coalesced acks stop below it), and the held one is not: closed,
// the Listener leaves exactly the held request to be redelivered.
func TestHoldNotCoveredByCoalescedAcks(t *testing.T) {
	url := brokertest.AMQP(t)
	ctx := testCtx(t)
	c := dialConn(t, url, amqp.Config{})
	l := listen(t, url, amqp.Config{})
	svc := l.Queue()
	rc := call(ctx, c, svc, &transport.Message{Body: []byte("held"), ContentType: transport.MediaType})
	held, err := l.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Reply(ctx, held, &transport.Message{Body: []byte("first")}, transport.Hold); err != nil {
		t.Fatal(err)
	}
	if r := <-rc; r.err != nil {
		t.Fatal(r.err)
	}
	for i := range 20 {
		rc := call(ctx, c, svc, &transport.Message{Body: []byte("newer " + strconv.Itoa(i)), ContentType: transport.MediaType})
		d, err := l.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Reply(ctx, d, &transport.Message{Body: []byte("ok")}, transport.Ack); err != nil {
			t.Fatal(err)
		}
		if r := <-rc; r.err != nil {
			t.Fatal(r.err)
		}
	}
	l.Close()
	if n := readyMessages(t, url, svc); n != 1 {
		t.Fatalf("%d messages ready after Close, want 1: the held one", n)
	}
	l2, err := amqp.Listen(ctx, url, transport.ListenConfig{Service: svc}, amqp.Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	d, err := l2.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(d.Body) != "held" || !d.Redelivered {
		t.Errorf("redelivered %q (flag %t), want the held request", d.Body, d.Redelivered)
	}
	if err := l2.Reply(ctx, d, nil, transport.Ack); err != nil {
		t.Fatal(err)
	}
}

// TestStreamPartBytes: amqp cuts stream parts of 128 KiB (StreamPartBytes,
// below transport.LargePartBytes: larger parts were slower through
// RabbitMQ) both ways through the broker, once the receiver grants credit
// in bytes: the largest part a caller's inbox receives on a 6 MiB download,
// and a server's inbox on a 6 MiB upload.
func TestStreamPartBytes(t *testing.T) {
	url := brokertest.AMQP(t)
	const size = 6 << 20
	const want = 128 << 10
	lc := transport.ListenConfig{Service: unique("parts")}
	ctx := testCtx(t)
	l, err := amqp.Listen(ctx, url, lc, amqp.Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	deleteQueues(t, url, l.Queue(), l.Queue()+amqp.NotifyQueueSuffix)
	sl := &listenerParts{Listener: l}
	uploaded := make(chan int64, 1)
	srv := &transport.Server{Logger: testLogger(t), Handler: transporttest.PartBytesHandler(size, uploaded)}
	go srv.Serve(sl)
	t.Cleanup(func() { srv.Close(); l.Close() })
	cp := &connParts{Conn: dialConn(t, url, amqp.Config{})}
	if cp.StreamPartBytes() != want || l.StreamPartBytes() != want {
		t.Fatalf("StreamPartBytes: Conn %d, Listener %d, want %d", cp.StreamPartBytes(), l.StreamPartBytes(), want)
	}
	client := &http.Client{Transport: transport.NewRoundTripper(cp)}
	transporttest.CheckPartBytes(t, client, lc.Service, size, want, &cp.LargestPart, &sl.LargestPart, uploaded)
}

// connParts is a Conn that records the largest message its inbox received.
type connParts struct {
	*amqp.Conn
	transporttest.LargestPart
}

func (c *connParts) ReceiveInbox(ctx context.Context) (*transport.Message, error) {
	return c.See(c.Conn.ReceiveInbox(ctx))
}

// listenerParts is a Listener that records the largest message its inbox
// received.
type listenerParts struct {
	*amqp.Listener
	transporttest.LargestPart
}

func (l *listenerParts) ReceiveInbox(ctx context.Context) (*transport.Message, error) {
	return l.See(l.Listener.ReceiveInbox(ctx))
}
