package stomp_test

import (
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/httpbus/httpbus/transport"
)

// TestReplyToVanishedCaller: the caller's connection (and with it its
// temporary reply queue) is gone when the response is sent. The server
// must keep its connection: another request it holds meanwhile is answered
// once, not redelivered, and the next request is served. (ActiveMQ answers
// such a send with an ERROR frame that go-stomp would close the connection
// on; connections dialled from a URL filter it out.)
func TestReplyToVanishedCaller(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		url := brokerURL(addr)
		svc := unique("vanish")
		entered := make(chan string, 2)
		release := make(chan struct{})
		var heldRuns atomic.Int64
		l := listen(t, j, url, transport.ListenConfig{Service: svc})
		serve(t, l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/held":
				if heldRuns.Add(1) > 1 {
					break // a redelivery: answer at once
				}
				entered <- r.URL.Path
				<-release
			case "/slow":
				entered <- r.URL.Path
				<-release
			}
			io.WriteString(w, "ok")
		}))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		gone, err := transport.Dial(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		client := transport.NewClient(dial(t, j, url))
		callDone := make(chan struct{})
		go func() {
			defer close(callDone)
			get(t, transport.NewClient(gone), "http://"+svc+"/slow", 10*time.Second)
		}()
		heldDone := make(chan int, 1)
		go func() {
			status, _ := get(t, client, "http://"+svc+"/held", 10*time.Second)
			heldDone <- status
		}()
		<-entered
		<-entered
		gone.Close()
		<-callDone
		close(release) // one response now goes to a deleted temporary queue
		if status := <-heldDone; status != 200 {
			t.Errorf("held request: %d", status)
		}
		if status, body := get(t, client, "http://"+svc+"/next", 10*time.Second); status != 200 {
			t.Fatalf("next request: %d %q", status, body)
		}
		if n := heldRuns.Load(); n != 1 {
			t.Errorf("the held request ran %d times: the server lost its connection and the broker redelivered it", n)
		}
		if s := l.(transport.StateReporter).State(); s != transport.StateConnected {
			t.Errorf("listener state %v", s)
		}
	})
}
