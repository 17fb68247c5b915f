package transport

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// Sentinel errors. Backends wrap them (with %w) together with their client
// library's own error, so that both match errors.Is. StatusOf maps each one
// to the HTTP status a caller sees through a RoundTripper.
var (
	// ErrServerClosed is returned by Server.Serve after Shutdown or Close,
	// like http.ErrServerClosed.
	ErrServerClosed = errors.New("transport: server closed")

	// ErrClosed is returned by a Listener or Conn used after Close, and by
	// Listener.Receive once a drained listener has no more deliveries.
	ErrClosed = errors.New("transport: closed")

	// ErrNoResponders means no server is listening for the service: the
	// broker said so (NATS no-responders, an AMQP returned message, a
	// refused TCP connection). Status 503.
	ErrNoResponders = errors.New("transport: no responders")

	// ErrTimeout means the caller's deadline passed before the response
	// arrived. Errors wrapping it also match context.DeadlineExceeded.
	// Status 504.
	ErrTimeout = errors.New("transport: timeout")

	// ErrTooLarge is matched by every *TooLargeError. Status 413 (431 for a
	// header block).
	ErrTooLarge = errors.New("transport: too large")

	// ErrMalformedFrame means a message body is not a valid HTTP/1.1
	// message of media type message/http. Status 400.
	ErrMalformedFrame = errors.New("transport: malformed frame")

	// ErrUnavailable means the connection to the broker is down or was lost
	// while the request was in flight; the request may or may not have been
	// served. Status 502.
	ErrUnavailable = errors.New("transport: broker unavailable")

	// ErrUpgrade is the text of the 501 a caller gets when a handler
	// answers 101 Switching Protocols (a WebSocket upgrade): a broker
	// carries messages, not a connection to take over, and the response
	// writer implements no http.Hijacker. Streams (server-sent events, a
	// chunked request body) carry what fits HTTP's request/response shape.
	// Over tcp, which is HTTP/1.1 itself, upgrades and Hijack work.
	ErrUpgrade = errors.New("transport: 101 Switching Protocols (upgrade, hijack) cannot cross a broker")
)

// TooLargeError reports a frame, header block or body over a limit, like
// http.MaxBytesError. It matches ErrTooLarge with errors.Is.
type TooLargeError struct {
	What  string // "header", "body" or "message"
	Limit int64  // the limit, in bytes
	Size  int64  // the size seen, in bytes; -1 when only "more than Limit" is known
}

// Error says what was too large, its size and the limit, in bytes, e.g.
// "transport: body of 2048 bytes is larger than the limit of 1024 bytes".
func (e *TooLargeError) Error() string {
	if e.Size < 0 {
		return fmt.Sprintf("transport: %s larger than the limit of %d bytes", e.What, e.Limit)
	}
	return fmt.Sprintf("transport: %s of %d bytes is larger than the limit of %d bytes", e.What, e.Size, e.Limit)
}

// Is reports whether target is ErrTooLarge.
func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }

// timeoutError is ErrTimeout that also matches context.DeadlineExceeded and
// reports Timeout() like net.Error.
type timeoutError struct{ cause error }

func (e *timeoutError) Error() string {
	if e.cause == nil || e.cause == context.DeadlineExceeded {
		return "transport: timeout: caller's deadline exceeded"
	}
	return "transport: timeout: " + e.cause.Error()
}
func (e *timeoutError) Is(target error) bool {
	return target == ErrTimeout || target == context.DeadlineExceeded
}
func (e *timeoutError) Unwrap() error { return e.cause }
func (e *timeoutError) Timeout() bool { return true }

// Timeout returns an error that matches both ErrTimeout and
// context.DeadlineExceeded, wrapping cause (which may be nil). Backends use it
// when a caller's deadline passes or the broker expires a request.
func Timeout(cause error) error { return &timeoutError{cause: cause} }

// ContextError converts the error of a finished context into the transport's
// vocabulary: a passed deadline becomes Timeout(err); a cancellation is
// returned unchanged (context.Canceled).
func ContextError(ctx context.Context) error {
	err := context.Cause(ctx)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return Timeout(err)
	}
	return err
}

// StatusOf maps an error to the HTTP status code a caller sees for it:
// ErrNoResponders 503, ErrTimeout or context.DeadlineExceeded 504,
// ErrTooLarge 413 (431 for a header block), ErrMalformedFrame 400,
// ErrUnavailable and ErrClosed 502, anything else 502.
func StatusOf(err error) int {
	var tl *TooLargeError
	switch {
	case errors.As(err, &tl) && tl.What == "header":
		return http.StatusRequestHeaderFieldsTooLarge
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrNoResponders):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, ErrMalformedFrame):
		return http.StatusBadRequest
	default:
		return http.StatusBadGateway
	}
}
