package tcp_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/httpbus/httpbus/tcp"
	"github.com/httpbus/httpbus/transport"
)

// TestListenDial: the package's URL openers take a Config that the URL's
// options override, and lc.Service restricts the Hosts served.
func TestListenDial(t *testing.T) {
	ctx := t.Context()
	l, err := tcp.Listen(ctx, "tcp://127.0.0.1:0?max_body_bytes=4", transport.ListenConfig{Service: "orders"}, tcp.Config{MaxBodyBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	srv := &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})

	c, err := tcp.Dial(ctx, "tcp://"+l.Addr().String(), tcp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client := transport.NewClient(c)
	for _, tc := range []struct {
		url, body string
		want      int
	}{
		{"http://orders/", "1234", http.StatusOK},
		{"http://orders/", "12345", http.StatusRequestEntityTooLarge}, // max_body_bytes=4 beat Config's 1 MiB
		{"http://billing/", "", http.StatusServiceUnavailable},        // lc.Service
	} {
		resp, err := client.Post(tc.url, "text/plain", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("POST %s with %d bytes: %d, want %d", tc.url, len(tc.body), resp.StatusCode, tc.want)
		}
	}

	for _, bad := range []string{"nats://127.0.0.1:0", "tcp://", "tcp://127.0.0.1:0?nope=1"} {
		if l, err := tcp.Listen(ctx, bad, transport.ListenConfig{}, tcp.Config{}); err == nil {
			l.Close()
			t.Errorf("Listen(%q) succeeded", bad)
		}
	}
}

// TestRequestAfterDrain: a request that reaches the Listener after Drain
// began (read on a connection that was idle then, or accepted before the
// socket closed) is answered 503 without reaching the Server, in push and
// in pull mode. CI once saw the conformance suite's Shutdown case serve
// such a request: net/http closes idle connections a little after Shutdown
// starts, not at once.
func TestRequestAfterDrain(t *testing.T) {
	for _, push := range []bool{true, false} {
		l, err := tcp.Listen(t.Context(), "tcp://127.0.0.1:0", transport.ListenConfig{}, tcp.Config{})
		if err != nil {
			t.Fatal(err)
		}
		served := false
		if push {
			l.Push(func(*transport.Delivery) { served = true })
		}
		if err := l.Drain(); err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		l.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "http://orders/after", nil))
		if served || w.Code != http.StatusServiceUnavailable || w.Header().Get(transport.HeaderError) == "" {
			t.Errorf("push %v: after Drain, status %d, %s %q, served %v; want 503 with the reason, not served",
				push, w.Code, transport.HeaderError, w.Header().Get(transport.HeaderError), served)
		}
		l.Close()
	}
}
