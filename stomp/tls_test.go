package stomp_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/httpbus/httpbus/transport"
)

// tlsFront terminates TLS with a certificate from a CA made here and
// forwards the plain bytes to the broker: the brokers of
// scripts/start-brokers.sh have no TLS listener, and they are shared, so
// they are not reconfigured. It returns the address and the CA's PEM file.
func tlsFront(t *testing.T, upstream string) (string, string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "httpbus test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(u, c); u.Close() }()
			go func() { defer wg.Done(); io.Copy(c, u); c.Close() }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), caFile
}

// TestTLS: stomp+ssl with the broker's certificate verified against a CA
// given by ca_file; without it, the unknown CA is refused.
func TestTLS(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		front, caFile := tlsFront(t, addr)
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
