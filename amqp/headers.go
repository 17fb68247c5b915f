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

// headerString returns header k of the table, matched without regard to
// case, as a string.
func headerString(t amqp091.Table, k string) string {
	if v, ok := t[k]; ok {
		s, _ := tableValue(v)
		return s
	}
	for name, v := range t {
		if strings.EqualFold(name, k) {
			s, _ := tableValue(v)
			return s
		}
	}
	return ""
}

// versionOnly is the headers table of a reply, of a notification and of a
// request without a deadline. It is shared: amqp091 only reads it, and
// nothing may write it.
var versionOnly = amqp091.Table{transport.HeaderVersion: transport.Version}

// deadlineTables recycles the headers tables of requests with a deadline:
// amqp091 encodes a table before Publish returns and keeps no reference.
var deadlineTables = sync.Pool{New: func() any { return amqp091.Table{transport.HeaderVersion: transport.Version} }}

// requestHeaders are the routing headers of a request or notification. The
// caller hands the table back with releaseHeaders once it is published.
func requestHeaders(deadline time.Time) amqp091.Table {
	if deadline.IsZero() {
		return versionOnly
	}
	t := deadlineTables.Get().(amqp091.Table)
	t[transport.HeaderDeadline] = transport.FormatDeadline(deadline)
	return t
}

// releaseHeaders recycles a table from requestHeaders.
func releaseHeaders(t amqp091.Table) {
	if len(t) == 2 {
		deadlineTables.Put(t)
	}
}
