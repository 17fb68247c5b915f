package nats_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"

	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/transport"
)

// faultRig is a service and a client, both connected to the broker
// through an in-process toxiproxy, opened from URLs (the production path,
// reconnecting every 100 ms).
type faultRig struct {
	t      *testing.T
	proxy  *toxiproxy.Proxy
	svc    string
	client *http.Client
	served atomic.Int64
}

func newFaultRig(t *testing.T) *faultRig {
	t.Helper()
	u, err := url.Parse(brokertest.NATS(t))
	if err != nil {
		t.Fatal(err)
	}
	// Toxics log through zerolog's global logger, at trace level.
	zerolog.SetGlobalLevel(zerolog.WarnLevel)
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "nats", "127.0.0.1:0", u.Host)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop) // registered first: runs after the connections close
	r := &faultRig{t: t, proxy: p, svc: uniqueName("fault")}
	via := "nats://" + p.Listen + "?reconnect_wait=100ms"
	l, err := transport.Listen(context.Background(), via+"&service="+r.svc)
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.served.Add(1)
		io.Copy(w, req.Body)
	})
	serve(t, &transport.Server{Handler: h, Logger: discardLogger()}, l)
	c, err := transport.Dial(context.Background(), via)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r.client = transport.NewClient(c)
	return r
}

// call sends a POST with body and deadline timeout; it returns the status
// and how long the caller waited.
func (r *faultRig) call(body string, timeout time.Duration) (int, time.Duration) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+r.svc+"/", strings.NewReader(body))
	start := time.Now()
	resp, err := r.client.Do(req)
	if err != nil {
		r.t.Fatalf("call: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	el := time.Since(start)
	if resp.StatusCode == 200 && string(b) != body {
		r.t.Fatalf("200 with body %q, want %q", trimTo(b, 40), trimTo([]byte(body), 40))
	}
	return resp.StatusCode, el
}

func trimTo(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

func (r *faultRig) toxic(name, typ, stream, attrs string) {
	r.t.Helper()
	js := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1,"attributes":%s}`, name, typ, stream, attrs)
	if _, err := r.proxy.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
		r.t.Fatalf("add toxic %s: %v", js, err)
	}
}

func (r *faultRig) untoxic(name string) {
	r.t.Helper()
	if err := r.proxy.Toxics.RemoveToxic(context.Background(), name); err != nil {
		r.t.Fatalf("remove toxic %s: %v", name, err)
	}
}

// recovered calls until a request is answered 200, and fails the test if
// that takes more than within; it returns how long it took.
func (r *faultRig) recovered(within time.Duration) time.Duration {
	r.t.Helper()
	start := time.Now()
	for i := 0; ; i++ {
		code, _ := r.call(fmt.Sprintf("after-%d", i), time.Second)
		if code == 200 {
			return time.Since(start)
		}
		if time.Since(start) > within {
			r.t.Fatalf("service did not answer within %v of recovery (last status %d)", within, code)
		}
	}
}

// slack is what a caller may wait past its deadline for the 504.
const slack = time.Second

func gatewayStatus(code int) bool {
	return code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
}

// TestFaultLatency: 50 ms added each way. Requests with room in their
// deadline are answered; requests without it get 504 at their deadline.
func TestFaultLatency(t *testing.T) {
	r := newFaultRig(t)
	r.toxic("lat-down", "latency", "downstream", `{"latency":50}`)
	r.toxic("lat-up", "latency", "upstream", `{"latency":50}`)
	for i := range 5 {
		code, el := r.call(fmt.Sprintf("slow-%d", i), 5*time.Second)
		if code != 200 {
			t.Errorf("request with a 5s deadline over +50ms links: %d after %v", code, el)
		}
		if el < 100*time.Millisecond {
			t.Errorf("round trip took %v, want at least the 2×50ms added", el)
		}
	}
	for range 5 {
		code, el := r.call("tight", 60*time.Millisecond)
		if code != 200 && code != http.StatusGatewayTimeout {
			t.Errorf("request with a 60ms deadline: %d, want 200 or 504", code)
		}
		if el > 60*time.Millisecond+slack {
			t.Errorf("request with a 60ms deadline took %v", el)
		}
	}
	r.untoxic("lat-down")
	r.untoxic("lat-up")
	r.recovered(10 * time.Second)
}

// TestFaultBandwidth: 32 KB/s each way. A 256 KiB request cannot make a 2s
// deadline: the caller gets 504 at the deadline, never a hang, and once the
// limit is lifted the service answers.
func TestFaultBandwidth(t *testing.T) {
	r := newFaultRig(t)
	r.toxic("bw-down", "bandwidth", "downstream", `{"rate":32}`)
	r.toxic("bw-up", "bandwidth", "upstream", `{"rate":32}`)
	if code, el := r.call("small", 5*time.Second); code != 200 {
		t.Errorf("small request under a 32 KB/s limit: %d after %v", code, el)
	}
	code, el := r.call(strings.Repeat("b", 256<<10), 2*time.Second)
	if code != http.StatusGatewayTimeout {
		t.Errorf("256 KiB at 32 KB/s with a 2s deadline: %d, want 504", code)
	}
	if el > 2*time.Second+slack {
		t.Errorf("256 KiB at 32 KB/s with a 2s deadline: caller waited %v", el)
	}
	r.untoxic("bw-down")
	r.untoxic("bw-up")
	t.Logf("answered again %v after the limit was lifted", r.recovered(30*time.Second).Round(time.Millisecond))
}

// TestFaultResetAndCut: every connection reset (TCP RST), then the broker
// unreachable for 10 s (1 s with -short). Callers see 502/503/504 within
// their deadlines, never a hang; both sides reconnect by themselves and the
// service answers within 10 s of recovery.
func TestFaultResetAndCut(t *testing.T) {
	r := newFaultRig(t)
	if code, _ := r.call("before", 5*time.Second); code != 200 {
		t.Fatalf("before the faults: %d", code)
	}

	// Reset: RST on the next bytes each way, for every connection.
	r.toxic("reset-down", "reset_peer", "downstream", `{"timeout":0}`)
	r.toxic("reset-up", "reset_peer", "upstream", `{"timeout":0}`)
	code, el := r.call("during-reset", 500*time.Millisecond)
	if !gatewayStatus(code) && code != 200 {
		t.Errorf("call during reset: %d", code)
	}
	if el > 500*time.Millisecond+slack {
		t.Errorf("call during reset took %v", el)
	}
	r.untoxic("reset-down")
	r.untoxic("reset-up")
	t.Logf("reset: answered again %v after the resets stopped", r.recovered(10*time.Second).Round(time.Millisecond))

	// Cut: nothing reaches the broker, new connections are refused.
	cut := 10 * time.Second
	if testing.Short() {
		cut = time.Second
	}
	r.proxy.Stop()
	start := time.Now()
	calls := 0
	for time.Since(start) < cut {
		code, el := r.call(fmt.Sprintf("during-cut-%d", calls), 300*time.Millisecond)
		calls++
		if !gatewayStatus(code) {
			t.Errorf("call %d during the cut: %d, want 502, 503 or 504", calls, code)
		}
		if el > 300*time.Millisecond+slack {
			t.Errorf("call %d during the cut took %v", calls, el)
		}
	}
	if err := r.proxy.Start(); err != nil {
		t.Fatalf("restart the proxy on %s: %v", r.proxy.Listen, err)
	}
	back := r.recovered(10 * time.Second)
	t.Logf("cut of %v: %d calls during it each got 502/503/504 in time; answered again %v after the link came back", cut, calls, back.Round(time.Millisecond))
}
