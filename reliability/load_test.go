// Package reliability holds the load suite: every backend, through its URL,
// carries a large number of requests at 64 in flight, each answered with its
// own response, with memory and goroutines back to their baseline after.
//
// It runs when HTTPBUS_RELIABILITY=1 (CI sets it, without -race: the race
// detector multiplies the cost of a million requests) and otherwise skips,
// saying so. HTTPBUS_RELIABILITY_SCALE divides the request counts (for a
// quick local run). Broker addresses come from internal/brokertest.
package reliability

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sync/errgroup"

	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/transport"

	_ "github.com/httpbus/httpbus/amqp"
	_ "github.com/httpbus/httpbus/inmem"
	_ "github.com/httpbus/httpbus/nats"
	_ "github.com/httpbus/httpbus/stomp"
	_ "github.com/httpbus/httpbus/tcp"
)

const inFlight = 64

func enabled(t *testing.T) int {
	t.Helper()
	if os.Getenv("HTTPBUS_RELIABILITY") != "1" {
		t.Skip("load suite: set HTTPBUS_RELIABILITY=1 to run it (CI does)")
	}
	scale := 1
	if v := os.Getenv("HTTPBUS_RELIABILITY_SCALE"); v != "" {
		scale, _ = strconv.Atoi(v)
		if scale < 1 {
			scale = 1
		}
	}
	return scale
}

func withQuery(raw string, kv ...string) string {
	u, err := url.Parse(raw)
	if err != nil {
		panic(err)
	}
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// result is what one load run measured, for RELIABILITY.md.
type result struct {
	sent, answered, errors int64
	elapsed                time.Duration
}

// load serves an echo handler on listenURL and sends n requests from
// inFlight concurrent callers through dialURL, each with its own body, and
// checks that each response is its own.
func load(t *testing.T, listenURL, dialURL, service string, n int) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	l, err := transport.Listen(ctx, listenURL)
	if err != nil {
		t.Fatal(err)
	}
	srv := &transport.Server{MaxInFlight: inFlight, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Path", r.URL.Path)
		io.Copy(w, r.Body)
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	conn, err := transport.Dial(ctx, dialURL)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: transport.NewRoundTripper(conn)}

	var res result
	var next atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	for range inFlight {
		g.Go(func() error {
			for {
				i := next.Add(1)
				if i > int64(n) {
					return nil
				}
				atomic.AddInt64(&res.sent, 1)
				id := strconv.FormatInt(i, 10)
				rctx, rcancel := context.WithTimeout(gctx, 30*time.Second)
				req, _ := http.NewRequestWithContext(rctx, "POST", "http://"+service+"/r/"+id, strings.NewReader("body-"+id))
				resp, err := client.Do(req)
				if err != nil {
					rcancel()
					atomic.AddInt64(&res.errors, 1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				rcancel()
				if resp.StatusCode != 200 || string(b) != "body-"+id || resp.Header.Get("X-Path") != "/r/"+id {
					atomic.AddInt64(&res.errors, 1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("request %s: %d %q %s", id, resp.StatusCode, b, resp.Header.Get(transport.HeaderError)))
					continue
				}
				atomic.AddInt64(&res.answered, 1)
			}
		})
	}
	g.Wait()
	res.elapsed = time.Since(start)

	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	<-served
	conn.Close()
	if c, ok := http.DefaultTransport.(*http.Transport); ok {
		c.CloseIdleConnections()
	}

	t.Logf("%s: %d sent, %d answered, %d errors in %v (%.0f req/s)", service, res.sent, res.answered, res.errors, res.elapsed.Round(time.Millisecond), float64(res.answered)/res.elapsed.Seconds())
	if res.errors > 0 || res.answered != int64(n) {
		t.Errorf("%d of %d requests failed or mismatched; first: %v", res.errors, n, firstErr.Load())
	}
	return res
}

// baseline checks that goroutines and heap return to where they were.
func baseline(t *testing.T) {
	t.Helper()
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	opts := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		if err := goleak.Find(opts); err != nil {
			t.Errorf("goroutines not back to baseline: %v", err)
		}
		var after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&after)
		grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		t.Logf("heap: %d KiB before, %d KiB after (%+d KiB)", before.HeapAlloc>>10, after.HeapAlloc>>10, grew>>10)
		if grew > 64<<20 {
			t.Errorf("heap grew by %d MiB after the run", grew>>20)
		}
	})
}

func TestLoadInmem(t *testing.T) {
	scale := enabled(t)
	baseline(t)
	load(t, "mem://load-inmem", "mem://", "load-inmem", 1_000_000/scale)
}

func TestLoadTCP(t *testing.T) {
	scale := enabled(t)
	baseline(t)
	load(t, "tcp://127.0.0.1:18181", "tcp://127.0.0.1:18181", "load-tcp", 200_000/scale)
}

func TestLoadNATS(t *testing.T) {
	scale := enabled(t)
	u := brokertest.NATS(t)
	baseline(t)
	load(t, withQuery(u, "service", "load-nats"), u, "load-nats", 1_000_000/scale)
}

func TestLoadAMQP(t *testing.T) {
	scale := enabled(t)
	u := brokertest.AMQP(t)
	baseline(t)
	load(t, withQuery(u, "service", "load-amqp"), u, "load-amqp", 200_000/scale)
}

func TestLoadSTOMPActiveMQ(t *testing.T) {
	scale := enabled(t)
	u := "stomp://" + brokertest.STOMPActiveMQ(t)
	baseline(t)
	load(t, withQuery(u, "service", "load-stomp-amq"), u, "load-stomp-amq", 200_000/scale)
}

func TestLoadSTOMPRabbitMQ(t *testing.T) {
	scale := enabled(t)
	u := "stomp://" + brokertest.STOMPRabbitMQ(t)
	baseline(t)
	load(t, withQuery(u, "service", "load-stomp-rmq"), u, "load-stomp-rmq", 200_000/scale)
}
