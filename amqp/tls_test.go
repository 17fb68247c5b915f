package amqp_test

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/httpbus/httpbus/amqp"
	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/internal/testtls"
	"github.com/httpbus/httpbus/transport"
)

// TestAMQPS serves and calls over amqps:// through a TLS endpoint whose
// certificate a CA made in the test signed: with cacertfile in the URL, and
// with Config.AMQP.TLSClientConfig; without the CA the handshake fails, and
// no error shows the password.
func TestAMQPS(t *testing.T) {
	raw := brokertest.AMQP(t)
	bu, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	ca := testtls.NewCA(t, "httpbus test CA")
	caFile := ca.File
	addr := testtls.Front(t, ca, bu.Host)
	_, port, _ := net.SplitHostPort(addr)
	tu := *bu
	tu.Scheme = "amqps"
	tu.Host = "localhost:" + port
	secure := tu.String()

	svc := unique("tls")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Server over amqps with the CA from the URL.
	l, err := transport.Listen(ctx, secure+"?cacertfile="+url.QueryEscape(caFile)+"&service="+svc)
	if err != nil {
		t.Fatal(err)
	}
	deleteQueues(t, raw, svc)
	srv := &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "secure") }), Logger: testLogger(t)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	defer func() { srv.Shutdown(context.Background()); <-served }()

	// Client over amqps with a tls.Config.
	c, err := amqp.Dial(ctx, secure, amqp.Config{AMQP: amqp091Config(ca.Pool)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, err := get(ctx, transport.NewClient(c), "http://"+svc+"/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("call over amqps: %v %v", resp, err)
	}

	// Without the CA the certificate is refused.
	_, err = amqp.Dial(ctx, secure, amqp.Config{})
	var uerr x509.UnknownAuthorityError
	if err == nil || !errors.As(err, &uerr) {
		t.Errorf("dial without the CA: %v, want an unknown-authority error", err)
	}
	if pw, ok := bu.User.Password(); ok && pw != "" && err != nil && strings.Contains(err.Error(), ":"+pw+"@") {
		t.Errorf("error shows the password: %v", err)
	}
}
