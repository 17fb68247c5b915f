package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"
)

// roundTripStream is RoundTrip over a Streamer conn (binding version 2): the
// request carries the caller's inbox, so that the server may answer with a
// stream; a request body that does not fit one message is sent as a
// stream after the server's "continue".
func (rt *RoundTripper) roundTripStream(req *http.Request, service string, st Streamer) (*http.Response, error) {
	ctx := req.Context()
	mx, err := muxFor(ctx, st)
	if err != nil {
		return rt.failure(req, err)
	}
	if _, err := mx.current(ctx); err != nil {
		return rt.failure(req, err)
	}
	size := partBytes(rt.Conn)
	maxBody := rt.limits().body()
	if maxBody >= 0 && req.ContentLength > maxBody {
		return rt.failure(req, &TooLargeError{What: "body", Limit: maxBody, Size: req.ContentLength})
	}
	s := mx.newCallerStream()
	if err := mx.register(s); err != nil {
		return rt.failure(req, err)
	}
	done := false
	defer func() {
		if !done {
			mx.unregister(s)
		}
	}()
	// A request that fits one message carries the caller's inbox and the
	// stream id as fields of its frame (WIRE.md §7), not as broker
	// headers: every broker client pays per header, on both ends.
	fields := [2]leanField{{HeaderReplyTo, mx.address()}, {HeaderStream, s.id}}
	// The common case reads a known-length body straight into the frame.
	leanFrame, lean, err := leanRequestFrame(req, service, size, fields[:])
	if err != nil {
		return rt.failure(req, err)
	}
	var first []byte
	var more bool
	if !lean {
		if first, more, err = startBody(req, size); err != nil {
			return rt.failure(req, err)
		}
	}
	if maxBody >= 0 && int64(len(first)) > maxBody {
		return rt.failure(req, &TooLargeError{What: "body", Limit: maxBody, Size: -1})
	}
	var m *Message
	var rest []byte
	if !more {
		frame := leanFrame
		if !lean {
			withFields := *req
			withFields.Header = req.Header.Clone()
			if withFields.Header == nil {
				withFields.Header = http.Header{}
			}
			for _, f := range fields {
				withFields.Header.Set(f.key, f.value)
			}
			chunked := req.ContentLength <= 0 && len(first) > 0
			if frame, err = encodeRequestFrame(&withFields, service, first, chunked); err != nil {
				closeBody(req)
				return nil, err
			}
		}
		if sl, ok := rt.Conn.(SizeLimiter); ok {
			if lim := sl.MaxMessageBytes(); lim > 0 && int64(len(frame)) > lim {
				return rt.failure(req, &TooLargeError{What: "message", Limit: lim, Size: int64(len(frame))})
			}
		}
		closeBody(req)
		s.msg = Message{Body: frame, ContentType: MediaType}
		m = &s.msg
	} else {
		head, err := requestHead(req, service)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		var b bytes.Buffer
		b.Write(head)
		k := min(len(first), max(0, size-len(head)-32))
		if k > 0 {
			if req.ContentLength <= 0 {
				chunkWriter{&b}.Write(first[:k])
			} else {
				b.Write(first[:k])
			}
		}
		rest = first[k:]
		h := http.Header{HeaderReplyTo: mx.replyTo(), HeaderStream: s.idv[:], HeaderVersion: {Version2}, HeaderSeq: {"0"}}
		m = &Message{Body: b.Bytes(), ContentType: MediaType, Header: h}
		s.countSent(len(m.Body)) // part 0 counts against credit in bytes
	}
	if dl, ok := ctx.Deadline(); ok {
		m.Deadline = dl
	}
	reply, err := rt.Conn.Call(ctx, service, m)
	if err != nil {
		if more {
			closeBody(req)
		}
		return rt.failure(req, err)
	}
	if HeaderValue(reply.Header, HeaderStream) != s.id {
		// One whole response (a version-1 server, or a server's answer
		// before it took the body, such as a 413).
		if more {
			closeBody(req)
		}
		resp, err := decodeResponse(reply.Body, req, rt.limits(), true)
		if err != nil {
			return rt.failure(req, err)
		}
		resp.Request = req
		return resp, nil
	}
	s.setPeer(HeaderValue(reply.Header, HeaderReplyTo))
	// From here on, the caller's cancellation reaches the server.
	stop := context.AfterFunc(ctx, func() {
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// The deadline travelled with the request; a cancellation
			// has to be told.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			s.control(cctx, controlCancel, nil)
		}
		s.fail(ContextError(ctx))
	})
	pr := &partsReader{s: s, ctx: ctx}
	switch reply.Header.Get(HeaderControl) {
	case controlContinue:
		s.grant(reply.Header)
		if more {
			go sendRequestBody(ctx, s, req, rest, size, largePartBytes(rt.Conn))
		}
	case "":
		if err := pr.take(reply); err != nil {
			stop()
			return rt.failure(req, err)
		}
	default:
		stop()
		closeBody(req)
		return rt.failure(req, fmt.Errorf("%w: unexpected %s %q", ErrStreamBroken, HeaderControl, reply.Header.Get(HeaderControl)))
	}
	br := bufio.NewReaderSize(pr, 4096)
	resp, err := http.ReadResponse(br, req)
	for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
		// Interim responses, as DecodeResponse and net/http's client.
		if trace := httptrace.ContextClientTrace(ctx); trace != nil && trace.Got1xxResponse != nil {
			if terr := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); terr != nil {
				stop()
				return nil, terr
			}
		}
		resp, err = http.ReadResponse(br, req)
	}
	if err != nil {
		stop()
		if e := pr.err; e != nil {
			err = e
		} else {
			err = fmt.Errorf("%w: response: %v", ErrMalformedFrame, err)
		}
		return rt.failure(req, err)
	}
	done = true
	sb := &streamBody{rc: resp.Body, pr: pr, br: br, cancel: func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s.control(ctx, controlCancel, nil)
		cancel()
	}, end: func() {
		stop()
		mx.unregister(s)
		s.fail(errExchangeDone) // ends a request body sender still waiting for credit
		if more {
			closeBody(req) // and one still reading the caller's body
		}
	}}
	if resp.Body == http.NoBody || (req.Method == http.MethodHead) {
		if err := sb.finish(); err != nil {
			return rt.failure(req, err)
		}
		resp.Body = http.NoBody
	} else {
		resp.Body = sb
	}
	resp.Request = req
	return resp, nil
}

// startBody reads the start of req's body: all of it when its length is
// known and at most size, else up to size bytes, stopping early at a short
// read (a producer with nothing more to give yet, as a pipe). more reports
// that the body goes on.
func startBody(req *http.Request, size int) (first []byte, more bool, err error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, false, nil
	}
	if req.ContentLength >= 0 && req.ContentLength <= int64(size) {
		b := make([]byte, req.ContentLength)
		if _, err := io.ReadFull(req.Body, b); err != nil {
			closeBody(req)
			return nil, false, fmt.Errorf("transport: request body shorter than its ContentLength %d: %w", req.ContentLength, err)
		}
		if req.ContentLength > 0 {
			return b, false, nil
		}
		// ContentLength 0 with a body means "unknown" to net/http.
	}
	buf := make([]byte, size)
	n := 0
	for n < size {
		want := size - n
		k, err := req.Body.Read(buf[n:])
		n += k
		if err == io.EOF {
			if req.ContentLength > 0 && int64(n) != req.ContentLength {
				closeBody(req)
				return nil, false, fmt.Errorf("transport: request body of %d bytes, its ContentLength says %d: %w", n, req.ContentLength, io.ErrUnexpectedEOF)
			}
			return buf[:n], false, nil
		}
		if err != nil {
			closeBody(req)
			return nil, false, fmt.Errorf("transport: read request body: %w", err)
		}
		if k < want && n > 0 {
			break // a short read: send what there is, the rest follows
		}
	}
	return buf[:n], true, nil
}

// encodeRequestFrame is EncodeRequest, or, for a body of unknown length, the
// same request with the body in the chunked coding (one chunk and the
// trailers), so that the handler sees what net/http would give it.
func encodeRequestFrame(req *http.Request, service string, body []byte, chunked bool) ([]byte, error) {
	if !chunked {
		return EncodeRequest(req, service, body)
	}
	head, err := requestHead(req, service)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Grow(len(head) + len(body) + 64)
	b.Write(head)
	cw := chunkWriter{&b}
	cw.Write(body)
	cw.close(req.Trailer)
	return b.Bytes(), nil
}

// requestHead writes the request line and header block of a request whose
// body follows in parts: Content-Length when known, else chunked.
func requestHead(r *http.Request, service string) ([]byte, error) {
	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	if !validMethod(method) {
		return nil, fmt.Errorf("transport: encode request: invalid method %q", method)
	}
	if !validHost(service) {
		return nil, fmt.Errorf("transport: encode request: invalid service name %q", service)
	}
	uri := r.URL.RequestURI()
	if r.URL.Opaque != "" {
		uri = r.URL.Opaque
	}
	var b bytes.Buffer
	b.WriteString(method + " " + uri + " HTTP/1.1\r\nHost: " + service + "\r\n")
	if _, ok := r.Header["User-Agent"]; !ok {
		b.WriteString("User-Agent: Go-http-client/1.1\r\n")
	}
	h := http.Header{}
	for k, v := range r.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		h[k] = v
	}
	if r.ContentLength > 0 {
		h.Set("Content-Length", strconv.FormatInt(r.ContentLength, 10))
	} else {
		h.Set("Transfer-Encoding", "chunked")
		if len(r.Trailer) > 0 {
			keys := make([]string, 0, len(r.Trailer))
			for k := range r.Trailer {
				keys = append(keys, http.CanonicalHeaderKey(k))
			}
			h.Set("Trailer", strings.Join(keys, ","))
		}
	}
	if err := h.Write(&b); err != nil {
		return nil, err
	}
	b.WriteString("\r\n")
	return b.Bytes(), nil
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return true
}

// sendRequestBody sends the rest of a request body as parts 1, 2, … to the
// server that answered "continue", within the credit it grants: parts of
// size bytes, or of large bytes once the server grants credit in bytes.
func sendRequestBody(ctx context.Context, s *stream, req *http.Request, rest []byte, size, large int) {
	defer closeBody(req)
	copies := sendCopies(s.mx.st)
	pw := &partWriter{size: func() int { return s.partSize(size, large) }, seq: 1, send: func(b []byte, seq int64, end bool) (bool, error) {
		if err := s.waitCredit(ctx, seq, len(b), 0); err != nil {
			return false, err
		}
		return copies, s.mx.st.Send(ctx, s.peerAddr(), &Message{Body: b, ContentType: MediaType, Header: partHeader(s.id, seq, end)})
	}}
	chunked := req.ContentLength <= 0 // 0 with a body: unknown, as in net/http
	var enc io.Writer = pw
	if chunked {
		enc = chunkWriter{pw}
	}
	fail := func(err error) {
		h := http.Header{HeaderError: {err.Error()}}
		s.control(context.WithoutCancel(ctx), controlAbort, h)
		s.fail(err)
	}
	if _, err := enc.Write(rest); err != nil {
		fail(err)
		return
	}
	buf := make([]byte, 32<<10)
	var sent int64 = int64(len(rest))
	for {
		n, err := req.Body.Read(buf)
		if n > 0 {
			sent += int64(n)
			if _, werr := enc.Write(buf[:n]); werr != nil {
				fail(werr)
				return
			}
			if n < len(buf) {
				// A producer with nothing more yet: send what it gave.
				if werr := pw.flush(false); werr != nil {
					fail(werr)
					return
				}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			fail(fmt.Errorf("transport: read request body: %w", err))
			return
		}
	}
	if chunked {
		if err := (chunkWriter{pw}).close(req.Trailer); err != nil {
			fail(err)
			return
		}
	}
	if err := pw.flush(true); err != nil {
		fail(err)
	}
}

// streamBody is a message body read from a stream's parts (a response at
// the caller, a request at the server). At the HTTP message's end it checks
// that the stream ended there; end runs once, at the end or at Close, and
// cancel (if set) first when Close comes before the end.
type streamBody struct {
	rc     io.ReadCloser
	pr     *partsReader
	br     *bufio.Reader
	once   sync.Once
	end    func()
	cancel func()
	err    error
}

func (b *streamBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.rc.Read(p)
	if errors.Is(err, io.EOF) {
		if ferr := b.finish(); ferr != nil {
			b.err = ferr
			return n, ferr
		}
	} else if err != nil {
		if b.pr.err != nil {
			err = b.pr.err
		}
		b.err = err
	}
	return n, err
}

func (b *streamBody) finish() error {
	err := b.pr.finish(b.br)
	b.done()
	return err
}

func (b *streamBody) done() {
	b.once.Do(func() {
		if b.end != nil {
			b.end()
		}
	})
}

func (b *streamBody) Close() error {
	if b.cancel != nil && (!b.pr.end || len(b.pr.cur) > 0) {
		b.once.Do(func() {
			b.cancel()
			if b.end != nil {
				b.end()
			}
		})
	}
	b.done()
	return b.rc.Close()
}
