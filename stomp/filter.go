package stomp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
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
// replaced by the RECEIPT its sender waits for). With any broker but
// ActiveMQ (told by the CONNECTED frame's server header) it copies bytes
// without looking at them. Writes go straight to the socket.
//
// It filters in go-stomp's reading goroutine, inside Read: no goroutine or
// pipe of its own, so a frame reaches go-stomp without a handoff. It keeps
// a frame's command and headers until their end (an ERROR frame until the
// end of its body); bodies of other frames pass through as they arrive.
type filterConn struct {
	net.Conn
	br  *bufio.Reader
	log *slog.Logger

	out      []byte // read, filtered, not yet returned by Read
	hdr      []byte // the command and headers of the frame being read; an ERROR frame whole
	headLeft int64  // bytes of the current command and headers still to pass through (scanHead)
	bodyLeft int64  // bytes of the current body (and its NUL) still to pass through
	toNUL    bool   // the current body has no content-length: pass through its NUL
	first    bool   // the first frame (CONNECTED) was read
	through  bool   // not ActiveMQ: copy everything
	lineWise bool   // tests: read every frame's headers line by line (no scanHead)
}

const filterBuffer = 64 << 10

// maxKeptHeader bounds the header buffer kept between frames.
const maxKeptHeader = 64 << 10

func newFilterConn(nc net.Conn, log *slog.Logger) *filterConn {
	return &filterConn{Conn: nc, br: bufio.NewReaderSize(nc, filterBuffer), log: log}
}

// Read returns the filtered stream.
func (c *filterConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		switch {
		case len(c.out) > 0:
			n := copy(p, c.out)
			c.out = c.out[n:]
			return n, nil
		case c.through:
			return c.br.Read(p)
		case c.headLeft > 0:
			return c.pass(p, &c.headLeft)
		case c.bodyLeft > 0:
			return c.pass(p, &c.bodyLeft)
		case c.toNUL:
			return c.readToNUL(p)
		}
		if err := c.next(); err != nil {
			return 0, err
		}
	}
}

// pass reads into p at most *left bytes of the stream as they are, and
// counts them off *left.
func (c *filterConn) pass(p []byte, left *int64) (int, error) {
	n, err := c.br.Read(p[:min(int64(len(p)), *left)])
	*left -= int64(n)
	if n > 0 {
		return n, nil
	}
	return 0, err
}

// readToNUL passes through the body of a frame without content-length,
// up to and including its NUL.
func (c *filterConn) readToNUL(p []byte) (int, error) {
	if c.br.Buffered() == 0 {
		if _, err := c.br.Peek(1); err != nil {
			return 0, err
		}
	}
	b, _ := c.br.Peek(min(c.br.Buffered(), len(p)))
	n := len(b)
	if i := bytes.IndexByte(b, 0); i >= 0 {
		n = i + 1
		c.toNUL = false
	}
	copy(p, b[:n])
	c.br.Discard(n) //nolint:errcheck // n bytes are buffered
	return n, nil
}

// next reads the command and headers of the next frame (all of an ERROR
// frame) and sets out to what go-stomp is to read of them.
func (c *filterConn) next() error {
	if c.first && !c.lineWise {
		if head, length, ok := c.scanHead(); ok {
			if length >= 0 {
				c.bodyLeft = int64(head) + length + 1
			} else {
				c.headLeft, c.toNUL = int64(head), true
			}
			return nil
		}
	}
	if cap(c.hdr) > maxKeptHeader {
		c.hdr = nil
	}
	c.hdr = c.hdr[:0]
	cmd, err := c.line()
	if err != nil {
		return err
	}
	if len(cmd) == 0 { // a heart-beat
		c.out = c.hdr
		return nil
	}
	isError := string(cmd) == frame.ERROR
	isConnected := string(cmd) == frame.CONNECTED
	length, activeMQ, server := int64(-1), false, false
	for {
		h, err := c.line()
		if err != nil {
			return err
		}
		if len(h) == 0 {
			break
		}
		if v, ok := bytes.CutPrefix(h, contentLengthPrefix); ok && length < 0 {
			length = parseLength(v)
		}
		if v, ok := bytes.CutPrefix(h, serverPrefix); ok && isConnected && !server {
			server, activeMQ = true, bytes.HasPrefix(v, activeMQServer)
		}
	}
	if !c.first {
		c.first = true
		if isConnected && !activeMQ {
			c.through = true
		}
	}
	if !isError {
		c.out = c.hdr
		if length >= 0 {
			c.bodyLeft = length + 1
		} else {
			c.toNUL = true
		}
		return nil
	}
	if err := c.errorBody(length); err != nil {
		return err
	}
	c.out = c.hdr
	fr, _ := frame.NewReader(bytes.NewReader(c.hdr)).Read()
	if fr != nil && isVanishedReplyError(fr) {
		c.log.Info("transport/stomp: response dropped: the caller's temporary queue no longer exists", "destination", fr.Header.Get(frame.Message))
		c.out = nil
		if id, ok := fr.Header.Contains(frame.ReceiptId); ok {
			// The sender waits for a receipt: the broker is done with the
			// frame, so give it one.
			var b bytes.Buffer
			if err := frame.NewWriter(&b).Write(frame.New(frame.RECEIPT, frame.ReceiptId, id)); err != nil {
				return err
			}
			c.out = b.Bytes()
		}
	}
	return nil
}

// scanHead looks at the next frame where it lies in the read buffer,
// without copying it: ok if its command and whole header block are
// buffered and the command is one the filter passes through (not ERROR or
// CONNECTED, and not a heart-beat). It returns the header block's length
// (through its blank line) and the first content-length value (-1 if none
// or not a number), as next's line-by-line reading finds them; Read then
// passes the frame through from the buffer. Reading line by line, copying
// each line into hdr and out again, was ~7,000 of the ~265,000
// instructions of a serial call on ActiveMQ (callgrind, issue 13).
func (c *filterConn) scanHead() (head int, length int64, ok bool) {
	if c.br.Buffered() == 0 {
		if _, err := c.br.Peek(1); err != nil {
			return 0, 0, false // next's own read reports it
		}
	}
	b, _ := c.br.Peek(c.br.Buffered())
	eol := bytes.IndexByte(b, '\n')
	if eol < 1 {
		return 0, 0, false // a heart-beat, or a command line not all buffered
	}
	switch string(trimCR(b[:eol])) {
	case "", frame.ERROR, frame.CONNECTED:
		return 0, 0, false
	}
	// The blank line after the headers: as next reads lines, one with
	// nothing before its LF but CRs.
	head = -1
	for i := eol; i < len(b); {
		j := i + 1
		for j < len(b) && b[j] == '\r' {
			j++
		}
		if j < len(b) && b[j] == '\n' {
			head = j + 1
			break
		}
		k := bytes.IndexByte(b[j:], '\n')
		if k < 0 {
			break
		}
		i = j + k
	}
	if head < 0 {
		return 0, 0, false // the header block goes on past the buffer
	}
	// The first content-length line with a number, as next takes it.
	length = -1
	for block := b[eol:head]; length < 0; {
		i := bytes.Index(block, contentLengthLine)
		if i < 0 {
			break
		}
		v := block[i+len(contentLengthLine):]
		eol := bytes.IndexByte(v, '\n')
		length, block = parseLength(trimCR(v[:eol])), v[eol:]
	}
	return head, length, true
}

// trimCR returns b without its trailing CRs.
func trimCR(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == '\r' {
		b = b[:len(b)-1]
	}
	return b
}

// line appends one line (through its LF) to hdr and returns it without
// its line end, or only its first 256 bytes for a longer line. The result
// is valid until the next append to hdr.
func (c *filterConn) line() ([]byte, error) {
	start := len(c.hdr)
	for {
		chunk, err := c.br.ReadSlice('\n')
		c.hdr = append(c.hdr, chunk...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return nil, err
		}
	}
	l := c.hdr[start:]
	if len(l) > 256 {
		l = l[:256]
	}
	// bytes.TrimRight(l, "\r\n") without building its byte set on every
	// line (2,000 instructions per call on ActiveMQ, callgrind).
	for len(l) > 0 && (l[len(l)-1] == '\n' || l[len(l)-1] == '\r') {
		l = l[:len(l)-1]
	}
	return l, nil
}

var (
	contentLengthPrefix = []byte(frame.ContentLength + ":")
	contentLengthLine   = []byte("\n" + frame.ContentLength + ":")
	serverPrefix        = []byte(frame.Server + ":")
	activeMQServer      = []byte("ActiveMQ")
)

// parseLength reads a content-length value: a decimal number, or -1 if v
// is not one (or is too large).
func parseLength(v []byte) int64 {
	if len(v) == 0 || len(v) > 18 {
		return -1
	}
	var n int64
	for _, b := range v {
		if b < '0' || b > '9' {
			return -1
		}
		n = n*10 + int64(b-'0')
	}
	return n
}

// errorBody appends the body of an ERROR frame and its NUL to hdr.
func (c *filterConn) errorBody(length int64) error {
	if length >= 0 {
		_, err := io.CopyN((*appendWriter)(&c.hdr), c.br, length+1)
		return err
	}
	for {
		chunk, err := c.br.ReadSlice(0)
		c.hdr = append(c.hdr, chunk...)
		if err == nil {
			return nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
	}
}

type appendWriter []byte

func (w *appendWriter) Write(p []byte) (int, error) {
	*w = append(*w, p...)
	return len(p), nil
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
