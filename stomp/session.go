package stomp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	stompgo "github.com/go-stomp/stomp/v3"

	"github.com/httpbus/httpbus/transport"
)

// connectTimeout bounds one Redial plus resubscription.
const connectTimeout = 30 * time.Second

// disconnectWait bounds a graceful DISCONNECT at Close before the socket is
// closed without it. receiptTimeout bounds the wait for any other receipt.
// Neither may be zero (unbounded): go-stomp v3.1.5 can queue a frame after
// its I/O goroutine has exited, and its waiter would then wait forever
// while holding the connection's lock.
const (
	disconnectWait = 5 * time.Second
	receiptTimeout = 30 * time.Second
)

// link is one STOMP connection and what was set up on it. A session
// replaces its link when the connection is lost.
type link struct {
	c       *stompgo.Conn
	dialect Dialect
	gen     uint64
	owned   bool // dialled by this package: closed by it

	dead chan struct{}
	once sync.Once
	err  error

	mu    sync.Mutex
	subs  []linkSub
	temps int // ActiveMQ temporary queues this package created on c (see inbox.openActiveMQ)

	// calls are a Conn's calls waiting for a reply on this connection's
	// reply queue, by correlation id; unused on a Listener's links.
	calls transport.Calls[callResult]
}

type linkSub struct {
	sub   *stompgo.Subscription
	local bool // registered only in go-stomp (RabbitMQ's implicit temp-queue subscription)
}

func newLink(c *stompgo.Conn, d Dialect, owned bool) *link {
	return &link{c: c, dialect: d, owned: owned, dead: make(chan struct{})}
}

// markDead records the first failure; it reports whether this call did.
func (l *link) markDead(err error) bool {
	first := false
	l.once.Do(func() {
		l.err = err
		close(l.dead)
		first = true
	})
	return first
}

func (l *link) isDead() bool {
	select {
	case <-l.dead:
		return true
	default:
		return false
	}
}

func (l *link) addSub(s *stompgo.Subscription, local bool) {
	l.mu.Lock()
	l.subs = append(l.subs, linkSub{s, local})
	l.mu.Unlock()
}

// hooks is what a Listener or Conn does on each connection.
type hooks interface {
	// setup subscribes on a new link and starts its pumps (session.pump).
	setup(ctx context.Context, l *link) error
	// lost is called once when l's connection is lost.
	lost(l *link, err error)
	// release is called at Close, before unsubscribing, on a link whose
	// connection the caller owns.
	release(l *link)
}

// session keeps a Listener's or Conn's connection: it installs links,
// notices their loss, reconnects with backoff and reports the state.
type session struct {
	cfg  Config
	log  *slog.Logger
	what string
	h    hooks

	ctx    context.Context // ends at close: stops reconnecting
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	cur    *link
	gen    uint64
	state  transport.State
	ready  chan struct{} // closed while connected, closed or finally failed
	err    error         // final error when the connection is lost for good
	closed bool
}

func newSession(cfg Config, what string, h hooks) *session {
	ctx, cancel := context.WithCancel(context.Background())
	return &session{cfg: cfg, log: cfg.Logger, what: what, h: h, ctx: ctx, cancel: cancel,
		state: transport.StateReconnecting, ready: make(chan struct{})}
}

// start installs the first connection.
func (s *session) start(ctx context.Context, c *stompgo.Conn, owned bool) error {
	if err := s.install(ctx, c, owned); err != nil {
		s.close()
		return err
	}
	return nil
}

// install sets up c and makes it current.
func (s *session) install(ctx context.Context, c *stompgo.Conn, owned bool) error {
	l := newLink(c, detectDialect(s.cfg.Dialect, c, s.log), owned)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.drop(l)
		return transport.ErrClosed
	}
	s.gen++
	l.gen = s.gen
	s.mu.Unlock()
	if err := s.h.setup(ctx, l); err != nil {
		l.markDead(err)
		s.drop(l)
		return err
	}
	s.mu.Lock()
	if s.closed || l.isDead() {
		closed := s.closed
		s.mu.Unlock()
		s.drop(l)
		if closed {
			return transport.ErrClosed
		}
		return fmt.Errorf("transport/stomp: connection lost while subscribing: %w", l.err)
	}
	s.cur = l
	s.state = transport.StateConnected
	select {
	case <-s.ready:
	default:
		close(s.ready)
	}
	s.mu.Unlock()
	return nil
}

// drop closes a link that never became current, or unsubscribes on a
// caller's connection.
func (s *session) drop(l *link) {
	if l.owned {
		l.c.MustDisconnect()
		return
	}
	l.mu.Lock()
	subs := l.subs
	l.mu.Unlock()
	for _, ls := range subs {
		if err := unsubscribe(l.c, ls); err != nil {
			s.log.Debug("transport/stomp: unsubscribe failed", "what", s.what, "destination", ls.sub.Destination(), "err", err)
		}
	}
}

// unsubscribe sends UNSUBSCRIBE for a subscription. go-stomp adds a
// receipt (the subscription id) to every UNSUBSCRIBE it writes and closes
// the subscription's channel when the RECEIPT arrives (or at once for a
// local one), which ends its pump. Subscription.Unsubscribe is not used:
// in v3.1.5 it can leak a goroutine waiting on a sync.Cond that was
// signalled before it started waiting.
func unsubscribe(c *stompgo.Conn, ls linkSub) error {
	hdr := []string{"id", ls.sub.Id()}
	if ls.local {
		hdr = append(hdr, stompgo.ReplyToHeader, ls.sub.Id())
	}
	return c.Send("", "", nil, rawFrame("UNSUBSCRIBE", hdr...))
}

// pump reads a subscription until its channel closes, handing messages to
// fn. go-stomp stops reading the socket while a subscription's channel is
// full, so fn must not block. An error message or an unexpected end means
// the connection is lost.
func (s *session) pump(l *link, sub *stompgo.Subscription, local bool, fn func(*stompgo.Message)) {
	l.addSub(sub, local)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for m := range sub.C {
			if m.Err != nil {
				s.fail(l, m.Err)
				continue
			}
			fn(m)
		}
		s.fail(l, errors.New("subscription ended"))
	}()
}

// fail handles the loss of l's connection (once per link).
func (s *session) fail(l *link, err error) {
	if !l.markDead(err) {
		return
	}
	s.mu.Lock()
	if s.closed || s.cur != l {
		s.mu.Unlock()
		return
	}
	s.cur = nil
	redial := s.cfg.Redial != nil
	if redial {
		s.state = transport.StateReconnecting
		s.ready = make(chan struct{})
		s.wg.Add(1)
	} else {
		s.state = transport.StateClosed
		s.err = fmt.Errorf("transport/stomp: %s: connection lost: %w: %w", s.what, transport.ErrUnavailable, err)
	}
	if l.owned {
		s.wg.Add(1)
	}
	s.mu.Unlock()
	s.log.Warn("transport/stomp: connection lost", "what", s.what, "err", err, "reconnect", redial)
	s.h.lost(l, err)
	if l.owned {
		go func() {
			defer s.wg.Done()
			l.c.MustDisconnect()
		}()
	}
	if redial {
		go s.reconnect()
	}
}

// reconnect redials with exponential backoff until a new link is installed
// or the session closes.
func (s *session) reconnect() {
	defer s.wg.Done()
	bo := &backoff.ExponentialBackOff{
		InitialInterval:     s.cfg.MinReconnectWait,
		RandomizationFactor: 0.3,
		Multiplier:          2,
		MaxInterval:         s.cfg.MaxReconnectWait,
	}
	start := time.Now()
	attempts := 0
	_, err := backoff.Retry(s.ctx, func() (struct{}, error) {
		attempts++
		ctx, cancel := context.WithTimeout(s.ctx, connectTimeout)
		defer cancel()
		c, err := s.cfg.Redial(ctx)
		if err != nil {
			return struct{}{}, err
		}
		if err := s.install(ctx, c, true); err != nil {
			if errors.Is(err, transport.ErrClosed) {
				return struct{}{}, backoff.Permanent(err)
			}
			return struct{}{}, err
		}
		return struct{}{}, nil
	}, backoff.WithBackOff(bo), backoff.WithMaxElapsedTime(0), backoff.WithNotify(func(err error, next time.Duration) {
		s.log.Info("transport/stomp: reconnect failed", "what", s.what, "attempt", attempts, "err", err, "retry_in", next)
	}))
	if err == nil {
		s.log.Info("transport/stomp: reconnected", "what", s.what, "attempts", attempts, "after", time.Since(start).Round(time.Millisecond))
	}
}

// get returns the current link, waiting (until ctx ends) while reconnecting.
func (s *session) get(ctx context.Context) (*link, error) {
	for {
		s.mu.Lock()
		switch {
		case s.closed:
			s.mu.Unlock()
			return nil, fmt.Errorf("transport/stomp: %s: %w", s.what, transport.ErrClosed)
		case s.cur != nil:
			l := s.cur
			s.mu.Unlock()
			return l, nil
		case s.err != nil:
			err := s.err
			s.mu.Unlock()
			return nil, err
		}
		ready := s.ready
		s.mu.Unlock()
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("transport/stomp: %s: no connection to the broker: %w: %w", s.what, transport.ErrUnavailable, transport.ContextError(ctx))
		}
	}
}

// current returns the current link or nil.
func (s *session) current() *link {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// dialect is the dialect of the current connection (detected at connect),
// or Config.Dialect while there is none.
func (s *session) dialect() Dialect {
	if k := s.current(); k != nil {
		return k.dialect
	}
	return s.cfg.Dialect
}

// State implements transport.StateReporter.
func (s *session) State() transport.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return transport.StateClosed
	}
	return s.state
}

// await runs fn (a go-stomp call that may block on a receipt) until it
// returns or ctx ends; in the latter case fn keeps running until the
// receipt arrives or the connection ends.
func (s *session) await(ctx context.Context, fn func() error) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("transport/stomp: %s: %w", s.what, transport.ErrClosed)
	}
	s.wg.Add(1)
	s.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		defer s.wg.Done()
		done <- fn()
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return transport.ContextError(ctx)
	}
}

// sync waits until the broker has processed every frame sent before it on
// l: a BEGIN with a receipt (then ABORT). Used after SUBSCRIBE, since
// go-stomp cannot take a receipt on SUBSCRIBE without closing the
// subscription's channel.
func (s *session) sync(ctx context.Context, l *link) error {
	tx := "httpbus-sync-" + newID()
	err := s.await(ctx, func() error {
		return l.c.Send("", "", nil, rawFrame("BEGIN", "transaction", tx, "receipt", tx))
	})
	if err != nil {
		return err
	}
	return l.c.Send("", "", nil, rawFrame("ABORT", "transaction", tx))
}

// close stops reconnecting, releases the current link (DISCONNECT for a
// connection this package dialled; UNSUBSCRIBE on a caller's) and waits
// for the session's goroutines.
func (s *session) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	l := s.cur
	s.cur = nil
	s.state = transport.StateClosed
	select {
	case <-s.ready:
	default:
		close(s.ready)
	}
	s.mu.Unlock()
	s.cancel()
	if l != nil {
		if l.owned {
			if err := l.c.Disconnect(); err != nil {
				s.log.Debug("transport/stomp: DISCONNECT not confirmed", "what", s.what, "err", err)
			}
			l.c.MustDisconnect()
		} else {
			s.h.release(l)
			s.drop(l)
		}
	}
	s.wg.Wait()
}
