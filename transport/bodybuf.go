package transport

import "net/http"

// respHeadRoom is the room, in bytes, that a response body buffer keeps in
// front of the body for the frame's status line and header block, so that
// a whole response's frame is built in place: no second buffer for the
// frame and no second copy of the body (issue 13). A head that does not fit
// goes through EncodeResponse as before.
const respHeadRoom = 256

// bodyBuf buffers a response body behind respHeadRoom bytes of room. Its
// methods are those of bytes.Buffer that responseWriter uses.
type bodyBuf struct {
	b []byte // b[:respHeadRoom] is the room, the body follows; nil before the first Write
}

func (f *bodyBuf) Len() int {
	if f.b == nil {
		return 0
	}
	return len(f.b) - respHeadRoom
}

// Bytes returns the body, valid until the next Write or Reset.
func (f *bodyBuf) Bytes() []byte {
	if f.b == nil {
		return nil
	}
	return f.b[respHeadRoom:]
}

func (f *bodyBuf) Write(p []byte) (int, error) {
	if f.b == nil {
		f.b = make([]byte, respHeadRoom, respHeadRoom+max(len(p), 64))
	}
	f.b = append(f.b, p...)
	return len(p), nil
}

func (f *bodyBuf) Reset() {
	if f.b != nil {
		f.b = f.b[:respHeadRoom]
	}
}

// frame returns the frame of a response with this body, built in place as
// the lean encoder writes it (leanResponseHead, byte for byte what
// EncodeResponse writes), and gives up the buffer: the frame is the
// caller's. ok is false, and the buffer kept, where the lean encoder
// declines or the head does not fit the room.
func (f *bodyBuf) frame(status int, header http.Header, method string) (_ []byte, ok bool) {
	if f.Len() == 0 {
		return nil, false
	}
	head, ok := leanResponseHead(f.b[:0:respHeadRoom], status, header, f.Len(), method)
	if !ok || len(head) > respHeadRoom {
		// Declined, or too long: append moved it to a new array once the
		// room was full. Only the room was written; the body is intact.
		return nil, false
	}
	start := respHeadRoom - len(head)
	copy(f.b[start:], head) // may overlap: copy moves
	out := f.b[start:]
	f.b = nil
	return out, true
}
