package amqp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/httpbus/httpbus/transport"
)

// Defaults for the zero fields of Config.
const (
	// DefaultExchange is the topic exchange notifications are published to.
	DefaultExchange = "httpbus.notify"
	// DefaultPrefetch is the channel prefetch (basic.qos) of a Listener: the
	// number of unacknowledged deliveries the broker hands it at once, per
	// consumer. It matches transport.DefaultMaxInFlight.
	DefaultPrefetch = transport.DefaultMaxInFlight
	// DefaultMaxMessageBytes is RabbitMQ's default max_message_size
	// (128 MiB).
	DefaultMaxMessageBytes = 128 << 20
	// DefaultReconnectMin and DefaultReconnectMax bound the exponential
	// backoff between reconnection attempts (with ±50 % jitter).
	DefaultReconnectMin = 100 * time.Millisecond
	DefaultReconnectMax = 5 * time.Second
	// DefaultSetupTimeout bounds one connection attempt: TCP, TLS and AMQP
	// handshakes, opening channels and declaring the topology.
	DefaultSetupTimeout = 30 * time.Second
	// NotifyQueueSuffix is appended to a service's request queue name to
	// form its notification queue name. A service name is a URL host and
	// cannot contain ":", so the two never collide.
	NotifyQueueSuffix = ":notify"
	// DirectReplyTo is RabbitMQ's direct reply-to pseudo-queue.
	DirectReplyTo = "amq.rabbitmq.reply-to"
)

// Config configures a Listener or a Conn. The zero value is usable; each
// field says what zero means.
type Config struct {
	// QueuePrefix is prepended to a service name to form its request queue
	// name. Zero ("") means the queue is named after the service.
	QueuePrefix string

	// Transient declares the queues non-durable and publishes notifications
	// non-persistent. Zero (false) means durable queues and persistent
	// notifications, so that notifications survive a broker restart. The
	// notification exchange is always durable (so that both kinds of
	// service share it); requests are always non-persistent, as their reply
	// path does not survive a restart.
	Transient bool

	// Prefetch is the Listener's basic.qos prefetch count, applied per
	// consumer (the request queue, and the notification queue when the
	// service subscribes to topics): the in-flight limit the broker
	// enforces. Zero means the in-flight bound of the transport.Server that
	// serves the Listener (Listener.SetPrefetch), and DefaultPrefetch
	// before a Server serves it; negative means no limit. A non-zero value
	// (or prefetch= in the URL) is kept whatever the Server's bound.
	Prefetch int

	// Exchange is the topic exchange notifications are published to and
	// notification queues are bound to. Zero means DefaultExchange.
	Exchange string

	// DeadLetterExchange, when set, is declared as the
	// x-dead-letter-exchange argument of the queues a Listener declares:
	// rejected deliveries (undecodable frames) and expired requests go
	// there. Zero means none: they are dropped.
	DeadLetterExchange string

	// MaxMessageBytes is the largest message body sent, in bytes: the
	// broker's max_message_size. A larger request or response is answered
	// 413 before sending. Zero means DefaultMaxMessageBytes; negative means
	// no limit.
	MaxMessageBytes int64

	// ConnectionName is advertised as the connection_name client property
	// (shown by the management UI and rabbitmqctl list_connections). Zero
	// means "httpbus listener <service>" or "httpbus client".
	ConnectionName string

	// ReconnectMin and ReconnectMax bound the capped exponential backoff
	// (factor 2, ±50 % jitter) between reconnection attempts. Zero means
	// DefaultReconnectMin and DefaultReconnectMax.
	ReconnectMin, ReconnectMax time.Duration

	// SetupTimeout bounds one connection attempt (dial, TLS, AMQP
	// handshake, channels, topology). Zero means DefaultSetupTimeout.
	SetupTimeout time.Duration

	// AMQP is the amqp091 configuration used when this package dials
	// (Listen, Dial): TLSClientConfig, SASL, Heartbeat, Vhost, Properties.
	// Dial and Recovery are replaced: this package dials with a context and
	// owns reconnection.
	AMQP amqp091.Config

	// Logger receives connection losses, reconnections and dropped
	// replies; nil means slog.Default().
	Logger *slog.Logger
}

func (c *Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

func (c *Config) exchange() string {
	if c.Exchange == "" {
		return DefaultExchange
	}
	return c.Exchange
}

func (c *Config) prefetch() int {
	switch {
	case c.Prefetch == 0:
		return DefaultPrefetch
	case c.Prefetch < 0:
		return 0
	}
	return c.Prefetch
}

func (c *Config) maxMessageBytes() int64 {
	switch {
	case c.MaxMessageBytes == 0:
		return DefaultMaxMessageBytes
	case c.MaxMessageBytes < 0:
		return 0
	}
	return c.MaxMessageBytes
}

func (c *Config) setupTimeout() time.Duration {
	if c.SetupTimeout > 0 {
		return c.SetupTimeout
	}
	return DefaultSetupTimeout
}

func (c *Config) backoffBounds() (time.Duration, time.Duration) {
	lo, hi := c.ReconnectMin, c.ReconnectMax
	if lo <= 0 {
		lo = DefaultReconnectMin
	}
	if hi <= 0 {
		hi = DefaultReconnectMax
	}
	if hi < lo {
		hi = lo
	}
	return lo, hi
}

// queue returns the request queue of service.
func (c *Config) queue(service string) string { return c.QueuePrefix + service }

func checkName(what, name string) error {
	if name == "" {
		return fmt.Errorf("transport/amqp: empty %s name", what)
	}
	if len(name) > 255 {
		return fmt.Errorf("transport/amqp: %s name %.40q… is longer than 255 bytes", what, name)
	}
	if strings.HasPrefix(name, "amq.") {
		return fmt.Errorf("transport/amqp: %s name %q uses the reserved prefix \"amq.\"", what, name)
	}
	return nil
}

func randomID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// amqpOptions are the URL query parameters amqp091.ParseURI reads itself;
// they are passed through.
var amqpOptions = []string{"heartbeat", "connection_timeout", "channel_max", "certfile", "keyfile", "cacertfile", "server_name_indication", "auth_mechanism"}

// ParseURL reads this package's options from an amqp:// or amqps:// URL
// (see the package doc, # URLs) into cfg and returns the URL to dial, with
// only the query parameters amqp091 reads itself. Errors name the option
// and the redacted URL.
func ParseURL(raw string) (dialURL string, cfg Config, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", cfg, fmt.Errorf("transport/amqp: malformed URL %q", transport.Redact(raw))
	}
	return parseURL(u)
}

func parseURL(u *url.URL) (string, Config, error) {
	var cfg Config
	o := transport.NewOptions("transport/amqp", u)
	cfg.QueuePrefix = o.String("queue_prefix", "")
	cfg.Transient = !o.Bool("durable", true)
	cfg.Prefetch = o.Int("prefetch", DefaultPrefetch)
	if cfg.Prefetch == 0 {
		cfg.Prefetch = -1 // prefetch=0 in a URL means what it means in AMQP: no limit
	}
	cfg.Exchange = o.String("exchange", DefaultExchange)
	cfg.DeadLetterExchange = o.String("dead_letter_exchange", "")
	cfg.MaxMessageBytes = int64(o.Int("max_message_size", DefaultMaxMessageBytes))
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = -1
	}
	cfg.ConnectionName = o.String("connection_name", "")
	cfg.ReconnectMin = o.Duration("reconnect_min", DefaultReconnectMin)
	cfg.ReconnectMax = o.Duration("reconnect_max", DefaultReconnectMax)
	cfg.SetupTimeout = o.Duration("setup_timeout", DefaultSetupTimeout)
	q := u.Query()
	pass := url.Values{}
	for _, k := range amqpOptions {
		o.String(k, "")
		if q.Has(k) {
			pass[k] = q[k]
		}
	}
	if err := o.Err(); err != nil {
		return "", cfg, err
	}
	if s := strings.ToLower(u.Scheme); s != "amqp" && s != "amqps" {
		return "", cfg, fmt.Errorf("transport/amqp: URL %q: scheme must be amqp or amqps", u.Redacted())
	}
	v := *u
	v.RawQuery = pass.Encode()
	v.Fragment = ""
	if _, err := amqp091.ParseURI(v.String()); err != nil {
		return "", cfg, fmt.Errorf("transport/amqp: URL %q: %v", u.Redacted(), err)
	}
	return v.String(), cfg, nil
}

// dial opens one connection to rawURL within ctx. Errors never include the
// password: they name the redacted URL.
func dial(ctx context.Context, rawURL string, cfg *Config, name string) (*amqp091.Connection, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.setupTimeout())
	defer cancel()
	ac := cfg.AMQP
	ac.Recovery = nil
	if ac.TLSClientConfig != nil {
		ac.TLSClientConfig = ac.TLSClientConfig.Clone()
	}
	props := amqp091.NewConnectionProperties()
	for k, v := range cfg.AMQP.Properties {
		props[k] = v
	}
	if _, ok := props["connection_name"]; !ok || cfg.ConnectionName != "" {
		props["connection_name"] = name
	}
	ac.Properties = props
	var stop func() bool
	ac.Dial = func(network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		dl, _ := ctx.Deadline()
		c.SetDeadline(dl) // the handshake's deadline; amqp091 clears it once open
		// amqp091 runs the TLS and AMQP handshakes without a context:
		// close the socket if ctx ends meanwhile.
		bc := newBatchConn(c)
		stop = context.AfterFunc(ctx, func() { bc.Close() })
		return bc, nil
	}
	c, err := amqp091.DialConfig(rawURL, ac)
	if stop != nil {
		stop()
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("transport/amqp: connect to %q: %w: %w", transport.Redact(rawURL), transport.ErrUnavailable, context.Cause(ctx))
		}
		return nil, fmt.Errorf("transport/amqp: connect to %q: %w: %w", transport.Redact(rawURL), transport.ErrUnavailable, err)
	}
	if ctx.Err() != nil {
		closeConn(c)
		return nil, fmt.Errorf("transport/amqp: connect to %q: %w: %w", transport.Redact(rawURL), transport.ErrUnavailable, context.Cause(ctx))
	}
	return c, nil
}

func queryOf(raw string) url.Values {
	u, err := url.Parse(raw)
	if err != nil {
		return url.Values{}
	}
	return u.Query()
}
