package transport

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// oneShot is a Listener stub that records one reply (unit level only; the
// real proof is the conformance suite on every backend).
type oneShot struct {
	resp *Message
	disp Disposition
}

func (l *oneShot) Receive(ctx context.Context) (*Delivery, error) { return nil, ErrClosed }
func (l *oneShot) Reply(ctx context.Context, d *Delivery, resp *Message, disp Disposition) error {
	l.resp, l.disp = resp, disp
	return nil
}
func (l *oneShot) Publish(ctx context.Context, topic string, m *Message) error { return nil }
func (l *oneShot) Close() error                                                { return nil }

func serveOne(t *testing.T, srv *Server, d *Delivery) (*http.Response, string, Disposition) {
	t.Helper()
	if srv.Logger == nil {
		srv.Logger = discard
	}
	l := &oneShot{}
	srv.serveDelivery(context.Background(), l, d)
	if l.resp == nil {
		t.Fatal("no reply")
	}
	resp, err := DecodeResponse(l.resp.Body, nil, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b), l.disp
}

func frameOf(t *testing.T, method, target, body string) *Delivery {
	t.Helper()
	r, _ := http.NewRequest(method, "http://x"+target, nil)
	f, err := EncodeRequest(r, "svc", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	return &Delivery{Message: Message{Body: f, ContentType: MediaType}, Service: "svc"}
}

func TestResponseWriterSemantics(t *testing.T) {
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Before", "1")
		w.WriteHeader(http.StatusCreated)
		w.Header().Set("X-After", "ignored, as in net/http")
		w.Write([]byte("<html>a"))
		w.(http.Flusher).Flush()
		w.Write([]byte("b"))
		w.WriteHeader(500) // superfluous: ignored
	})}
	resp, body, disp := serveOne(t, srv, frameOf(t, "GET", "/", ""))
	if resp.StatusCode != 201 || body != "<html>ab" || resp.Header.Get("X-Before") != "1" || resp.Header.Get("X-After") != "" || disp != Ack {
		t.Fatalf("got %d %q %v disp %v", resp.StatusCode, body, resp.Header, disp)
	}
}

func TestContentTypeSniffed(t *testing.T) {
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "<!DOCTYPE html><p>hi")
	})}
	resp, _, _ := serveOne(t, srv, frameOf(t, "GET", "/", ""))
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Fatalf("Content-Type %q, want sniffed text/html", ct)
	}
}

func TestMalformedFrameRejected(t *testing.T) {
	resp, _, disp := serveOne(t, &Server{}, &Delivery{Message: Message{Body: []byte("junk"), ContentType: MediaType}})
	if resp.StatusCode != 400 || disp != Reject || resp.Header.Get(HeaderError) == "" {
		t.Fatalf("got %d disp %v", resp.StatusCode, disp)
	}
}

func TestResponseOverLimit(t *testing.T) {
	srv := &Server{MaxBodyBytes: 10, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, 11))
	})}
	resp, _, _ := serveOne(t, srv, frameOf(t, "GET", "/", ""))
	if resp.StatusCode != 413 {
		t.Fatalf("response over the body limit answered %d, want 413", resp.StatusCode)
	}
}

func TestExpiredNotRun(t *testing.T) {
	ran := false
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ran = true })}
	d := frameOf(t, "GET", "/", "")
	d.Deadline = time.Now().Add(-time.Millisecond)
	resp, _, _ := serveOne(t, srv, d)
	if ran || resp.StatusCode != 504 {
		t.Fatalf("ran=%v status %d", ran, resp.StatusCode)
	}
}

func TestRedeliveredHeader(t *testing.T) {
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get(HeaderRedelivered))
	})}
	d := frameOf(t, "GET", "/", "")
	d.Redelivered = true
	if _, body, _ := serveOne(t, srv, d); body != "true" {
		t.Fatalf("handler saw %s=%q, want true", HeaderRedelivered, body)
	}
}

// TestLazyDeadline: the reply context ends at its deadline (Done closes,
// Err is DeadlineExceeded) whether Done is asked for before or after, and
// at cancel with Canceled.
func TestLazyDeadline(t *testing.T) {
	s := &Server{ReplyTimeout: 30 * time.Millisecond}
	ctx := s.replyContext(context.Background())
	defer ctx.cancel()
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > 30*time.Millisecond {
		t.Fatalf("deadline %v %v", dl, ok)
	}
	if ctx.Err() != nil {
		t.Fatalf("Err %v before the deadline", ctx.Err())
	}
	<-ctx.Done() // the timer starts here and must fire
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err %v after Done, want DeadlineExceeded", ctx.Err())
	}

	ctx = s.replyContext(context.Background())
	cancel := ctx.cancel
	for ctx.Err() == nil { // never asked for Done: Err alone sees the deadline
		runtime.Gosched()
	}
	select {
	case <-ctx.Done():
	default:
		t.Fatal("Done not closed after Err reported the deadline")
	}
	cancel()

	ctx = s.replyContext(context.Background())
	cancel = ctx.cancel
	done := ctx.Done()
	cancel()
	<-done
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatalf("Err %v after cancel, want Canceled", ctx.Err())
	}

	// No deadline (a handler's context when the caller sent none): only
	// cancel ends it.
	lc := &lazyDeadline{Context: context.Background()}
	if _, ok := lc.Deadline(); ok {
		t.Fatal("a zero deadline reported as set")
	}
	done = lc.Done()
	select {
	case <-done:
		t.Fatal("Done closed with no deadline and no cancel")
	default:
	}
	lc.cancel()
	<-done
	if !errors.Is(lc.Err(), context.Canceled) {
		t.Fatalf("Err %v after cancel, want Canceled", lc.Err())
	}

	// The parent's end ends it, seen by Done (watch) and by Err alone.
	for _, askDone := range []bool{true, false} {
		parent, cancelParent := context.WithCancel(context.Background())
		lc := &lazyDeadline{Context: parent, deadline: time.Now().Add(time.Hour)}
		if askDone {
			done = lc.Done()
		}
		cancelParent()
		if askDone {
			<-done
		}
		if !errors.Is(lc.Err(), context.Canceled) {
			t.Fatalf("Err %v after the parent's cancel (Done asked: %v), want Canceled", lc.Err(), askDone)
		}
	}
	// Within slack of the deadline, the parent's end reads as the deadline
	// (tcp: the caller hangs up at its deadline).
	parent, cancelParent := context.WithCancel(context.Background())
	lc = &lazyDeadline{Context: parent, deadline: time.Now().Add(5 * time.Millisecond), slack: time.Second}
	done = lc.Done()
	cancelParent()
	<-done
	if !errors.Is(lc.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err %v after the parent's end within slack, want DeadlineExceeded", lc.Err())
	}
}

// TestServerLeavesFramesAlone: the core reads a received frame's header
// block in place (leanHead, owned), so it must never write into a
// delivery's Body: the strings a handler keeps from r.Header would change
// under it.
func TestServerLeavesFramesAlone(t *testing.T) {
	r, _ := http.NewRequest(http.MethodPost, "http://svc/echo?x=1", nil)
	r.Header.Set("X-Keep", "kept value")
	r.Header.Set("Content-Type", "text/plain")
	frame, err := EncodeRequest(r, "svc", []byte("hello body"))
	if err != nil {
		t.Fatal(err)
	}
	orig := string(frame)
	var kept string
	srv := &Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kept = r.Header.Get("X-Keep")
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Echo", r.Header.Get("X-Keep"))
		w.Write(b)
	})}
	resp, body, _ := serveOne(t, srv, &Delivery{Message: Message{Body: frame, ContentType: MediaType}, Service: "svc"})
	if string(frame) != orig {
		t.Fatalf("the Server wrote into the delivered frame:\n%q\nwas\n%q", frame, orig)
	}
	if kept != "kept value" || body != "hello body" || resp.Header.Get("X-Echo") != "kept value" {
		t.Fatalf("kept %q, body %q, X-Echo %q", kept, body, resp.Header.Get("X-Echo"))
	}
}
