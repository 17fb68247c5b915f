package mqtt

import (
	"cmp"
	"context"
	"fmt"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/httpbus/httpbus/transport"
)

// Conn is the client side over one MQTT 5 connection: Call publishes the
// request with a Response Topic (the Conn's "<Prefix>/reply/<client id>")
// and Correlation Data, and waits for the message carrying that
// Correlation Data there. It implements transport.Conn,
// transport.Streamer, transport.SizeLimiter and transport.StateReporter.
type Conn struct {
	endpoint
	reply string
	calls transport.Calls[*transport.Message] // by Correlation Data
}

// NewConn connects to the first reachable of ac.ServerUrls (mqtt://host:port,
// mqtts://…) with ac's settings (credentials, TLS, dialer, backoff; see
// NewListener for the fields it sets) and returns a Conn once it is
// subscribed to its reply topic and inbox. The Conn owns the connection:
// autopaho reconnects after a loss, with backoff, until Close. Errors:
// no ServerUrls, a bad Config, transport.ErrUnavailable (ctx ended before
// the connection was up).
func NewConn(ctx context.Context, ac autopaho.ClientConfig, cfg Config) (*Conn, error) {
	if err := checkName("prefix", cfg.prefix(), true); err != nil {
		return nil, err
	}
	c := &Conn{}
	c.cfg, c.id = cfg, cmp.Or(cfg.ClientID, randomID())
	c.reply = cfg.prefix() + "/reply/" + c.id
	c.filters = []paho.SubscribeOptions{{Topic: c.reply, QoS: 1}}
	c.route = c.onReply
	if err := c.connect(ctx, ac, false); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Conn) onReply(pr paho.PublishReceived) {
	if p := pr.Packet; p.Topic == c.reply && p.Properties != nil {
		m, _ := received(p)
		c.calls.Answer(string(p.Properties.CorrelationData), &m) // false: its caller gave up, or a second answer
	}
}

// Call implements transport.Conn. It publishes req (QoS 1) to the
// service's topic with Content Type, each req.Header entry as a user
// property, Httpbus-Deadline and Message Expiry Interval
// (from req.Deadline, else ctx's deadline), Response Topic and
// Correlation Data, and waits until the reply arrives or ctx ends. While
// the connection is down it waits for it (up to ctx). Errors:
// transport.ErrNoResponders at once when the broker answers the PUBLISH
// with reason "no matching subscribers" (Mosquitto does, for MQTT 5
// publishers), transport.ErrTimeout at ctx's deadline, ctx's error when
// it is cancelled, *transport.TooLargeError over MaxMessageBytes,
// transport.ErrClosed after Close, transport.ErrUnavailable for other
// failures.
func (c *Conn) Call(ctx context.Context, service string, req *transport.Message) (*transport.Message, error) {
	if err := checkName("service name", service, false); err != nil {
		return nil, fmt.Errorf("%w (%w)", err, transport.ErrNoResponders)
	}
	m := *req
	if dl, ok := ctx.Deadline(); ok && m.Deadline.IsZero() {
		m.Deadline = dl
	}
	corr, answer := c.calls.Start()
	defer c.calls.Done(corr)
	p := &paho.Publish{Topic: ServiceTopic(c.cfg.Prefix, service), Payload: m.Body, Properties: properties(&m)}
	p.Properties.ResponseTopic = c.reply
	p.Properties.CorrelationData = []byte(corr)
	nobody, err := c.publish(ctx, p, 1)
	switch {
	case err != nil && ctx.Err() != nil:
		return nil, transport.ContextError(ctx)
	case err != nil:
		return nil, err
	case nobody:
		return nil, fmt.Errorf("transport/mqtt: service %q: %w (no matching subscribers)", service, transport.ErrNoResponders)
	}
	select {
	case r := <-answer:
		return r, nil
	case <-ctx.Done():
		return nil, transport.ContextError(ctx)
	case <-c.gate.Done():
		return nil, fmt.Errorf("transport/mqtt: call: %w", transport.ErrClosed)
	}
}

// Publish implements transport.Conn and transport.Listener: it publishes
// m (QoS 1) to "<Prefix>/notify/<topic>" and returns once the broker has
// acknowledged it.
func (e *endpoint) Publish(ctx context.Context, topic string, m *transport.Message) error {
	if err := checkName("topic", topic, true); err != nil {
		return err
	}
	_, err := e.publish(ctx, &paho.Publish{Topic: NotifyTopic(e.cfg.Prefix, topic), Payload: m.Body, Properties: properties(m)}, 1)
	return err
}

// Close implements transport.Conn: calls in flight return
// transport.ErrClosed, and the connection is closed with DISCONNECT.
func (c *Conn) Close() error {
	c.shutdown()
	return nil
}
