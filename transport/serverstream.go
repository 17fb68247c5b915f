package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// exchange is the server's side of one request from a version-2 caller
// (one that sent HeaderReplyTo): the response may go as a stream, and the
// caller may cancel. Its first message to the caller goes as a Hold reply
// (so that the caller's Call returns); everything after it goes to the
// caller's inbox with Streamer.Send, and the last Reply only settles.
type exchange struct {
	srv  *Server
	l    Listener
	st   Streamer
	d    *Delivery
	base context.Context
	peer string // the caller's inbox
	id   string // the stream id the caller chose
	size int    // part size, bytes

	mu     sync.Mutex
	held   bool // a Hold reply went out
	ended  bool // the final reply is going out: no more announcing
	s      *stream
	mx     *mux
	ctxEnd *lazyDeadline // the handler's context: cancel ends it
	timer  atomic.Pointer[announcer]
}

// initExchange makes ex the exchange for a request whose caller named its
// inbox peer and stream id and returns it, or returns nil (a version-1
// caller, a notification, a listener that cannot stream).
func initExchange(ex *exchange, srv *Server, base context.Context, l Listener, d *Delivery, peer, id string) *exchange {
	st, ok := l.(Streamer)
	if !ok || d.Topic != "" || d.Request != nil || peer == "" || id == "" {
		return nil
	}
	ex.srv, ex.l, ex.st, ex.d, ex.base, ex.peer, ex.id, ex.size = srv, l, st, d, base, peer, id, partBytes(l)
	return ex
}

// takeStreamFields removes HeaderReplyTo and HeaderStream from a decoded
// request's header, where a caller that fits its request in one message
// puts them (WIRE.md §7), and returns them. A handler never sees them.
func takeStreamFields(h http.Header) (peer, id string) {
	if h == nil {
		return "", ""
	}
	peer, id = HeaderValue(h, HeaderReplyTo), HeaderValue(h, HeaderStream)
	delete(h, HeaderReplyTo)
	delete(h, HeaderStream)
	return peer, id
}

// streamedRequest reports that the request's body follows in parts.
func (ex *exchange) streamedRequest() bool {
	return ex != nil && HeaderValue(ex.d.Header, HeaderSeq) == "0" && HeaderValue(ex.d.Header, HeaderEnd) != "1"
}

// open registers the exchange's stream in the listener's mux; ex.mu held.
func (ex *exchange) open(ctx context.Context) error {
	if ex.s != nil {
		return nil
	}
	mx, err := muxFor(ctx, ex.st)
	if err != nil {
		return err
	}
	if _, err := mx.current(ctx); err != nil {
		return err
	}
	s := newStream(mx, ex.id)
	s.log = ex.srv.logger()
	s.setPeer(ex.peer)
	s.onAbort = func(error) {
		if ex.ctxEnd != nil {
			ex.ctxEnd.cancel()
		}
	}
	if err := mx.register(s); err != nil {
		return err
	}
	ex.s, ex.mx = s, mx
	return nil
}

// announce sends "continue" (with credit for request parts) as the Hold
// reply, if nothing went to the caller yet: the caller learns this
// instance's inbox, to send the request's parts and to cancel.
func (ex *exchange) announce(credit int64) error {
	ex.mu.Lock()
	defer ex.mu.Unlock()
	if ex.held || ex.ended {
		return nil
	}
	ctx := ex.srv.replyContext(ex.base)
	defer ctx.cancel()
	if err := ex.open(ctx); err != nil {
		return err
	}
	h := http.Header{
		HeaderVersion: {Version2},
		HeaderStream:  {ex.id},
		HeaderControl: {controlContinue},
		HeaderReplyTo: {ex.mx.address()},
	}
	if credit > 0 {
		// Credit for the request's parts: in parts, and in bytes from
		// the end of part 0 (the request message), which this end took.
		h.Set(HeaderCredit, strconv.FormatInt(credit, 10))
		h.Set(HeaderCreditBytes, strconv.FormatInt(int64(len(ex.d.Body))+DefaultWindowBytes, 10))
	}
	ex.held = true
	return ex.l.Reply(ctx, ex.d, &Message{ContentType: MediaType, Header: h}, Hold)
}

// startTimer announces the exchange after processingAfter, so that a
// caller that gives up can cancel a handler that runs long. The timer is
// taken from announcers, not made per exchange (a time.AfterFunc and its
// closure per request were 7% of an inmem round trip's CPU).
func (ex *exchange) startTimer() {
	a := announcers.Get().(*announcer)
	a.ex.Store(ex)
	if a.timer == nil {
		a.timer = time.AfterFunc(processingAfter, a.fire)
	} else {
		a.timer.Reset(processingAfter)
	}
	ex.timer.Store(a)
}

func (ex *exchange) stopTimer() {
	if a := ex.timer.Swap(nil); a != nil {
		a.timer.Stop()
		a.ex.CompareAndSwap(ex, nil)
		announcers.Put(a)
	}
}

// announcer is a reusable processingAfter timer. A callback already
// running when its exchange stops may see the next exchange that took the
// announcer and announce it early: harmless, as a continue may come at any
// time (a redelivered request's comes at once).
type announcer struct {
	timer *time.Timer
	ex    atomic.Pointer[exchange]
}

var announcers = sync.Pool{New: func() any { return new(announcer) }}

func (a *announcer) fire() {
	ex := a.ex.Load()
	if ex == nil {
		return
	}
	if err := ex.announce(0); err != nil {
		ex.srv.logger().Debug("transport: continue not sent", "service", ex.d.Service, "err", err)
	}
}

// sendPart sends response part seq: the first as the Hold reply, the
// others to the caller's inbox within the caller's credit.
func (ex *exchange) sendPart(ctx context.Context, body []byte, seq int64, end bool) error {
	h := partHeader(ex.id, seq, end)
	ex.mu.Lock()
	if !ex.held {
		defer ex.mu.Unlock()
		rctx := ex.srv.replyContext(ex.base)
		defer rctx.cancel()
		if err := ex.open(rctx); err != nil {
			return err
		}
		h.Set(HeaderReplyTo, ex.mx.address())
		ex.held = true
		ex.s.countSent(len(body)) // part 0 counts against credit in bytes
		return ex.l.Reply(rctx, ex.d, &Message{Body: body, ContentType: MediaType, Header: h}, Hold)
	}
	s := ex.s
	if seq == 0 {
		// After a "continue" on the reply path, which the caller may not
		// have heard (a redelivered request), part 0 says who answers.
		h.Set(HeaderReplyTo, ex.mx.address())
	}
	ex.mu.Unlock()
	if err := s.waitCredit(ctx, seq, len(body), ex.srv.replyTimeout()); err != nil {
		return err
	}
	rctx := ex.srv.replyContext(ex.base)
	defer rctx.cancel()
	return ex.st.Send(rctx, ex.peer, &Message{Body: body, ContentType: MediaType, Header: h})
}

// partSize is the size of the next response part: the small size until
// the caller grants credit in bytes.
func (ex *exchange) partSize() int {
	ex.mu.Lock()
	s := ex.s
	ex.mu.Unlock()
	if s == nil {
		return ex.size
	}
	return s.partSize(ex.size, largePartBytes(ex.l))
}

// finishWhole sends a response that is one frame: as the reply (the
// version-1 shape) when nothing went out yet, else as the only part of the
// response stream; then settles the delivery as disp.
func (ex *exchange) finishWhole(space *replySpace, frame []byte, disp Disposition) {
	ex.stopTimer()
	ex.mu.Lock()
	held := ex.held
	ex.ended = true
	ex.mu.Unlock()
	if !held {
		ex.srv.replyIn(space, ex.base, ex.l, ex.d, frame, disp)
		return
	}
	if err := ex.sendPart(ex.base, frame, 0, true); err != nil {
		level := slog.LevelWarn
		if errors.Is(err, errCancelled) {
			level = slog.LevelDebug
		}
		ex.srv.logger().Log(ex.base, level, "transport: response not sent", "service", ex.d.Service, "err", err)
	}
	ex.settle(disp)
}

// settle settles the delivery (the Hold reply went out before) and ends
// the exchange.
func (ex *exchange) settle(disp Disposition) {
	ex.stopTimer()
	ex.srv.reply(ex.base, ex.l, ex.d, nil, disp)
	ex.close()
}

func (ex *exchange) close() {
	ex.mu.Lock()
	s, mx := ex.s, ex.mx
	ex.mu.Unlock()
	if s != nil {
		mx.unregister(s)
	}
}

// abort tells the caller that the response will not complete.
func (ex *exchange) abort(err error) {
	ex.mu.Lock()
	s := ex.s
	ex.mu.Unlock()
	if s == nil {
		return
	}
	ctx := ex.srv.replyContext(ex.base)
	defer ctx.cancel()
	s.control(ctx, controlAbort, http.Header{HeaderError: {err.Error()}})
}

// decodeStreamedRequest reads a request whose body follows in parts: it
// announces the exchange with credit, then parses part 0 and the parts
// after it with http.ReadRequest, so the handler reads r.Body while parts
// still arrive.
func (ex *exchange) decodeStreamedRequest(ctx context.Context, lim Limits) (*http.Request, error) {
	if _, err := checkHeader(ex.d.Body, lim); err != nil {
		return nil, err
	}
	if ex.d.Redelivered {
		// The parts after the first went to the instance that died.
		return nil, fmt.Errorf("%w: the instance that took this streamed request went away; its body cannot be replayed", ErrUnavailable)
	}
	if err := ex.announce(DefaultWindow); err != nil {
		return nil, err
	}
	n := int64(len(ex.d.Body)) // part 0, counted by announce
	pr := &partsReader{s: ex.s, ctx: ctx, cur: ex.d.Body, seq: 1, taken: n, creditBytes: n}
	br := bufio.NewReaderSize(pr, 4096)
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedFrame, err)
	}
	if !validHost(req.Host) {
		return nil, fmt.Errorf("%w: invalid Host %q", ErrMalformedFrame, req.Host)
	}
	if max := lim.body(); max >= 0 && req.ContentLength > max {
		return nil, &TooLargeError{What: "body", Limit: max, Size: req.ContentLength}
	}
	req.Body = &streamBody{rc: req.Body, pr: pr, br: br}
	return req, nil
}

// respStream writes a response that became a stream: the head, then the
// body in the chunked coding (or as is, under a Content-Length the handler
// set), cut into parts.
type respStream struct {
	pw      *partWriter
	chunked bool
	remain  int64 // bytes still due under a Content-Length; -1 chunked
	noBody  bool
}

// writeHead writes an HTTP/1.1 status line and header block, as
// Response.Write does.
func writeHead(b *bytes.Buffer, status int, h http.Header) error {
	text := http.StatusText(status)
	if text == "" {
		text = "status code " + strconv.Itoa(status)
	}
	b.WriteString("HTTP/1.1 " + strconv.Itoa(status) + " " + text + "\r\n")
	if err := h.WriteSubset(b, trailerPrefixed(h)); err != nil {
		return err
	}
	b.WriteString("\r\n")
	return nil
}

// trailerPrefixed lists the keys of h that are trailers by
// http.TrailerPrefix: they are left out of the header block.
func trailerPrefixed(h http.Header) map[string]bool {
	var ex map[string]bool
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			if ex == nil {
				ex = map[string]bool{}
			}
			ex[k] = true
		}
	}
	return ex
}

// trailers collects a response's trailers as net/http does: the keys
// declared in its Trailer header, and keys prefixed with
// http.TrailerPrefix, from the handler's header map after the handler
// returned.
func trailers(declared, live http.Header) http.Header {
	var t http.Header
	for _, v := range declared["Trailer"] {
		for _, k := range strings.Split(v, ",") {
			k = http.CanonicalHeaderKey(strings.TrimSpace(k))
			if k == "" {
				continue
			}
			if vv, ok := live[k]; ok {
				if t == nil {
					t = http.Header{}
				}
				t[k] = vv
			}
		}
	}
	for k, vv := range live {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			if t == nil {
				t = http.Header{}
			}
			t[http.CanonicalHeaderKey(strings.TrimPrefix(k, http.TrailerPrefix))] = vv
		}
	}
	return t
}

// hasTrailers reports whether a handler's header declares trailers.
func hasTrailers(h http.Header) bool {
	if len(h["Trailer"]) > 0 {
		return true
	}
	return trailerPrefixed(h) != nil
}

// encodeChunkedResponse writes a whole response with its body in the
// chunked coding, for a response with trailers (RFC 9112 §7.1.2).
func encodeChunkedResponse(status int, h http.Header, body []byte, trailer http.Header) ([]byte, error) {
	h.Set("Transfer-Encoding", "chunked")
	var b bytes.Buffer
	b.Grow(len(body) + headerEstimate(h) + 64)
	if err := writeHead(&b, status, h); err != nil {
		return nil, err
	}
	cw := chunkWriter{&b}
	cw.Write(body)
	if err := cw.close(trailer); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
