package nats_test

import (
	"context"
	"fmt"
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
// whose handler writes 6 MiB with no length: more than NATS's 1 MiB
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
		io.CopyN(w, zeros{}, 6<<20)
	})}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())
	// Granting credit in bytes, the script gets parts of up to nats's
	// StreamPartBytes (1 MiB, capped at max_payload minus HeaderRoom minus
	// 1 KiB) once the server has its first credit; in parts only, of up
	// to transport.DefaultPartBytes. Before that credit the server sends
	// at most its window of small parts (17 × 128 KiB with the head's,
	// if the script is slow to read: a 3 MiB body then had no full large
	// part left, and this test failed in CI), so 6 MiB always leaves
	// whole large parts.
	large := min(l.StreamPartBytes(), int(nc.MaxPayload())-natstransport.HeaderRoom-1024)
	for _, tc := range []struct {
		args    []string
		largest int
	}{{nil, large}, {[]string{"parts"}, transport.DefaultPartBytes}} {
		args := append([]string{"../scripts/wire-stream.py", u.Hostname(), u.Port(), svc, "/file"}, tc.args...)
		out, err := exec.CommandContext(t.Context(), py, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("wire-stream.py %v: %v\n%s", tc.args, err, out)
		}
		want := "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\n"
		if !strings.HasPrefix(string(out), want) || !strings.Contains(string(out), "http.client: 200, 6291456 body bytes") {
			t.Fatalf("wire-stream.py %v printed:\n%s\nwant the head %q and a 6291456-byte body", tc.args, out, want)
		}
		if !strings.Contains(string(out), fmt.Sprintf("the largest %d bytes;", tc.largest)) {
			t.Errorf("wire-stream.py %v printed:\n%s\nwant the largest part of %d bytes", tc.args, out, tc.largest)
		}
		t.Logf("wire-stream.py %v:\n%s", tc.args, out)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
