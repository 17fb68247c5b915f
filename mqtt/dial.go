package mqtt

import (
	"context"
	"crypto/tls"
	"net"
	"net/url"
	"strings"
	"syscall"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
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

// attempt dials one server for autopaho: TCP (quick ACKs unless
// Config.NoQuickAck), TLS on top for mqtts.
func (e *endpoint) attempt(ctx context.Context, ac autopaho.ClientConfig, u *url.URL) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	conn := c
	if tc, ok := c.(*net.TCPConn); ok && !e.cfg.NoQuickAck {
		raw, err := tc.SyscallConn()
		if err != nil {
			tc.Close()
			return nil, err
		}
		conn = &quickAckConn{TCPConn: tc, raw: raw}
	}
	if !strings.EqualFold(u.Scheme, "mqtts") {
		return conn, nil
	}
	cfg := ac.TlsCfg.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = u.Hostname()
	}
	t := tls.Client(conn, cfg)
	if err := t.HandshakeContext(ctx); err != nil {
		t.Close()
		return nil, err
	}
	return packets.NewThreadSafeConn(t), nil
}
