package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/httpbus/httpbus/gateway"
	"github.com/httpbus/httpbus/transport"
)

// cmdGateway runs an http.Server whose handler is a gateway.Gateway over a
// connection to the bus, until ctx ends (SIGTERM, SIGINT); then it stops
// taking connections, finishes the requests in flight (up to -drain) and
// exits 0.
func cmdGateway(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "`address` to serve HTTP on (port 0: any free port, printed)")
	rawURL := fs.String("url", "", "broker `URL` to dial, as transport.Dial reads it (required)")
	route := fs.String("route", "path", "how a request names its service: path (first path segment, stripped) or host (leftmost Host label)")
	allow := fs.String("allow", "", "comma-separated `services` to expose (default: all; others get 404)")
	timeout := fs.Duration("timeout", gateway.DefaultTimeout, "bound on each request, the deadline its service sees (<0: none)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate `file` (PEM); with -tls-key, serve HTTPS")
	tlsKey := fs.String("tls-key", "", "TLS private key `file` (PEM)")
	readHeader := fs.Duration("read-header-timeout", 10*time.Second, "time to read a request's header (cuts off slow clients)")
	idle := fs.Duration("idle-timeout", 2*time.Minute, "how long an idle keep-alive connection stays open")
	maxHeader := fs.Int("max-header-bytes", 64<<10, "largest request line and header block, `bytes` (over it: 431)")
	maxBody := fs.Int64("max-body", 0, "largest request or response body, `bytes` (0: no limit)")
	drain := fs.Duration("drain", 30*time.Second, "on SIGTERM, how long to wait for requests in flight")
	usage, code, ok := parseNoArgs("gateway", fs, args, stderr)
	if !ok {
		return code
	}
	if *rawURL == "" {
		return usage("-url is required")
	}
	r, err := gateway.ParseRoute(*route)
	if err != nil {
		return usage("-route: %v", err)
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return usage("-tls-cert and -tls-key go together")
	}
	var tlsConfig *tls.Config
	if *tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			return usage("-tls-cert/-tls-key: %v", err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var services []string
	for s := range strings.SplitSeq(*allow, ",") {
		if s = strings.TrimSpace(s); s != "" {
			services = append(services, s)
		}
	}

	logger := slog.New(slog.NewTextHandler(stderr, nil))
	conn, err := transport.Dial(ctx, *rawURL)
	if err != nil {
		fmt.Fprintf(stderr, "httpbus gateway: dial: %v\n", err)
		return exitFailure
	}
	defer conn.Close()
	tl, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "httpbus gateway: %v\n", err)
		return exitFailure
	}
	ln := &closeOnce{Listener: tl}
	srv := &http.Server{
		Handler: &gateway.Gateway{
			Conn: conn, Route: r, Allow: services, Timeout: *timeout, MaxBodyBytes: *maxBody,
			AccessLog: logger, Logger: logger,
		},
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: *readHeader,
		IdleTimeout:       *idle,
		MaxHeaderBytes:    *maxHeader,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	scheme := "http"
	go func() {
		if tlsConfig != nil {
			served <- srv.ServeTLS(ln, "", "")
		} else {
			served <- srv.Serve(ln)
		}
	}()
	if tlsConfig != nil {
		scheme = "https"
	}
	fmt.Fprintf(stdout, "httpbus gateway: listening on %s://%s, routing by %s to %s\n", scheme, ln.Addr(), r, transport.Redact(*rawURL))

	return drainOnSignal(ctx, "gateway", served, stderr, logger, *drain, func() { ln.Close() }, srv.Shutdown, srv.Close)
}

// cmdBridge serves a gateway.Bridge to -upstream as a service on the bus
// until ctx ends (SIGTERM, SIGINT); then it stops taking requests, finishes
// those in flight (up to -drain) and exits 0.
func cmdBridge(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bridge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rawURL := fs.String("url", "", "broker `URL` to listen on, with ?service=NAME (mem://NAME), as transport.Listen reads it (required)")
	upstream := fs.String("upstream", "", "base `URL` of the web app, http://host:port[/prefix] (required)")
	maxInFlight := fs.Int("max-in-flight", 0, "requests forwarded at once (0: transport default, 128)")
	maxBody := fs.Int64("max-body", 0, "largest request or response body, `bytes` (0: no limit)")
	drain := fs.Duration("drain", 30*time.Second, "on SIGTERM, how long to wait for requests in flight")
	usage, code, ok := parseNoArgs("bridge", fs, args, stderr)
	if !ok {
		return code
	}
	if *rawURL == "" || *upstream == "" {
		return usage("-url and -upstream are required")
	}
	up, err := url.Parse(*upstream)
	if err != nil || (up.Scheme != "http" && up.Scheme != "https") || up.Host == "" {
		return usage("-upstream %q: want http://host:port or https://host:port", transport.Redact(*upstream))
	}

	logger := slog.New(slog.NewTextHandler(stderr, nil))
	l, err := transport.Listen(ctx, *rawURL)
	if err != nil {
		fmt.Fprintf(stderr, "httpbus bridge: listen: %v\n", err)
		return exitFailure
	}
	srv := &transport.Server{
		Handler:      &gateway.Bridge{Upstream: up, AccessLog: logger, Logger: logger},
		MaxInFlight:  *maxInFlight,
		MaxBodyBytes: *maxBody,
		Logger:       logger,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	fmt.Fprintf(stdout, "httpbus bridge: serving %s on %s\n", up.Redacted(), transport.Redact(*rawURL))

	return drainOnSignal(ctx, "bridge", served, stderr, logger, *drain, func() {}, srv.Shutdown, func() error {
		l.Close()
		return srv.Close()
	})
}

// closeOnce is a net.Listener whose Close closes it once and returns nil
// afterwards, so that the gateway can stop accepting before
// http.Server.Shutdown closes it again.
type closeOnce struct {
	net.Listener
	once sync.Once
	err  error
}

func (c *closeOnce) Close() error {
	c.once.Do(func() { c.err = c.Listener.Close() })
	return c.err
}

// parseNoArgs parses args into fs for command name, which takes flags only.
// It returns a printer of usage errors (exit code exitUsage), or ok false
// with the code to exit with (exitOK for -h, exitUsage for a bad flag or an
// argument).
func parseNoArgs(name string, fs *flag.FlagSet, args []string, stderr io.Writer) (usage func(format string, a ...any) int, code int, ok bool) {
	usage = func(format string, a ...any) int {
		fmt.Fprintf(stderr, "httpbus "+name+": "+format+"\n", a...)
		return exitUsage
	}
	pos, err := parseFlags(fs, args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return usage, exitOK, false
	case err != nil:
		return usage, exitUsage, false
	case len(pos) > 0:
		return usage, usage("unexpected argument %q", pos[0]), false
	}
	return usage, 0, true
}

// drainOnSignal waits until the server fails (served; then close and exit
// 1) or ctx ends (SIGTERM, SIGINT): then it stops intake (stopIntake), logs
// that it drains, and shuts down within drain. Exit codes: exitOK after a
// clean drain, exitFailure otherwise.
func drainOnSignal(ctx context.Context, name string, served <-chan error, stderr io.Writer, logger *slog.Logger, drain time.Duration,
	stopIntake func(), shutdown func(context.Context) error, closeNow func() error) int {
	select {
	case err := <-served:
		closeNow()
		fmt.Fprintf(stderr, "httpbus %s: %v\n", name, err)
		return exitFailure
	case <-ctx.Done():
	}
	stopIntake() // refuse new work before saying so
	logger.Info("httpbus "+name+": draining", "drain", drain)
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drain)
	defer cancel()
	if err := shutdown(dctx); err != nil {
		fmt.Fprintf(stderr, "httpbus %s: shutdown: %v\n", name, err)
		closeNow()
		return exitFailure
	}
	<-served
	return exitOK
}
