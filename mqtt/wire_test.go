package mqtt_test

import (
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"

	"github.com/httpbus/httpbus/internal/brokertest"
)

// wireScript is WIRE.md §6.6's raw example, with PREFIX for the topic
// prefix (httpbus in the document) and HOST, PORT for the broker.
const wireScript = `
stdbuf -oL mosquitto_sub -V mqttv5 -h "$HOST" -p "$PORT" -t "$PREFIX/reply/me" -C 1 -W 10 -d \
  -F 'content-type: %C\ncorrelation-data: %D\nuser-properties: %P\n\n%p' > reply.txt &
until grep -q SUBACK reply.txt; do sleep 0.05; done   # subscribed (-d logs it; stdbuf: line by line)
printf 'GET /items/42 HTTP/1.1\r\nHost: orders\r\nAccept: application/json\r\n\r\n' |
mosquitto_pub -V mqttv5 -h "$HOST" -p "$PORT" -q 1 -t "$PREFIX/orders" -s \
  -D publish content-type message/http \
  -D publish response-topic "$PREFIX/reply/me" \
  -D publish correlation-data 42 \
  -D publish message-expiry-interval 5 \
  -D publish user-property Httpbus-Version 1
wait
grep -v '^Client ' reply.txt
`

// TestWireExample runs WIRE.md §6.6's mosquitto_pub/mosquitto_sub
// example against the broker and an httpbus service.
func TestWireExample(t *testing.T) {
	raw := brokertest.MQTT(t)
	if _, err := exec.LookPath("mosquitto_pub"); err != nil {
		t.Skip("mosquitto_pub not installed (Debian package mosquitto-clients)")
	}
	u, _ := url.Parse(raw)
	prefix := unique("wire")
	listen(t, raw+"?prefix="+prefix, "orders", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"item":42,"method":%q}`, r.Method)
	}))
	cmd := exec.Command("bash", "-c", wireScript)
	cmd.Dir = t.TempDir()
	cmd.Env = append(cmd.Environ(), "HOST="+u.Hostname(), "PORT="+u.Port(), "PREFIX="+prefix)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("printed:\n%s", out)
	got := strings.ReplaceAll(string(out), "\r\n", "\n")
	for _, want := range []string{"content-type: message/http", "correlation-data: 42", "HTTP/1.1 200 OK", `{"item":42,"method":"GET"}`} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
