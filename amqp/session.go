package amqp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/httpbus/httpbus/transport"
)

// generation is what one connection's setup built: channels, consumers and
// the goroutines serving them. It lives until lost yields (a channel or the
// connection closed) or the owner closes, then teardown fails whatever
// depended on it.
type generation interface {
	lost() <-chan error
	teardown(cause error)
}

// supervisor owns the reconnection policy of a Listener or Conn: on the loss
// of the connection or one of its channels it tears the generation down,
// waits with capped exponential backoff and jitter, redials (when it owns
// the connection) and sets up a new generation (topology, consumers).
type supervisor[G generation] struct {
	log   *slog.Logger
	what  string                                                 // "listener orders", for logs
	dial  func(ctx context.Context) (*amqp091.Connection, error) // nil: the caller owns the connection
	setup func(ctx context.Context, c *amqp091.Connection) (G, error)

	min, max time.Duration
	timeout  time.Duration

	ctx    context.Context // ends at close
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns

	mu    sync.Mutex
	state transport.State
	gen   G
	has   bool
	up    chan struct{} // closed when a generation is installed
	dead  error         // why it stopped for good, when not closed by its owner
}

func newSupervisor[G generation](cfg *Config, what string, dial func(context.Context) (*amqp091.Connection, error), setup func(context.Context, *amqp091.Connection) (G, error)) *supervisor[G] {
	s := &supervisor[G]{
		log:     cfg.logger(),
		what:    what,
		dial:    dial,
		setup:   setup,
		timeout: cfg.setupTimeout(),
		done:    make(chan struct{}),
		up:      make(chan struct{}),
		state:   transport.StateReconnecting,
	}
	s.min, s.max = cfg.backoffBounds()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// start makes the first connection (dialing unless conn is given) and its
// generation synchronously, then supervises it in the background.
func (s *supervisor[G]) start(ctx context.Context, conn *amqp091.Connection) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	if conn == nil {
		c, err := s.dial(ctx)
		if err != nil {
			s.cancel()
			close(s.done)
			return err
		}
		conn = c
	}
	g, err := s.runSetup(ctx, conn)
	if err != nil {
		if s.dial != nil {
			closeConn(conn)
		}
		s.cancel()
		close(s.done)
		return err
	}
	s.install(g)
	go s.run(conn, g)
	return nil
}

func (s *supervisor[G]) install(g G) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen, s.has = g, true
	s.state = transport.StateConnected
	close(s.up)
}

// runSetup runs setup within ctx. amqp091 calls such as Connection.Channel
// block without a network and take no context: when ctx ends first, an
// owned connection is closed (which unblocks them); a caller-owned one is
// left to finish in the background, its generation torn down.
func (s *supervisor[G]) runSetup(ctx context.Context, conn *amqp091.Connection) (G, error) {
	type result struct {
		g   G
		err error
	}
	r := make(chan result, 1)
	go func() {
		g, err := s.setup(ctx, conn)
		r <- result{g, err}
	}()
	select {
	case x := <-r:
		return x.g, x.err
	case <-ctx.Done():
	}
	err := fmt.Errorf("transport/amqp: %s: setting up channels: %w: %w", s.what, transport.ErrUnavailable, context.Cause(ctx))
	if s.dial != nil {
		closeConn(conn)
		if x := <-r; x.err == nil {
			x.g.teardown(err)
		}
	} else {
		go func() {
			if x := <-r; x.err == nil {
				x.g.teardown(err)
			}
		}()
	}
	var zero G
	return zero, err
}

// current returns the connected generation, waiting for a reconnection until
// ctx ends.
func (s *supervisor[G]) current(ctx context.Context) (G, error) {
	var zero G
	for {
		s.mu.Lock()
		g, has, up, dead := s.gen, s.has, s.up, s.dead
		s.mu.Unlock()
		if has {
			return g, nil
		}
		if dead != nil {
			return zero, dead
		}
		if s.ctx.Err() != nil {
			return zero, transport.ErrClosed
		}
		select {
		case <-up:
		case <-s.done:
		case <-ctx.Done():
			return zero, fmt.Errorf("transport/amqp: %s: waiting for the connection: %w", s.what, transport.ContextError(ctx))
		}
	}
}

// now returns the connected generation without waiting.
func (s *supervisor[G]) now() (G, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen, s.has
}

// State implements transport.StateReporter.
func (s *supervisor[G]) State() transport.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

func (s *supervisor[G]) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

func (s *supervisor[G]) run(conn *amqp091.Connection, g G) {
	defer close(s.done)
	b := &backoff.ExponentialBackOff{
		InitialInterval:     s.min,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         s.max,
	}
	for {
		var cause error
		select {
		case cause = <-g.lost():
		case <-s.ctx.Done():
			cause = transport.ErrClosed
		}
		closing := s.ctx.Err() != nil
		s.mu.Lock()
		var zero G
		s.gen, s.has = zero, false
		if !closing {
			s.state = transport.StateReconnecting
			s.up = make(chan struct{})
		}
		s.mu.Unlock()
		if !closing {
			s.log.Warn("transport/amqp: connection lost; reconnecting", "what", s.what, "err", cause)
			cause = fmt.Errorf("transport/amqp: %s: connection lost: %w: %w", s.what, transport.ErrUnavailable, cause)
		} else if s.dial != nil && conn != nil {
			// Closing the connection first closes every channel with it,
			// within closeTimeout even when the network is gone.
			closeConn(conn)
		}
		g.teardown(cause)
		b.Reset()
		for {
			if closing || !s.sleep(b.NextBackOff()) {
				if s.dial != nil && conn != nil {
					closeConn(conn)
				}
				s.setClosed(nil)
				return
			}
			if conn != nil && conn.IsClosed() {
				if s.dial == nil {
					err := fmt.Errorf("transport/amqp: %s: the connection was closed and is owned by the caller, so it is not redialled: %w", s.what, transport.ErrUnavailable)
					s.log.Error("transport/amqp: connection closed; not reconnecting", "what", s.what)
					s.setClosed(err)
					return
				}
				conn = nil
			}
			if conn == nil {
				c, err := s.dial(s.ctx)
				if err != nil {
					if s.ctx.Err() == nil {
						s.log.Warn("transport/amqp: reconnect failed", "what", s.what, "err", err)
					}
					continue
				}
				conn = c
			}
			ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
			g2, err := s.runSetup(ctx, conn)
			cancel()
			if err != nil {
				if s.ctx.Err() == nil {
					s.log.Warn("transport/amqp: setup after reconnect failed", "what", s.what, "err", err)
				}
				if s.dial != nil {
					closeConn(conn)
					conn = nil
				}
				continue
			}
			g = g2
			s.install(g)
			s.log.Info("transport/amqp: reconnected", "what", s.what)
			break
		}
	}
}

func (s *supervisor[G]) setClosed(dead error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state = transport.StateClosed
	s.dead = dead
}

// close stops supervising: the current generation is torn down with
// transport.ErrClosed and an owned connection closed. It waits for that.
func (s *supervisor[G]) close() {
	s.cancel()
	<-s.done
}

// watch returns a channel that yields the first close error of conn or any
// of chans (a clean close yields a description), and a function that makes
// it yield err (for other losses, such as a consumer cancelled by the
// broker). Its goroutines end when stop is closed or everything watched has
// closed.
func watch(stop <-chan struct{}, conn *amqp091.Connection, chans ...*amqp091.Channel) (<-chan error, func(error)) {
	out := make(chan error, 1)
	var once sync.Once
	signal := func(err error) { once.Do(func() { out <- err }) }
	wait := func(c chan *amqp091.Error, what string) {
		var e *amqp091.Error
		select {
		case e = <-c:
		case <-stop:
			return
		}
		if e == nil {
			if conn.IsClosed() {
				what = "connection"
			}
			signal(errors.New(what + " closed"))
			return
		}
		signal(e)
	}
	cc := conn.NotifyClose(make(chan *amqp091.Error, 1))
	go wait(cc, "connection")
	for _, ch := range chans {
		go wait(ch.NotifyClose(make(chan *amqp091.Error, 1)), "channel")
	}
	return out, signal
}

// closeTimeout bounds closing a connection: amqp091's Close waits for the
// broker's close-ok, which never comes on a dead network.
const closeTimeout = 2 * time.Second

func closeConn(c *amqp091.Connection) {
	c.CloseDeadline(time.Now().Add(closeTimeout))
}
