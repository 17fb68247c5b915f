package main

import (
	"context"
	"net/url"
	"strings"

	"github.com/eclipse/paho.golang/paho"
)

func init() { rawStreamOpeners["mqtt"] = openRawMQTTPublish }

// rawMQTTPublish: paho.golang Publish at QoS 0 (as httpbus's mqtt backend
// sends stream parts to an inbox) on one connection, a QoS 0 subscription
// on another that checks and counts; the transfer id is the topic's last
// level. Both connections are dialled with TCP_QUICKACK, as httpbus dials
// them.
type rawMQTTPublish struct {
	pub, sub *paho.Client
	topic    string
	msg      int
	buf      []byte
	c        byteCounter
	broker   string
}

func openRawMQTTPublish(ctx context.Context, u *url.URL, name string, cfg benchConfig) (rawStreamer, error) {
	r := &rawMQTTPublish{topic: "httpbus-bench-rawstream/" + name + "/" + strings.ReplaceAll(runID, ".", "-")}
	var err error
	r.sub, err = connectPaho(ctx, u, "rawstream-sub-"+name+"-"+runID, cfg, func(pr paho.PublishReceived) (bool, error) {
		r.c.add(pr.Packet.Topic[strings.LastIndexByte(pr.Packet.Topic, '/')+1:], pr.Packet.Payload)
		return true, nil
	}, r.topic+"/+", 0)
	if err != nil {
		return nil, err
	}
	var version brokerVersion
	if r.pub, err = connectPaho(ctx, u, "rawstream-pub-"+name+"-"+runID, cfg, func(pr paho.PublishReceived) (bool, error) { return version.take(pr), nil }, "", 0); err != nil {
		r.sub.Disconnect(&paho.Disconnect{})
		return nil, err
	}
	r.broker = version.ask(ctx, r.pub, cfg.Timeout)
	r.msg = rawMsgBytes(cfg, 0)
	r.buf = make([]byte, r.msg) // paho writes a QoS 0 publish before returning
	return r, nil
}

func (r *rawMQTTPublish) Transfer(ctx context.Context, size int64) error {
	return publishAll(ctx, &r.c, nil, size, r.msg, r.buf,
		func(id string, b []byte) error {
			_, err := r.pub.Publish(ctx, &paho.Publish{Topic: r.topic + "/" + id, QoS: 0, Payload: b})
			return err
		}, nil, nil)
}

func (r *rawMQTTPublish) MsgBytes() int { return r.msg }
func (r *rawMQTTPublish) Describe() string {
	return "paho.golang Publish (QoS 0), a QoS 0 subscription on a second connection checking and counting the bytes"
}
func (r *rawMQTTPublish) Broker() string { return r.broker }
func (r *rawMQTTPublish) Close() error {
	r.pub.Disconnect(&paho.Disconnect{})
	r.sub.Disconnect(&paho.Disconnect{})
	return nil
}
