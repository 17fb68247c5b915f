// Package webapp runs a small Flask application (app.py) under gunicorn
// for end-to-end tests of the gateway and the bridge: a real web app in
// another language, as the seeds run one. gunicorn and Flask come from
// Debian's packages gunicorn and python3-flask.
//
// It is internal: users of httpbus never import it.
package webapp

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/httpbus/httpbus/internal/brokertest"
)

//go:embed app.py
var appPy []byte

// App is a running gunicorn serving app.py.
type App struct {
	// URL is the app's base URL, http://127.0.0.1:PORT.
	URL *url.URL
	cmd *exec.Cmd
	log *syncBuffer
}

// Log returns what gunicorn wrote so far (its error log and the app's).
func (a *App) Log() string { return a.log.String() }

// Post sends POST path to the app directly and returns the status, failing
// the test on a transport error.
func (a *App) Post(t testing.TB, path string) int {
	t.Helper()
	return a.do(t, http.MethodPost, path)
}

// Get sends GET path to the app directly and returns the status.
func (a *App) Get(t testing.TB, path string) int {
	t.Helper()
	return a.do(t, http.MethodGet, path)
}

func (a *App) do(t testing.TB, method, path string) int {
	t.Helper()
	req, err := http.NewRequest(method, a.URL.String()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("webapp: %s %s: %v", method, path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Start starts gunicorn on a free loopback port, waits until GET /ping
// answers (up to 30 s) and stops it (SIGINT, gunicorn's quick shutdown) at
// the test's cleanup. Without a gunicorn on PATH the test is skipped, or,
// with HTTPBUS_REQUIRE_BROKERS=1, fails.
//
// Routes of app.py: /ping; /echo[/...] answers JSON with method, path,
// query, host, headers, body_len, body_sha256 and json (the parsed body);
// /status/CODE answers CODE; /sleep?ms=N sleeps N ms; /bytes?n=N sends N
// bytes 0,1,…,255,0,…; /events/NAME sends the server-sent event "data: 0",
// waits up to 10 s for POST /release/NAME, then sends "data: 1";
// /hold/NAME waits up to 20 s for POST /release/NAME and answers
// "released"; GET /arrived/NAME answers 200 once a request to /hold/NAME
// has arrived (504 after 10 s).
func Start(t testing.TB) *App {
	t.Helper()
	gunicorn, err := exec.LookPath("gunicorn")
	if err != nil {
		msg := "webapp: gunicorn not found on PATH (apt-get install gunicorn python3-flask)"
		if brokertest.Required() {
			t.Fatal(msg + "; " + brokertest.EnvRequireBrokers + "=1 makes this a failure")
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "app.py"), appPy, 0o600); err != nil {
		t.Fatal(err)
	}
	// gunicorn takes the socket already bound here (fd 3), so that no other
	// test can take the port between a check and gunicorn's bind.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	sock, err := l.(*net.TCPListener).File()
	l.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	log := &syncBuffer{}
	cmd := exec.Command(gunicorn, "--chdir", dir, "--bind", "fd://3",
		"--workers", "1", "--worker-class", "gthread", "--threads", "16",
		"--timeout", "60", "--graceful-timeout", "2", "app:app")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.ExtraFiles = []*os.File{sock}
	if err := cmd.Start(); err != nil {
		t.Fatalf("webapp: start gunicorn: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	a := &App{URL: &url.URL{Scheme: "http", Host: addr}, cmd: cmd, log: log}
	if err := a.waitReady(exited, 30*time.Second); err != nil {
		t.Fatalf("webapp: %v\ngunicorn's log:\n%s", err, log.String())
	}
	return a
}

// waitReady polls GET /ping until it answers 200, gunicorn exits or the
// time is up.
func (a *App) waitReady(exited <-chan struct{}, limit time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := client.Get(a.URL.String() + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gunicorn not ready on %s after %v: %v", a.URL.Host, limit, err)
		}
		select {
		case <-exited:
			return errors.New("gunicorn exited before it was ready")
		case <-tick.C:
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
