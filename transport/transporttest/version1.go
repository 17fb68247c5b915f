package transporttest

import "github.com/httpbus/httpbus/transport"

// Version1 returns c as a caller of binding version 1 sees it: no
// transport.Streamer, so a RoundTripper over it sends each request in one
// message and accepts only one-message answers (a body over the broker's
// limit gets 413, as before streams). SizeLimiter and StateReporter pass
// through. Tests use it to check what version-1 peers get.
func Version1(c transport.Conn) transport.Conn { return version1{c} }

type version1 struct{ transport.Conn }

func (c version1) MaxMessageBytes() int64 {
	if sl, ok := c.Conn.(transport.SizeLimiter); ok {
		return sl.MaxMessageBytes()
	}
	return 0
}

func (c version1) State() transport.State {
	if sr, ok := c.Conn.(transport.StateReporter); ok {
		return sr.State()
	}
	return transport.StateConnected
}
