package nats_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/internal/natsserver"
	natstransport "github.com/httpbus/httpbus/nats"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

var serial atomic.Int64

// uniqueName returns a service or topic name no other test (or helper
// sharing the broker) uses.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano(), serial.Add(1))
}

// serve starts a Server on l and shuts it down at cleanup.
func serve(t testing.TB, srv *transport.Server, l transport.Listener) {
	t.Helper()
	if srv.Logger == nil {
		srv.Logger = testLogger(t)
	}
	transporttest.Serve(t, srv, l)
}

func listen(t testing.TB, nc *natsgo.Conn, lc transport.ListenConfig, cfg natstransport.Config) *natstransport.Listener {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	l, err := natstransport.NewListener(t.Context(), nc, lc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func dial(t testing.TB, nc *natsgo.Conn) *natstransport.Conn {
	t.Helper()
	c, err := natstransport.NewConn(t.Context(), nc, natstransport.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// echoID answers with the request's path and body, so that each response
// can be matched to its request.
var echoID = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Path", r.URL.Path)
	w.Write(b)
})

// EnvLoadPerCaller overrides the requests each of TestManyCallers' 64
// callers sends: 15625 makes the reliability run's 1,000,000.
const EnvLoadPerCaller = "HTTPBUS_NATS_LOAD_PER_CALLER"

// TestManyCallers: 64 concurrent callers × 5,000 requests each (500 with
// -short, or HTTPBUS_NATS_LOAD_PER_CALLER), every response matched to its
// request by path and body; afterwards goroutines and heap are back to
// their baseline.
func TestManyCallers(t *testing.T) {
	url := brokertest.NATS(t)
	const callers = 64
	perCaller := 5000
	if testing.Short() {
		perCaller = 500
	}
	if v := os.Getenv(EnvLoadPerCaller); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("%s=%q: want a positive integer", EnvLoadPerCaller, v)
		}
		perCaller = n
	}
	svc := uniqueName("many")
	serve(t, &transport.Server{Handler: echoID, MaxInFlight: 64}, listen(t, connect(t, url), transport.ListenConfig{Service: svc}, natstransport.Config{}))
	client := transport.NewClient(dial(t, connect(t, url)))
	ctx := ctxTimeout(t, 30*time.Minute)
	// Warm up (one request), then take the baseline.
	if resp, err := client.Post("http://"+svc+"/warm", "text/plain", strings.NewReader("warm")); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	baseG, baseHeap := settled()
	var ok, bad atomic.Int64
	var firstErr sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perCaller {
				id := strconv.Itoa(c) + "-" + strconv.Itoa(i)
				req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+svc+"/r/"+id, strings.NewReader("body "+id))
				resp, err := client.Do(req)
				if err != nil {
					bad.Add(1)
					firstErr.Do(func() { t.Errorf("request %s: %v", id, err) })
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != "body "+id || resp.Header.Get("X-Path") != "/r/"+id {
					bad.Add(1)
					firstErr.Do(func() {
						t.Errorf("request %s: status %d, path %q, body %q", id, resp.StatusCode, resp.Header.Get("X-Path"), b)
					})
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	total := int64(callers * perCaller)
	t.Logf("%d callers × %d requests: %d answered and matched, %d failed, in %v (%.0f req/s)", callers, perCaller, ok.Load(), bad.Load(), el.Round(time.Millisecond), float64(ok.Load())/el.Seconds())
	if ok.Load() != total {
		t.Fatalf("%d of %d requests answered and matched", ok.Load(), total)
	}
	// The callers' idle keep-nothing state: goroutines and heap back to the
	// baseline (nats.go and the Server keep no per-request state).
	// Handler goroutines and nats.go's own wind down after the last
	// request: wait for that, up to 10 s. The listener's pool may keep up
	// to MaxIdlePullWorkers waiting where the baseline had one, and one
	// goroutine more is slack, as before.
	g, heap := settled()
	limit := baseG + transport.MaxIdlePullWorkers + 1
	for end := time.Now().Add(10 * time.Second); g > limit && time.Now().Before(end); g, heap = settled() {
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("after the load: %d goroutines (baseline %d), heap %.1f MiB (baseline %.1f MiB)", g, baseG, float64(heap)/(1<<20), float64(baseHeap)/(1<<20))
	if g > limit {
		t.Errorf("%d goroutines after the load, baseline %d", g, baseG)
	}
	if heap > baseHeap+16<<20 {
		t.Errorf("heap %d bytes after the load, baseline %d: more than 16 MiB retained", heap, baseHeap)
	}
}

// settled returns the goroutine count and live heap once in-flight work
// has wound down: goroutines are counted until two readings agree after a
// GC (each reading follows a full collection, not a sleep).
func settled() (goroutines int, heap uint64) {
	var ms runtime.MemStats
	prev := -1
	for range 50 {
		runtime.GC()
		g := runtime.NumGoroutine()
		if g == prev {
			break
		}
		prev = g
		runtime.Gosched()
	}
	runtime.ReadMemStats(&ms)
	return prev, ms.HeapAlloc
}

// TestBurst publishes 10,000 requests at once, raw, to a server that runs
// 8 at a time: the rest wait in the listener's pending buffer, none is
// dropped as a slow consumer, every one is answered, and the goroutine
// count stays bounded by MaxInFlight, not by the burst.
func TestBurst(t *testing.T) {
	url := brokertest.NATS(t)
	const n, inFlight = 10000, 8
	var slow atomic.Int64
	lnc := connect(t, url, natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) {
		if errors.Is(err, natsgo.ErrSlowConsumer) {
			slow.Add(1)
		}
	}))
	svc := uniqueName("burst")
	base := runtime.NumGoroutine()
	var maxG atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g := int64(runtime.NumGoroutine()); g > maxG.Load() {
			maxG.Store(g) // racy max, good enough for a bound
		}
		echoID.ServeHTTP(w, r)
	})
	serve(t, &transport.Server{Handler: h, MaxInFlight: inFlight}, listen(t, lnc, transport.ListenConfig{Service: svc}, natstransport.Config{}))

	cnc := connect(t, url)
	inbox := natsgo.NewInbox()
	replies := make(chan *natsgo.Msg, n)
	sub, err := cnc.ChanSubscribe(inbox, replies)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	subject := natstransport.ServiceSubject("", svc)
	for i := range n {
		id := strconv.Itoa(i)
		frame, err := transport.EncodeRequest(httpRequest("POST", "/b/"+id), svc, []byte(id))
		if err != nil {
			t.Fatal(err)
		}
		m := &natsgo.Msg{Subject: subject, Reply: inbox, Data: frame, Header: natsgo.Header{"Content-Type": {transport.MediaType}}}
		if err := cnc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := cnc.Flush(); err != nil {
		t.Fatal(err)
	}
	seen := make(map[string]bool, n)
	ctx := ctxTimeout(t, 2*time.Minute)
	for len(seen) < n {
		select {
		case m := <-replies:
			resp, err := transport.DecodeResponse(m.Data, nil, transport.Limits{})
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || resp.Header.Get("X-Path") != "/b/"+string(b) {
				t.Fatalf("response %d %q for path %q", resp.StatusCode, b, resp.Header.Get("X-Path"))
			}
			if seen[string(b)] {
				t.Fatalf("request %s answered twice", b)
			}
			seen[string(b)] = true
		case <-ctx.Done():
			t.Fatalf("%d of %d requests answered; slow-consumer errors: %d", len(seen), n, slow.Load())
		}
	}
	if s := slow.Load(); s != 0 {
		t.Errorf("%d slow-consumer errors", s)
	}
	if d, _ := sub.Dropped(); d != 0 {
		t.Errorf("reply subscription dropped %d", d)
	}
	// Serve's loop, the forwarder, inFlight handlers and nats.go's own:
	// a bound independent of n.
	if g := maxG.Load(); g > int64(base+inFlight+32) {
		t.Errorf("goroutines peaked at %d (baseline %d, MaxInFlight %d): not bounded by the in-flight limit", g, base, inFlight)
	}
	t.Logf("%d burst requests answered, 0 dropped; goroutines peaked at %d (baseline %d)", n, maxG.Load(), base)
}

func httpRequest(method, target string) *http.Request {
	r, err := http.NewRequest(method, "http://x"+target, nil)
	if err != nil {
		panic(err)
	}
	return r
}

// TestReconnect restarts an embedded server on the same port: the service
// answers again without restarting anything in the process, and the state
// goes reconnecting → connected.
func TestReconnect(t *testing.T) {
	url, stop, err := natsserver.Start(natsserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() }) // registered first: runs after the connections close
	port, _ := strconv.Atoi(url[strings.LastIndex(url, ":")+1:])

	type events struct{ down, up chan struct{} }
	watch := func() (events, []natsgo.Option) {
		e := events{make(chan struct{}, 8), make(chan struct{}, 8)}
		return e, []natsgo.Option{
			natsgo.MaxReconnects(-1),
			natsgo.ReconnectWait(20 * time.Millisecond),
			natsgo.DisconnectErrHandler(func(*natsgo.Conn, error) { e.down <- struct{}{} }),
			natsgo.ReconnectHandler(func(*natsgo.Conn) { e.up <- struct{}{} }),
		}
	}
	le, lopts := watch()
	ce, copts := watch()
	lnc, cnc := connect(t, url, lopts...), connect(t, url, copts...)
	svc := uniqueName("reconnect")
	l := listen(t, lnc, transport.ListenConfig{Service: svc}, natstransport.Config{})
	serve(t, &transport.Server{Handler: echoID}, l)
	conn := dial(t, cnc)
	client := transport.NewClient(conn)
	call := func(timeout time.Duration) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+svc+"/x", strings.NewReader("hello"))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	wait := func(what string, ch chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s event", what)
		}
	}
	if code, body := call(5 * time.Second); code != 200 || body != "hello" {
		t.Fatalf("before restart: %d %q", code, body)
	}

	stop()
	wait("listener disconnect", le.down)
	wait("client disconnect", ce.down)
	if s := l.State(); s != transport.StateReconnecting {
		t.Errorf("listener state while the server is down: %v, want reconnecting", s)
	}
	// While the server is down a call ends at its deadline with 504 (the
	// request waits in nats.go's reconnect buffer), never hangs.
	start := time.Now()
	if code, _ := call(200 * time.Millisecond); code != http.StatusGatewayTimeout && code != http.StatusBadGateway && code != http.StatusServiceUnavailable {
		t.Errorf("call while the server is down: %d, want 502, 503 or 504", code)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("call while the server is down took %v", el)
	}

	url2, stop2, err := natsserver.Start(natsserver.Config{Port: port})
	if err != nil {
		t.Fatalf("restart on port %d: %v", port, err)
	}
	stop = stop2
	if url2 != url {
		t.Fatalf("restarted at %s, want %s", url2, url)
	}
	wait("listener reconnect", le.up)
	wait("client reconnect", ce.up)
	// The PONG proves the server has the listener's subscription again.
	if err := lnc.Flush(); err != nil {
		t.Fatal(err)
	}
	if s := l.State(); s != transport.StateConnected {
		t.Errorf("listener state after reconnect: %v, want connected", s)
	}
	if code, body := call(5 * time.Second); code != 200 || body != "hello" {
		t.Fatalf("after restart: %d %q", code, body)
	}
}

// TestRestartUnderLoad: 16 callers keep calling while the (embedded)
// server stops and starts again on the same port. During the outage every
// call ends by its deadline with 502/503/504; after the restart the service
// answers every caller again within 10 s, with no process restarted.
func TestRestartUnderLoad(t *testing.T) {
	url, stop, err := natsserver.Start(natsserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() })
	port, _ := strconv.Atoi(url[strings.LastIndex(url, ":")+1:])
	via := url + "?reconnect_wait=50ms"
	svc := uniqueName("restart")
	l, err := transport.Listen(context.Background(), via+"&service="+svc)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, &transport.Server{Handler: echoID, Logger: discardLogger()}, l)
	c, err := transport.Dial(context.Background(), via)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	client := transport.NewClient(c)

	const callers = 16
	const deadline = 500 * time.Millisecond
	var (
		phase     atomic.Int32 // 0 before, 1 down, 2 restarted
		restarted atomic.Int64 // unix nanos of the restart
		answered  [3]atomic.Int64
		failed    [3]atomic.Int64
		late      atomic.Int64
		bad       atomic.Int64
		recovered = make(chan time.Duration, callers)
		progress  = make(chan struct{}, 1) // poked after every call
		stopAll   = make(chan struct{})
		wg        sync.WaitGroup
	)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			gotBack := false
			for n := 0; ; n++ {
				select {
				case <-stopAll:
					return
				default:
				}
				p := phase.Load()
				body := fmt.Sprintf("%d-%d", i, n)
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+svc+"/", strings.NewReader(body))
				start := time.Now()
				resp, err := client.Do(req)
				el := time.Since(start)
				cancel()
				select {
				case progress <- struct{}{}:
				default:
				}
				if err != nil {
					bad.Add(1)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if el > deadline+time.Second {
					late.Add(1)
				}
				switch {
				case resp.StatusCode == 200 && string(b) == body:
					answered[p].Add(1)
					if p == 2 && !gotBack {
						gotBack = true
						recovered <- time.Since(time.Unix(0, restarted.Load()))
					}
				case resp.StatusCode == 200:
					bad.Add(1) // a mismatched response
				case resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout:
					failed[p].Add(1)
				default:
					bad.Add(1)
				}
			}
		}()
	}
	defer func() { close(stopAll); wg.Wait() }()

	// Let every caller get answers, then stop the server.
	for answered[0].Load() < 10*callers {
		<-progress
	}
	phase.Store(1)
	stop()
	// Keep it down until callers have seen the outage.
	for failed[1].Load() < callers {
		<-progress
	}
	_, stop2, err := natsserver.Start(natsserver.Config{Port: port})
	if err != nil {
		t.Fatalf("restart on port %d: %v", port, err)
	}
	stop = stop2
	restarted.Store(time.Now().UnixNano())
	phase.Store(2)
	var worst time.Duration
	timeout := time.After(10 * time.Second)
	for range callers {
		select {
		case d := <-recovered:
			worst = max(worst, d)
		case <-timeout:
			t.Fatalf("not every caller was answered within 10s of the restart (answered since: %d)", answered[2].Load())
		}
	}
	t.Logf("before: %d answered; outage: %d got 502/503/504, %d answered; after restart: every caller answered within %v",
		answered[0].Load(), failed[1].Load(), answered[1].Load(), worst.Round(time.Millisecond))
	if n := bad.Load(); n != 0 {
		t.Errorf("%d calls got an error, an unexpected status or a mismatched body", n)
	}
	if n := late.Load(); n != 0 {
		t.Errorf("%d calls returned more than 1s past their deadline", n)
	}
}
