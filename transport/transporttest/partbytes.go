package transporttest

import (
	"bytes"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/httpbus/httpbus/transport"
)

// LargestPart records the size, in bytes, of the largest message an inbox
// returned, for tests of a backend's own part size (transport.PartSizer),
// which the conformance suite's wrappers hide. Embed it in a wrapper of the
// backend's Conn or Listener whose ReceiveInbox returns
// See(inner.ReceiveInbox(ctx)), so that every other method is the
// backend's own.
type LargestPart struct{ largest atomic.Int64 }

// See records m's size and returns m and err unchanged.
func (p *LargestPart) See(m *transport.Message, err error) (*transport.Message, error) {
	if m != nil && int64(len(m.Body)) > p.largest.Load() {
		p.largest.Store(int64(len(m.Body)))
	}
	return m, err
}

// Largest is the size of the largest message seen so far, in bytes.
func (p *LargestPart) Largest() int64 { return p.largest.Load() }

// PartBytesHandler is the handler of CheckPartBytes's service. GET answers
// size zero bytes (size at least 64 KiB) as a stream: 64 KiB, Flush, then
// the rest, so that the answer is a stream whatever the backend's message
// limit. POST reads the body and sends the number of bytes read on
// uploaded, before it answers 200 (give it a buffer of one); with uploaded
// nil, POST answers 405.
func PartBytesHandler(size int, uploaded chan<- int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			if uploaded == nil {
				http.Error(w, "no upload in this test", http.StatusMethodNotAllowed)
				return
			}
			n, _ := io.Copy(io.Discard, r.Body)
			uploaded <- n
			return
		}
		w.Write(make([]byte, 64<<10))
		w.(http.Flusher).Flush()
		w.Write(make([]byte, size-64<<10))
	})
}

// CheckPartBytes checks a backend's part size through a service served by
// PartBytesHandler(size, uploaded). It downloads size bytes (GET) through
// client, whose Conn records its inbox in caller, and checks that they
// arrive whole and that the largest part was want bytes. With server
// non-nil (the Listener's LargestPart) it then uploads size bytes of
// unknown length (POST) and checks that the handler read them all and that
// the largest part the server's inbox received was want bytes.
//
// The first parts go small (transport.DefaultPartBytes) until the receiver
// grants credit in bytes, at most a window of them (2 MiB); a size of 6 MiB
// leaves whole parts of want bytes, whatever the timing.
func CheckPartBytes(t *testing.T, client *http.Client, service string, size, want int, caller, server *LargestPart, uploaded <-chan int64) {
	t.Helper()
	resp, err := client.Get("http://" + service + "/")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || n != int64(size) {
		t.Fatalf("download: %d of %d bytes, err %v", n, size, err)
	}
	if got := caller.Largest(); got != int64(want) {
		t.Errorf("download: the largest part the caller's inbox received has %d bytes, want %d", got, want)
	}
	if server == nil {
		return
	}
	body := io.LimitReader(bytes.NewReader(make([]byte, size)), int64(size)) // length unknown to the client
	resp, err = client.Post("http://"+service+"/", "application/octet-stream", body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upload: status %d (%s), want 200", resp.StatusCode, resp.Header.Get(transport.HeaderError))
	}
	// The handler sent its count before it answered 200.
	select {
	case n := <-uploaded:
		if n != int64(size) {
			t.Fatalf("upload: the handler read %d of %d bytes", n, size)
		}
	default:
		t.Fatal("upload: 200 with no count from PartBytesHandler: is it the service's handler?")
	}
	if got := server.Largest(); got != int64(want) {
		t.Errorf("upload: the largest part the server's inbox received has %d bytes, want %d", got, want)
	}
}
