package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeCert writes a self-signed certificate and its key as PEM files.
func writeCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "httpbus test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, DNSNames: []string{"broker.test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func tlsOf(t *testing.T, raw string, tlsScheme bool) (*tls.Config, error) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	o := NewOptions("transport/test", u)
	cfg, err := o.TLS(tlsScheme)
	if err == nil {
		err = o.Err()
	}
	return cfg, err
}

func TestOptionsTLS(t *testing.T) {
	cert, key := writeCert(t)
	notPEM := filepath.Join(t.TempDir(), "empty.pem")
	if err := os.WriteFile(notPEM, []byte("nothing here"), 0o600); err != nil {
		t.Fatal(err)
	}

	if cfg, err := tlsOf(t, "x://h:1", false); cfg != nil || err != nil {
		t.Errorf("no options, plain scheme: %v, %v; want nil, nil", cfg, err)
	}
	cfg, err := tlsOf(t, "x://h:1", true)
	if err != nil || cfg == nil || cfg.MinVersion != tls.VersionTLS12 || cfg.RootCAs != nil {
		t.Errorf("TLS scheme, no options: %+v, %v; want TLS 1.2, system roots", cfg, err)
	}
	cfg, err = tlsOf(t, "x://h:1?tls_server_name=broker.test", false)
	if err != nil || cfg == nil || cfg.ServerName != "broker.test" {
		t.Errorf("tls_server_name: %+v, %v", cfg, err)
	}
	cfg, err = tlsOf(t, "x://h:1?tls_ca="+cert+","+cert+"&tls_cert="+cert+"&tls_key="+key, false)
	if err != nil || cfg == nil || cfg.RootCAs == nil || len(cfg.Certificates) != 1 {
		t.Errorf("tls_ca, tls_cert, tls_key: %+v, %v", cfg, err)
	}

	for _, c := range []struct{ query, want string }{
		{"tls_cert=" + cert, "tls_cert and tls_key go together"},
		{"tls_key=" + key, "tls_cert and tls_key go together"},
		{"tls_ca=/nonexistent/ca.pem", "tls_ca"},
		{"tls_ca=" + notPEM, "no PEM certificate"},
		{"tls_cert=" + cert + "&tls_key=" + notPEM, "tls_cert/tls_key"},
	} {
		cfg, err := tlsOf(t, "x://user:secret@h:1?"+c.query, false)
		if err == nil || cfg != nil {
			t.Errorf("%s: %v, %v; want an error", c.query, cfg, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, c.want) || !strings.HasPrefix(msg, "transport/test: ") || strings.Contains(msg, "secret") {
			t.Errorf("%s: error %q: want the package prefix and %q, no password", c.query, msg, c.want)
		}
	}
}
