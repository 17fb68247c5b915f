package tcp_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/httpbus/httpbus/internal/testtls"
	"github.com/httpbus/httpbus/tcp"
	"github.com/httpbus/httpbus/transport"
)

func TestTLS(t *testing.T) {
	authority := testtls.NewCA(t, "httpbus test CA")
	srvCert := authority.Issue(t, "127.0.0.1")
	ca, cert, key := authority.File, srvCert.CertFile, srvCert.KeyFile
	ctx := context.Background()
	// Port 0: the listener takes a free port and tells it (no window for
	// another process to take a port found free a moment before).
	l, err := transport.Listen(ctx, "tcp+tls://127.0.0.1:0?tls_cert="+cert+"&tls_key="+key)
	if err != nil {
		t.Fatal(err)
	}
	addr := l.(*tcp.Listener).Addr().String()
	srv := &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secure "+r.Host)
	})}
	go srv.Serve(l)
	defer srv.Shutdown(ctx)

	conn, err := transport.Dial(ctx, "tcp+tls://"+addr+"?tls_ca="+ca)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := transport.NewClient(conn).Get("http://orders/x")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "secure orders" {
		t.Fatalf("over TLS: %d %q (%s)", resp.StatusCode, b, resp.Header.Get(transport.HeaderError))
	}

	// A client that does not trust the CA is refused: the handshake fails.
	untrusting, err := transport.Dial(ctx, "tcp+tls://"+addr)
	if err != nil {
		t.Fatal(err)
	}
	defer untrusting.Close()
	rt := &transport.RoundTripper{Conn: untrusting, ReturnErrors: true}
	req, _ := http.NewRequest("GET", "http://orders/x", nil)
	if _, err := rt.RoundTrip(req); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted CA: %v, want a certificate error", err)
	}
	// Plain HTTP to the TLS port gets no service.
	plain, _ := transport.Dial(ctx, "tcp://"+addr)
	defer plain.Close()
	resp, err = transport.NewClient(plain).Get("http://orders/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("plain HTTP to a TLS listener answered %d, want net/http's 400", resp.StatusCode)
	}
}

func TestURLOptionErrors(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct{ url, want string }{
		{"tcp://127.0.0.1:0?reuseport=maybe", `bad value "maybe" for option "reuseport"`},
		{"tcp://127.0.0.1:0?idle=5s", `unknown option "idle"`},
		{"tcp://127.0.0.1:0?subscriber=nohost", "want topic@host:port"},
		{"tcp://127.0.0.1:0?tls_ca=x.pem", "need the tcp+tls scheme"},
		{"tcp+tls://127.0.0.1:0", "needs tls_cert and tls_key"},
		{"tcp+tls://127.0.0.1:0?tls_cert=a.pem", "go together"},
	} {
		l, err := transport.Listen(ctx, c.url)
		if err == nil {
			l.Close()
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Listen(%q) = %v, want an error containing %q", c.url, err, c.want)
		}
	}
	if _, err := transport.Listen(ctx, "tcp+tls://127.0.0.1:0?tls_cert=/nope.pem&tls_key=/nope.key"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing cert file: %v, want os.ErrNotExist", err)
	}
}
