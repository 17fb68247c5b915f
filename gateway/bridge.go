package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/httpbus/httpbus/transport"
)

// forwardedHeaders are the headers a Bridge passes on from the request as
// it arrived from the bus. ReverseProxy drops them before Rewrite (a proxy
// at the edge must not trust them); behind a Gateway they carry the
// client's address, host and scheme, which the upstream needs.
var forwardedHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"}

// Bridge is an http.Handler that forwards each request to an existing web
// application (Flask under gunicorn, Rails, a Node server) at Upstream: put
// it behind a transport.Server and the application becomes a service on
// the bus, with no code.
//
//	l, _ := transport.Listen(ctx, "nats://127.0.0.1:4222?service=orders")
//	up, _ := url.Parse("http://127.0.0.1:8000")
//	srv := &transport.Server{Handler: &gateway.Bridge{Upstream: up}}
//	go srv.Serve(l)
//
// It is an httputil.ReverseProxy: hop-by-hop headers are stripped; the
// path and query are joined to Upstream's (httputil.ProxyRequest.SetURL),
// and the Host header becomes Upstream's host; X-Forwarded-For, -Host,
// -Proto and Forwarded are passed on as they arrived (a Gateway sets them),
// not added to: the bus is trusted, and a request's address on the bus
// is no client's. Each write of the upstream's response is flushed at once
// (server-sent events reach the caller as they are sent where the
// transport streams responses).
//
// The request's context carries the caller's deadline (transport.Server
// sets it), and the upstream exchange ends with it. The upstream's own
// answers pass unchanged, 5xx included. Answers made by the Bridge carry
// the Httpbus-Error header:
//
//	502  the upstream cannot be reached or broke off its answer
//	504  the caller's deadline passed before the upstream answered
//
// Notifications (method NOTIFY, transport.MethodNotify) are forwarded like
// any request; the Server discards the answer.
//
// Upstream is required. Fields must not change after the first request. A
// Bridge is safe for concurrent use.
type Bridge struct {
	// Upstream is the application's base URL: scheme http or https, host
	// and port, and an optional path prefix put before each request's path.
	Upstream *url.URL

	// Transport carries requests to Upstream. Nil means a clone of
	// http.DefaultTransport that keeps up to transport.DefaultMaxInFlight
	// idle connections to the upstream (http.DefaultTransport keeps 2).
	Transport http.RoundTripper

	// AccessLog, when set, receives one Info record per request, message
	// "request", with attributes method, service (the request's Host),
	// path, status, bytes (response body bytes), duration and remote.
	// Nil means no access log.
	AccessLog *slog.Logger

	// Logger receives upstream failures; nil means slog.Default().
	Logger *slog.Logger

	once  sync.Once
	proxy *httputil.ReverseProxy
}

func (b *Bridge) init() {
	b.once.Do(func() {
		rt := b.Transport
		if rt == nil {
			t := http.DefaultTransport.(*http.Transport).Clone()
			t.MaxIdleConnsPerHost = transport.DefaultMaxInFlight
			rt = t
		}
		b.proxy = &httputil.ReverseProxy{
			Rewrite:       b.rewrite,
			Transport:     rt,
			FlushInterval: -1,
			ErrorHandler:  b.proxyError,
			ErrorLog:      slog.NewLogLogger(b.logger().Handler(), slog.LevelError),
		}
	})
}

func (b *Bridge) logger() *slog.Logger {
	if b.Logger != nil {
		return b.Logger
	}
	return slog.Default()
}

// ServeHTTP implements http.Handler.
func (b *Bridge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.init()
	start := time.Now()
	lw := &logWriter{ResponseWriter: w}
	if b.AccessLog != nil {
		defer func() {
			b.AccessLog.LogAttrs(r.Context(), slog.LevelInfo, "request",
				slog.String("method", r.Method),
				slog.String("service", r.Host),
				slog.String("path", r.URL.RequestURI()),
				slog.Int("status", lw.statusCode()),
				slog.Int64("bytes", lw.bytes),
				slog.Duration("duration", time.Since(start)),
				slog.String("remote", r.RemoteAddr),
			)
		}()
	}
	if b.Upstream == nil {
		writeError(lw, http.StatusBadGateway, errors.New("httpbus/gateway: Bridge has no Upstream"))
		return
	}
	b.proxy.ServeHTTP(lw, r)
}

func (b *Bridge) rewrite(pr *httputil.ProxyRequest) {
	pr.SetURL(b.Upstream)
	for _, k := range forwardedHeaders {
		if v, ok := pr.In.Header[k]; ok {
			pr.Out.Header[k] = v
		}
	}
}

func (b *Bridge) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	ctx := r.Context()
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		// The caller is gone (or the server closed): nobody reads it.
		if lw, ok := w.(*logWriter); ok {
			lw.status = 499
		}
		return
	}
	status := http.StatusBadGateway
	if ctx.Err() != nil {
		status = http.StatusGatewayTimeout
		err = transport.Timeout(err)
	}
	err = fmt.Errorf("httpbus/gateway: upstream %s: %w", b.Upstream.Redacted(), err)
	b.logger().Warn("httpbus/gateway: upstream failed", "method", r.Method, "path", r.URL.RequestURI(), "status", status, "err", err)
	writeError(w, status, err)
}
