package main

import (
	"context"
	"fmt"
	"net/url"

	natsgo "github.com/nats-io/nats.go"
)

func init() { registerRaw(openRawNATS, "nats", "tls") }

// rawNATS is nats.go's Request against a QueueSubscribe responder that
// answers with the request's payload: NATS request/reply with nothing of
// httpbus. Responder and requester use separate connections, as httpbus's
// listener and caller do.
type rawNATS struct {
	srv, cli *natsgo.Conn
	subject  string
	body     []byte
}

// natsServers returns u without path and query (httpbus options), for
// natsgo.Connect.
func natsServers(u *url.URL) string {
	v := *u
	v.Path, v.RawPath, v.RawQuery, v.Fragment = "", "", "", ""
	return v.String()
}

func openRawNATS(ctx context.Context, u *url.URL, name string, body []byte, cfg benchConfig) (rawRunner, error) {
	servers := natsServers(u)
	srv, err := natsgo.Connect(servers, natsgo.Name("httpbus-bench-raw-responder"))
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", u.Redacted(), err)
	}
	r := &rawNATS{srv: srv, subject: "httpbus-bench-raw." + name, body: body}
	if _, err := srv.QueueSubscribe(r.subject, "responders", func(m *natsgo.Msg) {
		m.Respond(m.Data) //nolint:errcheck // the requester times out
	}); err != nil {
		srv.Close()
		return nil, err
	}
	fctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if err := srv.FlushWithContext(fctx); err != nil {
		srv.Close()
		return nil, err
	}
	if r.cli, err = natsgo.Connect(servers, natsgo.Name("httpbus-bench-raw-requester")); err != nil {
		srv.Close()
		return nil, fmt.Errorf("connect %s: %w", u.Redacted(), err)
	}
	return r, nil
}

func (r *rawNATS) Do(ctx context.Context) error {
	m, err := r.cli.RequestWithContext(ctx, r.subject, r.body)
	if err != nil {
		return err
	}
	if len(m.Data) != len(r.body) {
		return fmt.Errorf("echo of %d bytes came back with %d", len(r.body), len(m.Data))
	}
	return nil
}

func (r *rawNATS) Describe() string {
	return "nats.go RequestWithContext against a QueueSubscribe responder (m.Respond), two connections"
}

func (r *rawNATS) Broker() string { return "nats-server " + r.cli.ConnectedServerVersion() }

func (r *rawNATS) Close() error {
	r.cli.Close()
	r.srv.Close()
	return nil
}
