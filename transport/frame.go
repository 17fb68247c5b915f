package transport

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// Default limits, in bytes. They apply wherever a limit field is zero.
const (
	// DefaultMaxHeaderBytes bounds the request line and header block of a
	// frame: 1 MiB, as net/http.DefaultMaxHeaderBytes.
	DefaultMaxHeaderBytes = 1 << 20
)

// Limits bounds what DecodeRequest and DecodeResponse accept.
type Limits struct {
	// MaxHeaderBytes bounds the request or status line plus headers, in
	// bytes. Zero means DefaultMaxHeaderBytes; negative means no limit.
	MaxHeaderBytes int
	// MaxBodyBytes bounds a body, in bytes. Zero or negative means no
	// limit, as with net/http: a handler sets its own, for example with
	// http.MaxBytesReader.
	MaxBodyBytes int64
}

func (l Limits) header() int {
	if l.MaxHeaderBytes == 0 {
		return DefaultMaxHeaderBytes
	}
	return l.MaxHeaderBytes
}

func (l Limits) body() int64 {
	if l.MaxBodyBytes <= 0 {
		return -1
	}
	return l.MaxBodyBytes
}

// headerEstimate is the size of h as written, plus room for the lines
// net/http adds (Host, User-Agent, Content-Length). Encode buffers also get
// bytes.MinRead spare: net/http copies a body through an io.LimitReader, and
// bytes.Buffer.ReadFrom regrows a buffer with less free room than that.
func headerEstimate(h http.Header) int {
	n := 96
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// readerPool holds the bufio.Readers that decoding uses only while it
// parses the header block (bodies are sliced from the frame, or read whole
// before the reader is returned).
var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}

func getReader(rd *bytes.Reader) *bufio.Reader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(rd)
	return br
}

func putReader(br *bufio.Reader) {
	br.Reset(nil)
	readerPool.Put(br)
}

// EncodeRequest writes r as a frame, byte for byte as net/http's
// Request.Write does (a lean encoder for the common case, proved against
// it by FuzzLeanEncode; Request.Write itself for the rest): the request
// line in origin form (r.URL.RequestURI()), Host set to service,
// r.Header, and body as the body with a Content-Length. r.Body is ignored:
// the caller passes the body it read. Header values holding CR or LF are
// written with spaces instead (net/http's rule), so a value cannot smuggle a
// header line or a second request. The returned slice is newly allocated.
func EncodeRequest(r *http.Request, service string, body []byte) ([]byte, error) {
	size := len(body) + headerEstimate(r.Header) + len(r.URL.Path) + len(r.URL.RawQuery) + len(service) + 64
	if b, ok := leanRequest(make([]byte, 0, size), r, service, body); ok {
		return b, nil
	}
	return encodeRequestSlow(r, service, body)
}

// encodeRequestSlow is EncodeRequest through net/http's Request.Write.
func encodeRequestSlow(r *http.Request, service string, body []byte) ([]byte, error) {
	out := &http.Request{
		Method:     r.Method,
		URL:        &url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery, Opaque: r.URL.Opaque, ForceQuery: r.URL.ForceQuery},
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     r.Header,
		Host:       service,
	}
	if out.Method == "" {
		out.Method = http.MethodGet
	}
	if out.Header == nil {
		out.Header = http.Header{}
	}
	if len(body) > 0 {
		out.ContentLength = int64(len(body))
		out.Body = io.NopCloser(bytes.NewReader(body))
	}
	buf := bytes.NewBuffer(make([]byte, 0, len(body)+headerEstimate(out.Header)+len(out.URL.Path)+len(out.URL.RawQuery)+len(service)+64+bytes.MinRead))
	if err := out.Write(buf); err != nil {
		return nil, fmt.Errorf("transport: encode request: %w", err)
	}
	return buf.Bytes(), nil
}

// EncodeResponse writes a response frame, byte for byte as net/http's
// Response.Write does (a lean encoder for the common case):
// status line, header and body with a Content-Length. method is the
// request's method: a HEAD response carries no body, and its Content-Length
// is the one in header if there is one and body is empty, else len(body)
// if body is not empty, else none (as net/http's server sends it). A 1xx
// status, or a HEAD response with no length, is written as a status line
// and header only.
func EncodeResponse(status int, header http.Header, body []byte, method string) ([]byte, error) {
	if header == nil {
		header = http.Header{}
	}
	length := int64(len(body))
	if method == http.MethodHead && len(body) == 0 {
		length = -1
		if v, err := strconv.ParseInt(header.Get("Content-Length"), 10, 64); err == nil && v >= 0 {
			length = v
		}
	}
	if (status >= 100 && status <= 199) || length < 0 {
		// Response.Write would add Connection: close for an unknown length.
		buf := bytes.NewBuffer(make([]byte, 0, headerEstimate(header)+64))
		text := http.StatusText(status)
		if text == "" {
			text = "status code " + strconv.Itoa(status)
		}
		fmt.Fprintf(buf, "HTTP/1.1 %03d %s\r\n", status, text)
		if err := header.WriteSubset(buf, map[string]bool{"Content-Length": true, "Transfer-Encoding": true, "Trailer": true}); err != nil {
			return nil, fmt.Errorf("transport: encode response: %w", err)
		}
		buf.WriteString("\r\n")
		return buf.Bytes(), nil
	}
	if length == int64(len(body)) {
		if b, ok := leanResponse(make([]byte, 0, len(body)+headerEstimate(header)+64), status, header, body, method); ok {
			return b, nil
		}
	}
	return encodeResponseSlow(status, header, body, method, length)
}

// encodeResponseSlow is EncodeResponse's final response through net/http's
// Response.Write.
func encodeResponseSlow(status int, header http.Header, body []byte, method string, length int64) ([]byte, error) {
	resp := &http.Response{
		StatusCode:    status,
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		ContentLength: length,
		Request:       &http.Request{Method: method},
	}
	if len(body) > 0 {
		resp.Body = io.NopCloser(bytes.NewReader(body))
	}
	buf := bytes.NewBuffer(make([]byte, 0, len(body)+headerEstimate(resp.Header)+64+bytes.MinRead))
	if err := resp.Write(buf); err != nil {
		return nil, fmt.Errorf("transport: encode response: %w", err)
	}
	return buf.Bytes(), nil
}

// ErrorResponse returns a response frame made by httpbus itself for err:
// status StatusOf(err), header HeaderError with the error text, and the text
// as a text/plain body.
func ErrorResponse(err error) []byte {
	return errorFrame(StatusOf(err), err)
}

func errorFrame(status int, err error) []byte {
	msg := err.Error()
	h := http.Header{
		"Content-Type":           {"text/plain; charset=utf-8"},
		"X-Content-Type-Options": {"nosniff"},
		HeaderError:              {msg},
	}
	b, _ := EncodeResponse(status, h, []byte(msg+"\n"), "")
	return b
}

// headerEnd returns the length of the header block of frame (through the
// blank line), or -1 if there is none in the first limit+4 bytes.
func headerEnd(frame []byte, limit int) int {
	search := frame
	if limit >= 0 && len(search) > limit+4 {
		search = search[:limit+4]
	}
	crlf := bytes.Index(search, []byte("\r\n\r\n"))
	if crlf >= 0 {
		// A bare-LF blank line wins only if it starts before crlf, so it
		// ends by crlf+1: the body is not searched.
		search = search[:crlf+1]
	}
	lf := bytes.Index(search, []byte("\n\n"))
	switch {
	case crlf < 0 && lf < 0:
		return -1
	case lf < 0 || (crlf >= 0 && crlf < lf):
		return crlf + 4
	default:
		return lf + 2
	}
}

// checkHeader enforces the header limit and that a header block exists.
func checkHeader(frame []byte, lim Limits) (int, error) {
	max := lim.header()
	end := headerEnd(frame, max)
	if end < 0 {
		if max >= 0 && len(frame) > max {
			return 0, &TooLargeError{What: "header", Limit: int64(max), Size: -1}
		}
		return 0, fmt.Errorf("%w: no end of header block", ErrMalformedFrame)
	}
	if max >= 0 && end > max+4 {
		return 0, &TooLargeError{What: "header", Limit: int64(max), Size: int64(end)}
	}
	return end, nil
}

// readBody sets body to exactly the bytes the framing declares, checking
// the body limit, and rejects a frame whose length disagrees with its
// Content-Length.
func readBody(frame []byte, br *bufio.Reader, rd *bytes.Reader, length int64, body io.ReadCloser, lim Limits) (io.ReadCloser, int64, error) {
	max := lim.body()
	if length >= 0 {
		if max >= 0 && length > max {
			return nil, 0, &TooLargeError{What: "body", Limit: max, Size: length}
		}
		return fixedBody(frame, len(frame)-rd.Len()-br.Buffered(), length)
	}
	// Chunked: decode now, so that framing errors are a 400, not a handler's
	// read error.
	r := io.Reader(body)
	if max >= 0 {
		r = io.LimitReader(body, max+1)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: body: %v", ErrMalformedFrame, err)
	}
	if max >= 0 && int64(len(b)) > max {
		return nil, 0, &TooLargeError{What: "body", Limit: max, Size: -1}
	}
	if br.Buffered() > 0 || rd.Len() > 0 {
		return nil, 0, fmt.Errorf("%w: bytes after the end of the message", ErrMalformedFrame)
	}
	return newFrameBody(b), int64(len(b)), nil
}

// fixedBody is the body of a frame from start on, which must be length
// bytes.
func fixedBody(frame []byte, start int, length int64) (io.ReadCloser, int64, error) {
	return fixedBodyIn(nil, frame, start, length)
}

// fixedBodyIn is fixedBody reading through fb, or a new frameBody if fb is
// nil (the lean decoders keep one beside the message they decode).
func fixedBodyIn(fb *frameBody, frame []byte, start int, length int64) (io.ReadCloser, int64, error) {
	if rest := int64(len(frame) - start); rest != length {
		return nil, 0, fmt.Errorf("%w: Content-Length is %d but the frame holds %d body bytes", ErrMalformedFrame, length, rest)
	}
	if length == 0 {
		return http.NoBody, 0, nil
	}
	if fb == nil {
		fb = new(frameBody)
	}
	fb.Reset(frame[start:])
	return fb, length, nil
}

// frameBody is a body read from a frame without copying: a bytes.Reader
// (with its WriteTo) whose Close does nothing, in one allocation where
// io.NopCloser(bytes.NewReader(b)) takes two.
type frameBody struct{ bytes.Reader }

func (*frameBody) Close() error { return nil }

func newFrameBody(b []byte) io.ReadCloser {
	fb := new(frameBody)
	fb.Reset(b)
	return fb
}

// leanBody is the body of a frame whose header block (end bytes) the lean
// path parsed, with its Content-Length value length ("" is 0): ok false
// where the lean path declines (a length net/http must judge), an error
// for a body over the limit or one that disagrees with length.
func leanBody(fb *frameBody, frame []byte, end int, length string, lim Limits) (body io.ReadCloser, n int64, ok bool, err error) {
	if length != "" {
		if n, err = strconv.ParseInt(length, 10, 64); err != nil {
			return nil, 0, false, nil // net/http's error
		}
	}
	if max := lim.body(); max >= 0 && n > max {
		return nil, 0, true, &TooLargeError{What: "body", Limit: max, Size: n}
	}
	body, n, err = fixedBodyIn(fb, frame, end, n)
	return body, n, true, err
}

// DecodeRequest reads a request frame: the frames httpbus writes by the
// lean parser of lean.go, which gives what http.ReadRequest gives
// (FuzzLeanDecode), anything else with net/http's http.ReadRequest. The
// returned request's Body reads from frame without copying (the caller
// must not modify frame while the body is in use). A chunked body is
// decoded at once (its trailers are in req.Trailer), and ContentLength -1
// and TransferEncoding ["chunked"] say so, as net/http's server does.
// Errors: *TooLargeError (ErrTooLarge) for a header block or body over
// lim, ErrMalformedFrame for anything http.ReadRequest refuses and for a
// Content-Length that disagrees with the frame.
func DecodeRequest(frame []byte, lim Limits) (*http.Request, error) {
	return decodeRequest(frame, lim, false)
}

// leanHead returns, for an owned frame, what the lean parsers read: the
// frame's own bytes as a string (their header keys and values are
// substrings of it), cut where the header limit ends (the header limit
// plus the blank line, as headerEnd searches). The parsers find the end
// of the header block as they go, so no separate search runs before them;
// a frame they decline is checked (checkHeader) before net/http reads it.
// ok is false for a frame not owned (its header block is copied) or empty.
// owned is for a frame the core owns for good, a message's Body that a
// Transport returned (Message: "belongs to the caller"), which nothing
// modifies afterwards; it saves an allocation and a copy per decode
// (slicebytetostring was 6% of the CPU of httpbus bench over mem at 32
// callers).
func leanHead(frame []byte, lim Limits, owned bool) (head string, ok bool) {
	if !owned || len(frame) == 0 {
		return "", false
	}
	n := len(frame)
	if max := lim.header(); max >= 0 && n > max+4 {
		n = max + 4
	}
	return unsafe.String(&frame[0], n), true
}

// decodeRequest is DecodeRequest; owned as for leanHead.
func decodeRequest(frame []byte, lim Limits, owned bool) (*http.Request, error) {
	lr := new(leanReqBox)
	if err := decodeRequestInto(&lr.req, &lr.leanURLBox, frame, lim, owned); err != nil {
		return nil, err
	}
	return &lr.req, nil
}

// decodeRequestInto is decodeRequest writing the request into *dst, which it
// does not keep (leanParseRequestInto), its URL and header values into box
// when the lean parser takes the frame. *dst is undefined on error.
func decodeRequestInto(dst *http.Request, box *leanURLBox, frame []byte, lim Limits, owned bool) error {
	head, viewed := leanHead(frame, lim, owned)
	if !viewed {
		end, err := checkHeader(frame, lim)
		if err != nil {
			return err
		}
		head = string(frame[:end])
	}
	if length, end, ok := leanParseRequestInto(head, dst, box); ok && validHost(dst.Host) {
		if body, n, ok, err := leanBody(&box.body, frame, end, length, lim); ok || err != nil {
			if err != nil {
				return err
			}
			dst.Body, dst.ContentLength = body, n
			return nil
		}
	}
	if _, err := checkHeader(frame, lim); err != nil {
		return err
	}
	rd := bytes.NewReader(frame)
	br := getReader(rd)
	defer putReader(br)
	req, err := http.ReadRequest(br)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformedFrame, err)
	}
	if !validHost(req.Host) {
		// net/http's server refuses it too (RFC 9112 §3.2); Request.Write
		// would blank it.
		return fmt.Errorf("%w: invalid Host %q", ErrMalformedFrame, req.Host)
	}
	chunked := req.ContentLength < 0
	body, n, err := readBody(frame, br, rd, req.ContentLength, req.Body, lim)
	if err != nil {
		return err
	}
	req.Body = body
	if !chunked {
		req.ContentLength = n
		req.TransferEncoding = nil
	}
	*dst = *req
	return nil
}

// DecodeResponse reads a response frame, by the lean parser or with
// net/http's http.ReadResponse as DecodeRequest does; req is the request
// it answers (for HEAD) and becomes resp.Request.
// Interim 1xx responses (other than 101) before the final one are passed
// to req's httptrace.ClientTrace Got1xxResponse, if any, and skipped, as
// net/http's client does; an error from Got1xxResponse is returned. Each
// header block is bounded by lim. A chunked body is read whole, trailers
// included (resp.Trailer), and keeps ContentLength -1 and TransferEncoding
// ["chunked"], as from net/http's client. Errors as DecodeRequest's.
func DecodeResponse(frame []byte, req *http.Request, lim Limits) (*http.Response, error) {
	return decodeResponse(frame, req, lim, false)
}

// decodeResponse is DecodeResponse; owned as for leanHead.
func decodeResponse(frame []byte, req *http.Request, lim Limits, owned bool) (*http.Response, error) {
	for {
		head, viewed := leanHead(frame, lim, owned)
		if !viewed {
			end, err := checkHeader(frame, lim)
			if err != nil {
				return nil, err
			}
			head = string(frame[:end])
		}
		if resp, body, length, end, ok := leanParseResponseHead(head, req); ok {
			if body, n, ok, err := leanBody(body, frame, end, length, lim); ok || err != nil {
				if err != nil {
					return nil, err
				}
				resp.Body, resp.ContentLength = body, n
				return resp, nil
			}
		}
		if _, err := checkHeader(frame, lim); err != nil {
			return nil, err
		}
		rd := bytes.NewReader(frame)
		br := getReader(rd)
		resp, err := http.ReadResponse(br, req)
		if err != nil {
			putReader(br)
			return nil, fmt.Errorf("%w: response: %v", ErrMalformedFrame, err)
		}
		if resp.StatusCode < 100 || resp.StatusCode > 199 || resp.StatusCode == http.StatusSwitchingProtocols {
			defer putReader(br)
			return finishResponse(frame, br, rd, resp, req, lim)
		}
		frame = frame[len(frame)-rd.Len()-br.Buffered():]
		putReader(br)
		if req != nil {
			if trace := httptrace.ContextClientTrace(req.Context()); trace != nil && trace.Got1xxResponse != nil {
				if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
					return nil, err
				}
			}
		}
	}
}

// finishResponse reads the body of a final response.
func finishResponse(frame []byte, br *bufio.Reader, rd *bytes.Reader, resp *http.Response, req *http.Request, lim Limits) (*http.Response, error) {
	length := resp.ContentLength
	if req != nil && req.Method == http.MethodHead {
		length = 0
	}
	if length < 0 && len(resp.TransferEncoding) == 0 {
		// Body delimited by the end of the message (RFC 9112 §6.3 rule 8).
		length = int64(rd.Len() + br.Buffered())
	}
	body, n, err := readBody(frame, br, rd, length, resp.Body, lim)
	if err != nil {
		return nil, err
	}
	switch {
	case len(resp.TransferEncoding) > 0:
		// Chunked: ContentLength -1 and TransferEncoding ["chunked"], as
		// net/http's client reports it.
	case req == nil || req.Method != http.MethodHead:
		resp.ContentLength = n
	}
	resp.Body = body
	return resp, nil
}

// IsFrame reports whether a broker content type names a frame: MediaType,
// with or without parameters, in any case.
func IsFrame(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), MediaType)
}

// ForeignRequest turns a message that is not a frame (a plain message from a
// producer that knows nothing of httpbus) into a request: method POST to "/"
// (NOTIFY for a notification), the payload as body, m.Header as headers and
// m.ContentType as Content-Type.
func ForeignRequest(d *Delivery) *http.Request {
	method, host := http.MethodPost, d.Service
	if d.Topic != "" {
		method, host = MethodNotify, d.Topic
	}
	h := d.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	if d.ContentType != "" {
		h.Set("Content-Type", d.ContentType)
	}
	req := &http.Request{
		Method:        method,
		URL:           &url.URL{Path: "/"},
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Host:          host,
		RequestURI:    "/",
		ContentLength: int64(len(d.Body)),
		Body:          http.NoBody,
	}
	if len(d.Body) > 0 {
		req.Body = newFrameBody(d.Body)
	}
	return req
}

// FormatDeadline formats t for HeaderDeadline: decimal Unix milliseconds.
func FormatDeadline(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// ParseDeadline parses a HeaderDeadline value; "" gives the zero time.
func ParseDeadline(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	ms, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}, fmt.Errorf("%w: bad %s %q", ErrMalformedFrame, HeaderDeadline, s)
	}
	return time.UnixMilli(ms), nil
}

// validHost reports whether h holds only the bytes net/http's
// httpguts.ValidHostHeader allows.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!$%&'()*+,-.:;=[]_~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
