package mqtt

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"

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
	next  atomic.Uint64

	mu      sync.Mutex
	pending map[string]chan *transport.Message // by correlation data
}

// Dial connects to the first reachable of servers (mqtt://host:port,
// mqtts://…) with ac's settings (credentials, TLS; autopaho fills the
// rest) and returns a Conn once it is subscribed to its reply topic and
// inbox. autopaho reconnects after a loss, with backoff, until Close.
// Errors match transport.ErrUnavailable (ctx ended first) or name a bad
// Config.
func Dial(ctx context.Context, servers []*url.URL, ac autopaho.ClientConfig, cfg Config) (*Conn, error) {
	if err := checkName("prefix", cfg.prefix(), true); err != nil {
		return nil, err
	}
	c := &Conn{pending: map[string]chan *transport.Message{}}
	c.cfg, c.id = cfg, cfg.ClientID
	if c.id == "" {
		c.id = randomID()
	}
	c.reply = cfg.prefix() + "/reply/" + c.id
	c.filters = []paho.SubscribeOptions{{Topic: c.reply, QoS: 1}}
	c.route = c.onReply
	if err := c.connect(ctx, servers, ac, false); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Conn) onReply(pr paho.PublishReceived) {
	p := pr.Packet
	if p.Topic != c.reply || p.Properties == nil {
		return
	}
	c.mu.Lock()
	ch := c.pending[string(p.Properties.CorrelationData)]
	delete(c.pending, string(p.Properties.CorrelationData))
	c.mu.Unlock()
	if ch == nil {
		return // its caller gave up, or a second answer to one call
	}
	m, _ := received(p)
	ch <- &m
}

// Call implements transport.Conn. It publishes req (QoS 1) to the
// service's topic with Content Type, each req.Header entry as a user
// property, Httpbus-Version, Httpbus-Deadline and Message Expiry Interval
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
	corr := strconv.AppendUint(nil, c.next.Add(1), 36)
	ch := make(chan *transport.Message, 1)
	c.mu.Lock()
	c.pending[string(corr)] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, string(corr))
		c.mu.Unlock()
	}()
	p := &paho.Publish{Topic: ServiceTopic(c.cfg.Prefix, service), Payload: m.Body, Properties: properties(&m)}
	p.Properties.ResponseTopic = c.reply
	p.Properties.CorrelationData = corr
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
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return nil, transport.ContextError(ctx)
	case <-c.stopped.Done():
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
