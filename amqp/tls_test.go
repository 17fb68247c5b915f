package amqp_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/httpbus/httpbus/amqp"
	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/transport"
)

// testCA makes a self-signed CA and a server certificate for localhost and
// 127.0.0.1 signed by it.
func testCA(t *testing.T) (caPEM []byte, server tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "httpbus test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
}

// tlsProxy terminates TLS with cert and forwards each connection to
// backend; it stops at cleanup. RabbitMQ here has no TLS listener, so the
// test puts one in front of it.
func tlsProxy(t *testing.T, cert tls.Certificate, backend string) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if conns == nil {
			c.Close()
			return false
		}
		conns[c] = true
		return true
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			if !track(c) || !track(b) {
				c.Close()
				b.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(b, c); b.Close() }()
			go func() { defer wg.Done(); io.Copy(c, b); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		conns = nil
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

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
	caPEM, cert := testCA(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := tlsProxy(t, cert, bu.Host)
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
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c, err := amqp.Dial(ctx, secure, amqp.Config{AMQP: amqp091Config(pool)})
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
