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

// contractReceiveReply: Receive returns the request sent by Call, with its
// service, body and broker headers; Reply(Ack) answers that Call.
func (s *suite) contractReceiveReply(t *testing.T) {
	svc := unique("c-rr")
	l := s.pull(t, svc)
	_, conn := s.client(t)
	ctx := s.ctx(t)
	m := frame(t, svc, "/x")
	m.Header = http.Header{"Httpbus-Test": {"kept"}}
	res := s.call(ctx, conn, svc, m)
	d := receive(ctx, t, l)
	if d.Service != svc || d.Topic != "" || !transport.IsFrame(d.ContentType) {
		t.Errorf("delivery: service %q topic %q content type %q", d.Service, d.Topic, d.ContentType)
	}
	if _, ok := l.(transport.Streamer); ok && d.Header.Get("Httpbus-Test") != "kept" {
		t.Errorf("broker header Httpbus-Test lost on the way: %v", d.Header)
	}
	if err := l.Reply(ctx, d, answer(t, "one"), transport.Ack); err != nil {
		t.Fatalf("Reply: %v", err)
	}
	r := <-res
	if r.err != nil || responseText(t, r.m) != "one" {
		t.Fatalf("Call: %v", r.err)
	}
}

// contractHold: Reply(Hold) answers the Call at once; the later
// Reply(nil, Ack) only settles.
func (s *suite) contractHold(t *testing.T) {
	svc := unique("c-hold")
	l := s.pull(t, svc)
	_, conn := s.client(t)
	ctx := s.ctx(t)
	res := s.call(ctx, conn, svc, frame(t, svc, "/h"))
	d := receive(ctx, t, l)
	if err := l.Reply(ctx, d, answer(t, "held"), transport.Hold); err != nil {
		t.Fatalf("Reply(Hold): %v", err)
	}
	r := <-res
	if r.err != nil || responseText(t, r.m) != "held" {
		t.Fatalf("Call after Hold: %v", r.err)
	}
	if err := l.Reply(ctx, d, nil, transport.Ack); err != nil {
		t.Fatalf("Reply(nil, Ack) after Hold: %v", err)
	}
}

// contractRequeue: Reply(nil, Requeue) returns the request to the broker;
// it is received again, marked Redelivered, and the Call gets the answer
// to the second delivery.
func (s *suite) contractRequeue(t *testing.T) {
	svc := unique("c-requeue")
	l := s.pull(t, svc)
	_, conn := s.client(t)
	ctx := s.ctx(t)
	res := s.call(ctx, conn, svc, frame(t, svc, "/r"))
	d := receive(ctx, t, l)
	if err := l.Reply(ctx, d, nil, transport.Requeue); err != nil {
		t.Fatalf("Reply(nil, Requeue): %v", err)
	}
	if why := s.h.Features.RequeueAtClose; why != "" {
		t.Logf("requeued at close: %s", why)
		l2 := s.pull(t, svc)
		l.Close()
		l = l2
	}
	d2 := receive(ctx, t, l)
	if !d2.Redelivered {
		t.Error("a requeued request came back without Redelivered")
	}
	if err := l.Reply(ctx, d2, answer(t, "second"), transport.Ack); err != nil {
		t.Fatalf("Reply: %v", err)
	}
	if r := <-res; r.err != nil || responseText(t, r.m) != "second" {
		t.Fatalf("Call: %v", r.err)
	}
}

// contractReject: Reply(resp, Reject) answers the Call and settles the
// request without requeue.
func (s *suite) contractReject(t *testing.T) {
	svc := unique("c-reject")
	l := s.pull(t, svc)
	_, conn := s.client(t)
	ctx := s.ctx(t)
	res := s.call(ctx, conn, svc, frame(t, svc, "/bad"))
	d := receive(ctx, t, l)
	if err := l.Reply(ctx, d, answer(t, "refused"), transport.Reject); err != nil {
		t.Fatalf("Reply(Reject): %v", err)
	}
	if r := <-res; r.err != nil || responseText(t, r.m) != "refused" {
		t.Fatalf("Call: %v", r.err)
	}
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
