package stomp_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/httpbus/httpbus/internal/testtls"
	"github.com/httpbus/httpbus/transport"
)

// TestTLS: stomp+ssl with the broker's certificate verified against a CA
// given by ca_file; without it, the unknown CA is refused.
func TestTLS(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		ca := testtls.NewCA(t, "httpbus test CA")
		front, caFile := testtls.Front(t, ca, addr), ca.File
		url := "stomp+ssl://guest:guest@" + front + "?heartbeat=1s&ca_file=" + caFile
		svc := unique("tls")
		l := listen(t, j, url, transport.ListenConfig{Service: svc})
		serve(t, l, http.HandlerFunc(hello))
		client := transport.NewClient(dial(t, j, url))
		if status, body := get(t, client, "http://"+svc+"/secure", 10*time.Second); status != 200 || body != "hello /secure" {
			t.Errorf("over TLS: %d %q", status, body)
		}
		_, err := transport.Dial(t.Context(), "stomp+ssl://guest:guest@"+front)
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("TLS with an unknown CA: %v, want a certificate error", err)
		}
	})
}
