package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/httpbus/httpbus/transport"
)

// DefaultTimeout bounds a request through a Gateway when Gateway.Timeout is
// zero.
const DefaultTimeout = 30 * time.Second

// DefaultHealthPath is where a Gateway answers health checks when
// Gateway.HealthPath is empty.
const DefaultHealthPath = "/healthz"

// Route says how a Gateway finds the service a request is for.
type Route int

const (
	// RoutePath takes the first path segment as the service and strips it:
	// GET /orders/items/42 goes to service "orders" as GET /items/42, and
	// /orders alone as /. The segment is percent-decoded.
	RoutePath Route = iota
	// RouteHost takes the leftmost label of the Host header, lower-cased,
	// as the service and keeps the path: Host orders.example.com:8080 (or
	// orders.localhost, which curl resolves to loopback) goes to service
	// "orders". A Host that is an IP address names no service.
	RouteHost
)

// String returns "path" or "host", the names ParseRoute accepts.
func (r Route) String() string {
	switch r {
	case RoutePath:
		return "path"
	case RouteHost:
		return "host"
	}
	return fmt.Sprintf("Route(%d)", int(r))
}

// ParseRoute parses "path" or "host" (the -route flag of httpbus gateway).
func ParseRoute(s string) (Route, error) {
	switch s {
	case "path":
		return RoutePath, nil
	case "host":
		return RouteHost, nil
	}
	return 0, fmt.Errorf("httpbus/gateway: unknown route %q (want path or host)", s)
}

// ErrNoService is the error (in the Httpbus-Error header, with status 404)
// for a request that names no service or a service that Gateway.Allow does
// not expose. Both get the same answer, so that the allow-list does not
// tell which services exist.
var ErrNoService = errors.New("httpbus/gateway: no such service")

// Gateway is an http.Handler that forwards each request onto the bus: the
// web in front, services on a broker behind. It is an
// httputil.ReverseProxy whose Transport is a transport.RoundTripper over
// Conn, so hop-by-hop headers are stripped, X-Forwarded-For, -Host and
// -Proto are set (those sent by the client are dropped: the gateway is the
// edge), trailers pass through and each write of the service's response is
// flushed to the client at once.
//
// Answers made by the gateway itself carry the Httpbus-Error header, as
// those of the RoundTripper do:
//
//	404  no service in the request, or one not in Allow (ErrNoService)
//	405  method NOTIFY: a client on the web does not publish
//	     notifications through the gateway (ErrNotify)
//	502  broker unavailable, or any other transport failure
//	503  no server listens for the service (transport.ErrNoResponders)
//	504  Timeout passed before the answer (transport.ErrTimeout)
//	413  request larger than MaxBodyBytes or the broker's message limit
//
// A request to HealthPath is answered by the gateway: 200 and "connected"
// while Conn reports transport.StateConnected (or does not implement
// transport.StateReporter), else 503 and the state's name.
//
// The zero value is not usable: Conn is required. Fields must not change
// after the first request. A Gateway is safe for concurrent use.
type Gateway struct {
	// Conn carries the requests to the services. Required; the Gateway
	// never closes it.
	Conn transport.Conn

	// Route picks the service from the path (RoutePath, the zero value)
	// or from the Host header (RouteHost).
	Route Route

	// Allow, when not empty, lists the only services that are exposed;
	// a request for any other gets 404 and ErrNoService, as a request
	// naming no service does. Nil or empty exposes every service.
	Allow []string

	// Timeout bounds each request, from the moment the gateway has its
	// header until the service's whole response is written: it becomes the
	// request context's deadline, which travels with the request to the
	// service (the handler's r.Context() ends at the same instant). When it
	// passes before the response header arrives, the client gets 504. Zero
	// means DefaultTimeout; negative means no bound other than the client's.
	Timeout time.Duration

	// MaxBodyBytes bounds a request body and a response body, in bytes
	// (transport.RoundTripper.MaxBodyBytes): a larger request gets 413.
	// Zero or negative means no limit.
	MaxBodyBytes int64

	// HealthPath is the path of the health check. Empty means
	// DefaultHealthPath ("/healthz"). With RoutePath a service of that name
	// is still reachable below it (/healthz/x), never at the path itself;
	// with RouteHost the path is reserved on every host.
	HealthPath string

	// AccessLog, when set, receives one Info record per request, message
	// "request", with attributes method, service, path (as received),
	// status, bytes (response body bytes written), duration and remote.
	// Nil means no access log.
	AccessLog *slog.Logger

	// Logger receives errors the access log does not show (a failed write
	// to the client, a proxy error); nil means slog.Default().
	Logger *slog.Logger

	once  sync.Once
	proxy *httputil.ReverseProxy
	allow map[string]bool
}

// ErrNotify is the error (status 405) for a request with method NOTIFY
// (transport.MethodNotify): the RoundTripper would publish it to every
// subscriber of a topic, which a Gateway does not offer to the web.
var ErrNotify = errors.New("httpbus/gateway: method NOTIFY is not forwarded")

type serviceKey struct{}

// routed is what route found for a request.
type routed struct {
	service string
	path    string // escaped path to send, "/" at least
}

func (g *Gateway) init() {
	g.once.Do(func() {
		if len(g.Allow) > 0 {
			g.allow = make(map[string]bool, len(g.Allow))
			for _, s := range g.Allow {
				g.allow[s] = true
			}
		}
		g.proxy = &httputil.ReverseProxy{
			Rewrite:       g.rewrite,
			Transport:     &transport.RoundTripper{Conn: g.Conn, MaxBodyBytes: g.MaxBodyBytes},
			FlushInterval: -1,
			ErrorHandler:  g.proxyError,
			ErrorLog:      slog.NewLogLogger(g.logger().Handler(), slog.LevelError),
		}
	})
}

func (g *Gateway) logger() *slog.Logger {
	if g.Logger != nil {
		return g.Logger
	}
	return slog.Default()
}

func (g *Gateway) timeout() time.Duration {
	if g.Timeout == 0 {
		return DefaultTimeout
	}
	return g.Timeout
}

func (g *Gateway) healthPath() string {
	if g.HealthPath == "" {
		return DefaultHealthPath
	}
	return g.HealthPath
}

// ServeHTTP implements http.Handler.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.init()
	start := time.Now()
	lw := &logWriter{ResponseWriter: w}
	var service string
	if g.AccessLog != nil {
		defer func() {
			g.AccessLog.LogAttrs(r.Context(), slog.LevelInfo, "request",
				slog.String("method", r.Method),
				slog.String("service", service),
				slog.String("path", r.URL.RequestURI()),
				slog.Int("status", lw.statusCode()),
				slog.Int64("bytes", lw.bytes),
				slog.Duration("duration", time.Since(start)),
				slog.String("remote", r.RemoteAddr),
			)
		}()
	}
	if r.URL.Path == g.healthPath() {
		g.health(lw)
		return
	}
	if g.Conn == nil {
		writeError(lw, http.StatusInternalServerError, errors.New("httpbus/gateway: Gateway has no Conn"))
		return
	}
	rt, ok := g.route(r)
	if !ok {
		writeError(lw, http.StatusNotFound, ErrNoService)
		return
	}
	service = rt.service
	if r.Method == transport.MethodNotify {
		writeError(lw, http.StatusMethodNotAllowed, ErrNotify)
		return
	}
	ctx := context.WithValue(r.Context(), serviceKey{}, rt)
	if d := g.timeout(); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	g.proxy.ServeHTTP(lw, r.WithContext(ctx))
}

// route finds the service of r and the path to send it.
func (g *Gateway) route(r *http.Request) (routed, bool) {
	var rt routed
	switch g.Route {
	case RouteHost:
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if host == "" || net.ParseIP(strings.Trim(host, "[]")) != nil {
			return rt, false
		}
		label, _, _ := strings.Cut(host, ".")
		rt.service = strings.ToLower(label)
		rt.path = r.URL.EscapedPath()
	default:
		p := strings.TrimPrefix(r.URL.EscapedPath(), "/")
		seg, rest, found := strings.Cut(p, "/")
		s, err := url.PathUnescape(seg)
		if err != nil {
			return rt, false
		}
		rt.service = s
		rt.path = "/" + rest
		if !found {
			rt.path = "/"
		}
	}
	if !validService(rt.service) || (g.allow != nil && !g.allow[rt.service]) {
		return rt, false
	}
	return rt, true
}

// validService rejects names that cannot be a URL host (the RoundTripper
// takes the service from the URL's host).
func validService(s string) bool {
	if s == "" {
		return false
	}
	return !strings.ContainsFunc(s, func(c rune) bool {
		return c <= ' ' || c >= 0x7f || strings.ContainsRune("/?#@:[]%\\", c)
	})
}

func (g *Gateway) rewrite(pr *httputil.ProxyRequest) {
	rt := pr.In.Context().Value(serviceKey{}).(routed)
	pr.SetXForwarded()
	u := pr.Out.URL
	u.Scheme = "http"
	u.Host = rt.service
	if p, err := url.PathUnescape(rt.path); err == nil {
		u.Path = p
		u.RawPath = rt.path
	}
	pr.Out.Host = rt.service
}

// proxyError answers a request the RoundTripper returned an error for
// (failures it turns into responses never get here).
func (g *Gateway) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client went away; nobody reads the answer. Logged as 499,
		// nginx's "client closed request".
		if lw, ok := w.(*logWriter); ok {
			lw.status = 499
		}
		return
	}
	if ctxErr := r.Context().Err(); ctxErr != nil && errors.Is(ctxErr, context.DeadlineExceeded) && !errors.Is(err, transport.ErrTimeout) {
		err = transport.ContextError(r.Context())
	}
	status := transport.StatusOf(err)
	g.logger().Warn("httpbus/gateway: request failed", "method", r.Method, "host", r.URL.Host, "status", status, "err", err)
	writeError(w, status, err)
}

func (g *Gateway) health(w http.ResponseWriter) {
	state := transport.StateConnected
	if sr, ok := g.Conn.(transport.StateReporter); ok {
		state = sr.State()
	}
	if g.Conn == nil {
		state = transport.StateClosed
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if state != transport.StateConnected {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	io.WriteString(w, state.String()+"\n")
}

// writeError writes an answer made by httpbus: status, HeaderError and the
// error text as the body.
func writeError(w http.ResponseWriter, status int, err error) {
	h := w.Header()
	h.Set(transport.HeaderError, err.Error())
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	io.WriteString(w, err.Error()+"\n")
}

// logWriter records the status and body bytes of a response for the access
// log. It flushes through to the wrapped writer and unwraps for
// http.ResponseController, so that ReverseProxy's flushing, full duplex
// and hijacking (protocol upgrades) reach the connection.
type logWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *logWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *logWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *logWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *logWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *logWriter) statusCode() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}
