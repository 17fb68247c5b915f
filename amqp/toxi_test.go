package amqp_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/httpbus/httpbus/amqp"
	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/transport"
)

// proxied starts an in-process toxiproxy in front of the broker and returns
// it with the broker URL rewritten to go through it.
func proxied(t *testing.T, raw string) (*toxiproxy.Proxy, string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "amqp-"+randHex(4), "127.0.0.1:0", u.Host)
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

// TestNetworkLatency: with 50 ms added each way between the caller and the
// broker, requests are answered within their deadlines, and a deadline
// shorter than the round trip gets 504 on time.
func TestNetworkLatency(t *testing.T) {
	raw := brokertest.AMQP(t)
	p, via := proxied(t, raw)
	svc := unique("latency")
	serve(t, raw, transport.ListenConfig{Service: svc}, amqp.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	c := dialConn(t, via, amqp.Config{})
	addToxic(t, p, `{"name":"up","type":"latency","stream":"upstream","attributes":{"latency":50}}`)
	addToxic(t, p, `{"name":"down","type":"latency","stream":"downstream","attributes":{"latency":50}}`)
	client := transport.NewClient(c)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			resp, err := get(ctx, client, "http://"+svc+"/")
			switch {
			case err != nil:
				errs <- err
			case resp.StatusCode != 200:
				errs <- fmt.Errorf("request %d: %d %s", i, resp.StatusCode, resp.Header.Get(transport.HeaderError))
			case time.Since(start) < 100*time.Millisecond:
				errs <- fmt.Errorf("request %d answered in %v, under the 100 ms of added latency", i, time.Since(start))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
	defer cancel()
	start := time.Now()
	resp, err := get(ctx, client, "http://"+svc+"/")
	if err != nil || resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("60 ms deadline over a 100 ms round trip: %v %v, want 504", resp, err)
	}
	if el := time.Since(start); el > 500*time.Millisecond {
		t.Errorf("504 came %v after the call, past its 60 ms deadline", el)
	}
}

// TestNetworkCut: the network between the caller and the broker goes
// silent for 10 s (a blackhole: connections stay open, no bytes pass).
// Callers get 502 (heartbeat loss) or 504 (their deadline), never a hang;
// once the network is back the Conn reconnects by itself and every request
// is answered again.
func TestNetworkCut(t *testing.T) {
	if testing.Short() {
		t.Skip("a 10 s network cut; skipped with -short")
	}
	raw := brokertest.AMQP(t)
	p, via := proxied(t, raw)
	svc := unique("cut")
	serve(t, raw, transport.ListenConfig{Service: svc}, amqp.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	// heartbeat=1: the lost network is noticed within about 3 s.
	u, _ := url.Parse(via)
	q := u.Query()
	q.Set("heartbeat", "1")
	q.Set("setup_timeout", "2s")
	q.Set("reconnect_max", "500ms")
	u.RawQuery = q.Encode()
	c := dialConn(t, u.String(), amqp.Config{})
	client := transport.NewClient(c)
	if resp, err := get(context.Background(), client, "http://"+svc+"/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("before the cut: %v %v", resp, err)
	}

	addToxic(t, p, `{"name":"cut-up","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`)
	addToxic(t, p, `{"name":"cut-down","type":"timeout","stream":"downstream","attributes":{"timeout":0}}`)
	cutAt := time.Now()
	type outcome struct {
		status int
		late   time.Duration
	}
	results := make(chan outcome, 64)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(cutAt) < 10*time.Second {
				deadline := time.Duration(500+250*i) * time.Millisecond
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				start := time.Now()
				resp, err := get(ctx, client, "http://"+svc+"/")
				cancel()
				o := outcome{late: time.Since(start) - deadline}
				if err == nil {
					o.status = resp.StatusCode
				}
				select {
				case results <- o:
				default:
				}
			}
		}()
	}
	wg.Wait()
	close(results)
	seen := map[int]int{}
	for o := range results {
		seen[o.status]++
		if o.late > time.Second {
			t.Errorf("a caller waited %v past its deadline", o.late)
		}
		if o.status != http.StatusBadGateway && o.status != http.StatusGatewayTimeout && o.status != 200 {
			t.Errorf("status %d during the cut, want 502 or 504", o.status)
		}
	}
	t.Logf("outcomes during the cut (status: count): %v; state %v", seen, c.State())
	if c.State() != transport.StateReconnecting {
		t.Errorf("state %v after 10 s without network, want reconnecting", c.State())
	}

	if err := p.Toxics.RemoveToxic(context.Background(), "cut-up"); err != nil {
		t.Fatal(err)
	}
	if err := p.Toxics.RemoveToxic(context.Background(), "cut-down"); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	waitState(t, c, transport.StateConnected, 15*time.Second)
	t.Logf("reconnected %v after the network came back", time.Since(back))
	for i := range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := get(ctx, client, "http://"+svc+"/")
		cancel()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request %d after recovery: %v %v", i, resp, err)
		}
	}
}

// TestConnectionReset: the proxy resets every connection; the Conn sees
// the loss, reconnects, and answers again.
func TestConnectionReset(t *testing.T) {
	raw := brokertest.AMQP(t)
	p, via := proxied(t, raw)
	svc := unique("reset")
	serve(t, raw, transport.ListenConfig{Service: svc}, amqp.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	c := dialConn(t, via, amqp.Config{ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond})
	client := transport.NewClient(c)
	if resp, err := get(context.Background(), client, "http://"+svc+"/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("before the reset: %v %v", resp, err)
	}
	addToxic(t, p, `{"name":"reset","type":"reset_peer","stream":"downstream","attributes":{"timeout":0}}`)
	// The toxic applies to bytes flowing; a call makes some flow.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	resp, err := get(ctx, client, "http://"+svc+"/")
	cancel()
	if err == nil && resp.StatusCode == 200 {
		t.Log("call answered before the reset took effect")
	}
	waitState(t, c, transport.StateReconnecting, 10*time.Second)
	if err := p.Toxics.RemoveToxic(context.Background(), "reset"); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, transport.StateConnected, 15*time.Second)
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if resp, err := get(ctx, client, "http://"+svc+"/"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the reset: %v %v", resp, err)
	}
	_ = errors.Is
}

// TestCloseDuringCut: Close returns promptly while the network is silent,
// before heartbeats have noticed.
func TestCloseDuringCut(t *testing.T) {
	raw := brokertest.AMQP(t)
	p, via := proxied(t, raw)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := amqp.Dial(ctx, via, amqp.Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	l, err := amqp.Listen(ctx, via, transport.ListenConfig{Service: unique("closecut"), Topics: []string{unique("t")}}, amqp.Config{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	deleteQueues(t, raw, l.Queue(), l.NotifyQueue())
	addToxic(t, p, `{"name":"cut-up","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`)
	addToxic(t, p, `{"name":"cut-down","type":"timeout","stream":"downstream","attributes":{"timeout":0}}`)
	start := time.Now()
	c.Close()
	l.Close()
	if el := time.Since(start); el > 6*time.Second {
		t.Errorf("Close took %v on a silent network", el)
	}
	if c.State() != transport.StateClosed || l.State() != transport.StateClosed {
		t.Errorf("states %v, %v after Close", c.State(), l.State())
	}
}
