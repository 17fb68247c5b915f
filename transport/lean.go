package transport

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// The lean frame encoders (issue 13). EncodeRequest and EncodeResponse
// spend most of their time in net/http's Request.Write and Response.Write
// machinery (a transfer writer, a body reader, a pooled header sorter); for
// the common case, a frame with a known-length body, leanRequest and
// leanResponse append the same bytes directly. They write exactly what
// net/http writes (FuzzLeanEncode compares the bytes of both for every
// input), and they decline anything else, which then goes through net/http
// as before:
//
//   - leanRequest: a method that is a token other than CONNECT, a service
//     of host characters without '[' or '%' (no zone, no IPv6 literal), and
//     a request target without control bytes;
//   - leanResponse: a status of 200–999 and a method other than HEAD
//     (1xx and HEAD have their own rules in EncodeResponse).

// leanRequest appends the frame Request.Write makes of EncodeRequest's
// request, or returns ok false where it declines.
func leanRequest(dst []byte, r *http.Request, service string, body []byte) (_ []byte, ok bool) {
	dst, ok = leanRequestHead(dst, r, service, int64(len(body)), nil)
	if !ok {
		return nil, false
	}
	return append(dst, body...), true
}

// leanRequestFrame reads a request's body of known length (at most max
// bytes) straight into the frame behind its head, where leanRequestHead
// takes the request; ok is false where it does not (the body is then
// untouched). extra fields are written after the request's own, which
// lose any field of the same names. An error is a body shorter than its
// ContentLength.
func leanRequestFrame(r *http.Request, service string, max int, extra []leanField) (_ []byte, ok bool, err error) {
	n := r.ContentLength
	noBody := r.Body == nil || r.Body == http.NoBody
	if n < 0 || n > int64(max) || (n == 0) != noBody {
		return nil, false, nil
	}
	frame, ok := leanRequestHead(make([]byte, 0, headerEstimate(r.Header)+len(r.URL.Path)+len(r.URL.RawQuery)+len(service)+160+int(n)), r, service, n, extra)
	if !ok {
		return nil, false, nil
	}
	if n > 0 {
		head := len(frame)
		frame = frame[:head+int(n)]
		if _, err := io.ReadFull(r.Body, frame[head:]); err != nil {
			closeBody(r)
			return nil, false, fmt.Errorf("transport: request body shorter than its ContentLength %d: %w", n, err)
		}
	}
	return frame, true, nil
}

// leanRequestHead appends the request line and header block of
// leanRequest for a body of n bytes, with extra fields last (the request's
// own fields of those names left out).
func leanRequestHead(dst []byte, r *http.Request, service string, n int64, extra []leanField) (_ []byte, ok bool) {
	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	if !validMethod(method) || method == http.MethodConnect || !leanHost(service) {
		return nil, false
	}
	u := url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery, Opaque: r.URL.Opaque, ForceQuery: r.URL.ForceQuery}
	uri := u.RequestURI()
	for i := 0; i < len(uri); i++ {
		if uri[i] < ' ' || uri[i] == 0x7f {
			return nil, false // net/http refuses it: its error, not ours
		}
	}
	dst = append(dst, method...)
	dst = append(dst, ' ')
	dst = append(dst, uri...)
	dst = append(dst, " HTTP/1.1\r\nHost: "...)
	dst = append(dst, service...)
	dst = append(dst, "\r\n"...)
	// As Request.Write: the emptiness test comes before the value is
	// trimmed, so a value of blanks is sent as an empty field.
	ua := "Go-http-client/1.1"
	if vs, has := r.Header["User-Agent"]; has {
		ua = ""
		if len(vs) > 0 {
			ua = vs[0]
		}
	}
	if ua != "" {
		dst = append(dst, "User-Agent: "...)
		dst = append(dst, sanitizeValue(ua)...)
		dst = append(dst, "\r\n"...)
	}
	dst = appendLength(dst, n, method)
	if len(extra) == 0 {
		dst = appendHeader(dst, r.Header, requestExcluded)
	} else {
		dst = appendHeader(dst, r.Header, func(k string) bool {
			if requestExcluded(k) {
				return true
			}
			for _, f := range extra {
				if k == f.key {
					return true
				}
			}
			return false
		})
		for _, f := range extra {
			dst = append(dst, f.key...)
			dst = append(dst, ": "...)
			dst = append(dst, f.value...)
			dst = append(dst, "\r\n"...)
		}
	}
	return append(dst, "\r\n"...), true
}

// leanResponse appends the frame Response.Write makes of EncodeResponse's
// response with a known-length body, or returns ok false where it declines.
func leanResponse(dst []byte, status int, header http.Header, body []byte, method string) (_ []byte, ok bool) {
	dst, ok = leanResponseHead(dst, status, header, len(body), method)
	if !ok {
		return nil, false
	}
	return append(dst, body...), true
}

// leanResponseHead appends the status line and header block of
// leanResponse's frame for a body of n bytes.
func leanResponseHead(dst []byte, status int, header http.Header, n int, method string) (_ []byte, ok bool) {
	if status < 200 || status > 999 || method == http.MethodHead {
		return nil, false
	}
	text := http.StatusText(status)
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, ' ')
	if text == "" {
		dst = append(dst, "status code "...)
		dst = strconv.AppendInt(dst, int64(status), 10)
	} else {
		dst = append(dst, text...)
	}
	dst = append(dst, "\r\n"...)
	sent := n > 0 || method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch
	dst = appendLength(dst, int64(n), method)
	dst = appendHeader(dst, header, responseExcluded)
	if n == 0 && !sent && bodyAllowed(status) {
		dst = append(dst, "Content-Length: 0\r\n"...)
	}
	return append(dst, "\r\n"...), true
}

// appendLength writes Content-Length as net/http's transfer writer does
// (shouldSendContentLength): for a body, and for none with POST, PUT and
// PATCH.
func appendLength(dst []byte, n int64, method string) []byte {
	if n == 0 && method != http.MethodPost && method != http.MethodPut && method != http.MethodPatch {
		return dst
	}
	dst = append(dst, "Content-Length: "...)
	dst = strconv.AppendInt(dst, n, 10)
	return append(dst, "\r\n"...)
}

func requestExcluded(k string) bool {
	switch k {
	case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
		return true
	}
	return false
}

func responseExcluded(k string) bool {
	switch k {
	case "Content-Length", "Transfer-Encoding", "Trailer":
		return true
	}
	return false
}

// appendHeader writes h as http.Header.WriteSubset does: keys in sorted
// order (not canonicalized), a key that is not a valid field name dropped,
// each value with CR and LF turned into spaces and then trimmed.
func appendHeader(dst []byte, h http.Header, excluded func(string) bool) []byte {
	var arr [24]string
	keys := arr[:0]
	for k := range h {
		if !excluded(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !validFieldName(k) {
			continue
		}
		for _, v := range h[k] {
			dst = append(dst, k...)
			dst = append(dst, ": "...)
			dst = append(dst, sanitizeValue(v)...)
			dst = append(dst, "\r\n"...)
		}
	}
	return dst
}

// sanitizeValue is net/http's headerNewlineToSpace then textproto.TrimString.
func sanitizeValue(v string) string {
	if strings.IndexByte(v, '\n') >= 0 || strings.IndexByte(v, '\r') >= 0 {
		v = strings.NewReplacer("\n", " ", "\r", " ").Replace(v)
	}
	// strings.Trim(v, " \t\r\n") without building its byte set per call.
	for len(v) > 0 && isTrimByte(v[0]) {
		v = v[1:]
	}
	for len(v) > 0 && isTrimByte(v[len(v)-1]) {
		v = v[:len(v)-1]
	}
	return v
}

func isTrimByte(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// validFieldName reports whether k is an RFC 9110 token, as
// httpguts.ValidHeaderFieldName does.
func validFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !isTokenByte(k[i]) {
			return false
		}
	}
	return true
}

func isTokenByte(c byte) bool { return tokenBytes[c] }

// tokenBytes[c] says whether c is a tchar of RFC 9110 §5.6.2: a letter, a
// digit or one of !#$%&'*+-.^_`|~.
var tokenBytes = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", byte(c)) >= 0
	}
	return t
}()

// leanHost reports whether a service name is written as it is by
// Request.Write: host characters, no IPv6 literal or zone.
func leanHost(s string) bool {
	return s != "" && validHost(s) && strings.IndexByte(s, '[') < 0 && strings.IndexByte(s, '%') < 0
}

// The lean frame decoders (issue 13): leanParseRequestInto and
// leanParseResponseHead read the header block of a frame as http.ReadRequest and
// http.ReadResponse would, for a strict subset of HTTP/1.1 — the frames
// httpbus's own encoders write — and decline anything else, which then goes
// through net/http as before. FuzzLeanDecode compares every field of the
// result with net/http's for every input. What they accept:
//
//   - CRLF line ends only; no obs-fold, no whitespace before a colon;
//   - field names in canonical form (Content-Type, not content-type), at
//     most leanMaxFields lines; values of visible ASCII, SP and HTAB, with
//     no whitespace at their end;
//   - no Transfer-Encoding, Trailer, Connection or Pragma field, at most one
//     Content-Length of decimal digits (a response must have one);
//   - request: a token method other than CONNECT and PRI, a target that
//     starts with '/' and holds only path characters that need no escape
//     (no '%', no '#') up to an optional '?' and query, and HTTP/1.1;
//   - response: HTTP/1.1, a status of 200–599 other than 204 and 304, to a
//     request that is not HEAD.
//
// The header block becomes one string; keys and values are substrings of it.

const leanMaxFields = 64

// leanStackFields is how many field lines leanParseFields keeps on its
// stack; a block with more (up to leanMaxFields) spills to the heap. An
// array of leanMaxFields entries made the function's frame 2 KiB, zeroed on
// every call (its entry line alone was 2% of the amqp backend's CPU in a
// profile of httpbus bench -c 32).
const leanStackFields = 16

// leanField is one header line of a block.
type leanField struct{ key, value string }

// leanParseFields parses the field lines at the start of head, through the
// blank line, into h, one []string backing array for all values. It returns
// the single Content-Length value ("" if none) and how many bytes of head
// it took (what follows is the body).
//
// With take (a request), Host fields and, if take.stream, the stream
// fields go to take instead of h.
func leanParseFields(head string, slab []string, take *leanTaken) (h http.Header, length string, n int, ok bool) {
	var arr [leanStackFields]leanField
	fields := arr[:0]
	block := head
	lines := 0 // field lines, taken ones included
	for {
		i := strings.IndexByte(block, '\n')
		if i < 1 || block[i-1] != '\r' {
			return nil, "", 0, false
		}
		line := block[:i-1]
		block = block[i+1:]
		if line == "" {
			break
		}
		if lines++; lines > leanMaxFields {
			return nil, "", 0, false
		}
		colon := strings.IndexByte(line, ':')
		if colon < 1 {
			return nil, "", 0, false
		}
		key, value := line[:colon], line[colon+1:]
		if !canonicalToken(key) {
			return nil, "", 0, false
		}
		for len(value) > 0 && (value[0] == ' ' || value[0] == '\t') {
			value = value[1:]
		}
		for j := 0; j < len(value); j++ {
			if !leanValueBytes[value[j]] {
				return nil, "", 0, false
			}
		}
		if n := len(value); n > 0 && (value[n-1] == ' ' || value[n-1] == '\t') {
			return nil, "", 0, false
		}
		switch key {
		case "Transfer-Encoding", "Trailer", "Connection", "Pragma":
			return nil, "", 0, false
		case "Content-Length":
			if length != "" || value == "" {
				return nil, "", 0, false
			}
			for j := 0; j < len(value); j++ {
				if value[j] < '0' || value[j] > '9' {
					return nil, "", 0, false
				}
			}
			length = value
		case "Host":
			if take != nil {
				take.hosts++
				take.host = value
				continue
			}
		case HeaderReplyTo:
			if take != nil && take.stream {
				if !take.hasPeer {
					take.peer, take.hasPeer = value, true
				}
				continue
			}
		case HeaderStream:
			if take != nil && take.stream {
				if !take.hasID {
					take.id, take.hasID = value, true
				}
				continue
			}
		}
		fields = append(fields, leanField{key, value})
	}
	h = make(http.Header, len(fields))
	strs := slab
	if len(strs) < len(fields) {
		strs = make([]string, len(fields))
	}
	for i, f := range fields {
		strs[i] = f.value
		h[f.key] = strs[i : i+1 : i+1]
	}
	if len(h) < len(fields) {
		// A name came more than once (rare): its values in order, as
		// net/http keeps them. Without this pass each field cost a lookup.
		clear(h)
		for i, f := range fields {
			if vv, seen := h[f.key]; seen {
				h[f.key] = append(vv, f.value)
				continue
			}
			h[f.key] = strs[i : i+1 : i+1]
		}
	}
	return h, length, len(head) - len(block), true
}

// leanTaken is what leanParseFields takes out of a request's fields: its
// Host (net/http keeps it in Request.Host, not in the header) and, for a
// server (stream set), the stream fields (takeStreamFields, first values).
// Taken this way, none of them costs a map insert, lookup and delete.
type leanTaken struct {
	host    string
	hosts   int
	stream  bool
	lean    bool // the lean parser took the request (else net/http did)
	peer    string
	id      string
	hasPeer bool
	hasID   bool
}

// leanValueBytes[c] says whether the lean parsers take c in a field value
// as it is: visible ASCII, space and tab (net/http also takes obs-text and
// other controls, which the lean path leaves to it).
var leanValueBytes = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = c >= ' ' && c <= '~' || c == '\t'
	}
	return t
}()

// canonicalToken reports whether k is a field name already in
// textproto.CanonicalMIMEHeaderKey's form.
func canonicalToken(k string) bool {
	upper := true
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !isTokenByte(c) {
			return false
		}
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			return false
		}
		upper = c == '-'
	}
	return k != ""
}

// leanPathByte reports whether c may appear as it is in a request path that
// net/url keeps without RawPath.
func leanPathByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-_.~$&+,/:;=@", c) >= 0
}

// leanParseRequestInto parses the header block of a request frame at the
// start of head (which may go on past it, into the body), or returns ok
// false where it declines; Body, ContentLength and the checks on them are
// the caller's. It writes the
// request into *dst (which it does not keep: a server's decode fills a
// request on its stack that WithContext then copies, one Request
// allocation instead of two), its URL and header values into box. end is
// the header block's length, through the blank line. *dst is undefined
// when ok is false.
func leanParseRequestInto(head string, dst *http.Request, box *leanURLBox) (length string, end int, ok bool) {
	i := strings.Index(head, "\r\n")
	if i < 0 {
		return "", 0, false
	}
	line := head[:i]
	method, rest, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || proto != "HTTP/1.1" || !validMethod(method) || method == http.MethodConnect || method == "PRI" {
		return "", 0, false
	}
	path, query, hasQuery := strings.Cut(target, "?")
	if path == "" || path[0] != '/' {
		return "", 0, false
	}
	for j := 0; j < len(path); j++ {
		if !leanPathByte(path[j]) {
			return "", 0, false
		}
	}
	for j := 0; j < len(query); j++ {
		if c := query[j]; c <= ' ' || c >= 0x7f || c == '#' || c == '?' {
			return "", 0, false
		}
	}
	take := &box.taken
	*take = leanTaken{stream: take.stream}
	h, length, n, ok := leanParseFields(head[i+2:], box.slab[:], take)
	if !ok || take.hosts != 1 {
		return "", 0, false
	}
	box.url = url.URL{Path: path, RawQuery: query, ForceQuery: hasQuery && query == ""}
	*dst = http.Request{
		Method:     method,
		URL:        &box.url,
		Proto:      proto,
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Host:       take.host,
		RequestURI: target,
	}
	take.lean = true
	return length, i + 2 + n, true
}

// leanReqBox and leanRespBox hold a decoded message, its URL and the
// values of up to leanSlab header fields in one allocation; leanURLBox is
// the URL and values alone, for a request decoded into the caller's own.
type leanReqBox struct {
	req http.Request
	leanURLBox
}

type leanURLBox struct {
	url   url.URL
	slab  [leanSlab]string
	body  frameBody
	taken leanTaken
}

type leanRespBox struct {
	resp http.Response
	slab [leanSlab]string
	body frameBody
}

const leanSlab = 8

// leanParseResponseHead parses the header block of a response frame
// answering req at the start of head (which may go on past it), or returns
// ok false where it declines; the body and the checks on it are the
// caller's. length is the Content-Length value, end the block's length,
// and body a frameBody allocated with resp, for leanBody.
func leanParseResponseHead(head string, req *http.Request) (resp *http.Response, body *frameBody, length string, end int, ok bool) {
	block := head
	if req != nil && req.Method == http.MethodHead {
		return nil, nil, "", 0, false
	}
	i := strings.Index(block, "\r\n")
	if i < 0 || !strings.HasPrefix(block, "HTTP/1.1 ") {
		return nil, nil, "", 0, false
	}
	status := block[len("HTTP/1.1 "):i]
	code := 0
	if len(status) < 4 || status[3] != ' ' {
		return nil, nil, "", 0, false
	}
	for j := 0; j < 3; j++ {
		if status[j] < '0' || status[j] > '9' {
			return nil, nil, "", 0, false
		}
		code = code*10 + int(status[j]-'0')
	}
	if code < 200 || code > 599 || code == http.StatusNoContent || code == http.StatusNotModified {
		return nil, nil, "", 0, false
	}
	for j := 4; j < len(status); j++ {
		if c := status[j]; (c < ' ' && c != '\t') || c > '~' {
			return nil, nil, "", 0, false
		}
	}
	lr := new(leanRespBox)
	h, length, n, ok := leanParseFields(block[i+2:], lr.slab[:], nil)
	if !ok || length == "" {
		return nil, nil, "", 0, false
	}
	lr.resp = http.Response{
		Status:     status,
		StatusCode: code,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Request:    req,
	}
	return &lr.resp, &lr.body, length, i + 2 + n, true
}
