package transporttest

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/httpbus/httpbus/transport"
)

// Difference declares a way a backend's answers may differ from net/http's,
// with the reason. RunDifferential reports a declared difference with t.Log
// instead of failing.
type Difference struct {
	// Name matches "<case>/<aspect>" with path.Match: the catalogue entry
	// (DifferentialCases) and what differs, e.g. "Panic/*" or
	// "ChunkedUpload/request ContentLength". Aspects are "transport" (one
	// side got an error, the other a response), "status", "proto",
	// "response ContentLength", "response TransferEncoding", "response
	// Close", "header <Name>", "body", "trailer <Name>", "1xx", and what the
	// handler saw: "request Method", "request Host", "request RequestURI",
	// "request Path", "request RawPath", "request RawQuery", "request
	// ContentLength", "request TransferEncoding", "request header <Name>".
	Name string
	// Reason says why the difference is there.
	Reason string
}

// IntendedDifferences are the differences from net/http that httpbus keeps
// on purpose (WIRE.md §3.1).
var IntendedDifferences = []Difference{
	{"Panic/*", "a panicking handler is answered 500 with Httpbus-Error (net/http drops the connection): over a broker there is no connection to drop, and the caller would wait for its deadline"},
	{"*/request header Httpbus-Deadline", "the caller's deadline travels as a routing header (WIRE.md §2); tcp carries it as an HTTP header, so the handler sees it"},
}

// PendingStreams are differences that streams (issue 10) were to remove.
// Every backend implements transport.Streamer (tcp speaks HTTP natively),
// and none shows one: the list is empty. A difference a backend cannot
// avoid until it streams belongs here, with the reason.
var PendingStreams = []Difference{}

// DiffCase is one entry of the differential catalogue: a handler and the
// request sent to it.
type DiffCase struct {
	Name    string
	Handler http.Handler
	// Request builds the request for base, "http://<host>" (the reference
	// server's address or the backend's service).
	Request func(ctx context.Context, base string) (*http.Request, error)
}

// differential's own request headers: which case, which request. The
// handler wrapper removes them before the case's handler runs.
const (
	caseHeader = "Differential-Case"
	idHeader   = "Differential-Id"
)

// diffModTime is the modification time of the catalogue's files.
var diffModTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func diffFS() fstest.MapFS {
	big := bytes.Repeat([]byte("0123456789abcdef"), 640) // 10 KiB
	return fstest.MapFS{
		"hello.txt":      {Data: []byte("hello, file server\n"), ModTime: diffModTime},
		"big.txt":        {Data: big, ModTime: diffModTime},
		"dir/index.html": {Data: []byte("<!doctype html><title>index</title>\n"), ModTime: diffModTime},
		"list/a.txt":     {Data: []byte("a"), ModTime: diffModTime},
		"list/b.bin":     {Data: []byte{0, 1, 2}, ModTime: diffModTime},
	}
}

// newReq returns a request builder; body nil means no body. Each request
// gets its own reader over body.
func newReq(method, target string, body []byte, hdr ...string) func(context.Context, string) (*http.Request, error) {
	return func(ctx context.Context, base string) (*http.Request, error) {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		r, err := http.NewRequestWithContext(ctx, method, base+target, rd)
		if err != nil {
			return nil, err
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Add(hdr[i], hdr[i+1])
		}
		return r, nil
	}
}

// opaqueReader hides its length from http.NewRequest, so the body is sent
// with ContentLength -1 (chunked, on net/http).
type opaqueReader struct{ r io.Reader }

func (o *opaqueReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// digestHandler answers what a handler read: the length and SHA-256 of the body.
func digestHandler(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		http.Error(w, "read: "+err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "%d bytes, sha256 %x\n", n, h.Sum(nil))
}

// formDump writes a parsed form in a fixed order.
func formDump(w io.Writer, name string, v url.Values) {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%s %s=%q\n", name, k, v[k])
	}
}

func gzipped(s string) []byte {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	zw.Close()
	return b.Bytes()
}

const multipartBoundary = "differential-boundary-42"

func multipartBody() []byte {
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	mw.SetBoundary(multipartBoundary)
	mw.WriteField("title", "two files")
	mw.WriteField("tag", "a")
	mw.WriteField("tag", "b")
	fw, _ := mw.CreateFormFile("upload", "notes.txt")
	fw.Write([]byte("notes\r\nline two\n"))
	fw, _ = mw.CreateFormFile("upload", "data.bin")
	fw.Write([]byte{0, 1, 2, 255})
	mw.Close()
	return b.Bytes()
}

func diffPattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

// DifferentialCases returns the catalogue RunDifferential runs, in order.
func DifferentialCases() []DiffCase {
	fs := http.FileServerFS(diffFS())
	hf := func(f func(w http.ResponseWriter, r *http.Request)) http.Handler { return http.HandlerFunc(f) }
	big := diffPattern(3<<20, 0x5a)
	large := diffPattern(3<<20, 0xa5)
	form := url.Values{"name": {"Zoë"}, "tag": {"x", "y"}, "empty": {""}}.Encode()
	return []DiffCase{
		{"FileServerGET", fs, newReq("GET", "/hello.txt", nil)},
		{"FileServerGETLarge", fs, newReq("GET", "/big.txt", nil)},
		{"FileServerHEAD", fs, newReq("HEAD", "/big.txt", nil)},
		{"FileServerRange", fs, newReq("GET", "/big.txt", nil, "Range", "bytes=10-19")},
		{"FileServerMultiRange", fs, newReq("GET", "/hello.txt", nil, "Range", "bytes=0-1,5-6")},
		{"FileServerBadRange", fs, newReq("GET", "/hello.txt", nil, "Range", "bytes=500-600")},
		{"FileServerIfModifiedSince", fs, newReq("GET", "/hello.txt", nil, "If-Modified-Since", diffModTime.Format(http.TimeFormat))},
		{"FileServerDirRedirect", fs, newReq("GET", "/dir", nil)},
		{"FileServerIndex", fs, newReq("GET", "/dir/", nil)},
		{"FileServerListing", fs, newReq("GET", "/list/", nil)},
		{"FileServerNotFound", fs, newReq("GET", "/missing.txt", nil)},
		{"SniffText", hf(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "plain words")
		}), newReq("GET", "/", nil)},
		{"SniffHTMLAfterWriteHeader", hf(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, "<!DOCTYPE html><p>created")
		}), newReq("POST", "/items", []byte("x"))},
		{"SniffTextAfterWriteHeader", hf(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusAccepted)
			io.WriteString(w, "accepted")
		}), newReq("GET", "/", nil)},
		{"FlushedSniff", hf(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "x")
			w.(http.Flusher).Flush()
			io.WriteString(w, "<!DOCTYPE html><p>later")
		}), newReq("GET", "/", nil)},
		{"SniffSeveralWrites", hf(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "  ")
			io.WriteString(w, "<!DOCTYPE html><p>spread over writes")
		}), newReq("GET", "/", nil)},
		{"NoSniffWithContentEncoding", hf(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(gzipped("compressed text"))
		}), newReq("GET", "/", nil)},
		{"NoSniffWithContentEncodingAfterWriteHeader", hf(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			w.WriteHeader(http.StatusOK)
			w.Write(gzipped("compressed text"))
		}), newReq("GET", "/", nil)},
		{"EmptyContentTypeKept", hf(func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = nil
			io.WriteString(w, "<html>no type wanted")
		}), newReq("GET", "/", nil)},
		{"EarlyHints", hf(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Add("Link", "</style.css>; rel=preload; as=style")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Add("Link", "</app.js>; rel=preload; as=script")
			w.WriteHeader(http.StatusEarlyHints)
			io.WriteString(w, "<!DOCTYPE html><p>final")
		}), newReq("GET", "/", nil)},
		{"NoContent", hf(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNoContent)
			io.WriteString(w, "dropped")
		}), newReq("DELETE", "/items/1", nil)},
		{"NotModified", hf(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("ETag", `"v1"`)
			w.Header().Set("Content-Length", "123")
			w.WriteHeader(http.StatusNotModified)
		}), newReq("GET", "/items/1", nil, "If-None-Match", `"v1"`)},
		{"Cookies", hf(func(w http.ResponseWriter, r *http.Request) {
			http.SetCookie(w, &http.Cookie{Name: "session", Value: "abc", Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
			http.SetCookie(w, &http.Cookie{Name: "theme", Value: "dark", MaxAge: 3600})
			for _, c := range r.Cookies() {
				fmt.Fprintf(w, "%s=%s\n", c.Name, c.Value)
			}
		}), func(ctx context.Context, base string) (*http.Request, error) {
			r, err := http.NewRequestWithContext(ctx, "GET", base+"/", nil)
			if err == nil {
				r.AddCookie(&http.Cookie{Name: "a", Value: "1"})
				r.AddCookie(&http.Cookie{Name: "b", Value: "two words"})
			}
			return r, err
		}},
		{"MultiValuedHeaders", hf(func(w http.ResponseWriter, r *http.Request) {
			for _, v := range r.Header.Values("X-Multi") {
				w.Header().Add("X-Echo", v)
			}
			w.Header().Add("Vary", "Accept")
			w.Header().Add("Vary", "Accept-Encoding")
			w.Header().Set("Content-Type", "text/plain")
		}), newReq("GET", "/", nil, "X-Multi", "one", "X-Multi", "two, three", "x-lower", "kept")},
		{"TrailerDeclared", hf(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "X-Checksum, X-Count")
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "body with trailers")
			w.Header().Set("X-Checksum", "abc123")
			w.Header().Set("X-Count", "1")
		}), newReq("GET", "/", nil)},
		{"TrailerPrefix", hf(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, "body with an undeclared trailer")
			w.Header().Set(http.TrailerPrefix+"X-Late", "late value")
		}), newReq("GET", "/", nil)},
		{"FlushedStream", hf(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 3 {
				fmt.Fprintf(w, "data: event %d\n\n", i)
				w.(http.Flusher).Flush()
			}
		}), newReq("GET", "/events", nil)},
		{"Redirect", hf(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/target?x=1", http.StatusFound)
		}), newReq("GET", "/from", nil)},
		{"RedirectAfterPost", hf(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "../done", http.StatusSeeOther)
		}), newReq("POST", "/a/b/form", []byte("k=v"), "Content-Type", "application/x-www-form-urlencoded")},
		{"Error", hf(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "999")
			w.Header().Set("Content-Encoding", "gzip")
			http.Error(w, "no teapot here", http.StatusTeapot)
		}), newReq("GET", "/", nil)},
		{"WritesNothing", hf(func(w http.ResponseWriter, r *http.Request) {}), newReq("GET", "/", nil)},
		{"WriteHeaderOnly", hf(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusCreated)
		}), newReq("PUT", "/items/1", []byte("{}"), "Content-Type", "application/json")},
		{"LargeHeaders", hf(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Large", strings.Repeat("r", 60<<10))
			fmt.Fprintf(w, "request header %d bytes\n", len(r.Header.Get("X-Large")))
		}), newReq("GET", "/", nil, "X-Large", strings.Repeat("q", 60<<10))},
		{"EncodedPath", hf(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "path %q raw %q query %q\n", r.URL.Path, r.URL.RawPath, r.URL.Query())
		}), newReq("GET", "/a%2Fb/c%20d/%E2%82%AC?q=1&q=%2F&z", nil)},
		{"ChunkedUpload", http.HandlerFunc(digestHandler), func(ctx context.Context, base string) (*http.Request, error) {
			r, err := http.NewRequestWithContext(ctx, "POST", base+"/upload", &opaqueReader{strings.NewReader("chunk one, chunk two")})
			if err == nil {
				r.ContentLength = -1
			}
			return r, err
		}},
		{"FormURLEncoded", hf(func(w http.ResponseWriter, r *http.Request) {
			if err := r.ParseForm(); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			formDump(w, "form", r.Form)
			formDump(w, "post", r.PostForm)
		}), newReq("POST", "/form?q=query&tag=z", []byte(form), "Content-Type", "application/x-www-form-urlencoded")},
		{"Multipart", hf(func(w http.ResponseWriter, r *http.Request) {
			if err := r.ParseMultipartForm(1 << 20); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			formDump(w, "value", r.MultipartForm.Value)
			for _, fh := range r.MultipartForm.File["upload"] {
				f, err := fh.Open()
				if err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				b, _ := io.ReadAll(f)
				f.Close()
				fmt.Fprintf(w, "file %q %d bytes %q type %q\n", fh.Filename, fh.Size, b, fh.Header.Get("Content-Type"))
			}
		}), newReq("POST", "/upload", multipartBody(), "Content-Type", "multipart/form-data; boundary="+multipartBoundary)},
		{"HEADExplicitContentLength", hf(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "10240")
			w.Header().Set("Content-Type", "application/octet-stream")
		}), newReq("HEAD", "/file", nil)},
		{"HEADWritesBody", hf(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "a body nobody reads")
		}), newReq("HEAD", "/", nil)},
		{"HEADWritesNothing", hf(func(w http.ResponseWriter, r *http.Request) {}), newReq("HEAD", "/", nil)},
		{"LargeDownload", hf(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/octet-stream")
			for b := big; len(b) > 0; b = b[min(len(b), 32<<10):] {
				w.Write(b[:min(len(b), 32<<10)])
			}
		}), newReq("GET", "/large", nil)},
		{"LargeUpload", http.HandlerFunc(digestHandler), func(ctx context.Context, base string) (*http.Request, error) {
			return http.NewRequestWithContext(ctx, "PUT", base+"/large", bytes.NewReader(large))
		}},
		{"Panic", hf(func(w http.ResponseWriter, r *http.Request) {
			panic("differential: handler panics on purpose")
		}), newReq("GET", "/panic", nil)},
	}
}

// seen is what a handler saw of its request.
type seen struct {
	Method, Host, RequestURI, Path, RawPath, RawQuery string
	ContentLength                                     int64
	TransferEncoding                                  []string
	Header                                            http.Header
}

// interim is one 1xx response as Got1xxResponse saw it.
type interim struct {
	Code   int
	Header textproto.MIMEHeader
}

// observation is what one side's caller and handler saw of one request.
type observation struct {
	err              string
	status           string
	proto            string
	contentLength    int64
	transferEncoding []string
	close            bool
	header           http.Header
	body             []byte
	trailer          http.Header
	interim          []interim
	seen             *seen
}

// diffSide is one of the two sides: the reference or the backend.
type diffSide struct {
	base   string // "http://<host>"
	host   string
	client *http.Client
	seen   *sync.Map // id → *seen
}

// dispatch routes on caseHeader and records what the handler saw under
// idHeader before the case's handler runs.
func dispatch(cases []DiffCase, rec *sync.Map) http.Handler {
	byName := map[string]http.Handler{}
	for _, c := range cases {
		byName[c.Name] = c.Handler
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, ok := byName[r.Header.Get(caseHeader)]
		if !ok {
			http.Error(w, "differential: no case "+r.Header.Get(caseHeader), http.StatusNotFound)
			return
		}
		id := r.Header.Get(idHeader)
		r.Header.Del(caseHeader)
		r.Header.Del(idHeader)
		rec.Store(id, &seen{
			Method: r.Method, Host: r.Host, RequestURI: r.RequestURI,
			Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery,
			ContentLength: r.ContentLength, TransferEncoding: slices.Clone(r.TransferEncoding),
			Header: r.Header.Clone(),
		})
		h.ServeHTTP(w, r)
	})
}

var diffSeq atomic.Int64

func (s *diffSide) do(ctx context.Context, c DiffCase) *observation {
	o := &observation{}
	req, err := c.Request(ctx, s.base)
	if err != nil {
		o.err = "building request: " + err.Error()
		return o
	}
	id := strconv.FormatInt(diffSeq.Add(1), 10)
	req.Header.Set(caseHeader, c.Name)
	req.Header.Set(idHeader, id)
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		o.interim = append(o.interim, interim{code, h})
		return nil
	}}
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, err := s.client.Do(req)
	if v, ok := s.seen.Load(id); ok {
		o.seen = v.(*seen)
		o.seen.Host = strings.ReplaceAll(o.seen.Host, s.host, "{host}")
	}
	if err != nil {
		o.err = err.Error()
		return o
	}
	defer resp.Body.Close()
	o.status, o.proto = resp.Status, resp.Proto
	o.contentLength, o.transferEncoding, o.close = resp.ContentLength, resp.TransferEncoding, resp.Close
	o.header = resp.Header
	o.body, err = io.ReadAll(resp.Body)
	if err != nil {
		o.err = "reading body: " + err.Error()
	}
	o.trailer = resp.Trailer
	// Host-derived values and random multipart boundaries compare equal.
	pairs := []string{s.host, "{host}"}
	if _, p, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err == nil && p["boundary"] != "" {
		pairs = append(pairs, p["boundary"], "{boundary}")
	}
	norm := strings.NewReplacer(pairs...)
	for _, h := range []http.Header{o.header, o.trailer} {
		for k, vs := range h {
			for i, v := range vs {
				vs[i] = norm.Replace(v)
			}
			h[k] = vs
		}
	}
	o.body = []byte(norm.Replace(string(o.body)))
	return o
}

// diff is one difference: aspect, the reference's value and the backend's.
type diff struct{ aspect, want, got string }

func show(v any) string {
	switch v := v.(type) {
	case []byte:
		if len(v) > 200 {
			sum := sha256.Sum256(v)
			return fmt.Sprintf("%d bytes %q… sha256 %s", len(v), v[:64], hex.EncodeToString(sum[:8]))
		}
		return strconv.Quote(string(v))
	case string:
		if len(v) > 200 {
			return strconv.Quote(v[:64]) + fmt.Sprintf("… (%d bytes)", len(v))
		}
		return strconv.Quote(v)
	}
	s := fmt.Sprintf("%v", v)
	if len(s) > 200 {
		s = s[:64] + fmt.Sprintf("… (%d bytes)", len(s))
	}
	return s
}

func diffHeaders(prefix string, want, got http.Header, skip ...string) []diff {
	var out []diff
	keys := map[string]bool{}
	for k := range want {
		keys[k] = true
	}
	for k := range got {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		if !slices.Contains(skip, k) {
			sorted = append(sorted, k)
		}
	}
	slices.Sort(sorted)
	for _, k := range sorted {
		w, g := want[k], got[k]
		if !slices.Equal(w, g) || (w == nil) != (g == nil) {
			ws, gs := show(w), show(g)
			if w == nil {
				ws = "absent"
			}
			if g == nil {
				gs = "absent"
			}
			out = append(out, diff{prefix + k, ws, gs})
		}
	}
	return out
}

func compare(ref, got *observation) []diff {
	var out []diff
	add := func(aspect string, w, g any) {
		if ws, gs := show(w), show(g); ws != gs {
			out = append(out, diff{aspect, ws, gs})
		}
	}
	if (ref.err == "") != (got.err == "") {
		w, g := ref.err, got.err
		if w == "" {
			w = "a response: " + ref.status
		}
		if g == "" {
			g = "a response: " + got.status
		}
		out = append(out, diff{"transport", w, g})
	}
	if ref.err == "" && got.err == "" {
		add("status", ref.status, got.status)
		add("proto", ref.proto, got.proto)
		add("response ContentLength", ref.contentLength, got.contentLength)
		add("response TransferEncoding", ref.transferEncoding, got.transferEncoding)
		add("response Close", ref.close, got.close)
		out = append(out, diffHeaders("header ", ref.header, got.header, "Date")...)
		if !bytes.Equal(ref.body, got.body) {
			out = append(out, diff{"body", show(ref.body), show(got.body)})
		}
		out = append(out, diffHeaders("trailer ", ref.trailer, got.trailer)...)
		add("1xx", ref.interim, got.interim)
	}
	if ref.seen != nil && got.seen != nil {
		r, g := ref.seen, got.seen
		add("request Method", r.Method, g.Method)
		add("request Host", r.Host, g.Host)
		add("request RequestURI", r.RequestURI, g.RequestURI)
		add("request Path", r.Path, g.Path)
		add("request RawPath", r.RawPath, g.RawPath)
		add("request RawQuery", r.RawQuery, g.RawQuery)
		add("request ContentLength", r.ContentLength, g.ContentLength)
		add("request TransferEncoding", r.TransferEncoding, g.TransferEncoding)
		out = append(out, diffHeaders("request header ", r.Header, g.Header)...)
	} else if (ref.seen == nil) != (got.seen == nil) {
		out = append(out, diff{"request", fmt.Sprintf("handler ran: %v", ref.seen != nil), fmt.Sprintf("handler ran: %v", got.seen != nil)})
	}
	return out
}

func declared(list []Difference, name string) (Difference, bool) {
	for _, d := range list {
		if ok, _ := path.Match(d.Name, name); ok {
			return d, true
		}
	}
	return Difference{}, false
}

// dropPanics drops the server's log line for the Panic case's panic.
type dropPanics struct{ slog.Handler }

func (d dropPanics) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "transport: handler panic" {
		return nil
	}
	return d.Handler.Handle(ctx, r)
}

func (d dropPanics) WithAttrs(a []slog.Attr) slog.Handler { return dropPanics{d.Handler.WithAttrs(a)} }
func (d dropPanics) WithGroup(g string) slog.Handler      { return dropPanics{d.Handler.WithGroup(g)} }

// RunDifferential serves every DifferentialCases handler twice — through
// an httptest.Server called by an http.Client with compression off (the
// reference), and through the backend (a transport.Server over h.Listen,
// called by an http.Client over transport.NewRoundTripper(h.Dial)) — sends
// each the same request, and reports every difference in what the caller
// and the handler saw, one subtest per case. A difference declared in
// IntendedDifferences or PendingStreams is logged (t.Log), any other one
// fails the subtest (t.Errorf). Redirects are not followed.
func RunDifferential(t *testing.T, h Harness) {
	if h.Listen == nil || h.Dial == nil {
		t.Fatal("transporttest: Harness.Listen and Harness.Dial are required")
	}
	cases := DifferentialCases()
	noRedirect := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	refSeen := &sync.Map{}
	ts := httptest.NewUnstartedServer(dispatch(cases, refSeen))
	ts.Config.ErrorLog = log.New(io.Discard, "", 0) // the panic case logs on purpose
	ts.Start()
	t.Cleanup(ts.Close)
	tr := ts.Client().Transport.(*http.Transport).Clone()
	tr.DisableCompression = true
	t.Cleanup(tr.CloseIdleConnections)
	ref := &diffSide{base: ts.URL, host: strings.TrimPrefix(ts.URL, "http://"), seen: refSeen,
		client: &http.Client{Transport: tr, CheckRedirect: noRedirect}}

	svc := unique("differential")
	busSeen := &sync.Map{}
	srv := &transport.Server{Handler: dispatch(cases, busSeen), Logger: slog.New(dropPanics{Logger(t).Handler()})}
	l := h.Listen(t, transport.ListenConfig{Service: svc})
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), h.Features.timeout())
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-errc; !errors.Is(err, transport.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	conn := h.Dial(t)
	t.Cleanup(func() { conn.Close() })
	bus := &diffSide{base: "http://" + svc, host: svc, seen: busSeen,
		client: &http.Client{Transport: transport.NewRoundTripper(conn), CheckRedirect: noRedirect}}

	var undeclared, intended, pending atomic.Int64
	var seenMu sync.Mutex
	hit := map[string]bool{}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), h.Features.timeout())
			defer cancel()
			want := ref.do(ctx, c)
			got := bus.do(ctx, c)
			for _, d := range compare(want, got) {
				name := c.Name + "/" + d.aspect
				if dd, ok := declared(IntendedDifferences, name); ok {
					intended.Add(1)
					seenMu.Lock()
					hit[dd.Name] = true
					seenMu.Unlock()
					t.Logf("intended difference %s: net/http %s, httpbus %s (%s)", d.aspect, d.want, d.got, dd.Reason)
					continue
				}
				if dd, ok := declared(PendingStreams, name); ok {
					pending.Add(1)
					seenMu.Lock()
					hit[dd.Name] = true
					seenMu.Unlock()
					t.Logf("pending difference %s: net/http %s, httpbus %s (%s)", d.aspect, d.want, d.got, dd.Reason)
					continue
				}
				undeclared.Add(1)
				t.Errorf("%s differs: net/http %s, httpbus %s", d.aspect, d.want, d.got)
			}
		})
	}
	var unseen []string
	for _, d := range slices.Concat(IntendedDifferences, PendingStreams) {
		if !hit[d.Name] && !slices.Contains(unseen, d.Name) {
			unseen = append(unseen, d.Name)
		}
	}
	t.Logf("differential: %d cases; %d undeclared differences, %d intended, %d pending streams; declared but not seen here: %q",
		len(cases), undeclared.Load(), intended.Load(), pending.Load(), unseen)
}
