package amqp_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/httpbus/httpbus/amqp"
	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/transport"
)

// closeConnection closes, on the broker, the one connection whose
// connection_name client property is name (rabbitmqctl close_connection;
// never close_all_connections: the broker is shared).
func closeConnection(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		t.Skip("rabbitmqctl not found: cannot close a connection from the broker side")
	}
	var id string
	deadline := time.Now().Add(20 * time.Second)
	for id == "" {
		out, err := exec.Command("rabbitmqctl", "-q", "list_connections", "pid", "client_properties").CombinedOutput()
		if err != nil {
			t.Fatalf("rabbitmqctl list_connections: %v: %s", err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, `{"connection_name","`+name+`"}`) {
				id, _, _ = strings.Cut(line, "\t")
			}
		}
		if id == "" {
			// The broker lists a connection shortly after it opens.
			if time.Now().After(deadline) {
				t.Fatalf("no connection named %q on the broker", name)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	out, err := exec.Command("rabbitmqctl", "-q", "close_connection", id, "httpbus fault test").CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl close_connection %q: %v: %s", id, err, out)
	}
	t.Logf("closed connection %s (%s)", id, name)
}

// waitState polls sr until it reports want, or fails after timeout.
func waitState(t *testing.T, sr transport.StateReporter, want transport.State, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for sr.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("state %v after %v, want %v", sr.State(), timeout, want)
		}
		<-tick.C
	}
}

// logSignal returns a logger that writes to the test's log and a channel
// closed at the first record whose message is msg, whichever logger derived
// from it (With, WithGroup) writes it.
func logSignal(t *testing.T, msg string) (*slog.Logger, <-chan struct{}) {
	sig := &logSig{msg: msg, seen: make(chan struct{})}
	return slog.New(signalHandler{testLogger(t).Handler(), sig}), sig.seen
}

type logSig struct {
	msg  string
	once sync.Once
	seen chan struct{}
}

type signalHandler struct {
	slog.Handler
	sig *logSig // shared by the handlers derived from this one
}

func (h signalHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == h.sig.msg {
		h.sig.once.Do(func() { close(h.sig.seen) })
	}
	return h.Handler.Handle(ctx, r)
}

func (h signalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return signalHandler{h.Handler.WithAttrs(as), h.sig}
}

func (h signalHandler) WithGroup(name string) slog.Handler {
	return signalHandler{h.Handler.WithGroup(name), h.sig}
}

// TestLogSignal: the signal closes once, for a record from a logger derived
// twice (as the backend's are, With per component), and not for others.
func TestLogSignal(t *testing.T) {
	logger, seen := logSignal(t, "lost")
	derived := logger.With("what", "listener").WithGroup("g").With("k", 1)
	derived.Info("other")
	select {
	case <-seen:
		t.Fatal("signalled by another message")
	default:
	}
	derived.Warn("lost")
	logger.Warn("lost") // a second record must not close the channel again
	select {
	case <-seen:
	default:
		t.Fatal("not signalled by the record from a derived logger")
	}
}

// TestServerConnectionKilledUnderLoad closes the server's connection on the
// broker while 16 callers keep requests in flight: the listener reconnects
// by itself, unacknowledged requests are redelivered, and every request is
// answered with its own response.
func TestServerConnectionKilledUnderLoad(t *testing.T) {
	url := brokertest.AMQP(t)
	svc := unique("kill")
	name := "httpbus-test-" + svc
	var runs, redelivered atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		if r.Header.Get(transport.HeaderRedelivered) == "true" {
			redelivered.Add(1)
		}
		time.Sleep(2 * time.Millisecond) // keep requests in flight when the connection dies
		io.Copy(w, r.Body)
	})
	// The listener is reconnecting for ~50 ms only, too short to catch by
	// polling State on a loaded machine (CI once missed it): its log
	// record says that the connection was lost.
	logger, lost := logSignal(t, "transport/amqp: connection lost; reconnecting")
	l, _ := serve(t, url, transport.ListenConfig{Service: svc}, amqp.Config{ConnectionName: name, ReconnectMin: 50 * time.Millisecond, ReconnectMax: time.Second, Logger: logger}, h)
	client := transport.NewClient(dialConn(t, url, amqp.Config{}))

	var answered, failed atomic.Int64
	var errMu sync.Mutex
	var errs []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				body := fmt.Sprintf("w%d-r%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+svc+"/echo", strings.NewReader(body))
				resp, err := client.Do(req)
				var got []byte
				if err == nil {
					got, _ = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				cancel()
				if err != nil || resp.StatusCode != 200 || string(got) != body {
					failed.Add(1)
					errMu.Lock()
					if len(errs) < 5 {
						errs = append(errs, fmt.Sprintf("%s: %v %v %q", body, err, resp, got))
					}
					errMu.Unlock()
					continue
				}
				answered.Add(1)
			}
		}()
	}
	waitCount := func(n int64) {
		deadline := time.Now().Add(30 * time.Second)
		for answered.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d requests answered, want %d", answered.Load(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitCount(300)
	before := answered.Load()
	closeConnection(t, name)
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the listener did not report its connection lost within 10 s")
	}
	waitState(t, l, transport.StateConnected, 15*time.Second)
	waitCount(before + 300)
	close(stop)
	wg.Wait()
	t.Logf("requests answered %d, failed %d; handler runs %d, of which redelivered %d", answered.Load(), failed.Load(), runs.Load(), redelivered.Load())
	if n := failed.Load(); n > 0 {
		t.Errorf("%d requests failed or got another response; first: %v", n, errs)
	}
	if runs.Load() < answered.Load() {
		t.Errorf("handler ran %d times for %d answered requests", runs.Load(), answered.Load())
	}
}

// TestClientConnectionKilled: a caller with a request in flight when its
// connection dies gets ErrUnavailable at once; the Conn reconnects and the
// next call is answered.
func TestClientConnectionKilled(t *testing.T) {
	url := brokertest.AMQP(t)
	svc := unique("ckill")
	name := "httpbus-test-" + svc
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	serve(t, url, transport.ListenConfig{Service: svc}, amqp.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			entered <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	}))
	defer close(release)
	c := dialConn(t, url, amqp.Config{ConnectionName: name, ReconnectMin: 50 * time.Millisecond, ReconnectMax: time.Second})
	client := &http.Client{Transport: &transport.RoundTripper{Conn: c}}
	type result struct {
		status int
		err    error
		at     time.Time
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		resp, err := get(ctx, client, "http://"+svc+"/block")
		r := result{err: err, at: time.Now()}
		if resp != nil {
			r.status = resp.StatusCode
		}
		done <- r
	}()
	<-entered
	closeConnection(t, name)
	closedAt := time.Now()
	r := <-done
	if r.err != nil || r.status != http.StatusBadGateway {
		t.Errorf("in-flight request: status %d err %v, want 502", r.status, r.err)
	}
	if d := r.at.Sub(closedAt); d > 2*time.Second {
		t.Errorf("in-flight caller waited %v after the connection closed", d)
	}
	waitState(t, c, transport.StateConnected, 15*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if resp, err := get(ctx, client, "http://"+svc+"/next"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after reconnect: %v %v", resp, err)
	}
}

// TestCallWaitsForConnection: while the Conn reconnects, a new call waits
// for the connection up to its deadline instead of failing at once.
func TestCallWaitsForConnection(t *testing.T) {
	url := brokertest.AMQP(t)
	svc := unique("wait")
	name := "httpbus-test-" + svc
	serve(t, url, transport.ListenConfig{Service: svc}, amqp.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	// A long first backoff keeps the Conn reconnecting for a while.
	c := dialConn(t, url, amqp.Config{ConnectionName: name, ReconnectMin: 1500 * time.Millisecond, ReconnectMax: 1500 * time.Millisecond})
	client := transport.NewClient(c)
	closeConnection(t, name)
	waitState(t, c, transport.StateReconnecting, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := get(ctx, client, "http://"+svc+"/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("call during reconnection: %v %v, want 200 once reconnected", resp, err)
	}
	// A call whose deadline passes while disconnected gets 504.
	closeConnection(t, name)
	waitState(t, c, transport.StateReconnecting, 10*time.Second)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	resp, err = get(ctx2, client, "http://"+svc+"/")
	if err != nil || resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("call with a short deadline during reconnection: %v %v, want 504", resp, err)
	}
}

// TestRedeliveryToOtherInstance: server A takes 8 requests and its
// connection dies before it acks them; the broker redelivers every one to
// server B, whose handler sees Httpbus-Redelivered: true, and each caller
// gets B's answer.
func TestRedeliveryToOtherInstance(t *testing.T) {
	url := brokertest.AMQP(t)
	svc := unique("redeliver")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	rawA, err := amqp091.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer rawA.Close()
	la, err := amqp.NewListener(ctx, rawA, transport.ListenConfig{Service: svc}, amqp.Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	deleteQueues(t, url, la.Queue())
	const n = 8 // requests A holds, all unacknowledged, when it dies
	enteredA := make(chan struct{}, n)
	releaseA := make(chan struct{})
	srvA := &transport.Server{Logger: testLogger(t), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		enteredA <- struct{}{}
		<-releaseA
		io.WriteString(w, "A")
	})}
	servedA := make(chan error, 1)
	go func() { servedA <- srvA.Serve(la) }()

	client := transport.NewClient(dialConn(t, url, amqp.Config{}))
	type result struct {
		path, body string
		err        error
	}
	done := make(chan result, n)
	for i := range n {
		go func() {
			p := "/job/" + strconv.Itoa(i)
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+svc+p, nil)
			resp, err := client.Do(req)
			if err != nil {
				done <- result{path: p, err: err}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			done <- result{path: p, body: string(b)}
		}()
	}
	for range n {
		<-enteredA // A holds the requests, unacknowledged
	}

	var mu sync.Mutex
	atB := map[string]string{} // path → Httpbus-Redelivered seen by B
	serve(t, url, transport.ListenConfig{Service: svc}, amqp.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		atB[r.URL.Path] = r.Header.Get(transport.HeaderRedelivered)
		mu.Unlock()
		io.WriteString(w, "B"+r.URL.Path)
	}))
	rawA.Close() // A stops mid-request without acking

	for range n {
		r := <-done
		if r.err != nil || r.body != "B"+r.path {
			t.Errorf("caller of %s got %q, %v; want B's answer", r.path, r.body, r.err)
		}
	}
	mu.Lock()
	redelivered := 0
	for p, v := range atB {
		if v == "true" {
			redelivered++
		} else {
			t.Errorf("B's handler saw %s %q for %s, want \"true\"", transport.HeaderRedelivered, v, p)
		}
	}
	mu.Unlock()
	t.Logf("A held %d requests when it died; B served %d, %d of them marked redelivered", n, len(atB), redelivered)
	if len(atB) != n {
		t.Errorf("B served %d requests, want %d", len(atB), n)
	}
	waitState(t, la, transport.StateClosed, 10*time.Second)
	close(releaseA)
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer scancel()
	if err := srvA.Shutdown(sctx); err != nil {
		t.Errorf("A's Shutdown: %v", err)
	}
	if err := <-servedA; !errors.Is(err, transport.ErrServerClosed) {
		t.Errorf("A's Serve: %v", err)
	}
}

// TestDeadLetterOnMalformedFrame: with a dead-letter exchange configured, an
// undecodable frame is answered 400 and rejected to it.
func TestDeadLetterOnMalformedFrame(t *testing.T) {
	url := brokertest.AMQP(t)
	svc := unique("dlx")
	dlx := "httpbus.test.dlx." + svc
	_, ch := rawChannel(t, url)
	if err := ch.ExchangeDeclare(dlx, "fanout", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	dq, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind(dq.Name, "", dlx, false, nil); err != nil {
		t.Fatal(err)
	}
	dead, err := ch.Consume(dq.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, url, transport.ListenConfig{Service: svc}, amqp.Config{DeadLetterExchange: dlx}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	_, ch2 := rawChannel(t, url)
	d := rawCall(t, ch2, svc, amqp091.Publishing{ContentType: transport.MediaType, Body: []byte("garbage\r\n\r\n")})
	resp, err := transport.DecodeResponse(d.Body, nil, transport.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("garbage answered %d, want 400", resp.StatusCode)
	}
	select {
	case m := <-dead:
		if string(m.Body) != "garbage\r\n\r\n" {
			t.Errorf("dead-lettered %q", m.Body)
		}
		if reason := fmt.Sprint(m.Headers["x-death"]); !strings.Contains(reason, "rejected") {
			t.Errorf("x-death %s, want reason rejected", reason)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing dead-lettered")
	}
}

// TestNotificationsFromListener: a Listener publishes a notification (with
// publisher confirms) that another service, declared transient, receives.
func TestNotificationsFromListener(t *testing.T) {
	url := brokertest.AMQP(t)
	topic := unique("t")
	got := make(chan string, 1)
	// A transient subscriber and a durable publisher share the exchange.
	serve(t, url, transport.ListenConfig{Service: unique("sub"), Topics: []string{topic}}, amqp.Config{Transient: true}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r.Method + " " + r.Host + " " + string(b)
	}))
	pub, _ := serve(t, url, transport.ListenConfig{Service: unique("pub")}, amqp.Config{}, http.NotFoundHandler())
	frame, _ := transport.EncodeRequest(httpRequest("POST", "/"), topic, []byte("hi"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := pub.Publish(ctx, topic, &transport.Message{Body: frame, ContentType: transport.MediaType}); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "NOTIFY "+topic+" hi" {
			t.Errorf("got %q", s)
		}
	case <-ctx.Done():
		t.Fatal("notification not received")
	}
}

func httpRequest(method, target string) *http.Request {
	r, _ := http.NewRequest(method, "http://x"+target, nil)
	return r
}

// TestQueueDeletedWhileServing: the broker cancels the consumer when its
// queue is deleted; the listener declares the queue again and serves.
func TestQueueDeletedWhileServing(t *testing.T) {
	url := brokertest.AMQP(t)
	svc := unique("deleted")
	l, _ := serve(t, url, transport.ListenConfig{Service: svc}, amqp.Config{ReconnectMin: 20 * time.Millisecond}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	client := transport.NewClient(dialConn(t, url, amqp.Config{}))
	_, ch := rawChannel(t, url)
	if _, err := ch.QueueDelete(l.Queue(), false, false, false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := get(ctx, client, "http://"+svc+"/")
		cancel()
		if err == nil && resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not served again after its queue was deleted: %v %v", resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDrainServesPrefetched: with one request handled at a time and more
// already pushed by the broker (prefetch), Shutdown cancels the consumer and
// still serves every delivery already received before it returns.
func TestDrainServesPrefetched(t *testing.T) {
	url := brokertest.AMQP(t)
	svc := unique("drain")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := amqp.Listen(ctx, url, transport.ListenConfig{Service: svc}, amqp.Config{Prefetch: 10, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	deleteQueues(t, url, l.Queue())
	first := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	var served atomic.Int64
	srv := &transport.Server{MaxInFlight: 1, Logger: testLogger(t), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(first); <-release })
		served.Add(1)
		io.WriteString(w, r.URL.Path)
	})}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	// Publish the requests by hand, with publisher confirms, so that all of
	// them are known to be in the queue.
	_, ch := rawChannel(t, url)
	replies, err := ch.Consume(amqp.DirectReplyTo, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	const n = 5
	for i := range n {
		p := "/r" + strconv.Itoa(i)
		dc, err := ch.PublishWithDeferredConfirm("", l.Queue(), true, false, amqp091.Publishing{
			ContentType: transport.MediaType, ReplyTo: amqp.DirectReplyTo, CorrelationId: p,
			Body: []byte("GET " + p + " HTTP/1.1\r\nHost: " + svc + "\r\n\r\n"),
		})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(ctx); !ok || err != nil {
			t.Fatalf("publish %s not confirmed: %v", p, err)
		}
	}
	<-first
	// Wait until the broker has pushed the other requests to the listener
	// (unacked, held in its prefetch): the queue has no ready message.
	_, ch2 := rawChannel(t, url)
	deadline := time.Now().Add(10 * time.Second)
	for {
		q, err := ch2.QueueDeclarePassive(l.Queue(), true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q.Messages == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests still ready in the queue", q.Messages)
		}
		time.Sleep(10 * time.Millisecond)
	}
	results := make(chan string, n)
	go func() {
		for range n {
			select {
			case d := <-replies:
				resp, err := transport.DecodeResponse(d.Body, nil, transport.Limits{})
				if err != nil {
					results <- err.Error()
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || string(b) != d.CorrelationId {
					results <- fmt.Sprintf("%s: %d %q", d.CorrelationId, resp.StatusCode, b)
					continue
				}
				results <- ""
			case <-ctx.Done():
				results <- "no reply"
			}
		}
	}()
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	if err := <-errc; !errors.Is(err, transport.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
	close(release)
	for range n {
		if r := <-results; r != "" {
			t.Error(r)
		}
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if s := served.Load(); s != n {
		t.Errorf("served %d, want %d", s, n)
	}
	l.Close()
}

// TestSetupFailureIsAnError: a setup that fails (here the broker refuses to
// declare a reserved exchange, closing the channel) is returned as an
// error; it used to panic in the cleanup, which ran on the nil result.
func TestSetupFailureIsAnError(t *testing.T) {
	url := brokertest.AMQP(t)
	ctx := testCtx(t)
	cfg := amqp.Config{Exchange: "amq.httpbus-refused", Logger: testLogger(t)}
	if c, err := amqp.Dial(ctx, url, cfg); err == nil {
		c.Close()
		t.Error("Dial with a reserved exchange name: no error")
	}
	svc := unique("setupfail")
	l, err := amqp.Listen(ctx, url, transport.ListenConfig{Service: svc}, cfg)
	deleteQueues(t, url, svc)
	if err == nil {
		l.Close()
		t.Error("Listen with a reserved exchange name: no error")
	}
}
