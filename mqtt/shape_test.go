package mqtt_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"

	"github.com/httpbus/httpbus/internal/brokertest"
	mqtttransport "github.com/httpbus/httpbus/mqtt"
	"github.com/httpbus/httpbus/transport"
)

// TestListenDial: the package's URL openers take a Config that the URL's
// options override.
func TestListenDial(t *testing.T) {
	raw := brokertest.MQTT(t)
	ctx := t.Context()
	svc := unique("shape")
	cfg := mqtttransport.Config{Prefix: "shape"}
	l, err := mqtttransport.Listen(ctx, raw, transport.ListenConfig{Service: svc}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := l.ClientID(); !strings.HasPrefix(got, "hb-") {
		t.Errorf("ClientID = %q, want a random hb-…", got)
	}
	serve(t, l)

	c, err := mqtttransport.Dial(ctx, raw, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.Call(callCtx, svc, &transport.Message{}); err != nil {
		t.Errorf("Call with Config.Prefix %q: %v", cfg.Prefix, err)
	}

	// prefix= in the URL wins over Config.Prefix: nobody subscribes there.
	other, err := mqtttransport.Dial(ctx, raw+"?prefix=elsewhere", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Call(callCtx, svc, &transport.Message{}); !errors.Is(err, transport.ErrNoResponders) {
		t.Errorf("Call with prefix=elsewhere in the URL: %v, want ErrNoResponders", err)
	}

	for _, bad := range []string{"mqtt://%zz", raw + "?prefx=a", raw + "?tls_cert=x.pem"} {
		if c, err := mqtttransport.Dial(ctx, bad, cfg); err == nil {
			c.Close()
			t.Errorf("Dial(%q) succeeded", bad)
		}
	}
}

// TestNewListenerNewConn: the constructors that take an
// autopaho.ClientConfig (the URL openers, which the conformance suite runs,
// end in them too).
func TestNewListenerNewConn(t *testing.T) {
	u, err := url.Parse(brokertest.MQTT(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := mqtttransport.NewConn(ctx, autopaho.ClientConfig{}, mqtttransport.Config{}); err == nil || !strings.Contains(err.Error(), "ServerUrls") {
		t.Errorf("NewConn without ServerUrls: %v, want an error naming ServerUrls", err)
	}
	ac := autopaho.ClientConfig{ServerUrls: []*url.URL{{Scheme: "mqtt", Host: u.Host}}}
	svc := unique("shape")
	l, err := mqtttransport.NewListener(ctx, ac, transport.ListenConfig{Service: svc}, mqtttransport.Config{ClientID: unique("fixed")})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(l.ClientID(), "fixed-") {
		t.Errorf("ClientID = %q, want Config.ClientID", l.ClientID())
	}
	serve(t, l)
	c, err := mqtttransport.NewConn(ctx, ac, mqtttransport.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := c.Call(callCtx, svc, &transport.Message{}); err != nil {
		t.Errorf("Call: %v", err)
	}
	if s := c.State(); s != transport.StateConnected {
		t.Errorf("State = %v, want %v", s, transport.StateConnected)
	}
}

// serve serves l with a handler answering 204 until the test ends.
func serve(t *testing.T, l transport.Listener) {
	srv := &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})}
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
}
