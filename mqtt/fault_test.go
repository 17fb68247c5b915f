package mqtt_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

func unique(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// proxied starts an in-process toxiproxy in front of the broker and returns
// it with the broker URL rewritten to go through it.
func proxied(t *testing.T, raw string) (*toxiproxy.Proxy, string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "mqtt-"+unique("p"), "127.0.0.1:0", u.Host)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	pu := *u
	pu.Host = p.Listen
	return p, pu.String()
}

func addToxic(t *testing.T, p *toxiproxy.Proxy, json string) {
	t.Helper()
	if _, err := p.Toxics.AddToxicJson(strings.NewReader(json)); err != nil {
		t.Fatalf("add toxic %s: %v", json, err)
	}
}

func removeToxic(t *testing.T, p *toxiproxy.Proxy, name string) {
	t.Helper()
	if err := p.Toxics.RemoveToxic(context.Background(), name); err != nil {
		t.Fatal(err)
	}
}

// listen opens a Listener from rawURL (options already in it) and serves h
// on it until cleanup.
func listen(t *testing.T, rawURL, service string, h http.Handler) (transport.Listener, *transport.Server) {
	t.Helper()
	sep := "?"
	if strings.Contains(rawURL, "?") {
		sep = "&"
	}
	l, err := transport.Listen(context.Background(), rawURL+sep+"service="+service)
	if err != nil {
		t.Fatal(err)
	}
	srv := &transport.Server{Handler: h, Logger: transporttest.Logger(t)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l, srv
}

func dial(t *testing.T, rawURL string) transport.Conn {
	t.Helper()
	c, err := transport.Dial(context.Background(), rawURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func get(ctx context.Context, c *http.Client, u string) (*http.Response, string, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	resp, err := c.Do(req)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b), err
}

func waitState(t *testing.T, sr any, want transport.State, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for sr.(transport.StateReporter).State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("state %v after %v, want %v", sr.(transport.StateReporter).State(), within, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestKilledInstanceRedelivered: an instance with a fixed client id and a
// session that outlives its connection takes a request and dies before
// answering (its connection cut, no DISCONNECT, no PUBACK); its
// replacement with the same client id gets the request again, marked
// Httpbus-Redelivered, and the caller gets the replacement's answer.
func TestKilledInstanceRedelivered(t *testing.T) {
	raw := brokertest.MQTT(t)
	p, via := proxied(t, raw)
	svc, id := unique("killed"), unique("inst")
	opts := "?client_id=" + id + "&session_expiry=60s"
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	defer close(release)
	listen(t, via+opts, svc, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release // a dead process never answers
	}))
	client := transport.NewClient(dial(t, raw))
	type result struct {
		status int
		body   string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		resp, body, err := get(ctx, client, "http://"+svc+"/work")
		if err != nil {
			done <- result{err: err}
			return
		}
		done <- result{status: resp.StatusCode, body: body}
	}()
	<-entered
	p.Stop() // the instance's connection dies; it cannot reconnect
	listen(t, raw+opts, svc, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "replacement, redelivered=%s", r.Header.Get(transport.HeaderRedelivered))
	}))
	r := <-done
	if r.err != nil || r.status != 200 || r.body != "replacement, redelivered=true" {
		t.Fatalf("caller got %d %q, %v; want 200 from the replacement, redelivered", r.status, r.body, r.err)
	}
}

// TestKilledInstanceDefaultSession documents Mosquitto 2.0's behaviour
// with the default session_expiry=0: the request an instance took and
// never acknowledged is dropped with its session, not given to the other
// instance of the shared subscription; the caller gets 504 at its
// deadline, and the other instance answers the next request.
func TestKilledInstanceDefaultSession(t *testing.T) {
	raw := brokertest.MQTT(t)
	p, via := proxied(t, raw)
	svc := unique("killed0")
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	defer close(release)
	listen(t, via, svc, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	}))
	var other atomic.Int64
	listen(t, raw, svc, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/work" {
			other.Add(1)
		}
		io.WriteString(w, "other")
	}))
	client := transport.NewClient(dial(t, raw))
	done := make(chan int, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		// Shared subscriptions go round robin: try until the first
		// instance takes one.
		for ctx.Err() == nil {
			resp, _, err := get(ctx, client, "http://"+svc+"/work")
			if err != nil {
				done <- 0
				return
			}
			if resp.StatusCode != 200 {
				done <- resp.StatusCode
				return
			}
		}
		done <- -1
	}()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the first instance took no request")
	}
	p.Stop()
	if st := <-done; st != http.StatusGatewayTimeout {
		t.Fatalf("caller got %d, want 504 (Mosquitto drops the unacknowledged request)", st)
	}
	resp, body, err := get(context.Background(), client, "http://"+svc+"/next")
	if err != nil || resp.StatusCode != 200 || body != "other" {
		t.Fatalf("next request: %v %q %v", resp, body, err)
	}
	t.Logf("the other instance served %d /work requests before the kill; none after it", other.Load())
}

// TestNetworkCut: the caller's network goes silent; calls end with 504 at
// their deadlines (or 502), the Conn notices the loss by keep alive and
// reports reconnecting, and answers again once the network is back.
func TestNetworkCut(t *testing.T) {
	raw := brokertest.MQTT(t)
	p, via := proxied(t, raw)
	svc := unique("cut")
	listen(t, raw, svc, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	c := dial(t, via+"?keepalive=1")
	client := transport.NewClient(c)
	if resp, _, err := get(context.Background(), client, "http://"+svc+"/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("before the cut: %v %v", resp, err)
	}
	addToxic(t, p, `{"name":"cut-up","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`)
	addToxic(t, p, `{"name":"cut-down","type":"timeout","stream":"downstream","attributes":{"timeout":0}}`)
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[int]int{}
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Duration(300+100*i) * time.Millisecond
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			resp, _, err := get(ctx, client, "http://"+svc+"/")
			if late := time.Since(start) - deadline; late > time.Second {
				t.Errorf("a caller waited %v past its deadline", late)
			}
			st := 0
			if err == nil {
				st = resp.StatusCode
			}
			mu.Lock()
			seen[st]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	for st := range seen {
		if st != http.StatusGatewayTimeout && st != http.StatusBadGateway {
			t.Errorf("status %d during the cut, want 504 or 502", st)
		}
	}
	waitState(t, c, transport.StateReconnecting, 10*time.Second)
	t.Logf("outcomes during the cut (status: count): %v", seen)
	removeToxic(t, p, "cut-up")
	removeToxic(t, p, "cut-down")
	waitState(t, c, transport.StateConnected, 15*time.Second)
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, _, err := get(ctx, client, "http://"+svc+"/")
		cancel()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request %d after the cut: %v %v", i, resp, err)
		}
	}
}

// TestConnectionReset: the proxy resets the listener's connection; it
// reconnects, subscribes again and answers.
func TestConnectionReset(t *testing.T) {
	raw := brokertest.MQTT(t)
	p, via := proxied(t, raw)
	svc := unique("reset")
	l, _ := listen(t, via, svc, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	client := transport.NewClient(dial(t, raw))
	if resp, _, err := get(context.Background(), client, "http://"+svc+"/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("before the reset: %v %v", resp, err)
	}
	addToxic(t, p, `{"name":"reset","type":"reset_peer","stream":"downstream","attributes":{"timeout":0}}`)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	get(ctx, client, "http://"+svc+"/") // bytes must flow for the toxic to act
	cancel()
	waitState(t, l, transport.StateReconnecting, 10*time.Second)
	removeToxic(t, p, "reset")
	waitState(t, l, transport.StateConnected, 15*time.Second)
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if resp, body, err := get(ctx, client, "http://"+svc+"/"); err != nil || resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("after the reset: %v %q %v", resp, body, err)
	}
}

// mosquitto starts a private Mosquitto (the installed binary) on a free
// loopback port and returns its URL and a restart function. The shared
// broker is never touched.
func mosquitto(t *testing.T) (string, func()) {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if brokertest.Required() {
			t.Fatal("mosquitto binary not found (Debian package mosquitto)")
		}
		t.Skip("mosquitto binary not found (Debian package mosquitto)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	conf := t.TempDir() + "/mosquitto.conf"
	port := addr[strings.LastIndex(addr, ":")+1:]
	os.WriteFile(conf, []byte("listener "+port+" 127.0.0.1\nallow_anonymous true\n"), 0o644)
	var cmd *exec.Cmd
	start := func() {
		cmd = exec.Command(bin, "-c", conf)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for i := 0; ; i++ {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				return
			}
			if i > 500 {
				t.Fatal("private mosquitto did not listen within 5 s")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	stop := func() {
		cmd.Process.Kill()
		cmd.Wait()
	}
	start()
	t.Cleanup(stop)
	return "mqtt://" + addr, func() { stop(); start() }
}

// TestBrokerRestartUnderLoad: a private Mosquitto is killed and started
// again while 8 callers send requests. Every answer a caller got is the
// answer to its own request; failures are 502, 503 or 504 only; both
// sides reconnect and every caller is answered again.
func TestBrokerRestartUnderLoad(t *testing.T) {
	raw, restart := mosquitto(t)
	svc := unique("restart")
	l, _ := listen(t, raw, svc, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.URL.Query().Get("id"))
	}))
	c := dial(t, raw)
	client := transport.NewClient(c)
	var restarted atomic.Bool
	var ok, failed atomic.Int64
	warmedUp := make(chan struct{}) // closed at the 200th answer
	var okAfter [8]atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("%d-%d", i, n)
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				resp, body, err := get(ctx, client, "http://"+svc+"/?id="+id)
				cancel()
				switch {
				case err != nil:
					t.Errorf("call %s: %v", id, err)
				case resp.StatusCode == 200 && body != id:
					t.Errorf("call %s answered %q: another request's answer", id, body)
				case resp.StatusCode == 200:
					if ok.Add(1) == 200 {
						close(warmedUp)
					}
					if restarted.Load() {
						okAfter[i].Add(1)
					}
				case resp.StatusCode == 502 || resp.StatusCode == 503 || resp.StatusCode == 504:
					failed.Add(1)
				default:
					t.Errorf("call %s: status %d", id, resp.StatusCode)
				}
			}
		}()
	}
	select {
	case <-warmedUp:
	case <-time.After(30 * time.Second):
		t.Fatalf("only %d answers in 30 s before the restart", ok.Load())
	}
	restart()
	restarted.Store(true)
	waitState(t, l, transport.StateConnected, 15*time.Second)
	waitState(t, c, transport.StateConnected, 15*time.Second)
	deadline := time.Now().Add(15 * time.Second)
	for i := range okAfter {
		for okAfter[i].Load() < 20 {
			if time.Now().After(deadline) {
				t.Fatalf("caller %d: %d answers since the restart", i, okAfter[i].Load())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("answered %d, failed (502/503/504) %d around the restart", ok.Load(), failed.Load())
	_ = errors.Is
}
