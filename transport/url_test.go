package transport

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
)

var context_DeadlineExceeded = context.DeadlineExceeded

func init() {
	Register(func(ctx context.Context, u *url.URL, cfg ListenConfig) (Listener, error) {
		o := NewOptions("transport/fake", u)
		o.Int("prefetch", 1)
		return nil, o.Err()
	}, func(ctx context.Context, u *url.URL) (Conn, error) { return nil, NewOptions("transport/fake", u).Err() }, "fake")
}

func TestURLErrors(t *testing.T) {
	cases := []struct{ url, want string }{
		{"nope://host", `unknown URL scheme "nope"`},
		{"host:4222", `unknown URL scheme "host"`},
		{"/just/a/path", "has no scheme"},
		{"fake://h?prefetch=many", `bad value "many" for option "prefetch"`},
		{"fake://h?prefech=1", `unknown option "prefech"`},
		{"fake://user:s3cret@h?prefech=1", `unknown option "prefech"`},
		{"fake://user:s3cret@h:bad port", "malformed URL"},
	}
	for _, c := range cases {
		_, err := Listen(context.Background(), c.url)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Listen(%q) = %v, want an error containing %q", c.url, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Listen(%q) error shows the password: %v", c.url, err)
		}
	}
	if _, err := Dial(context.Background(), "fake://user:s3cret@h?x=1"); err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("Dial error %v: want an error without the password", err)
	}
}

func TestListenConfigFromURL(t *testing.T) {
	var got ListenConfig
	var gotURL string
	Register(func(ctx context.Context, u *url.URL, cfg ListenConfig) (Listener, error) {
		got, gotURL = cfg, u.String()
		return nil, nil
	}, func(ctx context.Context, u *url.URL) (Conn, error) { return nil, nil }, "capture")
	Listen(context.Background(), "capture://h:1/?service=orders&topics=a,%20b,&prefetch=3")
	if got.Service != "orders" || strings.Join(got.Topics, "|") != "a|b" {
		t.Errorf("ListenConfig = %+v", got)
	}
	if strings.Contains(gotURL, "service") || !strings.Contains(gotURL, "prefetch=3") {
		t.Errorf("backend saw URL %q: want service/topics removed, the rest kept", gotURL)
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"amqp://guest:secret@h:5672/": "amqp://guest:xxxxx@h:5672/",
		"nats://h:4222":               "nats://h:4222",
		"stomp://u:p@h:bad port":      "stomp://xxxxx@h:bad port",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRegistryDropsTypedNil: a backend may return its constructor's typed
// results as they are; on error, Listen and Dial give a nil interface, not
// a typed nil that compares unequal to nil.
func TestRegistryDropsTypedNil(t *testing.T) {
	type fakeListener struct{ Listener }
	type fakeConn struct{ Conn }
	boom := errors.New("boom")
	Register(
		func(context.Context, *url.URL, ListenConfig) (Listener, error) { return (*fakeListener)(nil), boom },
		func(context.Context, *url.URL) (Conn, error) { return (*fakeConn)(nil), boom },
		"typednil-test")
	l, err := Listen(context.Background(), "typednil-test://x?service=s")
	if !errors.Is(err, boom) || l != nil {
		t.Errorf("Listen: %v, %#v; want boom and a nil Listener", err, l)
	}
	c, err := Dial(context.Background(), "typednil-test://x")
	if !errors.Is(err, boom) || c != nil {
		t.Errorf("Dial: %v, %#v; want boom and a nil Conn", err, c)
	}
}
