// Package tcp is the HTTP/1.1-on-TCP backend of httpbus: a service listens
// on a TCP address and speaks plain HTTP/1.1, so curl and any stock HTTP
// client can call it, and a caller can call any stock HTTP server.
//
// The server side is net/http's own http.Server (keep-alive, Content-Length
// and chunked request bodies, Expect: 100-continue, read and idle timeouts,
// a header size limit); the client side is net/http's http.Transport. Frames
// never appear on this wire: the HTTP/1.1 stream is the frame, and the
// parsed request goes to the handler without being encoded again.
//
// # URLs
//
//	tcp://127.0.0.1:8080?service=orders  Listen on it, serving service orders: a request
//	                                     whose Host names another service gets 503
//	tcp://127.0.0.1:8080                 Listen: serve whatever Host; Dial: send every
//	                                     request there
//	tcp://?service=orders@127.0.0.1:8081&service=billing@127.0.0.1:8082
//	                                     Dial: each service= maps a service name to its
//	                                     address (repeatable, or comma-separated; one
//	                                     address per service); a service not listed
//	                                     goes to the URL's host:port if it has one,
//	                                     else gets 503 at once
//	tcp://                               Dial: each service name is dialed as host:port
//	tcp://127.0.0.1:8080?reuseport=true  Listen with SO_REUSEPORT (Linux): several
//	                                     servers of one service share the address,
//	                                     and the kernel shares connections among them
//	tcp://...?subscriber=orders.created@127.0.0.1:8081
//	                                     Publish sends NOTIFY for that topic to that
//	                                     address (repeatable)
//
//	tcp+tls://127.0.0.1:8443?tls_cert=server.pem&tls_key=server.key
//	                                     Listen with TLS (HTTPS on the wire)
//	tcp+tls://127.0.0.1:8443?tls_ca=ca.pem
//	                                     Dial with TLS, trusting the CAs in ca.pem
//	                                     (else the system roots); tls_server_name
//	                                     overrides the name checked; tls_cert and
//	                                     tls_key give a client certificate
//
// Other options: read_header_timeout, read_timeout, write_timeout,
// idle_timeout (durations), max_header_bytes and max_body_bytes (bytes).
//
// transport.Listen and transport.Dial open these URLs once the package is
// imported; Listen and Dial of this package do the same and take a Config
// for what a URL cannot say (Logger, a tls.Config); the URL's options
// override its fields. NewListener serves on a net.Listener the caller
// made; NewConn takes a Config alone.
//
// # Delivery
//
// There is no broker: a request is served by whichever server accepted the
// connection, once. So that one program runs on a broker or on tcp by URL
// alone, the caller maps service names to addresses (service= in the Dial
// URL, or Conn.Resolve) and a listener opened with service= refuses
// requests for other services (503, Httpbus-Error, as a broker with no
// server of that service answers).
//
// Load balancing: none of its own. One address is one service; several
// servers share it only with reuseport=true on one host (the kernel spreads
// connections, not requests: a keep-alive connection stays with its
// server), and across hosts only behind a balancer of your own (one address
// per service in the Dial URL). There is no queue: a request nobody accepts
// is refused (503), never held until a server comes back, and a server that
// dies mid-request loses it (the caller gets 502).
//
// Notifications: no broker fans them out. The publisher sends a NOTIFY to
// every address listed for the topic (subscriber=topic@host:port in the
// Dial URL, Config.Subscribers), one after another, and a listener accepts
// the topics it was given. A subscriber added later must be added to every
// publisher's URL; a subscriber that is down misses the notification (the
// publisher gets an error; nothing is retried or stored); with reuseport
// each notification reaches one of the servers sharing the address. The
// caller's deadline travels in the Httpbus-Deadline header (Unix
// milliseconds); a request without it (curl) has no deadline
// beyond the server's timeouts. A notification is an HTTP request with
// method NOTIFY and the topic as Host, sent to each configured subscriber
// address; its response is discarded (2xx counts as delivered).
//
// # Errors
//
// A refused connection or an unknown host is transport.ErrNoResponders
// (503); a passed deadline transport.ErrTimeout (504); any other network
// failure transport.ErrUnavailable (502). A request body over
// Config.MaxBodyBytes gets 413 (a chunked one fails the handler's read).
// Bodies stream both ways as in net/http: large downloads and uploads,
// Flush, trailers, Hijack and 101 upgrades all work, since tcp is HTTP/1.1.
package tcp

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/httpbus/httpbus/transport"
)

func init() {
	transport.Register(listenURL, dialURL, "tcp", "tcp+tls")
}

// Default timeouts of the server side.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
)

// Config configures both sides. The zero value is usable.
type Config struct {
	// ReadHeaderTimeout bounds reading a request's header; zero means
	// DefaultReadHeaderTimeout.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request (body included); zero
	// means none beyond the caller's deadline.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response; zero means none.
	WriteTimeout time.Duration
	// IdleTimeout bounds an idle keep-alive connection; zero means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's header block in bytes (431 past
	// it); zero means transport.DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// MaxBodyBytes bounds a request body in bytes (413 past it). Zero or
	// negative means no limit, as with net/http.
	MaxBodyBytes int64
	// ReusePort sets SO_REUSEPORT on the listening socket (Linux only), so
	// that several servers can share one address.
	ReusePort bool
	// TLSConfig, when set, makes the server side speak HTTPS and the client
	// side dial with TLS.
	TLSConfig *tls.Config
	// Subscribers maps a topic to the host:port addresses that Publish
	// sends its notifications to.
	Subscribers map[string][]string
	// Service, on the server side, is the name of the service the Listener
	// serves: a request whose Host is another name gets 503 with
	// Httpbus-Error (transport.ErrNoResponders), as on a broker where no
	// server of that service listens. A Host that is an address (an IP, or
	// host:port, as curl sends) is served whatever it names. Empty serves
	// every Host. The URL opener sets it from service=.
	Service string
	// Logger receives connection errors; nil means slog.Default().
	Logger *slog.Logger
}

func (c *Config) maxBody() int64 {
	if c.MaxBodyBytes <= 0 {
		return -1
	}
	return c.MaxBodyBytes
}

func (c *Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// Listener is the server side: an http.Server on a net.Listener whose
// requests a transport.Server takes with Receive.
type Listener struct {
	cfg     Config
	topics  map[string]bool
	ln      net.Listener
	srv     *http.Server
	ch      chan *transport.Delivery
	stopped chan struct{} // closed when the http.Server has finished
	pub     *Conn

	mu       sync.Mutex
	draining bool
	serve    func(*transport.Delivery) // set by Push
}

// Listen listens on the host:port of rawURL (tcp:// or tcp+tls://, see the
// package doc, # URLs; port 0 picks one, see Addr) and returns the server
// side of lc.Service (empty: every Host, see Config.Service). lc.Topics, if
// any, restricts the NOTIFY topics accepted (others get 404); none accepts
// every topic. The URL's options override cfg's fields, which supply the
// rest (Logger, a TLSConfig for tcp+tls:// without tls_cert). Errors: a
// malformed URL or option, a URL with no host:port, the socket's error
// from net.ListenConfig.Listen.
func Listen(ctx context.Context, rawURL string, lc transport.ListenConfig, cfg Config) (*Listener, error) {
	u, err := parse(rawURL)
	if err != nil {
		return nil, err
	}
	return listen(ctx, u, lc, cfg)
}

func listen(ctx context.Context, u *url.URL, lc transport.ListenConfig, cfg Config) (*Listener, error) {
	cfg, err := parseConfig(u, true, cfg)
	if err != nil {
		return nil, err
	}
	if u.Host == "" {
		return nil, fmt.Errorf("transport/tcp: URL %q has no host:port to listen on", u.Redacted())
	}
	addr := u.Host
	nlc := net.ListenConfig{}
	if cfg.ReusePort {
		nlc.Control = reusePort
	}
	ln, err := nlc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport/tcp: listen %s: %w", addr, err)
	}
	if cfg.TLSConfig != nil {
		ln = tls.NewListener(ln, cfg.TLSConfig)
	}
	return NewListener(ctx, ln, lc, cfg)
}

// parse parses rawURL, which must have the scheme tcp or tcp+tls.
func parse(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("transport/tcp: malformed URL %q", transport.Redact(rawURL))
	}
	if s := strings.ToLower(u.Scheme); s != "tcp" && s != "tcp+tls" {
		return nil, fmt.Errorf("transport/tcp: URL %q: want scheme tcp or tcp+tls", u.Redacted())
	}
	return u, nil
}

// NewListener serves lc.Service (empty: every Host; it overrides
// cfg.Service when set) on ln, which the Listener owns from then on (Close
// closes it); lc.Topics as in Listen. It does not block: ctx is there so
// that every backend opens with one shape. cfg.TLSConfig and
// cfg.ReusePort are not applied to ln (wrap it with tls.NewListener
// yourself). Errors: a nil ln.
func NewListener(ctx context.Context, ln net.Listener, lc transport.ListenConfig, cfg Config) (*Listener, error) {
	if ln == nil {
		return nil, errors.New("transport/tcp: NewListener with a nil net.Listener")
	}
	if lc.Service != "" {
		cfg.Service = lc.Service
	}
	topics := lc.Topics
	l := &Listener{
		cfg:     cfg,
		ln:      ln,
		ch:      make(chan *transport.Delivery),
		stopped: make(chan struct{}),
		pub:     newConn(Config{Subscribers: cfg.Subscribers, TLSConfig: cfg.TLSConfig}),
	}
	if len(topics) > 0 {
		l.topics = map[string]bool{}
		for _, t := range topics {
			l.topics[t] = true
		}
	}
	rht := cfg.ReadHeaderTimeout
	if rht == 0 {
		rht = DefaultReadHeaderTimeout
	}
	idle := cfg.IdleTimeout
	if idle == 0 {
		idle = DefaultIdleTimeout
	}
	mhb := cfg.MaxHeaderBytes
	if mhb == 0 {
		mhb = transport.DefaultMaxHeaderBytes
	}
	l.srv = &http.Server{
		Handler:           l,
		ReadHeaderTimeout: rht,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       idle,
		MaxHeaderBytes:    mhb,
		ErrorLog:          slog.NewLogLogger(cfg.logger().Handler(), slog.LevelWarn),
	}
	go func() {
		err := l.srv.Serve(ln)
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.logger().Error("transport/tcp: serve", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return l, nil
}

// Addr returns the listening address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// token is a delivery's Token; done is closed by Reply where ServeHTTP
// waits for the Server (pull mode), nil in push mode.
type token struct{ done chan struct{} }

// ServeHTTP hands a request to Receive and waits until it is answered.
func (l *Listener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The delivery and its token in one allocation; the token's channel
	// only where a Receive caller waits on it (pull mode).
	x := &struct {
		transport.Delivery
		tok token
	}{Delivery: transport.Delivery{Service: r.Host, RemoteAddr: r.RemoteAddr, Request: r}}
	d := &x.Delivery
	if r.Method != transport.MethodNotify && !l.serves(r.Host) {
		writeErr(w, fmt.Errorf("transport/tcp: this server serves %q, not %q: %w", l.cfg.Service, r.Host, transport.ErrNoResponders))
		return
	}
	if r.Method == transport.MethodNotify {
		if l.topics != nil && !l.topics[r.Host] {
			http.Error(w, "transport/tcp: not subscribed to topic "+r.Host, http.StatusNotFound)
			return
		}
		d.Topic = r.Host
	}
	if v := transport.HeaderValue(r.Header, transport.HeaderDeadline); v != "" {
		dl, err := transport.ParseDeadline(v)
		if err != nil {
			writeErr(w, err)
			return
		}
		d.Deadline = dl
	}
	// The handler reads the body as it arrives, as with net/http. A
	// Content-Length over the limit is a 413 before the handler runs; a
	// chunked body over it fails the handler's read.
	if max := l.cfg.maxBody(); max >= 0 && r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength > max {
			writeErr(w, &transport.TooLargeError{What: "body", Limit: max, Size: r.ContentLength})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, max)
	}
	d.ResponseWriter = w
	tok := &x.tok
	d.Token = tok
	serve, draining := l.pushed()
	if draining {
		// Read after Drain began (on a connection that was idle then, or
		// accepted before the socket closed): not one of the requests
		// Drain serves, so the Server never sees it.
		writeErr(w, fmt.Errorf("transport/tcp: server shutting down: %w", transport.ErrNoResponders))
		return
	}
	if serve != nil {
		serve(d) // on this connection's goroutine: no handoff
		return
	}
	tok.done = make(chan struct{})
	select {
	case l.ch <- d:
	case <-l.stopped:
		writeErr(w, fmt.Errorf("transport/tcp: listener closed: %w", transport.ErrNoResponders))
		return
	case <-r.Context().Done():
		return
	}
	<-tok.done
}

// serves reports whether a request with this Host is for the Listener's
// service (Config.Service).
func (l *Listener) serves(host string) bool {
	if l.cfg.Service == "" || strings.EqualFold(host, l.cfg.Service) {
		return true
	}
	// An address rather than a name: curl, or a caller that dials the
	// service's address as its name (tcp:// with no host).
	if _, _, err := net.SplitHostPort(host); err == nil {
		return true
	}
	return net.ParseIP(strings.Trim(host, "[]")) != nil
}

func writeErr(w http.ResponseWriter, err error) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set(transport.HeaderError, err.Error())
	w.WriteHeader(transport.StatusOf(err))
	fmt.Fprintln(w, err.Error())
}

// Push implements transport.Pusher: requests are served on the goroutine
// net/http runs for their connection.
func (l *Listener) Push(serve func(*transport.Delivery)) {
	l.mu.Lock()
	l.serve = serve
	l.mu.Unlock()
}

// pushed returns Push's serve function (nil in pull mode) and whether
// Drain or Close has begun.
func (l *Listener) pushed() (serve func(*transport.Delivery), draining bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.serve, l.draining
}

// Receive implements transport.Listener.
func (l *Listener) Receive(ctx context.Context) (*transport.Delivery, error) {
	select {
	case d := <-l.ch:
		return d, nil
	case <-l.stopped:
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Reply implements transport.Listener. The handler wrote the response on
// the connection already; Reply releases it. A delivery requeued without a
// response is answered 503.
func (l *Listener) Reply(ctx context.Context, d *transport.Delivery, resp *transport.Message, disp transport.Disposition) error {
	tok, ok := d.Token.(*token)
	if !ok {
		return fmt.Errorf("transport/tcp: delivery not from this listener")
	}
	if disp == transport.Requeue {
		writeErr(d.ResponseWriter, fmt.Errorf("transport/tcp: server shutting down: %w", transport.ErrNoResponders))
	}
	if tok.done != nil {
		close(tok.done) // pull mode: ServeHTTP waits for it
	}
	return nil
}

// Publish sends NOTIFY to topic's Config.Subscribers, as Conn.Publish does
// (an extra: transport.Listener has no Publish).
func (l *Listener) Publish(ctx context.Context, topic string, m *transport.Message) error {
	return l.pub.Publish(ctx, topic, m)
}

// Drain implements transport.Drainer: the listening socket closes at once,
// requests already read are served, idle connections close, and Receive
// returns ErrClosed once the last connection is done. A request read after
// Drain began (net/http closes idle connections shortly after, not at
// once) is answered 503 with Httpbus-Error (transport.ErrNoResponders)
// and never reaches the Server.
func (l *Listener) Drain() error {
	l.mu.Lock()
	if l.draining {
		l.mu.Unlock()
		return nil
	}
	l.draining = true
	l.mu.Unlock()
	l.srv.SetKeepAlivesEnabled(false)
	go func() {
		l.srv.Shutdown(context.Background())
		close(l.stopped)
	}()
	return nil
}

// Close implements transport.Listener: it closes the socket and every
// connection at once.
func (l *Listener) Close() error {
	l.mu.Lock()
	already := l.draining
	l.draining = true
	l.mu.Unlock()
	err := l.srv.Close()
	if !already {
		close(l.stopped)
	}
	l.pub.Close()
	return err
}

// Conn is the client side: net/http's http.Transport, sending each request
// to Config-resolved addresses. It implements http.RoundTripper, which
// transport.RoundTripper uses directly (no frame in between).
type Conn struct {
	// Addr, when set, receives every request whatever its service;
	// otherwise the service name is dialed as host:port.
	Addr string
	// Resolve, when set, maps a service name to host:port, before Addr.
	// Returning an error matching transport.ErrNoResponders means no server.
	Resolve func(service string) (string, error)

	cfg    Config
	rt     *http.Transport
	closed atomic.Bool
}

// errClosed is the error of a Conn used after Close.
var errClosed = fmt.Errorf("transport/tcp: conn: %w", transport.ErrClosed)

// NewConn returns a client side configured by cfg alone (no URL). tcp has
// no connection for the caller to own (net/http dials per request), so
// NewConn takes none; it does not block and the error is always nil: ctx
// and the error are there so that every backend opens with one shape. The
// caller sets Addr or Resolve before use.
func NewConn(ctx context.Context, cfg Config) (*Conn, error) {
	return newConn(cfg), nil
}

// Dial returns the client side described by rawURL (tcp:// or tcp+tls://,
// see the package doc, # URLs: the URL's host:port becomes Addr, its
// service= entries Resolve). The URL's options override cfg's fields,
// which supply the rest (Logger, TLSConfig, Subscribers, to which the
// URL's subscriber= entries are added). It does not block: connections
// are made per request. Errors: a malformed URL or option.
func Dial(ctx context.Context, rawURL string, cfg Config) (*Conn, error) {
	u, err := parse(rawURL)
	if err != nil {
		return nil, err
	}
	return dial(ctx, u, cfg)
}

func newConn(cfg Config) *Conn {
	rt := http.DefaultTransport.(*http.Transport).Clone()
	rt.Proxy = nil
	rt.MaxIdleConnsPerHost = 256
	rt.MaxIdleConns = 1024
	rt.TLSClientConfig = cfg.TLSConfig
	rt.ForceAttemptHTTP2 = false
	// The caller's own Accept-Encoding goes through untouched, as over a
	// broker: no gzip the caller did not ask for, no response decoded
	// behind its back (transporttest.RunDifferential).
	rt.DisableCompression = true
	return &Conn{cfg: cfg, rt: rt}
}

func (c *Conn) scheme() string {
	if c.cfg.TLSConfig != nil {
		return "https"
	}
	return "http"
}

func (c *Conn) resolve(service string) (string, error) {
	if c.Resolve != nil {
		return c.Resolve(service)
	}
	if c.Addr != "" {
		return c.Addr, nil
	}
	return service, nil
}

// RoundTrip sends req to the address of the service named by its URL host,
// with the context deadline in Httpbus-Deadline. Errors match
// transport.ErrNoResponders, ErrTimeout or ErrUnavailable.
func (c *Conn) RoundTrip(req *http.Request) (*http.Response, error) {
	if c.closed.Load() {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, errClosed
	}
	service := req.URL.Host
	addr, err := c.resolve(service)
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	// A shallow copy (a RoundTripper must not change the caller's request);
	// the header is copied only when a deadline is added to it.
	x := &struct {
		r  http.Request
		u  url.URL
		dl [1]string
	}{r: *req, u: *req.URL}
	out := &x.r
	out.URL = &x.u
	out.URL.Scheme, out.URL.Host, out.Host = c.scheme(), addr, service
	out.RequestURI = ""
	if dl, ok := req.Context().Deadline(); ok {
		// Keep an earlier deadline the request already carries (Call).
		if prev, err := transport.ParseDeadline(transport.HeaderValue(req.Header, transport.HeaderDeadline)); err != nil || prev.IsZero() || dl.Before(prev) {
			// A new map with the caller's values shared, not copied: the
			// caller's header stays as it was, and net/http only reads
			// these.
			out.Header = make(http.Header, len(req.Header)+1)
			for k, v := range req.Header {
				out.Header[k] = v
			}
			x.dl[0] = transport.FormatDeadline(dl)
			out.Header[transport.HeaderDeadline] = x.dl[:]
		}
	}
	resp, err := c.rt.RoundTrip(out)
	if err != nil {
		return nil, classify(req.Context(), service, err)
	}
	resp.Request = req
	return resp, nil
}

func classify(ctx context.Context, service string, err error) error {
	if ctx.Err() != nil {
		return transport.ContextError(ctx)
	}
	var dnsErr *net.DNSError
	if errors.Is(err, syscall.ECONNREFUSED) || errors.As(err, &dnsErr) {
		return fmt.Errorf("transport/tcp: service %q: %w: %w", service, transport.ErrNoResponders, err)
	}
	if errors.Is(err, transport.ErrNoResponders) {
		return err
	}
	return fmt.Errorf("transport/tcp: service %q: %w: %w", service, transport.ErrUnavailable, err)
}

// Call implements transport.Conn. A frame is decoded and sent as the
// request it holds; a message that is not a frame is sent as a POST to "/"
// with its payload; bytes that do not even start a request are written to
// the connection as they are, so the server's own answer (400) comes back.
// A frame that starts a request but is not exactly one (a body shorter than
// its Content-Length, bytes after the message) fails with
// transport.ErrMalformedFrame without being sent: on a stream it would
// become a different request.
func (c *Conn) Call(ctx context.Context, service string, m *transport.Message) (*transport.Message, error) {
	if c.closed.Load() {
		return nil, errClosed
	}
	var req *http.Request
	if transport.IsFrame(m.ContentType) {
		r, err := transport.DecodeRequest(m.Body, transport.Limits{MaxHeaderBytes: -1, MaxBodyBytes: -1})
		if err != nil {
			if _, perr := http.ReadRequest(bufio.NewReader(bytes.NewReader(m.Body))); perr == nil {
				// It starts with a request but is not exactly one (a short
				// body, bytes after it): on a stream that would be a different
				// request, so refuse it here.
				return nil, fmt.Errorf("transport/tcp: %w", err)
			}
			return c.callRaw(ctx, service, m.Body)
		}
		req = r
		req.RequestURI = ""
		req.URL.Host = service
	} else {
		d := &transport.Delivery{Message: *m, Service: service}
		req = transport.ForeignRequest(d)
		req.RequestURI = ""
		req.URL.Host = service
	}
	if !m.Deadline.IsZero() {
		req.Header.Set(transport.HeaderDeadline, transport.FormatDeadline(m.Deadline))
	}
	req = req.WithContext(ctx)
	resp, err := c.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	return responseMessage(resp)
}

func responseMessage(resp *http.Response) (*transport.Message, error) {
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("transport/tcp: read response: %w: %w", transport.ErrUnavailable, err)
	}
	resp.Header.Del("Content-Length")
	frame, err := transport.EncodeResponse(resp.StatusCode, resp.Header, body, "")
	if err != nil {
		return nil, err
	}
	return &transport.Message{Body: frame, ContentType: transport.MediaType}, nil
}

// callRaw writes b to a fresh connection, half-closes it and reads the
// answer.
func (c *Conn) callRaw(ctx context.Context, service string, b []byte) (*transport.Message, error) {
	addr, err := c.resolve(service)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, classify(ctx, service, err)
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	if _, err := nc.Write(b); err != nil {
		return nil, classify(ctx, service, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		return nil, classify(ctx, service, err)
	}
	return responseMessage(resp)
}

// Publish implements transport.Conn: it sends m (a frame, or a payload sent
// as the body) as a NOTIFY request with Host topic to every address in
// Config.Subscribers[topic], and fails if any does not answer 2xx.
func (c *Conn) Publish(ctx context.Context, topic string, m *transport.Message) error {
	if c.closed.Load() {
		return errClosed
	}
	var errs []error
	for _, addr := range c.cfg.Subscribers[topic] {
		var req *http.Request
		if transport.IsFrame(m.ContentType) {
			r, err := transport.DecodeRequest(m.Body, transport.Limits{MaxHeaderBytes: -1, MaxBodyBytes: -1})
			if err != nil {
				return fmt.Errorf("transport/tcp: publish: %w", err)
			}
			req = r
		} else {
			req = transport.ForeignRequest(&transport.Delivery{Message: *m, Topic: topic})
		}
		req.Method, req.RequestURI = transport.MethodNotify, ""
		req.URL.Scheme, req.URL.Host, req.Host = c.scheme(), addr, topic
		resp, err := c.rt.RoundTrip(req.WithContext(ctx))
		if err != nil {
			errs = append(errs, classify(ctx, topic, err))
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			errs = append(errs, fmt.Errorf("transport/tcp: NOTIFY %s to %s: %s", topic, addr, resp.Status))
		}
	}
	return errors.Join(errs...)
}

// Close implements transport.Conn: it closes idle connections.
func (c *Conn) Close() error {
	c.closed.Store(true)
	c.rt.CloseIdleConnections()
	return nil
}

// tlsConfig reads the tls_* options; it returns base for plain tcp://, and
// for tcp+tls:// without tls_* options when base is set.
func tlsConfig(u *url.URL, o *transport.Options, server bool, base *tls.Config) (*tls.Config, error) {
	ca, cert, key, name := o.Strings("tls_ca"), o.String("tls_cert", ""), o.String("tls_key", ""), o.String("tls_server_name", "")
	if !strings.EqualFold(u.Scheme, "tcp+tls") {
		if len(ca) > 0 || cert != "" || key != "" || name != "" {
			return nil, fmt.Errorf("transport/tcp: tls_* options in URL %q need the tcp+tls scheme", u.Redacted())
		}
		return base, nil
	}
	if base != nil && len(ca) == 0 && cert == "" && key == "" && name == "" {
		return base, nil
	}
	if (cert == "") != (key == "") {
		return nil, fmt.Errorf("transport/tcp: URL %q: tls_cert and tls_key go together", u.Redacted())
	}
	if server && cert == "" {
		return nil, fmt.Errorf("transport/tcp: URL %q: a TLS listener needs tls_cert and tls_key", u.Redacted())
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: name}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("transport/tcp: tls_cert/tls_key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if len(ca) > 0 {
		pool := x509.NewCertPool()
		for _, f := range ca {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("transport/tcp: tls_ca: %w", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("transport/tcp: tls_ca: no PEM certificate in %s", f)
			}
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// parseConfig reads u's options over base: an option in the URL overrides
// base's field, base supplies the rest; subscriber= entries are added to
// base's Subscribers (copied, never modified).
func parseConfig(u *url.URL, server bool, base Config) (Config, error) {
	o := transport.NewOptions("transport/tcp", u)
	tc, err := tlsConfig(u, o, server, base.TLSConfig)
	if err != nil {
		return Config{}, err
	}
	cfg := base
	cfg.ReadHeaderTimeout = o.Duration("read_header_timeout", base.ReadHeaderTimeout)
	cfg.ReadTimeout = o.Duration("read_timeout", base.ReadTimeout)
	cfg.WriteTimeout = o.Duration("write_timeout", base.WriteTimeout)
	cfg.IdleTimeout = o.Duration("idle_timeout", base.IdleTimeout)
	cfg.MaxHeaderBytes = o.Int("max_header_bytes", base.MaxHeaderBytes)
	cfg.MaxBodyBytes = int64(o.Int("max_body_bytes", int(base.MaxBodyBytes)))
	cfg.ReusePort = o.Bool("reuseport", base.ReusePort)
	cfg.TLSConfig = tc
	cfg.Subscribers = nil
	for topic, addrs := range base.Subscribers {
		if cfg.Subscribers == nil {
			cfg.Subscribers = map[string][]string{}
		}
		cfg.Subscribers[topic] = append([]string(nil), addrs...)
	}
	for _, s := range o.Strings("subscriber") {
		topic, addr, ok := strings.Cut(s, "@")
		if !ok || topic == "" || addr == "" {
			return cfg, fmt.Errorf("transport/tcp: bad subscriber %q in URL %q: want topic@host:port", s, u.Redacted())
		}
		if cfg.Subscribers == nil {
			cfg.Subscribers = map[string][]string{}
		}
		cfg.Subscribers[topic] = append(cfg.Subscribers[topic], addr)
	}
	return cfg, o.Err()
}

func listenURL(ctx context.Context, u *url.URL, lc transport.ListenConfig) (transport.Listener, error) {
	return listen(ctx, u, lc, Config{})
}

func dialURL(ctx context.Context, u *url.URL) (transport.Conn, error) {
	return dial(ctx, u, Config{})
}

func dial(_ context.Context, u *url.URL, base Config) (*Conn, error) {
	o := transport.NewOptions("transport/tcp", u)
	services := map[string]string{}
	for _, s := range o.Strings("service") {
		name, addr, ok := strings.Cut(s, "@")
		if !ok || name == "" || addr == "" {
			return nil, fmt.Errorf("transport/tcp: bad service %q in URL %q: want name@host:port", s, u.Redacted())
		}
		if prev, dup := services[name]; dup && prev != addr {
			return nil, fmt.Errorf("transport/tcp: service %q mapped twice in URL %q (%s and %s): one address per service", name, u.Redacted(), prev, addr)
		}
		services[name] = addr
	}
	// parseConfig reads the other options; service= is read above.
	q := u.Query()
	q.Del("service")
	rest := *u
	rest.RawQuery = q.Encode()
	cfg, err := parseConfig(&rest, false, base)
	if err != nil {
		return nil, err
	}
	c := newConn(cfg)
	c.Addr = u.Host
	if len(services) > 0 {
		c.Resolve = func(service string) (string, error) {
			if addr, ok := services[service]; ok {
				return addr, nil
			}
			if u.Host != "" {
				return u.Host, nil
			}
			return "", fmt.Errorf("transport/tcp: service %q is not in the URL's service= list: %w", service, transport.ErrNoResponders)
		}
	}
	return c, nil
}
