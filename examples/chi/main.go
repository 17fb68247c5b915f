// Command chi serves a go-chi/chi router over httpbus and calls it with a
// plain *http.Client: path parameters, middleware and a route group work
// exactly as they do behind net/http's own server.
//
//	go run ./examples/chi                               # embedded NATS server
//	go run ./examples/chi -url nats://127.0.0.1:4222
//	go run ./examples/chi -url amqp://guest:guest@127.0.0.1:5672/
//	go run ./examples/chi -url mem://
//
// The service, "catalog", answers GET /items/{id} and, behind an API-key
// middleware, GET /users/{user}/orders/{order}. Every response carries
// X-Route, the chi route pattern that matched, set by a middleware.
//
// chi routes only the methods it knows: a router that handles notifications
// (method NOTIFY) calls chi.RegisterMethod(transport.MethodNotify) first.
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
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/httpbus/httpbus/internal/natsserver"
	"github.com/httpbus/httpbus/transport"

	// Backends register their URL schemes.
	_ "github.com/httpbus/httpbus/amqp"
	_ "github.com/httpbus/httpbus/inmem"
	_ "github.com/httpbus/httpbus/nats"
	_ "github.com/httpbus/httpbus/stomp"
)

const service = "catalog"

// apiKey is the key the orders routes require in X-Api-Key.
const apiKey = "s3cret"

func init() { chi.RegisterMethod(transport.MethodNotify) }

// newRouter is an ordinary chi application: nothing in it knows httpbus.
// notified, if not nil, receives the body of each notification.
func newRouter(notified chan<- string) http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.SetHeader("X-Service", service))
	r.Use(routeHeader)

	r.Get("/items/{id}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "item %s\n", chi.URLParam(r, "id"))
	})
	r.Group(func(r chi.Router) {
		r.Use(requireKey)
		r.Get("/users/{user}/orders/{order}", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "order %s of %s\n", chi.URLParam(r, "order"), chi.URLParam(r, "user"))
		})
	})
	// Notifications arrive with method NOTIFY and the topic as Host.
	r.Method(transport.MethodNotify, "/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if notified != nil {
			notified <- r.Host + " " + string(b)
		}
	}))
	return r
}

// routeHeader sets X-Route to the pattern chi matched, once routing is done.
func routeHeader(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&routeWriter{ResponseWriter: w, r: r}, r)
	})
}

type routeWriter struct {
	http.ResponseWriter
	r           *http.Request
	wroteHeader bool
}

func (w *routeWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.wroteHeader = true
		if rc := chi.RouteContext(w.r.Context()); rc != nil && rc.RoutePattern() != "" {
			w.Header().Set("X-Route", rc.RoutePattern())
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *routeWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

func (w *routeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// requireKey answers 401 unless the request carries the API key.
func requireKey(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Api-Key") != apiKey {
			http.Error(w, "missing or wrong X-Api-Key", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func main() {
	rawURL := flag.String("url", os.Getenv("HTTPBUS_URL"), "backend URL (default: an embedded NATS server)")
	flag.Parse()
	if err := run(context.Background(), *rawURL, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// run serves the router on rawURL (an embedded NATS server if empty), makes
// a few calls and prints each exchange to out.
func run(ctx context.Context, rawURL string, out io.Writer) error {
	if rawURL == "" {
		u, shutdown, err := natsserver.Start(natsserver.Config{})
		if err != nil {
			return fmt.Errorf("embedded NATS server: %w", err)
		}
		defer shutdown()
		rawURL = u
	}
	l, err := transport.Listen(ctx, withQuery(rawURL, "service", service))
	if err != nil {
		return err
	}
	srv := &transport.Server{Handler: newRouter(nil)}
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
	client := &http.Client{Transport: transport.NewRoundTripper(conn), Timeout: 5 * time.Second}
	for _, c := range []struct{ path, key string }{
		{"/items/42", ""},
		{"/users/ada/orders/7", apiKey},
		{"/users/ada/orders/7", ""},
	} {
		req, err := http.NewRequestWithContext(ctx, "GET", "http://"+service+c.path, nil)
		if err != nil {
			return err
		}
		if c.key != "" {
			req.Header.Set("X-Api-Key", c.key)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Fprintf(out, "GET %s → %s (route %s) %s\n", c.path, resp.Status, resp.Header.Get("X-Route"), strings.TrimSpace(string(b)))
	}
	return nil
}

// withQuery returns raw with the query parameter k set to v (raw is
// returned as is if it does not parse; Listen then reports the error).
func withQuery(raw, k, v string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	q := u.Query()
	q.Set(k, v)
	u.RawQuery = q.Encode()
	return u.String()
}
