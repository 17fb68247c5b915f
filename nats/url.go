package nats

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/httpbus/httpbus/transport"
)

func init() {
	transport.Register(listenURL, dialURL, "nats", "tls")
}

// Defaults of the URL openers.
const (
	DefaultReconnectWait  = time.Second
	DefaultConnectTimeout = 5 * time.Second
)

// dialSpec is what a URL says about the connection.
type dialSpec struct {
	servers []string
	opts    []natsgo.Option
	cfg     Config
	timeout time.Duration
}

// parseURL reads u; its options override base's fields, which fill in the
// rest (Logger, InboxPendingBytes).
func parseURL(u *url.URL, defaultName string, base Config) (*dialSpec, error) {
	const pkg = "transport/nats"
	scheme := strings.ToLower(u.Scheme)
	if u.Host == "" {
		return nil, fmt.Errorf("%s: URL %q has no host", pkg, u.Redacted())
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("%s: URL %q has a path; NATS URLs have none (use ?prefix= for the subject prefix)", pkg, u.Redacted())
	}
	o := transport.NewOptions(pkg, u)
	sp := &dialSpec{cfg: base}
	sp.cfg.Prefix = o.String("prefix", base.Prefix)
	sp.cfg.Queue = o.String("queue", base.Queue)
	sp.cfg.PendingMsgs = o.Int("pending_msgs", base.PendingMsgs)
	sp.cfg.PendingBytes = int64(o.Int("pending_bytes", int(base.PendingBytes)))
	name := o.String("name", defaultName)
	creds := o.String("creds", "")
	nkey := o.String("nkey", "")
	tlsCA := o.Strings("tls_ca")
	tlsCert := o.String("tls_cert", "")
	tlsKey := o.String("tls_key", "")
	tlsServerName := o.String("tls_server_name", "")
	reconnectWait := o.Duration("reconnect_wait", DefaultReconnectWait)
	maxReconnects := o.Int("max_reconnects", -1)
	sp.timeout = o.Duration("connect_timeout", DefaultConnectTimeout)
	if err := o.Err(); err != nil {
		return nil, err
	}
	if (tlsCert == "") != (tlsKey == "") {
		return nil, fmt.Errorf("%s: URL %q: tls_cert and tls_key go together", pkg, u.Redacted())
	}
	if sp.cfg.Prefix != "" {
		if err := checkSubject("prefix", sp.cfg.Prefix); err != nil {
			return nil, err
		}
	}
	for _, h := range strings.Split(u.Host, ",") {
		if h = strings.TrimSpace(h); h != "" {
			sp.servers = append(sp.servers, scheme+"://"+h)
		}
	}
	msgs, _ := sp.cfg.pending(0)
	sp.opts = append(sp.opts,
		natsgo.Name(name),
		natsgo.MaxReconnects(maxReconnects),
		natsgo.ReconnectWait(reconnectWait),
		natsgo.SyncQueueLen(msgs),
	)
	if u.User != nil {
		user := u.User.Username()
		if pass, ok := u.User.Password(); ok {
			sp.opts = append(sp.opts, natsgo.UserInfo(user, pass))
		} else {
			sp.opts = append(sp.opts, natsgo.Token(user))
		}
	}
	if creds != "" {
		sp.opts = append(sp.opts, natsgo.UserCredentials(creds))
	}
	if nkey != "" {
		opt, err := natsgo.NkeyOptionFromSeed(nkey)
		if err != nil {
			return nil, fmt.Errorf("%s: nkey seed file %q: %w", pkg, nkey, err)
		}
		sp.opts = append(sp.opts, opt)
	}
	if scheme == "tls" || len(tlsCA) > 0 || tlsCert != "" || tlsServerName != "" {
		sp.opts = append(sp.opts, natsgo.Secure(&tls.Config{MinVersion: tls.VersionTLS12, ServerName: tlsServerName}))
		if len(tlsCA) > 0 {
			sp.opts = append(sp.opts, natsgo.RootCAs(tlsCA...))
		}
		if tlsCert != "" {
			sp.opts = append(sp.opts, natsgo.ClientCert(tlsCert, tlsKey))
		}
	}
	return sp, nil
}

// connect opens the connection described by sp, logging its disconnects,
// reconnects and asynchronous errors to sp.cfg's Logger (else slog.Default()).
func (sp *dialSpec) connect(ctx context.Context, redacted string) (*natsgo.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, transport.ContextError(ctx)
	}
	timeout := sp.timeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	log := sp.cfg.logger()
	opts := append([]natsgo.Option{
		natsgo.Timeout(timeout),
		natsgo.DisconnectErrHandler(func(nc *natsgo.Conn, err error) {
			if err != nil {
				log.Warn("transport/nats: disconnected", "url", redacted, "err", err)
			}
		}),
		natsgo.ReconnectHandler(func(nc *natsgo.Conn) {
			log.Info("transport/nats: reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		natsgo.ErrorHandler(func(nc *natsgo.Conn, s *natsgo.Subscription, err error) {
			subject := ""
			if s != nil {
				subject = s.Subject
			}
			log.Warn("transport/nats: asynchronous error", "subject", subject, "err", err)
		}),
	}, sp.opts...)
	nc, err := natsgo.Connect(strings.Join(sp.servers, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("transport/nats: connect to %q: %w: %w", redacted, transport.ErrUnavailable, err)
	}
	return nc, nil
}

func listenURL(ctx context.Context, u *url.URL, lc transport.ListenConfig) (transport.Listener, error) {
	return listen(ctx, u, lc, Config{})
}

func dialURL(ctx context.Context, u *url.URL) (transport.Conn, error) {
	return dial(ctx, u, Config{})
}

// Listen connects to the NATS servers of rawURL (nats:// or tls://, see the
// package doc, # URLs) and serves lc.Service, subscribed to lc.Topics. The
// URL's options override cfg's fields, which supply the rest (Logger,
// InboxPendingBytes). The Listener owns the connection: Close closes it.
// The connection is made before Listen returns, within ctx and the URL's
// connect_timeout. Errors: a malformed URL or option, an empty or invalid
// service or topic name, transport.ErrUnavailable when no server answers,
// a failed subscription.
func Listen(ctx context.Context, rawURL string, lc transport.ListenConfig, cfg Config) (*Listener, error) {
	u, err := parse(rawURL)
	if err != nil {
		return nil, err
	}
	return listen(ctx, u, lc, cfg)
}

// Dial connects to the NATS servers of rawURL, as Listen does, and returns
// the client side; the Conn owns the connection: Close closes it. Errors: a
// malformed URL or option, transport.ErrUnavailable when no server answers.
func Dial(ctx context.Context, rawURL string, cfg Config) (*Conn, error) {
	u, err := parse(rawURL)
	if err != nil {
		return nil, err
	}
	return dial(ctx, u, cfg)
}

func parse(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("transport/nats: malformed URL %q", transport.Redact(rawURL))
	}
	return u, nil
}

// listen opens a Listener from a URL:
// nats://[user:pass@]host:port[,host:port...]?prefix=&queue=&...
func listen(ctx context.Context, u *url.URL, lc transport.ListenConfig, cfg Config) (*Listener, error) {
	if err := checkService(lc.Service); err != nil {
		return nil, fmt.Errorf("%w (set ?service= in the URL)", err)
	}
	sp, err := parseURL(u, "httpbus "+lc.Service, cfg)
	if err != nil {
		return nil, err
	}
	nc, err := sp.connect(ctx, u.Redacted())
	if err != nil {
		return nil, err
	}
	l, err := newListener(nc, true, lc, sp.cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return l, nil
}

// dial opens a Conn from a URL.
func dial(ctx context.Context, u *url.URL, cfg Config) (*Conn, error) {
	sp, err := parseURL(u, "httpbus client", cfg)
	if err != nil {
		return nil, err
	}
	nc, err := sp.connect(ctx, u.Redacted())
	if err != nil {
		return nil, err
	}
	c, err := newConn(nc, sp.cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	c.own = true
	return c, nil
}
