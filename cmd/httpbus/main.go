// Command httpbus calls, serves and benchmarks httpbus services over any
// backend that the binary links in (mem, tcp, nats, amqp, stomp), and joins
// the bus to the web: gateway (HTTP clients in front) and bridge (an
// existing web app behind).
//
// Usage:
//
//	httpbus call  [-X METHOD] [-H 'K: V']... [-d BODY|@file|@-] [-timeout 10s] [-vhost VHOST] [-o name=value]... URL
//	httpbus bench -url URL [-c 32] [-d 10s] [-size 256] [-warmup 1s] [-rounds 3] [-raw] [-target SERVICE] [-json] [-cpuprofile FILE] [-trace FILE]
//	httpbus bench -url URL -stream up|down|both [-size BYTES] [-n 1] [-rounds 3] [-raw] [-target SERVICE] [-json] [-memprofile FILE]
//	httpbus serve -url URL [-service NAME] [-max-body BYTES] [-memprofile FILE] [-cpuprofile FILE]
//	httpbus gateway -url URL [-listen 127.0.0.1:8080] [-route path|host] [-allow a,b] [-timeout 30s] [-tls-cert FILE -tls-key FILE]
//	httpbus bridge -url 'URL?service=NAME' -upstream http://HOST:PORT
//
// # call
//
// call is curl for httpbus: the URL names the broker, then the service as the
// first path segment, then the request's path and query:
//
//	httpbus call nats://127.0.0.1:4222/orders/items/42
//
// dials nats://127.0.0.1:4222 (transport.Dial) and sends GET
// http://orders/items/42 through an http.Client over that connection. For
// mem URLs the host, when present, is the service (mem://orders/items/42);
// mem:///orders/items/42 means the same. For tcp URLs the service becomes the
// request's Host (tcp://127.0.0.1:8080/orders/items/42).
//
// The URL's query belongs to the request. Backend options that a URL opener
// reads from the query (such as a subject prefix) are given with -o
// name=value instead, one per option. The path of an amqp URL normally names
// the virtual host; here the path names the service, so the virtual host is
// given with -vhost (default: the broker's default, "/").
//
// call prints the status line, the response headers (sorted), a blank line
// and the body to standard output. It exits 0 when a handler answered, even
// with 4xx or 5xx (as curl does; -f makes a status ≥ 400 exit 22), 1 when the
// transport failed (no responders, timeout, broker unavailable, a too-large
// message: a response whose Httpbus-Error header is set counts as a
// failure; the message goes to standard error), and 2 on a usage error.
// Passwords in URLs are never printed.
//
// # bench
//
// bench is a closed-loop load generator: it starts an echo service on the
// backend (unless -target names one that is already running, for example
// one started with httpbus serve), runs -c callers that each send a -size
// byte POST and wait for its echo, for -d after a -warmup, and prints
// requests/s, p50/p90/p99 latency in µs, errors, and the process's CPU time
// (user+system, getrusage) per request. The echo service runs in the same
// process, so CPU time covers caller and server, but never the broker's.
//
// With -raw the same request/reply pattern also runs over the backend's bare
// client library, in the same run, alternating httpbus and raw in -rounds
// rounds of -d/-rounds each so that machine noise is shared, and bench
// prints the ratio httpbus/raw of requests/s and of p50 latency:
//
//	nats   nats.go Request against a QueueSubscribe responder
//	amqp   amqp091 publish with direct reply-to (amq.rabbitmq.reply-to) and
//	       correlation ids; the responder consumes a queue, acks after replying
//	stomp  go-stomp SEND with reply-to a /temp-queue and a correlation-id;
//	       the responder subscribes /queue/NAME with client-individual acks
//	tcp    net/http client and server on loopback
//
// -json prints one JSON object instead of the table (scripts/bench.sh reads
// it). -cpuprofile writes a CPU profile of the measured rounds, -trace an execution trace (go tool trace).
//
// With -stream, bench instead moves one -size body through the stream
// protocol: up is a POST /upload that the service reads, counts and
// checksums (CRC-32C); down is a GET /download?n=SIZE that it writes in
// 32 KiB writes. The body is generated on the fly and checked on the fly
// on both sides, so neither process holds it. bench prints MB/s per
// direction, the process's idle and peak RSS, and with -raw the broker's
// bare publish throughput for the same bytes in the same run (messages of
// -raw-msg, default 1 MiB, generated as the stream's are, to a subscriber
// that checks and counts them) and the ratio httpbus/raw. -raw-window N
// (nats and stomp) gives raw publish a stream's flow control: at most N
// bytes sent and not reported consumed by the subscriber, whose reports
// go back through the broker every N/2 bytes. -memprofile writes a heap
// profile taken at the largest live heap.
//
// # gateway
//
// gateway puts the bus behind an HTTP server (package gateway): curl and
// browsers reach the services on the broker at -url.
//
//	httpbus gateway -listen 127.0.0.1:8080 -url nats://127.0.0.1:4222
//	curl http://127.0.0.1:8080/orders/items/42    # service orders, GET /items/42
//
// The first path segment names the service and is stripped (-route host:
// the leftmost label of the Host header names it, as in
// http://orders.localhost:8080/items/42). -allow lists the services exposed;
// any other, and a path with no service, gets 404. Failures come back as 502
// (broker unavailable), 503 (no server for the service) or 504 (-timeout
// passed) with the Httpbus-Error header. GET /healthz answers 200
// "connected" or 503 and the connection's state. The server cuts off a
// client that takes longer than -read-header-timeout to send its header,
// answers 431 to a header block over -max-header-bytes, and serves HTTPS
// with -tls-cert and -tls-key. Each request is logged on standard error
// (method, service, path, status, bytes, duration).
//
// # bridge
//
// bridge puts an existing web application on the bus as a service: each
// request for the service is forwarded to -upstream, and the answer sent
// back, the upstream's own 5xx included; an upstream that does not answer
// gives 502, and the caller's deadline bounds the upstream exchange.
//
//	gunicorn -b 127.0.0.1:8000 app:app
//	httpbus bridge -url 'nats://127.0.0.1:4222?service=orders' -upstream http://127.0.0.1:8000
//
// Both commands run until SIGTERM or SIGINT, then stop taking requests,
// finish those in flight (up to -drain, 30s) and exit 0.
//
// # serve
//
// serve runs the echo service that bench uses, with GET /download and
// POST /upload for bench -stream, until interrupted, for bench -target or
// for trying call.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK        = 0
	exitFailure   = 1  // a transport or runtime failure
	exitUsage     = 2  // bad flags or arguments
	exitHTTPError = 22 // call -f and a status ≥ 400, as curl -f
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usageText = `usage:
  httpbus call  [-X METHOD] [-H 'K: V'] [-d BODY|@file|@-] [-timeout 10s] [-vhost VHOST] [-o name=value] URL
  httpbus bench -url URL [-c 32] [-d 10s] [-size 256] [-warmup 1s] [-rounds 3] [-raw] [-target SERVICE] [-json]
  httpbus bench -url URL -stream up|down|both [-size BYTES] [-raw] [-target SERVICE] [-json]
  httpbus serve -url URL [-service NAME] [-memprofile FILE] [-cpuprofile FILE]
  httpbus gateway -url URL [-listen 127.0.0.1:8080] [-route path|host] [-allow a,b] [-timeout 30s] [-tls-cert FILE -tls-key FILE]
  httpbus bridge  -url 'URL?service=NAME' -upstream http://HOST:PORT
Run "httpbus COMMAND -h" for a command's flags.
`

// run runs the command line args and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return exitUsage
	}
	switch args[0] {
	case "call":
		return cmdCall(ctx, args[1:], stdin, stdout, stderr)
	case "bench":
		return cmdBench(ctx, args[1:], stdout, stderr)
	case "serve":
		return cmdServe(ctx, args[1:], stdout, stderr)
	case "gateway":
		return cmdGateway(ctx, args[1:], stdout, stderr)
	case "bridge":
		return cmdBridge(ctx, args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usageText)
		return exitOK
	default:
		fmt.Fprintf(stderr, "httpbus: unknown command %q\n%s", args[0], usageText)
		return exitUsage
	}
}
