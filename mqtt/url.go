package mqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/autopaho"

	"github.com/httpbus/httpbus/transport"
)

func init() {
	transport.Register(listenURL, dialURL, "mqtt", "mqtts")
}

// DefaultConnectTimeout bounds the first connection of a URL opener when
// its ctx has no earlier deadline.
const DefaultConnectTimeout = 10 * time.Second

// parseURL reads mqtt[s]://[user:pass@]host:port[,host:port…]?options.
func parseURL(u *url.URL) ([]*url.URL, autopaho.ClientConfig, Config, time.Duration, error) {
	const pkg = "transport/mqtt"
	var ac autopaho.ClientConfig
	var cfg Config
	if u.Host == "" {
		return nil, ac, cfg, 0, fmt.Errorf("%s: URL %q has no host", pkg, u.Redacted())
	}
	if u.Path != "" && u.Path != "/" {
		return nil, ac, cfg, 0, fmt.Errorf("%s: URL %q has a path; MQTT URLs have none (use ?prefix= for the topic prefix)", pkg, u.Redacted())
	}
	o := transport.NewOptions(pkg, u)
	cfg.Prefix = o.String("prefix", "")
	cfg.Group = o.String("group", "")
	cfg.ClientID = o.String("client_id", "")
	cfg.SessionExpiry = o.Duration("session_expiry", 0)
	cfg.ReceiveMaximum = uint16(o.Int("receive_maximum", 0))
	cfg.NoQuickAck = !o.Bool("quick_ack", true)
	ac.KeepAlive = uint16(o.Int("keepalive", DefaultKeepAlive))
	timeout := o.Duration("connect_timeout", DefaultConnectTimeout)
	tlsCA := o.String("tls_ca", "")
	tlsCert, tlsKey := o.String("tls_cert", ""), o.String("tls_key", "")
	tlsServerName := o.String("tls_server_name", "")
	if err := o.Err(); err != nil {
		return nil, ac, cfg, 0, err
	}
	if (tlsCert == "") != (tlsKey == "") {
		return nil, ac, cfg, 0, fmt.Errorf("%s: URL %q: tls_cert and tls_key go together", pkg, u.Redacted())
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme == "mqtts" || tlsCA != "" || tlsCert != "" || tlsServerName != "" {
		scheme = "mqtts"
		ac.TlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: tlsServerName}
		if tlsCA != "" {
			pem, err := os.ReadFile(tlsCA)
			if err != nil {
				return nil, ac, cfg, 0, fmt.Errorf("%s: tls_ca: %w", pkg, err)
			}
			ac.TlsCfg.RootCAs = x509.NewCertPool()
			if !ac.TlsCfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, ac, cfg, 0, fmt.Errorf("%s: tls_ca %q has no PEM certificate", pkg, tlsCA)
			}
		}
		if tlsCert != "" {
			cert, err := tls.LoadX509KeyPair(tlsCert, tlsKey)
			if err != nil {
				return nil, ac, cfg, 0, fmt.Errorf("%s: tls_cert/tls_key: %w", pkg, err)
			}
			ac.TlsCfg.Certificates = []tls.Certificate{cert}
		}
	}
	if u.User != nil {
		ac.ConnectUsername = u.User.Username()
		if p, ok := u.User.Password(); ok {
			ac.ConnectPassword = []byte(p)
		}
	}
	var servers []*url.URL
	for _, h := range strings.Split(u.Host, ",") {
		if h = strings.TrimSpace(h); h != "" {
			servers = append(servers, &url.URL{Scheme: scheme, Host: h})
		}
	}
	return servers, ac, cfg, timeout, nil
}

// listenURL opens a Listener from a URL.
func listenURL(ctx context.Context, u *url.URL, lc transport.ListenConfig) (transport.Listener, error) {
	servers, ac, cfg, timeout, err := parseURL(u)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	l, err := Listen(ctx, servers, ac, lc, cfg)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// dialURL opens a Conn from a URL.
func dialURL(ctx context.Context, u *url.URL) (transport.Conn, error) {
	servers, ac, cfg, timeout, err := parseURL(u)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := Dial(ctx, servers, ac, cfg)
	if err != nil {
		return nil, err
	}
	return c, nil
}
