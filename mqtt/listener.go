package mqtt

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/httpbus/httpbus/transport"
)

// token is a delivery's bookkeeping: the message and the client that
// received it (acks go back on that connection).
type token struct {
	pub  *paho.Publish
	cli  *paho.Client
	held atomic.Bool
}

// Listener is the server side of one service over one MQTT 5 connection:
// a shared subscription on the service topic and one on each notification
// topic, QoS 1, acknowledged only when the request is settled. It
// implements transport.Listener, transport.Drainer, transport.Streamer,
// transport.SizeLimiter, transport.StateReporter and transport.Pusher.
type Listener struct {
	endpoint
	service string
	topic   string                                // the service's request topic
	topics  map[string]string                     // notification topic name → topic
	queue   *transport.Queue[*transport.Delivery] // closed by Drain

	draining atomic.Bool
	push     atomic.Pointer[func(*transport.Delivery)]
	workers  transport.PushWorkers // where pushed deliveries are served
}

// NewListener connects like NewConn and subscribes, at QoS 1, to
// "$share/<group>/<Prefix>/<service>" (group: Config.Group, else the
// service) and to "$share/<service>/<Prefix>/notify/<topic>" for each of
// lc.Topics, and to its inbox at QoS 0. It acknowledges a message only
// when Reply settles it (manual acknowledgement; paho sends the PUBACKs
// in the order the messages arrived, as MQTT requires, so a request held
// long also holds back the PUBACKs of later ones). The Listener owns the
// connection.
//
// ac supplies ServerUrls (required; mqtt://host:port or mqtts://…, tried
// in turn), credentials, TlsCfg, KeepAlive (0: DefaultKeepAlive),
// ReconnectBackoff (nil: 50 ms doubling to 5 s) and AttemptConnection
// (nil: DialQuickAck for mqtt:// unless Config.NoQuickAck). The endpoint
// sets ClientID, CleanStartOnInitialConnection, SessionExpiryInterval,
// EnableManualAcknowledgment, SendAcksInterval and the callbacks
// (OnPublishReceived, OnConnectionUp, OnConnectionDown, OnConnectError,
// ConnectPacketBuilder, DisconnectPacketBuilder) from cfg: autopaho fixes
// them when the connection manager is made, which is why the endpoint
// makes it. Errors: no ServerUrls; a bad service, topic, group or prefix;
// transport.ErrUnavailable when ctx ends before the connection is up.
func NewListener(ctx context.Context, ac autopaho.ClientConfig, lc transport.ListenConfig, cfg Config) (*Listener, error) {
	if err := checkName("service name", lc.Service, false); err != nil {
		return nil, err
	}
	group := cmp.Or(cfg.Group, lc.Service)
	if err := errors.Join(checkName("group", group, false), checkName("prefix", cfg.prefix(), true)); err != nil {
		return nil, err
	}
	l := &Listener{service: lc.Service, topic: ServiceTopic(cfg.Prefix, lc.Service), topics: map[string]string{},
		queue: transport.NewQueue[*transport.Delivery](int(cmp.Or(cfg.ReceiveMaximum, DefaultReceiveMaximum)))}
	l.cfg, l.id, l.route = cfg, cfg.ClientID, l.onMessage
	l.filters = []paho.SubscribeOptions{{Topic: "$share/" + group + "/" + l.topic, QoS: 1}}
	for _, t := range lc.Topics {
		if err := checkName("topic", t, true); err != nil {
			return nil, err
		}
		l.topics[NotifyTopic(cfg.Prefix, t)] = t
		l.filters = append(l.filters, paho.SubscribeOptions{Topic: "$share/" + lc.Service + "/" + NotifyTopic(cfg.Prefix, t), QoS: 1})
	}
	if err := l.connect(ctx, ac, true); err != nil {
		return nil, err
	}
	return l, nil
}

// onMessage queues a request or notification for Receive.
func (l *Listener) onMessage(pr paho.PublishReceived) {
	p, tok := pr.Packet, &token{pub: pr.Packet, cli: pr.Client}
	topic, isTopic := l.topics[p.Topic]
	if p.Topic != l.topic && !isTopic {
		l.ack(tok)
		return
	}
	m, err := received(p)
	if err != nil {
		l.log.Warn("transport/mqtt: bad message", "topic", p.Topic, "err", err)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		l.answer(ctx, tok, &transport.Message{Body: transport.ErrorResponse(err)})
		cancel()
		l.ack(tok)
		return
	}
	d := &transport.Delivery{Message: m, Service: l.service, Topic: topic, Token: tok,
		Redelivered: p.Duplicate() || m.Header.Get(transport.HeaderRedelivered) == "true"}
	if p.Properties != nil {
		d.RemoteAddr = p.Properties.ResponseTopic
	}
	if !transport.IsFrame(d.ContentType) {
		d.Header.Del("Content-Type")
	}
	if serve := l.push.Load(); serve != nil && !l.draining.Load() {
		l.workers.Serve(*serve, d) // after Drain: to the queue, to be received or handed back
		return
	}
	switch {
	case l.queue.Put(d):
	case p.QoS == 0:
		l.log.Warn("transport/mqtt: queue full: QoS 0 request dropped", "topic", p.Topic)
	default: // drained, or full of QoS 0 messages
		go l.handBack(d)
	}
}

// Push implements transport.Pusher: from then on each request and
// notification is served on a worker goroutine (transport.PushWorkers) as
// it arrives (as paho hands it over), instead of waiting in the queue for
// Receive. Receive still reports the end of the Listener
// (transport.ErrClosed after Drain).
func (l *Listener) Push(serve func(*transport.Delivery)) { l.push.Store(&serve) }

// Receive implements transport.Listener. After Drain it returns the
// messages already received, then transport.ErrClosed.
func (l *Listener) Receive(ctx context.Context) (*transport.Delivery, error) {
	return l.queue.Take(ctx)
}

// Reply implements transport.Listener: it publishes resp (QoS 1) to the
// request's Response Topic with its Correlation Data, Content Type and
// resp.Header as user properties (nothing for a notification or a request
// without Response Topic), then settles d. Ack and Reject acknowledge the
// message (MQTT has no negative acknowledgement and no dead letter).
// Requeue with no response publishes the request again to its topic,
// marked Httpbus-Redelivered, for any instance, and acknowledges it; a
// request answered in part (Hold) is settled without that. Hold publishes
// resp and leaves d unacknowledged. A failed publish leaves d
// unacknowledged too.
func (l *Listener) Reply(ctx context.Context, d *transport.Delivery, resp *transport.Message, disp transport.Disposition) error {
	tok, _ := d.Token.(*token)
	if tok == nil {
		return errors.New("transport/mqtt: Reply of a delivery not received from this listener")
	}
	if err := ctx.Err(); err != nil {
		return transport.ContextError(ctx)
	}
	wasHeld := tok.held.Load()
	if disp == transport.Hold {
		tok.held.Store(true)
	}
	if resp != nil && d.Topic == "" {
		if err := l.answer(ctx, tok, resp); err != nil {
			return err
		}
	}
	switch {
	case disp == transport.Hold:
		return nil
	case disp == transport.Requeue && resp == nil && d.Topic == "" && !wasHeld:
		if err := l.requeue(ctx, tok.pub); err != nil {
			return err
		}
	}
	l.ack(tok)
	return nil
}

// answer publishes resp to tok's Response Topic, if any.
func (l *Listener) answer(ctx context.Context, tok *token, resp *transport.Message) error {
	pp := tok.pub.Properties
	if pp == nil || pp.ResponseTopic == "" {
		return nil
	}
	props := properties(&transport.Message{ContentType: resp.ContentType, Header: resp.Header})
	props.CorrelationData = pp.CorrelationData
	_, err := l.publish(ctx, &paho.Publish{Topic: pp.ResponseTopic, Payload: resp.Body, Properties: props}, 1)
	return err
}

func (l *Listener) requeue(ctx context.Context, p *paho.Publish) error {
	props := *p.Properties
	props.User = append(slices.Clone(props.User), paho.UserProperty{Key: transport.HeaderRedelivered, Value: "true"})
	_, err := l.publish(ctx, &paho.Publish{Topic: p.Topic, Payload: p.Payload, Properties: &props}, 1)
	return err
}

// handBack publishes request d again (marked Httpbus-Redelivered), for any
// instance, and acknowledges it; a notification is acknowledged and
// dropped (publishing it again would repeat it to every subscribing
// service). It reports whether d was published again.
func (l *Listener) handBack(d *transport.Delivery) bool {
	tok := d.Token.(*token)
	defer l.ack(tok)
	if d.Topic != "" {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return l.requeue(ctx, tok.pub) == nil
}

// ack acknowledges tok's message on the connection that received it (a
// no-op for QoS 0, and after that connection was lost: the broker then
// redelivers the message if the session lives on, else drops it).
func (l *Listener) ack(tok *token) {
	if err := tok.cli.Ack(tok.pub); err != nil {
		l.log.Debug("transport/mqtt: ack", "topic", tok.pub.Topic, "err", err)
	}
}

// Drain implements transport.Drainer: it unsubscribes from the service
// and notification topics (the inbox stays, for streams in flight) and
// waits for UNSUBACK; Receive then returns what was already received and
// then transport.ErrClosed.
func (l *Listener) Drain() error {
	if !l.draining.CompareAndSwap(false, true) {
		return nil
	}
	l.mu.Lock()
	var filters []string
	for _, f := range l.filters[:len(l.filters)-1] { // the inbox is last
		filters = append(filters, f.Topic)
	}
	l.filters = l.filters[len(l.filters)-1:] // a reconnect subscribes to the inbox only
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := l.cm.Unsubscribe(ctx, &paho.Unsubscribe{Topics: filters})
	l.queue.Close()
	if err != nil {
		return fmt.Errorf("transport/mqtt: drain: unsubscribe: %w", err)
	}
	return nil
}

// Close implements transport.Listener. Requests received but not taken by
// Receive are published again to their topic (marked
// Httpbus-Redelivered) and acknowledged, so that another instance answers
// them; notifications not taken are acknowledged and dropped (publishing
// them again would repeat them to every subscribing service); requests
// held (answered in part) are not handed back. It then disconnects,
// ending a session kept by Config.SessionExpiry.
func (l *Listener) Close() error {
	l.Drain()
	n := 0
	for d, ok := l.queue.TryTake(); ok; d, ok = l.queue.TryTake() {
		if l.handBack(d) {
			n++
		}
	}
	if n > 0 {
		l.log.Info("transport/mqtt: close: requests handed back to the broker", "topic", l.topic, "count", n)
	}
	if l.cfg.SessionExpiry > 0 {
		time.Sleep(30 * time.Millisecond) // paho sends manual acks every 10 ms
	}
	l.shutdown()
	l.workers.Close()
	return nil
}
