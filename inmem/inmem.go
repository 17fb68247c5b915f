// Package inmem is the in-process backend of httpbus: servers and callers
// in one process exchange the same frames a broker would carry (every
// request and response is encoded and decoded), with no network. Use it to
// unit-test handlers (see package handlertest) and to wire services inside
// one binary.
//
// # URLs
//
//	mem://orders?topics=orders.created   Listen: serve service "orders" on Default
//	mem://                               Dial: call any service on Default
//
// # Delivery
//
// The servers of one service compete for its requests: the first free
// server takes the next request, and servers waiting for work are served in
// turn (round robin when idle). A request to a service with no server fails
// at once with transport.ErrNoResponders (503). Each notification is
// delivered to each subscribing service once, to one of its instances;
// notifications wait in a per-service queue of NotificationQueue entries
// while every instance is busy. Nothing survives the process; a request a
// server has taken is always answered, even if its listener closes while the
// handler runs.
package inmem

import (
	"context"
	"fmt"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/httpbus/httpbus/transport"
)

// NotificationQueue is the number of notifications a service buffers while
// all its servers are busy; Publish blocks (until its context ends) when
// the buffer is full.
const NotificationQueue = 4096

func init() {
	transport.Register(listenURL, dialURL, "mem")
}

// Default is the process-wide bus that mem:// URLs use.
var Default = NewBus()

// Bus is a registry of services and topic subscriptions, the in-process
// stand-in for a broker. The zero value is not usable; call NewBus.
type Bus struct {
	mu       sync.Mutex
	services map[string]*service
	inboxes  map[string]*inbox
	nextBox  uint64

	// calls counts the calls in flight on the bus, and procs is
	// GOMAXPROCS as the bus first read it (see yield).
	calls atomic.Int64
	procs atomic.Int64
}

// NewBus returns an empty bus, isolated from Default.
func NewBus() *Bus { return &Bus{services: map[string]*service{}, inboxes: map[string]*inbox{}} }

type service struct {
	name      string
	requests  chan *transport.Delivery
	notes     chan *transport.Delivery
	topics    map[string]int // topic → subscribing instances
	listeners int
	gone      chan struct{} // closed when the last listener leaves
}

type call struct {
	d    transport.Delivery // the request, allocated with its call
	done chan struct{}      // buffered 1: resp is set
	resp *transport.Message // the reply; nil if the service closed without one
	msg  transport.Message  // resp's storage: a reply is a copy, allocated with its call
	svc  *service
	held bool // a transport.Hold reply went out: the final Reply only settles
}

// answer hands the caller resp (nil: no reply). It never blocks: a call
// is answered once (Reply returns early after a Hold).
func (c *call) answer(resp *transport.Message) {
	c.resp = resp
	c.done <- struct{}{}
}

// Listen returns a server side for lc.Service on b, subscribed to
// lc.Topics. It does not block; ctx is there so that every backend opens
// with one shape (ctx first). Errors: an empty service name.
func (b *Bus) Listen(ctx context.Context, lc transport.ListenConfig) (*Listener, error) {
	if lc.Service == "" {
		return nil, fmt.Errorf("transport/inmem: no service name")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	svc := b.services[lc.Service]
	if svc == nil {
		svc = &service{
			name:     lc.Service,
			requests: make(chan *transport.Delivery),
			notes:    make(chan *transport.Delivery, NotificationQueue),
			topics:   map[string]int{},
			gone:     make(chan struct{}),
		}
		b.services[lc.Service] = svc
	}
	svc.listeners++
	for _, t := range lc.Topics {
		svc.topics[t]++
	}
	l := &Listener{bus: b, svc: svc, topics: lc.Topics, done: make(chan struct{})}
	l.pushCtx, l.pushStop = context.WithCancel(context.Background())
	return l, nil
}

// Dial returns a client side of b. It does not block and the error is
// always nil: both are there so that every backend opens with one shape
// (ctx first, an error last).
func (b *Bus) Dial(ctx context.Context) (*Conn, error) {
	return &Conn{bus: b, done: make(chan struct{})}, nil
}

func (b *Bus) lookup(name string) *service {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.services[name]
}

func (b *Bus) subscribers(topic string) []*service {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*service
	for _, s := range b.services {
		if s.topics[topic] > 0 {
			out = append(out, s)
		}
	}
	return out
}

func (b *Bus) call(ctx context.Context, service string, m *transport.Message) (*transport.Message, error) {
	svc := b.lookup(service)
	if svc == nil {
		return nil, fmt.Errorf("transport/inmem: service %q: %w", service, transport.ErrNoResponders)
	}
	b.calls.Add(1)
	defer b.calls.Add(-1)
	c := &call{done: make(chan struct{}, 1), svc: svc}
	c.d = transport.Delivery{Message: *m, Service: service, RemoteAddr: "inmem", Token: c}
	d := &c.d
	select {
	case svc.requests <- d: // a worker was waiting (requests is unbuffered)
	default:
		// A select over three channels locks all three: only when no
		// worker waits.
		select {
		case svc.requests <- d:
		case <-svc.gone:
			return nil, fmt.Errorf("transport/inmem: service %q: %w", service, transport.ErrNoResponders)
		case <-ctx.Done():
			return nil, transport.ContextError(ctx)
		}
	}
	select {
	case <-c.done:
		r := c.resp
		if r == nil {
			return nil, fmt.Errorf("transport/inmem: service %q closed without replying: %w", service, transport.ErrUnavailable)
		}
		b.yield()
		return r, nil
	case <-ctx.Done():
		return nil, transport.ContextError(ctx)
	}
}

// yield lets other goroutines run before a caller that got its reply goes
// on, when more calls are in flight than there are Ps to run them. A
// reply is a channel send, which makes the caller the next goroutine to
// run on the server's P, and the caller's next request makes a server
// worker the next one again: a caller and a worker can pass the P back
// and forth for a whole 10 ms time slice while the other callers wait for
// it, which gave p50 ~20 µs against p99 3–4 ms at 32 callers on 2 cores
// (BENCHMARKS.md, the mem tail). Over a network the reply comes through
// the poller instead, and no such chain forms. With callers no more than
// Ps, nobody waits, and the yield (1–2 µs) is skipped.
func (b *Bus) yield() {
	procs := b.procs.Load()
	if procs == 0 {
		procs = int64(runtime.GOMAXPROCS(0))
		b.procs.Store(procs)
	}
	if b.calls.Load() > procs {
		runtime.Gosched()
	}
}

func (b *Bus) publish(ctx context.Context, topic string, m *transport.Message) error {
	for _, svc := range b.subscribers(topic) {
		d := &transport.Delivery{Message: *m, Service: svc.name, Topic: topic, RemoteAddr: "inmem"}
		select {
		case svc.notes <- d:
		case <-ctx.Done():
			return transport.ContextError(ctx)
		}
	}
	return nil
}

// Listener is the server side of one service on a Bus.
type Listener struct {
	ends      endpoint
	bus       *Bus
	svc       *service
	topics    []string
	mu        sync.Mutex
	done      chan struct{}
	closed    bool
	leaveOnce sync.Once

	// Push mode (Push): a pool of workers takes and serves deliveries,
	// up to the Server's in-flight bound (SetPrefetch).
	workers  transport.PullWorkers
	pushCtx  context.Context // ends when the Server stops its intake
	pushStop context.CancelFunc
}

// Receive implements transport.Listener. In push mode (Push) it only
// waits for the end: transport.ErrClosed after Drain or Close, ctx's error
// when ctx ends first, which also stops the workers from taking more
// deliveries (the Server has stopped its intake).
func (l *Listener) Receive(ctx context.Context) (*transport.Delivery, error) {
	if l.workers.Started() {
		select {
		case <-l.workers.Done():
			return nil, transport.ErrClosed
		case <-ctx.Done():
			l.pushStop()
			return nil, ctx.Err()
		}
	}
	return l.take(ctx)
}

// take returns the next request or notification for this listener.
func (l *Listener) take(ctx context.Context) (*transport.Delivery, error) {
	select {
	case <-l.done:
		return nil, transport.ErrClosed
	default:
	}
	select {
	case d := <-l.svc.requests:
		return d, nil
	case d := <-l.svc.notes:
		return d, nil
	case <-l.done:
		return nil, transport.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// SetPrefetch implements transport.Prefetcher, only to learn the Server's
// in-flight bound n: the most goroutines Push serves deliveries on at once,
// so that a request is taken from the service only by an instance that can
// run it at once (as in pull mode, where the Server takes a slot before
// Receive). Calls after Push are ignored; n below 1 counts as 1.
func (l *Listener) SetPrefetch(n int) { l.workers.SetMax(n) }

// Push implements transport.Pusher. transport.Server calls it before its
// first Receive; from then on a transport.PullWorkers pool takes each
// request and notification and serves it on the goroutine that took it,
// which saves a goroutine handoff per call (the Server's own worker). A
// delivery taken as the Server stops its intake goes back to the service
// (abandon).
func (l *Listener) Push(serve func(*transport.Delivery)) {
	l.workers.Start(l.pushCtx, l.take, serve, l.abandon)
}

// abandon gives back a delivery a worker took as the intake stopped: a
// request to the service (Reply with transport.Requeue), a notification to
// the service's queue unless that is full.
func (l *Listener) abandon(d *transport.Delivery) {
	if d.Token == nil {
		select {
		case l.svc.notes <- d:
		default:
		}
		return
	}
	l.Reply(context.Background(), d, nil, transport.Requeue) //nolint:errcheck // nil for a requeue
}

// Reply implements transport.Listener. A request settled with
// transport.Requeue is offered to the service again.
func (l *Listener) Reply(ctx context.Context, d *transport.Delivery, resp *transport.Message, disp transport.Disposition) error {
	c, _ := d.Token.(*call)
	if c == nil {
		return nil // a notification: nothing to answer
	}
	if c.held {
		if resp != nil && disp == transport.Hold {
			return fmt.Errorf("transport/inmem: a second Hold reply to one request")
		}
		return nil // answered already; nothing to settle in memory
	}
	if disp == transport.Requeue && resp == nil {
		d.Redelivered = true
		go func() {
			select {
			case c.svc.requests <- d:
			case <-c.svc.gone:
				c.answer(nil)
			}
		}()
		return nil
	}
	if resp == nil {
		c.answer(nil)
		return nil
	}
	c.msg = *resp
	c.msg.Header = resp.Header.Clone()
	c.held = disp == transport.Hold
	c.answer(&c.msg)
	return nil
}

// Publish sends a notification to topic, as Conn.Publish does (an extra:
// transport.Listener has no Publish).
func (l *Listener) Publish(ctx context.Context, topic string, m *transport.Message) error {
	return l.bus.publish(ctx, topic, m)
}

// Drain implements transport.Drainer: the listener takes no more requests
// and leaves the service (so new callers get ErrNoResponders once no
// instance is left). inmem holds no deliveries, so there is nothing to serve
// afterwards.
func (l *Listener) Drain() error {
	l.leave()
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		close(l.done)
	}
	return nil
}

// Close implements transport.Listener.
func (l *Listener) Close() error {
	l.Drain()
	l.pushStop()
	l.ends.close(l.bus)
	return nil
}

func (l *Listener) leave() {
	l.leaveOnce.Do(func() {
		b := l.bus
		b.mu.Lock()
		defer b.mu.Unlock()
		svc := l.svc
		svc.listeners--
		for _, t := range l.topics {
			if svc.topics[t]--; svc.topics[t] <= 0 {
				delete(svc.topics, t)
			}
		}
		if svc.listeners == 0 {
			delete(b.services, svc.name)
			close(svc.gone)
		}
	})
}

// Conn is the client side of a Bus.
type Conn struct {
	ends      endpoint
	bus       *Bus
	done      chan struct{}
	closeOnce sync.Once
}

func (c *Conn) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Call implements transport.Conn.
func (c *Conn) Call(ctx context.Context, service string, m *transport.Message) (*transport.Message, error) {
	if c.isClosed() {
		return nil, transport.ErrClosed
	}
	return c.bus.call(ctx, service, m)
}

// Publish implements transport.Conn.
func (c *Conn) Publish(ctx context.Context, topic string, m *transport.Message) error {
	if c.isClosed() {
		return transport.ErrClosed
	}
	return c.bus.publish(ctx, topic, m)
}

// Close implements transport.Conn.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() { close(c.done) })
	c.ends.close(c.bus)
	return nil
}

func listenURL(ctx context.Context, u *url.URL, cfg transport.ListenConfig) (transport.Listener, error) {
	if cfg.Service == "" {
		cfg.Service = u.Host
	}
	if err := transport.NewOptions("transport/inmem", u).Err(); err != nil {
		return nil, err
	}
	return Default.Listen(ctx, cfg)
}

func dialURL(ctx context.Context, u *url.URL) (transport.Conn, error) {
	if err := transport.NewOptions("transport/inmem", u).Err(); err != nil {
		return nil, err
	}
	return Default.Dial(ctx)
}
