package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/httpbus/httpbus/internal/natsserver"
	"github.com/httpbus/httpbus/transport"
)

// traced serves the traced service on rawURL and returns a traced client of
// it, the span recorder both ends write to, and the notifications channel.
func traced(t *testing.T, rawURL string) (*http.Client, *tracetest.SpanRecorder, <-chan string) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	tr := Tracing{Provider: tp, Propagators: propagation.TraceContext{}, System: systemOf(rawURL)}

	ctx := context.Background()
	notified := make(chan string, 1)
	l, err := transport.Listen(ctx, withQuery(rawURL, "service", service, "topics", topic))
	if err != nil {
		t.Fatal(err)
	}
	srv := &transport.Server{Handler: tr.Handler(newMux(notified))}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	conn, err := transport.Dial(ctx, rawURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &http.Client{Transport: tr.Client(transport.NewRoundTripper(conn)), Timeout: 5 * time.Second}, rec, notified
}

// ended waits until rec holds n ended spans and returns them.
func ended(t *testing.T, rec *tracetest.SpanRecorder, n int) []sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		spans := rec.Ended()
		if len(spans) >= n {
			return spans
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d spans ended, want %d", len(spans), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkTrace checks that spans are one client span and one server span, the
// server span a child of the client span (its remote parent), in one trace,
// with the messaging attributes wantAttrs on both (op aside).
func checkTrace(t *testing.T, spans []sdktrace.ReadOnlySpan, name string, want map[attribute.Key]string) {
	t.Helper()
	var client, server sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() != name {
			continue
		}
		switch s.SpanKind() {
		case trace.SpanKindClient:
			client = s
		case trace.SpanKindServer:
			server = s
		}
	}
	if client == nil || server == nil {
		t.Fatalf("%s: want a client and a server span, got %d spans", name, len(spans))
	}
	if client.Parent().IsValid() {
		t.Errorf("%s: client span has a parent %v, want a root", name, client.Parent().SpanID())
	}
	if server.SpanContext().TraceID() != client.SpanContext().TraceID() {
		t.Errorf("%s: server span in trace %v, client span in %v", name, server.SpanContext().TraceID(), client.SpanContext().TraceID())
	}
	if server.Parent().SpanID() != client.SpanContext().SpanID() || !server.Parent().IsRemote() {
		t.Errorf("%s: server span's parent is %v (remote %v), want the client span %v (remote)",
			name, server.Parent().SpanID(), server.Parent().IsRemote(), client.SpanContext().SpanID())
	}
	for s, op := range map[sdktrace.ReadOnlySpan]string{client: "send", server: "process"} {
		got := map[attribute.Key]string{}
		for _, kv := range s.Attributes() {
			got[kv.Key] = kv.Value.String()
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s %s span: %s = %q, want %q", name, s.SpanKind(), k, got[k], v)
			}
		}
		if len(want) > 0 && got["messaging.operation.type"] != op {
			t.Errorf("%s %s span: messaging.operation.type = %q, want %q", name, s.SpanKind(), got["messaging.operation.type"], op)
		}
	}
}

func testTrace(t *testing.T, rawURL, system string) {
	client, rec, notified := traced(t, rawURL)
	resp, err := client.Get("http://" + service + "/stock/A-1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "A-1: 7 in stock\n" {
		t.Fatalf("GET: %d %q", resp.StatusCode, b)
	}
	var want map[attribute.Key]string
	if system != "" {
		want = map[attribute.Key]string{"messaging.system": system, "messaging.destination.name": service}
	}
	checkTrace(t, ended(t, rec, 2), "GET "+service, want)

	req, _ := http.NewRequest(transport.MethodNotify, "http://"+topic+"/", strings.NewReader("A-1 -1"))
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case <-notified:
	case <-time.After(5 * time.Second):
		t.Fatal("the notification did not arrive")
	}
	if system != "" {
		want["messaging.destination.name"] = topic
	}
	checkTrace(t, ended(t, rec, 4), "NOTIFY "+topic, want)
}

func TestTraceInmem(t *testing.T) { testTrace(t, "mem://", "") }

func TestTraceNATS(t *testing.T) {
	natsURL, stop, err := natsserver.Start(natsserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	testTrace(t, natsURL, "nats")
}

func TestRun(t *testing.T) {
	var out strings.Builder
	if err := run(context.Background(), "mem://", &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "GET /stock/A-1 → 200 OK A-1: 7 in stock") || strings.Count(out.String(), "\nspan \"")+boolInt(strings.HasPrefix(out.String(), "span \"")) != 4 {
		t.Fatalf("run printed:\n%s", out.String())
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
