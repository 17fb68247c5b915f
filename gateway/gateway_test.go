package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	_ "github.com/httpbus/httpbus/amqp"
	"github.com/httpbus/httpbus/gateway"
	_ "github.com/httpbus/httpbus/inmem"
	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/internal/natsserver"
	"github.com/httpbus/httpbus/internal/webapp"
	_ "github.com/httpbus/httpbus/nats"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Keep-alive connections of http.Transports the tests do not own
		// (the Bridge's default one) outlive the tests by design.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

var seq atomic.Int64

func uniqueService(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), seq.Add(1))
}

// backend names a transport for the end-to-end tests.
type backend struct {
	name string
	url  func(t testing.TB) string // broker URL without service
	// fixed: use fixed service names, so that the durable queues some
	// brokers keep are reused from run to run rather than piled up.
	fixed bool
}

var backends = []backend{
	{name: "mem", url: func(testing.TB) string { return "mem:" }},
	{name: "nats", url: brokertest.NATS, fixed: true},
	{name: "amqp", url: brokertest.AMQP, fixed: true},
}

func (b backend) service(t *testing.T, name string) string {
	if b.fixed {
		return "httpbus-gwtest-" + name
	}
	return uniqueService("gw-" + name)
}

// listenURL adds service= to the broker URL (mem: the host names it).
func listenURL(t *testing.T, base, service string) string {
	if base == "mem:" {
		return "mem://" + service
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("service", service)
	u.RawQuery = q.Encode()
	return u.String()
}

// serveBridge serves a Bridge to upstream as service until the test ends.
func serveBridge(t *testing.T, base, service string, upstream *url.URL) {
	t.Helper()
	l, err := transport.Listen(t.Context(), listenURL(t, base, service))
	if err != nil {
		t.Fatal(err)
	}
	transporttest.Serve(t, &transport.Server{Handler: &gateway.Bridge{Upstream: upstream, Logger: testLogger(t)}, Logger: testLogger(t)}, l)
}

func dial(t *testing.T, base string) transport.Conn {
	t.Helper()
	c, err := transport.Dial(t.Context(), base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// logBuffer collects JSON slog records.
type logBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	written chan struct{} // closed and replaced on each write
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.written != nil {
		close(l.written)
		l.written = nil
	}
	return l.b.Write(p)
}

// waitRecords waits up to 10 s for a record whose attribute key has value
// want (the access log is written after the response has gone out) and
// returns every such record.
func (l *logBuffer) waitRecords(t *testing.T, key, want string) []map[string]any {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		l.mu.Lock()
		recs := l.recordsLocked(t, key, want)
		if l.written == nil {
			l.written = make(chan struct{})
		}
		written := l.written
		l.mu.Unlock()
		if len(recs) > 0 {
			return recs
		}
		select {
		case <-written:
		case <-timeout:
			t.Fatalf("no access record with %s=%s", key, want)
		}
	}
}

func (l *logBuffer) recordsLocked(t *testing.T, key, want string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		if fmt.Sprint(rec[key]) == want {
			out = append(out, rec)
		}
	}
	return out
}

// echoed is what app.py's /echo answers.
type echoed struct {
	Method     string            `json:"method"`
	Path       string            `json:"path"`
	Query      string            `json:"query"`
	Host       string            `json:"host"`
	Headers    map[string]string `json:"headers"`
	BodyLen    int               `json:"body_len"`
	BodySHA256 string            `json:"body_sha256"`
	JSON       any               `json:"json"`
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, req *http.Request) reply {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL, err)
	}
	return reply{resp.StatusCode, resp.Header, b}
}

func get(t *testing.T, u string) reply {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

func (r reply) echo(t *testing.T) echoed {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d, want 200; Httpbus-Error %q; body %q", r.status, r.header.Get(transport.HeaderError), r.body)
	}
	var e echoed
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("echo body %q: %v", r.body, err)
	}
	return e
}

// wantError checks an answer made by httpbus.
func (r reply) wantError(t *testing.T, status int, errHas string) {
	t.Helper()
	if r.status != status {
		t.Errorf("status %d, want %d; Httpbus-Error %q; body %q", r.status, status, r.header.Get(transport.HeaderError), r.body)
		return
	}
	if got := r.header.Get(transport.HeaderError); !strings.Contains(got, errHas) {
		t.Errorf("Httpbus-Error %q does not mention %q", got, errHas)
	}
}

func testLogger(t *testing.T) *slog.Logger { return transporttest.Logger(t) }

func slogJSON(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }

// startNATS starts an embedded nats-server on port; the returned func (also
// run at cleanup) stops it.
func startNATS(t *testing.T, port int) (stop func()) {
	t.Helper()
	_, stop, err := natsserver.Start(natsserver.Config{Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return stop
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// pattern is what app.py's /bytes sends: 0, 1, …, 255, 0, …
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}

// TestStack runs curl-like requests through the whole chain, on each
// backend: http.Client → Gateway → broker → Bridge → gunicorn + Flask.
func TestStack(t *testing.T) {
	app := webapp.Start(t)
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			base := b.url(t)
			svc := b.service(t, "app")
			down := b.service(t, "down")
			serveBridge(t, base, svc, app.URL)
			serveBridge(t, base, down, &url.URL{Scheme: "http", Host: hangUp(t)})
			conn := dial(t, base)
			var access logBuffer
			gw := &gateway.Gateway{Conn: conn, AccessLog: slogJSON(&access), Logger: testLogger(t)}
			web := httptest.NewServer(gw)
			t.Cleanup(web.Close)
			webHost := strings.TrimPrefix(web.URL, "http://")

			t.Run("get", func(t *testing.T) {
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, web.URL+"/"+svc+"/echo/a%2Fb?x=1&y=2", nil)
				req.Header.Set("X-Forwarded-For", "6.6.6.6") // a client's claim: dropped
				req.Header.Set("Connection", "X-Hop")        // X-Hop is hop-by-hop: stripped
				req.Header.Set("X-Hop", "1")
				req.Header.Set("X-End-To-End", "kept")
				e := do(t, req).echo(t)
				if e.Method != "GET" || e.Path != "/echo/a/b" || e.Query != "x=1&y=2" {
					t.Errorf("app saw %s %s ? %s, want GET /echo/a/b ? x=1&y=2", e.Method, e.Path, e.Query)
				}
				h := e.Headers
				if h["X-Forwarded-For"] != "127.0.0.1" || h["X-Forwarded-Proto"] != "http" || h["X-Forwarded-Host"] != webHost {
					t.Errorf("X-Forwarded-For %q, -Proto %q, -Host %q; want 127.0.0.1, http, %s",
						h["X-Forwarded-For"], h["X-Forwarded-Proto"], h["X-Forwarded-Host"], webHost)
				}
				if _, ok := h["X-Hop"]; ok {
					t.Errorf("hop-by-hop header X-Hop reached the app: %v", h)
				}
				if h["X-End-To-End"] != "kept" {
					t.Errorf("X-End-To-End %q, want kept", h["X-End-To-End"])
				}
			})

			t.Run("post json", func(t *testing.T) {
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, web.URL+"/"+svc+"/echo", strings.NewReader(`{"item":42,"name":"tea"}`))
				req.Header.Set("Content-Type", "application/json")
				e := do(t, req).echo(t)
				want := map[string]any{"item": float64(42), "name": "tea"}
				if fmt.Sprint(e.JSON) != fmt.Sprint(want) || e.Method != "POST" {
					t.Errorf("app saw %s with JSON %v, want POST with %v", e.Method, e.JSON, want)
				}
			})

			// Streams (issue 10): a body larger than any broker message
			// crosses both ways, 24 MiB (the upload) by default.
			size := 24 << 20
			if testing.Short() {
				size = 3 << 20
			}
			t.Run(fmt.Sprintf("upload and download %d bytes", size), func(t *testing.T) {
				body := pattern(size)
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, web.URL+"/"+svc+"/echo", bytes.NewReader(body))
				e := do(t, req).echo(t)
				if e.BodyLen != size || e.BodySHA256 != sha(body) {
					t.Errorf("app got %d bytes sha256 %s, want %d bytes %s", e.BodyLen, e.BodySHA256, size, sha(body))
				}
				r := get(t, fmt.Sprintf("%s/%s/bytes?n=%d", web.URL, svc, size))
				if r.status != http.StatusOK || !bytes.Equal(r.body, body) {
					t.Errorf("download: status %d, %d bytes, intact %v", r.status, len(r.body), bytes.Equal(r.body, body))
				}
			})
			t.Run("upload over the gateway's limit", func(t *testing.T) {
				const limit = 1 << 20
				capped := httptest.NewServer(&gateway.Gateway{Conn: conn, MaxBodyBytes: limit, Logger: testLogger(t)})
				defer capped.Close()
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, capped.URL+"/"+svc+"/echo", bytes.NewReader(pattern(limit+1)))
				do(t, req).wantError(t, http.StatusRequestEntityTooLarge, "larger than the limit")
			})

			t.Run("upstream 500 stays 500", func(t *testing.T) {
				r := get(t, web.URL+"/"+svc+"/status/500")
				if r.status != 500 || string(r.body) != "status 500\n" || r.header.Get(transport.HeaderError) != "" {
					t.Errorf("status %d body %q Httpbus-Error %q; want the app's own 500", r.status, r.body, r.header.Get(transport.HeaderError))
				}
			})

			t.Run("upstream down gives 502", func(t *testing.T) {
				get(t, web.URL+"/"+down+"/ping").wantError(t, http.StatusBadGateway, "upstream")
			})

			t.Run("unknown service gives 503", func(t *testing.T) {
				get(t, web.URL+"/"+b.service(t, "nobody")+"/x").wantError(t, http.StatusServiceUnavailable, "no responders")
			})

			t.Run("timeout gives 504", func(t *testing.T) {
				short := &gateway.Gateway{Conn: conn, Timeout: 500 * time.Millisecond, Logger: testLogger(t)}
				w := httptest.NewServer(short)
				defer w.Close()
				start := time.Now()
				get(t, w.URL+"/"+svc+"/sleep?ms=5000").wantError(t, http.StatusGatewayTimeout, "timeout")
				if d := time.Since(start); d > 4*time.Second {
					t.Errorf("504 came after %v; the timeout is 500ms", d)
				}
			})

			t.Run("healthz", func(t *testing.T) {
				r := get(t, web.URL+"/healthz")
				if r.status != http.StatusOK || string(r.body) != "connected\n" {
					t.Errorf("healthz: %d %q, want 200 connected", r.status, r.body)
				}
			})

			t.Run("access log", func(t *testing.T) {
				get(t, web.URL+"/"+svc+"/status/418?q=1")
				recs := access.waitRecords(t, "path", "/"+svc+"/status/418?q=1")
				if len(recs) != 1 {
					t.Fatalf("%d access records for the request, want 1", len(recs))
				}
				rec := recs[0]
				if rec["msg"] != "request" || rec["method"] != "GET" || rec["service"] != svc || rec["status"] != float64(418) ||
					rec["bytes"] != float64(len("status 418\n")) || rec["remote"] == "" {
					t.Errorf("access record %v", rec)
				}
				if d, ok := rec["duration"].(float64); !ok || d <= 0 {
					t.Errorf("duration %v, want > 0 (ns)", rec["duration"])
				}
			})
		})
	}
}

// TestRouting checks both routing modes and the allow-list, on mem with a
// Go service that says what it saw.
func TestRouting(t *testing.T) {
	svc := uniqueService("route")
	l, err := transport.Listen(t.Context(), "mem://"+svc)
	if err != nil {
		t.Fatal(err)
	}
	srv := &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "host=%s uri=%s", r.Host, r.URL.RequestURI())
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	conn := dial(t, "mem:")

	path := httptest.NewServer(&gateway.Gateway{Conn: conn, Allow: []string{svc, "other"}})
	t.Cleanup(path.Close)
	host := httptest.NewServer(&gateway.Gateway{Conn: conn, Route: gateway.RouteHost})
	t.Cleanup(host.Close)

	tests := []struct {
		name, base, host, path string
		status                 int
		body                   string
		method                 string
	}{
		{"NOTIFY is refused", path.URL, "", "/" + svc + "/x", 405, "", transport.MethodNotify},
		{"path strips the segment", path.URL, "", "/" + svc + "/items/42?x=1", 200, "host=" + svc + " uri=/items/42?x=1", ""},
		{"path service alone", path.URL, "", "/" + svc, 200, "host=" + svc + " uri=/", ""},
		{"path keeps escapes", path.URL, "", "/" + svc + "/a%2Fb", 200, "host=" + svc + " uri=/a%2Fb", ""},
		{"path no service", path.URL, "", "/", 404, "", ""},
		{"path not allowed", path.URL, "", "/secret/x", 404, "", ""},
		{"path allowed, not running", path.URL, "", "/other/x", 503, "", ""},
		{"path bad service name", path.URL, "", "/a%3Ab/x", 404, "", ""},
		{"host leftmost label", host.URL, svc + ".example.com:8080", "/items/42", 200, "host=" + svc + " uri=/items/42", ""},
		{"host upper case", host.URL, strings.ToUpper(svc) + ".localhost", "/", 200, "host=" + svc + " uri=/", ""},
		{"host IP names no service", host.URL, "", "/" + svc + "/x", 404, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := http.MethodGet
			if tt.method != "" {
				method = tt.method
			}
			req, _ := http.NewRequestWithContext(t.Context(), method, tt.base+tt.path, nil)
			if tt.host != "" {
				req.Host = tt.host
			}
			r := do(t, req)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d (Httpbus-Error %q)", r.status, tt.status, r.header.Get(transport.HeaderError))
			}
			switch tt.status {
			case 404:
				r.wantError(t, 404, gateway.ErrNoService.Error())
			case 405:
				r.wantError(t, 405, gateway.ErrNotify.Error())
			}
			if tt.body != "" && string(r.body) != tt.body {
				t.Errorf("body %q, want %q", r.body, tt.body)
			}
		})
	}
}

// TestBridgeFlushes shows that the Bridge passes each flushed part of the
// upstream's response on at once: the first server-sent event arrives while
// the app still holds the second.
func TestBridgeFlushes(t *testing.T) {
	app := webapp.Start(t)
	web := httptest.NewServer(&gateway.Bridge{Upstream: app.URL})
	t.Cleanup(web.Close)
	resp, err := http.Get(web.URL + "/events/flush")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("Content-Type %q", ct)
	}
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "data: 0\n" {
		t.Fatalf("first event: %q, %v", line, err)
	}
	// Only now may the app send the second event.
	if r, err := http.Post(app.URL.String()+"/release/flush", "", nil); err != nil {
		t.Fatal(err)
	} else {
		r.Body.Close()
	}
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "\ndata: 1\n\n" {
		t.Errorf("rest %q, %v", rest, err)
	}
}

// TestHealthzFollowsBroker stops and restarts an embedded NATS server (the
// shared brokers are never stopped) and watches /healthz turn 503 and back
// to 200.
func TestHealthzFollowsBroker(t *testing.T) {
	port := freePort(t)
	stop := startNATS(t, port)
	conn := dial(t, fmt.Sprintf("nats://127.0.0.1:%d?reconnect_wait=50ms", port))
	web := httptest.NewServer(&gateway.Gateway{Conn: conn})
	t.Cleanup(web.Close)

	waitHealth(t, web.URL, http.StatusOK, "connected\n")
	stop()
	waitHealth(t, web.URL, http.StatusServiceUnavailable, "reconnecting\n")
	startNATS(t, port)
	waitHealth(t, web.URL, http.StatusOK, "connected\n")
	conn.Close()
	waitHealth(t, web.URL, http.StatusServiceUnavailable, "closed\n")
}

// waitHealth polls /healthz (as a load balancer does: the state has no
// event to wait on) until it answers status and body, for up to 15 s.
func waitHealth(t *testing.T, base string, status int, body string) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		r := get(t, base+"/healthz")
		if r.status == status && string(r.body) == body {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("healthz answers %d %q, want %d %q", r.status, r.body, status, body)
		case <-tick.C:
		}
	}
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// hangUp returns the address of an upstream that is down: it accepts each
// connection and closes it at once, for the length of the test. A port that
// was merely free a moment ago is not down for sure: the gateway's own
// httptest server may take it next, and then the "down" upstream answers.
func hangUp(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l.Addr().String()
}

func freePort(t *testing.T) int {
	_, p, _ := net.SplitHostPort(freeAddr(t))
	var n int
	fmt.Sscan(p, &n)
	return n
}
