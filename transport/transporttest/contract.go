package transporttest

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/httpbus/httpbus/transport"
)

// The contract cases call a backend's Listener, Conn and Streamer directly,
// as fstest.TestFS calls an fs.FS: what the core relies on, method by
// method, with no Server in between (so a Pusher is driven through
// Receive, as before the Server's first Push).

func (s *suite) pull(t *testing.T, svc string) transport.Listener {
	t.Helper()
	l := s.h.Listen(t, transport.ListenConfig{Service: svc})
	t.Cleanup(func() { l.Close() })
	return l
}

// receive is l.Receive, skipping the case for a native HTTP delivery (tcp),
// which the Server answers through its ResponseWriter, not with frames.
func receive(ctx context.Context, t *testing.T, l transport.Listener) *transport.Delivery {
	t.Helper()
	d, err := l.Receive(ctx)
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if d.ResponseWriter != nil {
		d.ResponseWriter.WriteHeader(http.StatusNoContent)
		l.Reply(ctx, d, nil, transport.Ack)
		t.Skip("the backend delivers native HTTP requests (a ResponseWriter, not frames); Reply only settles them")
	}
	return d
}

func frame(t *testing.T, svc, path string) *transport.Message {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+svc+path, nil)
	b, err := transport.EncodeRequest(req, svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &transport.Message{Body: b, ContentType: transport.MediaType}
}

func answer(t *testing.T, text string) *transport.Message {
	t.Helper()
	b, err := transport.EncodeResponse(200, http.Header{"Content-Type": {"text/plain"}}, []byte(text), "GET")
	if err != nil {
		t.Fatal(err)
	}
	return &transport.Message{Body: b, ContentType: transport.MediaType}
}

type callResult struct {
	m   *transport.Message
	err error
}

func (s *suite) call(ctx context.Context, c transport.Conn, svc string, m *transport.Message) chan callResult {
	ch := make(chan callResult, 1)
	go func() {
		r, err := c.Call(ctx, svc, m)
		ch <- callResult{r, err}
	}()
	return ch
}

func responseText(t *testing.T, m *transport.Message) string {
	t.Helper()
	resp, err := transport.DecodeResponse(m.Body, nil, transport.Limits{})
	if err != nil {
		t.Fatalf("decode response: %v", err)
	}
	b := make([]byte, 64)
	n, _ := resp.Body.Read(b)
	return string(b[:n])
}

// taken is a Call in flight whose request a listener has received.
type taken struct {
	t   *testing.T
	ctx context.Context
	svc string
	l   transport.Listener
	res chan callResult
	d   *transport.Delivery
}

// take starts a Call of path on a new service with broker headers h and
// receives it on the service's listener.
func (s *suite) take(t *testing.T, prefix, path string, h http.Header) *taken {
	t.Helper()
	svc := unique(prefix)
	l := s.pull(t, svc)
	_, conn := s.client(t)
	ctx := s.ctx(t)
	m := frame(t, svc, path)
	m.Header = h
	res := s.call(ctx, conn, svc, m)
	return &taken{t: t, ctx: ctx, svc: svc, l: l, res: res, d: receive(ctx, t, l)}
}

// reply answers (resp "" for none) and settles the delivery as disp.
func (c *taken) reply(text string, disp transport.Disposition) {
	c.t.Helper()
	var m *transport.Message
	if text != "" {
		m = answer(c.t, text)
	}
	if err := c.l.Reply(c.ctx, c.d, m, disp); err != nil {
		c.t.Fatalf("Reply(%q, %v): %v", text, disp, err)
	}
}

// answered checks that the Call returned the response text.
func (c *taken) answered(text string) {
	c.t.Helper()
	if r := <-c.res; r.err != nil || responseText(c.t, r.m) != text {
		c.t.Fatalf("Call: %v, want the response %q", r.err, text)
	}
}

// contractReceiveReply: Receive returns the request sent by Call, with its
// service, body and broker headers; Reply(Ack) answers that Call.
func (s *suite) contractReceiveReply(t *testing.T) {
	c := s.take(t, "c-rr", "/x", http.Header{"Httpbus-Test": {"kept"}})
	if c.d.Service != c.svc || c.d.Topic != "" || !transport.IsFrame(c.d.ContentType) {
		t.Errorf("delivery: service %q topic %q content type %q", c.d.Service, c.d.Topic, c.d.ContentType)
	}
	if _, ok := c.l.(transport.Streamer); ok && c.d.Header.Get("Httpbus-Test") != "kept" {
		t.Errorf("broker header Httpbus-Test lost on the way: %v", c.d.Header)
	}
	c.reply("one", transport.Ack)
	c.answered("one")
}

// contractHold: Reply(Hold) answers the Call at once; the later
// Reply(nil, Ack) only settles.
func (s *suite) contractHold(t *testing.T) {
	c := s.take(t, "c-hold", "/h", nil)
	c.reply("held", transport.Hold)
	c.answered("held")
	c.reply("", transport.Ack)
}

// contractRequeue: Reply(nil, Requeue) returns the request to the broker;
// it is received again, marked Redelivered, and the Call gets the answer
// to the second delivery.
func (s *suite) contractRequeue(t *testing.T) {
	c := s.take(t, "c-requeue", "/r", nil)
	c.reply("", transport.Requeue)
	if why := s.h.Features.RequeueAtClose; why != "" {
		t.Logf("requeued at close: %s", why)
		l2 := s.pull(t, c.svc)
		c.l.Close()
		c.l = l2
	}
	c.d = receive(c.ctx, t, c.l)
	if !c.d.Redelivered {
		t.Error("a requeued request came back without Redelivered")
	}
	c.reply("second", transport.Ack)
	c.answered("second")
}

// contractReject: Reply(resp, Reject) answers the Call and settles the
// request without requeue.
func (s *suite) contractReject(t *testing.T) {
	c := s.take(t, "c-reject", "/bad", nil)
	c.reply("refused", transport.Reject)
	c.answered("refused")
}

// contractDrainClose: after Drain, Receive ends with ErrClosed once the
// deliveries already taken are returned; after Close every method fails
// with ErrClosed, on both sides.
func (s *suite) contractDrainClose(t *testing.T) {
	svc := unique("c-close")
	l := s.pull(t, svc)
	conn := s.h.Dial(t)
	ctx := s.ctx(t)
	if dr, ok := l.(transport.Drainer); ok {
		if err := dr.Drain(); err != nil {
			t.Fatalf("Drain: %v", err)
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := l.Receive(rctx)
		cancel()
		if !errors.Is(err, transport.ErrClosed) {
			t.Errorf("Receive after Drain with nothing taken: %v, want ErrClosed", err)
		}
	}
	if st, ok := l.(transport.Streamer); ok {
		if _, err := st.Inbox(ctx); err != nil {
			t.Errorf("Inbox after Drain: %v (a drained listener still answers its streams)", err)
		}
	}
	if err := l.Close(); err != nil && !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Close: %v", err)
	}
	if _, err := l.Receive(ctx); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Receive after Close: %v, want ErrClosed", err)
	}
	if st, ok := l.(transport.Streamer); ok {
		if _, err := st.ReceiveInbox(ctx); !errors.Is(err, transport.ErrClosed) {
			t.Errorf("ReceiveInbox after Close: %v, want ErrClosed", err)
		}
	}
	conn.Close()
	if _, err := conn.Call(ctx, svc, frame(t, svc, "/")); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Conn.Call after Close: %v, want ErrClosed", err)
	}
	if st, ok := conn.(transport.Streamer); ok {
		if err := st.Send(ctx, "nowhere", &transport.Message{ContentType: transport.MediaType}); !errors.Is(err, transport.ErrClosed) {
			t.Errorf("Conn.Send after Close: %v, want ErrClosed", err)
		}
	}
}

// contractInbox: a message sent to an endpoint's inbox arrives there, with
// its body and headers, from the other side.
func (s *suite) contractInbox(t *testing.T) {
	svc := unique("c-inbox")
	l := s.pull(t, svc)
	_, conn := s.client(t)
	lst, ok1 := l.(transport.Streamer)
	cst, ok2 := conn.(transport.Streamer)
	if !ok1 || !ok2 {
		t.Skip("the backend does not implement transport.Streamer")
	}
	ctx := s.ctx(t)
	for _, c := range []struct {
		name     string
		from, to transport.Streamer
	}{{"conn to listener", cst, lst}, {"listener to conn", lst, cst}} {
		addr, err := c.to.Inbox(ctx)
		if err != nil {
			t.Fatalf("%s: Inbox: %v", c.name, err)
		}
		h := http.Header{transport.HeaderStream: {"s-1"}, transport.HeaderSeq: {"7"}, transport.HeaderReplyTo: {"somewhere"}}
		if err := c.from.Send(ctx, addr, &transport.Message{Body: []byte("part"), ContentType: transport.MediaType, Header: h}); err != nil {
			t.Fatalf("%s: Send: %v", c.name, err)
		}
		for {
			m, err := c.to.ReceiveInbox(ctx)
			if err != nil {
				t.Fatalf("%s: ReceiveInbox: %v", c.name, err)
			}
			if m.Header.Get(transport.HeaderStream) != "s-1" {
				continue // a core stream's message on the shared inbox
			}
			if string(m.Body) != "part" || m.Header.Get(transport.HeaderSeq) != "7" || m.Header.Get(transport.HeaderReplyTo) != "somewhere" {
				t.Errorf("%s: got %q with headers %v", c.name, m.Body, m.Header)
			}
			break
		}
	}
}
