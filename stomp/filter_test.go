package stomp

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
)

// filtered returns what go-stomp would read through a filterConn when the
// broker sends in.
func filtered(t testing.TB, in string) string {
	t.Helper()
	return filteredBy(t, in, false)
}

// filteredBy is filtered with the fast path (scanHead) or, lineWise, with
// every frame's headers read line by line.
func filteredBy(t testing.TB, in string, lineWise bool) string {
	t.Helper()
	a, b := net.Pipe()
	fc := newFilterConn(a, slog.New(slog.NewTextHandler(io.Discard, nil)))
	fc.lineWise = lineWise
	go func() {
		io.WriteString(b, in)
		b.Close()
	}()
	out, _ := io.ReadAll(fc)
	fc.Close()
	return string(out)
}

const amqConnected = "CONNECTED\nserver:ActiveMQ/5.17.2\nversion:1.2\n\n\x00\n"

func TestFilter(t *testing.T) {
	vanished := "ERROR\ncontent-type:text/plain\nmessage:temp-queue\\c//ID\\cvm-1-2\\c3\\c1\ncontent-length:5\n\nstack\x00\n"
	for _, c := range []struct{ name, in, want string }{
		{"message with content-length", amqConnected + "MESSAGE\ncontent-length:5\nx:a\\cb\n\nab\x00c\x00\n", ""},
		{"message without content-length", amqConnected + "MESSAGE\nx:1\n\nhello\x00", ""},
		{"heart-beats", amqConnected + "\n\r\n\nMESSAGE\n\n\x00\n\n", ""},
		{"vanished temp queue ERROR dropped", amqConnected + "MESSAGE\n\nbefore\x00" + vanished + "MESSAGE\n\nafter\x00",
			amqConnected + "MESSAGE\n\nbefore\x00" + "\n" + "MESSAGE\n\nafter\x00"}, // the EOL after the dropped frame stays (a heart-beat)
		{"vanished ERROR answering a receipt becomes a RECEIPT", amqConnected + "ERROR\nreceipt-id:7\nmessage:temp-queue://ID:x\n\n\x00",
			amqConnected + "RECEIPT\nreceipt-id:7\n\n\x00"},
		{"other ERROR kept", amqConnected + "ERROR\nmessage:User name [x] or password is invalid.\ncontent-length:3\n\nbad\x00", ""},
		{"long header line", amqConnected + "MESSAGE\nx:" + strings.Repeat("v", 200<<10) + "\n\n\x00", ""},
		{"large body", amqConnected + "MESSAGE\ncontent-length:300000\n\n" + strings.Repeat("b", 300000) + "\x00", ""},
		{"RabbitMQ: bytes copied untouched", "CONNECTED\nserver:RabbitMQ/3.10.8\n\n\x00" + vanished, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := c.want
			if want == "" {
				want = c.in
			}
			if got := filtered(t, c.in); got != want {
				t.Errorf("got %q\nwant %q", trunc(got), trunc(want))
			}
		})
	}
}

func trunc(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// FuzzFilter: whatever the broker sends, the filter does not panic or
// hang, a stream without an ERROR frame passes unchanged, and the fast
// path (scanHead) finds the same frames as reading every header line by
// line: the same output, ERROR frames dropped or kept alike.
func FuzzFilter(f *testing.F) {
	f.Add("MESSAGE\ncontent-length:2\n\nab\x00")
	f.Add("MESSAGE\n\nab\x00\n\n")
	f.Add("ERROR\nmessage:temp-queue://x\n\n\x00")
	f.Add("MESSAGE\ncontent-length:-1\n\n\x00")
	f.Add("\n\n\r\n")
	f.Add("MESSAGE\ncontent-length:x\ncontent-length:3\n\nERR\x00ERROR\nmessage:temp-queue://x\n\n\x00")
	f.Add("MESSAGE\r\r\ncontent-length:1\r\r\n\r\r\nE\x00\nERROR\r\nmessage:temp-queue://y\r\n\r\n\x00MESSAGE\n\nok\x00")
	f.Add("MESSAGE\nx:1\n\nERROR\nmessage:temp-queue://z\n\n\x00\x00MESSAGE\n\n\x00")
	f.Fuzz(func(t *testing.T, s string) {
		in := amqConnected + s
		got := filtered(t, in)
		if !strings.Contains(in, "ERROR") && !bytes.HasPrefix([]byte(in), []byte(got)) {
			t.Fatalf("output %q is not a prefix of input %q", got, in)
		}
		if slow := filteredBy(t, in, true); got != slow {
			t.Fatalf("fast path %q, line by line %q, input %q", got, slow, in)
		}
	})
}
