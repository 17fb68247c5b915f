package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/httpbus/httpbus/transport"
)

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ", ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// usageError is an error in flags or arguments (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// parseFlags parses args with fs, allowing flags after positional arguments
// (httpbus call URL -X POST), and returns the positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// callTarget is a call URL split into what to dial and what to request.
type callTarget struct {
	dialURL string // broker URL for transport.Dial (may hold a password)
	service string
	reqURL  string // http://service/path?query
}

// parseCallURL splits a call URL: scheme://[user:pass@]broker/SERVICE/path?query.
// vhost (amqp only) becomes the dial URL's path; opts (name=value) its query.
func parseCallURL(raw, vhost string, opts []string) (*callTarget, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, usagef("malformed URL %q: %v", transport.Redact(raw), err)
	}
	if u.Scheme == "" {
		return nil, usagef("URL %q has no scheme: want scheme://broker/SERVICE/path, scheme one of %s", u.Redacted(), strings.Join(transport.Schemes(), ", "))
	}
	scheme := strings.ToLower(u.Scheme)
	path := strings.TrimPrefix(u.EscapedPath(), "/")
	var service, rest string
	if scheme == "mem" && u.Host != "" {
		service, rest = u.Host, "/"+path
	} else {
		svc, r, _ := strings.Cut(path, "/")
		if service, err = url.PathUnescape(svc); err != nil {
			return nil, usagef("URL %q: bad service name: %v", u.Redacted(), err)
		}
		rest = "/" + r
	}
	if service == "" {
		return nil, usagef("URL %q names no service: want %s://broker/SERVICE/path", u.Redacted(), u.Scheme)
	}
	if strings.ContainsAny(service, "/?#@ ") {
		return nil, usagef("URL %q: bad service name %q", u.Redacted(), service)
	}
	reqURL := "http://" + service + rest
	if u.RawQuery != "" {
		reqURL += "?" + u.RawQuery
	}
	d := &url.URL{Scheme: u.Scheme, User: u.User, Host: u.Host}
	if vhost != "" {
		if scheme != "amqp" && scheme != "amqps" {
			return nil, usagef("-vhost applies to amqp URLs only, not %s", u.Scheme)
		}
		d.Path = "/" + vhost
		d.RawPath = "/" + url.PathEscape(vhost)
	}
	if scheme == "mem" {
		d.Host = ""
	}
	q := url.Values{}
	for _, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		if !ok || k == "" {
			return nil, usagef("bad -o %q: want name=value", o)
		}
		q.Add(k, v)
	}
	d.RawQuery = q.Encode()
	return &callTarget{dialURL: d.String(), service: service, reqURL: reqURL}, nil
}

func cmdCall(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("call", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: httpbus call [-X METHOD] [-H 'K: V'] [-d BODY|@file|@-] [-timeout 10s] [-vhost VHOST] [-o name=value] URL")
		fmt.Fprintln(stderr, "URL: scheme://broker/SERVICE/path?query, e.g. nats://127.0.0.1:4222/orders/items/42")
		fs.PrintDefaults()
	}
	method := fs.String("X", "", "request `method` (default GET, or POST with -d)")
	var headers, opts listFlag
	fs.Var(&headers, "H", "request `header` 'Name: value' (repeatable)")
	data := fs.String("d", "", "request `body`; @file reads a file, @- standard input")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline of the whole call (it travels with the request); 0 means none")
	vhost := fs.String("vhost", "", "AMQP virtual `host` (amqp URLs only; default the broker's default, \"/\")")
	fs.Var(&opts, "o", "backend URL option `name=value` for dialing (repeatable)")
	fail := fs.Bool("f", false, "exit 22 when the handler's status is 400 or more (as curl -f)")
	maxBody := fs.Int64("max-body", 0, "largest request or response body, `bytes` (0: no limit)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "httpbus call: want exactly one URL")
		fs.Usage()
		return exitUsage
	}
	tgt, err := parseCallURL(pos[0], *vhost, opts)
	if err == nil {
		err = checkScheme(tgt.dialURL)
	}
	if err != nil {
		fmt.Fprintf(stderr, "httpbus call: %v\n", err)
		return exitUsage
	}

	var body []byte
	hasBody := false
	fs.Visit(func(f *flag.Flag) { hasBody = hasBody || f.Name == "d" })
	if hasBody {
		if body, err = readData(*data, stdin); err != nil {
			fmt.Fprintf(stderr, "httpbus call: -d: %v\n", err)
			return exitUsage
		}
	}
	m := *method
	if m == "" {
		m = http.MethodGet
		if hasBody {
			m = http.MethodPost
		}
	}

	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, m, tgt.reqURL, bytes.NewReader(body))
	if err != nil {
		fmt.Fprintf(stderr, "httpbus call: %v\n", err)
		return exitUsage
	}
	if !hasBody {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	for _, h := range headers {
		k, v, ok := strings.Cut(h, ":")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			fmt.Fprintf(stderr, "httpbus call: bad -H %q: want 'Name: value'\n", h)
			return exitUsage
		}
		if strings.EqualFold(k, "Host") {
			fmt.Fprintln(stderr, "httpbus call: -H Host: the URL's first path segment names the service")
			return exitUsage
		}
		req.Header.Add(k, strings.TrimSpace(v))
	}

	conn, err := transport.Dial(ctx, tgt.dialURL)
	if err != nil {
		fmt.Fprintf(stderr, "httpbus call: dial: %v\n", err)
		return exitFailure
	}
	defer conn.Close()
	client := &http.Client{
		Transport:     &transport.RoundTripper{Conn: conn, MaxBodyBytes: *maxBody},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "httpbus call: %s %s: %v\n", m, tgt.reqURL, unwrapClientError(err))
		return exitFailure
	}
	defer resp.Body.Close()
	if msg := resp.Header.Get(transport.HeaderError); msg != "" {
		io.Copy(io.Discard, resp.Body) //nolint:errcheck // the header says it all
		fmt.Fprintf(stderr, "httpbus call: %s %s: %s: %s\n", m, tgt.reqURL, resp.Status, msg)
		return exitFailure
	}
	if err := writeResponse(stdout, resp); err != nil {
		fmt.Fprintf(stderr, "httpbus call: reading the response: %v\n", err)
		return exitFailure
	}
	if *fail && resp.StatusCode >= 400 {
		return exitHTTPError
	}
	return exitOK
}

// unwrapClientError drops http.Client's *url.Error wrapper, which repeats
// the URL.
func unwrapClientError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// readData returns the -d argument: literal text, @file, or @- for stdin.
func readData(v string, stdin io.Reader) ([]byte, error) {
	if name, ok := strings.CutPrefix(v, "@"); ok {
		if name == "-" {
			return io.ReadAll(stdin)
		}
		return os.ReadFile(name)
	}
	return []byte(v), nil
}

// writeResponse prints the status line, the headers sorted by name, a blank
// line and the body.
func writeResponse(w io.Writer, resp *http.Response) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s\n", resp.Proto, resp.Status)
	keys := make([]string, 0, len(resp.Header))
	for k := range resp.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range resp.Header[k] {
			fmt.Fprintf(&b, "%s: %s\n", k, v)
		}
	}
	b.WriteString("\n")
	if _, err := w.Write(b.Bytes()); err != nil {
		return err
	}
	_, err := io.Copy(w, resp.Body)
	return err
}

// checkScheme reports a URL whose scheme no linked backend registered.
func checkScheme(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return usagef("malformed URL %q: want scheme://broker, scheme one of %s", transport.Redact(raw), strings.Join(transport.Schemes(), ", "))
	}
	if !slices.Contains(transport.Schemes(), strings.ToLower(u.Scheme)) {
		return usagef("unknown URL scheme %q in %q: this binary speaks %s", u.Scheme, u.Redacted(), strings.Join(transport.Schemes(), ", "))
	}
	return nil
}
