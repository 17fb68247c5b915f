package amqp_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/httpbus/httpbus/amqp"
	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/transport"
)

// ackRecorder is a Listener that records when each request (named by its
// X-Req-Id header) was acknowledged: Reply returned nil for an Ack. The
// embedded Listener's Push, Drain, State and MaxMessageBytes are promoted,
// so the Server serves it as it serves an *amqp.Listener.
type ackRecorder struct {
	*amqp.Listener
	mu    sync.Mutex
	acked map[string]time.Time
}

func (r *ackRecorder) Reply(ctx context.Context, d *transport.Delivery, resp *transport.Message, disp transport.Disposition) error {
	err := r.Listener.Reply(ctx, d, resp, disp)
	if err == nil && disp == transport.Ack {
		if id := requestID(d.Body); id != "" {
			r.mu.Lock()
			r.acked[id] = time.Now()
			r.mu.Unlock()
		}
	}
	return err
}

// requestID returns the X-Req-Id header of a request frame.
func requestID(frame []byte) string {
	const k = "\r\nX-Req-Id: "
	i := bytes.Index(frame, []byte(k))
	if i < 0 {
		return ""
	}
	rest := frame[i+len(k):]
	j := bytes.Index(rest, []byte("\r\n"))
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// rabbitmqctl runs rabbitmqctl with args, bounded by timeout.
func rabbitmqctl(t *testing.T, timeout time.Duration, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("rabbitmqctl %s: %v", strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
}

// waitPort waits until addr accepts TCP connections.
func waitPort(t *testing.T, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not accept connections %v after start_app: %v", addr, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBrokerRestartUnderLoad restarts the real RabbitMQ (rabbitmqctl
// stop_app, then start_app) while 8 callers keep requests in flight. It
// checks that no call hangs past its deadline, every answer is the
// caller's own, calls fail only with 502/503/504 while the broker is away,
// the service answers again within 10s of the broker coming back, and
// every request the server ran and acknowledged outside the outage (from 2s
// before stop_app until both sides have reconnected) was answered. (During the
// outage an acknowledged request can lose its reply with the caller's
// connection: those are counted in the log.)
//
// It stops the shared broker, so it runs only with HTTPBUS_TEST_RESTART=1,
// alone (scripts/restart-tests.sh), with rabbitmqctl allowed to control
// the node.
func TestBrokerRestartUnderLoad(t *testing.T) {
	if os.Getenv("HTTPBUS_TEST_RESTART") != "1" {
		t.Skip("restarts the shared RabbitMQ: set HTTPBUS_TEST_RESTART=1 and run it alone (scripts/restart-tests.sh)")
	}
	url := brokertest.AMQP(t)
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		t.Fatal("HTTPBUS_TEST_RESTART=1 but rabbitmqctl is not on PATH: cannot restart the broker")
	}
	const callTimeout = 5 * time.Second
	svc := unique("restart")
	cfg := amqp.Config{
		ConnectionName: "httpbus-test-" + svc,
		ReconnectMin:   50 * time.Millisecond,
		ReconnectMax:   500 * time.Millisecond,
		Logger:         testLogger(t),
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := amqp.Listen(ctx, url, transport.ListenConfig{Service: svc}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	deleteQueues(t, url, l.Queue())
	rec := &ackRecorder{Listener: l, acked: map[string]time.Time{}}
	var ranMu sync.Mutex
	ran := map[string]bool{} // requests the handler ran for (not those answered 504 as expired)
	srv := &transport.Server{Logger: cfg.Logger, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ranMu.Lock()
		ran[r.Header.Get("X-Req-Id")] = true
		ranMu.Unlock()
		io.Copy(w, r.Body)
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(rec) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		<-served
		l.Close()
	}()
	ccfg := cfg
	ccfg.ConnectionName = "httpbus-test-client-" + svc
	conn := dialConn(t, url, ccfg)
	client := transport.NewClient(conn)

	var (
		mu          sync.Mutex
		answered    = map[string]bool{}
		statuses    = map[int]int{}
		wrong       []string
		slowest     time.Duration
		okCount     atomic.Int64
		lastOK      atomic.Int64 // unix ns of the latest answer
		stop        = make(chan struct{})
		wg          sync.WaitGroup
		callerCount = 8
	)
	for w := range callerCount {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-r%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+svc+"/echo", strings.NewReader(id))
				req.Header.Set("X-Req-Id", id)
				start := time.Now()
				resp, err := client.Do(req)
				var body []byte
				if err == nil {
					body, _ = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				took := time.Since(start)
				cancel()
				mu.Lock()
				slowest = max(slowest, took)
				switch {
				case err != nil:
					wrong = append(wrong, fmt.Sprintf("%s: error %v", id, err))
				case resp.StatusCode == http.StatusOK && string(body) == id:
					answered[id] = true
					okCount.Add(1)
					lastOK.Store(time.Now().UnixNano())
				case resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout:
					statuses[resp.StatusCode]++
				default:
					wrong = append(wrong, fmt.Sprintf("%s: status %d body %.80q", id, resp.StatusCode, body))
				}
				mu.Unlock()
				if err != nil || resp.StatusCode != http.StatusOK {
					time.Sleep(20 * time.Millisecond) // a failing caller does not spin
				}
			}
		}()
	}
	stopLoad := func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}
	defer stopLoad()
	waitOK := func(n int64, timeout time.Duration) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for okCount.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d requests answered after %v, want %d", okCount.Load(), timeout, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitOK(200, 30*time.Second)

	// The restart. Whatever happens, the broker is started again.
	stopAt := time.Now()
	started := false
	defer func() {
		if !started {
			exec.Command("rabbitmqctl", "start_app").Run()
		}
	}()
	rabbitmqctl(t, 2*time.Minute, "stop_app")
	waitState(t, l, transport.StateReconnecting, 30*time.Second)
	before := okCount.Load()
	rabbitmqctl(t, 2*time.Minute, "start_app")
	started = true
	waitPort(t, amqpHostPort(t, url), time.Minute)
	back := time.Now()
	t.Logf("broker down for %v; %d requests answered before", back.Sub(stopAt).Round(time.Millisecond), before)

	waitState(t, l, transport.StateConnected, 10*time.Second)
	waitState(t, conn, transport.StateConnected, 10*time.Second)
	up := time.Now()
	for lastOK.Load() < back.UnixNano() {
		if time.Since(back) > 10*time.Second {
			t.Fatalf("no request answered within 10s of the broker coming back (listener %v, client %v)", l.State(), conn.State())
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("answering again %v after the broker came back (both sides reconnected after %v)",
		(time.Duration(lastOK.Load() - back.UnixNano())).Round(time.Millisecond), up.Sub(back).Round(time.Millisecond))
	after := okCount.Load()
	waitOK(after+300, 30*time.Second)
	stopLoad()

	mu.Lock()
	defer mu.Unlock()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	ranMu.Lock()
	defer ranMu.Unlock()
	var lost, lostInOutage int
	var lostIDs []string
	for id, at := range rec.acked {
		if answered[id] || !ran[id] {
			continue
		}
		if at.After(stopAt.Add(-2*time.Second)) && at.Before(up) {
			lostInOutage++
			continue
		}
		lost++
		if len(lostIDs) < 5 {
			lostIDs = append(lostIDs, id)
		}
	}
	t.Logf("answered %d, failed %v (by status), acknowledged %d, acknowledged during the outage but unanswered %d, slowest call %v",
		len(answered), statuses, len(rec.acked), lostInOutage, slowest.Round(time.Millisecond))
	if len(wrong) > 0 {
		t.Errorf("%d calls failed otherwise than 502/503/504 or got another answer; first: %q", len(wrong), wrong[:min(len(wrong), 5)])
	}
	if slowest > callTimeout+3*time.Second {
		t.Errorf("slowest call took %v, past its %v deadline", slowest, callTimeout)
	}
	if lost > 0 {
		t.Errorf("%d requests acknowledged outside the outage went unanswered: %q", lost, lostIDs)
	}
}

// amqpHostPort returns the host:port of an amqp URL.
func amqpHostPort(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := amqp091.ParseURI(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
}
