package nats_test

import (
	"bytes"
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
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/httpbus/httpbus/internal/natsserver"
	"github.com/httpbus/httpbus/transport"
)

// testCA is a self-signed CA generated for one test, with helpers to issue
// certificates and write PEM files.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a certificate for 127.0.0.1 (server and client use).
func (ca *testCA) issue(t testing.TB, cn string) (tls.Certificate, []byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair, certPEM, keyPEM
}

func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// roundTrip serves echoID on rawURL+"&service=…" and calls it through
// rawURL; it returns the error of Listen or Dial, if any.
func roundTrip(t *testing.T, listenURL, dialURL string) error {
	t.Helper()
	svc := uniqueName("tls")
	sep := "?"
	if strings.Contains(listenURL, "?") {
		sep = "&"
	}
	l, err := transport.Listen(context.Background(), listenURL+sep+"service="+svc)
	if err != nil {
		return err
	}
	serve(t, &transport.Server{Handler: echoID}, l)
	c, err := transport.Dial(context.Background(), dialURL)
	if err != nil {
		return err
	}
	defer c.Close()
	req, _ := http.NewRequestWithContext(ctxTimeout(t, 10*time.Second), "POST", "http://"+svc+"/secure", strings.NewReader("over tls"))
	resp, err := transport.NewClient(c).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "over tls" {
		t.Fatalf("round trip over TLS: %d %q", resp.StatusCode, b)
	}
	return nil
}

// TestTLS: tls:// URLs with a CA generated here; a client that does not
// trust the CA is refused; with mutual TLS, a client without a certificate
// is refused.
func TestTLS(t *testing.T) {
	ca := newCA(t, "httpbus test CA")
	serverCert, _, _ := ca.issue(t, "nats-server")
	caFile := writeFile(t, "ca.pem", ca.pem)

	t.Run("server TLS", func(t *testing.T) {
		url := embedded(t, natsserver.Config{TLS: &tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12}})
		if !strings.HasPrefix(url, "tls://") {
			t.Fatalf("embedded TLS server URL %q", url)
		}
		if err := roundTrip(t, url+"?tls_ca="+caFile, url+"?tls_ca="+caFile); err != nil {
			t.Fatal(err)
		}
		// nats:// with tls_ca also means TLS.
		plain := "nats://" + strings.TrimPrefix(url, "tls://")
		if err := roundTrip(t, plain+"?tls_ca="+caFile, plain+"?tls_ca="+caFile); err != nil {
			t.Fatal(err)
		}
		other := writeFile(t, "other.pem", newCA(t, "another CA").pem)
		_, err := transport.Dial(context.Background(), url+"?tls_ca="+other+"&connect_timeout=2s")
		if !errors.Is(err, transport.ErrUnavailable) || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("Dial trusting another CA: %v, want ErrUnavailable naming the certificate", err)
		}
	})

	t.Run("mutual TLS", func(t *testing.T) {
		pool := x509.NewCertPool()
		pool.AddCert(ca.cert)
		url := embedded(t, natsserver.Config{TLS: &tls.Config{
			Certificates: []tls.Certificate{serverCert}, ClientCAs: pool,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
		}})
		_, certPEM, keyPEM := ca.issue(t, "httpbus client")
		certFile, keyFile := writeFile(t, "client.pem", certPEM), writeFile(t, "client.key", keyPEM)
		withCert := url + "?tls_ca=" + caFile + "&tls_cert=" + certFile + "&tls_key=" + keyFile
		if err := roundTrip(t, withCert, withCert); err != nil {
			t.Fatal(err)
		}
		if _, err := transport.Dial(context.Background(), url+"?tls_ca="+caFile+"&connect_timeout=2s"); !errors.Is(err, transport.ErrUnavailable) {
			t.Errorf("Dial without a client certificate: %v, want ErrUnavailable", err)
		}
	})
}

// syncBuffer is a bytes.Buffer safe for concurrent writes (slog handlers
// run on nats.go's callback goroutine).
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

// TestCredentialsNeverShown: a password in a URL appears in no error and
// no log line, including the disconnect and reconnect lines logged while
// the server restarts.
func TestCredentialsNeverShown(t *testing.T) {
	const user, pass = "svc", "s3cret-Pa55"
	url, stop, err := natsserver.Start(natsserver.Config{User: user, Password: pass})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() })
	hostport := strings.TrimPrefix(url, "nats://")
	port, _ := strconv.Atoi(hostport[strings.LastIndex(hostport, ":")+1:])

	var logs syncBuffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(old) })

	_, err = transport.Dial(context.Background(), "nats://"+user+":wrong-"+pass+"@"+hostport)
	if err == nil {
		t.Fatal("Dial with a wrong password succeeded")
	}
	if strings.Contains(err.Error(), pass) {
		t.Errorf("error shows the password: %v", err)
	}

	good := "nats://" + user + ":" + pass + "@" + hostport + "?reconnect_wait=20ms"
	svc := uniqueName("creds")
	l, err := transport.Listen(context.Background(), good+"&service="+svc)
	if err != nil {
		t.Fatalf("Listen: %v", strings.ReplaceAll(err.Error(), pass, "REDACTED"))
	}
	serve(t, &transport.Server{Handler: echoID}, l)
	c, err := transport.Dial(context.Background(), good)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client := transport.NewClient(c)
	call := func() int {
		req, _ := http.NewRequestWithContext(ctxTimeout(t, 2*time.Second), "POST", "http://"+svc+"/", strings.NewReader("x"))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := call(); code != 200 {
		t.Fatalf("call: %d", code)
	}
	// Restart the server: the disconnect and reconnect are logged.
	stop()
	_, stop2, err := natsserver.Start(natsserver.Config{Port: port, User: user, Password: pass})
	if err != nil {
		t.Fatal(err)
	}
	stop = stop2
	deadline := time.Now().Add(10 * time.Second)
	for call() != 200 {
		if time.Now().After(deadline) {
			t.Fatal("service did not answer within 10s of the restart")
		}
	}
	out := logs.String()
	if !strings.Contains(out, "disconnected") || !strings.Contains(out, "reconnected") {
		t.Errorf("expected disconnect and reconnect log lines, got:\n%s", out)
	}
	if strings.Contains(out, pass) {
		t.Errorf("logs show the password:\n%s", out)
	}
}
