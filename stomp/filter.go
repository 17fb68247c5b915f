package stomp

import (
	"io"
	"log/slog"
	"net"
	"strings"

	"github.com/go-stomp/stomp/v3/frame"
)

// filterConn sits between a socket this package dialled and go-stomp. It
// passes every frame through except one: ActiveMQ's ERROR for a SEND to a
// temporary queue that no longer exists (a reply to a caller that went
// away). ActiveMQ keeps the connection open after it, but go-stomp closes
// its connection on any ERROR frame, which would make a server reconnect
// and have the broker redeliver every request it holds because one caller
// left. Writes go straight to the socket.
type filterConn struct {
	net.Conn
	pr *io.PipeReader
}

func newFilterConn(nc net.Conn, log *slog.Logger) *filterConn {
	pr, pw := io.Pipe()
	go func() {
		r := frame.NewReader(nc)
		w := frame.NewWriter(pw)
		for {
			f, err := r.Read()
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			if f != nil && isVanishedReplyError(f) {
				log.Info("transport/stomp: response dropped: the caller's temporary queue no longer exists", "destination", f.Header.Get(frame.Message))
				continue
			}
			if err := w.Write(f); err != nil { // f == nil is a heart-beat
				nc.Close()
				return
			}
		}
	}()
	return &filterConn{Conn: nc, pr: pr}
}

func (c *filterConn) Read(p []byte) (int, error) { return c.pr.Read(p) }

// Close closes the socket and the pipe, which also ends the filtering
// goroutine if it is blocked handing a frame to a go-stomp that stopped
// reading.
func (c *filterConn) Close() error {
	c.pr.Close()
	return c.Conn.Close()
}

// isVanishedReplyError recognises ActiveMQ's ERROR frame for a send to a
// deleted temporary destination (DestinationDoesNotExistException; the
// message header is the destination, e.g. temp-queue://ID:host-1-2:3:1).
// An ERROR answering a receipt is never dropped: its sender waits for it.
func isVanishedReplyError(f *frame.Frame) bool {
	if f.Command != frame.ERROR {
		return false
	}
	if _, ok := f.Header.Contains(frame.ReceiptId); ok {
		return false
	}
	m := f.Header.Get(frame.Message)
	return strings.HasPrefix(m, "temp-queue://") || strings.HasPrefix(m, "temp-topic://")
}
