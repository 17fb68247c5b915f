package transport

import (
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
	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	if !validMethod(method) || method == http.MethodConnect || !leanHost(service) {
		return nil, false
	}
	u := url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery, Opaque: r.URL.Opaque}
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
	ua := "Go-http-client/1.1"
	if _, has := r.Header["User-Agent"]; has {
		ua = sanitizeValue(r.Header.Get("User-Agent"))
	}
	if ua != "" {
		dst = append(dst, "User-Agent: "...)
		dst = append(dst, ua...)
		dst = append(dst, "\r\n"...)
	}
	dst = appendLength(dst, int64(len(body)), method)
	dst = appendHeader(dst, r.Header, requestExcluded)
	dst = append(dst, "\r\n"...)
	return append(dst, body...), true
}

// leanResponse appends the frame Response.Write makes of EncodeResponse's
// response with a known-length body, or returns ok false where it declines.
func leanResponse(dst []byte, status int, header http.Header, body []byte, method string) (_ []byte, ok bool) {
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
	sent := len(body) > 0 || method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch
	dst = appendLength(dst, int64(len(body)), method)
	dst = appendHeader(dst, header, responseExcluded)
	if len(body) == 0 && !sent && bodyAllowed(status) {
		dst = append(dst, "Content-Length: 0\r\n"...)
	}
	dst = append(dst, "\r\n"...)
	return append(dst, body...), true
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
	if strings.ContainsAny(v, "\r\n") {
		v = strings.NewReplacer("\n", " ", "\r", " ").Replace(v)
	}
	return strings.Trim(v, " \t\r\n")
}

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

func isTokenByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// leanHost reports whether a service name is written as it is by
// Request.Write: host characters, no IPv6 literal or zone.
func leanHost(s string) bool {
	return s != "" && validHost(s) && strings.IndexByte(s, '[') < 0 && strings.IndexByte(s, '%') < 0
}
