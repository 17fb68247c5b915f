package mqtt

import (
	"bufio"
	"context"
	"net"
	"net/url"
	"syscall"

	"github.com/eclipse/paho.golang/autopaho"
)

// quickAckConn acknowledges received TCP data at once (Linux
// TCP_QUICKACK, set again before each read from the socket, as the kernel
// clears it). Mosquitto leaves Nagle's algorithm on unless
// set_tcp_nodelay is true: its small packets (a PUBACK, then a reply)
// otherwise wait for this side's delayed ACK, up to 40 ms per exchange.
// Reads are buffered: paho reads each packet's header a few bytes at a
// time, one system call each (profiled: a third of the CPU time).
type quickAckConn struct {
	*net.TCPConn
	br *bufio.Reader
}

func (c *quickAckConn) Read(b []byte) (int, error) { return c.br.Read(b) }

// socketReader reads from the socket itself, with TCP_QUICKACK.
type socketReader struct {
	c   *net.TCPConn
	raw syscall.RawConn
}

func (r socketReader) Read(b []byte) (int, error) {
	r.raw.Control(func(fd uintptr) { quickAck(fd) })
	return r.c.Read(b)
}

// DialQuickAck dials u.Host over plain TCP with TCP_QUICKACK on every read
// (Linux) and reads buffered, in the shape of
// autopaho.ClientConfig.AttemptConnection. Listen and Dial use it for
// mqtt:// unless Config.NoQuickAck; it is exported for paho clients that
// talk to the same broker (httpbus bench's raw twin).
func DialQuickAck(ctx context.Context, _ autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	raw, err := tc.SyscallConn()
	if err != nil {
		tc.Close()
		return nil, err
	}
	return &quickAckConn{TCPConn: tc, br: bufio.NewReaderSize(socketReader{tc, raw}, 64<<10)}, nil
}
