package stomp_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"

	"github.com/httpbus/httpbus/transport"
)

// newProxy starts an in-process toxiproxy in front of upstream.
func newProxy(t *testing.T, upstream string) *toxiproxy.Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, unique("stomp"), "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// serve serves h on l until cleanup.
func serve(t *testing.T, l transport.Listener, h http.Handler) *transport.Server {
	t.Helper()
	srv := &transport.Server{Handler: h, Logger: testLogger(t)}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return srv
}

func hello(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello "+r.URL.Path) }

// get GETs url with a timeout and returns status and body.
func get(t testing.TB, c *http.Client, url string, timeout time.Duration) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// eventually200 retries GET until a 200 or the timeout.
func eventually200(t testing.TB, c *http.Client, url string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		status, body := get(t, c, url, 2*time.Second)
		if status == 200 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %q after %v, want 200", url, status, body, timeout)
		}
	}
}

// TestReconnectAfterSocketDrop cuts every connection between the process
// and the broker (toxiproxy in front of the shared broker, which keeps
// running), keeps the cut for a while, and checks that the listener and
// the client report it, that a caller meanwhile gets 502/503/504 within
// its deadline, and that both reconnect and resubscribe by themselves.
func TestReconnectAfterSocketDrop(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		p := newProxy(t, addr)
		url := brokerURL(p.Listen, "reconnect_max=200ms")
		svc := unique("reconn")
		l := listen(t, j, url, transport.ListenConfig{Service: svc})
		serve(t, l, http.HandlerFunc(hello))
		c := dial(t, j, url)
		client := transport.NewClient(c)
		if status, body := get(t, client, "http://"+svc+"/before", 10*time.Second); status != 200 || body != "hello /before" {
			t.Fatalf("before the cut: %d %q", status, body)
		}
		p.Stop() // closes every proxied connection and refuses new ones
		waitState(t, "listener", l.(transport.StateReporter), transport.StateReconnecting, 10*time.Second)
		waitState(t, "client", c.(transport.StateReporter), transport.StateReconnecting, 10*time.Second)
		start := time.Now()
		status, body := get(t, client, "http://"+svc+"/during", 500*time.Millisecond)
		if status != 502 && status != 503 && status != 504 {
			t.Errorf("during the cut: %d %q, want 502, 503 or 504", status, body)
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Errorf("during the cut the caller waited %v past a 500ms deadline", el)
		}
		time.Sleep(time.Second) // keep the cut while reconnect attempts fail
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		restored := time.Now()
		waitState(t, "listener", l.(transport.StateReporter), transport.StateConnected, 10*time.Second)
		waitState(t, "client", c.(transport.StateReporter), transport.StateConnected, 10*time.Second)
		eventually200(t, client, "http://"+svc+"/after", 10*time.Second)
		t.Logf("answering again %v after the proxy came back", time.Since(restored).Round(time.Millisecond))
	})
}

// TestHeartBeatDetectsDeadBroker black-holes the broker's traffic (the TCP
// connection stays open, nothing arrives): heart-beats must notice, and
// the listener must come back once traffic flows again.
func TestHeartBeatDetectsDeadBroker(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		p := newProxy(t, addr)
		url := brokerURL(p.Listen, "reconnect_max=200ms")
		svc := unique("hb")
		l := listen(t, j, url, transport.ListenConfig{Service: svc})
		serve(t, l, http.HandlerFunc(hello))
		_, err := p.Toxics.AddToxicJson(strings.NewReader(`{"name":"blackhole","type":"timeout","stream":"downstream","toxicity":1,"attributes":{"timeout":0}}`))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		waitState(t, "listener", l.(transport.StateReporter), transport.StateReconnecting, 10*time.Second)
		t.Logf("dead connection noticed after %v (heartbeat=1s)", time.Since(start).Round(time.Millisecond))
		if err := p.Toxics.RemoveToxic(context.Background(), "blackhole"); err != nil {
			t.Fatal(err)
		}
		// A reconnect attempt made during the black hole hangs in CONNECT:
		// reset it so the next one starts now.
		p.Stop()
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		waitState(t, "listener", l.(transport.StateReporter), transport.StateConnected, 15*time.Second)
		client := transport.NewClient(dial(t, j, brokerURL(addr)))
		eventually200(t, client, "http://"+svc+"/after", 10*time.Second)
	})
}

// TestBrokerRestart restarts the real brokers: it runs only with
// HTTPBUS_TEST_RESTART=1, alone (other tests share the brokers), as root,
// with scripts/start-brokers.sh to start them again.
func TestBrokerRestart(t *testing.T) {
	if os.Getenv("HTTPBUS_TEST_RESTART") != "1" {
		t.Skip("restarts the shared brokers: set HTTPBUS_TEST_RESTART=1 and run it alone")
	}
	stops := map[string]string{
		// Wait for the JVM to exit, not only for the port to close: a
		// still-exiting process makes the start script wait for it.
		"ActiveMQ": `pid=$(cat /run/activemq/main.pid); kill "$pid"; for i in $(seq 300); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.2; done; kill -9 "$pid"; sleep 0.5`,
		"RabbitMQ": `rabbitmqctl -q stop_app`,
	}
	starts := map[string]string{
		"ActiveMQ": `../scripts/start-brokers.sh activemq`,
		"RabbitMQ": `rabbitmqctl -q start_app && ../scripts/start-brokers.sh rabbitmq`,
	}
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		url := brokerURL(addr, "reconnect_max=500ms")
		svc := unique("restart")
		l := listen(t, j, url, transport.ListenConfig{Service: svc})
		serve(t, l, http.HandlerFunc(hello))
		client := transport.NewClient(dial(t, j, url))
		eventually200(t, client, "http://"+svc+"/before", 10*time.Second)
		if out, err := exec.Command("bash", "-c", stops[b.name]).CombinedOutput(); err != nil {
			t.Fatalf("stopping %s: %v\n%s", b.name, err, out)
		}
		waitState(t, "listener", l.(transport.StateReporter), transport.StateReconnecting, 30*time.Second)
		if out, err := exec.Command("bash", "-c", starts[b.name]).CombinedOutput(); err != nil {
			t.Fatalf("starting %s: %v\n%s", b.name, err, out)
		}
		back := time.Now()
		waitState(t, "listener", l.(transport.StateReporter), transport.StateConnected, 30*time.Second)
		eventually200(t, client, "http://"+svc+"/after", 10*time.Second)
		if el := time.Since(back); el > 10*time.Second {
			t.Errorf("answering again %v after the broker came back, want within 10s", el)
		}
	})
}
