// Package transport is the broker-neutral core of httpbus: it serves a plain
// http.Handler over any wire and lets a plain *http.Client call it.
//
// A backend (inmem, tcp, nats, amqp, stomp) implements two narrow
// interfaces: Listener, the server side (receive a request, reply and settle
// it, publish a notification), and Conn, the client side (call a service,
// publish a notification). Server serves a handler over a Listener as
// http.Server does over a net.Listener; RoundTripper is an http.RoundTripper
// over a Conn.
//
// # Frames
//
// Every message body is one whole HTTP/1.1 message of media type
// message/http (RFC 9112 §10.1), written with net/http's Request.Write and
// Response.Write and read with http.ReadRequest and http.ReadResponse. Broker
// headers carry routing only (reply address, correlation id, the caller's
// deadline in HeaderDeadline, HeaderVersion). WIRE.md at the repository root
// is the language-neutral specification.
//
// A message that is not a frame (a plain payload from a producer that knows
// nothing of httpbus) is still served: it becomes a POST to "/" (NOTIFY for a
// notification) whose body is the payload and whose headers are the broker
// headers.
//
// # Streams
//
// A message that does not fit one broker message, a response whose handler
// calls Flush, and a request body still being produced travel as a stream
// (binding version 2, WIRE.md §7): a sequence of broker messages whose
// bodies, in order, are one HTTP/1.1 message, with credit-based flow control
// (DefaultWindow parts, and DefaultWindowBytes with parts of at most
// LargePartBytes between httpbus peers), cancellation
// (the handler's r.Context ends when the caller gives up) and trailers. The
// core runs the protocol; a backend implements Streamer (an inbox per
// endpoint and Send) and the Hold disposition. A lost, duplicated or
// reordered part fails resp.Body.Read or r.Body.Read with ErrStreamBroken;
// a body never ends short and clean. There is no default body cap
// (Limits.MaxBodyBytes zero means none, as with net/http). A handler's 101
// Switching Protocols gets 501 (ErrUpgrade) over a broker.
//
// # URLs
//
// Listen and Dial open a backend from a URL whose scheme a backend
// registered (blank-import the backend package). Listen reads two query
// parameters itself: service (the name callers put in the URL host) and
// topics (comma-separated notification topics to subscribe to).
//
//	mem://orders                              in-process (package inmem)
//	tcp://127.0.0.1:8080                      HTTP/1.1 on TCP (package tcp)
//	nats://127.0.0.1:4222?service=orders      NATS (package nats)
//	amqp://guest:guest@127.0.0.1:5672/?service=orders   RabbitMQ (package amqp)
//	stomp://127.0.0.1:61613?service=orders    STOMP (package stomp)
//	mqtt://127.0.0.1:1883?service=orders      MQTT 5, Mosquitto (package mqtt)
//
// # Errors
//
// Callers test errors with errors.Is against ErrNoResponders (503),
// ErrTimeout (504, also matches context.DeadlineExceeded), ErrTooLarge (413;
// 431 for a header block; *TooLargeError carries Limit and Size in bytes),
// ErrMalformedFrame (400), ErrUnavailable (502), ErrClosed and
// ErrServerClosed. StatusOf gives the status for an error. Through a
// RoundTripper these arrive as responses with HeaderError set, unless
// RoundTripper.ReturnErrors is true.
//
// # Delivery
//
// A Listener acknowledges a request only after its response is sent
// (Listener.Reply). Where the broker can redeliver (amqp, stomp), a request
// taken by a server that dies before replying is served again by another
// instance, with HeaderRedelivered set so handlers can be idempotent.
package transport
