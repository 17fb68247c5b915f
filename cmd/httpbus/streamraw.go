package main

// Raw publish throughput, the reference for bench -stream -raw: the same
// number of bytes published with the broker's bare client library, in
// messages as large as the broker takes (capped by -raw-msg), to a
// subscriber on a second connection that only counts them. There is no
// flow control beyond the broker's and TCP's own: this is the rate the
// broker carries one-way traffic at, which a stream (with its credit
// round trips and HTTP framing) can approach but not pass.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	stompgo "github.com/go-stomp/stomp/v3"
	natsgo "github.com/nats-io/nats.go"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// defaultRawMsgBytes caps a raw message where -raw-msg is not given: NATS's
// default max_payload, well under RabbitMQ's and ActiveMQ's limits.
const defaultRawMsgBytes = 1 << 20

// rawStreamer publishes one transfer of size bytes and waits until its
// subscriber counted all of them.
type rawStreamer interface {
	Transfer(ctx context.Context, size int64) error
	// MsgBytes is the size of each message but the last, in bytes (0 where
	// the transfer is not cut into messages).
	MsgBytes() int
	Describe() string
	Broker() string
	Close() error
}

type rawStreamOpener func(ctx context.Context, u *url.URL, name string, cfg benchConfig) (rawStreamer, error)

var rawStreamOpeners = map[string]rawStreamOpener{
	"nats": openRawNATSPublish, "tls": openRawNATSPublish,
	"amqp": openRawAMQPPublish, "amqps": openRawAMQPPublish,
	"stomp": openRawSTOMPPublish,
	"tcp":   openRawTCPUpload,
}

func rawStreamSchemes() []string {
	var out []string
	for s := range rawStreamOpeners {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// rawMsgBytes is -raw-msg, or defaultRawMsgBytes, at most the broker's max.
func rawMsgBytes(cfg benchConfig, brokerMax int64) int {
	n := int64(defaultRawMsgBytes)
	if cfg.RawMsg > 0 {
		n = int64(cfg.RawMsg)
	}
	if brokerMax > 0 && n > brokerMax {
		n = brokerMax
	}
	return int(n)
}

// runID tells this process's raw destinations and transfers from those of
// other runs.
var runID = fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano()%1e9)

// byteCounter counts the bytes of the current transfer that reach a
// subscriber; messages of any other transfer are ignored.
type byteCounter struct {
	seq       atomic.Uint64
	mu        sync.Mutex
	id        string
	want, got int64
	done      chan struct{}
}

// expect starts a transfer of want bytes and returns its id and a channel
// closed when they all arrived.
func (c *byteCounter) expect(want int64) (string, <-chan struct{}) {
	id := runID + "." + strconv.FormatUint(c.seq.Add(1), 10)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.id, c.want, c.got, c.done = id, want, 0, make(chan struct{})
	if want == 0 {
		close(c.done)
	}
	return id, c.done
}

func (c *byteCounter) add(id string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id != c.id || c.done == nil {
		return
	}
	was := c.got
	c.got += int64(n)
	if was < c.want && c.got >= c.want {
		close(c.done)
	}
}

func (c *byteCounter) received() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got
}

// publishAll publishes size bytes in messages of at most msg bytes (taken
// from buf) with pub, calls flush, and waits for the subscriber.
func publishAll(ctx context.Context, c *byteCounter, size int64, msg int, buf []byte,
	pub func(id string, b []byte) error, flush func(context.Context) error, why func() string) error {
	id, done := c.expect(size)
	for sent := int64(0); sent < size; {
		k := int(min(int64(msg), size-sent))
		if err := pub(id, buf[:k]); err != nil {
			return fmt.Errorf("publish after %d of %d bytes: %w", sent, size, err)
		}
		sent += int64(k)
	}
	if flush != nil {
		if err := flush(ctx); err != nil {
			return err
		}
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		extra := ""
		if why != nil {
			extra = why()
		}
		return fmt.Errorf("%w: the subscriber counted %d of %d bytes%s", ctx.Err(), c.received(), size, extra)
	}
}

// genBytes returns n bytes of the generator.
func genBytes(n int) []byte {
	b := make([]byte, n)
	fillGen(b, 0)
	return b
}

// rawNATSPublish: nats.go Publish on one connection, a plain Subscribe on
// another that counts; the transfer id is the subject's last token.
type rawNATSPublish struct {
	pub, sub *natsgo.Conn
	s        *natsgo.Subscription
	subject  string
	msg      int
	buf      []byte
	c        byteCounter
}

func openRawNATSPublish(ctx context.Context, u *url.URL, name string, cfg benchConfig) (rawStreamer, error) {
	servers := natsServers(u)
	r := &rawNATSPublish{subject: "httpbus-bench-rawstream." + name + "." + strings.ReplaceAll(runID, ".", "-")}
	var err error
	if r.sub, err = natsgo.Connect(servers, natsgo.Name("httpbus-bench-rawstream-subscriber")); err != nil {
		return nil, fmt.Errorf("connect %s: %w", u.Redacted(), err)
	}
	r.s, err = r.sub.Subscribe(r.subject+".>", func(m *natsgo.Msg) {
		r.c.add(strings.TrimPrefix(m.Subject, r.subject+"."), len(m.Data))
	})
	if err == nil {
		// The counter never falls behind for long; no client-side drops.
		err = r.s.SetPendingLimits(-1, -1)
	}
	if err == nil {
		fctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		err = r.sub.FlushWithContext(fctx)
		cancel()
	}
	if err != nil {
		r.sub.Close()
		return nil, err
	}
	if r.pub, err = natsgo.Connect(servers, natsgo.Name("httpbus-bench-rawstream-publisher")); err != nil {
		r.sub.Close()
		return nil, fmt.Errorf("connect %s: %w", u.Redacted(), err)
	}
	r.msg = rawMsgBytes(cfg, r.pub.MaxPayload())
	r.buf = genBytes(r.msg)
	return r, nil
}

func (r *rawNATSPublish) Transfer(ctx context.Context, size int64) error {
	return publishAll(ctx, &r.c, size, r.msg, r.buf,
		func(id string, b []byte) error { return r.pub.Publish(r.subject+"."+id, b) },
		func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, defaultStreamTimeout)
				defer cancel()
			}
			return r.pub.FlushWithContext(ctx)
		},
		func() string {
			n, _ := r.s.Dropped()
			return fmt.Sprintf(" (%d messages dropped as a slow consumer)", n)
		})
}

func (r *rawNATSPublish) MsgBytes() int { return r.msg }
func (r *rawNATSPublish) Describe() string {
	return "nats.go Publish, a Subscribe on a second connection counting bytes (no pending limits)"
}
func (r *rawNATSPublish) Broker() string { return "nats-server " + r.pub.ConnectedServerVersion() }
func (r *rawNATSPublish) Close() error {
	r.pub.Close()
	r.sub.Close()
	return nil
}

// rawAMQPPublish: amqp091 publish (transient, no confirms) to a
// server-named exclusive queue that a no-ack consumer on a second
// connection counts; the transfer id is the message id.
type rawAMQPPublish struct {
	pubConn, subConn *amqp091.Connection
	pub              *amqp091.Channel
	queue            string
	msg              int
	buf              []byte
	c                byteCounter
	wg               sync.WaitGroup
}

func openRawAMQPPublish(ctx context.Context, u *url.URL, name string, cfg benchConfig) (rawStreamer, error) {
	r := &rawAMQPPublish{}
	var err error
	if r.subConn, err = dialRawAMQP(u, "stream-consumer"); err != nil {
		return nil, err
	}
	if r.pubConn, err = dialRawAMQP(u, "stream-publisher"); err != nil {
		r.subConn.Close()
		return nil, err
	}
	if err := r.start(); err != nil {
		r.Close()
		return nil, err
	}
	r.msg = rawMsgBytes(cfg, 0)
	r.buf = genBytes(r.msg)
	return r, nil
}

func (r *rawAMQPPublish) start() error {
	ch, err := r.subConn.Channel()
	if err != nil {
		return err
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		return fmt.Errorf("declare a queue: %w", err)
	}
	r.queue = q.Name
	ds, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		return err
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for d := range ds {
			r.c.add(d.MessageId, len(d.Body))
		}
	}()
	r.pub, err = r.pubConn.Channel()
	return err
}

func (r *rawAMQPPublish) Transfer(ctx context.Context, size int64) error {
	return publishAll(ctx, &r.c, size, r.msg, r.buf, func(id string, b []byte) error {
		return r.pub.PublishWithContext(ctx, "", r.queue, false, false, amqp091.Publishing{
			ContentType: "application/octet-stream", MessageId: id, Body: b,
		})
	}, nil, nil)
}

func (r *rawAMQPPublish) MsgBytes() int { return r.msg }
func (r *rawAMQPPublish) Describe() string {
	return "amqp091 publish (transient, no confirms) to an exclusive queue, a no-ack consumer on a second connection counting bytes"
}
func (r *rawAMQPPublish) Broker() string {
	p, _ := r.pubConn.Properties["product"].(string)
	v, _ := r.pubConn.Properties["version"].(string)
	return p + " " + v
}
func (r *rawAMQPPublish) Close() error {
	err := closeEach((*amqp091.Connection).Close, amqp091.ErrClosed, r.pubConn, r.subConn)
	r.wg.Wait()
	return err
}

// rawSTOMPPublish: go-stomp SEND to /queue/NAME, a subscription with auto
// ack on a second connection counting; the transfer id is a header.
type rawSTOMPPublish struct {
	pub, sub *stompgo.Conn
	s        *stompgo.Subscription
	dest     string
	msg      int
	buf      []byte
	c        byteCounter
	wg       sync.WaitGroup
	closing  atomic.Bool
}

const headerTransfer = "httpbus-bench-transfer"

func openRawSTOMPPublish(ctx context.Context, u *url.URL, name string, cfg benchConfig) (rawStreamer, error) {
	// One queue per service name (not per run): RabbitMQ keeps a /queue/
	// it created. Messages of an earlier, interrupted run are skipped by
	// their transfer id.
	r := &rawSTOMPPublish{dest: "/queue/httpbus-bench-rawstream." + name}
	var err error
	if r.sub, err = dialRawSTOMP(ctx, u); err != nil {
		return nil, err
	}
	if r.pub, err = dialRawSTOMP(ctx, u); err != nil {
		r.sub.Disconnect() //nolint:errcheck // failing anyway
		return nil, err
	}
	s, err := r.sub.Subscribe(r.dest, stompgo.AckAuto)
	r.s = s
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("subscribe %s: %w", r.dest, err)
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for m := range s.C {
			if m.Err == nil {
				r.c.add(m.Header.Get(headerTransfer), len(m.Body))
			}
		}
	}()
	r.msg = rawMsgBytes(cfg, 0)
	r.buf = genBytes(r.msg)
	return r, nil
}

func (r *rawSTOMPPublish) Transfer(ctx context.Context, size int64) error {
	return publishAll(ctx, &r.c, size, r.msg, r.buf, func(id string, b []byte) error {
		return r.pub.Send(r.dest, "application/octet-stream", b, stompgo.SendOpt.Header(headerTransfer, id))
	}, nil, nil)
}

func (r *rawSTOMPPublish) MsgBytes() int { return r.msg }
func (r *rawSTOMPPublish) Describe() string {
	return "go-stomp SEND to " + r.dest + ", a subscription with auto ack on a second connection counting bytes"
}
func (r *rawSTOMPPublish) Broker() string { return r.pub.Server() }
func (r *rawSTOMPPublish) Close() error {
	if !r.closing.CompareAndSwap(false, true) {
		return nil
	}
	if r.s != nil {
		// Before Disconnect, which go-stomp logs as an error on each
		// subscription still open.
		r.s.Unsubscribe() //nolint:errcheck // disconnecting anyway
	}
	err := closeEach((*stompgo.Conn).Disconnect, stompgo.ErrAlreadyClosed, r.pub, r.sub)
	r.wg.Wait()
	return err
}

// rawTCPUpload: net/http POST of the generated body to an http.Server on
// loopback whose handler counts it (uploadHandler): the one-way rate of
// HTTP/1.1 over TCP without httpbus.
type rawTCPUpload struct {
	srv    *http.Server
	done   chan error
	tr     *http.Transport
	client *streamClient
}

func openRawTCPUpload(ctx context.Context, u *url.URL, name string, cfg benchConfig) (rawStreamer, error) {
	ln, err := listenRaw(ctx, u)
	if err != nil {
		return nil, err
	}
	r := &rawTCPUpload{
		srv:  &http.Server{Handler: serviceHandler(), ReadHeaderTimeout: 10 * time.Second},
		done: make(chan error, 1),
		tr:   &http.Transport{DisableCompression: true},
	}
	r.client = &streamClient{client: &http.Client{Transport: r.tr}, service: ln.Addr().String()}
	go func() { r.done <- r.srv.Serve(ln) }()
	return r, nil
}

func (r *rawTCPUpload) Transfer(ctx context.Context, size int64) error { return r.client.up(ctx, size) }
func (r *rawTCPUpload) MsgBytes() int                                  { return 0 }
func (r *rawTCPUpload) Describe() string {
	return "net/http POST of the body to a net/http Server on loopback that counts it"
}
func (r *rawTCPUpload) Broker() string { return "" }
func (r *rawTCPUpload) Close() error {
	r.tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := r.srv.Shutdown(ctx)
	if serr := <-r.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// closeEach closes each non-nil connection of a raw twin with close (a
// method expression such as (*amqp091.Connection).Close), takes
// alreadyClosed as success, and returns the other errors joined.
func closeEach[T any](close func(*T) error, alreadyClosed error, conns ...*T) error {
	var errs []error
	for _, c := range conns {
		if c != nil {
			if err := close(c); err != nil && !errors.Is(err, alreadyClosed) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
