// Command otel traces calls across a broker with OpenTelemetry: the caller's
// http.Client is wrapped in otelhttp.NewTransport, the service's handler in
// otelhttp.NewHandler, and the trace context travels in the W3C
// traceparent header inside the frame. httpbus itself knows nothing of
// OpenTelemetry; the server span comes out as a child of the client span,
// in one trace.
//
//	go run ./examples/otel                              # embedded NATS server
//	go run ./examples/otel -url mem://
//	go run ./examples/otel -url nats://127.0.0.1:4222
//	go run ./examples/otel -url amqp://guest:guest@127.0.0.1:5672/
//	go run ./examples/otel -url stomp://127.0.0.1:61613
//
// Spans also carry the messaging attributes of the OpenTelemetry semantic
// conventions (https://opentelemetry.io/docs/specs/semconv/messaging/):
// messaging.system (from the URL's scheme), messaging.destination.name (the
// service, or the topic of a notification) and messaging.operation.type
// ("send" at the caller, "process" at the service). The program prints each
// span as it ends; a real one would give the TracerProvider an OTLP
// exporter instead.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/httpbus/httpbus/internal/natsserver"
	"github.com/httpbus/httpbus/transport"

	// Backends register their URL schemes.
	_ "github.com/httpbus/httpbus/amqp"
	_ "github.com/httpbus/httpbus/inmem"
	_ "github.com/httpbus/httpbus/nats"
	_ "github.com/httpbus/httpbus/stomp"
)

const (
	service = "inventory"
	topic   = "stock.changed"
)

// Tracing is what both ends need to trace: where spans go, and how the
// trace context is written into and read from headers.
type Tracing struct {
	Provider    trace.TracerProvider
	Propagators propagation.TextMapPropagator
	// System is the messaging.system attribute; empty leaves out the
	// messaging attributes (tcp: plain HTTP).
	System string
}

// systemOf returns the messaging.system value for a backend URL: the
// semantic conventions' well-known value where there is one (rabbitmq), the
// broker's own name otherwise (nats, stomp), and "" for mem and tcp.
func systemOf(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	switch u.Scheme {
	case "nats", "tls":
		return "nats"
	case "amqp", "amqps":
		return semconv.MessagingSystemRabbitMQ.Value.AsString()
	case "stomp", "stomp+ssl":
		return "stomp" // ActiveMQ or RabbitMQ: the URL does not tell which
	}
	return ""
}

// messaging returns the messaging attributes of a call to r.Host (a service,
// or a topic for a notification) as operation op.
func (tr Tracing) messaging(r *http.Request, op attribute.KeyValue) []attribute.KeyValue {
	if tr.System == "" {
		return nil
	}
	return []attribute.KeyValue{
		semconv.MessagingSystemKey.String(tr.System),
		semconv.MessagingDestinationName(r.Host),
		op,
	}
}

// Client wraps rt (a transport.RoundTripper) so that each call gets a client
// span whose context travels in the request's headers.
func (tr Tracing) Client(rt http.RoundTripper) http.RoundTripper {
	return otelhttp.NewTransport(
		roundTripFunc(func(r *http.Request) (*http.Response, error) {
			// otelhttp has started the span; r's context carries it.
			trace.SpanFromContext(r.Context()).SetAttributes(tr.messaging(r, semconv.MessagingOperationTypeSend)...)
			return rt.RoundTrip(r)
		}),
		otelhttp.WithTracerProvider(tr.Provider),
		otelhttp.WithPropagators(tr.Propagators),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return r.Method + " " + r.Host
		}),
	)
}

// Handler wraps h so that each request gets a server span, a child of the
// caller's span when the request carries its context.
func (tr Tracing) Handler(h http.Handler) http.Handler {
	return otelhttp.NewHandler(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			trace.SpanFromContext(r.Context()).SetAttributes(tr.messaging(r, semconv.MessagingOperationTypeProcess)...)
			h.ServeHTTP(w, r)
		}),
		service,
		otelhttp.WithTracerProvider(tr.Provider),
		otelhttp.WithPropagators(tr.Propagators),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return r.Method + " " + r.Host
		}),
	)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// newMux is the service: stock levels, and a notification endpoint.
// notified, if not nil, receives each notification's body.
func newMux(notified chan<- string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stock/{sku}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s: 7 in stock\n", r.PathValue("sku"))
	})
	mux.HandleFunc("NOTIFY /", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if notified != nil {
			notified <- string(b)
		}
	})
	return mux
}

// printer is a span exporter that prints each span as it ends.
type printer struct {
	mu  sync.Mutex
	out io.Writer
}

func (p *printer) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range spans {
		parent := "none"
		if s.Parent().IsValid() {
			parent = s.Parent().SpanID().String()
		}
		fmt.Fprintf(p.out, "span %-22q kind %-6s trace %s span %s parent %s\n",
			s.Name(), s.SpanKind(), s.SpanContext().TraceID(), s.SpanContext().SpanID(), parent)
	}
	return nil
}

func (p *printer) Shutdown(context.Context) error { return nil }

func main() {
	rawURL := flag.String("url", os.Getenv("HTTPBUS_URL"), "backend URL (default: an embedded NATS server)")
	flag.Parse()
	if err := run(context.Background(), *rawURL, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// run serves the traced service on rawURL (an embedded NATS server if
// empty), calls it once and notifies it once, printing each span to out.
func run(ctx context.Context, rawURL string, out io.Writer) error {
	if rawURL == "" {
		u, shutdown, err := natsserver.Start(natsserver.Config{})
		if err != nil {
			return fmt.Errorf("embedded NATS server: %w", err)
		}
		defer shutdown()
		rawURL = u
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(&printer{out: out}))
	defer tp.Shutdown(context.Background())
	tr := Tracing{Provider: tp, Propagators: propagation.TraceContext{}, System: systemOf(rawURL)}

	notified := make(chan string, 1)
	l, err := transport.Listen(ctx, withQuery(rawURL, "service", service, "topics", topic))
	if err != nil {
		return err
	}
	srv := &transport.Server{Handler: tr.Handler(newMux(notified))}
	go srv.Serve(l)
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()

	conn, err := transport.Dial(ctx, rawURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := &http.Client{Transport: tr.Client(transport.NewRoundTripper(conn)), Timeout: 5 * time.Second}

	resp, err := client.Get("http://" + service + "/stock/A-1")
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Fprintf(out, "GET /stock/A-1 → %s %s\n", resp.Status, strings.TrimSpace(string(b)))

	req, _ := http.NewRequestWithContext(ctx, transport.MethodNotify, "http://"+topic+"/", strings.NewReader("A-1 -1"))
	resp, err = client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	select {
	case <-notified:
	case <-time.After(5 * time.Second):
		return fmt.Errorf("the notification did not arrive")
	}
	return nil
}

// withQuery returns raw with query parameters set from kv pairs (raw as is
// if it does not parse; Listen then reports the error).
func withQuery(raw string, kv ...string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}
