package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	stompgo "github.com/go-stomp/stomp/v3"
	"github.com/go-stomp/stomp/v3/frame"
)

func init() { registerRaw(openRawSTOMP, "stomp") }

// rawSTOMP is go-stomp request/reply: the requester SENDs to /queue/NAME
// with reply-to a /temp-queue and a correlation-id; the responder subscribes
// /queue/NAME with client-individual acks, SENDs the body to the reply-to
// address with the same correlation-id, then acks (reply before ack, as
// httpbus does).
//
// The reply subscription differs by broker (shared/brokers/README.md):
// ActiveMQ needs an explicit SUBSCRIBE to /temp-queue/NAME; RabbitMQ
// subscribes the session implicitly on the first SEND and rejects an
// explicit SUBSCRIBE, so go-stomp only registers the subscription locally
// (SubscribeOpt.Header("reply-to", ...)).
type rawSTOMP struct {
	srv, cli *stompgo.Conn
	dest     string // /queue/NAME
	replyTo  string // /temp-queue/NAME
	body     []byte
	corr     correlator
	wg       sync.WaitGroup
	closing  atomic.Bool
}

func openRawSTOMP(ctx context.Context, u *url.URL, name string, body []byte, cfg benchConfig) (rawRunner, error) {
	dial := func() (*stompgo.Conn, error) { return dialRawSTOMP(ctx, u) }
	r := &rawSTOMP{
		dest:    "/queue/httpbus-bench-raw." + name,
		replyTo: "/temp-queue/httpbus-bench-raw-reply." + name,
		body:    body,
	}
	var err error
	if r.srv, err = dial(); err != nil {
		return nil, err
	}
	if r.cli, err = dial(); err != nil {
		r.srv.Disconnect() //nolint:errcheck // failing anyway
		return nil, err
	}
	if err := r.start(); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// dialRawSTOMP connects to the broker of a stomp URL as the stomp backend
// reads it: login only when the URL has one, the virtual host from option
// vhost (default "/"), port 61613 when none is given.
func dialRawSTOMP(ctx context.Context, u *url.URL) (*stompgo.Conn, error) {
	vhost := u.Query().Get("vhost")
	if vhost == "" {
		vhost = "/"
	}
	opts := []func(*stompgo.Conn) error{stompgo.ConnOpt.Host(vhost), stompgo.ConnOpt.AcceptVersion(stompgo.V12, stompgo.V11)}
	if u.User != nil {
		pass, _ := u.User.Password()
		opts = append(opts, stompgo.ConnOpt.Login(u.User.Username(), pass))
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "61613")
	}
	c, err := stompgo.DialWithContext(ctx, "tcp", addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", u.Redacted(), err)
	}
	return c, nil
}

func (r *rawSTOMP) isRabbitMQ() bool { return strings.HasPrefix(r.cli.Server(), "RabbitMQ") }

func (r *rawSTOMP) start() error {
	if !r.isRabbitMQ() {
		// ActiveMQ answers a SEND to a temp queue that is gone with an
		// ERROR frame that closes the connection, so a request left in the
		// queue by an earlier, interrupted run would kill this responder:
		// use a queue of this process's own. (RabbitMQ drops such replies,
		// and would keep a durable queue per name: the name stays fixed.)
		r.dest += fmt.Sprintf(".%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	}
	prefetch := strconv.Itoa(rawPrefetch)
	sub, err := r.srv.Subscribe(r.dest, stompgo.AckClientIndividual,
		stompgo.SubscribeOpt.Header("activemq.prefetchSize", prefetch),
		stompgo.SubscribeOpt.Header("prefetch-count", prefetch))
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", r.dest, err)
	}
	// go-stomp reads and writes a connection in one goroutine: while it
	// hands a MESSAGE to a subscription it writes nothing, so a responder
	// that SENDs from the goroutine reading sub.C deadlocks once more
	// messages are in flight (prefetch) than the channels hold. The reader
	// below therefore never blocks: it queues, and a second goroutine sends.
	queue := make(chan *stompgo.Message, rawPrefetch+64)
	r.wg.Add(2)
	go func() {
		defer r.wg.Done()
		defer close(queue)
		for m := range sub.C {
			if m.Err == nil {
				queue <- m
			}
		}
	}()
	go func() {
		defer r.wg.Done()
		for m := range queue {
			err := r.srv.Send(m.Header.Get("reply-to"), m.ContentType, m.Body,
				stompgo.SendOpt.Header("correlation-id", m.Header.Get("correlation-id")))
			if err != nil {
				continue
			}
			r.srv.Ack(m) //nolint:errcheck // the connection is going
		}
	}()

	var replies *stompgo.Subscription
	if r.isRabbitMQ() {
		replies, err = r.cli.Subscribe(r.replyTo, stompgo.AckAuto, stompgo.SubscribeOpt.Header("reply-to", r.replyTo))
	} else {
		replies, err = r.cli.Subscribe(r.replyTo, stompgo.AckAuto)
	}
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", r.replyTo, err)
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for m := range replies.C {
			if m.Err != nil {
				continue
			}
			id := m.Header.Get("correlation-id")
			r.corr.deliver(id, m.Body)
		}
	}()
	return nil
}

func (r *rawSTOMP) Do(ctx context.Context) error {
	return r.corr.call(ctx, len(r.body), func(id string) error {
		opts := []func(*frame.Frame) error{
			stompgo.SendOpt.Header("reply-to", r.replyTo),
			stompgo.SendOpt.Header("correlation-id", id),
		}
		// A request left in the queue by an earlier run must expire: answering
		// it to a temp queue that is gone makes ActiveMQ close the responder's
		// connection with an ERROR frame. ActiveMQ reads "expires" (absolute
		// Unix ms), RabbitMQ "expiration" (a TTL in ms).
		if dl, ok := ctx.Deadline(); ok {
			opts = append(opts,
				stompgo.SendOpt.Header("expires", strconv.FormatInt(dl.UnixMilli(), 10)),
				stompgo.SendOpt.Header("expiration", strconv.FormatInt(max(time.Until(dl).Milliseconds(), 1), 10)))
		}
		return r.cli.Send(r.dest, "application/octet-stream", r.body, opts...)
	})
}

func (r *rawSTOMP) Describe() string {
	return "go-stomp SEND with reply-to " + r.replyTo + " and correlation-id; responder subscribes with client-individual acks, acks after replying; two connections"
}

func (r *rawSTOMP) Broker() string { return r.cli.Server() }

func (r *rawSTOMP) Close() error {
	if !r.closing.CompareAndSwap(false, true) {
		return nil
	}
	err := closeEach((*stompgo.Conn).Disconnect, stompgo.ErrAlreadyClosed, r.cli, r.srv)
	r.wg.Wait()
	return err
}
