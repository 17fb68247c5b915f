package transport

import "net/http"

// EachHeader calls f with each header a backend puts on the wire for an
// outgoing message m, as name/value pairs (broker headers, user
// properties, application properties): every value of every m.Header
// entry except Content-Type (a backend carries m.ContentType in its
// broker's own field), then HeaderVersion (Version) unless m.Header has
// it, then HeaderDeadline (FormatDeadline, Unix ms) when m.Deadline is
// set. Names are as m.Header spells them (canonical for headers set
// through http.Header). Map order: the entries of m.Header come in no
// particular order.
func EachHeader(m *Message, f func(name, value string)) {
	for k, vs := range m.Header {
		if k == "Content-Type" {
			continue
		}
		for _, v := range vs {
			f(k, v)
		}
	}
	if _, ok := m.Header[HeaderVersion]; !ok {
		f(HeaderVersion, Version)
	}
	if !m.Deadline.IsZero() {
		f(HeaderDeadline, FormatDeadline(m.Deadline))
	}
}

// HeaderValue returns the first value of h[k], or "" when there is none:
// http.Header.Get without canonicalising k, which Get does again on every
// call (2% of the CPU of an inmem call, for the stream fields). k must be
// in canonical form (textproto.CanonicalMIMEHeaderKey), as the Header*
// constants are, and h's keys too, as a received Message's Header is (see
// Message.Header) and a decoded frame's is; on any other header use Get.
func HeaderValue(h http.Header, k string) string {
	if vs := h[k]; len(vs) > 0 {
		return vs[0]
	}
	return ""
}
