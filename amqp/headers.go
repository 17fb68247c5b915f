package amqp

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/httpbus/httpbus/transport"
)

// Header names under which the AMQP properties of a message that is not a
// frame reach the handler (the content type becomes Content-Type and the
// content encoding Content-Encoding).
const (
	HeaderMessageID     = "Amqp-Message-Id"
	HeaderCorrelationID = "Amqp-Correlation-Id"
	HeaderReplyTo       = "Amqp-Reply-To"
	HeaderType          = "Amqp-Type"
	HeaderAppID         = "Amqp-App-Id"
	HeaderUserID        = "Amqp-User-Id"
	HeaderTimestamp     = "Amqp-Timestamp" // Unix seconds
	HeaderPriority      = "Amqp-Priority"
	HeaderDeliveryMode  = "Amqp-Delivery-Mode"
	HeaderExpiration    = "Amqp-Expiration"
	HeaderExchange      = "Amqp-Exchange"
	HeaderRoutingKey    = "Amqp-Routing-Key"
)

// expiration returns the per-message TTL for a deadline: whole
// milliseconds, rounded up, at least 1.
func expiration(deadline time.Time) string {
	ms := int64(math.Ceil(float64(time.Until(deadline)) / float64(time.Millisecond)))
	if ms < 1 {
		ms = 1
	}
	return strconv.FormatInt(ms, 10)
}

// tableValue renders an AMQP field value as a header value.
func tableValue(v any) (string, bool) {
	switch x := v.(type) {
	case nil:
		return "", false
	case string:
		return x, true
	case []byte:
		return string(x), true
	case bool:
		return strconv.FormatBool(x), true
	case time.Time:
		return x.UTC().Format(http.TimeFormat), true
	case amqp091.Decimal:
		return fmt.Sprintf("%de-%d", x.Value, x.Scale), true
	case int, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64:
		return fmt.Sprint(x), true
	default:
		return fmt.Sprint(x), true
	}
}

// foreignHeader maps the headers table and the properties of a message that
// is not a frame onto HTTP headers.
func foreignHeader(d *amqp091.Delivery) http.Header {
	h := http.Header{}
	for k, v := range d.Headers {
		if s, ok := tableValue(v); ok && k != "" {
			h.Add(k, s) // Add canonicalises the key
		}
	}
	set := func(k, v string) {
		if v != "" {
			h.Set(k, v)
		}
	}
	set("Content-Encoding", d.ContentEncoding)
	set(HeaderMessageID, d.MessageId)
	set(HeaderCorrelationID, d.CorrelationId)
	set(HeaderReplyTo, d.ReplyTo)
	set(HeaderType, d.Type)
	set(HeaderAppID, d.AppId)
	set(HeaderUserID, d.UserId)
	set(HeaderExpiration, d.Expiration)
	set(HeaderExchange, d.Exchange)
	set(HeaderRoutingKey, d.RoutingKey)
	if !d.Timestamp.IsZero() {
		h.Set(HeaderTimestamp, strconv.FormatInt(d.Timestamp.Unix(), 10))
	}
	if d.Priority != 0 {
		h.Set(HeaderPriority, strconv.Itoa(int(d.Priority)))
	}
	if d.DeliveryMode != 0 {
		h.Set(HeaderDeliveryMode, strconv.Itoa(int(d.DeliveryMode)))
	}
	return h
}

// tables recycles the headers tables built per message: amqp091 encodes a
// table before Publish returns and keeps no reference to it.
var tables = sync.Pool{New: func() any { return make(amqp091.Table, 4) }}

// messageHeaders returns the headers table of an outgoing message: each
// entry of h (a key with several values as one value, joined with ", " as
// RFC 9110 §5.3 allows), then Httpbus-Deadline from deadline unless h has
// one. Httpbus-Version 1 is left out (WIRE.md §2: a receiver takes a
// missing one as 1; each table entry costs amqp091 allocations on both
// ends); stream messages carry their 2 in h. With no entry and no deadline
// it is nil (pooled false): no table at all. The caller hands the table
// back with releaseHeaders once it is published.
func messageHeaders(h http.Header, deadline time.Time) (t amqp091.Table, pooled bool) {
	if len(h) == 0 && deadline.IsZero() {
		return nil, false
	}
	t = tables.Get().(amqp091.Table)
	for k, vs := range h {
		switch len(vs) {
		case 0:
		case 1:
			t[k] = vs[0]
		default:
			t[k] = strings.Join(vs, ", ")
		}
	}
	if !deadline.IsZero() {
		if _, ok := t[transport.HeaderDeadline]; !ok {
			t[transport.HeaderDeadline] = transport.FormatDeadline(deadline)
		}
	}
	return t, true
}

// releaseHeaders recycles a table from messageHeaders.
func releaseHeaders(t amqp091.Table, pooled bool) {
	if pooled {
		clear(t)
		tables.Put(t)
	}
}

// tableHeader maps the headers table of a frame onto a header: each entry
// whose value renders as text (tableValue), under its canonical key. buf is
// spare room for the values (it may be nil): a message with as many
// entries as buf has capacity costs one allocation, the map. It returns
// nil for an empty table.
func tableHeader(t amqp091.Table, buf []string) http.Header {
	if len(t) == 0 {
		return nil
	}
	h := make(http.Header, len(t))
	if cap(buf) < len(t) {
		buf = make([]string, 0, len(t))
	}
	buf = buf[:0]
	for k, v := range t {
		s, ok := tableValue(v)
		if !ok || k == "" {
			continue
		}
		k = http.CanonicalHeaderKey(k)
		if old, dup := h[k]; dup {
			h[k] = append(old, s) // old is capped: append copies
			continue
		}
		buf = append(buf, s)
		n := len(buf)
		h[k] = buf[n-1 : n : n]
	}
	return h
}

// headerDeadline returns the deadline in h's Httpbus-Deadline, zero when it
// has none; a bad value is logged and ignored.
func headerDeadline(h http.Header, cfg *Config, where string) time.Time {
	vs := h[transport.HeaderDeadline]
	if len(vs) == 0 || vs[0] == "" {
		return time.Time{}
	}
	dl, err := transport.ParseDeadline(vs[0])
	if err != nil {
		cfg.logger().Warn("transport/amqp: ignoring a bad deadline header", "where", where, "err", err)
		return time.Time{}
	}
	return dl
}
