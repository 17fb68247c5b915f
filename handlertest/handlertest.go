// Package handlertest tests an http.Handler through httpbus's in-memory
// transport — the same frame path as production, with no broker:
//
//	svc := handlertest.New(t, mux)
//	resp, err := svc.Client.Get(svc.URL + "/hello")
//
// Every request and response is encoded to a message/http frame and decoded
// again, so a handler that works here sees exactly what a broker would carry.
// Notifications a handler publishes (through Client, or any client of the
// same Bus) can be captured with Capture. Everything is closed at the end
// of the test.
package handlertest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/httpbus/httpbus/inmem"
	"github.com/httpbus/httpbus/transport"
)

// TB is the part of testing.TB that handlertest uses; *testing.T and
// *testing.B satisfy it.
type TB interface {
	Helper()
	Cleanup(func())
	Log(args ...any)
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// Bus is a private in-memory bus for one test: services served on it,
// a client that reaches them, and recorders of notifications.
type Bus struct {
	t      TB
	bus    *inmem.Bus
	conn   *inmem.Conn
	Client *http.Client // reaches every service on the bus: http://<service>/path
}

// NewBus returns an empty bus closed at the end of the test.
func NewBus(t TB) *Bus {
	b := &Bus{t: t, bus: inmem.NewBus()}
	conn, err := b.bus.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	b.conn = conn
	b.Client = transport.NewClient(b.conn)
	t.Cleanup(func() { b.conn.Close() })
	return b
}

// Service is one service under test.
type Service struct {
	*Bus
	Name string // the service name, the host of its URLs
	URL  string // "http://" + Name
}

// New serves h as service "service" on a new Bus and returns it; h also
// receives the notifications of topics.
func New(t TB, h http.Handler, topics ...string) *Service {
	b := NewBus(t)
	return b.Serve("service", h, topics...)
}

// Serve serves h as service name on b, subscribed to topics, with a
// transport.Server whose errors go to t.Log. The server is shut down at the
// end of the test.
func (b *Bus) Serve(name string, h http.Handler, topics ...string) *Service {
	b.t.Helper()
	return b.ServeWith(name, &transport.Server{Handler: h}, topics...)
}

// ServeWith is Serve with a Server the caller configured (limits, in-flight
// bound); srv.Logger defaults to t.Log.
func (b *Bus) ServeWith(name string, srv *transport.Server, topics ...string) *Service {
	b.t.Helper()
	l, err := b.bus.Listen(context.Background(), transport.ListenConfig{Service: name, Topics: topics})
	if err != nil {
		b.t.Fatal(err)
	}
	if srv.Logger == nil {
		w := &logWriter{t: b.t}
		b.t.Cleanup(w.stop)
		srv.Logger = slog.New(slog.NewTextHandler(w, nil))
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	b.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			b.t.Errorf("handlertest: shutdown of %q: %v", name, err)
		}
		if err := <-done; !errors.Is(err, transport.ErrServerClosed) {
			b.t.Errorf("handlertest: serve %q: %v", name, err)
		}
	})
	return &Service{Bus: b, Name: name, URL: "http://" + name}
}

// Notify publishes body as a notification to topic (content type
// text/plain unless body is empty) and fails the test if it is refused.
func (b *Bus) Notify(topic, body string) {
	b.t.Helper()
	req, err := http.NewRequest(transport.MethodNotify, "http://"+topic+"/", strings.NewReader(body))
	if err != nil {
		b.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	}
	resp, err := b.Client.Do(req)
	if err != nil {
		b.t.Fatalf("handlertest: notify %s: %v", topic, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		b.t.Fatalf("handlertest: notify %s: %s", topic, resp.Status)
	}
}

// Notification is one captured notification.
type Notification struct {
	Topic  string
	Path   string
	Header http.Header
	Body   []byte
}

// Recorder captures the notifications published to one topic.
type Recorder struct {
	mu    sync.Mutex
	got   []Notification
	added chan struct{}
}

// Capture subscribes a recorder to topic, as a service of its own, so it
// receives every notification published on the bus from now on.
func (b *Bus) Capture(topic string) *Recorder {
	b.t.Helper()
	r := &Recorder{added: make(chan struct{}, 1)}
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, Notification{Topic: req.Host, Path: req.URL.Path, Header: req.Header, Body: body})
		r.mu.Unlock()
		select {
		case r.added <- struct{}{}:
		default:
		}
	})
	b.Serve(fmt.Sprintf("handlertest-capture-%s-%p", topic, r), h, topic)
	return r
}

// Notifications returns what was captured so far, in arrival order.
func (r *Recorder) Notifications() []Notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Notification(nil), r.got...)
}

// Wait blocks until at least n notifications were captured and returns
// them, or fails the test after timeout.
func (r *Recorder) Wait(t TB, n int, timeout time.Duration) []Notification {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if got := r.Notifications(); len(got) >= n {
			return got
		}
		select {
		case <-r.added:
		case <-deadline.C:
			t.Fatalf("handlertest: %d notifications captured after %v, want %d", len(r.Notifications()), timeout, n)
			return nil
		}
	}
}

// logWriter writes to t.Log until the test's cleanup begins, then to
// stderr: t.Log after a test ends is a data race in package testing.
type logWriter struct {
	mu   sync.Mutex
	t    TB
	done bool
}

func (w *logWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return os.Stderr.Write(p)
	}
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
