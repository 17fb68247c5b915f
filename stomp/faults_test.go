package stomp_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/httpbus/httpbus/transport"
)

// TestLatencyAndBandwidth: with 50 ms added each way and the broker link
// limited to 256 KiB/s, every request is answered within its deadline or
// gets 504; none hangs past it.
func TestLatencyAndBandwidth(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		p := newProxy(t, addr)
		for _, toxic := range []string{
			`{"name":"lat-up","type":"latency","stream":"upstream","toxicity":1,"attributes":{"latency":50}}`,
			`{"name":"lat-down","type":"latency","stream":"downstream","toxicity":1,"attributes":{"latency":50}}`,
			`{"name":"bw-down","type":"bandwidth","stream":"downstream","toxicity":1,"attributes":{"rate":256}}`,
		} {
			if _, err := p.Toxics.AddToxicJson(strings.NewReader(toxic)); err != nil {
				t.Fatal(err)
			}
		}
		url := brokerURL(p.Listen)
		svc := unique("slow")
		l := listen(t, j, url, transport.ListenConfig{Service: svc})
		serve(t, l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(w, r.Body)
		}))
		client := transport.NewClient(dial(t, j, url))
		const n = 20
		const deadline = 2 * time.Second
		var ok, timedOut atomic.Int64
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				size := 1 << 10
				if i%4 == 0 {
					size = 64 << 10 // 64 KiB: a quarter of a second of bandwidth each
				}
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				defer cancel()
				start := time.Now()
				req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+svc+"/", bytes.NewReader(make([]byte, size)))
				resp, err := client.Do(req)
				el := time.Since(start)
				if el > deadline+time.Second {
					t.Errorf("request %d returned %v after its %v deadline started", i, el, deadline)
				}
				if err != nil {
					t.Errorf("request %d: %v", i, err)
					return
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == 200 && len(got) == size:
					ok.Add(1)
				case resp.StatusCode == 504:
					timedOut.Add(1)
				default:
					t.Errorf("request %d: %d (%d bytes), want 200 with its body or 504", i, resp.StatusCode, len(got))
				}
			}()
		}
		wg.Wait()
		t.Logf("50ms latency each way, 256 KiB/s down: %d answered, %d timed out (504), of %d", ok.Load(), timedOut.Load(), n)
		if ok.Load() == 0 {
			t.Error("no request answered under latency")
		}
	})
}

// TestLongCut keeps the broker unreachable for 10 s while callers keep
// calling: each gets 502/503/504 within its deadline (never a hang), the
// URL's password never reaches the logs, and after the cut every request
// is answered again.
func TestLongCut(t *testing.T) {
	if testing.Short() {
		t.Skip("a 10 s network cut per broker")
	}
	var logs syncBuffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	defer slog.SetDefault(old)
	var ran atomic.Bool // false when every broker was skipped (none configured)
	t.Run("brokers", func(t *testing.T) {
		forEachBroker(t, func(t *testing.T, b broker, addr string) {
			ran.Store(true)
			longCut(t, b, addr)
		})
	})
	if !ran.Load() {
		return
	}
	if s := logs.String(); strings.Contains(s, "guest:guest@") || !strings.Contains(s, "guest:xxxxx@") {
		t.Errorf("logs show the password, or no redacted URL was logged:\n%s", s)
	}
}

func longCut(t *testing.T, b broker, addr string) {
	t.Parallel()
	j := newJanitor(t, b)
	p := newProxy(t, addr)
	url := brokerURL(p.Listen, "reconnect_max=1s")
	svc := unique("cut")
	l := listen(t, j, url, transport.ListenConfig{Service: svc})
	serve(t, l, http.HandlerFunc(hello))
	client := transport.NewClient(dial(t, j, url))
	eventually200(t, client, "http://"+svc+"/before", 10*time.Second)
	p.Stop()
	cutStart := time.Now()
	counts := map[int]int{}
	for time.Since(cutStart) < 10*time.Second {
		start := time.Now()
		status, _ := get(t, client, "http://"+svc+"/during", 500*time.Millisecond)
		if el := time.Since(start); el > 1500*time.Millisecond {
			t.Errorf("during the cut a call took %v with a 500ms deadline", el)
		}
		counts[status]++
	}
	for status, n := range counts {
		if status != 502 && status != 503 && status != 504 {
			t.Errorf("during the cut: %d calls answered %d, want 502, 503 or 504", n, status)
		}
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	eventually200(t, client, "http://"+svc+"/after", 10*time.Second)
	for i := range 20 {
		if status, body := get(t, client, fmt.Sprintf("http://%s/%d", svc, i), 5*time.Second); status != 200 {
			t.Errorf("after the cut: %d %q", status, body)
		}
	}
	t.Logf("10s cut: calls during it %v; answering again %v after the broker was reachable", counts, time.Since(back).Round(time.Millisecond))
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
