package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/internal/testtls"
	"github.com/httpbus/httpbus/internal/webapp"
	"github.com/httpbus/httpbus/transport"
)

// lockedBuffer is an io.Writer safe for concurrent use that lets a test
// wait for a text to appear.
type lockedBuffer struct {
	mu      sync.Mutex
	b       strings.Builder
	written chan struct{} // closed and replaced on each write
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.written != nil {
		close(l.written)
		l.written = nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitFor waits up to 30 s until the buffer contains s.
func (l *lockedBuffer) waitFor(t *testing.T, s string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		l.mu.Lock()
		found := strings.Contains(l.b.String(), s)
		if l.written == nil {
			l.written = make(chan struct{})
		}
		written := l.written
		l.mu.Unlock()
		if found {
			return
		}
		select {
		case <-written:
		case <-timeout:
			t.Fatalf("%q did not appear in:\n%s", s, l.String())
		}
	}
}

// started is a long-running command (run in this process or as a child
// process) whose first line of standard output says it is ready.
type started struct {
	first  string        // first line of stdout
	stderr *lockedBuffer // standard error so far
	done   chan int      // exit code, once
	stop   func()        // SIGTERM (child) or the cancellation main makes of it
}

var urlInLine = regexp.MustCompile(`https?://[0-9.:]+`)

// addr is the first URL printed on the first line (the gateway's address).
func (s *started) addr() string { return urlInLine.FindString(s.first) }

// wait returns the exit code, failing the test after 30 s.
func (s *started) wait(t *testing.T) int {
	t.Helper()
	select {
	case code := <-s.done:
		s.done <- code
		return code
	case <-time.After(30 * time.Second):
		t.Fatalf("command did not exit\nstderr:\n%s", s.stderr)
		return -1
	}
}

// readFirstLine reads the first line of out into s.first, then drains out.
func (s *started) readFirstLine(t *testing.T, out io.Reader) {
	t.Helper()
	lines := make(chan string, 1)
	go func() {
		br := bufio.NewReader(out)
		line, _ := br.ReadString('\n')
		lines <- line
		io.Copy(io.Discard, br)
	}()
	select {
	case s.first = <-lines:
		if s.first == "" {
			t.Fatalf("command exited before it was ready\nstderr:\n%s", s.stderr)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("command printed no line in 30 s\nstderr:\n%s", s.stderr)
	}
}

// starter starts a command line and returns once it printed its first line.
type starter func(t *testing.T, args ...string) *started

// startRun runs the command line in this process; stop cancels run's
// context, which is what main makes of SIGTERM and SIGINT.
func startRun(t *testing.T, args ...string) *started {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	s := &started{stderr: &lockedBuffer{}, done: make(chan int, 1), stop: cancel}
	go func() {
		code := run(ctx, args, strings.NewReader(""), pw, s.stderr)
		pw.Close()
		s.done <- code
	}()
	t.Cleanup(func() {
		cancel()
		s.wait(t)
	})
	s.readFirstLine(t, pr)
	return s
}

// processStarter builds the command once and returns a starter that runs
// it as a child process; stop sends SIGTERM.
func processStarter(t *testing.T) starter {
	bin := filepath.Join(t.TempDir(), "httpbus")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return func(t *testing.T, args ...string) *started {
		t.Helper()
		cmd := exec.Command(bin, args...)
		pr, pw := io.Pipe()
		s := &started{stderr: &lockedBuffer{}, done: make(chan int, 1)}
		cmd.Stdout, cmd.Stderr = pw, s.stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		s.stop = func() { cmd.Process.Signal(syscall.SIGTERM) }
		go func() {
			cmd.Wait()
			pw.Close()
			s.done <- cmd.ProcessState.ExitCode()
		}()
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
			}
			s.wait(t)
		})
		s.readFirstLine(t, pr)
		return s
	}
}

type httpResult struct {
	status int
	header http.Header
	body   string
	err    error
}

func httpDo(method, u string, header ...string) httpResult {
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return httpResult{err: err}
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return httpResult{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return httpResult{resp.StatusCode, resp.Header, string(b), err}
}

func httpGet(t *testing.T, u string, header ...string) httpResult {
	t.Helper()
	r := httpDo(http.MethodGet, u, header...)
	if r.err != nil {
		t.Fatalf("GET %s: %v", u, r.err)
	}
	return r
}

// checkCommands runs bridge and gateway on the broker at base (listenURL
// for the bridge), Flask under gunicorn behind the bridge, with start; it
// calls through them, then stops both while a request is in flight: the
// request is answered, the gateway refuses new connections, both exit 0.
func checkCommands(t *testing.T, start starter, listenURL, dialURL, svc string) {
	app := webapp.Start(t)
	bridge := start(t, "bridge", "-url", listenURL, "-upstream", app.URL.String())
	gw := start(t, "gateway", "-listen", "127.0.0.1:0", "-url", dialURL, "-allow", svc, "-timeout", "20s")
	base := gw.addr()
	if !strings.HasPrefix(base, "http://127.0.0.1:") {
		t.Fatalf("gateway printed %q", gw.first)
	}

	r := httpGet(t, base+"/"+svc+"/echo?x=1")
	if r.status != 200 || !strings.Contains(r.body, `"path": "/echo"`) || !strings.Contains(r.body, `"X-Forwarded-For": "127.0.0.1"`) {
		t.Errorf("GET /%s/echo: %d %s", svc, r.status, r.body)
	}
	if r := httpGet(t, base+"/other/echo"); r.status != 404 || r.header.Get(transport.HeaderError) == "" {
		t.Errorf("service not in -allow: %d, Httpbus-Error %q; want 404 with it", r.status, r.header.Get(transport.HeaderError))
	}
	if r := httpGet(t, base+"/healthz"); r.status != 200 || r.body != "connected\n" {
		t.Errorf("healthz: %d %q", r.status, r.body)
	}
	gw.stderr.waitFor(t, `path="/`+svc+`/echo?x=1"`)
	for _, want := range []string{"msg=request", "method=GET", "service=" + svc, `path="/` + svc + `/echo?x=1" status=200 bytes=`, "duration="} {
		if !strings.Contains(gw.stderr.String(), want) {
			t.Errorf("the gateway's access log lacks %q:\n%s", want, gw.stderr)
		}
	}

	// Drain: a request the app holds when both commands get SIGTERM is
	// still answered.
	hold := fmt.Sprintf("drain-%d", time.Now().UnixNano())
	held := make(chan httpResult, 1)
	go func() { held <- httpDo(http.MethodGet, base+"/"+svc+"/hold/"+hold) }()
	if status := app.Get(t, "/arrived/"+hold); status != 200 {
		t.Fatalf("the held request did not reach the app: %d", status)
	}
	gw.stop()
	bridge.stop()
	gw.stderr.waitFor(t, "draining")
	bridge.stderr.waitFor(t, "draining")
	if c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://")); err == nil {
		c.Close()
		t.Errorf("the gateway accepts connections while draining")
	}
	app.Post(t, "/release/"+hold)
	if r := <-held; r.err != nil || r.status != 200 || r.body != "released\n" {
		t.Errorf("request in flight at SIGTERM: %d %q %v, want 200 released", r.status, r.body, r.err)
	}
	if code := gw.wait(t); code != exitOK {
		t.Errorf("gateway exit %d\n%s", code, gw.stderr)
	}
	if code := bridge.wait(t); code != exitOK {
		t.Errorf("bridge exit %d\n%s", code, bridge.stderr)
	}
}

// TestGatewayBridgeCommands runs both commands in this process over mem.
func TestGatewayBridgeCommands(t *testing.T) {
	svc := uniqueService(t)
	checkCommands(t, startRun, "mem://"+svc, "mem:", svc)
}

// TestGatewayBridgeSIGTERM builds the command and runs both as processes
// over NATS and RabbitMQ, stopping them with SIGTERM.
func TestGatewayBridgeSIGTERM(t *testing.T) {
	nats, amqp := brokertest.NATS(t), brokertest.AMQP(t)
	start := processStarter(t)
	t.Run("nats", func(t *testing.T) {
		svc := "httpbus-cmdtest-gateway"
		checkCommands(t, start, nats+"?service="+svc, nats, svc)
	})
	t.Run("amqp", func(t *testing.T) {
		svc := "httpbus-cmdtest-gateway"
		checkCommands(t, start, amqp+"?service="+svc, amqp, svc)
	})
}

// TestGatewayBadInput: a header block over the limit gets 431, a client
// that sends its header too slowly is cut off, a path with no service gets
// 404, and other requests are served all along.
func TestGatewayBadInput(t *testing.T) {
	svc := uniqueService(t)
	serveMem(t, svc, inspect)
	gw := startRun(t, "gateway", "-listen", "127.0.0.1:0", "-url", "mem:", "-max-header-bytes", "4096", "-read-header-timeout", "300ms")
	base := gw.addr()

	if r := httpGet(t, base+"/"+svc+"/x", "X-Big", strings.Repeat("a", 16<<10)); r.status != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("16 KiB header: %d, want 431", r.status)
	}
	if r := httpGet(t, base+"/"); r.status != 404 {
		t.Errorf("no service: %d, want 404", r.status)
	}

	// Slowloris: half a header, then nothing.
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /"+svc+"/x HTTP/1.1\r\nHost: a\r\nX-Slow: "); err != nil {
		t.Fatal(err)
	}
	if r := httpGet(t, base+"/"+svc+"/y"); r.status != 200 {
		t.Errorf("request beside the slow client: %d", r.status)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if _, err := io.Copy(io.Discard, c); err != nil { // the server closes it: EOF
		t.Errorf("slow client not cut off: %v after %v", err, time.Since(start))
	} else if d := time.Since(start); d > 5*time.Second {
		t.Errorf("slow client cut off after %v; -read-header-timeout is 300ms", d)
	}
	if r := httpGet(t, base+"/"+svc+"/z"); r.status != 200 {
		t.Errorf("request after the slow client: %d", r.status)
	}
}

func TestGatewayBridgeUsageErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"gateway no url", []string{"gateway"}, "-url is required"},
		{"gateway bad route", []string{"gateway", "-url", "mem:", "-route", "cookie"}, `unknown route "cookie"`},
		{"gateway cert without key", []string{"gateway", "-url", "mem:", "-tls-cert", "c.pem"}, "go together"},
		{"gateway missing cert", []string{"gateway", "-url", "mem:", "-tls-cert", filepath.Join(dir, "c.pem"), "-tls-key", filepath.Join(dir, "k.pem")}, "no such file"},
		{"gateway stray argument", []string{"gateway", "-url", "mem:", "extra"}, "unexpected argument"},
		{"bridge no upstream", []string{"bridge", "-url", "mem://x"}, "-upstream are required"},
		{"bridge bad upstream", []string{"bridge", "-url", "mem://x", "-upstream", "ftp://u:secret@h"}, "want http://host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(t, "", tt.args...)
			r.want(t, exitUsage, tt.want)
			if strings.Contains(r.stderr, "secret") {
				t.Errorf("stderr shows the password: %q", r.stderr)
			}
		})
	}
	runCmd(t, "", "gateway", "-url", "foo://h").want(t, exitFailure, `unknown URL scheme "foo"`)
}

// TestGatewayTLS serves HTTPS with -tls-cert and -tls-key: the service sees
// X-Forwarded-Proto https.
func TestGatewayTLS(t *testing.T) {
	svc := uniqueService(t)
	serveMem(t, svc, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Forwarded-Proto"))
	}))
	ca := testtls.NewCA(t, "gateway test CA")
	cert := ca.Issue(t, "gateway")
	gw := startRun(t, "gateway", "-listen", "127.0.0.1:0", "-url", "mem:", "-tls-cert", cert.CertFile, "-tls-key", cert.KeyFile)
	base := gw.addr()
	if !strings.HasPrefix(base, "https://") {
		t.Fatalf("gateway printed %q", gw.first)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get(base + "/" + svc + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "https" {
		t.Errorf("%d %q, want 200 https", resp.StatusCode, b)
	}
}
