package stomp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	stompgo "github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"

	"github.com/httpbus/httpbus/transport"
)

// Dialect names the broker's STOMP rules where brokers differ: temporary
// reply queues, notification fan-out and NACK.
type Dialect string

const (
	// DialectAuto (the zero value) detects the dialect from the server
	// header of the CONNECTED frame: "ActiveMQ/…" or "RabbitMQ/…"; any other
	// server is treated as ActiveMQ, with a warning.
	DialectAuto Dialect = ""
	// DialectActiveMQ is Apache ActiveMQ 5.x ("Classic").
	DialectActiveMQ Dialect = "activemq"
	// DialectRabbitMQ is RabbitMQ's STOMP plugin.
	DialectRabbitMQ Dialect = "rabbitmq"
)

// Frame limits of the brokers, in bytes: the defaults of Config.MaxFrameBytes.
const (
	// ActiveMQMaxFrameBytes is ActiveMQ's transport.maxFrameSize as
	// scripts/start-brokers.sh configures it (10 MiB). Past it ActiveMQ
	// drops the TCP connection without an ERROR frame.
	ActiveMQMaxFrameBytes = 10 << 20
	// RabbitMQMaxFrameBytes is what RabbitMQ 3.10's STOMP plugin was
	// measured to take (64 MiB; its messages are capped at 128 MiB).
	RabbitMQMaxFrameBytes = 64 << 20
	// HeaderReserve is the part of a frame kept for STOMP headers:
	// MaxMessageBytes is the frame limit minus HeaderReserve.
	HeaderReserve = 64 << 10
)

// Defaults applied where a Config field is zero.
const (
	DefaultQueuePrefix      = "/queue/"
	DefaultTopicPrefix      = "/topic/"
	DefaultHeartBeat        = 10 * time.Second
	DefaultMinReconnectWait = 100 * time.Millisecond
	DefaultMaxReconnectWait = 5 * time.Second
)

// STOMP header names of the binding (docs/wire/stomp.md). The routing
// headers of package transport travel under their own names, lower case.
const (
	hdrCorrelationID = "correlation-id"
	hdrReplyTo       = "reply-to"
	hdrExpires       = "expires"    // ActiveMQ: absolute expiry, Unix ms (JMSExpiration)
	hdrExpiration    = "expiration" // RabbitMQ: per-message TTL, ms from now
	hdrRedelivered   = "redelivered"
	hdrDeadline      = "httpbus-deadline" // transport.HeaderDeadline
	hdrVersion       = "httpbus-version"  // transport.HeaderVersion
)

// Config configures a Listener or Conn. The zero value is usable: dialect
// detected, destinations /queue/<service> and /topic/<topic>, prefetch
// transport.DefaultMaxInFlight, 10 s heart-beats, the broker's frame limit,
// and no reconnection (a lost connection is final) unless Redial is set.
type Config struct {
	// Dialect selects the broker's rules; DialectAuto (zero) detects them on
	// every (re)connection from the CONNECTED frame's server header.
	Dialect Dialect

	// QueuePrefix is prepended to a service name to make its request
	// destination. Zero means "/queue/".
	QueuePrefix string

	// TopicPrefix is prepended to notification destinations: publishers
	// send to TopicPrefix+topic (RabbitMQ) or TopicPrefix+"VirtualTopic."+topic
	// (ActiveMQ). Zero means "/topic/".
	TopicPrefix string

	// Prefetch is the number of unacknowledged messages the broker sends a
	// Listener per subscription (activemq.prefetchSize, prefetch-count): the
	// in-flight limit seen from the broker. Zero means the in-flight bound
	// of the transport.Server that serves the Listener (Listener.SetPrefetch),
	// and transport.DefaultMaxInFlight (128) before a Server serves it. A
	// value set here (or prefetch= in the URL) is kept whatever the bound.
	Prefetch int

	// HeartBeat is the STOMP heart-beat interval asked of the broker in both
	// directions; heart-beats are sent every HeartBeat/2 and a connection
	// silent for 2.25×HeartBeat is declared dead and replaced. Zero means DefaultHeartBeat (10 s); negative disables
	// heart-beats (a dead broker is then noticed only by TCP). Only
	// connections this package dials use it (see ConnOptions).
	HeartBeat time.Duration

	// MaxFrameBytes is the largest STOMP frame the broker accepts, in
	// bytes. Zero means the dialect's: ActiveMQMaxFrameBytes for ActiveMQ
	// and unknown brokers, RabbitMQMaxFrameBytes for RabbitMQ; negative
	// means no limit. Bodies over MaxFrameBytes-HeaderReserve are refused
	// before sending (transport.SizeLimiter → 413).
	MaxFrameBytes int64

	// Redial opens a replacement connection after the current one is lost
	// (socket drop, missed heart-beats, ERROR frame, broker restart); the
	// Listener subscribes again and the Conn resumes. It is retried with
	// exponential backoff between MinReconnectWait and MaxReconnectWait
	// until it succeeds or the Listener or Conn is closed. Nil means no
	// reconnection: after a loss every call fails with
	// transport.ErrUnavailable. URL openers set it.
	Redial func(ctx context.Context) (*stompgo.Conn, error)

	// MinReconnectWait and MaxReconnectWait bound the backoff between
	// Redial attempts. Zero means DefaultMinReconnectWait (100 ms) and
	// DefaultMaxReconnectWait (5 s).
	MinReconnectWait time.Duration
	MaxReconnectWait time.Duration

	// Logger receives connection events and dropped messages; nil means
	// slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.QueuePrefix == "" {
		c.QueuePrefix = DefaultQueuePrefix
	}
	if c.TopicPrefix == "" {
		c.TopicPrefix = DefaultTopicPrefix
	}
	if c.Prefetch <= 0 {
		c.Prefetch = transport.DefaultMaxInFlight
	}
	if c.HeartBeat == 0 {
		c.HeartBeat = DefaultHeartBeat
	}
	if c.MinReconnectWait <= 0 {
		c.MinReconnectWait = DefaultMinReconnectWait
	}
	if c.MaxReconnectWait <= 0 {
		c.MaxReconnectWait = DefaultMaxReconnectWait
	}
	if c.MaxReconnectWait < c.MinReconnectWait {
		c.MaxReconnectWait = c.MinReconnectWait
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// maxMessageBytes is the body limit for dialect d; 0 means none.
func (c Config) maxMessageBytes(d Dialect) int64 {
	f := c.MaxFrameBytes
	if f < 0 {
		return 0
	}
	if f == 0 {
		f = ActiveMQMaxFrameBytes
		if d == DialectRabbitMQ {
			f = RabbitMQMaxFrameBytes
		}
	}
	if f <= HeaderReserve {
		return 1
	}
	return f - HeaderReserve
}

// ConnOptions returns the go-stomp connect options this package dials with:
// host "/" (RabbitMQ rejects a CONNECT whose host is not a vhost), STOMP
// 1.2 and 1.1, heart-beats of cfg.HeartBeat, receipt timeouts of 30 s (5 s
// for DISCONNECT) and cfg.Logger. Pass
// them, plus stompgo.ConnOpt.Login, when dialling a connection for NewConn
// or NewListener yourself.
func ConnOptions(cfg Config) []func(*stompgo.Conn) error {
	cfg = cfg.withDefaults()
	opts := []func(*stompgo.Conn) error{
		stompgo.ConnOpt.Host("/"),
		stompgo.ConnOpt.AcceptVersion(stompgo.V12, stompgo.V11),
		stompgo.ConnOpt.RcvReceiptTimeout(receiptTimeout),
		stompgo.ConnOpt.DisconnectReceiptTimeout(disconnectWait),
		stompgo.ConnOpt.UnsubscribeReceiptTimeout(receiptTimeout),
		stompgo.ConnOpt.Logger(stompLogger{cfg.Logger}),
	}
	if cfg.HeartBeat > 0 {
		opts = append(opts,
			stompgo.ConnOpt.HeartBeat(cfg.HeartBeat, cfg.HeartBeat),
			// go-stomp sends every HeartBeat-HeartBeatError and declares the
			// connection dead after (HeartBeat+HeartBeatError)×multiplier
			// of silence: every HeartBeat/2, dead after 2.25×HeartBeat.
			stompgo.ConnOpt.HeartBeatError(cfg.HeartBeat/2),
			stompgo.ConnOpt.HeartBeatGracePeriodMultiplier(1.5))
	} else {
		opts = append(opts, stompgo.ConnOpt.HeartBeat(0, 0))
	}
	return opts
}

func detectDialect(configured Dialect, c *stompgo.Conn, log *slog.Logger) Dialect {
	if configured != DialectAuto {
		return configured
	}
	server := c.Server()
	switch {
	case strings.HasPrefix(server, "ActiveMQ"):
		return DialectActiveMQ
	case strings.HasPrefix(server, "RabbitMQ"):
		return DialectRabbitMQ
	}
	log.Warn("transport/stomp: unknown STOMP server, using ActiveMQ rules (set dialect to choose)", "server", server)
	return DialectActiveMQ
}

// newID returns a random 128-bit id in hex.
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// rawFrame turns the SEND frame go-stomp builds in Conn.Send into another
// command with the given headers. go-stomp v3 has no API for a NACK with
// headers (RabbitMQ's requeue) or for a receipt on BEGIN; Send applies its
// options to the frame before queueing it, so an option can rewrite it. If
// the headers ask for a receipt, Send waits for it (go-stomp pinned at
// v3.1.5; see the tests of this package).
func rawFrame(command string, header ...string) func(*frame.Frame) error {
	return func(f *frame.Frame) error {
		f.Command = command
		f.Header = frame.NewHeader(header...)
		f.Body = nil
		return nil
	}
}

// deadline adds the STOMP headers that carry deadline dl (none for a
// zero dl).
func (s *sendHeader) deadline(d Dialect, dl time.Time) {
	if dl.IsZero() {
		return
	}
	s.add(hdrDeadline, transport.FormatDeadline(dl))
	switch d {
	case DialectRabbitMQ:
		ttl := time.Until(dl).Milliseconds()
		if ttl < 0 {
			ttl = 0
		}
		s.add(hdrExpiration, strconv.FormatInt(ttl, 10))
	default:
		s.add(hdrExpires, strconv.FormatInt(dl.UnixMilli(), 10))
	}
}

// isConnError reports whether err from go-stomp means the connection is
// gone (as opposed to a bad argument).
func isConnError(err error) bool {
	var se stompgo.Error
	if errors.As(err, &se) {
		switch se.Message {
		case stompgo.ErrInvalidCommand.Message, stompgo.ErrNilOption.Message,
			stompgo.ErrNotReceivedMessage.Message, stompgo.ErrCannotNackAutoSub.Message,
			stompgo.ErrNackNotSupported.Message:
			return false
		}
		return true
	}
	return err != nil
}

// headerOf converts the headers of a received frame for a foreign
// (non-frame) message: canonical keys, every value kept, content-length and
// content-type left out (they describe the body, which the request carries
// itself).
func headerOf(h *frame.Header) http.Header {
	out := make(http.Header, h.Len())
	for i := 0; i < h.Len(); i++ {
		k, v := h.GetAt(i)
		if k == frame.ContentLength || k == frame.ContentType {
			continue
		}
		out.Add(k, v) // Add canonicalises the key
	}
	return out
}

// deliveryDeadline reads the caller's deadline from a received frame:
// Httpbus-Deadline, else ActiveMQ's expires (JMSExpiration, 0 = none).
func deliveryDeadline(h *frame.Header) (time.Time, error) {
	if v, ok := h.Contains(hdrDeadline); ok {
		return transport.ParseDeadline(v)
	}
	if v, ok := h.Contains(hdrExpires); ok {
		if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms > 0 {
			return time.UnixMilli(ms), nil
		}
	}
	return time.Time{}, nil
}

// stompLogger routes go-stomp's log lines to slog: its chatter at Debug,
// its errors at Warn.
type stompLogger struct{ l *slog.Logger }

func (s stompLogger) Debugf(f string, v ...any)   { s.l.Debug("go-stomp: " + fmt.Sprintf(f, v...)) }
func (s stompLogger) Infof(f string, v ...any)    { s.l.Debug("go-stomp: " + fmt.Sprintf(f, v...)) }
func (s stompLogger) Warningf(f string, v ...any) { s.l.Debug("go-stomp: " + fmt.Sprintf(f, v...)) }
func (s stompLogger) Errorf(f string, v ...any)   { s.l.Warn("go-stomp: " + fmt.Sprintf(f, v...)) }
func (s stompLogger) Debug(m string)              { s.l.Debug("go-stomp: " + m) }
func (s stompLogger) Info(m string)               { s.l.Debug("go-stomp: " + m) }
func (s stompLogger) Warning(m string)            { s.l.Debug("go-stomp: " + m) }
func (s stompLogger) Error(m string)              { s.l.Warn("go-stomp: " + m) }
