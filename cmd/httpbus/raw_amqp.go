package main

import (
	"context"
	"fmt"
	"net/url"
	"sync"

	amqp091 "github.com/rabbitmq/amqp091-go"
)

func init() { registerRaw(openRawAMQP, "amqp", "amqps") }

// directReplyTo is RabbitMQ's direct reply-to pseudo-queue.
const directReplyTo = "amq.rabbitmq.reply-to"

// rawAMQP is amqp091 request/reply with direct reply-to: the requester
// consumes amq.rabbitmq.reply-to (no-ack) on one channel and publishes
// requests on the same channel with a correlation id; the responder
// consumes a queue on its own connection with manual acks, publishes the
// payload back to the request's reply-to, then acks (reply before ack, as
// httpbus does).
type rawAMQP struct {
	srvConn, cliConn *amqp091.Connection
	cli              *amqp091.Channel
	queue            string
	body             []byte
	corr             correlator
	wg               sync.WaitGroup
}

// rawPrefetch bounds unacked requests at the raw responder, as
// transport.DefaultMaxInFlight bounds them at a Server.
const rawPrefetch = 128

func openRawAMQP(ctx context.Context, u *url.URL, name string, body []byte, cfg benchConfig) (rawRunner, error) {
	dial := func(role string) (*amqp091.Connection, error) { return dialRawAMQP(u, role) }
	r := &rawAMQP{queue: "httpbus-bench-raw." + name, body: body}
	var err error
	if r.srvConn, err = dial("responder"); err != nil {
		return nil, err
	}
	if r.cliConn, err = dial("requester"); err != nil {
		r.srvConn.Close()
		return nil, err
	}
	if err := r.start(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// dialRawAMQP opens a connection named httpbus-bench-raw-ROLE to u without
// its query (httpbus options).
func dialRawAMQP(u *url.URL, role string) (*amqp091.Connection, error) {
	v := *u
	v.RawQuery, v.Fragment = "", ""
	c, err := amqp091.DialConfig(v.String(), amqp091.Config{
		Properties: amqp091.Table{"connection_name": "httpbus-bench-raw-" + role},
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", u.Redacted(), err)
	}
	return c, nil
}

func (r *rawAMQP) start() error {
	sch, err := r.srvConn.Channel()
	if err != nil {
		return err
	}
	if _, err := sch.QueueDeclare(r.queue, false, true, false, false, nil); err != nil {
		return fmt.Errorf("declare queue %s: %w", r.queue, err)
	}
	if err := sch.Qos(rawPrefetch, 0, false); err != nil {
		return err
	}
	reqs, err := sch.Consume(r.queue, "", false, false, false, false, nil)
	if err != nil {
		return err
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for d := range reqs {
			err := sch.PublishWithContext(context.Background(), "", d.ReplyTo, false, false, amqp091.Publishing{
				ContentType:   d.ContentType,
				CorrelationId: d.CorrelationId,
				Body:          d.Body,
			})
			if err != nil {
				d.Nack(false, true) //nolint:errcheck // the connection is going
				continue
			}
			d.Ack(false) //nolint:errcheck // the connection is going
		}
	}()

	if r.cli, err = r.cliConn.Channel(); err != nil {
		return err
	}
	replies, err := r.cli.Consume(directReplyTo, "", true, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", directReplyTo, err)
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for d := range replies {
			r.corr.deliver(d.CorrelationId, d.Body)
		}
	}()
	return nil
}

func (r *rawAMQP) Do(ctx context.Context) error {
	return r.corr.call(ctx, len(r.body), func(id string) error {
		return r.cli.PublishWithContext(ctx, "", r.queue, false, false, amqp091.Publishing{
			ContentType:   "application/octet-stream",
			CorrelationId: id,
			ReplyTo:       directReplyTo,
			Body:          r.body,
		})
	})
}

func (r *rawAMQP) Describe() string {
	return fmt.Sprintf("amqp091 publish with direct reply-to and correlation ids on one channel; responder consumes a queue, prefetch %d, acks after replying; two connections", rawPrefetch)
}

func (r *rawAMQP) Broker() string {
	p, _ := r.cliConn.Properties["product"].(string)
	v, _ := r.cliConn.Properties["version"].(string)
	return p + " " + v
}

func (r *rawAMQP) Close() error {
	err := closeEach((*amqp091.Connection).Close, amqp091.ErrClosed, r.cliConn, r.srvConn)
	r.wg.Wait()
	return err
}
