package tcp_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/httpbus/httpbus/tcp"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// harness gives each service one loopback address; a second server of the
// same service joins it with SO_REUSEPORT, so the kernel shares connections
// between them. Each subscribing service is one subscriber address.
type harness struct {
	mu     sync.Mutex
	addrs  map[string]string   // service → host:port
	topics map[string][]string // topic → addresses
}

func (h *harness) listen(t testing.TB, cfg transport.ListenConfig) transport.Listener {
	h.mu.Lock()
	defer h.mu.Unlock()
	addr, shared := h.addrs[cfg.Service]
	if !shared {
		addr = "127.0.0.1:0"
	}
	l, err := tcp.Listen(t.Context(), "tcp://"+addr, transport.ListenConfig{Topics: cfg.Topics}, tcp.Config{ReusePort: true})
	if err != nil {
		t.Fatal(err)
	}
	if !shared {
		addr = l.Addr().String()
		h.addrs[cfg.Service] = addr
		for _, topic := range cfg.Topics {
			h.topics[topic] = append(h.topics[topic], addr)
		}
	}
	return l
}

func (h *harness) dial(t testing.TB) transport.Conn {
	h.mu.Lock()
	subs := map[string][]string{}
	for k, v := range h.topics {
		subs[k] = append([]string(nil), v...)
	}
	h.mu.Unlock()
	c, err := tcp.NewConn(t.Context(), tcp.Config{Subscribers: subs})
	if err != nil {
		t.Fatal(err)
	}
	c.Resolve = func(service string) (string, error) {
		h.mu.Lock()
		defer h.mu.Unlock()
		if a, ok := h.addrs[service]; ok {
			return a, nil
		}
		return "", fmt.Errorf("no address for service %q: %w", service, transport.ErrNoResponders)
	}
	return c
}

func TestConformance(t *testing.T) {
	h := &harness{addrs: map[string]string{}, topics: map[string][]string{}}
	transporttest.Run(t, transporttest.Harness{Listen: h.listen, Dial: h.dial})
}

// With MaxInFlight 1 a pushing listener still serves, one request at a time
// (the receive loop must not hold the only slot while it waits).
func TestMaxInFlightOne(t *testing.T) {
	l, err := tcp.Listen(t.Context(), "tcp://127.0.0.1:0", transport.ListenConfig{}, tcp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var running, peak atomic.Int32
	srv := &transport.Server{MaxInFlight: 1, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		io.WriteString(w, "ok")
	})}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())
	conn, err := tcp.NewConn(t.Context(), tcp.Config{})
	if err != nil {
		t.Fatal(err)
	}
	conn.Addr = l.Addr().String()
	defer conn.Close()
	client := &http.Client{Transport: transport.NewRoundTripper(conn), Timeout: 5 * time.Second}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get("http://svc/")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("status %d", resp.StatusCode)
			}
		}()
	}
	wg.Wait()
	if p := peak.Load(); p != 1 {
		t.Errorf("%d handlers ran at once, want 1", p)
	}
}

// TestDifferential compares what callers and handlers see through tcp with
// net/http (transporttest.RunDifferential).
func TestDifferential(t *testing.T) {
	h := &harness{addrs: map[string]string{}, topics: map[string][]string{}}
	transporttest.RunDifferential(t, transporttest.Harness{Listen: h.listen, Dial: h.dial})
}
