package mqtt

import (
	"context"
	"net"
	"net/url"
	"syscall"

	"github.com/eclipse/paho.golang/autopaho"
)

// quickAckConn acknowledges received TCP data at once (Linux
// TCP_QUICKACK, set again before each read, as the kernel clears it).
// Mosquitto leaves Nagle's algorithm on unless set_tcp_nodelay is true:
// its small packets (a PUBACK, then a reply) otherwise wait for this
// side's delayed ACK, up to 40 ms per exchange.
type quickAckConn struct {
	*net.TCPConn
	raw syscall.RawConn
}

func (c *quickAckConn) Read(b []byte) (int, error) {
	c.raw.Control(func(fd uintptr) { quickAck(fd) })
	return c.TCPConn.Read(b)
}

// dialQuickAck dials one plain TCP server for autopaho (not used with
// TLS, nor with Config.NoQuickAck).
func dialQuickAck(ctx context.Context, _ autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
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
	return &quickAckConn{TCPConn: tc, raw: raw}, nil
}
