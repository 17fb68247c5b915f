package nats_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"

	"github.com/httpbus/httpbus/internal/brokertest"
	natstransport "github.com/httpbus/httpbus/nats"
	"github.com/httpbus/httpbus/transport"
	"github.com/httpbus/httpbus/transport/transporttest"
)

// TestWireStreamPython runs WIRE.md §7.1's raw example
// (scripts/wire-stream.py, Python with a plain socket) against a service
// whose handler writes 3 MiB with no length: more than NATS's 1 MiB
// max_payload, so it arrives as parts that Python's http.client decodes.
func TestWireStreamPython(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	raw := brokertest.NATS(t)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	nc := connect(t, raw)
	svc := "wire-stream-" + strings.ReplaceAll(t.Name(), "/", "-")
	l, err := natstransport.NewListener(t.Context(), nc, transport.ListenConfig{Service: svc}, natstransport.Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv := &transport.Server{Logger: transporttest.Logger(t), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		io.CopyN(w, zeros{}, 3<<20)
	})}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())
	out, err := exec.CommandContext(t.Context(), py, "../scripts/wire-stream.py", u.Hostname(), u.Port(), svc, "/file").CombinedOutput()
	if err != nil {
		t.Fatalf("wire-stream.py: %v\n%s", err, out)
	}
	want := "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\n"
	if !strings.HasPrefix(string(out), want) || !strings.Contains(string(out), "http.client: 200, 3145728 body bytes") {
		t.Fatalf("wire-stream.py printed:\n%s\nwant the head %q and a 3145728-byte body", out, want)
	}
	t.Logf("wire-stream.py:\n%s", out)
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
