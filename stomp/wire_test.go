package stomp_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/httpbus/httpbus/stomp"
	"github.com/httpbus/httpbus/transport"
)

// TestRawWireExample sends the raw frames of docs/wire/stomp.md over a
// plain TCP socket, as a non-Go client would, and reads the answer.
func TestRawWireExample(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker, addr string) {
		j := newJanitor(t, b)
		svc := unique("orders")
		l := listen(t, j, brokerURL(addr), transport.ListenConfig{Service: svc})
		serve(t, l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintf(w, "item %s\n", strings.TrimPrefix(r.URL.Path, "/items/"))
		}))
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(nc)
		readFrame := func() string {
			t.Helper()
			for {
				f, err := br.ReadString(0)
				if err != nil {
					t.Fatalf("reading a frame: %v", err)
				}
				if f = strings.TrimLeft(f, "\r\n"); f != "" {
					return strings.TrimSuffix(f, "\x00")
				}
			}
		}
		write := func(s string) {
			t.Helper()
			if _, err := io.WriteString(nc, s); err != nil {
				t.Fatal(err)
			}
		}
		write("CONNECT\naccept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\nheart-beat:0,0\n\n\x00")
		if f := readFrame(); !strings.HasPrefix(f, "CONNECTED\n") {
			t.Fatalf("CONNECT answered %q", f)
		}
		replyTo := "/temp-queue/" + unique("me")
		if b.dialect == stomp.DialectActiveMQ {
			write("SUBSCRIBE\nid:replies\ndestination:" + replyTo + "\nack:auto\n\n\x00")
		}
		body := "GET /items/42 HTTP/1.1\r\nHost: " + svc + "\r\n\r\n"
		write(fmt.Sprintf("SEND\ndestination:/queue/%s\ncontent-type:message/http\ncontent-length:%d\ncorrelation-id:42\nreply-to:%s\nhttpbus-version:1\n\n%s\x00",
			svc, len(body), replyTo, body))
		f := readFrame()
		head, payload, _ := strings.Cut(f, "\n\n")
		if !strings.HasPrefix(head, "MESSAGE\n") || !strings.Contains(head, "\ncorrelation-id:42") || !strings.Contains(head, "\ncontent-type:message/http") {
			t.Fatalf("reply frame headers:\n%s", head)
		}
		if !strings.HasPrefix(payload, "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(payload, "\r\n\r\nitem 42\n") {
			t.Fatalf("reply body %q", payload)
		}
		t.Logf("reply frame:\n%s\n\n%s", head, payload)
		write("DISCONNECT\n\n\x00")
	})
}
