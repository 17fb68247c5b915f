package main

// Raw publish throughput, the reference for bench -stream -raw: the same
// bytes published with the broker's bare client library, in messages as
// large as the broker takes (capped by -raw-msg), to a subscriber on a
// second connection. As with a stream, the publisher generates every byte
// (fillGen) and the subscriber checks every byte against the generator
// (genChecker), so both runners do the same work per byte outside the
// transport. There is no flow control beyond the broker's and TCP's own:
// this is the rate the broker carries one-way traffic at, which a stream
// (with its credit round trips and HTTP framing) can approach but not
// pass.

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

// windowedRaw: the schemes whose raw publisher takes -raw-window.
var windowedRaw = map[string]bool{"nats": true, "tls": true, "stomp": true}

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
// subscriber and checks them against the generator, in the order they
// arrive; messages of any other transfer are ignored.
type byteCounter struct {
	seq       atomic.Uint64
	mu        sync.Mutex
	id        string
	want, got int64
	chk       *genChecker
	done      chan struct{}
}

// expect starts a transfer of want bytes and returns its id and a channel
// closed when they all arrived.
func (c *byteCounter) expect(want int64) (string, <-chan struct{}) {
	id := runID + "." + strconv.FormatUint(c.seq.Add(1), 10)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.chk == nil {
		c.chk = newGenChecker()
	}
	c.chk.off, c.chk.bad = 0, -1
	c.id, c.want, c.got, c.done = id, want, 0, make(chan struct{})
	if want == 0 {
		close(c.done)
	}
	return id, c.done
}

func (c *byteCounter) add(id string, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id != c.id || c.done == nil {
		return
	}
	c.chk.Write(b)
	was := c.got
	c.got += int64(len(b))
	if was < c.want && c.got >= c.want {
		close(c.done)
	}
}

func (c *byteCounter) received() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got
}

// firstBad is the offset of the first byte of the transfer that differed
// from the generator, or -1.
func (c *byteCounter) firstBad() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.chk.bad
}

// rawWindow is raw publish's flow control with -raw-window, as a stream
// has (transport.DefaultWindowBytes): the subscriber reports the bytes of a
// transfer it consumed, through the broker, each time half a window more
// arrived; the publisher starts a message only while the bytes it sent
// and the subscriber has not reported are fewer than size.
type rawWindow struct {
	size int64
	mu   sync.Mutex
	id   string
	// Publisher side: the latest report. Subscriber side: what was last
	// reported.
	consumed, reported int64
	wake               chan struct{}
	// ahead is the most bytes found sent and not reported when a message
	// was let start (for tests: always below size).
	ahead int64
}

func newRawWindow(size int) *rawWindow {
	if size <= 0 {
		return nil
	}
	return &rawWindow{size: int64(size), wake: make(chan struct{}, 1)}
}

// start begins transfer id at both ends (one process holds both).
func (w *rawWindow) start(id string) {
	w.mu.Lock()
	w.id, w.consumed, w.reported = id, 0, 0
	w.mu.Unlock()
}

// due, on the subscriber's side, says whether to report got consumed bytes
// of transfer id now.
func (w *rawWindow) due(id string, got int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if id != w.id || got-w.reported < w.size/2 {
		return false
	}
	w.reported = got
	return true
}

// report takes a report of the subscriber on the publisher's side: body
// is "ID CONSUMED".
func (w *rawWindow) report(body []byte) {
	id, n, ok := strings.Cut(string(body), " ")
	v, err := strconv.ParseInt(n, 10, 64)
	if !ok || err != nil {
		return
	}
	w.mu.Lock()
	if id == w.id && v > w.consumed {
		w.consumed = v
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// describe is the flow control for a raw client's description.
func (w *rawWindow) describe() string {
	if w == nil {
		return ""
	}
	return fmt.Sprintf("; flow control as a stream's: at most %d bytes sent and not reported consumed by the subscriber, reported through the broker every %d bytes", w.size, w.size/2)
}

// wait blocks until a message may start after sent bytes.
func (w *rawWindow) wait(ctx context.Context, sent int64) error {
	for {
		w.mu.Lock()
		ok := sent-w.consumed < w.size
		if ok {
			w.ahead = max(w.ahead, sent-w.consumed)
		}
		w.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-w.wake:
		case <-ctx.Done():
			return fmt.Errorf("%w: no report from the subscriber after %d bytes", ctx.Err(), sent)
		}
	}
}

// publishAll publishes size generated bytes in messages of at most msg
// bytes with pub, calls flush, and waits for the subscriber. Each message
// is generated into buf, reused from message to message; with buf nil, a
// new buffer each (for a client whose publish returns before it wrote the
// bytes). With w, a message starts only within w's window. Errors: pub's
// and flush's, ctx's, and a transfer whose bytes arrived different from
// those sent.
func publishAll(ctx context.Context, c *byteCounter, w *rawWindow, size int64, msg int, buf []byte,
	pub func(id string, b []byte) error, flush func(context.Context) error, why func() string) error {
	id, done := c.expect(size)
	if w != nil {
		w.start(id)
	}
	for sent := int64(0); sent < size; {
		if w != nil {
			if err := w.wait(ctx, sent); err != nil {
				return err
			}
		}
		k := int(min(int64(msg), size-sent))
		b := buf
		if b == nil {
			b = make([]byte, k)
		}
		fillGen(b[:k], sent)
		if err := pub(id, b[:k]); err != nil {
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
		if bad := c.firstBad(); bad >= 0 {
			return fmt.Errorf("the subscriber received the %d bytes different from those published, from byte %d", size, bad)
		}
		return nil
	case <-ctx.Done():
		extra := ""
		if why != nil {
			extra = why()
		}
		return fmt.Errorf("%w: the subscriber counted %d of %d bytes%s", ctx.Err(), c.received(), size, extra)
	}
}

// rawNATSPublish: nats.go Publish on one connection, a plain Subscribe on
// another that checks and counts; the transfer id is the subject's last
// token.
type rawNATSPublish struct {
	pub, sub *natsgo.Conn
	s        *natsgo.Subscription
	subject  string
	msg      int
	buf      []byte
	c        byteCounter
	w        *rawWindow // -raw-window; reports go to subject's ".credit" twin
}

func openRawNATSPublish(ctx context.Context, u *url.URL, name string, cfg benchConfig) (rawStreamer, error) {
	servers := natsServers(u)
	r := &rawNATSPublish{subject: "httpbus-bench-rawstream." + name + "." + strings.ReplaceAll(runID, ".", "-"), w: newRawWindow(cfg.RawWindow)}
	credit := "httpbus-bench-rawcredit." + name + "." + strings.ReplaceAll(runID, ".", "-")
	var err error
	if r.sub, err = natsgo.Connect(servers, natsgo.Name("httpbus-bench-rawstream-subscriber")); err != nil {
		return nil, fmt.Errorf("connect %s: %w", u.Redacted(), err)
	}
	r.s, err = r.sub.Subscribe(r.subject+".>", func(m *natsgo.Msg) {
		id := strings.TrimPrefix(m.Subject, r.subject+".")
		r.c.add(id, m.Data)
		if got := r.c.received(); r.w != nil && r.w.due(id, got) {
			r.sub.Publish(credit, []byte(id+" "+strconv.FormatInt(got, 10))) //nolint:errcheck // the publisher times out
		}
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
	if r.w != nil {
		if _, err = r.pub.Subscribe(credit, func(m *natsgo.Msg) { r.w.report(m.Data) }); err == nil {
			fctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
			err = r.pub.FlushWithContext(fctx)
			cancel()
		}
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("subscribe %s: %w", credit, err)
		}
	}
	r.msg = rawMsgBytes(cfg, r.pub.MaxPayload())
	r.buf = make([]byte, r.msg) // nats.go copies what it publishes
	return r, nil
}

func (r *rawNATSPublish) Transfer(ctx context.Context, size int64) error {
	return publishAll(ctx, &r.c, r.w, size, r.msg, r.buf,
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
	return "nats.go Publish, a Subscribe on a second connection checking and counting the bytes (no pending limits)" + r.w.describe()
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
	r.buf = make([]byte, r.msg) // amqp091 writes what it publishes before returning
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
			r.c.add(d.MessageId, d.Body)
		}
	}()
	r.pub, err = r.pubConn.Channel()
	return err
}

func (r *rawAMQPPublish) Transfer(ctx context.Context, size int64) error {
	return publishAll(ctx, &r.c, nil, size, r.msg, r.buf, func(id string, b []byte) error {
		return r.pub.PublishWithContext(ctx, "", r.queue, false, false, amqp091.Publishing{
			ContentType: "application/octet-stream", MessageId: id, Body: b,
		})
	}, nil, nil)
}

func (r *rawAMQPPublish) MsgBytes() int { return r.msg }
func (r *rawAMQPPublish) Describe() string {
	return "amqp091 publish (transient, no confirms) to an exclusive queue, a no-ack consumer on a second connection checking and counting the bytes"
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
	s, cs    *stompgo.Subscription // cs: -raw-window's reports, on pub
	dest     string
	msg      int
	buf      []byte
	c        byteCounter
	w        *rawWindow
	wg       sync.WaitGroup
	closing  atomic.Bool
}

const headerTransfer = "httpbus-bench-transfer"

func openRawSTOMPPublish(ctx context.Context, u *url.URL, name string, cfg benchConfig) (rawStreamer, error) {
	// One queue per service name (not per run): RabbitMQ keeps a /queue/
	// it created. Messages of an earlier, interrupted run are skipped by
	// their transfer id.
	r := &rawSTOMPPublish{dest: "/queue/httpbus-bench-rawstream." + name, w: newRawWindow(cfg.RawWindow)}
	credit := "/queue/httpbus-bench-rawcredit." + name
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
	if r.w != nil {
		if r.cs, err = r.pub.Subscribe(credit, stompgo.AckAuto); err != nil {
			r.Close()
			return nil, fmt.Errorf("subscribe %s: %w", credit, err)
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for m := range r.cs.C {
				if m.Err == nil {
					r.w.report(m.Body)
				}
			}
		}()
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for m := range s.C {
			if m.Err != nil {
				continue
			}
			id := m.Header.Get(headerTransfer)
			r.c.add(id, m.Body)
			if got := r.c.received(); r.w != nil && r.w.due(id, got) {
				r.sub.Send(credit, "text/plain", []byte(id+" "+strconv.FormatInt(got, 10))) //nolint:errcheck // the publisher times out
			}
		}
	}()
	r.msg = rawMsgBytes(cfg, 0)
	// r.buf stays nil: go-stomp's Send hands the frame to its writer
	// goroutine and returns, so each message gets its own buffer.
	return r, nil
}

func (r *rawSTOMPPublish) Transfer(ctx context.Context, size int64) error {
	return publishAll(ctx, &r.c, r.w, size, r.msg, r.buf, func(id string, b []byte) error {
		return r.pub.Send(r.dest, "application/octet-stream", b, stompgo.SendOpt.Header(headerTransfer, id))
	}, nil, nil)
}

func (r *rawSTOMPPublish) MsgBytes() int { return r.msg }
func (r *rawSTOMPPublish) Describe() string {
	return "go-stomp SEND to " + r.dest + ", a subscription with auto ack on a second connection checking and counting the bytes" + r.w.describe()
}
func (r *rawSTOMPPublish) Broker() string { return r.pub.Server() }
func (r *rawSTOMPPublish) Close() error {
	if !r.closing.CompareAndSwap(false, true) {
		return nil
	}
	// Before Disconnect, which go-stomp logs as an error on each
	// subscription still open.
	for _, s := range []*stompgo.Subscription{r.s, r.cs} {
		if s != nil {
			s.Unsubscribe() //nolint:errcheck // disconnecting anyway
		}
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
	return "net/http POST of the body to a net/http Server on loopback that counts it and takes its CRC-32C, as /upload does"
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
