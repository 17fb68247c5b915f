package transport

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Stream defaults (WIRE.md §7).
const (
	// DefaultPartBytes is the largest body of one stream part, in bytes,
	// where the broker's own limit (SizeLimiter) is not lower, until the
	// receiver grants credit in bytes (HeaderCreditBytes).
	DefaultPartBytes = 128 << 10
	// LargePartBytes is the largest body of one stream part, in bytes, once
	// the receiver grants credit in bytes, where the broker's own limit is
	// not lower. A broker's cost per message is high (RabbitMQ's STOMP
	// plugin: ~0.2 ms), so fewer, larger parts move more bytes per second
	// within the same window (BENCHMARKS.md).
	LargePartBytes = 512 << 10
	// DefaultWindow is the credit window, in parts: a sender may have this
	// many parts sent and not yet consumed by the receiver.
	DefaultWindow = 16
	// DefaultWindowBytes is the credit window in bytes that httpbus grants
	// as a receiver (HeaderCreditBytes): a sender may start a part while
	// the parts it sent and the receiver did not consume hold fewer bytes.
	// Memory per stream direction is bounded by DefaultWindowBytes plus
	// one part (2.5 MiB; 3 MiB on nats and on stomp over RabbitMQ, whose
	// parts are 1 MiB), or by DefaultWindow × DefaultPartBytes (2 MiB) with a sender
	// that counts parts only.
	DefaultWindowBytes = 2 << 20
	// processingAfter is how long a handler runs for a version-2 caller
	// before the server sends a "continue" control message announcing its
	// inbox, so that the caller can cancel it.
	processingAfter = 20 * time.Millisecond
)

// Control message kinds (HeaderControl).
const (
	controlContinue = "continue" // server → caller: I took the request; my inbox is HeaderReplyTo
	controlCredit   = "credit"   // receiver → sender: send parts below HeaderCredit
	controlCancel   = "cancel"   // caller → server: the caller gave up
	controlAbort    = "abort"    // sender → receiver: the message will not complete (HeaderError)
)

// Stream errors.
var (
	// ErrStreamBroken means a stream lost, duplicated or reordered a part,
	// or its sender aborted it: the message is incomplete. A caller sees it
	// from resp.Body.Read (or as a 502 before the header arrived); a
	// handler sees it from r.Body.Read.
	ErrStreamBroken = errors.New("transport: stream broken")
	// errCancelled ends a handler's context when the caller cancels.
	errCancelled = errors.New("transport: caller cancelled the request")
	// errExchangeDone ends a stream's waiters once its response is read.
	errExchangeDone = errors.New("transport: exchange done")
)

// partBytes is the part size for an endpoint: DefaultPartBytes, or less
// where the broker takes less (room kept for the headers of a part).
func partBytes(endpoint any) int { return capPart(endpoint, DefaultPartBytes) }

// largePartBytes is the part size for an endpoint once the receiver grants
// credit in bytes: LargePartBytes, or the backend's own size (PartSizer),
// or less where the broker takes less.
func largePartBytes(endpoint any) int {
	n := LargePartBytes
	if ps, ok := endpoint.(PartSizer); ok {
		n = max(ps.StreamPartBytes(), 1024)
	}
	return capPart(endpoint, n)
}

func capPart(endpoint any, n int) int {
	if sl, ok := endpoint.(SizeLimiter); ok {
		if max := sl.MaxMessageBytes(); max > 0 && max-1024 < int64(n) {
			n = int(max - 1024)
			if n < 1024 {
				n = 1024
			}
		}
	}
	return n
}

// mux is the core's side of one Streamer endpoint: it reads the endpoint's
// inbox and hands each message to its stream, by HeaderStream (the pending
// table of net/rpc's Client, for streams).
type mux struct {
	st     Streamer
	prefix string // stream ids made here start with it
	next   atomic.Uint64

	inbox   atomic.Pointer[inboxAddr] // the address, and it as a header value
	checked atomic.Int64              // when Inbox was last asked, Unix ns

	// The pending-stream table, sharded by stream id so that concurrent
	// callers do not queue on one lock.
	shards [muxShards]muxShard

	ended atomic.Pointer[error] // set when the inbox ended
}

const muxShards = 16

type muxShard struct {
	mu      sync.Mutex
	streams map[string]*stream
}

type inboxAddr struct {
	addr string
	hdr  []string // {addr}, shared read-only by requests
}

func (m *mux) shard(id string) *muxShard {
	var h uint32 = 2166136261
	for i := len(id) - 1; i >= 0 && i >= len(id)-4; i-- {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return &m.shards[h%muxShards]
}

func (m *mux) setAddr(addr string) {
	if cur := m.inbox.Load(); cur == nil || cur.addr != addr {
		m.inbox.Store(&inboxAddr{addr: addr, hdr: []string{addr}})
	}
	m.checked.Store(time.Now().UnixNano())
}

var muxes sync.Map // Streamer → *mux (one inbox reader per endpoint)

var muxOpen sync.Mutex

// muxFor returns the endpoint's mux, opening its inbox on first use.
func muxFor(ctx context.Context, st Streamer) (*mux, error) {
	if m, ok := muxes.Load(st); ok {
		return m.(*mux), nil
	}
	muxOpen.Lock()
	defer muxOpen.Unlock()
	if m, ok := muxes.Load(st); ok {
		return m.(*mux), nil
	}
	addr, err := st.Inbox(ctx)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 6)
	rand.Read(b)
	m := &mux{st: st, prefix: hex.EncodeToString(b) + "."}
	for i := range m.shards {
		m.shards[i].streams = map[string]*stream{}
	}
	m.setAddr(addr)
	muxes.Store(st, m)
	go m.loop()
	return m, nil
}

// newCallerStream returns a stream with a new id made here: the prefix
// and a counter in base 36, kept in the stream's own idb where it fits
// (the prefix is 13 bytes), so that a call's stream is one allocation.
func (m *mux) newCallerStream() *stream {
	s := newStream(m, "")
	b := strconv.AppendUint(append(s.idb[:0], m.prefix...), m.next.Add(1), 36)
	var id string
	if len(b) <= len(s.idb) {
		id = unsafe.String(&s.idb[0], len(b)) // idb is never written again
	} else {
		id = string(b) // it outgrew idb
	}
	s.id, s.idv[0] = id, id
	return s
}

func (m *mux) loop() {
	for {
		msg, err := m.st.ReceiveInbox(context.Background())
		if err != nil {
			if errors.Is(err, ErrClosed) {
				m.close(err)
				return
			}
			// A lost connection: the backend reconnects (with a new inbox
			// where the broker's inbox died with the connection). Parts of
			// the streams in flight may be lost: fail them now, as a
			// version-1 call in flight fails, rather than at their deadline.
			m.failAll(fmt.Errorf("%w: inbox: %w", ErrUnavailable, err))
			time.Sleep(20 * time.Millisecond)
			m.refresh()
			continue
		}
		m.dispatch(msg)
	}
}

// refresh takes the endpoint's inbox address anew after a loss (the
// backend opens a new inbox after it reconnects), so that new streams
// advertise the live one.
func (m *mux) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m.current(ctx) //nolint:errcheck // the next exchange tries again
}

// inboxRecheck is how often an exchange asks the endpoint for its inbox
// address again (a new one after a reconnect).
const inboxRecheck = 100 * time.Millisecond

// current returns the endpoint's inbox address, asking the endpoint again
// when the last answer is older than inboxRecheck.
func (m *mux) current(ctx context.Context) (string, error) {
	if time.Now().UnixNano()-m.checked.Load() < int64(inboxRecheck) {
		return m.inbox.Load().addr, nil
	}
	addr, err := m.st.Inbox(ctx)
	if err != nil {
		return "", err
	}
	m.setAddr(addr)
	return addr, nil
}

func (m *mux) address() string { return m.inbox.Load().addr }

// replyTo is the inbox address as a header value, shared by the requests
// of this endpoint (read-only).
func (m *mux) replyTo() []string { return m.inbox.Load().hdr }

func (m *mux) close(err error) {
	muxes.Delete(m.st)
	m.ended.Store(&err)
	m.failAll(fmt.Errorf("%w: inbox closed: %w", ErrStreamBroken, err))
}

// failAll fails every stream in flight; later streams register anew.
func (m *mux) failAll(err error) {
	var ss []*stream
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.Lock()
		for _, s := range sh.streams {
			ss = append(ss, s)
		}
		sh.streams = map[string]*stream{}
		sh.mu.Unlock()
	}
	for _, s := range ss {
		s.fail(err)
	}
}

func (m *mux) register(s *stream) error {
	if err := m.ended.Load(); err != nil {
		return *err
	}
	sh := m.shard(s.id)
	sh.mu.Lock()
	sh.streams[s.id] = s
	sh.mu.Unlock()
	return nil
}

func (m *mux) unregister(s *stream) {
	sh := m.shard(s.id)
	sh.mu.Lock()
	if sh.streams[s.id] == s {
		delete(sh.streams, s.id)
	}
	sh.mu.Unlock()
}

func (m *mux) dispatch(msg *Message) {
	id := msg.Header.Get(HeaderStream)
	sh := m.shard(id)
	sh.mu.Lock()
	s := sh.streams[id]
	sh.mu.Unlock()
	if s == nil {
		return // a stream that ended: late credit, a part after cancel
	}
	s.receive(msg)
}

// stream is one exchange's state at one end: the peer's inbox, the credit
// for the parts this end sends, and the parts it receives.
type stream struct {
	id  string
	idv [1]string // id as a header value, with the stream (no allocation of its own)
	idb [32]byte  // id's bytes, for a stream whose id is made here (newCallerStream)
	msg Message   // a caller's whole request message, allocated with its stream
	mx  *mux
	log *slog.Logger

	mu         sync.Mutex
	peer       string      // the peer's inbox, from its first message with HeaderReplyTo
	limit      int64       // this end may send parts with seq < limit
	limitBytes int64       // … and start one while sent < limitBytes; -1: no credit in bytes yet
	sent       int64       // body bytes of the parts this end sent (or is sending), from part 0
	failed     error       //
	gotPart    bool        // a part arrived: the peer may no longer change
	onAbort    func(error) // the server's cancel of the handler context

	// The channels are made on first use (most exchanges never stream, and
	// the fast path should not pay for them): call init first.
	once   sync.Once
	credit chan struct{} // signalled when limit grows
	parts  chan *Message // parts (and abort) from the peer, in arrival order
	done   chan struct{} // closed by fail
}

func newStream(mx *mux, id string) *stream {
	return &stream{id: id, idv: [1]string{id}, mx: mx, limit: DefaultWindow, limitBytes: -1}
}

func (s *stream) init() *stream {
	s.once.Do(func() {
		s.credit = make(chan struct{}, 1)
		s.parts = make(chan *Message, DefaultWindow+2)
		s.done = make(chan struct{})
	})
	return s
}

// receive takes one message from the mux.
func (s *stream) receive(msg *Message) {
	s.init()
	if p := msg.Header.Get(HeaderReplyTo); p != "" {
		s.mu.Lock()
		switch {
		case s.peer == "":
			s.peer = p
		case s.peer != p && !s.gotPart:
			// The request was redelivered to another instance before the
			// first one sent any of the response: the new one takes over.
			s.peer = p
		case s.peer != p:
			s.mu.Unlock()
			s.fail(fmt.Errorf("%w: a second instance answered mid-stream (the request was redelivered)", ErrStreamBroken))
			return
		}
		s.mu.Unlock()
	}
	if msg.Header.Get(HeaderSeq) != "" {
		s.mu.Lock()
		s.gotPart = true
		s.mu.Unlock()
	}
	switch msg.Header.Get(HeaderControl) {
	case controlCredit, controlContinue:
		s.grant(msg.Header)
		if msg.Header.Get(HeaderControl) == controlCredit {
			return
		}
	case controlCancel:
		s.fail(errCancelled)
		return
	}
	select {
	case s.parts <- msg:
	default:
		s.fail(fmt.Errorf("%w: the peer sent beyond its credit of %d parts", ErrStreamBroken, DefaultWindow))
	}
}

// grant takes the credit of a "continue" or "credit" message: in parts
// (HeaderCredit) and, from a receiver that counts bytes, in bytes
// (HeaderCreditBytes). Credit only grows.
func (s *stream) grant(h http.Header) {
	s.init()
	n, err := strconv.ParseInt(HeaderValue(h, HeaderCredit), 10, 64)
	if err != nil {
		return
	}
	nb, errb := strconv.ParseInt(HeaderValue(h, HeaderCreditBytes), 10, 64)
	s.mu.Lock()
	if n > s.limit {
		s.limit = n
	}
	if errb == nil && nb > s.limitBytes {
		s.limitBytes = nb
	}
	s.mu.Unlock()
	select {
	case s.credit <- struct{}{}:
	default:
	}
}

func (s *stream) fail(err error) {
	s.init()
	s.mu.Lock()
	if s.failed != nil {
		s.mu.Unlock()
		return
	}
	s.failed = err
	close(s.done)
	f := s.onAbort
	s.mu.Unlock()
	if f != nil {
		f(err)
	}
}

func (s *stream) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// countSent counts n body bytes sent outside waitCredit (part 0, which
// travels as the request or on the reply path).
func (s *stream) countSent(n int) {
	s.mu.Lock()
	s.sent += int64(n)
	s.mu.Unlock()
}

// partSize is the size of the next part this end cuts: small until the
// receiver grants credit in bytes, then large.
func (s *stream) partSize(small, large int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.limitBytes >= 0 {
		return large
	}
	return small
}

func (s *stream) peerAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peer
}

func (s *stream) setPeer(p string) {
	s.mu.Lock()
	if s.peer == "" {
		s.peer = p
	}
	s.mu.Unlock()
}

// waitCredit blocks until part seq, of n body bytes, may be sent, and
// counts its bytes as sent.
func (s *stream) waitCredit(ctx context.Context, seq int64, n int, idle time.Duration) error {
	s.init()
	var timer <-chan time.Time
	for {
		s.mu.Lock()
		ok := seq < s.limit && (s.limitBytes < 0 || s.sent < s.limitBytes)
		if ok {
			s.sent += int64(n)
		}
		failed := s.failed
		s.mu.Unlock()
		if failed != nil {
			return failed
		}
		if ok {
			return nil
		}
		if timer == nil && idle > 0 {
			t := time.NewTimer(idle)
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-s.credit:
		case <-s.done:
		case <-ctx.Done():
			return ContextError(ctx)
		case <-timer:
			return fmt.Errorf("%w: no credit from the receiver for %v", ErrStreamBroken, idle)
		}
	}
}

// control sends a control message to the peer, best effort.
func (s *stream) control(ctx context.Context, kind string, h http.Header) {
	peer := s.peerAddr()
	if peer == "" {
		return
	}
	if h == nil {
		h = http.Header{}
	}
	h.Set(HeaderVersion, Version2)
	h.Set(HeaderStream, s.id)
	h.Set(HeaderControl, kind)
	h.Set(HeaderReplyTo, s.mx.address())
	if err := s.mx.st.Send(ctx, peer, &Message{ContentType: MediaType, Header: h}); err != nil && s.log != nil {
		s.log.Debug("transport: stream control not sent", "control", kind, "err", err)
	}
}

// partsReader reads the bytes of the parts a stream receives, in order:
// first (the part that came through Call or Receive, nil if none), then the
// stream's parts. It grants credit as it consumes parts, and fails on a
// lost, duplicated or reordered part, an abort, or ctx.
type partsReader struct {
	s     *stream
	ctx   context.Context
	cur   []byte
	seq   int64 // next expected sequence number
	taken int64 // body bytes of the parts taken, from part 0
	end   bool
	err   error

	// What the last credit message counted: parts and bytes taken.
	creditSeq, creditBytes int64
}

func (r *partsReader) take(msg *Message) error {
	h := msg.Header
	if h.Get(HeaderControl) == controlAbort {
		return fmt.Errorf("%w: the sender aborted: %s", ErrStreamBroken, h.Get(HeaderError))
	}
	if h.Get(HeaderControl) == controlContinue {
		return nil
	}
	seq, err := strconv.ParseInt(h.Get(HeaderSeq), 10, 64)
	if err != nil {
		return fmt.Errorf("%w: part without a valid %s", ErrStreamBroken, HeaderSeq)
	}
	if seq != r.seq {
		if seq < r.seq {
			return fmt.Errorf("%w: part %d arrived again (duplicated or redelivered), expected part %d", ErrStreamBroken, seq, r.seq)
		}
		return fmt.Errorf("%w: part %d arrived, expected part %d (lost or reordered)", ErrStreamBroken, seq, r.seq)
	}
	r.seq++
	r.taken += int64(len(msg.Body))
	r.cur = msg.Body
	r.end = h.Get(HeaderEnd) == "1"
	// Credit: every half window, in parts or in bytes, tell the sender it
	// may go a window beyond what this end has consumed.
	if !r.end && (r.seq-r.creditSeq >= DefaultWindow/2 || r.taken-r.creditBytes >= DefaultWindowBytes/2) {
		r.creditSeq, r.creditBytes = r.seq, r.taken
		r.s.control(r.ctx, controlCredit, http.Header{
			HeaderCredit:      {strconv.FormatInt(r.seq+DefaultWindow, 10)},
			HeaderCreditBytes: {strconv.FormatInt(r.taken+DefaultWindowBytes, 10)},
		})
	}
	return nil
}

func (r *partsReader) next() error {
	r.s.init()
	select {
	case msg := <-r.s.parts:
		return r.take(msg)
	default:
	}
	select {
	case msg := <-r.s.parts:
		return r.take(msg)
	case <-r.s.done:
		// Parts that arrived before the failure still count.
		select {
		case msg := <-r.s.parts:
			return r.take(msg)
		default:
		}
		return r.s.err()
	case <-r.ctx.Done():
		return ContextError(r.ctx)
	}
}

func (r *partsReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.end {
			return 0, io.EOF
		}
		if err := r.next(); err != nil {
			r.err = err
			return 0, err
		}
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// finish checks, once the HTTP parser has read the whole message, that the
// stream ended exactly there: no byte after it, and the end mark seen.
func (r *partsReader) finish(br *bufio.Reader) error {
	if br != nil && br.Buffered() > 0 {
		return fmt.Errorf("%w: %d bytes after the end of the HTTP message", ErrStreamBroken, br.Buffered())
	}
	for !r.end || len(r.cur) > 0 {
		if len(r.cur) > 0 {
			return fmt.Errorf("%w: %d bytes after the end of the HTTP message", ErrStreamBroken, len(r.cur))
		}
		if r.err != nil {
			return r.err
		}
		if err := r.next(); err != nil {
			r.err = err
			return err
		}
	}
	return nil
}

// partWriter cuts the bytes of an outgoing HTTP message into parts of at
// most size() bytes (asked as each part starts), each sent by send (which
// waits for credit).
//
// send reports whether the callee is done with body when it returns
// (SendCopier); the writer then reuses the buffer for a later part of the
// same size.
type partWriter struct {
	buf   []byte
	spare []byte // a sent part's buffer, free to reuse
	size  func() int
	seq   int64
	send  func(body []byte, seq int64, end bool) (done bool, err error)
	err   error
}

func (w *partWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n := 0
	for len(p) > 0 {
		if w.buf == nil {
			if n := w.size(); cap(w.spare) == n {
				w.buf, w.spare = w.spare[:0], nil
			} else {
				w.buf = make([]byte, 0, n)
			}
		}
		k := min(len(p), cap(w.buf)-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p, n = p[k:], n+k
		if len(w.buf) == cap(w.buf) {
			if err := w.flush(false); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// flush sends what is buffered as one part (an empty part only if end).
func (w *partWriter) flush(end bool) error {
	if w.err != nil {
		return w.err
	}
	if len(w.buf) == 0 && !end {
		return nil
	}
	b := w.buf
	w.buf = nil
	done, err := w.send(b, w.seq, end)
	if err != nil {
		w.err = err
		return err
	}
	if done {
		w.spare = b
	}
	w.seq++
	return nil
}

// sendCopies reports whether st's Send is done with a body when it returns
// (SendCopier).
func sendCopies(st Streamer) bool {
	sc, ok := st.(SendCopier)
	return ok && sc.SendCopiesBody()
}

func partHeader(id string, seq int64, end bool) http.Header {
	h := http.Header{
		HeaderVersion: {Version2},
		HeaderStream:  {id},
		HeaderSeq:     {strconv.FormatInt(seq, 10)},
	}
	if end {
		h[HeaderEnd] = []string{"1"}
	}
	return h
}

// chunkWriter writes the chunked transfer coding (RFC 9112 §7.1), as
// net/http's internal chunkedWriter does.
type chunkWriter struct{ w io.Writer }

func (c chunkWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if _, err := io.WriteString(c.w, strconv.FormatInt(int64(len(p)), 16)+"\r\n"); err != nil {
		return 0, err
	}
	if _, err := c.w.Write(p); err != nil {
		return 0, err
	}
	if _, err := io.WriteString(c.w, "\r\n"); err != nil {
		return 0, err
	}
	return len(p), nil
}

// close writes the last chunk and the trailer section (RFC 9112 §7.1.2).
func (c chunkWriter) close(trailer http.Header) error {
	if _, err := io.WriteString(c.w, "0\r\n"); err != nil {
		return err
	}
	if len(trailer) > 0 {
		if err := trailer.Write(c.w); err != nil {
			return err
		}
	}
	_, err := io.WriteString(c.w, "\r\n")
	return err
}
