package stomp_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/stomp"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, append(brokertest.IgnoreToxiproxy(), brokertest.IgnoreGoStompUnsubscribeWait())...)
}

// broker is one of the two real STOMP brokers the tests run on.
type broker struct {
	name    string
	dialect stomp.Dialect
	addr    func(testing.TB) string
}

var brokers = []broker{
	{"ActiveMQ", stomp.DialectActiveMQ, brokertest.STOMPActiveMQ},
	{"RabbitMQ", stomp.DialectRabbitMQ, brokertest.STOMPRabbitMQ},
}

// forEachBroker runs f as a subtest per broker.
func forEachBroker(t *testing.T, f func(t *testing.T, b broker, addr string)) {
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) { f(t, b, b.addr(t)) })
	}
}

// brokerURL is the URL of a broker at addr with test-friendly heart-beats.
func brokerURL(addr string, query ...string) string {
	q := append([]string{"heartbeat=1s"}, query...)
	return "stomp://guest:guest@" + addr + "?" + strings.Join(q, "&")
}

func unique(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// testLogger writes to t.Log.
func testLogger(t testing.TB) *slog.Logger { return transporttest.Logger(t) }

// queueJanitor deletes, at cleanup, the durable queues RabbitMQ's STOMP
// plugin created for a test (service queues, notification queues), over
// AMQP (HTTPBUS_TEST_AMQP_URL). ActiveMQ has no STOMP or AMQP-free way to
// delete a queue: its queues stay (empty).
type queueJanitor struct {
	mu    sync.Mutex
	names map[string]bool
}

func newJanitor(t testing.TB, b broker) *queueJanitor {
	j := &queueJanitor{names: map[string]bool{}}
	if b.dialect != stomp.DialectRabbitMQ {
		return j
	}
	t.Cleanup(func() { j.clean(t) })
	return j
}

func (j *queueJanitor) service(name string, topics ...string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.names[name] = true
	for _, tp := range topics {
		j.names[stomp.RabbitMQTopicQueue(name, tp)] = true
	}
}

func (j *queueJanitor) clean(t testing.TB) {
	j.mu.Lock()
	names := j.names
	j.names = map[string]bool{}
	j.mu.Unlock()
	if len(names) == 0 {
		return
	}
	url := os.Getenv(brokertest.EnvAMQP)
	if url == "" {
		t.Logf("%s not set: %d RabbitMQ queues left behind", brokertest.EnvAMQP, len(names))
		return
	}
	conn, err := amqp091.Dial(url)
	if err != nil {
		t.Logf("queue cleanup: %v", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Logf("queue cleanup: %v", err)
		return
	}
	for n := range names {
		if _, err := ch.QueueDelete(n, false, false, false); err != nil {
			t.Logf("queue cleanup %s: %v", n, err)
			if ch, err = conn.Channel(); err != nil {
				return
			}
		}
	}
}

// recordingConn records the services a Conn calls, for the janitor.
type recordingConn struct {
	transport.Conn
	j *queueJanitor
}

func (c recordingConn) Call(ctx context.Context, service string, m *transport.Message) (*transport.Message, error) {
	c.j.service(service)
	return c.Conn.Call(ctx, service, m)
}

func (c recordingConn) State() transport.State {
	return c.Conn.(transport.StateReporter).State()
}

func (c recordingConn) MaxMessageBytes() int64 {
	return c.Conn.(transport.SizeLimiter).MaxMessageBytes()
}

func (c recordingConn) Inbox(ctx context.Context) (string, error) {
	return c.Conn.(transport.Streamer).Inbox(ctx)
}

func (c recordingConn) ReceiveInbox(ctx context.Context) (*transport.Message, error) {
	return c.Conn.(transport.Streamer).ReceiveInbox(ctx)
}

func (c recordingConn) Send(ctx context.Context, addr string, m *transport.Message) error {
	return c.Conn.(transport.Streamer).Send(ctx, addr, m)
}

// listen opens a Listener from a URL; closed at cleanup.
func listen(t testing.TB, j *queueJanitor, url string, lc transport.ListenConfig) transport.Listener {
	t.Helper()
	j.service(lc.Service, lc.Topics...)
	q := "service=" + lc.Service
	if len(lc.Topics) > 0 {
		q += "&topics=" + strings.Join(lc.Topics, ",")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := transport.Listen(ctx, url+"&"+q)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// dial opens a Conn from a URL; closed at cleanup.
func dial(t testing.TB, j *queueJanitor, url string) transport.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := transport.Dial(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return recordingConn{Conn: c, j: j}
}

// waitState waits until s reports want.
func waitState(t testing.TB, what string, s transport.StateReporter, want transport.State, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for s.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: state %v after %v, want %v", what, s.State(), timeout, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
