package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/httpbus/httpbus/inmem"
	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, brokertest.IgnoreGoStompUnsubscribeWait()) }

var serviceSeq atomic.Int64

// uniqueService returns a service name no other test uses.
func uniqueService(t *testing.T) string {
	return fmt.Sprintf("cmdtest-%d-%d", os.Getpid(), serviceSeq.Add(1))
}

// serveMem serves h as service on inmem.Default (what mem:// URLs reach)
// until the test ends.
func serveMem(t *testing.T, service string, h http.Handler) {
	t.Helper()
	l, err := inmem.Default.Listen(t.Context(), transport.ListenConfig{Service: service})
	if err != nil {
		t.Fatal(err)
	}
	transporttest.Serve(t, &transport.Server{Handler: h}, l)
}

type result struct {
	code           int
	stdout, stderr string
}

func runCmd(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(t.Context(), args, strings.NewReader(stdin), &out, &errb)
	return result{code, out.String(), errb.String()}
}

func (r result) want(t *testing.T, code int, stderrHas ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range stderrHas {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr %q does not mention %q", r.stderr, s)
		}
	}
}

// inspect answers with what it received, as text.
var inspect = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("X-Seen-Method", r.Method)
	w.Header().Add("X-Multi", "a")
	w.Header().Add("X-Multi", "b")
	fmt.Fprintf(w, "method=%s host=%s uri=%s x-a=%s body=%s", r.Method, r.Host, r.URL.RequestURI(), r.Header.Get("X-A"), b)
})

func TestCallRoundTrip(t *testing.T) {
	svc := uniqueService(t)
	serveMem(t, svc, inspect)

	tests := []struct {
		name string
		args []string
		want []string // in stdout
	}{
		{"get host form", []string{"mem://" + svc + "/items/42?x=1"},
			[]string{"HTTP/1.1 200 OK\n", "X-Multi: a\nX-Multi: b\n", "\n\nmethod=GET host=" + svc + " uri=/items/42?x=1 x-a= body="}},
		{"get path form", []string{"mem:///" + svc + "/a%2Fb"},
			[]string{"method=GET host=" + svc + " uri=/a%2Fb"}},
		{"post with data and header, flags after URL", []string{"mem://" + svc + "/p", "-d", "hello", "-H", "X-A: 1"},
			[]string{"X-Seen-Method: POST", "method=POST", "x-a=1 body=hello"}},
		{"explicit method", []string{"-X", "PUT", "-d", "", "mem://" + svc + "/"},
			[]string{"method=PUT host=" + svc + " uri=/ x-a= body="}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(t, "", append([]string{"call"}, tt.args...)...)
			r.want(t, exitOK)
			for _, w := range tt.want {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("stdout does not contain %q:\n%s", w, r.stdout)
				}
			}
		})
	}
}

func TestCallDataFromFileAndStdin(t *testing.T) {
	svc := uniqueService(t)
	serveMem(t, svc, inspect)
	f := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(f, []byte("from-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := runCmd(t, "", "call", "-d", "@"+f, "mem://"+svc+"/")
	r.want(t, exitOK)
	if !strings.Contains(r.stdout, "body=from-file") {
		t.Errorf("stdout %q lacks the file's body", r.stdout)
	}
	r = runCmd(t, "from-stdin", "call", "-d", "@-", "mem://"+svc+"/")
	r.want(t, exitOK)
	if !strings.Contains(r.stdout, "body=from-stdin") {
		t.Errorf("stdout %q lacks stdin's body", r.stdout)
	}
	runCmd(t, "", "call", "-d", "@"+f+".missing", "mem://"+svc+"/").want(t, exitUsage, "no such file")
}

func TestCallHandlerStatus(t *testing.T) {
	svc := uniqueService(t)
	serveMem(t, svc, http.NotFoundHandler())
	r := runCmd(t, "", "call", "mem://"+svc+"/nothing")
	r.want(t, exitOK) // a handler's 404 is an answer, as with curl
	if !strings.HasPrefix(r.stdout, "HTTP/1.1 404 Not Found\n") {
		t.Errorf("stdout %q does not start with the 404 status line", r.stdout)
	}
	runCmd(t, "", "call", "-f", "mem://"+svc+"/nothing").want(t, exitHTTPError)
}

func TestCallTransportErrors(t *testing.T) {
	svc := uniqueService(t)
	release := make(chan struct{})
	defer close(release)
	serveMem(t, svc, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	// No server for the service: 503 made by httpbus, exit 1.
	runCmd(t, "", "call", "mem:///nobody-"+svc+"/x").want(t, exitFailure, "503", "no responders", "nobody-"+svc)
	// The deadline passes: exit 1, and the message says so.
	runCmd(t, "", "call", "-timeout", "200ms", "mem://"+svc+"/slow").want(t, exitFailure, "timeout")
}

func TestCallUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no URL", []string{"call"}, "want exactly one URL"},
		{"two URLs", []string{"call", "mem://a/", "mem://b/"}, "want exactly one URL"},
		{"unknown flag", []string{"call", "-nope", "mem://a/"}, "flag provided but not defined"},
		{"malformed URL", []string{"call", "nats://us er:secret@[::1/x"}, "malformed URL"},
		{"no scheme", []string{"call", "orders/items"}, "has no scheme"},
		{"unknown scheme", []string{"call", "foo://h/svc/x"}, `unknown URL scheme "foo"`},
		{"no service", []string{"call", "nats://127.0.0.1:4222"}, "names no service"},
		{"no service mem", []string{"call", "mem:///"}, "names no service"},
		{"vhost on nats", []string{"call", "-vhost", "v", "nats://127.0.0.1:4222/s/x"}, "-vhost applies to amqp"},
		{"bad header", []string{"call", "-H", "nocolon", "mem://a/"}, "bad -H"},
		{"host header", []string{"call", "-H", "Host: x", "mem://a/"}, "names the service"},
		{"bad option", []string{"call", "-o", "novalue", "mem://a/"}, "bad -o"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"no command", nil, "usage:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(t, "", tt.args...)
			r.want(t, exitUsage, tt.want)
			if strings.Contains(r.stderr, "secret") {
				t.Errorf("stderr shows the password: %q", r.stderr)
			}
		})
	}
}

func TestParseCallURL(t *testing.T) {
	tests := []struct {
		raw, vhost string
		opts       []string
		dial, svc  string
		req        string
	}{
		{"nats://127.0.0.1:4222/orders/items/42", "", nil, "nats://127.0.0.1:4222", "orders", "http://orders/items/42"},
		{"nats://127.0.0.1:4222/orders", "", []string{"prefix=x"}, "nats://127.0.0.1:4222?prefix=x", "orders", "http://orders/"},
		{"nats://h/orders/a?b=c&d=e", "", nil, "nats://h", "orders", "http://orders/a?b=c&d=e"},
		{"amqp://guest:pw@127.0.0.1:5672/orders/x", "", nil, "amqp://guest:pw@127.0.0.1:5672", "orders", "http://orders/x"},
		{"amqp://guest:pw@127.0.0.1:5672/orders/x", "/", nil, "amqp://guest:pw@127.0.0.1:5672/%2F", "orders", "http://orders/x"},
		{"amqp://h/orders/x", "prod", nil, "amqp://h/prod", "orders", "http://orders/x"},
		{"mem://orders/items/42", "", nil, "mem:", "orders", "http://orders/items/42"},
		{"mem:///orders/items/42", "", nil, "mem:", "orders", "http://orders/items/42"},
		{"tcp://127.0.0.1:8080/orders/x", "", nil, "tcp://127.0.0.1:8080", "orders", "http://orders/x"},
	}
	for _, tt := range tests {
		got, err := parseCallURL(tt.raw, tt.vhost, tt.opts)
		if err != nil {
			t.Errorf("parseCallURL(%q, %q): %v", tt.raw, tt.vhost, err)
			continue
		}
		if got.dialURL != tt.dial || got.service != tt.svc || got.reqURL != tt.req {
			t.Errorf("parseCallURL(%q, %q) = dial %q service %q req %q; want %q %q %q",
				tt.raw, tt.vhost, got.dialURL, got.service, got.reqURL, tt.dial, tt.svc, tt.req)
		}
	}
}

func TestBenchMemSmoke(t *testing.T) {
	svc := uniqueService(t)
	r := runCmd(t, "", "bench", "-url", "mem://bench", "-service", svc, "-c", "4", "-d", "1s", "-warmup", "100ms", "-json")
	r.want(t, exitOK)
	var rep Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("bench -json printed %q: %v", r.stdout, err)
	}
	h := rep.Httpbus
	if h == nil || h.Requests == 0 || h.Errors != 0 || h.RPS <= 0 || h.P50us <= 0 || h.P99us < h.P50us || h.CPUusPerReq <= 0 {
		t.Errorf("implausible result: %+v", h)
	}
	if rep.Backend != "mem" || rep.Callers != 4 || rep.Size != 256 || rep.Raw != nil {
		t.Errorf("report header: %+v", rep)
	}

	// The table form names every column.
	r = runCmd(t, "", "bench", "-url", "mem://bench", "-service", svc, "-c", "2", "-d", "200ms", "-warmup", "0")
	r.want(t, exitOK)
	for _, col := range []string{"req/s", "p50 µs", "p90 µs", "p99 µs", "errors", "CPU µs/req", "httpbus"} {
		if !strings.Contains(r.stdout, col) {
			t.Errorf("table lacks %q:\n%s", col, r.stdout)
		}
	}
}

func TestBenchLargeBody(t *testing.T) {
	// Bigger than the default 10 MiB limit: -max-body follows -size.
	r := runCmd(t, "", "bench", "-url", "mem://bench", "-service", uniqueService(t), "-c", "1", "-d", "10s", "-n", "2", "-warmup", "0", "-size", fmt.Sprint(11<<20), "-json")
	r.want(t, exitOK)
	var rep Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Httpbus.Requests != 2 || rep.Httpbus.Errors != 0 || rep.Httpbus.Seconds > 5 {
		t.Errorf("11 MiB echo, -n 2: %+v", rep.Httpbus)
	}
}

func TestBenchTargetWithoutResponders(t *testing.T) {
	r := runCmd(t, "", "bench", "-url", "mem://bench", "-target", "nobody-"+uniqueService(t), "-d", "1s")
	r.want(t, exitFailure, "does not answer", "no responders")
}

// freeTCPAddr returns a loopback address that was free a moment ago.
func freeTCPAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestBenchRawTCP(t *testing.T) {
	r := runCmd(t, "", "bench", "-url", "tcp://"+freeTCPAddr(t), "-raw", "-c", "2", "-d", "600ms", "-warmup", "0", "-rounds", "2", "-json")
	r.want(t, exitOK)
	var rep Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Raw == nil || rep.Raw.Requests == 0 || rep.Httpbus.Requests == 0 || rep.RatioRPS <= 0 || rep.RatioP50 <= 0 {
		t.Errorf("implausible: %+v httpbus %+v raw %+v", rep, rep.Httpbus, rep.Raw)
	}
}

func TestBenchUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no url", []string{"bench"}, "-url is required"},
		{"no callers", []string{"bench", "-url", "mem://x", "-c", "0"}, "-c must be"},
		{"bad duration", []string{"bench", "-url", "mem://x", "-d", "0s"}, "-d must be"},
		{"bad duration syntax", []string{"bench", "-url", "mem://x", "-d", "ten"}, "invalid value"},
		{"no rounds", []string{"bench", "-url", "mem://x", "-rounds", "0"}, "-rounds must be"},
		{"negative size", []string{"bench", "-url", "mem://x", "-size", "-1"}, "-size must not"},
		{"stray argument", []string{"bench", "-url", "mem://x", "extra"}, "unexpected argument"},
		{"unknown scheme", []string{"bench", "-url", "foo://u:secret@h"}, `unknown URL scheme "foo"`},
		{"no scheme", []string{"bench", "-url", "127.0.0.1:4222"}, "malformed URL"},
		{"no raw twin", []string{"bench", "-url", "tcp+tls://127.0.0.1:1", "-raw", "-d", "10ms"}, "no raw twin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(t, "", tt.args...)
			r.want(t, exitUsage, tt.want)
			if strings.Contains(r.stderr, "secret") {
				t.Errorf("stderr shows the password: %q", r.stderr)
			}
		})
	}
}

func TestHistogramPercentiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 10000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 5000 * time.Microsecond}, {90, 9000 * time.Microsecond}, {99, 9900 * time.Microsecond}, {100, 10000 * time.Microsecond}} {
		got := h.percentile(c.p)
		if d := float64(got-c.want) / float64(c.want); d < -0.02 || d > 0.02 {
			t.Errorf("p%v = %v, want %v ±2%%", c.p, got, c.want)
		}
	}
	var small histogram
	small.record(3)
	small.record(100)
	if got := small.percentile(50); got != 3 {
		t.Errorf("exact small value: p50 = %v, want 3ns", got)
	}
	var merged histogram
	merged.merge(&h)
	merged.merge(&small)
	if merged.count() != 10002 || merged.max != 10000*time.Microsecond {
		t.Errorf("merge: count %d max %v", merged.count(), merged.max)
	}
	for i := 0; i < histBuckets; i++ {
		if bucketOf(bucketValue(i)) != i {
			t.Fatalf("bucket %d: midpoint %d maps to bucket %d", i, bucketValue(i), bucketOf(bucketValue(i)))
		}
	}
}

// rawBrokers are the brokers with raw twins (request/reply and stream
// publishers), by their URL from the test environment.
var rawBrokers = []struct {
	name string
	url  func(t testing.TB) string
}{
	{"nats", brokertest.NATS},
	{"amqp", brokertest.AMQP},
	{"stomp-activemq", func(t testing.TB) string { return "stomp://" + brokertest.STOMPActiveMQ(t) }},
	{"stomp-rabbitmq", func(t testing.TB) string { return "stomp://" + brokertest.STOMPRabbitMQ(t) }},
	{"mqtt", brokertest.MQTT},
}

// TestRawMem runs the mem backend's raw twin, the raw-codec floor: the
// echo service's handler behind CodecClient and ServeFrame, every call
// answered with its body.
func TestRawMem(t *testing.T) {
	u, _ := url.Parse("mem://x")
	r, err := rawOpeners["mem"](t.Context(), u, "echo", payload(256), benchConfig{Callers: 4})
	if err != nil {
		t.Fatal(err)
	}
	var res Result
	measure(t.Context(), r, 4, 200*time.Millisecond, 10*time.Second, 0, &res)
	res.finish()
	if res.Requests == 0 || res.Errors != 0 {
		t.Errorf("%d requests, %d errors (first: %s)", res.Requests, res.Errors, res.FirstError)
	}
	if err := r.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}

// TestRawTwins runs each broker's raw request/reply on a real broker.
func TestRawTwins(t *testing.T) {
	for _, tt := range rawBrokers {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.url(t))
			if err != nil {
				t.Fatal(err)
			}
			open := rawOpeners[u.Scheme]
			if open == nil {
				t.Fatalf("no raw twin for %s", u.Scheme)
			}
			cfg := benchConfig{Callers: 4, Timeout: 10 * time.Second}
			body := payload(256)
			r, err := open(t.Context(), u, uniqueService(t), body, cfg)
			if err != nil {
				t.Fatal(err)
			}
			var res Result
			measure(t.Context(), r, 4, 300*time.Millisecond, 10*time.Second, 0, &res)
			res.finish()
			if res.Requests == 0 || res.Errors != 0 {
				t.Errorf("%s: %d requests, %d errors (first: %s)", tt.name, res.Requests, res.Errors, res.FirstError)
			}
			if r.Broker() == "" || r.Describe() == "" {
				t.Errorf("broker %q, describe %q", r.Broker(), r.Describe())
			}
			if err := r.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
		})
	}
}

// TestBenchBrokers runs bench -raw for a moment on every broker: the httpbus
// backend and its raw twin, end to end. Service names are fixed per broker
// (and used by no other package's tests) so that the durable queues some
// backends declare are reused, not piled up, from run to run.
func TestBenchBrokers(t *testing.T) {
	for _, tt := range rawBrokers {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(t, "", "bench", "-url", tt.url(t), "-raw", "-c", "2", "-d", "600ms", "-warmup", "0", "-rounds", "2",
				"-service", "httpbus-cmdtest-"+tt.name, "-json")
			r.want(t, exitOK)
			var rep Report
			if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
				t.Fatal(err)
			}
			if rep.Raw == nil || rep.Raw.Requests == 0 || rep.Httpbus.Requests == 0 || rep.Httpbus.Errors != 0 || rep.Raw.Errors != 0 || rep.Broker == "" {
				t.Errorf("implausible: %+v httpbus %+v raw %+v", rep, rep.Httpbus, rep.Raw)
			}
			if strings.Contains(r.stdout, "guest:guest") {
				t.Errorf("the report shows a password: %s", r.stdout)
			}
		})
	}
}
