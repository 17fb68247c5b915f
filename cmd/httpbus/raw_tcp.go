package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"
)

func init() { registerRaw(openRawTCP, "tcp") }

// rawTCP is net/http's client and server on loopback: the raw twin of the
// tcp backend, which is HTTP/1.1 over TCP too.
type rawTCP struct {
	srv    *http.Server
	done   chan error
	tr     *http.Transport
	client *http.Client
	url    string
	body   []byte
}

func openRawTCP(ctx context.Context, u *url.URL, name string, body []byte, cfg benchConfig) (rawRunner, error) {
	ln, err := listenRaw(ctx, u)
	if err != nil {
		return nil, err
	}
	r := &rawTCP{
		// The same application the httpbus echo service serves (its
		// ServeMux and routes), so that the two differ only in the wire.
		srv:  &http.Server{Handler: serviceHandler(), ReadHeaderTimeout: 10 * time.Second},
		done: make(chan error, 1),
		// As many idle connections as callers, so that no caller dials anew.
		tr:   &http.Transport{MaxIdleConns: cfg.Callers, MaxIdleConnsPerHost: cfg.Callers, DisableCompression: true, IdleConnTimeout: time.Minute},
		body: body,
		url:  "http://" + ln.Addr().String() + "/echo",
	}
	r.client = &http.Client{Transport: r.tr}
	go func() { r.done <- r.srv.Serve(ln) }()
	return r, nil
}

func (r *rawTCP) Do(ctx context.Context) error { return postEcho(ctx, r.client, r.url, r.body) }

func (r *rawTCP) Describe() string {
	return fmt.Sprintf("net/http Client (MaxIdleConnsPerHost %d) and Server on loopback, serving the same handler", r.tr.MaxIdleConnsPerHost)
}

func (r *rawTCP) Broker() string { return "" }

func (r *rawTCP) Close() error {
	r.tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := r.srv.Shutdown(ctx)
	if serr := <-r.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	r.tr.CloseIdleConnections()
	return err
}

// listenRaw listens on a free port of the -url's host (127.0.0.1 when it
// has none), for a raw net/http twin's server.
func listenRaw(ctx context.Context, u *url.URL) (net.Listener, error) {
	host := u.Hostname()
	if host == "" {
		host = "127.0.0.1"
	}
	var lc net.ListenConfig
	return lc.Listen(ctx, "tcp", net.JoinHostPort(host, "0"))
}
