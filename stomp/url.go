package stomp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	stompgo "github.com/go-stomp/stomp/v3"

	"github.com/httpbus/httpbus/transport"
)

func init() {
	transport.Register(listenURL, dialURL, "stomp", "stomp+ssl")
}

// Default ports when a URL names none.
const (
	DefaultPort    = "61613"
	DefaultSSLPort = "61614"
)

// urlConfig is what a URL says: a Config with Redial set, and how to dial.
type urlConfig struct {
	cfg  Config
	addr string
	opts []func(*stompgo.Conn) error
	tls  *tls.Config
	u    *url.URL
}

// parseURL reads stomp://[login:passcode@]host[:port][?options] and
// stomp+ssl://…; options are listed in the package documentation. Options
// present in the URL override the fields of base.
func parseURL(u *url.URL, base Config) (*urlConfig, error) {
	const pkg = "transport/stomp"
	scheme := strings.ToLower(u.Scheme)
	if scheme != "stomp" && scheme != "stomp+ssl" {
		return nil, fmt.Errorf("%s: URL %q: scheme must be stomp or stomp+ssl", pkg, u.Redacted())
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%s: URL %q has no host", pkg, u.Redacted())
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("%s: URL %q has a path; the virtual host is the vhost option", pkg, u.Redacted())
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = DefaultPort
		if scheme == "stomp+ssl" {
			port = DefaultSSLPort
		}
	}
	o := transport.NewOptions(pkg, u)
	cfg := base
	switch d := Dialect(strings.ToLower(o.String("dialect", string(base.Dialect)))); d {
	case DialectAuto, DialectActiveMQ, DialectRabbitMQ:
		cfg.Dialect = d
	default:
		return nil, fmt.Errorf("%s: bad value %q for option \"dialect\" in URL %q: want activemq or rabbitmq", pkg, d, u.Redacted())
	}
	cfg.Prefetch = o.Int("prefetch", base.Prefetch)
	const unset = time.Duration(math.MinInt64)
	switch hb := o.Duration("heartbeat", unset); hb {
	case unset:
	case 0:
		cfg.HeartBeat = -1 // heartbeat=0 disables
	default:
		cfg.HeartBeat = hb
	}
	cfg.QueuePrefix = o.String("queue_prefix", base.QueuePrefix)
	cfg.TopicPrefix = o.String("topic_prefix", base.TopicPrefix)
	cfg.MaxFrameBytes = int64(o.Int("max_frame", int(base.MaxFrameBytes)))
	cfg.MaxReconnectWait = o.Duration("reconnect_max", base.MaxReconnectWait)
	vhost := o.String("vhost", "/")
	caFile := o.String("ca_file", "")
	if err := o.Err(); err != nil {
		return nil, err
	}
	if cfg.Prefetch < 0 {
		return nil, fmt.Errorf("%s: bad value for option \"prefetch\" in URL %q: want a positive number", pkg, u.Redacted())
	}
	uc := &urlConfig{cfg: cfg, addr: net.JoinHostPort(host, port), u: u}
	uc.opts = append(ConnOptions(cfg), stompgo.ConnOpt.Host(vhost))
	if u.User != nil {
		pass, _ := u.User.Password()
		uc.opts = append(uc.opts, stompgo.ConnOpt.Login(u.User.Username(), pass))
	}
	if scheme == "stomp+ssl" {
		uc.tls = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				return nil, fmt.Errorf("%s: option ca_file in URL %q: %w", pkg, u.Redacted(), err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%s: option ca_file in URL %q: no PEM certificate in %s", pkg, u.Redacted(), caFile)
			}
			uc.tls.RootCAs = pool
		}
	} else if caFile != "" {
		return nil, fmt.Errorf("%s: option ca_file needs scheme stomp+ssl in URL %q", pkg, u.Redacted())
	}
	return uc, nil
}

// dial opens a TCP (or TLS) connection and performs the STOMP CONNECT.
func (uc *urlConfig) dial(ctx context.Context) (*stompgo.Conn, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, connectTimeout)
		defer cancel()
	}
	var nc net.Conn
	var err error
	if uc.tls != nil {
		d := &tls.Dialer{Config: uc.tls}
		nc, err = d.DialContext(ctx, "tcp", uc.addr)
	} else {
		var d net.Dialer
		nc, err = d.DialContext(ctx, "tcp", uc.addr)
	}
	if err != nil {
		return nil, fmt.Errorf("transport/stomp: dial %s: %w: %w", uc.u.Redacted(), transport.ErrUnavailable, err)
	}
	var rw net.Conn = nc
	if uc.cfg.Dialect != DialectRabbitMQ {
		rw = newFilterConn(nc, uc.cfg.withDefaults().Logger)
	}
	// go-stomp reads the CONNECTED frame without a deadline unless ctx has
	// one; close the socket if ctx ends first.
	stop := context.AfterFunc(ctx, func() { rw.Close() })
	c, err := stompgo.ConnectWithContext(ctx, rw, uc.opts...)
	if !stop() {
		if err == nil {
			c.MustDisconnect()
		}
		rw.Close()
		return nil, fmt.Errorf("transport/stomp: connect to %s: %w: %w", uc.u.Redacted(), transport.ErrUnavailable, transport.ContextError(ctx))
	}
	if err != nil {
		rw.Close()
		var se stompgo.Error
		if errors.As(err, &se) && se.Frame != nil {
			// An ERROR frame: bad credentials, unknown vhost.
			return nil, fmt.Errorf("transport/stomp: connect to %s: broker refused: %s", uc.u.Redacted(), se.Message)
		}
		return nil, fmt.Errorf("transport/stomp: connect to %s: %w: %w", uc.u.Redacted(), transport.ErrUnavailable, err)
	}
	return c, nil
}

func (uc *urlConfig) config() Config {
	cfg := uc.cfg
	cfg.Redial = uc.dial
	return cfg
}

// Dial opens the client side from a URL (see the package documentation);
// cfg supplies what a URL cannot say (Logger) and defaults that the URL's
// options override. The connection is redialled after it is lost.
func Dial(ctx context.Context, rawURL string, cfg Config) (*Conn, error) {
	u, err := parse(rawURL)
	if err != nil {
		return nil, err
	}
	return dialURLConfig(ctx, u, cfg)
}

// Listen opens the server side of lc.Service from a URL, like Dial; the
// query parameters service and topics fill lc where it leaves them empty.
func Listen(ctx context.Context, rawURL string, lc transport.ListenConfig, cfg Config) (*Listener, error) {
	u, err := parse(rawURL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	if lc.Service == "" {
		lc.Service = q.Get("service")
	}
	if len(lc.Topics) == 0 {
		for _, t := range strings.Split(q.Get("topics"), ",") {
			if t = strings.TrimSpace(t); t != "" {
				lc.Topics = append(lc.Topics, t)
			}
		}
	}
	q.Del("service")
	q.Del("topics")
	u.RawQuery = q.Encode()
	return listenURLConfig(ctx, u, lc, cfg)
}

func parse(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("transport/stomp: malformed URL %q", transport.Redact(rawURL))
	}
	return u, nil
}

func listenURL(ctx context.Context, u *url.URL, lc transport.ListenConfig) (transport.Listener, error) {
	return listenURLConfig(ctx, u, lc, Config{})
}

func listenURLConfig(ctx context.Context, u *url.URL, lc transport.ListenConfig, cfg Config) (*Listener, error) {
	uc, err := parseURL(u, cfg)
	if err != nil {
		return nil, err
	}
	if lc.Service == "" {
		return nil, fmt.Errorf("transport/stomp: URL %q has no service parameter (?service=name)", u.Redacted())
	}
	c, err := uc.dial(ctx)
	if err != nil {
		return nil, err
	}
	return newListener(ctx, c, true, lc, uc.config())
}

func dialURL(ctx context.Context, u *url.URL) (transport.Conn, error) {
	return dialURLConfig(ctx, u, Config{})
}

func dialURLConfig(ctx context.Context, u *url.URL, cfg Config) (*Conn, error) {
	uc, err := parseURL(u, cfg)
	if err != nil {
		return nil, err
	}
	c, err := uc.dial(ctx)
	if err != nil {
		return nil, err
	}
	return newConn(ctx, c, true, uc.config())
}
