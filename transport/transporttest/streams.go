package transporttest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/httpbus/httpbus/transport"
)

func (f Features) streamBytes() int64 {
	if f.StreamBytes > 0 {
		return f.StreamBytes
	}
	if v, err := strconv.ParseInt(os.Getenv("HTTPBUS_STREAM_BYTES"), 10, 64); err == nil && v > 0 {
		return v
	}
	if raceEnabled {
		return 8 << 20
	}
	return 64 << 20
}

// pattern is a reproducible body of n bytes that is never held in memory
// whole.
func pattern(seed uint64, n int64) io.Reader {
	return io.LimitReader(&prng{r: rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})}, n)
}

type prng struct{ r *rand.ChaCha8 }

func (p *prng) Read(b []byte) (int, error) { return p.r.Read(b) }

func digest(r io.Reader) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// streamDownload: a handler writes a body larger than any broker message;
// the caller reads all of it, byte for byte.
func (s *suite) streamDownload(t *testing.T) {
	n := s.h.Features.streamBytes()
	svc := unique("down")
	s.serve(t, &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		if r.URL.Query().Get("length") == "1" {
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		}
		io.Copy(w, pattern(1, n))
	})}, transport.ListenConfig{Service: svc})
	client, _ := s.client(t)
	want, _, _ := digest(pattern(1, n))
	for _, q := range []string{"", "?length=1"} {
		req, _ := http.NewRequestWithContext(s.ctx(t), "GET", "http://"+svc+"/file"+q, nil)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, size, err := digest(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || got != want {
			t.Fatalf("GET%s: status %d (%s), %d of %d bytes, err %v, same bytes %v", q, resp.StatusCode, resp.Header.Get(transport.HeaderError), size, n, err, got == want)
		}
		t.Logf("GET%s: %d MiB in %v (%.0f MB/s)", q, n>>20, time.Since(start).Round(time.Millisecond), float64(n)/1e6/time.Since(start).Seconds())
	}
}

// uploadHandler answers with the digest and length of the body it read.
func uploadHandler(w http.ResponseWriter, r *http.Request) {
	sum, n, err := digest(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("X-Content-Length", strconv.FormatInt(r.ContentLength, 10))
	w.Header().Set("X-Transfer-Encoding", strings.Join(r.TransferEncoding, ","))
	fmt.Fprintf(w, "%s %d", sum, n)
}

func (s *suite) upload(t *testing.T, client *http.Client, svc string, n int64, known bool) {
	t.Helper()
	want, _, _ := digest(pattern(2, n))
	body := pattern(2, n)
	if !known {
		body = struct{ io.Reader }{body} // no length: chunked
	}
	req, _ := http.NewRequestWithContext(s.ctx(t), "POST", "http://"+svc+"/upload", body)
	if known {
		req.ContentLength = n
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != fmt.Sprintf("%s %d", want, n) {
		t.Fatalf("upload of %d bytes (known length %v): status %d (%s), handler read %q", n, known, resp.StatusCode, resp.Header.Get(transport.HeaderError), b)
	}
	if !known && resp.Header.Get("X-Content-Length") != "-1" {
		t.Errorf("handler saw ContentLength %s for a body of unknown length, want -1", resp.Header.Get("X-Content-Length"))
	}
	t.Logf("upload (known length %v): %d MiB in %v (%.0f MB/s)", known, n>>20, time.Since(start).Round(time.Millisecond), float64(n)/1e6/time.Since(start).Seconds())
}

// streamUpload: a request body larger than any broker message reaches the
// handler whole, with a known length and chunked.
func (s *suite) streamUpload(t *testing.T) {
	svc := unique("up")
	s.serve(t, &transport.Server{Handler: http.HandlerFunc(uploadHandler)}, transport.ListenConfig{Service: svc})
	client, _ := s.client(t)
	n := s.h.Features.streamBytes()
	s.upload(t, client, svc, n, true)
	s.upload(t, client, svc, n, false)
}

// streamUploadOneInstance: with two instances of the service, every part
// of a request body reaches the instance that took the first part.
func (s *suite) streamUploadOneInstance(t *testing.T) {
	svc := unique("up2")
	for range 2 {
		s.serve(t, &transport.Server{Handler: http.HandlerFunc(uploadHandler)}, transport.ListenConfig{Service: svc})
	}
	client, _ := s.client(t)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.upload(t, client, svc, 8<<20, false)
		}()
	}
	wg.Wait()
}

// streamSlowReader: a handler that writes fast to a caller that stopped
// reading is held back by credit: what it wrote beyond what the caller read
// stays within the window.
func (s *suite) streamSlowReader(t *testing.T) {
	svc := unique("slow")
	var written atomic.Int64
	s.serve(t, &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 32<<10)
		for i := 0; i < 512; i++ { // 16 MiB
			if _, err := w.Write(buf); err != nil {
				return
			}
			written.Add(int64(len(buf)))
		}
	})}, transport.ListenConfig{Service: svc})
	client, _ := s.client(t)
	req, _ := http.NewRequestWithContext(s.ctx(t), "GET", "http://"+svc+"/", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	read, err := io.CopyN(io.Discard, resp.Body, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	// The caller stops reading. Observe the handler for a while: without
	// flow control it would write all 16 MiB in this time.
	var last int64
	for range 20 {
		time.Sleep(25 * time.Millisecond)
		last = written.Load()
	}
	const bound = 8 << 20 // window 2 MiB at each end, plus the backend's buffers
	if last-read > bound {
		t.Errorf("handler wrote %d bytes while the caller had read %d: %d ahead, want at most %d", last, read, last-read, bound)
	}
	t.Logf("caller read %d KiB and stopped; handler wrote %d KiB", read>>10, last>>10)
	rest, err := io.Copy(io.Discard, resp.Body)
	if err != nil || read+rest != 16<<20 {
		t.Errorf("rest of the body: %d bytes, %v; want %d", rest, err, 16<<20-read)
	}
}

// streamFlush: each Flush reaches the caller while the handler still runs
// (server-sent events): the handler writes the next event only after the
// caller has read the previous one.
func (s *suite) streamFlush(t *testing.T) {
	svc := unique("sse")
	seen := make(chan int, 3)
	s.serve(t, &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case got := <-seen:
				if got != i {
					return
				}
			case <-r.Context().Done():
				return
			}
		}
	})}, transport.ListenConfig{Service: svc})
	client, _ := s.client(t)
	var hints atomic.Int32
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		if code == http.StatusEarlyHints && h.Get("Link") != "" {
			hints.Add(1)
		}
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(s.ctx(t), trace), "GET", "http://"+svc+"/events", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	br := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("event %d: %v (the flush did not reach the caller)", i, err)
		}
		if want := fmt.Sprintf("data: event %d\n", i); line != want {
			t.Fatalf("event %d: %q, want %q", i, line, want)
		}
		br.ReadString('\n')
		seen <- i
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("after the events: %q, %v", rest, err)
	}
	if hints.Load() != 1 {
		t.Errorf("Got1xxResponse saw %d 103 Early Hints with a Link header, want 1", hints.Load())
	}
}

// streamFieldsInFrame: a whole request carries the caller's inbox and
// stream id as fields of its frame (WIRE.md §7 step 1). An application's
// own fields of those names neither reach the handler nor redirect the
// stream: the flushed response still arrives, through the caller's inbox.
func (s *suite) streamFieldsInFrame(t *testing.T) {
	svc := unique("fields")
	saw := make(chan http.Header, 1)
	s.serve(t, &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		saw <- r.Header.Clone()
		io.WriteString(w, "first ")
		w.(http.Flusher).Flush() // a stream from here on
		io.WriteString(w, "second")
	})}, transport.ListenConfig{Service: svc})
	client, _ := s.client(t)
	req, _ := http.NewRequestWithContext(s.ctx(t), "POST", "http://"+svc+"/x", strings.NewReader("body"))
	req.Header.Set(transport.HeaderReplyTo, "elsewhere")
	req.Header.Set(transport.HeaderStream, "not-mine")
	req.Header.Set("X-Kept", "1")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(body) != "first second" {
		t.Fatalf("status %d, body %q, %v (Httpbus-Error %q); want 200 \"first second\"", resp.StatusCode, body, err, resp.Header.Get(transport.HeaderError))
	}
	h := <-saw
	if _, ok := h[transport.HeaderReplyTo]; ok {
		t.Errorf("the handler saw %s: %q", transport.HeaderReplyTo, h[transport.HeaderReplyTo])
	}
	if _, ok := h[transport.HeaderStream]; ok {
		t.Errorf("the handler saw %s: %q", transport.HeaderStream, h[transport.HeaderStream])
	}
	if h.Get("X-Kept") != "1" {
		t.Errorf("the handler lost X-Kept: %v", h)
	}
}

// streamTrailers: trailers travel, declared and with http.TrailerPrefix,
// on a small response and a streamed one.
func (s *suite) streamTrailers(t *testing.T) {
	svc := unique("trailer")
	s.serve(t, &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		w.WriteHeader(200)
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		io.Copy(w, pattern(3, int64(n)))
		w.Header().Set("X-Checksum", "abc")
		w.Header().Set(http.TrailerPrefix+"X-Late", "late")
	})}, transport.ListenConfig{Service: svc})
	client, _ := s.client(t)
	for _, n := range []int{10, 3 << 20} {
		req, _ := http.NewRequestWithContext(s.ctx(t), "GET", "http://"+svc+"/?n="+strconv.Itoa(n), nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || got != int64(n) {
			t.Fatalf("body %d bytes, %v; want %d", got, err, n)
		}
		if resp.Trailer.Get("X-Checksum") != "abc" || resp.Trailer.Get("X-Late") != "late" {
			t.Errorf("%d-byte body: trailers %v, want X-Checksum: abc and X-Late: late", n, resp.Trailer)
		}
	}
}

// streamChunkedRequest: a request body of unknown length reaches the
// handler as net/http gives it: ContentLength -1, chunked, with trailers.
func (s *suite) streamChunkedRequest(t *testing.T) {
	svc := unique("chunked")
	s.serve(t, &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		fmt.Fprintf(w, "%d %q %q %q", r.ContentLength, r.TransferEncoding, b, r.Trailer.Get("X-Sum"))
	})}, transport.ListenConfig{Service: svc})
	client, _ := s.client(t)
	pr, pw := io.Pipe()
	req, _ := http.NewRequestWithContext(s.ctx(t), "POST", "http://"+svc+"/", pr)
	req.Trailer = http.Header{"X-Sum": nil}
	go func() {
		pw.Write([]byte("hello "))
		pw.Write([]byte("world"))
		req.Trailer.Set("X-Sum", "11")
		pw.Close()
	}()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `-1 ["chunked"] "hello world" "11"`; string(b) != want {
		t.Errorf("handler saw %s, want %s", b, want)
	}
}

// streamCancel: the caller gives up mid-stream; the handler's context ends.
func (s *suite) streamCancel(t *testing.T) {
	svc := unique("cancel")
	ended := make(chan time.Time, 1)
	s.serve(t, &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for r.Context().Err() == nil {
			fmt.Fprintf(w, "tick\n")
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
		ended <- time.Now()
	})}, transport.ListenConfig{Service: svc})
	client, _ := s.client(t)
	ctx, cancel := context.WithCancel(s.ctx(t))
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+svc+"/ticks", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	for range 3 {
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Now()
	cancel()
	resp.Body.Close()
	s.waitEnded(t, ended, at)
}

func (s *suite) waitEnded(t *testing.T, ended chan time.Time, at time.Time) {
	t.Helper()
	select {
	case e := <-ended:
		d := e.Sub(at)
		t.Logf("handler's context ended %v after the caller cancelled", d.Round(time.Millisecond))
		if d > 100*time.Millisecond*time.Duration(max(1, s.h.Features.timeout()/(10*time.Second))) {
			t.Errorf("handler's context ended %v after the caller cancelled, want within 100 ms", d)
		}
	case <-time.After(s.h.Features.timeout()):
		t.Fatal("handler's context did not end after the caller cancelled")
	}
}

// streamCancelBeforeResponse: the caller gives up while the handler runs
// and has written nothing; the handler's context ends.
func (s *suite) streamCancelBeforeResponse(t *testing.T) {
	svc := unique("cancel0")
	ended := make(chan time.Time, 1)
	started := make(chan struct{})
	s.serve(t, &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		ended <- time.Now()
	})}, transport.ListenConfig{Service: svc})
	_, conn := s.client(t)
	// Over a broker the caller can cancel once the server has announced
	// itself (its "continue", 20 ms into the handler, ends Call); a native
	// HTTP backend (tcp) cancels by closing the connection at any time.
	announced := make(chan struct{})
	if st, ok := conn.(transport.Streamer); ok {
		conn = &announcedConn{Conn: conn, Streamer: st, announced: announced}
	} else {
		close(announced)
	}
	client := &http.Client{Transport: transport.NewRoundTripper(conn)}
	ctx, cancel := context.WithCancel(s.ctx(t))
	errc := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+svc+"/wait", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-started
	select {
	case <-announced:
	case <-time.After(s.h.Features.timeout()):
		t.Fatal("the server never announced the exchange (no continue within the timeout)")
	}
	at := time.Now()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Do returned %v, want context.Canceled", err)
	}
	s.waitEnded(t, ended, at)
}

// streamServerKilled: the server goes away mid-stream; the caller gets an
// error from resp.Body.Read, never a short body that looks complete.
func (s *suite) streamServerKilled(t *testing.T) {
	svc := unique("killed")
	l := s.h.Listen(t, transport.ListenConfig{Service: svc})
	srv := &transport.Server{Logger: Logger(t), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for r.Context().Err() == nil {
			fmt.Fprintf(w, "tick\n")
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Millisecond):
			}
		}
	})}
	go srv.Serve(l)
	client, _ := s.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+svc+"/ticks", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	srv.Close() // the listener goes, with the request in flight
	_, err = io.Copy(io.Discard, br)
	if err == nil {
		t.Fatal("body read to a clean end after the server went away mid-stream; want an error")
	}
	t.Logf("caller's Body.Read: %v", err)
}

// tap wraps one end's Streamer for the tests that play a faulty or an
// older peer. out sees each message the end sends and returns how many
// times it goes out (0 loses it, 2 duplicates it); in sees each message
// the end receives. Either may change the message; nil means unchanged,
// once.
type tap struct {
	st  transport.Streamer
	out func(*transport.Message) int
	in  func(*transport.Message)
}

func (p *tap) Inbox(ctx context.Context) (string, error) { return p.st.Inbox(ctx) }

func (p *tap) ReceiveInbox(ctx context.Context) (*transport.Message, error) {
	m, err := p.st.ReceiveInbox(ctx)
	p.received(m)
	return m, err
}

func (p *tap) Send(ctx context.Context, addr string, m *transport.Message) error {
	for range p.sending(m) {
		if err := p.st.Send(ctx, addr, m); err != nil {
			return err
		}
	}
	return nil
}

func (p *tap) sending(m *transport.Message) int {
	if p.out == nil || m == nil {
		return 1
	}
	return p.out(m)
}

func (p *tap) received(m *transport.Message) {
	if p.in != nil && m != nil {
		p.in(m)
	}
}

// tapListener is a server's Listener whose stream side goes through a
// tap; so does each response it Replies (a "continue", a response part
// 0), which goes out once whatever out returns.
type tapListener struct {
	transport.Listener
	*tap
}

func (l *tapListener) Reply(ctx context.Context, d *transport.Delivery, m *transport.Message, disp transport.Disposition) error {
	l.sending(m)
	return l.Listener.Reply(ctx, d, m, disp)
}

// tapConn is a caller's Conn whose stream side goes through a tap; so
// does the reply to each Call.
type tapConn struct {
	transport.Conn
	*tap
}

func (c *tapConn) Call(ctx context.Context, service string, m *transport.Message) (*transport.Message, error) {
	r, err := c.Conn.Call(ctx, service, m)
	c.received(r)
	return r, err
}

func (s *suite) streamFault(t *testing.T, dup bool) {
	svc := unique("fault")
	l := s.h.Listen(t, transport.ListenConfig{Service: svc})
	st, ok := l.(transport.Streamer)
	if !ok {
		l.Close()
		t.Skip("the backend carries HTTP natively (no parts to lose)")
	}
	// Response part 3, sent with Streamer.Send, is lost or goes twice.
	var fired atomic.Bool
	fl := &tapListener{Listener: l, tap: &tap{st: st, out: func(m *transport.Message) int {
		if m.Header.Get(transport.HeaderSeq) != "3" || fired.Swap(true) {
			return 1
		}
		if dup {
			return 2
		}
		return 0
	}}}
	srv := &transport.Server{Logger: Logger(t), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, pattern(4, 4<<20))
	})}
	go srv.Serve(fl)
	t.Cleanup(func() { srv.Close() })
	client, _ := s.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+svc+"/", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil {
		t.Fatalf("body read to a clean end (%d of %d bytes) with part 3 lost or duplicated; want an error", n, 4<<20)
	}
	if !errors.Is(err, transport.ErrStreamBroken) {
		t.Errorf("Body.Read: %v, want ErrStreamBroken", err)
	}
	t.Logf("after %d bytes: %v", n, err)
}

func (s *suite) streamLostPart(t *testing.T)       { s.streamFault(t, false) }
func (s *suite) streamDuplicatedPart(t *testing.T) { s.streamFault(t, true) }

// switchingProtocols: a handler's 101 (a WebSocket upgrade) cannot cross a
// broker; the caller gets a clear error, not an empty 200.
func (s *suite) switchingProtocols(t *testing.T) {
	svc := unique("upgrade")
	if l := s.h.Listen(t, transport.ListenConfig{Service: unique("probe")}); true {
		_, ok := l.(transport.Streamer)
		l.Close()
		if !ok {
			t.Skip("the backend carries HTTP natively: Hijack and upgrades work as in net/http")
		}
	}
	s.serve(t, &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, err := http.NewResponseController(w).Hijack(); err == nil {
			t.Error("Hijack succeeded")
		}
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Connection", "Upgrade")
		w.WriteHeader(http.StatusSwitchingProtocols)
	})}, transport.ListenConfig{Service: svc})
	client, _ := s.client(t)
	req, _ := http.NewRequestWithContext(s.ctx(t), "GET", "http://"+svc+"/ws", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Logf("Do: %v", err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode == 200 || resp.StatusCode == 101 && resp.Header.Get(transport.HeaderError) == "" {
		t.Errorf("101 from the handler arrived as %d with no %s", resp.StatusCode, transport.HeaderError)
	}
}

// announcedConn closes announced when a Call returns: for a handler that
// writes nothing, that is the server's "continue" (WIRE.md §7).
type announcedConn struct {
	transport.Conn
	transport.Streamer
	announced chan struct{}
	once      sync.Once
}

func (c *announcedConn) Call(ctx context.Context, service string, m *transport.Message) (*transport.Message, error) {
	r, err := c.Conn.Call(ctx, service, m)
	c.once.Do(func() { close(c.announced) })
	return r, err
}

func (c *announcedConn) Close() error { return c.Conn.Close() }

// partSizes records the part bodies a tap's end receives: how many, and
// the largest, in bytes.
type partSizes struct{ n, max atomic.Int64 }

func (p *partSizes) record(m *transport.Message) {
	if m.Header.Get(transport.HeaderSeq) == "" {
		return
	}
	p.n.Add(1)
	for n := int64(len(m.Body)); ; {
		cur := p.max.Load()
		if n <= cur || p.max.CompareAndSwap(cur, n) {
			return
		}
	}
}

// creditTap returns the tap hooks of an end that, when old, plays a peer
// from before credit in bytes (WIRE.md §7, flow control): as the receiver
// it leaves HeaderCreditBytes out of what it sends; as the sender it never
// hears it. As the receiver it records its parts in sizes.
func creditTap(st transport.Streamer, old, receiver bool, sizes *partSizes) *tap {
	drop := func(m *transport.Message) { delete(m.Header, transport.HeaderCreditBytes) }
	t := &tap{st: st}
	if receiver {
		t.in = sizes.record
		if old {
			t.out = func(m *transport.Message) int { drop(m); return 1 }
		}
	} else if old {
		t.in = drop
	}
	return t
}

// streamCreditBytes: a receiver grants credit in bytes, and a sender that
// has it cuts parts of up to transport.LargePartBytes; with a peer that
// counts parts only, either way, the parts stay at most
// transport.DefaultPartBytes and the body still arrives whole, up and down.
func (s *suite) streamCreditBytes(t *testing.T) {
	probe := s.h.Listen(t, transport.ListenConfig{Service: unique("probe")})
	_, ok := probe.(transport.Streamer)
	probe.Close()
	if !ok {
		t.Skip("the backend carries HTTP natively (no parts)")
	}
	// 1 to 2 MiB goes in small parts before the first credit in bytes
	// (sent after 1 MiB taken; 16 small parts fill the window), so at
	// least one full large part follows.
	const n = 3 << 20
	for _, tc := range []struct {
		name           string
		up             bool // the caller sends (an upload), else the server (a download)
		oldCaller      bool
		oldServer      bool
		wantLargeParts bool
	}{
		{"down/both count bytes", false, false, false, true},
		{"down/caller counts parts", false, true, false, false},
		{"down/server counts parts", false, false, true, false},
		{"up/both count bytes", true, false, false, true},
		{"up/caller counts parts", true, true, false, false},
		{"up/server counts parts", true, false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := unique("credit")
			l := s.h.Listen(t, transport.ListenConfig{Service: svc})
			var sizes partSizes // at the receiver: the server up, the caller down
			sp := creditTap(l.(transport.Streamer), tc.oldServer, tc.up, &sizes)
			srv := &transport.Server{Logger: Logger(t), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.up {
					uploadHandler(w, r)
					return
				}
				io.Copy(w, pattern(3, n))
			})}
			go srv.Serve(&tapListener{Listener: l, tap: sp})
			t.Cleanup(func() { srv.Close() })
			c := s.h.Dial(t)
			t.Cleanup(func() { c.Close() })
			cp := creditTap(c.(transport.Streamer), tc.oldCaller, !tc.up, &sizes)
			client := &http.Client{Transport: transport.NewRoundTripper(&tapConn{Conn: c, tap: cp})}
			if tc.up {
				s.upload(t, client, svc, n, true)
			} else {
				req, _ := http.NewRequestWithContext(s.ctx(t), "GET", "http://"+svc+"/", nil)
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				got, size, err := digest(resp.Body)
				resp.Body.Close()
				if want, _, _ := digest(pattern(3, n)); err != nil || got != want {
					t.Fatalf("download: %d of %d bytes, err %v, same bytes %v", size, n, err, got == want)
				}
			}
			maxPart := sizes.max.Load()
			t.Logf("%d parts at the receiver, the largest %d bytes", sizes.n.Load(), maxPart)
			if maxPart > transport.LargePartBytes {
				t.Errorf("a part of %d bytes, over LargePartBytes (%d)", maxPart, transport.LargePartBytes)
			}
			if tc.wantLargeParts && maxPart <= transport.DefaultPartBytes {
				t.Errorf("the largest part has %d bytes: the sender never used the credit in bytes (parts up to %d)", maxPart, transport.LargePartBytes)
			}
			if !tc.wantLargeParts && maxPart > transport.DefaultPartBytes {
				t.Errorf("a part of %d bytes to or from a peer that counts parts only, want at most DefaultPartBytes (%d)", maxPart, transport.DefaultPartBytes)
			}
		})
	}
}
