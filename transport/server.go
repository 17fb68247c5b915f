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
	"strconv"
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
	// request with a larger Content-Length gets 413 without running the
	// handler, a streamed one fails the handler's r.Body.Read, a larger
	// response is replaced by a 413 (or its stream aborted). Zero or
	// negative means no limit, as with net/http.
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
		case sem <- struct{}{}: // a free slot, the common case: no selectgo
			s.inFlight.Add(1)
			return true
		default:
		}
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
	// A pull listener's deliveries are served on PushWorkers: goroutines
	// that outlive one delivery, so their stacks stay grown.
	var pool PushWorkers
	defer pool.Close()
	served := func(d *Delivery) {
		defer release()
		s.serveDelivery(base, l, d)
	}

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
		pool.Serve(served, d)
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

func (s *Server) replyTimeout() time.Duration {
	if s.ReplyTimeout <= 0 {
		return DefaultReplyTimeout
	}
	return s.ReplyTimeout
}

// replyContext bounds one reply by ReplyTimeout. Most backends' Reply never
// waits on the context, so its timer starts only when Done is first called
// (lazyDeadline): a context.WithTimeout per reply cost 7% of an inmem round
// trip's CPU.
// The caller ends it with cancel (a method, not a closure to allocate).
func (s *Server) replyContext(base context.Context) *lazyDeadline {
	return s.replyContextIn(base, nil)
}

// replyContextIn is replyContext in ctx, or a new one if ctx is nil.
func (s *Server) replyContextIn(base context.Context, ctx *lazyDeadline) *lazyDeadline {
	if base.Done() != nil {
		base = context.WithoutCancel(base) // a reply outlives a cancelled base
	}
	if ctx == nil {
		ctx = new(lazyDeadline)
	}
	ctx.Context, ctx.deadline = base, time.Now().Add(s.replyTimeout())
	return ctx
}

// replySpace is what a delivery's final reply needs, allocated with the
// rest of its serving state (serveState).
type replySpace struct {
	ctx lazyDeadline
	msg Message
}

// reply sends resp (nil for none) and settles d, logging a failure.
func (s *Server) reply(base context.Context, l Listener, d *Delivery, resp []byte, disp Disposition) {
	s.replyIn(nil, base, l, d, resp, disp)
}

// replyIn is reply in space, if not nil (used once: a delivery's final
// reply).
func (s *Server) replyIn(space *replySpace, base context.Context, l Listener, d *Delivery, resp []byte, disp Disposition) {
	var ctx *lazyDeadline
	var m *Message
	if space != nil {
		ctx, m = &space.ctx, &space.msg
	}
	ctx = s.replyContextIn(base, ctx)
	defer ctx.cancel()
	if resp != nil && d.Topic == "" {
		if m == nil {
			m = new(Message)
		}
		*m = Message{Body: resp, ContentType: MediaType}
	} else {
		m = nil
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
	// The caller's inbox and stream id: broker headers (a streamed request,
	// or a caller from before issue 13), else fields of the frame, which is
	// then decoded first.
	peer, id := HeaderValue(d.Header, HeaderReplyTo), HeaderValue(d.Header, HeaderStream)
	// A request frame is decoded into rv, on this stack, which WithContext
	// below copies to the heap: one Request allocation, not two. req is set
	// before that only by the other decoders.
	var rv http.Request
	var req *http.Request
	var decodeErr error
	decoded := false
	st := new(serveState)
	if peer == "" && d.Topic == "" && IsFrame(d.ContentType) {
		st.box.taken.stream = true // the lean parser takes the stream fields
		decodeErr = decodeRequestInto(&rv, &st.box, d.Body, s.limits(), true)
		decoded = true
		if t := &st.box.taken; decodeErr == nil && t.lean {
			peer, id = t.peer, t.id
		} else if decodeErr == nil {
			peer, id = takeStreamFields(rv.Header)
		}
	}
	ex := st.exchange(s, base, l, d, peer, id) // nil for a version-1 caller
	if ex != nil && d.Redelivered {
		// The caller may have heard from the instance that died (a
		// "continue") and now waits on its inbox, not on the reply path:
		// announce this instance at once, and answer through the inbox.
		if err := ex.announce(0); err != nil {
			s.logger().Warn("transport: continue not sent", "service", d.Service, "err", err)
		}
	}
	// send answers with one whole frame and settles d.
	send := func(frame []byte, disp Disposition) {
		if ex != nil {
			ex.finishWhole(&st.reply, frame, disp)
			return
		}
		s.replyIn(&st.reply, base, l, d, frame, disp)
	}
	if !d.Deadline.IsZero() && !time.Now().Before(d.Deadline) {
		err := Timeout(errors.New("request expired before it was served"))
		send(ErrorResponse(err), Ack)
		return
	}
	ctx := base
	if !d.Deadline.IsZero() || ex != nil {
		// The handler's context ends at the caller's deadline, when the
		// caller cancels (ex.ctxEnd) or with base. It is a lazyDeadline: its
		// timer starts only if the handler asks for Done.
		lc := &st.ctx
		lc.Context, lc.deadline = base, d.Deadline
		ctx = lc
		defer lc.cancel()
		if ex != nil {
			ex.ctxEnd = lc // a caller's cancel ends the handler's context
		}
	}
	var err error
	switch {
	case decoded:
		err = decodeErr
	case ex.streamedRequest():
		req, err = ex.decodeStreamedRequest(ctx, s.limits())
	case IsFrame(d.ContentType):
		err = decodeRequestInto(&rv, &st.box, d.Body, s.limits(), true)
	default:
		req = ForeignRequest(d)
		if max := s.limits().body(); max >= 0 && int64(len(d.Body)) > max {
			err = &TooLargeError{What: "body", Limit: max, Size: int64(len(d.Body))}
		}
	}
	if err != nil {
		s.logger().Warn("transport: bad request frame", "service", d.Service, "topic", d.Topic, "bytes", len(d.Body), "err", err)
		send(ErrorResponse(err), Reject)
		return
	}
	if req == nil {
		req = rv.WithContext(ctx)
	} else {
		req = req.WithContext(ctx)
	}
	if !decoded {
		// A decoded frame's fields went above; the other paths' here:
		// never the handler's.
		takeStreamFields(req.Header)
	}
	if d.Topic != "" {
		req.Method = MethodNotify
	}
	req.RemoteAddr = d.RemoteAddr
	if d.Redelivered {
		req.Header.Set(HeaderRedelivered, "true")
	}
	w := &st.w
	*w = responseWriter{header: http.Header{}, maxBody: s.limits().body(), ex: ex, ctx: ctx, method: req.Method}
	if ex != nil {
		ex.startTimer()
	}
	ok := s.runHandler(w, req, d)
	if w.rs != nil {
		// The response went out as a stream: end it, or tell the caller
		// it will not complete.
		ex.stopTimer()
		err := errors.New("transport: handler panicked")
		if ok {
			err = w.finishStream()
		}
		if err != nil {
			s.logger().Error("transport: response stream not completed", "service", d.Service, "path", req.URL.Path, "err", err)
			ex.abort(err)
		}
		ex.settle(Ack)
		return
	}
	if !ok {
		send(errorFrame(http.StatusInternalServerError, errors.New("transport: handler panicked")), Ack)
		return
	}
	if !w.wroteHeader && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		send(ErrorResponse(Timeout(errors.New("handler returned at the caller's deadline without a response"))), Ack)
		return
	}
	if !w.wroteHeader && w.upgrade {
		send(errorFrame(http.StatusNotImplemented, ErrUpgrade), Ack)
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
	send(resp, Ack)
}

// serveState is one delivery's serving state in one allocation (issue 13:
// each was an allocation of its own): the decoded request's URL, header
// values and body reader, the exchange, the handler's context, the
// response writer and the final reply's context and message. It is never
// reused: a handler that keeps a part of it keeps all of it alive, and
// nothing else.
type serveState struct {
	box   leanURLBox
	ex    exchange
	ctx   lazyDeadline
	w     responseWriter
	reply replySpace
}

// exchange is initExchange on st.ex.
func (st *serveState) exchange(srv *Server, base context.Context, l Listener, d *Delivery, peer, id string) *exchange {
	return initExchange(&st.ex, srv, base, l, d, peer, id)
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
	// The writer, the handler's context and the reply's in one allocation.
	x := &struct {
		w     trackingWriter
		lc    lazyDeadline
		reply replySpace
	}{w: trackingWriter{ResponseWriter: d.ResponseWriter}}
	w := &x.w
	defer s.replyIn(&x.reply, base, l, d, nil, Ack)
	if !d.Deadline.IsZero() {
		if !time.Now().Before(d.Deadline) {
			writeError(w, StatusOf(ErrTimeout), Timeout(errors.New("request expired before it was served")))
			return
		}
		// The caller hangs up at its deadline, and net/http cancels the
		// connection's context when it does: that must read as the deadline
		// (DeadlineExceeded), not a cancellation. A hang-up well before the
		// deadline still cancels the handler.
		ctx := &x.lc
		ctx.Context, ctx.deadline, ctx.slack = req.Context(), d.Deadline, 10*time.Millisecond
		defer ctx.cancel()
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

// responseWriter buffers a handler's response for one frame, or sends it as
// a stream, with the rules of net/http's server (src/net/http/server.go,
// response and chunkWriter):
//   - the header is fixed at the first WriteHeader, Write or Flush;
//   - a 1xx status other than 101 is an interim response, sent before the
//     final response (in the frame, or ahead of a stream's head) with the
//     header as it is then; the header map is kept for the final response
//     (RFC 8297);
//   - a missing Content-Type (no "Content-Type" key at all) is sniffed when
//     the head is fixed (first Flush, start of a stream, or the frame) from
//     the bytes written by then, unless Content-Encoding or
//     Transfer-Encoding is set or the status allows no body;
//   - an explicit Content-Length bounds the writes (http.ErrContentLength)
//     and, on a HEAD response, is sent as given; a HEAD response with no
//     Content-Length and no body written has none;
//   - 204, 304 and 1xx carry no Content-Length or Transfer-Encoding, and
//     304 no Content-Type.
type responseWriter struct {
	header      http.Header // the handler's header until WriteHeader, then the sent one
	late        http.Header // what Header returns after WriteHeader: changes are ignored
	status      int
	body        bodyBuf
	maxBody     int64
	over        bool
	wroteHeader bool

	// Streams (binding version 2): ex is nil for a version-1 caller. Once
	// the body outgrows a part or the handler flushes, the response goes
	// out as a stream (rs), written through body as a coalescing buffer.
	ex      *exchange
	ctx     context.Context
	method  string
	rs      *respStream
	written int64
	upgrade bool // the handler answered 101 Switching Protocols

	interim       []byte // encoded 1xx responses, in order
	hasCL         bool   // the handler set a valid Content-Length
	contentLength int64  // its value, when hasCL
	sniffed       bool   // the head is fixed: Content-Type sniffed or not
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
	if code == http.StatusSwitchingProtocols {
		w.upgrade = true
		return
	}
	if code < 200 {
		h := w.header.Clone()
		h.Del("Content-Length")
		h.Del("Transfer-Encoding")
		if f, err := EncodeResponse(code, h, nil, ""); err == nil {
			w.interim = append(w.interim, f...)
		}
		return
	}
	w.wroteHeader = true
	w.status = code
	if cl := HeaderValue(w.header, "Content-Length"); cl != "" {
		v, err := strconv.ParseInt(cl, 10, 64)
		if err == nil && v >= 0 {
			w.hasCL, w.contentLength = true, v
		} else {
			delete(w.header, "Content-Length")
		}
	}
}

// sniff fixes the head as net/http's chunkWriter.writeHeader does with its
// first chunk: the body buffered so far, then extra (only the first 512
// bytes matter). It runs once; 304 loses its Content-Type and every
// bodiless status its Content-Length and Transfer-Encoding.
func (w *responseWriter) sniff(extra []byte) {
	if w.sniffed {
		return
	}
	w.sniffed = true
	h := w.header
	if !bodyAllowed(w.status) {
		if w.status == http.StatusNotModified {
			h.Del("Content-Type")
		}
		h.Del("Content-Length")
		h.Del("Transfer-Encoding")
		return
	}
	_, haveType := h["Content-Type"]
	if haveType || HeaderValue(h, "Content-Encoding") != "" || HeaderValue(h, "Transfer-Encoding") != "" {
		return
	}
	first := w.body.Bytes()
	if n := 512 - len(first); n > 0 && len(extra) > 0 {
		first = append(first[:len(first):len(first)], extra[:min(n, len(extra))]...)
	}
	if len(first) > 0 {
		h["Content-Type"] = []string{http.DetectContentType(first)}
	}
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.hasCL && w.written+int64(len(p)) > w.contentLength {
		return 0, http.ErrContentLength
	}
	if w.maxBody >= 0 && w.written+int64(len(p)) > w.maxBody {
		w.over = true
		return 0, &TooLargeError{What: "response body", Limit: w.maxBody, Size: -1}
	}
	if w.rs == nil && w.ex != nil && w.method != http.MethodHead && w.body.Len()+len(p) > w.ex.size {
		w.sniff(p)
		if err := w.startStream(); err != nil {
			return 0, err
		}
	}
	if w.rs != nil {
		return w.streamWrite(p)
	}
	w.written += int64(len(p))
	return w.body.Write(p)
}

// Flush implements http.Flusher. For a version-2 caller it sends what the
// handler wrote so far (the response becomes a stream); for a version-1
// caller the response is one frame sent when the handler returns, so Flush
// only fixes the header.
func (w *responseWriter) Flush() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.sniff(nil)
	if w.ex == nil || w.method == http.MethodHead {
		return
	}
	if w.rs == nil {
		if err := w.startStream(); err != nil {
			return
		}
	}
	if err := w.emit(); err == nil {
		w.rs.pw.flush(false) //nolint:errcheck // the stream's error is reported at its end
	}
}

// startStream turns the response into a stream: the head goes out with
// Transfer-Encoding: chunked, or with the Content-Length the handler set.
func (w *responseWriter) startStream() error {
	w.sniff(nil)
	h := w.header
	rs := &respStream{remain: -1}
	switch cl := h.Get("Content-Length"); {
	case !bodyAllowed(w.status) || w.method == http.MethodHead:
		rs.noBody = true
	case cl != "" && !hasTrailers(h):
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || n < 0 {
			h.Del("Content-Length")
			h.Set("Transfer-Encoding", "chunked")
			rs.chunked = true
		} else {
			rs.remain = n
		}
	default:
		h.Del("Content-Length")
		h.Set("Transfer-Encoding", "chunked")
		rs.chunked = true
	}
	var b bytes.Buffer
	b.Write(w.interim) // 1xx responses go first, as in a frame
	if err := writeHead(&b, w.status, h); err != nil {
		return err
	}
	// Part 0 may go as a Reply, which SendCopier does not cover.
	copies := sendCopies(w.ex.st)
	rs.pw = &partWriter{size: w.ex.partSize, send: func(body []byte, seq int64, end bool) (bool, error) {
		return copies && seq > 0, w.ex.sendPart(w.ctx, body, seq, end)
	}}
	w.rs = rs
	if _, err := rs.pw.Write(b.Bytes()); err != nil {
		return err
	}
	if rs.chunked {
		return nil // body stays buffered until emit
	}
	buffered := w.body.Bytes()
	w.body.Reset()
	if rs.noBody {
		return nil
	}
	if int64(len(buffered)) > rs.remain {
		return http.ErrContentLength
	}
	rs.remain -= int64(len(buffered))
	_, err := rs.pw.Write(buffered)
	return err
}

// streamWrite writes p to a response that is a stream.
func (w *responseWriter) streamWrite(p []byte) (int, error) {
	rs := w.rs
	if rs.pw.err != nil {
		return 0, rs.pw.err
	}
	w.written += int64(len(p))
	switch {
	case rs.noBody:
		return len(p), nil
	case !rs.chunked:
		if int64(len(p)) > rs.remain {
			return 0, http.ErrContentLength
		}
		rs.remain -= int64(len(p))
		return rs.pw.Write(p)
	}
	if w.body.Len()+len(p) < w.ex.size {
		return w.body.Write(p)
	}
	if err := w.emit(); err != nil {
		return 0, err
	}
	if len(p) >= w.ex.size {
		return chunkWriter{rs.pw}.Write(p)
	}
	return w.body.Write(p)
}

// emit writes the buffered body as one chunk of a chunked stream.
func (w *responseWriter) emit() error {
	if !w.rs.chunked || w.body.Len() == 0 {
		return w.rs.pw.err
	}
	_, err := chunkWriter{w.rs.pw}.Write(w.body.Bytes())
	w.body.Reset()
	return err
}

// finishStream ends a response stream: the last chunk and the trailers,
// and the part with the end mark.
func (w *responseWriter) finishStream() error {
	rs := w.rs
	if w.over {
		return &TooLargeError{What: "response body", Limit: w.maxBody, Size: -1}
	}
	if rs.chunked {
		if err := w.emit(); err != nil {
			return err
		}
		if err := (chunkWriter{rs.pw}).close(trailers(w.header, w.liveHeader())); err != nil {
			return err
		}
	} else if !rs.noBody && rs.remain > 0 {
		return fmt.Errorf("transport: handler wrote %d bytes fewer than its Content-Length", rs.remain)
	}
	return rs.pw.flush(true)
}

// liveHeader is the handler's header map as it is now: the one Header
// returns, where trailer values are set after the body.
func (w *responseWriter) liveHeader() http.Header {
	if w.late != nil {
		return w.late
	}
	return w.header
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
	w.sniff(nil)
	h := w.header
	// Canonical keys: delete, not Del, which canonicalizes each time.
	delete(h, "Transfer-Encoding")
	if method != http.MethodHead || !bodyAllowed(w.status) {
		delete(h, "Content-Length")
	}
	var resp []byte
	var err error
	switch {
	case !bodyAllowed(w.status):
		resp, err = EncodeResponse(w.status, h, nil, method)
	case hasTrailers(h) && method != http.MethodHead:
		resp, err = encodeChunkedResponse(w.status, h, w.body.Bytes(), trailers(h, w.liveHeader()))
	default:
		var ok bool
		if resp, ok = w.body.frame(w.status, h, method); !ok {
			resp, err = EncodeResponse(w.status, h, w.body.Bytes(), method)
		}
	}
	if err != nil || len(w.interim) == 0 {
		return resp, err
	}
	return append(w.interim, resp...), nil
}
