package transport

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ListenConfig is what a server side needs beyond the broker's address.
// transport.Listen fills it from the URL's query parameters "service" and
// "topics" (comma-separated) and removes them before the backend sees the
// URL.
type ListenConfig struct {
	// Service is the name callers use as the URL host. Required by broker
	// backends; inmem takes it from mem://<service>.
	Service string
	// Topics are the notification topics the service subscribes to. Each
	// notification reaches each subscribing service once, shared among its
	// instances.
	Topics []string
}

// ListenFunc opens a backend's server side from a URL; see Register. On
// error, Listen drops whatever Listener it returns (a typed nil is fine), so
// a backend may return its own constructor's results directly.
type ListenFunc func(ctx context.Context, u *url.URL, cfg ListenConfig) (Listener, error)

// DialFunc opens a backend's client side from a URL; see Register. As with
// ListenFunc, a result returned with an error is dropped.
type DialFunc func(ctx context.Context, u *url.URL) (Conn, error)

type backend struct {
	listen ListenFunc
	dial   DialFunc
}

var (
	registryMu sync.RWMutex
	registry   = map[string]backend{}
)

// Register makes a backend available under a URL scheme (and further
// schemes, such as "tls" for "nats"). Backends call it from init; programs
// pick them with a blank import, as database/sql drivers do. It panics if a
// scheme is registered twice or a function is nil.
func Register(listen ListenFunc, dial DialFunc, schemes ...string) {
	if listen == nil || dial == nil {
		panic("transport: Register with a nil function")
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	for _, s := range schemes {
		s = strings.ToLower(s)
		if _, dup := registry[s]; dup {
			panic("transport: Register called twice for scheme " + s)
		}
		registry[s] = backend{listen: listen, dial: dial}
	}
}

// Schemes returns the registered URL schemes, sorted.
func Schemes() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	out := make([]string, 0, len(registry))
	for s := range registry {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

func lookup(raw string) (*url.URL, backend, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the whole URL, password included: say less.
		return nil, backend{}, fmt.Errorf("transport: malformed URL %q: %v", Redact(raw), unwrapURLError(err))
	}
	if u.Scheme == "" {
		return nil, backend{}, fmt.Errorf("transport: URL %q has no scheme (want one of %s)", u.Redacted(), strings.Join(Schemes(), ", "))
	}
	registryMu.RLock()
	b, ok := registry[strings.ToLower(u.Scheme)]
	registryMu.RUnlock()
	if !ok {
		return nil, backend{}, fmt.Errorf("transport: unknown URL scheme %q in %q (registered: %s; a backend registers with a blank import, such as _ \"github.com/httpbus/httpbus/nats\")", u.Scheme, u.Redacted(), strings.Join(Schemes(), ", "))
	}
	return u, b, nil
}

func unwrapURLError(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}

// Redact returns raw with any password replaced by "xxxxx", for logs and
// errors. A string that does not parse is cut at its userinfo.
func Redact(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		if _, has := u.User.Password(); !has {
			return raw
		}
		return u.Redacted()
	}
	if i := strings.LastIndex(raw, "@"); i >= 0 {
		if j := strings.Index(raw, "://"); j >= 0 && j < i {
			return raw[:j+3] + "xxxxx" + raw[i:]
		}
	}
	return raw
}

// Listen opens the server side of the backend registered for rawURL's
// scheme. Query parameters "service" and "topics" fill ListenConfig; the
// backend documents its other parameters. Errors name the offending part of
// the URL, never its password.
func Listen(ctx context.Context, rawURL string) (Listener, error) {
	u, b, err := lookup(rawURL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	cfg := ListenConfig{Service: q.Get("service")}
	if t := q.Get("topics"); t != "" {
		for _, s := range strings.Split(t, ",") {
			if s = strings.TrimSpace(s); s != "" {
				cfg.Topics = append(cfg.Topics, s)
			}
		}
	}
	q.Del("service")
	q.Del("topics")
	u.RawQuery = q.Encode()
	l, err := b.listen(ctx, u, cfg)
	if err != nil {
		return nil, err // never a backend's typed nil inside the interface
	}
	return l, nil
}

// Dial opens the client side of the backend registered for rawURL's scheme.
func Dial(ctx context.Context, rawURL string) (Conn, error) {
	u, b, err := lookup(rawURL)
	if err != nil {
		return nil, err
	}
	c, err := b.dial(ctx, u)
	if err != nil {
		return nil, err // never a backend's typed nil inside the interface
	}
	return c, nil
}

// Options reads a backend's URL query parameters, collecting the first
// error, and reports parameters nobody read (a misspelt option is an error,
// not silently ignored). Backends use it in their URL openers:
//
//	o := transport.NewOptions("transport/nats", u)
//	prefix := o.String("prefix", "httpbus")
//	if err := o.Err(); err != nil { ... }
type Options struct {
	pkg  string
	u    *url.URL
	q    url.Values
	used map[string]bool
	err  error
}

// NewOptions returns an Options over u's query; pkg prefixes error messages.
func NewOptions(pkg string, u *url.URL) *Options {
	return &Options{pkg: pkg, u: u, q: u.Query(), used: map[string]bool{}}
}

func (o *Options) fail(name, val, want string) {
	if o.err == nil {
		o.err = fmt.Errorf("%s: bad value %q for option %q in URL %q: want %s", o.pkg, val, name, o.u.Redacted(), want)
	}
}

// String returns option name, or def when absent.
func (o *Options) String(name, def string) string {
	o.used[name] = true
	if !o.q.Has(name) {
		return def
	}
	return o.q.Get(name)
}

// Strings returns every value of a repeated or comma-separated option.
func (o *Options) Strings(name string) []string {
	o.used[name] = true
	var out []string
	for _, v := range o.q[name] {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// Int returns option name as a decimal integer, or def.
func (o *Options) Int(name string, def int) int {
	o.used[name] = true
	if !o.q.Has(name) {
		return def
	}
	v := o.q.Get(name)
	n, err := strconv.Atoi(v)
	if err != nil {
		o.fail(name, v, "an integer")
		return def
	}
	return n
}

// Bool returns option name as a boolean (strconv.ParseBool), or def.
func (o *Options) Bool(name string, def bool) bool {
	o.used[name] = true
	if !o.q.Has(name) {
		return def
	}
	v := o.q.Get(name)
	b, err := strconv.ParseBool(v)
	if err != nil {
		o.fail(name, v, "true or false")
		return def
	}
	return b
}

// Duration returns option name as a time.ParseDuration string, or def.
func (o *Options) Duration(name string, def time.Duration) time.Duration {
	o.used[name] = true
	if !o.q.Has(name) {
		return def
	}
	v := o.q.Get(name)
	d, err := time.ParseDuration(v)
	if err != nil {
		o.fail(name, v, "a duration such as 10s")
		return def
	}
	return d
}

// Err returns the first bad value, or names an option that no accessor
// read.
func (o *Options) Err() error {
	if o.err != nil {
		return o.err
	}
	var unknown []string
	for k := range o.q {
		if !o.used[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return fmt.Errorf("%s: unknown option %q in URL %q", o.pkg, unknown[0], o.u.Redacted())
	}
	return nil
}
