package amqp_test

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/httpbus/httpbus/amqp"
	"github.com/httpbus/httpbus/internal/brokertest"
	"github.com/httpbus/httpbus/transport"
)

// TestBadInputCatalogue publishes bad messages by hand, as a broken or
// hostile client would, and checks each answer; after each the server still
// answers a good request.
func TestBadInputCatalogue(t *testing.T) {
	url := brokertest.AMQP(t)
	svc := unique("bad")
	var ran atomic.Int64
	noReply := make(chan struct{}, 1)
	serve(t, url, transport.ListenConfig{Service: svc}, amqp.Config{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ran.Add(1)
		if r.URL.Path == "/noreply" {
			noReply <- struct{}{}
		}
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Seen", r.Method+" "+r.URL.Path)
		w.Write(b)
	}))
	_, ch := rawChannel(t, url)
	replies, err := ch.Consume(amqp.DirectReplyTo, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	call := func(contentType string, body []byte, replyTo string) *http.Response {
		t.Helper()
		n++
		id := "c" + strings.Repeat("x", n)
		if err := ch.Publish("", svc, true, false, amqp091.Publishing{ContentType: contentType, CorrelationId: id, ReplyTo: replyTo, Body: body}); err != nil {
			t.Fatal(err)
		}
		if replyTo == "" {
			return nil
		}
		for {
			select {
			case d := <-replies:
				if d.CorrelationId != id {
					continue
				}
				resp, err := transport.DecodeResponse(d.Body, nil, transport.Limits{})
				if err != nil {
					t.Fatalf("reply does not decode: %v", err)
				}
				return resp
			case <-time.After(10 * time.Second):
				t.Fatalf("no reply to %q", body)
			}
		}
	}
	good := func() {
		t.Helper()
		resp := call(transport.MediaType, []byte("GET /good HTTP/1.1\r\nHost: "+svc+"\r\n\r\n"), amqp.DirectReplyTo)
		if resp.StatusCode != 200 {
			t.Fatalf("good request after bad input answered %d", resp.StatusCode)
		}
	}
	host := "Host: " + svc + "\r\n"
	for _, c := range []struct {
		name, frame string
		status      int
	}{
		{"garbage bytes", "\x00\x01\x02\xff\xfe garbage", 400},
		{"truncated request line", "GET /x HT", 400},
		{"truncated headers", "GET /x HTTP/1.1\r\n" + host + "X-A: b", 400},
		{"content-length longer than body", "POST /x HTTP/1.1\r\n" + host + "Content-Length: 100\r\n\r\nshort", 400},
		{"content-length shorter than body", "POST /x HTTP/1.1\r\n" + host + "Content-Length: 2\r\n\r\nlonger body", 400},
		{"header block over 1 MiB", "GET /x HTTP/1.1\r\n" + host + "X-Big: " + strings.Repeat("a", 1<<20+10) + "\r\n\r\n", 431},
		// No "body over 10 MiB": there is no default body cap (as with
		// net/http); a server's own MaxBodyBytes is the BodyTooLarge
		// conformance case.
		{"smuggled second request", "POST /x HTTP/1.1\r\n" + host + "Content-Length: 0\r\n\r\nGET /y HTTP/1.1\r\n" + host + "\r\n", 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := ran.Load()
			resp := call(transport.MediaType, []byte(c.frame), amqp.DirectReplyTo)
			if resp.StatusCode != c.status {
				t.Errorf("answered %d, want %d", resp.StatusCode, c.status)
			}
			if resp.Header.Get(transport.HeaderError) == "" {
				t.Errorf("no %s header", transport.HeaderError)
			}
			if ran.Load() != before {
				t.Errorf("handler ran for a bad frame")
			}
			good()
		})
	}
	t.Run("invalid UTF-8 in a header", func(t *testing.T) {
		resp := call(transport.MediaType, []byte("GET /utf HTTP/1.1\r\n"+host+"X-Name: \xff\xfe\r\n\r\n"), amqp.DirectReplyTo)
		if resp.StatusCode != 200 && resp.StatusCode != 400 {
			t.Errorf("answered %d, want 200 (bytes passed through) or 400", resp.StatusCode)
		}
		good()
	})
	t.Run("no reply address", func(t *testing.T) {
		call(transport.MediaType, []byte("GET /noreply HTTP/1.1\r\n"+host+"\r\n"), "")
		select {
		case <-noReply:
		case <-time.After(10 * time.Second):
			t.Fatal("request without reply_to not served")
		}
		good()
	})
	t.Run("foreign message", func(t *testing.T) {
		resp := call("text/plain", []byte("plain"), amqp.DirectReplyTo)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "plain" || resp.Header.Get("X-Seen") != "POST /" {
			t.Errorf("foreign message: %d %q %q", resp.StatusCode, b, resp.Header.Get("X-Seen"))
		}
		good()
	})
}
