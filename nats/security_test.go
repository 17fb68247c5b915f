package nats_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/httpbus/httpbus/internal/natsserver"
	"github.com/httpbus/httpbus/internal/testtls"
	"github.com/httpbus/httpbus/transport"
)

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
	ca := testtls.NewCA(t, "httpbus test CA")
	serverCert := ca.Issue(t, "nats-server").TLS
	caFile := ca.File

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
		other := testtls.NewCA(t, "another CA").File
		_, err := transport.Dial(context.Background(), url+"?tls_ca="+other+"&connect_timeout=2s")
		if !errors.Is(err, transport.ErrUnavailable) || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("Dial trusting another CA: %v, want ErrUnavailable naming the certificate", err)
		}
	})

	t.Run("mutual TLS", func(t *testing.T) {
		url := embedded(t, natsserver.Config{TLS: &tls.Config{
			Certificates: []tls.Certificate{serverCert}, ClientCAs: ca.Pool,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
		}})
		client := ca.Issue(t, "httpbus client")
		certFile, keyFile := client.CertFile, client.KeyFile
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
