package mqtt

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/httpbus/httpbus/transport"
)

// DefaultPrefix is the first topic level of every topic httpbus uses when
// Config.Prefix is empty.
const DefaultPrefix = "httpbus"

// Defaults of Config.
const (
	// DefaultReceiveMaximum is the Receive Maximum a Listener sends in
	// CONNECT: the broker sends it at most this many QoS 1 messages that it
	// has not acknowledged (MQTT 5 §3.1.2.11.3).
	DefaultReceiveMaximum = 1024
	// DefaultInboxQueue is how many stream messages an endpoint holds,
	// received and not yet taken by ReceiveInbox; past it they are dropped
	// (logged) and the core sees the gap.
	DefaultInboxQueue = 4096
	// DefaultKeepAlive is the MQTT keep alive, in seconds.
	DefaultKeepAlive = 30
)

// MaxPacketSize is the largest MQTT packet (MQTT 5 §1.5.5, the largest
// Remaining Length, 268,435,455 bytes): MaxMessageBytes when the broker
// announces no Maximum Packet Size in CONNACK (Mosquitto announces one
// only when max_packet_size is configured).
const MaxPacketSize = 268435455

// HeaderRoom is the part of the packet size kept for the topic and the
// properties of a message (user properties carry the stream headers), in
// bytes. MaxMessageBytes returns the packet limit minus HeaderRoom.
const HeaderRoom = 16 << 10

// reasonNoMatchingSubscribers is the PUBACK reason code 0x10 (MQTT 5
// §3.4.2.1): Mosquitto sends it to an MQTT 5 publisher when no
// subscription matches.
const reasonNoMatchingSubscribers = 0x10

// Config configures a Listener or a Conn. The zero value is usable.
type Config struct {
	// Prefix is the first topic level (or levels, "acme/httpbus") of every
	// topic: requests for service S go to "<Prefix>/S", notifications for
	// topic T to "<Prefix>/notify/T". Empty means DefaultPrefix.
	Prefix string
	// Group is the shared subscription group a Listener joins
	// ("$share/<Group>/<Prefix>/<service>"), so that the instances of one
	// service share its requests. Empty means the service name. Topic
	// subscriptions always use the service name, so that each subscribing
	// service gets each notification once. Ignored by Conn.
	Group string
	// ClientID is the MQTT client identifier; empty means a random
	// "hb-<16 hex digits>". It names the endpoint's inbox and reply topic.
	ClientID string
	// SessionExpiry is the MQTT Session Expiry Interval. Zero (the
	// default) ends the broker's session at each disconnect: requests the
	// broker had sent to this instance and that it had not acknowledged
	// are dropped by Mosquitto (not given to another instance of the
	// group). Above zero, with a fixed ClientID, they wait in the session
	// and are delivered again (Httpbus-Redelivered) when an endpoint with
	// that ClientID connects within SessionExpiry; Mosquitto also keeps
	// routing new requests to the session meanwhile (see the package doc).
	// Whole seconds.
	SessionExpiry time.Duration
	// ReceiveMaximum bounds the QoS 1 messages the broker sends a Listener
	// before it acknowledges them; zero means DefaultReceiveMaximum.
	ReceiveMaximum uint16
	// NoQuickAck turns off TCP_QUICKACK on the connection (Linux). By
	// default this side acknowledges received TCP data at once, because
	// Mosquitto leaves Nagle's algorithm on unless its set_tcp_nodelay is
	// true, and its small packets (a PUBACK, then a reply) then wait for
	// the client's delayed ACK: measured here, 46 ms per call instead of
	// under 3 ms. Set it when the broker runs with set_tcp_nodelay true.
	NoQuickAck bool
	// Logger receives connection events and dropped messages; nil means
	// slog.Default().
	Logger *slog.Logger
}

func (c Config) prefix() string { return cmp.Or(c.Prefix, DefaultPrefix) }

// ServiceTopic returns the topic requests for service go to under prefix
// ("" means DefaultPrefix).
func ServiceTopic(prefix, service string) string {
	return cmp.Or(prefix, DefaultPrefix) + "/" + service
}

// NotifyTopic returns the topic notifications for topic go to under
// prefix ("" means DefaultPrefix).
func NotifyTopic(prefix, topic string) string {
	return cmp.Or(prefix, DefaultPrefix) + "/notify/" + topic
}

// checkName reports whether s is usable as a topic name (or, with
// level false, as one topic level): non-empty, valid UTF-8, no wildcard,
// no NUL, not starting with "$".
func checkName(what, s string, levels bool) error {
	switch {
	case s == "" || !utf8.ValidString(s):
		return fmt.Errorf("transport/mqtt: %s %q is empty or not UTF-8", what, s)
	case strings.ContainsAny(s, "+#\x00") || strings.HasPrefix(s, "$"):
		return fmt.Errorf("transport/mqtt: %s %q has a wildcard, a NUL or a leading $", what, s)
	case !levels && strings.Contains(s, "/"):
		return fmt.Errorf("transport/mqtt: %s %q has a / (one topic level only)", what, s)
	}
	return nil
}

func randomID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return "hb-" + hex.EncodeToString(b)
}

// properties builds the MQTT 5 properties of an outgoing message: Content
// Type (m.ContentType, message/http when empty), each m.Header entry as a
// user property (one per value; pairs that are not UTF-8 are left out, as
// MQTT requires UTF-8), Httpbus-Version only when it is not 1 (WIRE.md §2:
// a missing one means 1; paho decodes each user property string into
// about 1.4 kB of garbage), and from m.Deadline both Httpbus-Deadline
// (Unix ms) and the Message Expiry Interval (seconds, rounded up, at
// least 1).
func properties(m *transport.Message) *paho.PublishProperties {
	p := &paho.PublishProperties{ContentType: cmp.Or(m.ContentType, transport.MediaType), User: make(paho.UserProperties, 0, len(m.Header)+2)}
	transport.EachHeader(m, func(k, v string) {
		if utf8.ValidString(k) && utf8.ValidString(v) && (k != transport.HeaderVersion || v != transport.Version) {
			p.User = append(p.User, paho.UserProperty{Key: k, Value: v})
		}
	})
	if !m.Deadline.IsZero() {
		exp := uint32(max(1, (time.Until(m.Deadline)+time.Second-1)/time.Second))
		p.MessageExpiry = &exp
	}
	return p
}

// received converts an incoming message: user properties into Header
// (canonical keys), ContentType from Content Type, Deadline from
// Httpbus-Deadline (else from the Message Expiry Interval). It returns the
// deadline's parse error with the message.
func received(p *paho.Publish) (transport.Message, error) {
	m := transport.Message{Body: p.Payload}
	if p.Properties == nil {
		return m, nil
	}
	m.ContentType = p.Properties.ContentType
	if len(p.Properties.User) > 0 {
		m.Header = make(http.Header, len(p.Properties.User))
		for _, u := range p.Properties.User {
			k := http.CanonicalHeaderKey(u.Key)
			m.Header[k] = append(m.Header[k], u.Value)
		}
	}
	var err error
	if v := m.Header.Get(transport.HeaderDeadline); v != "" {
		m.Deadline, err = transport.ParseDeadline(v)
	} else if e := p.Properties.MessageExpiry; e != nil {
		m.Deadline = time.Now().Add(time.Duration(*e) * time.Second)
	}
	return m, err
}

// endpoint is what a Conn and a Listener share: the autopaho connection,
// its subscriptions (made again after every reconnect) and the inbox.
type endpoint struct {
	cm     *autopaho.ConnectionManager
	cfg    Config
	log    *slog.Logger
	id     string
	inbox  string
	inboxQ *transport.Queue[*transport.Message]
	route  func(paho.PublishReceived)
	gate   transport.Gate // open while connected and subscribed
	maxPkt atomic.Int64

	mu      sync.Mutex
	filters []paho.SubscribeOptions
}

// connect starts the connection to ac.ServerUrls and waits until it is up
// and subscribed to e.filters (and the inbox), or ctx ends.
func (e *endpoint) connect(ctx context.Context, ac autopaho.ClientConfig, manual bool) error {
	if len(ac.ServerUrls) == 0 {
		return errors.New("transport/mqtt: autopaho.ClientConfig has no ServerUrls")
	}
	e.log = cmp.Or(e.cfg.Logger, slog.Default())
	e.id = cmp.Or(e.id, randomID())
	e.inbox = e.cfg.prefix() + "/inbox/" + e.id
	e.inboxQ = transport.NewQueue[*transport.Message](DefaultInboxQueue)
	e.filters = append(e.filters, paho.SubscribeOptions{Topic: e.inbox, QoS: 0})
	rm := cmp.Or(e.cfg.ReceiveMaximum, DefaultReceiveMaximum)
	expiry := uint32(e.cfg.SessionExpiry / time.Second)
	ac.KeepAlive = cmp.Or(ac.KeepAlive, DefaultKeepAlive)
	ac.CleanStartOnInitialConnection = expiry == 0
	ac.SessionExpiryInterval = expiry
	if ac.ReconnectBackoff == nil {
		ac.ReconnectBackoff = autopaho.NewExponentialBackoff(50*time.Millisecond, 5*time.Second, 100*time.Millisecond, 2)
	}
	ac.ClientID = e.id
	if ac.AttemptConnection == nil && ac.TlsCfg == nil && !e.cfg.NoQuickAck {
		ac.AttemptConnection = DialQuickAck
	}
	ac.EnableManualAcknowledgment = manual
	ac.SendAcksInterval = 10 * time.Millisecond
	ac.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
		if pr.Packet.Topic == e.inbox {
			e.toInbox(pr.Packet)
		} else {
			e.route(pr)
		}
		return true, nil
	}}
	ac.ConnectPacketBuilder = func(c *paho.Connect, _ *url.URL) (*paho.Connect, error) {
		if c.Properties == nil {
			c.Properties = &paho.ConnectProperties{}
		}
		c.Properties.ReceiveMaximum = &rm
		return c, nil
	}
	ac.DisconnectPacketBuilder = func() *paho.Disconnect {
		// A graceful close ends the session (Session Expiry Interval 0,
		// allowed whatever CONNECT said): nothing more is routed to it.
		return &paho.Disconnect{Properties: &paho.DisconnectProperties{SessionExpiryInterval: new(uint32)}}
	}
	ac.OnConnectionUp = func(cm *autopaho.ConnectionManager, ca *paho.Connack) {
		size := int64(MaxPacketSize)
		if ca.Properties != nil && ca.Properties.MaximumPacketSize != nil {
			size = int64(*ca.Properties.MaximumPacketSize)
		}
		e.maxPkt.Store(size)
		go e.subscribe(cm)
	}
	ac.OnConnectionDown = func() bool {
		e.gate.Shut()
		if !e.gate.Closed() {
			e.log.Warn("transport/mqtt: connection lost; reconnecting", "client_id", e.id)
		}
		return !e.gate.Closed()
	}
	ac.OnConnectError = func(err error) { e.log.Debug("transport/mqtt: connect", "client_id", e.id, "err", err) }
	cm, err := autopaho.NewConnection(context.Background(), ac)
	if err != nil {
		return fmt.Errorf("transport/mqtt: %w: %w", transport.ErrUnavailable, err)
	}
	e.cm = cm
	if err := e.gate.Wait(ctx); err != nil {
		e.shutdown()
		return fmt.Errorf("transport/mqtt: connect to %s: %w: %w", ac.ServerUrls[0].Redacted(), transport.ErrUnavailable, err)
	}
	return nil
}

// subscribe (re)makes the subscriptions after a connection came up, then
// opens the gate.
func (e *endpoint) subscribe(cm *autopaho.ConnectionManager) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.mu.Lock()
	filters := e.filters
	e.mu.Unlock()
	sa, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: filters})
	if err == nil {
		for i, rc := range sa.Reasons {
			if rc >= 0x80 {
				err = fmt.Errorf("subscription %q refused with reason code %#x", filters[i].Topic, rc)
			}
		}
	}
	if err != nil {
		e.log.Error("transport/mqtt: subscribe", "client_id", e.id, "err", err)
		return
	}
	e.gate.Open()
}

func (e *endpoint) toInbox(p *paho.Publish) {
	if m, _ := received(p); !e.inboxQ.Put(&m) {
		e.log.Warn("transport/mqtt: inbox full: stream message dropped", "topic", p.Topic)
	}
}

// publish sends p at qos (0: returns once written; 1: once the broker
// acknowledged it), waiting (up to ctx) for a connection. It reports
// whether the broker said that no subscription matched.
func (e *endpoint) publish(ctx context.Context, p *paho.Publish, qos byte) (nobody bool, err error) {
	if lim := e.MaxMessageBytes(); lim > 0 && int64(len(p.Payload)) > lim {
		return false, &transport.TooLargeError{What: "message (MQTT packet size)", Limit: lim, Size: int64(len(p.Payload))}
	}
	p.QoS = qos
	// Close ends a wait for a PUBACK that a lost connection never sends.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(e.gate.Context(), cancel)()
	for {
		err := e.gate.Wait(ctx)
		if err == nil {
			var r *paho.PublishResponse
			if r, err = e.cm.Publish(ctx, p); err == nil {
				return r.ReasonCode == reasonNoMatchingSubscribers, nil
			} else if errors.Is(err, autopaho.ConnectionDownError) {
				continue
			} else if r != nil && r.ReasonCode == 0x95 {
				err = fmt.Errorf("%w: %w", transport.ErrTooLarge, err)
			}
		}
		switch {
		case e.gate.Closed():
			return false, fmt.Errorf("transport/mqtt: publish to %q: %w", p.Topic, transport.ErrClosed)
		case ctx.Err() != nil:
			return false, transport.ContextError(ctx)
		case errors.Is(err, transport.ErrTooLarge):
			return false, fmt.Errorf("transport/mqtt: publish to %q: %w", p.Topic, err)
		}
		return false, fmt.Errorf("transport/mqtt: publish to %q: %w: %w", p.Topic, transport.ErrUnavailable, err)
	}
}

// Send implements transport.Streamer: it publishes m (QoS 0) to topic
// addr with the properties of a request (no Response Topic) and returns
// once the message is written. MQTT does not tell whether anyone
// subscribes to addr. Errors: a bad addr, ctx's error,
// *transport.TooLargeError, transport.ErrClosed, transport.ErrUnavailable.
func (e *endpoint) Send(ctx context.Context, addr string, m *transport.Message) error {
	if err := checkName("inbox address", addr, true); err != nil {
		return err
	}
	_, err := e.publish(ctx, &paho.Publish{Topic: addr, Payload: m.Body, Properties: properties(m)}, 0)
	return err
}

// SendCopiesBody implements transport.SendCopier: Send publishes at QoS 0,
// which paho writes to the connection before Publish returns
// (paho.Client.PublishWithOptions), keeping nothing to resend.
func (e *endpoint) SendCopiesBody() bool { return true }

// ReceiveInbox implements transport.Streamer: the next message published
// to the inbox, user properties in Header (canonical keys), ContentType
// and Deadline set. Errors: ctx's error, transport.ErrClosed after Close.
func (e *endpoint) ReceiveInbox(ctx context.Context) (*transport.Message, error) {
	m, err := e.inboxQ.Take(ctx)
	if errors.Is(err, transport.ErrClosed) {
		return nil, fmt.Errorf("transport/mqtt: inbox: %w", err)
	}
	return m, err
}

// Inbox implements transport.Streamer: "<Prefix>/inbox/<client id>",
// subscribed at QoS 0 since the connection came up (again after each
// reconnect), the same for the endpoint's life. Errors:
// transport.ErrClosed.
func (e *endpoint) Inbox(ctx context.Context) (string, error) {
	if e.gate.Closed() {
		return "", fmt.Errorf("transport/mqtt: inbox: %w", transport.ErrClosed)
	}
	return e.inbox, nil
}

// shutdown disconnects (DISCONNECT, then the connection manager ends).
func (e *endpoint) shutdown() {
	if !e.gate.Close() {
		return
	}
	e.inboxQ.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.cm.Disconnect(ctx); err != nil {
		e.log.Warn("transport/mqtt: disconnect", "client_id", e.id, "err", err)
	}
}

// MaxMessageBytes implements transport.SizeLimiter: the broker's Maximum
// Packet Size from CONNACK (MaxPacketSize when it announces none) minus
// HeaderRoom.
func (e *endpoint) MaxMessageBytes() int64 {
	return max(1, cmp.Or(e.maxPkt.Load(), MaxPacketSize)-HeaderRoom)
}

// State implements transport.StateReporter.
func (e *endpoint) State() transport.State { return e.gate.State() }

// ClientID returns the MQTT client identifier.
func (e *endpoint) ClientID() string { return e.id }
