package natsserver

import (
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func greets(t *testing.T, url string) bool {
	t.Helper()
	addr := url[strings.Index(url, "://")+3:]
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	buf := make([]byte, 4)
	_, err = c.Read(buf)
	return err == nil && string(buf) == "INFO"
}

// TestStart: two servers get different free loopback ports (never 4222),
// answer, stop on shutdown (twice is fine), and a server starts again on a
// port just freed.
func TestStart(t *testing.T) {
	u1, stop1, err := Start(Config{})
	if err != nil {
		t.Fatal(err)
	}
	u2, stop2, err := Start(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	for _, u := range []string{u1, u2} {
		if !strings.HasPrefix(u, "nats://127.0.0.1:") || strings.HasSuffix(u, ":4222") {
			t.Errorf("URL %q, want nats://127.0.0.1:<free port>", u)
		}
		if !greets(t, u) {
			t.Errorf("%s does not answer", u)
		}
	}
	if u1 == u2 {
		t.Errorf("two servers on one URL %s", u1)
	}
	stop1()
	stop1()
	if greets(t, u1) {
		t.Errorf("%s still answers after shutdown", u1)
	}
	a, err := net.ResolveTCPAddr("tcp", u1[len("nats://"):])
	if err != nil {
		t.Fatal(err)
	}
	port := a.Port
	u3, stop3, err := Start(Config{Port: port})
	if err != nil {
		t.Fatalf("restart on port %d: %v", port, err)
	}
	defer stop3()
	if u3 != u1 || !greets(t, u3) {
		t.Errorf("restarted at %q (answers: %v), want %q", u3, greets(t, u3), u1)
	}
	// The port is taken now: a second server there fails, not hangs.
	if _, _, err := Start(Config{Port: port, ReadyTimeout: 2 * time.Second}); err == nil {
		t.Errorf("a second server on taken port %d started", port)
	}
}
