// Package transporttest is the conformance suite every httpbus backend runs
// against itself, as testing/fstest.TestFS checks a file system:
//
//	func TestConformance(t *testing.T) {
//		transporttest.Run(t, transporttest.Harness{Listen: ..., Dial: ..., Features: ...})
//	}
//
// Each case is a subtest, so one run reports every failure. A backend that
// cannot do something declares it in Features, with the reason; the case
// then skips and says why. Nothing is skipped silently.
package transporttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/httpbus/httpbus/transport"
)

// Harness opens a backend's two sides for the suite.
type Harness struct {
	// Listen returns a server side for cfg on a fresh or shared broker
	// connection. The suite closes it (via Server.Shutdown or Close); the
	// harness may also register cleanups with t.Cleanup.
	Listen func(t testing.TB, cfg transport.ListenConfig) transport.Listener

	// Dial returns a client side. The suite closes it.
	Dial func(t testing.TB) transport.Conn

	Features Features
}

// Features declares what a backend cannot do, each with the reason given in
// the skip message. The zero value claims everything.
type Features struct {
	// NoLoadBalancing, when set, is why two servers of one service cannot
	// share its requests.
	NoLoadBalancing string

	// NoRespondersStatus is the status a caller gets from a service with no
	// server: 503 (the zero value) or 504 where the broker cannot tell.
	NoRespondersStatus int

	// MaxBodyBytes is the largest body the broker carries in one message;
	// the large-body case uses min(1 MiB, MaxBodyBytes). Zero means 1 MiB.
	MaxBodyBytes int64

	// Timeout scales the suite's waits for slow brokers; zero means 10 s.
	Timeout time.Duration

	// RequeueAtClose, when set, is why Reply(nil, Requeue) leaves the
	// request with the listener until it closes (ActiveMQ, whose STOMP
	// NACK dead-letters) instead of redelivering it at once.
	RequeueAtClose string

	// StreamBytes is the body size of the stream download and upload
	// cases, in bytes; zero means $HTTPBUS_STREAM_BYTES if set, else
	// 64 MiB (8 MiB under the race detector, which slows copying about
	// tenfold; CI runs the stream cases again at 64 MiB without it).
	StreamBytes int64
}

func (f Features) timeout() time.Duration {
	if f.Timeout > 0 {
		return f.Timeout
	}
	return 10 * time.Second
}

// Run runs every conformance case as a subtest of t.
func Run(t *testing.T, h Harness) {
	if h.Listen == nil || h.Dial == nil {
		t.Fatal("transporttest: Harness.Listen and Harness.Dial are required")
	}
	s := &suite{h: h}
	for _, c := range Cases() {
		t.Run(c.Name, func(t *testing.T) { c.run(s, t) })
	}
}

// Case is one conformance case.
type Case struct {
	Name string
	run  func(*suite, *testing.T)
}

// Cases lists the conformance cases in the order Run runs them.
func Cases() []Case {
	return []Case{
		{"ContractReceiveReply", (*suite).contractReceiveReply},
		{"ContractHold", (*suite).contractHold},
		{"ContractRequeue", (*suite).contractRequeue},
		{"ContractReject", (*suite).contractReject},
		{"ContractDrainClose", (*suite).contractDrainClose},
		{"ContractInbox", (*suite).contractInbox},
		{"RoundTrip", (*suite).roundTrip},
		{"LargeBody", (*suite).largeBody},
		{"Concurrent", (*suite).concurrent},
		{"LoadBalancing", (*suite).loadBalancing},
		{"Notifications", (*suite).notifications},
		{"DeadlineReachesHandler", (*suite).deadlineReachesHandler},
		{"HandlerContextEndsAtDeadline", (*suite).handlerDeadline},
		{"ExpiredRequestNotRun", (*suite).expiredNotRun},
		{"NoResponders", (*suite).noResponders},
		{"Shutdown", (*suite).shutdown},
		{"MalformedFrame", (*suite).malformed},
		{"PanickingHandler", (*suite).panicking},
		{"BodyTooLarge", (*suite).tooLarge},
		{"HeaderTooLarge", (*suite).headerTooLarge},
		{"ForeignMessage", (*suite).foreign},
		{"InvalidUTF8Header", (*suite).invalidUTF8},
		{"StreamDownload", (*suite).streamDownload},
		{"StreamUpload", (*suite).streamUpload},
		{"StreamUploadOneInstance", (*suite).streamUploadOneInstance},
		{"StreamSlowReader", (*suite).streamSlowReader},
		{"StreamCreditBytes", (*suite).streamCreditBytes},
		{"StreamFlush", (*suite).streamFlush},
		{"StreamFieldsInFrame", (*suite).streamFieldsInFrame},
		{"StreamTrailers", (*suite).streamTrailers},
		{"StreamChunkedRequest", (*suite).streamChunkedRequest},
		{"StreamCancel", (*suite).streamCancel},
		{"StreamCancelBeforeResponse", (*suite).streamCancelBeforeResponse},
		{"StreamServerKilled", (*suite).streamServerKilled},
		{"StreamLostPart", (*suite).streamLostPart},
		{"StreamDuplicatedPart", (*suite).streamDuplicatedPart},
		{"SwitchingProtocols", (*suite).switchingProtocols},
	}
}

type suite struct{ h Harness }

func unique(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// serve starts a Server for a new listener and returns it; the server is
// shut down at cleanup.
func (s *suite) serve(t *testing.T, srv *transport.Server, cfg transport.ListenConfig) *transport.Server {
	t.Helper()
	l := s.h.Listen(t, cfg)
	if srv.Logger == nil {
		srv.Logger = Logger(t)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.h.Features.timeout())
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-errc; !errors.Is(err, transport.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return srv
}

func (s *suite) client(t *testing.T) (*http.Client, transport.Conn) {
	t.Helper()
	c := s.h.Dial(t)
	t.Cleanup(func() { c.Close() })
	return &http.Client{Transport: transport.NewRoundTripper(c)}, c
}

func (s *suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), s.h.Features.timeout())
	t.Cleanup(cancel)
	return ctx
}

// echo answers with what it saw: method, path, query, host and length in
// X- headers, X-Multi values echoed, the body echoed, the status from
// X-Status.
func echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("X-Method", r.Method)
	h.Set("X-Path", r.URL.EscapedPath())
	h.Set("X-Query", r.URL.RawQuery)
	h.Set("X-Host", r.Host)
	h.Set("X-Content-Length", strconv.FormatInt(r.ContentLength, 10))
	h.Set("X-Body-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type", r.Header.Get("Content-Type"))
	if dl, ok := r.Context().Deadline(); ok {
		h.Set("X-Deadline", strconv.FormatInt(dl.UnixMilli(), 10))
	}
	for _, v := range r.Header.Values("X-Multi") {
		h.Add("X-Multi", v)
	}
	h.Set("Content-Type", "application/octet-stream")
	status := http.StatusOK
	if v := r.Header.Get("X-Status"); v != "" {
		status, _ = strconv.Atoi(v)
	}
	w.WriteHeader(status)
	w.Write(body)
}

func (s *suite) roundTrip(t *testing.T) {
	svc := unique("rt")
	s.serve(t, &transport.Server{Handler: http.HandlerFunc(echo)}, transport.ListenConfig{Service: svc})
	client, _ := s.client(t)
	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	cases := []struct {
		method, target string
		body           []byte
		status         int
		wantPath       string
		wantQuery      string
	}{
		{"GET", "/items/42", nil, 200, "/items/42", ""},
		{"POST", "/items?x=1&x=2&y=a%20b", []byte(`{"name":"x"}`), 201, "/items", "x=1&x=2&y=a%20b"},
		{"PUT", "/a%2Fb/c", binary, 200, "/a%2Fb/c", ""},
		{"DELETE", "/items/42", nil, 204, "/items/42", ""},
		{"PATCH", "/", []byte("patch"), 418, "/", ""},
		{"PROPFIND", "/dav/", nil, 207, "/dav/", ""},
		{"POST", "/empty", []byte{}, 500, "/empty", ""},
		{"GET", "/missing", nil, 404, "/missing", ""},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.target, func(t *testing.T) {
			req, err := http.NewRequestWithContext(s.ctx(t), c.method, "http://"+svc+c.target, bytes.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Add("X-Multi", "one")
			req.Header.Add("X-Multi", "two, three")
			req.Header.Set("X-Status", strconv.Itoa(c.status))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d (%s: %q)", resp.StatusCode, c.status, resp.Header.Get(transport.HeaderError), got)
			}
			for k, want := range map[string]string{
				"X-Method": c.method, "X-Path": c.wantPath, "X-Query": c.wantQuery, "X-Host": svc,
				"X-Content-Length": strconv.Itoa(len(c.body)), "X-Body-Length": strconv.Itoa(len(c.body)),
			} {
				if g := resp.Header.Get(k); g != want {
					t.Errorf("%s = %q, want %q", k, g, want)
				}
			}
			if g := resp.Header.Values("X-Multi"); len(g) != 2 || g[0] != "one" || g[1] != "two, three" {
				t.Errorf("X-Multi = %q, want [one, two, three] as two values", g)
			}
			wantBody := c.body
			if c.status == 204 {
				wantBody = nil
			}
			if !bytes.Equal(got, wantBody) {
				t.Errorf("body %q, want %q", trim(got), trim(wantBody))
			}
		})
	}
}

func trim(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}

func (s *suite) largeBody(t *testing.T) {
	n := int64(1 << 20)
	if m := s.h.Features.MaxBodyBytes; m > 0 && m < n {
		n = m
	}
	svc := unique("large")
	s.serve(t, &transport.Server{Handler: http.HandlerFunc(echo)}, transport.ListenConfig{Service: svc})
	client, _ := s.client(t)
	body := make([]byte, n)
	rand.Read(body)
	req, _ := http.NewRequestWithContext(s.ctx(t), "POST", "http://"+svc+"/large", bytes.NewReader(body))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d (%s), want 200", resp.StatusCode, resp.Header.Get(transport.HeaderError))
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("%d-byte body came back as %d bytes, or changed", len(body), len(got))
	}
}

func (s *suite) concurrent(t *testing.T) {
	svc := unique("conc")
	s.serve(t, &transport.Server{Handler: http.HandlerFunc(echo), MaxInFlight: 64}, transport.ListenConfig{Service: svc})
	client, _ := s.client(t)
	ctx := s.ctx(t)
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := strconv.Itoa(i)
			req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+svc+"/req/"+id, strings.NewReader("body-"+id))
			resp, err := client.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			got, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(got) != "body-"+id || resp.Header.Get("X-Path") != "/req/"+id {
				errs <- fmt.Errorf("request %s: status %d, path %q, body %q", id, resp.StatusCode, resp.Header.Get("X-Path"), got)
			}
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed++; failed <= 5 {
			t.Error(err)
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d concurrent requests failed or were mismatched", failed, n)
	}
}

func (s *suite) loadBalancing(t *testing.T) {
	if r := s.h.Features.NoLoadBalancing; r != "" {
		t.Skip("backend declares no load balancing: " + r)
	}
	svc := unique("lb")
	var counts [2]atomic.Int64
	for i := range counts {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			counts[i].Add(1)
			io.WriteString(w, strconv.Itoa(i))
		})
		s.serve(t, &transport.Server{Handler: h}, transport.ListenConfig{Service: svc})
	}
	client, _ := s.client(t)
	ctx := s.ctx(t)
	const n, par = 200, 20
	var wg sync.WaitGroup
	var failed atomic.Int64
	for p := range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := p; i < n; i += par {
				resp, err := get(ctx, client, "http://"+svc+"/")
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	a, b := counts[0].Load(), counts[1].Load()
	if failed.Load() > 0 {
		t.Errorf("%d of %d requests failed", failed.Load(), n)
	}
	if a+b != n {
		t.Errorf("servers handled %d+%d requests, want %d in all", a, b, n)
	}
	if a == 0 || b == 0 {
		t.Errorf("load not shared: server 1 handled %d, server 2 handled %d", a, b)
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

// recorder records notifications by body.
type recorder struct {
	mu     sync.Mutex
	seen   map[string]int
	bad    []string
	notify chan struct{}
}

func newRecorder() *recorder {
	return &recorder{seen: map[string]int{}, notify: make(chan struct{}, 1)}
}

func (r *recorder) handler(topic string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		if req.Method != transport.MethodNotify || req.Host != topic {
			r.bad = append(r.bad, fmt.Sprintf("%s to host %q", req.Method, req.Host))
		}
		r.seen[string(body)]++
		r.mu.Unlock()
		select {
		case r.notify <- struct{}{}:
		default:
		}
	})
}

// waitFor waits until every id was seen, or ctx ends.
func (r *recorder) waitFor(ctx context.Context, ids []string) error {
	for {
		r.mu.Lock()
		missing := 0
		for _, id := range ids {
			if r.seen[id] == 0 {
				missing++
			}
		}
		r.mu.Unlock()
		if missing == 0 {
			return nil
		}
		select {
		case <-r.notify:
		case <-ctx.Done():
			return fmt.Errorf("%d of %d notifications not received", missing, len(ids))
		}
	}
}

func (s *suite) notifications(t *testing.T) {
	topic, other := unique("topic"), unique("other")
	svcA, svcB, svcC := unique("subA"), unique("subB"), unique("subC")
	recA, recB, recC := newRecorder(), newRecorder(), newRecorder()
	// Service A has two instances: each notification must reach one of them.
	s.serve(t, &transport.Server{Handler: recA.handler(topic)}, transport.ListenConfig{Service: svcA, Topics: []string{topic}})
	s.serve(t, &transport.Server{Handler: recA.handler(topic)}, transport.ListenConfig{Service: svcA, Topics: []string{topic}})
	s.serve(t, &transport.Server{Handler: recB.handler(topic)}, transport.ListenConfig{Service: svcB, Topics: []string{topic}})
	s.serve(t, &transport.Server{Handler: recC.handler(other)}, transport.ListenConfig{Service: svcC, Topics: []string{other}})
	client, _ := s.client(t)
	ctx := s.ctx(t)
	publish := func(prefix string, n int) []string {
		var ids []string
		for i := range n {
			id := fmt.Sprintf("%s-%d", prefix, i)
			ids = append(ids, id)
			req, _ := http.NewRequestWithContext(ctx, transport.MethodNotify, "http://"+topic+"/events", strings.NewReader(id))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("NOTIFY: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("NOTIFY answered %d (%s), want 202", resp.StatusCode, resp.Header.Get(transport.HeaderError))
			}
		}
		return ids
	}
	ids := publish("n", 20)
	for name, rec := range map[string]*recorder{"A": recA, "B": recB} {
		if err := rec.waitFor(ctx, ids); err != nil {
			t.Fatalf("service %s: %v", name, err)
		}
	}
	// A second batch fences the first: a duplicate of batch one would
	// arrive before batch two completes on a broker that keeps order per
	// subscriber.
	fence := publish("fence", 3)
	for _, rec := range []*recorder{recA, recB} {
		if err := rec.waitFor(ctx, fence); err != nil {
			t.Fatal(err)
		}
	}
	for name, rec := range map[string]*recorder{"A": recA, "B": recB} {
		rec.mu.Lock()
		for _, id := range ids {
			if n := rec.seen[id]; n != 1 {
				t.Errorf("service %s received notification %s %d times, want once", name, id, n)
			}
		}
		if len(rec.bad) > 0 {
			t.Errorf("service %s saw %v, want NOTIFY to host %q", name, rec.bad, topic)
		}
		rec.mu.Unlock()
	}
	recC.mu.Lock()
	if len(recC.seen) > 0 {
		t.Errorf("service subscribed to another topic received %d notifications", len(recC.seen))
	}
	recC.mu.Unlock()
}

func (s *suite) deadlineReachesHandler(t *testing.T) {
	svc := unique("dl")
	s.serve(t, &transport.Server{Handler: http.HandlerFunc(echo)}, transport.ListenConfig{Service: svc})
	client, _ := s.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), s.h.Features.timeout())
	defer cancel()
	want, _ := ctx.Deadline()
	resp, err := get(ctx, client, "http://"+svc+"/")
	if err != nil {
		t.Fatal(err)
	}
	v := resp.Header.Get("X-Deadline")
	if v == "" {
		t.Fatalf("handler's context has no deadline (status %d)", resp.StatusCode)
	}
	ms, _ := strconv.ParseInt(v, 10, 64)
	if d := time.UnixMilli(ms).Sub(want); d < -2*time.Millisecond || d > 2*time.Millisecond {
		t.Errorf("handler's deadline is %v off the caller's", d)
	}
}

func (s *suite) handlerDeadline(t *testing.T) {
	svc := unique("hdl")
	ended := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		ended <- r.Context().Err()
	})
	s.serve(t, &transport.Server{Handler: h}, transport.ListenConfig{Service: svc})
	client, _ := s.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	resp, err := get(ctx, client, "http://"+svc+"/slow")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("status %d, want 504", resp.StatusCode)
	}
	if el := time.Since(start); el > 500*time.Millisecond+s.h.Features.timeout()/2 {
		t.Errorf("caller waited %v past a 500ms deadline", el)
	}
	select {
	case err := <-ended:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("handler's context ended with %v, want DeadlineExceeded", err)
		}
	case <-time.After(s.h.Features.timeout()):
		t.Error("handler's context did not end at the caller's deadline")
	}
}

func (s *suite) expiredNotRun(t *testing.T) {
	svc := unique("exp")
	var ran atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/expired" {
			ran.Add(1)
		}
		io.WriteString(w, "ran")
	})
	s.serve(t, &transport.Server{Handler: h}, transport.ListenConfig{Service: svc})
	_, conn := s.client(t)
	frame, err := transport.EncodeRequest(httptestRequest("GET", "/expired"), svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := conn.Call(ctx, svc, &transport.Message{Body: frame, ContentType: transport.MediaType, Deadline: time.Now().Add(-time.Second)})
	switch {
	case err != nil:
		if !errors.Is(err, transport.ErrTimeout) {
			t.Errorf("Call of an expired request: %v, want ErrTimeout or a 504 response", err)
		}
	default:
		r, err := transport.DecodeResponse(resp.Body, nil, transport.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		if r.StatusCode != http.StatusGatewayTimeout {
			t.Errorf("expired request answered %d, want 504", r.StatusCode)
		}
	}
	// A later good request proves the server is alive and that the expired
	// one was consumed, not left queued.
	client, _ := s.client(t)
	if resp, err := get(s.ctx(t), client, "http://"+svc+"/next"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("next request: %v %v", resp, err)
	}
	if n := ran.Load(); n != 0 {
		t.Errorf("handler ran %d times for an expired request", n)
	}
}

func httptestRequest(method, target string) *http.Request {
	r, err := http.NewRequest(method, "http://x"+target, nil)
	if err != nil {
		panic(err)
	}
	return r
}

func (s *suite) noResponders(t *testing.T) {
	want := s.h.Features.NoRespondersStatus
	if want == 0 {
		want = http.StatusServiceUnavailable
	}
	client, _ := s.client(t)
	timeout := s.h.Features.timeout()
	if want == http.StatusGatewayTimeout {
		timeout = time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := get(ctx, client, "http://"+unique("nobody")+"/")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != want {
		t.Errorf("status %d (%s), want %d", resp.StatusCode, resp.Header.Get(transport.HeaderError), want)
	}
	if resp.Header.Get(transport.HeaderError) == "" {
		t.Errorf("no %s header on a response made by httpbus", transport.HeaderError)
	}
}

func (s *suite) shutdown(t *testing.T) {
	svc := unique("shut")
	const n = 5
	entered := make(chan struct{}, n)
	release := make(chan struct{})
	var after atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/after" {
			after.Add(1)
			return
		}
		entered <- struct{}{}
		<-release
		io.WriteString(w, "done")
	})
	l := s.h.Listen(t, transport.ListenConfig{Service: svc})
	srv := &transport.Server{Handler: h, Logger: Logger(t)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	client, _ := s.client(t)
	ctx := s.ctx(t)
	results := make(chan string, n)
	for range n {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+svc+"/work", nil)
			resp, err := client.Do(req)
			if err != nil {
				results <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- fmt.Sprintf("%d %s", resp.StatusCode, b)
		}()
	}
	for range n {
		select {
		case <-entered:
		case <-ctx.Done():
			t.Fatal("requests did not reach the handler")
		}
	}
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()
	select {
	case err := <-served:
		if !errors.Is(err, transport.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	case <-ctx.Done():
		t.Fatal("Serve did not return after Shutdown")
	}
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while %d requests were in flight", err, n)
	default:
	}
	// A request sent now must not be taken by the stopping server.
	actx, acancel := context.WithTimeout(ctx, time.Second)
	if resp, err := get(actx, client, "http://"+svc+"/after"); err == nil && resp.StatusCode == 200 {
		t.Errorf("a request sent during Shutdown was served")
	}
	acancel()
	close(release)
	for range n {
		if r := <-results; r != "200 done" {
			t.Errorf("in-flight request got %q, want \"200 done\"", r)
		}
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if after.Load() != 0 {
		t.Errorf("handler ran for a request sent after Shutdown")
	}
}

func (s *suite) malformed(t *testing.T) {
	svc := unique("bad")
	s.serve(t, &transport.Server{Handler: http.HandlerFunc(echo)}, transport.ListenConfig{Service: svc})
	client, conn := s.client(t)
	for _, frame := range []string{
		"this is not HTTP\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nshort",
		"GET /\x00 HTTP/1.1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
		"\x00\x01\x02\xff\xfe",
	} {
		resp, err := conn.Call(s.ctx(t), svc, &transport.Message{Body: []byte(frame), ContentType: transport.MediaType})
		if errors.Is(err, transport.ErrMalformedFrame) {
			continue // the backend refused to send it: as good as a 400
		}
		if err != nil {
			t.Errorf("frame %q: Call: %v, want a 400 response or ErrMalformedFrame", frame, err)
			continue
		}
		r, err := transport.DecodeResponse(resp.Body, nil, transport.Limits{})
		if err != nil {
			t.Fatalf("frame %q: response does not decode: %v", frame, err)
		}
		if r.StatusCode != http.StatusBadRequest {
			t.Errorf("frame %q answered %d, want 400", frame, r.StatusCode)
		}
	}
	if resp, err := get(s.ctx(t), client, "http://"+svc+"/next"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("next request after malformed frames: %v %v", resp, err)
	}
}

func (s *suite) panicking(t *testing.T) {
	svc := unique("panic")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/panic" {
			panic("boom")
		}
		io.WriteString(w, "fine")
	})
	s.serve(t, &transport.Server{Handler: h, Logger: DiscardLogger()}, transport.ListenConfig{Service: svc})
	client, _ := s.client(t)
	for range 3 {
		resp, err := get(s.ctx(t), client, "http://"+svc+"/panic")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 500 {
			t.Errorf("panicking handler answered %d, want 500", resp.StatusCode)
		}
	}
	if resp, err := get(s.ctx(t), client, "http://"+svc+"/next"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("next request after panics: %v %v", resp, err)
	}
}

func (s *suite) tooLarge(t *testing.T) {
	svc := unique("big")
	const limit = 64 << 10
	s.serve(t, &transport.Server{Handler: http.HandlerFunc(echo), MaxBodyBytes: limit}, transport.ListenConfig{Service: svc})
	_, conn := s.client(t)
	post := func(rt *transport.RoundTripper, size int) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(s.ctx(t), "POST", "http://"+svc+"/upload", bytes.NewReader(make([]byte, size)))
		resp, err := (&http.Client{Transport: rt}).Do(req)
		if err != nil {
			t.Fatalf("POST %d bytes: %v", size, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	// The server's limit: the frame is carried, the server refuses it.
	if resp := post(&transport.RoundTripper{Conn: conn, MaxBodyBytes: -1}, 2*limit); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("body over the server's limit answered %d, want 413", resp.StatusCode)
	}
	// The caller's limit: 2 MiB over a 1 MiB limit is refused before sending.
	if resp := post(&transport.RoundTripper{Conn: conn, MaxBodyBytes: 1 << 20}, 2<<20); resp.StatusCode != http.StatusRequestEntityTooLarge || resp.Header.Get(transport.HeaderError) == "" {
		t.Errorf("2 MiB body over a 1 MiB limit answered %d (%q), want 413 made by httpbus", resp.StatusCode, resp.Header.Get(transport.HeaderError))
	}
	if resp := post(transport.NewRoundTripper(conn), 100); resp.StatusCode != 200 {
		t.Errorf("next request answered %d, want 200", resp.StatusCode)
	}
}

func (s *suite) headerTooLarge(t *testing.T) {
	svc := unique("hdr")
	s.serve(t, &transport.Server{Handler: http.HandlerFunc(echo), MaxHeaderBytes: 4096}, transport.ListenConfig{Service: svc})
	client, _ := s.client(t)
	req, _ := http.NewRequestWithContext(s.ctx(t), "GET", "http://"+svc+"/", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 8192))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("8 KiB header over a 4 KiB limit answered %d, want 431", resp.StatusCode)
	}
	if resp, err := get(s.ctx(t), client, "http://"+svc+"/next"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("next request: %v %v", resp, err)
	}
}

func (s *suite) foreign(t *testing.T) {
	svc := unique("foreign")
	s.serve(t, &transport.Server{Handler: http.HandlerFunc(echo)}, transport.ListenConfig{Service: svc})
	_, conn := s.client(t)
	resp, err := conn.Call(s.ctx(t), svc, &transport.Message{Body: []byte("plain payload"), ContentType: "text/plain"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := transport.DecodeResponse(resp.Body, nil, transport.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 || string(body) != "plain payload" || r.Header.Get("X-Method") != "POST" || r.Header.Get("X-Path") != "/" {
		t.Errorf("foreign message served as %s %s → %d %q, want POST / echoed", r.Header.Get("X-Method"), r.Header.Get("X-Path"), r.StatusCode, body)
	}
	if ct := r.Header.Get("X-Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("handler saw Content-Type %q, want text/plain", ct)
	}
}

// invalidUTF8 sends a header value that is not UTF-8 (HTTP allows obs-text
// bytes): it is served, and the handler sees the bytes unchanged.
func (s *suite) invalidUTF8(t *testing.T) {
	svc := unique("utf8")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Echo", r.Header.Get("X-Latin1"))
	})
	s.serve(t, &transport.Server{Handler: h}, transport.ListenConfig{Service: svc})
	client, _ := s.client(t)
	req, _ := http.NewRequestWithContext(s.ctx(t), "GET", "http://"+svc+"/", nil)
	req.Header.Set("X-Latin1", "caf\xe9 \xff")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Echo") != "caf\xe9 \xff" {
		t.Errorf("got %d, handler saw %q, want 200 and the bytes unchanged", resp.StatusCode, resp.Header.Get("X-Echo"))
	}
}

// EchoFrames returns the frames of one echo exchange as httpbus sends them,
// for benchmarks of a raw client carrying httpbus's message shape: the
// request frame of a POST of req to http://bench/echo (Content-Type
// application/octet-stream), and the response frame of a 200 whose body is
// resp. An encoding error fails tb (Fatal).
func EchoFrames(tb testing.TB, req, resp []byte) (reqFrame, respFrame []byte) {
	tb.Helper()
	r, err := http.NewRequest(http.MethodPost, "http://bench/echo", bytes.NewReader(req))
	if err != nil {
		tb.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/octet-stream")
	if reqFrame, err = transport.EncodeRequest(r, "bench", req); err != nil {
		tb.Fatal(err)
	}
	respFrame, err = transport.EncodeResponse(http.StatusOK, http.Header{"Content-Type": {"application/octet-stream"}}, resp, http.MethodPost)
	if err != nil {
		tb.Fatal(err)
	}
	return reqFrame, respFrame
}

// CodecClient returns an http.Client for benchmarks of the least that any
// httpbus backend does per call (the "raw-codec" floor): its RoundTripper
// reads the request's body, encodes the request as a frame
// (transport.EncodeRequest, Host set to the URL's host), hands it to
// exchange with the request's context, and decodes the frame exchange
// returns (transport.DecodeResponse). There is no Server, deadline
// bookkeeping, stream, in-flight bound or error mapping: what it costs over
// a raw client carrying the same frames is the cost of an http.Client
// talking HTTP/1.1 frames, which httpbus's design (a plain *http.Client,
// frames in WIRE.md §1) requires. Errors: Do returns, wrapped in a
// *url.Error, exchange's error, the request body's read error, or
// transport.ErrMalformedFrame and *transport.TooLargeError from decoding
// (default transport.Limits).
func CodecClient(exchange func(ctx context.Context, service string, frame []byte) ([]byte, error)) *http.Client {
	return &http.Client{Transport: codecRoundTripper(exchange)}
}

type codecRoundTripper func(ctx context.Context, service string, frame []byte) ([]byte, error)

func (rt codecRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		body = b
	}
	frame, err := transport.EncodeRequest(req, req.URL.Host, body)
	if err != nil {
		return nil, err
	}
	resp, err := rt(req.Context(), req.URL.Host, frame)
	if err != nil {
		return nil, err
	}
	return transport.DecodeResponse(resp, req, transport.Limits{})
}

// ServeFrame is the server half of the raw-codec floor (see CodecClient):
// it decodes a request frame (transport.DecodeRequest), runs h on a
// ResponseWriter that buffers the header and body, and returns the
// response frame (transport.EncodeResponse). A frame that does not decode
// gets transport.ErrorResponse (400 when malformed, 413 over the default
// transport.Limits). Like net/http (and httpbus's Server), it sniffs a
// Content-Type when the handler set none: with a handler that sets none,
// a floor without that work would not be one (http.DetectContentType was
// ~7,000–9,000 instructions per 256-byte call, callgrind, issue 13).
func ServeFrame(h http.Handler, frame []byte) []byte {
	req, err := transport.DecodeRequest(frame, transport.Limits{})
	if err != nil {
		return transport.ErrorResponse(err)
	}
	w := &bufferWriter{h: http.Header{}}
	h.ServeHTTP(w, req)
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if _, typed := w.h["Content-Type"]; !typed && len(w.body) > 0 && w.h.Get("Content-Encoding") == "" {
		w.h.Set("Content-Type", http.DetectContentType(w.body))
	}
	out, err := transport.EncodeResponse(w.status, w.h, w.body, req.Method)
	if err != nil {
		return transport.ErrorResponse(err)
	}
	return out
}

// bufferWriter is the least http.ResponseWriter: a header, a status and a
// body kept in memory.
type bufferWriter struct {
	h      http.Header
	status int
	body   []byte
}

func (w *bufferWriter) Header() http.Header { return w.h }

func (w *bufferWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *bufferWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.body = append(w.body, p...)
	return len(p), nil
}
