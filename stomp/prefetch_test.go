package stomp_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/httpbus/httpbus/transport"
)

// prefetchSeen is a Listener that reports the Server's SetPrefetch call.
type prefetchSeen struct {
	transport.Listener
	seen chan int
}

func (l prefetchSeen) SetPrefetch(n int) {
	l.Listener.(transport.Prefetcher).SetPrefetch(n)
	l.seen <- n
}

// With Server.MaxInFlight 1 each instance subscribes with prefetch 1, so a
// fast instance serves nearly all requests while a slow one is busy; with
// the old fixed prefetch of 128 (still what an explicit prefetch= in the URL
// gives) they split about 5/5.
func TestPrefetchFollowsMaxInFlight(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		t.Run("default", func(t *testing.T) {
			served := slowAndFast(t, b, brokerURL(addr))
			if served["fast"] < 8 {
				t.Fatalf("fast instance served %d of 10 (%v), want at least 8", served["fast"], served)
			}
		})
		t.Run("explicit prefetch in the URL wins", func(t *testing.T) {
			served := slowAndFast(t, b, brokerURL(addr, "prefetch=128"))
			if served["slow"] < 4 {
				t.Fatalf("slow instance served %d of 10 (%v), want at least 4 with prefetch 128", served["slow"], served)
			}
		})
	})
}

// slowAndFast serves one service with two instances at MaxInFlight 1, one
// taking 500 ms per request and one 50 ms, sends them 10 requests at once and
// returns how many each served.
func slowAndFast(t *testing.T, b broker, url string) map[string]int {
	j := newJanitor(t, b)
	service := unique("prefetch")
	for _, inst := range []struct {
		name  string
		delay time.Duration
	}{{"slow", 500 * time.Millisecond}, {"fast", 50 * time.Millisecond}} {
		l := listen(t, j, url, transport.ListenConfig{Service: service})
		pl := prefetchSeen{Listener: l, seen: make(chan int, 1)}
		srv := &transport.Server{MaxInFlight: 1, Logger: testLogger(t), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			time.Sleep(inst.delay) // the handler's work
			w.Header().Set("Instance", inst.name)
		})}
		go srv.Serve(pl)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
		})
		if n := <-pl.seen; n != 1 {
			t.Fatalf("SetPrefetch(%d), want 1", n)
		}
		// A listener that changes its prefetch resubscribes on a new
		// connection: wait until it is back.
		waitState(t, inst.name, l.(transport.StateReporter), transport.StateConnected, 20*time.Second)
	}
	client := transport.NewClient(dial(t, j, url))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	served := map[string]int{}
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+service+"/", nil)
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
	t.Logf("served: %v", served)
	return served
}
