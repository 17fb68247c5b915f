package stomp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"

	"github.com/go-stomp/stomp/v3/frame"
)

// filterConn sits between a socket this package dialled and go-stomp. It
// passes the byte stream through unchanged except for one frame: ActiveMQ's
// ERROR for a SEND to a temporary queue that no longer exists (a reply to a
// caller that went away). ActiveMQ keeps the connection open after it, but
// go-stomp closes its connection on any ERROR frame, which would make a
// server reconnect and have the broker redeliver every request it holds
// because one caller left (if that SEND asked for a receipt, the ERROR is
// replaced by the RECEIPT its sender waits for). With any broker but ActiveMQ (told by the
// CONNECTED frame's server header) it copies bytes without looking at them.
// Writes go straight to the socket.
type filterConn struct {
	net.Conn
	pr *io.PipeReader
}

const filterBuffer = 64 << 10

func newFilterConn(nc net.Conn, log *slog.Logger) *filterConn {
	pr, pw := io.Pipe()
	go func() {
		f := &streamFilter{br: bufio.NewReaderSize(nc, filterBuffer), pw: pw, log: log}
		f.bw = bufio.NewWriterSize(pw, filterBuffer)
		pw.CloseWithError(f.run())
	}()
	return &filterConn{Conn: nc, pr: pr}
}

func (c *filterConn) Read(p []byte) (int, error) { return c.pr.Read(p) }

// Close closes the socket and the pipe, which also ends the filtering
// goroutine if it is blocked handing bytes to a go-stomp that stopped
// reading.
func (c *filterConn) Close() error {
	c.pr.Close()
	return c.Conn.Close()
}

type streamFilter struct {
	br  *bufio.Reader
	bw  *bufio.Writer
	pw  *io.PipeWriter
	log *slog.Logger
	err bytes.Buffer // an ERROR frame being inspected
}

func (f *streamFilter) run() error {
	first := true
	for {
		if f.br.Buffered() == 0 {
			if err := f.bw.Flush(); err != nil {
				return err
			}
		}
		raw, err := f.br.ReadSlice('\n')
		if err != nil {
			return err // a command line over 64 KiB is not STOMP
		}
		cmd := strings.TrimRight(string(raw), "\r\n")
		out := io.Writer(f.bw)
		if cmd == frame.ERROR {
			f.err.Reset()
			out = &f.err
		}
		if _, err := out.Write(raw); err != nil {
			return err
		}
		if cmd == "" { // a heart-beat
			continue
		}
		length, server := int64(-1), ""
		for {
			h, err := f.line(out)
			if err != nil {
				return err
			}
			if h == "" {
				break
			}
			if v, ok := strings.CutPrefix(h, frame.ContentLength+":"); ok && length < 0 {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
					length = n
				}
			}
			if v, ok := strings.CutPrefix(h, frame.Server+":"); ok && server == "" {
				server = v
			}
		}
		if err := f.body(out, length); err != nil {
			return err
		}
		if cmd == frame.ERROR {
			fr, _ := frame.NewReader(bytes.NewReader(f.err.Bytes())).Read()
			if fr != nil && isVanishedReplyError(fr) {
				f.log.Info("transport/stomp: response dropped: the caller's temporary queue no longer exists", "destination", fr.Header.Get(frame.Message))
				if id, ok := fr.Header.Contains(frame.ReceiptId); ok {
					// The sender waits for a receipt: the broker is done
					// with the frame, so give it one.
					if err := frame.NewWriter(f.bw).Write(frame.New(frame.RECEIPT, frame.ReceiptId, id)); err != nil {
						return err
					}
				}
				continue
			}
			if _, err := f.bw.Write(f.err.Bytes()); err != nil {
				return err
			}
		}
		if first {
			first = false
			if cmd == frame.CONNECTED && !strings.HasPrefix(server, "ActiveMQ") {
				if err := f.bw.Flush(); err != nil {
					return err
				}
				_, err := io.Copy(f.pw, f.br)
				return err
			}
		}
	}
}

// line copies one line (through its LF) to out and returns it without
// its line end, or only its first 256 bytes for a longer line.
func (f *streamFilter) line(out io.Writer) (string, error) {
	var head []byte
	for {
		chunk, err := f.br.ReadSlice('\n')
		if len(head) < 256 {
			head = append(head, chunk[:min(len(chunk), 256-len(head))]...)
		}
		if _, werr := out.Write(chunk); werr != nil {
			return "", werr
		}
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return "", err
		}
	}
	return strings.TrimRight(string(head), "\r\n"), nil
}

// body copies a frame body and its NUL terminator.
func (f *streamFilter) body(out io.Writer, length int64) error {
	if length >= 0 {
		_, err := io.CopyN(out, f.br, length+1)
		return err
	}
	for {
		chunk, err := f.br.ReadSlice(0)
		if _, werr := out.Write(chunk); werr != nil {
			return werr
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
	}
}

// isVanishedReplyError recognises ActiveMQ's ERROR frame for a send to a
// deleted temporary destination (DestinationDoesNotExistException; the
// message header is the destination, e.g. temp-queue://ID:host-1-2:3:1).
// One answering a SEND with a receipt (a reply sent while draining) is
// replaced by a RECEIPT.
func isVanishedReplyError(f *frame.Frame) bool {
	if f.Command != frame.ERROR {
		return false
	}
	m := f.Header.Get(frame.Message)
	return strings.HasPrefix(m, "temp-queue://") || strings.HasPrefix(m, "temp-topic://")
}
