package amqp_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/httpbus/httpbus/amqp"
	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/transport"
)

// prefetchSeen is a Listener that reports the Server's SetPrefetch call.
type prefetchSeen struct {
	*amqp.Listener
	seen chan int
}

func (l prefetchSeen) SetPrefetch(n int) {
	l.Listener.SetPrefetch(n)
	l.seen <- n
}

// With Server.MaxInFlight 1 the broker hands each instance one request at
// a time, so a fast instance serves nearly all requests while a slow one is
// busy; with the old fixed prefetch of 128 (still what an explicit
// prefetch= in the URL gives) they split about 5/5.
func TestPrefetchFollowsMaxInFlight(t *testing.T) {
	url := brokertest.AMQP(t)
	t.Run("default", func(t *testing.T) {
		served := slowAndFast(t, url)
		if served["fast"] < 8 {
			t.Fatalf("fast instance served %d of 10 (%v), want at least 8", served["fast"], served)
		}
	})
	t.Run("explicit prefetch in the URL wins", func(t *testing.T) {
		served := slowAndFast(t, url+"?prefetch=128")
		if served["slow"] < 4 {
			t.Fatalf("slow instance served %d of 10 (%v), want at least 4 with prefetch 128", served["slow"], served)
		}
	})
}

// slowAndFast serves one service with two instances at MaxInFlight 1, one
// taking 500 ms per request and one 50 ms, sends them 10 requests at once and
// returns how many each served.
func slowAndFast(t *testing.T, url string) map[string]int {
	service := unique("prefetch")
	deleteQueues(t, url, service)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, inst := range []struct {
		name  string
		delay time.Duration
	}{{"slow", 500 * time.Millisecond}, {"fast", 50 * time.Millisecond}} {
		l, err := amqp.Listen(ctx, url, transport.ListenConfig{Service: service}, amqp.Config{Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		pl := prefetchSeen{Listener: l, seen: make(chan int, 1)}
		srv := &transport.Server{MaxInFlight: 1, Logger: testLogger(t), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(inst.delay) // the handler's work
			w.Header().Set("Instance", inst.name)
		})}
		go srv.Serve(pl)
		t.Cleanup(func() {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
			l.Close()
		})
		if n := <-pl.seen; n != 1 {
			t.Fatalf("SetPrefetch(%d), want 1", n)
		}
	}
	client := transport.NewClient(dialConn(t, url, amqp.Config{}))
	served := countInstances(t, ctx, client, "http://"+service+"/", 10)
	t.Logf("served: %v", served)
	return served
}

// countInstances sends n concurrent GETs to url and counts the responses by
// their Instance header.
func countInstances(t *testing.T, ctx context.Context, client *http.Client, url string, n int) map[string]int {
	t.Helper()
	var mu sync.Mutex
	served := map[string]int{}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
			resp, err := client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			served[resp.Header.Get("Instance")]++
			mu.Unlock()
		})
	}
	wg.Wait()
	return served
}
