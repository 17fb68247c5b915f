package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	mqtttransport "github.com/httpbus/httpbus/mqtt"
)

func init() { rawStreamOpeners["mqtt"] = openRawMQTTPublish }

// rawMQTTPublish: paho.golang Publish at QoS 0 (as httpbus's mqtt backend
// sends stream parts to an inbox) on one connection, a QoS 0 subscription
// on another that counts; the transfer id is the topic's last level. Both
// connections are dialled with TCP_QUICKACK, as httpbus dials them.
type rawMQTTPublish struct {
	pub, sub *paho.Client
	topic    string
	msg      int
	buf      []byte
	c        byteCounter
}

func openRawMQTTPublish(ctx context.Context, u *url.URL, name string, cfg benchConfig) (rawStreamer, error) {
	r := &rawMQTTPublish{topic: "httpbus-bench-rawstream/" + name + "/" + strings.ReplaceAll(runID, ".", "-")}
	connect := func(id string, h func(paho.PublishReceived) (bool, error)) (*paho.Client, error) {
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
		return c, nil
	}
	var err error
	r.sub, err = connect("rawstream-sub-"+name+"-"+runID, func(pr paho.PublishReceived) (bool, error) {
		r.c.add(pr.Packet.Topic[strings.LastIndexByte(pr.Packet.Topic, '/')+1:], len(pr.Packet.Payload))
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if _, err := r.sub.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: r.topic + "/+", QoS: 0}}}); err != nil {
		r.sub.Disconnect(&paho.Disconnect{})
		return nil, err
	}
	if r.pub, err = connect("rawstream-pub-"+name+"-"+runID, func(paho.PublishReceived) (bool, error) { return true, nil }); err != nil {
		r.sub.Disconnect(&paho.Disconnect{})
		return nil, err
	}
	r.msg = rawMsgBytes(cfg, 0)
	r.buf = genBytes(r.msg)
	return r, nil
}

func (r *rawMQTTPublish) Transfer(ctx context.Context, size int64) error {
	return publishAll(ctx, &r.c, size, r.msg, r.buf,
		func(id string, b []byte) error {
			_, err := r.pub.Publish(ctx, &paho.Publish{Topic: r.topic + "/" + id, QoS: 0, Payload: b})
			return err
		}, nil, nil)
}

func (r *rawMQTTPublish) MsgBytes() int { return r.msg }
func (r *rawMQTTPublish) Describe() string {
	return "paho.golang Publish (QoS 0), a QoS 0 subscription on a second connection counting bytes"
}
func (r *rawMQTTPublish) Broker() string { return "" }
func (r *rawMQTTPublish) Close() error {
	r.pub.Disconnect(&paho.Disconnect{})
	r.sub.Disconnect(&paho.Disconnect{})
	return nil
}
