package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxInFlight is the number of requests a Server handles at once
// when Server.MaxInFlight is zero.
const DefaultMaxInFlight = 128

// DefaultReplyTimeout bounds sending one reply and settling its delivery
// when Server.ReplyTimeout is zero.
const DefaultReplyTimeout = 30 * time.Second

// Server serves an http.Handler over Listeners, as http.Server serves one
// over net.Listeners. Its exported fields are its configuration; the zero
// value is usable. Fields must not change after Serve is first called.
type Server struct {
	// Handler serves each request; nil means http.DefaultServeMux.
	// Notifications arrive as requests with Method MethodNotify and Host set
	// to the topic; their responses are discarded.
	Handler http.Handler

	// MaxInFlight bounds the requests handled at once per Serve call; the
	// Server takes no delivery from the Listener while the bound is reached
	// (brokers with prefetch see it as unacked messages). Zero means
	// DefaultMaxInFlight.
	MaxInFlight int

	// MaxHeaderBytes bounds a request frame's request line and headers, in
	// bytes; over it the caller gets 431. Zero means DefaultMaxHeaderBytes.
	MaxHeaderBytes int

	// MaxBodyBytes bounds a request body and a response body, in bytes; a
	// larger request gets 413 without running the handler, a larger
	// response is replaced by a 413. Zero means DefaultMaxBodyBytes;
	// negative means no limit.
	MaxBodyBytes int64

	// ReplyTimeout bounds sending a reply and settling its delivery. Zero
	// means DefaultReplyTimeout.
	ReplyTimeout time.Duration

	// BaseContext returns the context every request context derives from;
	// nil means context.Background(). Shutdown does not cancel it.
	BaseContext func(Listener) context.Context

	// Logger receives errors (malformed frames, panics, failed replies);
	// nil means slog.Default().
	Logger *slog.Logger

	mu         sync.Mutex
	listeners  map[*serving]struct{}
	shutdownCh chan struct{} // closed by Shutdown and Close
	closed     atomic.Bool
	inFlight   sync.WaitGroup
	loops      sync.WaitGroup
}

type serving struct {
	l      Listener
	cancel context.CancelFunc
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Server) limits() Limits {
	return Limits{MaxHeaderBytes: s.MaxHeaderBytes, MaxBodyBytes: s.MaxBodyBytes}
}

// Serve takes deliveries from l and serves each in its own goroutine, at most
// MaxInFlight at once, until l fails or the server shuts down. It always
// returns a non-nil error: ErrServerClosed after Shutdown or Close (at once,
// as http.Server.Serve does, while Shutdown finishes the requests in flight),
// else the error of l.Receive. Serve does not close l unless the server
// shuts down.
func (s *Server) Serve(l Listener) error {
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners = map[*serving]struct{}{}
		s.shutdownCh = make(chan struct{})
	}
	base := context.Background()
	if s.BaseContext != nil {
		base = s.BaseContext(l)
	}
	recvCtx, cancel := context.WithCancel(base)
	sv := &serving{l: l, cancel: cancel}
	s.listeners[sv] = struct{}{}
	s.loops.Add(1)
	shutdownCh := s.shutdownCh
	s.mu.Unlock()

	errc := make(chan error, 1)
	go func() {
		defer s.loops.Done()
		defer cancel()
		err := s.receiveLoop(base, recvCtx, l)
		s.mu.Lock()
		delete(s.listeners, sv)
		s.mu.Unlock()
		errc <- err
	}()
	select {
	case err := <-errc:
		return err
	case <-shutdownCh:
		return ErrServerClosed
	}
}

func (s *Server) receiveLoop(base, recvCtx context.Context, l Listener) error {
	n := s.MaxInFlight
	if n <= 0 {
		n = DefaultMaxInFlight
	}
	sem := make(chan struct{}, n)
	// take waits for an in-flight slot for d; if the server stops first, d
	// goes back to the broker (and its caller gets 503 where it waits).
	take := func(d *Delivery) bool {
		select {
		case sem <- struct{}{}:
			s.inFlight.Add(1)
			return true
		case <-recvCtx.Done():
			s.reply(base, l, d, ErrorResponse(fmt.Errorf("transport: server closed: %w", ErrNoResponders)), Requeue)
			return false
		}
	}
	release := func() { <-sem; s.inFlight.Done() }

	if pf, ok := l.(Prefetcher); ok {
		pf.SetPrefetch(n) // before anything is taken: the broker's prefetch follows MaxInFlight
	}
	p, pusher := l.(Pusher)
	if pusher {
		p.Push(func(d *Delivery) {
			if take(d) {
				defer release()
				s.serveDelivery(base, l, d)
			}
		})
	}
	for {
		// A pull listener takes its slot before Receive, so that nothing is
		// taken from the broker beyond MaxInFlight. A Pusher's Receive mostly
		// waits for the end of the listener: it takes its slot after
		// receiving, else it would hold one while the pushed requests wait
		// for it (a deadlock at MaxInFlight 1).
		if !pusher {
			select {
			case sem <- struct{}{}:
			case <-recvCtx.Done():
				return ErrServerClosed
			}
		}
		d, err := l.Receive(recvCtx)
		if err != nil {
			if !pusher {
				<-sem
			}
			if s.closed.Load() {
				return ErrServerClosed
			}
			return err
		}
		if pusher {
			if !take(d) {
				continue
			}
		} else {
			s.inFlight.Add(1)
		}
		go func() {
			defer release()
			s.serveDelivery(base, l, d)
		}()
	}
}

// Shutdown stops intake on every listener being served, waits for the
// requests in flight to be answered and settled, then closes the listeners
// and returns nil. Listeners that implement Drainer also serve the
// deliveries they already took from the broker. If ctx ends first, Shutdown
// returns ctx.Err() and leaves the rest to Close. Serve returns
// ErrServerClosed as soon as intake has stopped (every Drain returned), so
// that a request sent after Serve returns is not taken by this server, as
// net/http closes its listeners before Serve returns.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed.Store(true) // no new Serve; Serve returns after the drains below
	svs := make([]*serving, 0, len(s.listeners))
	for sv := range s.listeners {
		svs = append(svs, sv)
	}
	s.mu.Unlock()
	for _, sv := range svs {
		if dr, ok := sv.l.(Drainer); ok {
			if err := dr.Drain(); err != nil {
				s.logger().Warn("transport: drain failed", "err", err)
				sv.cancel()
			}
		} else {
			sv.cancel()
		}
	}
	s.mu.Lock()
	s.markClosed()
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.loops.Wait()
		s.inFlight.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		for _, sv := range svs {
			sv.cancel()
		}
		return ctx.Err()
	}
	var errs []error
	for _, sv := range svs {
		if err := sv.l.Close(); err != nil && !errors.Is(err, ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close closes every listener being served at once, without waiting for
// requests in flight (their deliveries return to the broker where it can
// redeliver them). Serve returns ErrServerClosed.
func (s *Server) Close() error {
	s.mu.Lock()
	s.markClosed()
	svs := make([]*serving, 0, len(s.listeners))
	for sv := range s.listeners {
		svs = append(svs, sv)
	}
	s.mu.Unlock()
	var errs []error
	for _, sv := range svs {
		sv.cancel()
		if err := sv.l.Close(); err != nil && !errors.Is(err, ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// markClosed records the shutdown; s.mu must be held.
func (s *Server) markClosed() {
	s.closed.Store(true)
	if s.shutdownCh != nil {
		select {
		case <-s.shutdownCh:
		default:
			close(s.shutdownCh)
		}
	}
}

func (s *Server) replyContext(base context.Context) (context.Context, context.CancelFunc) {
	t := s.ReplyTimeout
	if t <= 0 {
		t = DefaultReplyTimeout
	}
	return context.WithTimeout(context.WithoutCancel(base), t)
}

// reply sends resp (nil for none) and settles d, logging a failure.
func (s *Server) reply(base context.Context, l Listener, d *Delivery, resp []byte, disp Disposition) {
	ctx, cancel := s.replyContext(base)
	defer cancel()
	var m *Message
	if resp != nil && d.Topic == "" {
		m = &Message{Body: resp, ContentType: MediaType}
	}
	if err := l.Reply(ctx, d, m, disp); err != nil {
		level := slog.LevelError
		if errors.Is(err, ErrUnavailable) {
			// The connection died with the delivery unacked: where the
			// broker redelivers, another instance answers it.
			level = slog.LevelWarn
		}
		s.logger().Log(ctx, level, "transport: reply failed", "service", d.Service, "topic", d.Topic, "err", err)
	}
}

func (s *Server) serveDelivery(base context.Context, l Listener, d *Delivery) {
	if d.ResponseWriter != nil {
		s.serveNative(base, l, d)
		return
	}
	if !d.Deadline.IsZero() && !time.Now().Before(d.Deadline) {
		err := Timeout(errors.New("request expired before it was served"))
		s.reply(base, l, d, ErrorResponse(err), Ack)
		return
	}
	var req *http.Request
	var err error
	if IsFrame(d.ContentType) {
		req, err = DecodeRequest(d.Body, s.limits())
	} else {
		req = ForeignRequest(d)
		if max := s.limits().body(); max >= 0 && int64(len(d.Body)) > max {
			err = &TooLargeError{What: "body", Limit: max, Size: int64(len(d.Body))}
		}
	}
	if err != nil {
		s.logger().Warn("transport: bad request frame", "service", d.Service, "topic", d.Topic, "bytes", len(d.Body), "err", err)
		s.reply(base, l, d, ErrorResponse(err), Reject)
		return
	}
	if d.Topic != "" {
		req.Method = MethodNotify
	}
	ctx := base
	if !d.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(base, d.Deadline)
		defer cancel()
	}
	req = req.WithContext(ctx)
	req.RemoteAddr = d.RemoteAddr
	if d.Redelivered {
		req.Header.Set(HeaderRedelivered, "true")
	}
	w := &responseWriter{header: http.Header{}, maxBody: s.limits().body()}
	if !s.runHandler(w, req, d) {
		s.reply(base, l, d, errorFrame(http.StatusInternalServerError, errors.New("transport: handler panicked")), Ack)
		return
	}
	if !w.wroteHeader && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		s.reply(base, l, d, ErrorResponse(Timeout(errors.New("handler returned at the caller's deadline without a response"))), Ack)
		return
	}
	resp, err := w.frame(req.Method)
	if err == nil {
		if sl, ok := l.(SizeLimiter); ok {
			if max := sl.MaxMessageBytes(); max > 0 && int64(len(resp)) > max {
				err = &TooLargeError{What: "response message", Limit: max, Size: int64(len(resp))}
			}
		}
	}
	if err != nil {
		s.logger().Error("transport: response not sent", "service", d.Service, "path", req.URL.Path, "err", err)
		resp = ErrorResponse(err)
	}
	s.reply(base, l, d, resp, Ack)
}

// runHandler runs the handler, turning a panic into false (and a log line).
func (s *Server) runHandler(w http.ResponseWriter, req *http.Request, d *Delivery) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			ok = false
			if v != http.ErrAbortHandler {
				s.logger().Error("transport: handler panic", "service", d.Service, "method", req.Method, "path", req.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			}
		}
	}()
	h := s.Handler
	if h == nil {
		h = http.DefaultServeMux
	}
	h.ServeHTTP(w, req)
	return true
}

// serveNative runs the handler on a backend's own ResponseWriter (tcp).
func (s *Server) serveNative(base context.Context, l Listener, d *Delivery) {
	req := d.Request
	w := &trackingWriter{ResponseWriter: d.ResponseWriter}
	defer s.reply(base, l, d, nil, Ack)
	if !d.Deadline.IsZero() {
		if !time.Now().Before(d.Deadline) {
			writeError(w, StatusOf(ErrTimeout), Timeout(errors.New("request expired before it was served")))
			return
		}
		// The caller hangs up at its deadline, and net/http cancels the
		// connection's context when it does: that must read as the deadline
		// (DeadlineExceeded), not a cancellation. A hang-up well before the
		// deadline still cancels the handler.
		ctx, cancel := context.WithDeadline(context.WithoutCancel(req.Context()), d.Deadline)
		defer cancel()
		stop := context.AfterFunc(req.Context(), func() {
			if time.Until(d.Deadline) > 10*time.Millisecond {
				cancel()
			}
		})
		defer stop()
		req = req.WithContext(ctx)
	}
	lim := s.limits()
	if max := lim.header(); max >= 0 {
		if n := headerSize(req); n > max {
			writeError(w, http.StatusRequestHeaderFieldsTooLarge, &TooLargeError{What: "header", Limit: int64(max), Size: int64(n)})
			return
		}
	}
	if max := lim.body(); max >= 0 {
		if req.ContentLength > max {
			writeError(w, http.StatusRequestEntityTooLarge, &TooLargeError{What: "body", Limit: max, Size: req.ContentLength})
			return
		}
		if req.ContentLength < 0 {
			// A known length was checked above and the backend's body
			// reader enforces it; only an unknown one needs the guard.
			req.Body = http.MaxBytesReader(w, req.Body, max)
		}
	}
	if d.Redelivered {
		req.Header.Set(HeaderRedelivered, "true")
	}
	if !s.runHandler(w, req, d) {
		if !w.wrote {
			writeError(w, http.StatusInternalServerError, errors.New("transport: handler panicked"))
		}
		return
	}
	if !w.wrote && errors.Is(req.Context().Err(), context.DeadlineExceeded) {
		writeError(w, http.StatusGatewayTimeout, Timeout(errors.New("handler returned at the caller's deadline without a response")))
	}
}

// headerSize approximates the bytes of a request's request line and header
// block as they were on the wire.
func headerSize(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Host) + 20
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

func writeError(w http.ResponseWriter, status int, err error) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set(HeaderError, err.Error())
	w.WriteHeader(status)
	fmt.Fprintln(w, err.Error())
}

// trackingWriter records whether the handler started its response, and
// exposes the underlying writer's optional interfaces through Unwrap
// (http.ResponseController).
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *trackingWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.wrote = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *trackingWriter) Write(p []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(p)
}

func (w *trackingWriter) Flush() {
	w.wrote = true
	http.NewResponseController(w.ResponseWriter).Flush() //nolint:errcheck // Flusher has no error
}

func (w *trackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ReadFrom lets io.Copy use the underlying writer's ReadFrom (net/http's
// pooled copy) instead of allocating a 32 KiB buffer per response.
func (w *trackingWriter) ReadFrom(r io.Reader) (int64, error) {
	w.wrote = true
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
}

// responseWriter buffers a handler's response for one frame, with net/http's
// rules: the header is fixed at the first WriteHeader or Write, a missing
// Content-Type is sniffed from the first 512 bytes, 1xx statuses are interim
// and dropped, Flush is accepted (the frame is sent when the handler returns).
type responseWriter struct {
	header      http.Header // the handler's header until WriteHeader, then the sent one
	late        http.Header // what Header returns after WriteHeader: changes are ignored
	status      int
	body        bytes.Buffer
	maxBody     int64
	over        bool
	wroteHeader bool
}

func (w *responseWriter) Header() http.Header {
	if !w.wroteHeader {
		return w.header
	}
	if w.late == nil {
		w.late = w.header.Clone()
	}
	return w.late
}

func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 {
		return
	}
	w.wroteHeader = true
	w.status = code
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		if w.header.Get("Content-Type") == "" && w.header.Get("Transfer-Encoding") == "" && len(p) > 0 {
			w.header.Set("Content-Type", http.DetectContentType(p))
		}
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.maxBody >= 0 && int64(w.body.Len()+len(p)) > w.maxBody {
		w.over = true
		return 0, &TooLargeError{What: "response body", Limit: w.maxBody, Size: -1}
	}
	return w.body.Write(p)
}

// Flush implements http.Flusher. The response is buffered until the handler
// returns, so Flush only fixes the header.
func (w *responseWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
}

func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified && (status < 100 || status > 199)
}

func (w *responseWriter) frame(method string) ([]byte, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.over {
		return nil, &TooLargeError{What: "response body", Limit: w.maxBody, Size: -1}
	}
	h := w.header
	h.Del("Transfer-Encoding")
	h.Del("Content-Length")
	if !bodyAllowed(w.status) {
		return EncodeResponse(w.status, h, nil, method)
	}
	return EncodeResponse(w.status, h, w.body.Bytes(), method)
}
