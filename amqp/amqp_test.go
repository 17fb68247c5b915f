package amqp_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/httpbus/httpbus/amqp"
	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, brokertest.IgnoreToxiproxy()...) }

// testLogger writes to t.Log.
func testLogger(t testing.TB) *slog.Logger { return transporttest.Logger(t) }

func unique(prefix string) string {
	return prefix + "-" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "") + "-" + randHex(3)
}

// deleteQueues deletes queues on the broker at cleanup (they are durable).
func deleteQueues(t testing.TB, url string, queues ...string) {
	t.Helper()
	t.Cleanup(func() {
		c, err := amqp091.Dial(url)
		if err != nil {
			t.Logf("delete queues: %v", err)
			return
		}
		defer c.Close()
		for _, q := range queues {
			ch, err := c.Channel()
			if err != nil {
				t.Logf("delete queue %s: %v", q, err)
				return
			}
			ch.QueueDelete(q, false, false, false)
			ch.Close()
		}
	})
}

func harness(t *testing.T) transporttest.Harness {
	url := brokertest.AMQP(t)
	return transporttest.Harness{
		Listen: func(t testing.TB, cfg transport.ListenConfig) transport.Listener {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			l, err := amqp.Listen(ctx, url, cfg, amqp.Config{Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			deleteQueues(t, url, l.Queue(), l.Queue()+amqp.NotifyQueueSuffix)
			t.Cleanup(func() { l.Close() })
			return l
		},
		Dial: func(t testing.TB) transport.Conn {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, err := amqp.Dial(ctx, url, amqp.Config{Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			return c
		},
	}
}

func TestConformance(t *testing.T) {
	transporttest.Run(t, harness(t))
}

// TestDifferential compares what callers and handlers see through RabbitMQ
// with net/http (transporttest.RunDifferential).
func TestDifferential(t *testing.T) {
	transporttest.RunDifferential(t, harness(t))
}

// serve serves h for service on url and returns the listener; it is shut
// down at cleanup.
func serve(t *testing.T, url string, lc transport.ListenConfig, cfg amqp.Config, h http.Handler) (*amqp.Listener, *transport.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	l, err := amqp.Listen(ctx, url, lc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	deleteQueues(t, url, l.Queue(), l.Queue()+amqp.NotifyQueueSuffix)
	srv := &transport.Server{Handler: h, Logger: cfg.Logger}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		<-errc
		l.Close()
	})
	return l, srv
}

func dialConn(t *testing.T, url string, cfg amqp.Config) *amqp.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	c, err := amqp.Dial(ctx, url, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawChannel returns a channel on a fresh amqp091 connection, closed at
// cleanup.
func rawChannel(t *testing.T, url string) (*amqp091.Connection, *amqp091.Channel) {
	t.Helper()
	c, err := amqp091.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return c, ch
}

// rawCall publishes a message by hand, as a non-Go client would, and waits
// for the reply on direct reply-to.
func rawCall(t *testing.T, ch *amqp091.Channel, queue string, pub amqp091.Publishing) amqp091.Delivery {
	t.Helper()
	replies, err := ch.Consume(amqp.DirectReplyTo, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub.ReplyTo = amqp.DirectReplyTo
	if pub.CorrelationId == "" {
		pub.CorrelationId = "raw-1"
	}
	if err := ch.Publish("", queue, true, false, pub); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-replies:
		if d.CorrelationId != pub.CorrelationId {
			t.Errorf("reply correlation id %q, want %q", d.CorrelationId, pub.CorrelationId)
		}
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no reply in 10s")
	}
	return amqp091.Delivery{}
}

func TestRawFrameFromNonGoClient(t *testing.T) {
	url := brokertest.AMQP(t)
	svc := unique("raw")
	serve(t, url, transport.ListenConfig{Service: svc}, amqp.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Path", r.URL.Path)
		io.Copy(w, r.Body)
	}))
	_, ch := rawChannel(t, url)
	frame := "POST /greet HTTP/1.1\r\nHost: " + svc + "\r\nContent-Length: 5\r\n\r\nhello"
	d := rawCall(t, ch, svc, amqp091.Publishing{
		ContentType: "message/http",
		Headers:     amqp091.Table{"Httpbus-Version": "1"},
		Body:        []byte(frame),
	})
	if d.ContentType != transport.MediaType {
		t.Errorf("reply content type %q", d.ContentType)
	}
	resp, err := transport.DecodeResponse(d.Body, nil, transport.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != "hello" || resp.Header.Get("X-Path") != "/greet" {
		t.Errorf("got %d %q path %q", resp.StatusCode, body, resp.Header.Get("X-Path"))
	}
}

func TestExpiredOnArrivalNotRun(t *testing.T) {
	url := brokertest.AMQP(t)
	svc := unique("expired")
	ran := make(chan string, 4)
	serve(t, url, transport.ListenConfig{Service: svc}, amqp.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ran <- r.URL.Path
	}))
	_, ch := rawChannel(t, url)
	frame := "GET /expired HTTP/1.1\r\nHost: " + svc + "\r\n\r\n"
	// No AMQP expiration: only the Httpbus-Deadline header says it expired.
	d := rawCall(t, ch, svc, amqp091.Publishing{
		ContentType: transport.MediaType,
		Headers:     amqp091.Table{"httpbus-deadline": transport.FormatDeadline(time.Now().Add(-time.Second))},
		Body:        []byte(frame),
	})
	resp, err := transport.DecodeResponse(d.Body, nil, transport.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("expired request answered %d, want 504", resp.StatusCode)
	}
	select {
	case p := <-ran:
		t.Errorf("handler ran for %s", p)
	default:
	}
}

func TestForeignMessageHeaders(t *testing.T) {
	url := brokertest.AMQP(t)
	svc := unique("foreign")
	type seen struct {
		method, path, body string
		h                  http.Header
	}
	got := make(chan seen, 1)
	serve(t, url, transport.ListenConfig{Service: svc}, amqp.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.Path, string(b), r.Header.Clone()}
		w.WriteHeader(http.StatusAccepted)
	}))
	_, ch := rawChannel(t, url)
	d := rawCall(t, ch, svc, amqp091.Publishing{
		ContentType:   "application/json",
		MessageId:     "m-42",
		Type:          "order.created",
		AppId:         "legacy",
		Priority:      3,
		Timestamp:     time.Unix(1700000000, 0),
		CorrelationId: "c-7",
		Headers:       amqp091.Table{"x-tenant": "acme", "retries": int32(2)},
		Body:          []byte(`{"id":1}`),
	})
	s := <-got
	if s.method != "POST" || s.path != "/" || s.body != `{"id":1}` {
		t.Errorf("served as %s %s %q", s.method, s.path, s.body)
	}
	for k, want := range map[string]string{
		"Content-Type":       "application/json",
		amqp.HeaderMessageID: "m-42", amqp.HeaderType: "order.created", amqp.HeaderAppID: "legacy",
		amqp.HeaderPriority: "3", amqp.HeaderTimestamp: "1700000000", amqp.HeaderCorrelationID: "c-7",
		amqp.HeaderRoutingKey: svc, "X-Tenant": "acme", "Retries": "2",
	} {
		if g := s.h.Get(k); g != want {
			t.Errorf("header %s = %q, want %q", k, g, want)
		}
	}
	resp, err := transport.DecodeResponse(d.Body, nil, transport.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("status %d", resp.StatusCode)
	}
}

// TestUnknownRepliesDiscarded sends replies with unknown correlation ids to
// a Conn's reply queue: they are counted and dropped, and the Conn keeps
// working.
func TestUnknownRepliesDiscarded(t *testing.T) {
	url := brokertest.AMQP(t)
	svc := unique("late")
	release := make(chan struct{})
	serve(t, url, transport.ListenConfig{Service: svc}, amqp.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "ok")
	}))
	c := dialConn(t, url, amqp.Config{})
	// A version-1 caller: the late reply comes to the Conn's reply path (a
	// version-2 caller's late stream message is dropped by the core).
	client := transport.NewClient(transporttest.Version1(c))
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	resp, err := get(ctx, client, "http://"+svc+"/slow")
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", resp.StatusCode)
	}
	close(release) // the late reply arrives now
	deadline := time.Now().Add(10 * time.Second)
	for c.DiscardedReplies() == 0 && time.Now().Before(deadline) {
		// the next request is a fence: the late reply precedes its reply
		if resp, err := get(context.Background(), client, "http://"+svc+"/next"); err != nil || resp.StatusCode != 200 {
			t.Fatalf("next: %v %v", resp, err)
		}
	}
	if n := c.DiscardedReplies(); n != 1 {
		t.Errorf("discarded %d replies, want 1", n)
	}
}

func get(ctx context.Context, c *http.Client, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

func TestNoRespondersAtOnce(t *testing.T) {
	url := brokertest.AMQP(t)
	c := dialConn(t, url, amqp.Config{})
	start := time.Now()
	_, err := c.Call(context.Background(), unique("nobody"), &transport.Message{Body: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ContentType: transport.MediaType})
	if !errors.Is(err, transport.ErrNoResponders) {
		t.Fatalf("Call: %v, want ErrNoResponders", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("took %v", el)
	}
}

func TestMessageSizeLimit(t *testing.T) {
	url := brokertest.AMQP(t)
	svc := unique("size")
	const limit = 4096
	big := strings.Repeat("x", 8192)
	serve(t, url, transport.ListenConfig{Service: svc}, amqp.Config{MaxMessageBytes: limit}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			io.WriteString(w, big)
			return
		}
		io.WriteString(w, "small")
	}))
	c := dialConn(t, url, amqp.Config{MaxMessageBytes: limit})
	// A version-1 caller (one message each way); a version-2 caller streams
	// what does not fit (the stream conformance cases).
	client := transport.NewClient(transporttest.Version1(c))
	// Caller's path: refused before sending.
	req, _ := http.NewRequest("POST", "http://"+svc+"/upload", strings.NewReader(big))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get(transport.HeaderError) == "" {
		t.Errorf("big request: %d %q, want 413 made by httpbus", resp.StatusCode, resp.Header.Get(transport.HeaderError))
	}
	if _, err := c.Call(context.Background(), svc, &transport.Message{Body: []byte(big)}); !errors.Is(err, transport.ErrTooLarge) {
		t.Errorf("Call with a big message: %v, want ErrTooLarge", err)
	}
	// Server's path: the response is over the limit.
	resp, err = get(context.Background(), client, "http://"+svc+"/big")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("big response: %d, want 413", resp.StatusCode)
	}
	resp, err = get(context.Background(), client, "http://"+svc+"/small")
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("next: %v %v", resp, err)
	}
	if l := c.MaxMessageBytes(); l != limit {
		t.Errorf("MaxMessageBytes %d", l)
	}
}

func TestURLOptions(t *testing.T) {
	_, cfg, err := amqp.ParseURL("amqp://u:secret@h:5672/vh?queue_prefix=p.&durable=false&prefetch=7&exchange=ex&dead_letter_exchange=dlx&max_message_size=1000&heartbeat=5&connection_name=n")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.QueuePrefix != "p." || !cfg.Transient || cfg.Prefetch != 7 || cfg.Exchange != "ex" || cfg.DeadLetterExchange != "dlx" || cfg.MaxMessageBytes != 1000 || cfg.ConnectionName != "n" {
		t.Errorf("parsed %+v", cfg)
	}
	_, _, err = amqp.ParseURL("amqp://u:secret@h:5672/?prefech=7")
	if err == nil || !strings.Contains(err.Error(), "prefech") || strings.Contains(err.Error(), "secret") {
		t.Errorf("misspelt option: %v", err)
	}
	_, err = transport.Dial(context.Background(), "amqp://u:secret@127.0.0.1:1/?durable=maybe")
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("bad value: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = transport.Dial(ctx, "amqp://u:secret@127.0.0.1:1/")
	if !errors.Is(err, transport.ErrUnavailable) || strings.Contains(err.Error(), "secret") {
		t.Errorf("refused connection: %v", err)
	}
}

func TestWrongPasswordNotLeaked(t *testing.T) {
	url := brokertest.AMQP(t)
	u := strings.Replace(url, "guest:guest", "guest:hunter2-wrong", 1)
	if u == url {
		t.Skip("broker URL has no guest:guest credentials to alter")
	}
	var logs bytes.Buffer
	var mu sync.Mutex
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := amqp.Dial(ctx, u, amqp.Config{Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))})
	if err == nil {
		t.Fatal("dial with a wrong password succeeded")
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(err.Error(), "hunter2") || strings.Contains(logs.String(), "hunter2") {
		t.Errorf("password leaked: %v / %s", err, logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// TestReplyToOrdinaryQueue: a non-Go client may name any queue as reply_to.
func TestReplyToOrdinaryQueue(t *testing.T) {
	url := brokertest.AMQP(t)
	svc := unique("replyq")
	serve(t, url, transport.ListenConfig{Service: svc}, amqp.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "to a queue")
	}))
	_, ch := rawChannel(t, url)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", svc, true, false, amqp091.Publishing{
		ContentType: transport.MediaType, CorrelationId: "q-1", ReplyTo: q.Name,
		Body: []byte("GET / HTTP/1.1\r\nHost: " + svc + "\r\n\r\n"),
	}); err != nil {
		t.Fatal(err)
	}
	replies, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-replies:
		resp, err := transport.DecodeResponse(d.Body, nil, transport.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if d.CorrelationId != "q-1" || string(b) != "to a queue" {
			t.Errorf("reply %q with correlation id %q", b, d.CorrelationId)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no reply")
	}
}

// TestNewConnCallerOwned: a Conn over the caller's connection works, and
// once the caller closes that connection it reports closed and calls fail
// with ErrUnavailable rather than waiting.
func TestNewConnCallerOwned(t *testing.T) {
	url := brokertest.AMQP(t)
	svc := unique("owned")
	serve(t, url, transport.ListenConfig{Service: svc}, amqp.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	raw, err := amqp091.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := amqp.NewConn(ctx, raw, amqp.Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client := transport.NewClient(c)
	if resp, err := get(ctx, client, "http://"+svc+"/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("call: %v %v", resp, err)
	}
	raw.Close()
	waitState(t, c, transport.StateClosed, 10*time.Second)
	_, err = c.Call(ctx, svc, &transport.Message{Body: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ContentType: transport.MediaType})
	if !errors.Is(err, transport.ErrUnavailable) {
		t.Errorf("call after the caller closed the connection: %v, want ErrUnavailable", err)
	}
	c.Close()
	if _, err := c.Call(ctx, svc, &transport.Message{}); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("call after Close: %v, want ErrClosed", err)
	}
}

// TestRequestWireProperties checks the AMQP properties of a request as the
// wire section documents them, by consuming it raw and answering it raw.
func TestRequestWireProperties(t *testing.T) {
	url := brokertest.AMQP(t)
	queue := unique("wire")
	_, ch := rawChannel(t, url)
	if _, err := ch.QueueDeclare(queue, false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	msgs, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := dialConn(t, url, amqp.Config{})
	deadline := time.Now().Add(5 * time.Second)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	type result struct {
		m   *transport.Message
		err error
	}
	done := make(chan result, 1)
	go func() {
		m, err := c.Call(ctx, queue, &transport.Message{Body: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ContentType: transport.MediaType, Deadline: deadline})
		done <- result{m, err}
	}()
	var d amqp091.Delivery
	select {
	case d = <-msgs:
	case <-ctx.Done():
		t.Fatal("no request")
	}
	if d.ContentType != "message/http" || !strings.HasPrefix(d.ReplyTo, "amq.rabbitmq.reply-to.") || d.CorrelationId == "" || d.DeliveryMode != amqp091.Transient || d.Exchange != "" || d.RoutingKey != queue {
		t.Errorf("properties: content_type %q reply_to %q correlation_id %q delivery_mode %d exchange %q routing key %q",
			d.ContentType, d.ReplyTo, d.CorrelationId, d.DeliveryMode, d.Exchange, d.RoutingKey)
	}
	if ms, err := strconv.Atoi(d.Expiration); err != nil || ms < 4000 || ms > 5000 {
		t.Errorf("expiration %q, want the milliseconds left (about 5000)", d.Expiration)
	}
	if v, ok := d.Headers["Httpbus-Version"]; ok {
		t.Errorf("Httpbus-Version %v: version 1 is left out (WIRE.md §2: a missing one means 1)", v)
	}
	if v, _ := d.Headers["Httpbus-Deadline"].(string); v != strconv.FormatInt(deadline.UnixMilli(), 10) {
		t.Errorf("Httpbus-Deadline %q, want %d", v, deadline.UnixMilli())
	}
	// d.ReplyTo is the generic name; RabbitMQ rewrites it on delivery to the
	// caller's own pseudo-queue, which is what a server replies to.
	if err := ch.Publish("", d.ReplyTo, false, false, amqp091.Publishing{ContentType: transport.MediaType, CorrelationId: d.CorrelationId, Body: []byte("HTTP/1.1 204 No Content\r\n\r\n")}); err != nil {
		t.Fatal(err)
	}
	d.Ack(false)
	r := <-done
	if r.err != nil || !strings.HasPrefix(string(r.m.Body), "HTTP/1.1 204") {
		t.Errorf("Call: %v %v", r.m, r.err)
	}
}

// TestListenerDispositions drives a Listener without a Server: Requeue
// brings the request back marked redelivered, Ack settles it, and after
// Close Receive returns ErrClosed.
func TestListenerDispositions(t *testing.T) {
	url := brokertest.AMQP(t)
	svc := unique("disp")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := amqp.Listen(ctx, url, transport.ListenConfig{Service: svc}, amqp.Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	deleteQueues(t, url, l.Queue())
	defer l.Close()
	_, ch := rawChannel(t, url)
	if err := ch.Publish("", l.Queue(), false, false, amqp091.Publishing{ContentType: "text/plain", Body: []byte("job")}); err != nil {
		t.Fatal(err)
	}
	d, err := l.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.Redelivered || string(d.Body) != "job" || d.Service != svc || d.Header.Get(amqp.HeaderRoutingKey) != l.Queue() {
		t.Errorf("first delivery: redelivered %v body %q service %q headers %v", d.Redelivered, d.Body, d.Service, d.Header)
	}
	if err := l.Reply(ctx, d, nil, transport.Requeue); err != nil {
		t.Fatal(err)
	}
	d, err = l.Receive(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Redelivered || string(d.Body) != "job" {
		t.Errorf("after Requeue: redelivered %v body %q, want the same message redelivered", d.Redelivered, d.Body)
	}
	if err := l.Reply(ctx, d, nil, transport.Ack); err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := l.Receive(ctx); !errors.Is(err, transport.ErrClosed) {
		t.Errorf("Receive after Close: %v, want ErrClosed", err)
	}
	q, err := ch.QueueDeclarePassive(l.Queue(), true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != 0 {
		t.Errorf("%d messages left in the queue after Ack", q.Messages)
	}
}

// TestAckCoalescing: acks are coalesced into one basic.ack with multiple
// set only up to the newest delivery with no older one in flight. Six
// deliveries are taken; 2, 3 and 6 are acked and 4 rejected while 1 is in
// flight, then 1 is acked and 5 never is. After Close exactly 5 is back in
// the queue, and no wrong acknowledgement closed the channel (the broker
// answers one with PRECONDITION_FAILED).
func TestAckCoalescing(t *testing.T) {
	url := brokertest.AMQP(t)
	svc := unique("acks")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := amqp.Listen(ctx, url, transport.ListenConfig{Service: svc}, amqp.Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	deleteQueues(t, url, l.Queue())
	defer l.Close()
	_, ch := rawChannel(t, url)
	for i := 1; i <= 6; i++ {
		if err := ch.Publish("", l.Queue(), false, false, amqp091.Publishing{ContentType: "text/plain", Body: []byte(strconv.Itoa(i))}); err != nil {
			t.Fatal(err)
		}
	}
	ds := map[string]*transport.Delivery{}
	for range 6 {
		d, err := l.Receive(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ds[string(d.Body)] = d
	}
	settle := func(body string, disp transport.Disposition) {
		t.Helper()
		if err := l.Reply(ctx, ds[body], nil, disp); err != nil {
			t.Fatalf("Reply %s: %v", body, err)
		}
	}
	settle("2", transport.Ack)
	settle("3", transport.Ack)
	settle("6", transport.Ack)
	settle("4", transport.Reject)
	// Two flushes, as the timer makes over two periods: 2, 3 and 6 are
	// acked on their own, with 1 still in flight.
	if err := amqp.FlushAcks(l); err != nil {
		t.Fatal(err)
	}
	settle("1", transport.Ack) // one multiple ack covers it (2, 3, 4 are settled)
	if err := amqp.FlushAcks(l); err != nil {
		t.Fatal(err)
	}
	// A wrong ack (a tag acked twice, or a multiple ack over 5) closes
	// the channel: a round trip on it after the acks proves none was.
	if err := amqp.SyncChannel(l); err != nil {
		t.Fatalf("after the acks: %v (a wrong ack closes the channel)", err)
	}
	l.Close() // 5 was never settled: the broker requeues it
	deadline := time.Now().Add(10 * time.Second)
	for {
		q, err := ch.QueueDeclarePassive(l.Queue(), true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q.Messages == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages in the queue after Close, want 1 (the unsettled one)", q.Messages)
		}
		time.Sleep(20 * time.Millisecond)
	}
	m, ok, err := ch.Get(l.Queue(), true)
	if err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	if string(m.Body) != "5" || !m.Redelivered {
		t.Errorf("left in the queue: %q redelivered %v, want \"5\" redelivered", m.Body, m.Redelivered)
	}
}
