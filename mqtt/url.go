package mqtt

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/autopaho"

	"github.com/httpbus/httpbus/transport"
)

func init() {
	transport.Register(listenURL, dialURL, "mqtt", "mqtts")
}

// DefaultConnectTimeout bounds the first connection of Listen and Dial
// when ctx has no earlier deadline (option connect_timeout).
const DefaultConnectTimeout = 10 * time.Second

// Listen connects to the MQTT 5 broker(s) of rawURL (mqtt:// or mqtts://,
// see the package doc, # URLs) and serves lc.Service as NewListener does.
// The URL's options override cfg's fields, which supply the rest
// (Logger, and any field the URL leaves out). The first connection is made
// before Listen returns, within ctx and connect_timeout. Errors: a
// malformed URL or option, and those of NewListener.
func Listen(ctx context.Context, rawURL string, lc transport.ListenConfig, cfg Config) (*Listener, error) {
	u, err := parse(rawURL)
	if err != nil {
		return nil, err
	}
	return listen(ctx, u, lc, cfg)
}

// Dial connects to the broker(s) of rawURL, as Listen does, and returns the
// client side (see NewConn). Errors: a malformed URL or option, and those
// of NewConn.
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
		return nil, fmt.Errorf("transport/mqtt: malformed URL %q", transport.Redact(rawURL))
	}
	return u, nil
}

func listenURL(ctx context.Context, u *url.URL, lc transport.ListenConfig) (transport.Listener, error) {
	return listen(ctx, u, lc, Config{})
}

func dialURL(ctx context.Context, u *url.URL) (transport.Conn, error) {
	return dial(ctx, u, Config{})
}

func listen(ctx context.Context, u *url.URL, lc transport.ListenConfig, cfg Config) (*Listener, error) {
	ac, cfg, timeout, err := parseURL(u, cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return NewListener(ctx, ac, lc, cfg)
}

func dial(ctx context.Context, u *url.URL, cfg Config) (*Conn, error) {
	ac, cfg, timeout, err := parseURL(u, cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return NewConn(ctx, ac, cfg)
}

// parseURL reads mqtt[s]://[user:pass@]host:port[,host:port…]?options over
// base: an option in the URL overrides base's field.
func parseURL(u *url.URL, base Config) (autopaho.ClientConfig, Config, time.Duration, error) {
	const pkg = "transport/mqtt"
	var ac autopaho.ClientConfig
	cfg := base
	if u.Host == "" {
		return ac, cfg, 0, fmt.Errorf("%s: URL %q has no host", pkg, u.Redacted())
	}
	if u.Path != "" && u.Path != "/" {
		return ac, cfg, 0, fmt.Errorf("%s: URL %q has a path; MQTT URLs have none (use ?prefix= for the topic prefix)", pkg, u.Redacted())
	}
	o := transport.NewOptions(pkg, u)
	cfg.Prefix = o.String("prefix", base.Prefix)
	cfg.Group = o.String("group", base.Group)
	cfg.ClientID = o.String("client_id", base.ClientID)
	cfg.SessionExpiry = o.Duration("session_expiry", base.SessionExpiry)
	cfg.ReceiveMaximum = uint16(o.Int("receive_maximum", int(base.ReceiveMaximum)))
	cfg.NoQuickAck = !o.Bool("quick_ack", !base.NoQuickAck)
	ac.KeepAlive = uint16(o.Int("keepalive", DefaultKeepAlive))
	timeout := o.Duration("connect_timeout", DefaultConnectTimeout)
	scheme := strings.ToLower(u.Scheme)
	tc, err := o.TLS(scheme == "mqtts")
	if err == nil {
		err = o.Err()
	}
	if err != nil {
		return ac, cfg, 0, err
	}
	if tc != nil {
		scheme, ac.TlsCfg = "mqtts", tc
	}
	if u.User != nil {
		p, _ := u.User.Password()
		ac.ConnectUsername, ac.ConnectPassword = u.User.Username(), []byte(p)
	}
	for _, h := range strings.Split(u.Host, ",") {
		if h = strings.TrimSpace(h); h != "" {
			ac.ServerUrls = append(ac.ServerUrls, &url.URL{Scheme: scheme, Host: h})
		}
	}
	return ac, cfg, timeout, nil
}
