// Package natsserver starts an embedded nats-server (github.com/nats-io/nats-server/v2)
// on 127.0.0.1, for tests, for brokertest's embedded step and for the
// quickstart demo. It is internal: users of httpbus never import it.
package natsserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Config configures an embedded server. The zero value is usable.
type Config struct {
	// Port is the client port on 127.0.0.1; zero means a free port chosen
	// by the kernel (nats-server's "-1": its own 0 means 4222).
	Port int
	// MaxPayload is the largest message the server accepts, in bytes;
	// zero means the server's default, 1 MiB.
	MaxPayload int32
	// ReadyTimeout bounds the wait for the server to accept connections;
	// zero means 10 s.
	ReadyTimeout time.Duration
	// TLS, when set, makes the server require TLS with this configuration
	// (its certificate; ClientAuth to verify client certificates). The URL
	// returned is then tls://127.0.0.1:PORT.
	TLS *tls.Config
	// User and Password, when set, are required of every client.
	User, Password string
}

// Start starts a server and returns its client URL (nats://127.0.0.1:PORT,
// or tls:// with Config.TLS; never with the credentials)
// and a shutdown func that stops it and waits until it has stopped (safe to
// call more than once).
func Start(cfg Config) (url string, shutdown func(), err error) {
	port := cfg.Port
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		Host:       "127.0.0.1",
		Port:       port,
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: cfg.MaxPayload,
		// No HTTP monitor, no cluster, no leafnodes, no JetStream.
		HTTPPort: 0,
		Username: cfg.User,
		Password: cfg.Password,
	}
	scheme := "nats"
	if cfg.TLS != nil {
		opts.TLS = true
		opts.TLSConfig = cfg.TLS
		opts.TLSVerify = cfg.TLS.ClientAuth == tls.RequireAndVerifyClientCert
		opts.TLSTimeout = 5
		scheme = "tls"
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return "", nil, fmt.Errorf("natsserver: %w", err)
	}
	go s.Start()
	wait := cfg.ReadyTimeout
	if wait <= 0 {
		wait = 10 * time.Second
	}
	if !s.ReadyForConnections(wait) {
		s.Shutdown()
		s.WaitForShutdown()
		return "", nil, errors.New("natsserver: server not ready after " + wait.String() + " (port in use?)")
	}
	addr, ok := s.Addr().(*net.TCPAddr)
	if !ok {
		s.Shutdown()
		s.WaitForShutdown()
		return "", nil, errors.New("natsserver: server has no TCP address")
	}
	stop := func() {
		s.Shutdown()
		s.WaitForShutdown()
	}
	return scheme + "://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(addr.Port)), stop, nil
}
