package main

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	mqtttransport "github.com/httpbus/httpbus/mqtt"
)

func init() { registerRaw(openRawMQTT, "mqtt") }

// rawMQTT is MQTT 5 request/response with paho.golang and nothing of
// httpbus: the requester publishes (QoS 1) with a Response Topic and
// Correlation Data and matches replies in a map; the responder, on a
// shared subscription (QoS 1, paho's automatic acks), publishes the
// payload back (QoS 1). Two connections, both dialled with TCP_QUICKACK as
// httpbus dials them (mqtt.DialQuickAck), so that neither side waits on
// Mosquitto's Nagle delay.
type rawMQTT struct {
	srv, cli *paho.Client
	topic    string
	reply    string
	body     []byte
	next     atomic.Uint64
	mu       sync.Mutex
	pending  map[string]chan []byte
	broker   string
	stop     context.Context // cancelled by Close: ends the responder's publishes
	cancel   context.CancelFunc
	replies  sync.WaitGroup // the responder's publishes in flight
}

func openRawMQTT(ctx context.Context, u *url.URL, name string, body []byte, cfg benchConfig) (rawRunner, error) {
	r := &rawMQTT{topic: "httpbus-bench-raw/" + name, reply: "httpbus-bench-raw/reply/" + name, body: body, pending: map[string]chan []byte{}}
	r.stop, r.cancel = context.WithCancel(context.Background())
	connect := func(id string, h func(paho.PublishReceived) (bool, error), filter string) (*paho.Client, error) {
		return connectPaho(ctx, u, id, cfg, h, filter, 1)
	}
	var err error
	r.srv, err = connect("raw-srv-"+name, func(pr paho.PublishReceived) (bool, error) {
		p := pr.Packet
		r.replies.Add(1)
		go func() {
			defer r.replies.Done()
			pr.Client.Publish(r.stop, &paho.Publish{Topic: p.Properties.ResponseTopic, QoS: 1, Payload: p.Payload, //nolint:errcheck // the requester times out
				Properties: &paho.PublishProperties{CorrelationData: p.Properties.CorrelationData}})
		}()
		return true, nil
	}, "$share/responders/"+r.topic)
	if err != nil {
		r.cancel()
		return nil, err
	}
	var version brokerVersion
	r.cli, err = connect("raw-cli-"+name, func(pr paho.PublishReceived) (bool, error) {
		if version.take(pr) || pr.Packet.Properties == nil {
			return true, nil
		}
		r.mu.Lock()
		ch := r.pending[string(pr.Packet.Properties.CorrelationData)]
		r.mu.Unlock()
		if ch != nil {
			ch <- pr.Packet.Payload
		}
		return true, nil
	}, r.reply)
	if err != nil {
		r.srv.Disconnect(&paho.Disconnect{})
		r.cancel()
		r.replies.Wait()
		return nil, err
	}
	r.broker = version.ask(ctx, r.cli, cfg.Timeout)
	return r, nil
}

// brokerVersion asks an MQTT broker for its version: Mosquitto publishes
// it, retained, on $SYS/broker/version. The client's receive handler
// passes each message to take first.
type brokerVersion struct {
	once sync.Once
	got  chan string
}

const versionTopic = "$SYS/broker/version"

func (v *brokerVersion) init() { v.once.Do(func() { v.got = make(chan string, 1) }) }

// take reports whether pr is the version message (and keeps it).
func (v *brokerVersion) take(pr paho.PublishReceived) bool {
	if pr.Packet.Topic != versionTopic {
		return false
	}
	v.init()
	select {
	case v.got <- string(pr.Packet.Payload):
	default:
	}
	return true
}

// ask subscribes c to the version topic and waits up to timeout for it;
// "MQTT 5 broker" when the broker does not say.
func (v *brokerVersion) ask(ctx context.Context, c *paho.Client, timeout time.Duration) string {
	v.init()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: versionTopic}}}); err == nil {
		select {
		case s := <-v.got:
			return s
		case <-ctx.Done():
		}
	}
	return "MQTT 5 broker"
}

func (r *rawMQTT) Do(ctx context.Context) error {
	corr := strconv.AppendUint(nil, r.next.Add(1), 36)
	ch := make(chan []byte, 1)
	r.mu.Lock()
	r.pending[string(corr)] = ch
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.pending, string(corr))
		r.mu.Unlock()
	}()
	if _, err := r.cli.Publish(ctx, &paho.Publish{Topic: r.topic, QoS: 1, Payload: r.body,
		Properties: &paho.PublishProperties{ResponseTopic: r.reply, CorrelationData: corr}}); err != nil {
		return err
	}
	select {
	case b := <-ch:
		if len(b) != len(r.body) {
			return fmt.Errorf("echo of %d bytes came back with %d", len(r.body), len(b))
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *rawMQTT) Describe() string {
	return "paho.golang Publish (QoS 1, Response Topic + Correlation Data) against a shared-subscription responder, two connections"
}

func (r *rawMQTT) Broker() string { return r.broker }

func (r *rawMQTT) Close() error {
	r.cli.Disconnect(&paho.Disconnect{})
	r.srv.Disconnect(&paho.Disconnect{})
	r.cancel() // a reply publish still waiting for its PUBACK gives up
	r.replies.Wait()
	return nil
}

// connectPaho connects a bare paho.golang client to u's broker (dialled with
// TCP_QUICKACK, as httpbus dials), clean start, with h for what arrives,
// and subscribes it to filter at qos unless filter is empty.
func connectPaho(ctx context.Context, u *url.URL, id string, cfg benchConfig, h func(paho.PublishReceived) (bool, error), filter string, qos byte) (*paho.Client, error) {
	conn, err := mqtttransport.DialQuickAck(ctx, autopaho.ClientConfig{}, &url.URL{Host: u.Host})
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", u.Redacted(), err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){h}})
	cctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if _, err := c.Connect(cctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		conn.Close()
		return nil, err
	}
	if filter != "" {
		if _, err := c.Subscribe(cctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}}); err != nil {
			c.Disconnect(&paho.Disconnect{})
			return nil, err
		}
	}
	return c, nil
}
