package stomp_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/httpbus/httpbus/stomp"
	"github.com/httpbus/httpbus/transport"
)

func TestURLErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range []struct{ url, want string }{
		{"stomp://user:s3cret@127.0.0.1:1?bogus=1", `unknown option "bogus"`},
		{"stomp://user:s3cret@127.0.0.1:1?dialect=hornetq", `option "dialect"`},
		{"stomp://user:s3cret@127.0.0.1:1?prefetch=x", `option "prefetch"`},
		{"stomp://user:s3cret@127.0.0.1:1?ca_file=/x.pem", "ca_file needs scheme stomp+ssl"},
		{"stomp+ssl://user:s3cret@127.0.0.1:1?ca_file=/nonexistent.pem", "ca_file"},
		{"stomp://user:s3cret@127.0.0.1:1/vhost", "has a path"},
		{"stomp://user:s3cret@127.0.0.1:1", "dial"},
	} {
		_, err := transport.Dial(ctx, c.url)
		if err == nil {
			t.Errorf("%s: no error", c.url)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want it to mention %s", c.url, err, c.want)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: error shows the password: %v", c.url, err)
		}
	}
	_, err := transport.Dial(ctx, "stomp://user:s3cret@127.0.0.1:1")
	if !errors.Is(err, transport.ErrUnavailable) {
		t.Errorf("refused connection: %v, want ErrUnavailable", err)
	}
	if _, err := transport.Listen(ctx, "stomp://127.0.0.1:1"); err == nil || !strings.Contains(err.Error(), "service") {
		t.Errorf("Listen without service: %v", err)
	}
}

func TestURLBadCredentials(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		if b.name == "ActiveMQ" {
			t.Skip("the ActiveMQ instance of scripts/start-brokers.sh has no authentication")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := transport.Dial(ctx, "stomp://guest:wrong-s3cret@"+addr)
		if err == nil || !strings.Contains(err.Error(), "refused") || strings.Contains(err.Error(), "wrong-s3cret") {
			t.Errorf("bad credentials: %v", err)
		}
	})
}

// TestDialAndListenWithConfig: the package's own URL functions take a
// Config for what a URL cannot say (a Logger), and read service= and
// topics= from the URL.
func TestDialAndListenWithConfig(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		svc := unique("cfg")
		j.service(svc)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cfg := stomp.Config{Logger: testLogger(t), Prefetch: 8}
		l, err := stomp.Listen(ctx, brokerURL(addr, "service="+svc), transport.ListenConfig{}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		serve(t, l, http.HandlerFunc(hello))
		c, err := stomp.Dial(ctx, brokerURL(addr), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if status, body := get(t, transport.NewClient(c), "http://"+svc+"/cfg", 10*time.Second); status != 200 || body != "hello /cfg" {
			t.Errorf("%d %q", status, body)
		}
		if _, err := stomp.Dial(ctx, "amqp://"+addr, cfg); err == nil {
			t.Error("stomp.Dial accepted an amqp:// URL")
		}
	})
}
