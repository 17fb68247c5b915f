package transport

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// TLS reads the TLS options of a client URL and returns the *tls.Config
// they make (TLS 1.2 at least), or nil when there is none and tlsScheme is
// false. tlsScheme says that the URL's scheme asks for TLS (mqtts, amqps,
// stomp+ssl); any of the options asks for it too. The options:
//
//	tls_ca=FILE[,FILE]          PEM root CAs to verify the server with
//	                            (instead of the system roots)
//	tls_cert=FILE&tls_key=FILE  PEM client certificate and its key
//	tls_server_name=NAME        the server name to verify (default: the
//	                            host dialled)
//
// Errors, prefixed by the Options' package: tls_cert without tls_key or
// the reverse, a file that cannot be read, a tls_ca file with no PEM
// certificate, a key that does not match its certificate.
func (o *Options) TLS(tlsScheme bool) (*tls.Config, error) {
	ca, cert, key := o.Strings("tls_ca"), o.String("tls_cert", ""), o.String("tls_key", "")
	name := o.String("tls_server_name", "")
	if !tlsScheme && len(ca) == 0 && cert == "" && key == "" && name == "" {
		return nil, nil
	}
	if (cert == "") != (key == "") {
		return nil, fmt.Errorf("%s: URL %q: tls_cert and tls_key go together", o.pkg, o.u.Redacted())
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: name}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("%s: tls_cert/tls_key: %w", o.pkg, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if len(ca) > 0 {
		cfg.RootCAs = x509.NewCertPool()
		for _, f := range ca {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("%s: tls_ca: %w", o.pkg, err)
			}
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("%s: tls_ca: no PEM certificate in %s", o.pkg, f)
			}
		}
	}
	return cfg, nil
}
