package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// RoundTripper is an http.RoundTripper over a Conn, so that an http.Client,
// its Timeout, request contexts and every library built on http.Client work
// unchanged:
//
//	client := &http.Client{Transport: transport.NewRoundTripper(conn)}
//	resp, err := client.Get("http://orders/items/42") // service "orders"
//
// The URL's host names the destination service; its scheme is ignored. A
// request with method MethodNotify is published to the topic named by the
// host and answered at once, locally, with 202 Accepted.
//
// The context deadline of a request travels with it: the handler's
// r.Context() ends at the same instant, and a request that expires before a
// server takes it is not run.
//
// Transport failures become responses made by httpbus (header HeaderError
// set): no responders 503, deadline passed 504, too large 413, broker
// unavailable 502 — or errors, with ReturnErrors. A request whose context is
// cancelled returns the context's error, as net/http does.
type RoundTripper struct {
	// Conn carries the frames. Required.
	Conn Conn

	// MaxBodyBytes bounds a request body read from the caller and a
	// response body, in bytes: a larger request gets 413 without being sent.
	// Zero or negative means no limit, as with net/http.
	MaxBodyBytes int64

	// MaxHeaderBytes bounds a response's status line and header block.
	// Zero means DefaultMaxHeaderBytes.
	MaxHeaderBytes int

	// ReturnErrors makes RoundTrip return transport failures as errors
	// (matching ErrNoResponders, ErrTimeout, ErrTooLarge, ErrUnavailable with
	// errors.Is) instead of 503/504/413/502 responses.
	ReturnErrors bool
}

// NewRoundTripper returns a RoundTripper over c with default limits.
func NewRoundTripper(c Conn) *RoundTripper { return &RoundTripper{Conn: c} }

// NewClient returns an *http.Client whose Transport is NewRoundTripper(c).
func NewClient(c Conn) *http.Client { return &http.Client{Transport: NewRoundTripper(c)} }

func (rt *RoundTripper) limits() Limits {
	return Limits{MaxHeaderBytes: rt.MaxHeaderBytes, MaxBodyBytes: rt.MaxBodyBytes}
}

// RoundTrip implements http.RoundTripper. It always closes req.Body.
func (rt *RoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if req.URL == nil {
		closeBody(req)
		return nil, errors.New("transport: request has no URL")
	}
	service := req.URL.Host
	if service == "" {
		service = req.Host
	}
	if service == "" {
		closeBody(req)
		return nil, errors.New("transport: request URL has no host naming the service")
	}
	if req.Header[HeaderReplyTo] != nil || req.Header[HeaderStream] != nil {
		// A server takes these fields of a frame as the caller's inbox and
		// stream (WIRE.md §7): an application's own never pass, on any
		// backend.
		r2 := *req
		r2.Header = req.Header.Clone()
		r2.Header.Del(HeaderReplyTo)
		r2.Header.Del(HeaderStream)
		req = &r2
	}
	if native, ok := rt.Conn.(http.RoundTripper); ok && req.Method != MethodNotify {
		if max := rt.limits().body(); max >= 0 && req.ContentLength > max {
			return rt.failure(req, &TooLargeError{What: "body", Limit: max, Size: req.ContentLength})
		}
		resp, err := native.RoundTrip(req)
		if err != nil {
			return rt.failure(req, err)
		}
		return resp, nil
	}
	if st, ok := rt.Conn.(Streamer); ok && req.Method != MethodNotify {
		return rt.roundTripStream(req, service, st)
	}
	body, err := rt.readBody(req)
	if err != nil {
		return rt.failure(req, err)
	}
	frame, err := EncodeRequest(req, service, body)
	if err != nil {
		return nil, err
	}
	if sl, ok := rt.Conn.(SizeLimiter); ok {
		if max := sl.MaxMessageBytes(); max > 0 && int64(len(frame)) > max {
			return rt.failure(req, &TooLargeError{What: "message", Limit: max, Size: int64(len(frame))})
		}
	}
	m := &Message{Body: frame, ContentType: MediaType}
	if dl, ok := ctx.Deadline(); ok && req.Method != MethodNotify {
		// Notifications carry no deadline (WIRE.md §2): a publisher's
		// timeout must not expire a notification waiting for a subscriber.
		m.Deadline = dl
	}
	if req.Method == MethodNotify {
		if err := rt.Conn.Publish(ctx, service, m); err != nil {
			return rt.failure(req, err)
		}
		return localResponse(req, http.StatusAccepted, nil, ""), nil
	}
	reply, err := rt.Conn.Call(ctx, service, m)
	if err != nil {
		return rt.failure(req, err)
	}
	resp, err := decodeResponse(reply.Body, req, rt.limits(), true)
	if err != nil {
		return rt.failure(req, err)
	}
	resp.Request = req
	return resp, nil
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

func (rt *RoundTripper) readBody(req *http.Request) ([]byte, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	defer req.Body.Close()
	max := rt.limits().body()
	if max >= 0 && req.ContentLength > max {
		return nil, &TooLargeError{What: "body", Limit: max, Size: req.ContentLength}
	}
	if req.ContentLength > 0 {
		// Known length: read exactly that, in one allocation.
		b := make([]byte, req.ContentLength)
		if _, err := io.ReadFull(req.Body, b); err != nil {
			return nil, fmt.Errorf("transport: request body shorter than its ContentLength %d: %w", req.ContentLength, err)
		}
		return b, nil
	}
	var buf bytes.Buffer
	r := io.Reader(req.Body)
	if max >= 0 {
		r = io.LimitReader(req.Body, max+1)
	}
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, err
	}
	if max >= 0 && int64(buf.Len()) > max {
		return nil, &TooLargeError{What: "body", Limit: max, Size: -1}
	}
	return buf.Bytes(), nil
}

// failure turns a transport error into a response or an error.
func (rt *RoundTripper) failure(req *http.Request, err error) (*http.Response, error) {
	closeBody(req)
	ctx := req.Context()
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return nil, ctx.Err()
	}
	if ctx.Err() != nil && !errors.Is(err, ErrTimeout) {
		err = ContextError(ctx)
	}
	if rt.ReturnErrors {
		return nil, err
	}
	return localResponse(req, StatusOf(err), err, err.Error()+"\n"), nil
}

// localResponse is a response made by httpbus, not by a handler.
func localResponse(req *http.Request, status int, err error, body string) *http.Response {
	h := http.Header{}
	if err != nil {
		h.Set(HeaderError, err.Error())
		h.Set("Content-Type", "text/plain; charset=utf-8")
	}
	return &http.Response{
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       req,
	}
}
