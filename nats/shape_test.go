package nats_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	natstransport "github.com/httpbus/httpbus/nats"
	"github.com/httpbus/httpbus/transport"
)

// TestListenDial: the package's URL openers take a Config that the URL's
// options override, and own their connections.
func TestListenDial(t *testing.T) {
	eachServer(t, func(t *testing.T, url string) {
		ctx := t.Context()
		svc := uniqueName("shape")
		cfg := natstransport.Config{Prefix: "shape", Logger: testLogger(t)}
		l, err := natstransport.Listen(ctx, url, transport.ListenConfig{Service: svc}, cfg)
		if err != nil {
			t.Fatal(err)
		}
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

		c, err := natstransport.Dial(ctx, url, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Call(ctx, svc, &transport.Message{}); err != nil {
			t.Errorf("Call with Config.Prefix %q: %v", cfg.Prefix, err)
		}

		// prefix= in the URL wins over Config.Prefix: no server there.
		other, err := natstransport.Dial(ctx, url+"?prefix=elsewhere", cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		if _, err := other.Call(ctx, svc, &transport.Message{}); !errors.Is(err, transport.ErrNoResponders) {
			t.Errorf("Call with prefix=elsewhere in the URL: %v, want ErrNoResponders", err)
		}

		if _, err := natstransport.Dial(ctx, "nats://%zz", cfg); err == nil {
			t.Error("Dial of a malformed URL succeeded")
		}
	})
}
