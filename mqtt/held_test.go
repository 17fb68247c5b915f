package mqtt_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/transport"
)

// TestHeldRequestDoesNotStall: while one request is held unacknowledged (its
// handler runs on), the same instance answers many more, beyond
// Mosquitto's default in-flight window of 20: MQTT's in-order PUBACKs
// hold their acknowledgements back, and the Receive Maximum the listener
// announces (1024) lets the broker go on sending.
func TestHeldRequestDoesNotStall(t *testing.T) {
	raw := brokertest.MQTT(t)
	svc := unique("held")
	entered := make(chan struct{})
	release := make(chan struct{})
	listen(t, raw, svc, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		io.WriteString(w, "ok")
	}))
	client := transport.NewClient(dial(t, raw))
	slow := make(chan error, 1)
	go func() {
		_, _, err := get(context.Background(), client, "http://"+svc+"/slow")
		slow <- err
	}()
	<-entered
	for i := range 100 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, _, err := get(ctx, client, "http://"+svc+"/fast")
		cancel()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("request %d behind a held one: %v %v", i, resp, err)
		}
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
}
