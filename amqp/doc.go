// Package amqp is the AMQP 0-9-1 backend of httpbus, for RabbitMQ, over
// github.com/rabbitmq/amqp091-go. A Listener serves one service from its
// request queue; a Conn calls services and publishes notifications. Import
// it as amqptransport, or blank-import it for transport.Listen and
// transport.Dial:
//
//	import _ "github.com/httpbus/httpbus/amqp"
//
//	l, err := transport.Listen(ctx, "amqp://guest:guest@127.0.0.1:5672/?service=orders&topics=orders.created")
//	c, err := transport.Dial(ctx, "amqp://guest:guest@127.0.0.1:5672/")
//
// # URLs
//
// amqp://user:pass@host:port/vhost?options and amqps://… (TLS; port 5671 by
// default), user, password, host, port and vhost as amqp091.ParseURI reads
// them (a vhost such as "/" is percent-encoded: /%2F). transport.Listen reads
// service and topics (comma-separated) itself. Options of this package, each
// overriding the Config field named:
//
//	queue_prefix=         QueuePrefix: prefix of request queue names (default "": the queue is the service name)
//	durable=true          !Transient: durable queues, persistent notifications (default true)
//	prefetch=128          Prefetch: basic.qos per consumer, the in-flight limit (default: the Server's MaxInFlight, see SetPrefetch, else 128; 0 means no limit)
//	exchange=httpbus.notify   Exchange: topic exchange for notifications (default "httpbus.notify")
//	dead_letter_exchange= DeadLetterExchange: x-dead-letter-exchange of the declared queues (default none)
//	max_message_size=134217728  MaxMessageBytes: largest message body sent, bytes (default 128 MiB, RabbitMQ's max_message_size; 0 means no limit)
//	connection_name=      ConnectionName: the connection_name client property (default "httpbus listener <service>" or "httpbus client")
//	reconnect_min=100ms   ReconnectMin: first reconnection backoff (default 100ms)
//	reconnect_max=5s      ReconnectMax: backoff cap (default 5s)
//	setup_timeout=30s     SetupTimeout: bound on one connection attempt (default 30s)
//
// and amqp091's own, passed through: heartbeat (seconds, default 10),
// connection_timeout (ms), channel_max, auth_mechanism, and for amqps
// cacertfile, certfile, keyfile, server_name_indication. Any other option is
// an error. Errors and logs name the URL with its password redacted.
// Config.AMQP takes a *tls.Config (TLSClientConfig) and SASL mechanisms
// where a URL cannot.
//
// # Delivery
//
// Requests: a service's request queue (QueuePrefix + service, durable unless
// Transient, with x-dead-letter-exchange when configured) is declared by
// each Listener and consumed by all instances of the service, which compete
// for its messages (RabbitMQ round-robins among consumers with free
// prefetch). A Conn publishes each request to the default exchange with the
// queue as routing key, mandatory, content_type message/http, a fresh
// correlation_id, reply_to amq.rabbitmq.reply-to (RabbitMQ direct reply-to;
// one consumer on one channel per Conn, shared by all its callers), no
// Httpbus-Version for version 1 (WIRE.md §2: a missing one means 1) and,
// when the caller has a deadline, header Httpbus-Deadline (Unix ms) and
// expiration (the milliseconds left, rounded up), so the broker drops it
// once it expires. A call whose deadline has
// already passed is not sent (504 at once); a request whose deadline has
// passed when a server takes it is answered 504 without running the handler.
//
// A Listener consumes with manual acknowledgements and the prefetch as its
// in-flight limit. It publishes the response (a message/http frame with the
// request's correlation_id) to the request's reply_to through the default
// exchange and only then acknowledges the request: a request is never acked
// unanswered. Acknowledgements are coalesced: within a millisecond of the
// reply, one basic.ack with multiple set acknowledges every answered
// delivery of the channel up to the newest one with no older delivery
// still in flight (one still in flight leaves the newer ones to an ack of
// their own within two milliseconds); Close sends the pending ones first.
// This saves a frame, a write and the broker's work per request under
// load. The only delivery of the channel in flight has nothing to be
// coalesced with: it is acknowledged as soon as its reply is sent. A server
// that dies leaves at most those milliseconds of answered requests
// unacknowledged, and the broker redelivers them (see below). A frame that
// does not decode is answered 400 and nacked without requeue (to the
// dead-letter exchange, if any); a panicking handler is answered 500 and
// acked. When a server's connection dies before it acks, the broker
// redelivers the request to another instance (or to the same one once
// reconnected) with the redelivered flag, which the handler sees as
// Httpbus-Redelivered: true: delivery is at least once, so handlers of
// non-idempotent requests should use it. A duplicate reply reaching the
// caller is discarded (Conn.DiscardedReplies counts it).
//
// Notifications: published to the topic exchange (Config.Exchange) with the
// topic as routing key, persistent unless Transient, with publisher
// confirms: Publish returns once the broker has taken the message. Each
// service that subscribes declares its own queue, named after its request
// queue with NotifyQueueSuffix (":notify"), bound to each of its topics (a
// topic may use the topic exchange's wildcards * and #), so each service gets
// each notification once, shared among its instances. Bindings are never
// removed: a topic dropped from a service's configuration keeps arriving
// until the binding is deleted on the broker. Notifications carry no
// deadline: the publisher's deadline bounds only the publish.
//
// Messages that are not message/http, from producers that know nothing of
// httpbus, are served as POST / (NOTIFY for a notification) with the payload
// as body, content_type as Content-Type, content_encoding as
// Content-Encoding, each headers-table entry as a header (canonicalised key,
// value as text), and the other properties as Amqp-Message-Id,
// Amqp-Correlation-Id, Amqp-Reply-To, Amqp-Type, Amqp-App-Id, Amqp-User-Id,
// Amqp-Timestamp (Unix seconds), Amqp-Priority, Amqp-Delivery-Mode,
// Amqp-Expiration, Amqp-Exchange and Amqp-Routing-Key. If such a message has
// a reply_to, the response frame is sent there with its correlation_id.
//
// Shutdown (transport.Server.Shutdown, through Drain) cancels the consumers,
// serves and acknowledges what was already delivered, then closes; Close
// closes the channels, so the broker requeues every unacknowledged delivery
// for another instance.
//
// # Writes
//
// amqp091 writes each publish and each acknowledgement with a system call
// of its own, under the connection's send lock. A Listener or Conn made
// by Listen or Dial gives amqp091 a connection that queues those writes
// instead and writes everything queued meanwhile in one system call from
// one goroutine: concurrent publishers on a connection share writes, and
// the broker reads their messages together (fewer system calls on both
// sides under load; a lone publish costs a goroutine switch). A write of
// 32 KiB or more (a large body) goes out directly, after what was queued
// before it; at most 256 KiB wait in the queue, beyond which writers wait
// for the socket. A failed write closes the socket, which amqp091 reports
// as a lost connection. NewListener and NewConn use the caller's
// connection as it is.
//
// # Headers
//
// Message.Header travels in the AMQP headers table both ways: every entry
// of an outgoing request, response, notification or stream message is
// written as a long-string entry under its canonical name (a key with
// several values as one value joined by ", "), next to Httpbus-Deadline
// when there is a deadline. On a received frame (a request,
// a notification, a Call's reply) Header holds the headers table, keys
// canonicalised, values as text: at least every Httpbus- header the
// sender wrote. A message with no header to carry publishes no headers
// table at all: each entry costs amqp091 allocations on both ends
// (BenchmarkRequestReply256: 233 → 186 allocations per request when the
// version entry went, issue 13).
//
// # Streams
//
// Conn and Listener implement transport.Streamer, the primitives the core
// runs streams over (binding version 2). Inbox declares, on first use after
// each (re)connection, a server-named queue ("amq.gen-…", exclusive,
// auto-delete, non-durable) on the endpoint's channel and consumes it with
// automatic acknowledgement; its name is the inbox address, which any
// client of the broker reaches through the default exchange with the name
// as routing key, and which only this connection consumes. When the
// connection is lost the queue goes with it (and with it any message not yet
// taken by ReceiveInbox): ReceiveInbox returns once an error matching
// transport.ErrUnavailable, so that the streams bound to the old address
// can fail at once rather than at their deadline, and Inbox then returns a
// new name. ReceiveInbox
// returns the next message with Header mapped as for a foreign message
// (the headers table plus Amqp-* properties) and Deadline from
// Httpbus-Deadline. Send publishes to the default exchange with routing key
// = the address, transient, not mandatory, without publisher confirm (as a
// request or a reply is published), Message.Header in the headers table; a
// Send to an inbox that no longer exists is dropped by the broker, silently
// and without error: the stream's deadline, cancel or sequence check
// catches it. Sends from one endpoint to one inbox arrive in order; RabbitMQ
// keeps no order between different queues (an inbox and a reply_to).
//
// Why automatic acknowledgement: the inbox is exclusive to one connection
// and dies with it, so an acknowledgement buys no redelivery; the core's
// credit window bounds what each stream has in flight and the core takes
// inbox messages as they come; manual acks with a prefetch would cost ack
// frames and bound only a message count (not bytes: a message may be 128
// MiB), and would stall every stream of the endpoint behind one slow
// reader. The cost: a peer that ignores its credit makes amqp091 buffer its
// messages in this process; the core detects the violation by sequence and
// credit. Why not direct reply-to (amq.rabbitmq.reply-to, used by Call):
// its address is only learnt by the peer that receives a message published
// with it, so an endpoint cannot name its own inbox in Httpbus-Reply-To
// before sending, and a Listener, which publishes no request, could not get
// one at all.
//
// Listener.Reply with transport.Hold publishes the response (a stream's
// first message) to reply_to as any response and leaves the request
// unacknowledged: it stays in flight, counted against the prefetch, until a
// later Reply with a nil response settles it (Ack, Reject, Requeue; Hold
// again settles nothing). If the Listener closes or its channel is lost
// before that, the broker redelivers the request, as for a handler still
// running. Call returns at the first response, so a held request's caller
// gets its first message at once. Coalesced acks never cover a held
// delivery (a multiple ack stops below the oldest unsettled one); while one
// is held, newer deliveries of the channel are acked one by one, within two
// milliseconds.
//
// # Reconnection
//
// A Listener or Conn made by Listen or Dial owns its connection and its
// reconnection policy (amqp091's Config.Recovery, experimental in v1.16.0,
// retries at a fixed interval a few times and is not used): when the
// connection or one of its channels closes, callers with requests in flight
// get transport.ErrUnavailable (502) at once, the state becomes
// reconnecting, and it redials with capped exponential backoff (ReconnectMin
// doubling to ReconnectMax, ±50 % jitter) until it succeeds or is closed; it
// then declares its topology again and resumes consuming. New calls and
// publishes wait for the connection until their context ends (504). State
// reports connected, reconnecting or closed, for health checks. Every
// blocking step of a connection attempt (dial, TLS and AMQP handshakes,
// opening channels, which amqp091 can block on without a network) is bound
// by SetupTimeout and by Close. NewListener and NewConn use a connection the
// caller owns: they reopen their channels, but when that connection closes
// they stop (State closed; calls fail with ErrUnavailable). While RabbitMQ
// blocks publishers (connection.blocked: a memory or disk alarm), a Conn's
// calls and publishes wait for the unblock until their context ends, rather
// than in TCP pushback where no context reaches them.
//
// # Errors
//
// Call returns errors matching transport.ErrNoResponders (503) when the
// broker returns the mandatory request because no queue has the service's
// name; a queue that exists with no consumer holds the request until it
// expires, so the caller gets transport.ErrTimeout (504). Also ErrTimeout
// when the caller's deadline passes, ErrUnavailable (502) when the
// connection is lost with the request in flight or a publish fails,
// ErrTooLarge (413) for a message over MaxMessageBytes (checked before
// sending, on both the request and the response path), ErrClosed after
// Close. Declaring a queue that exists with other properties (durability,
// dead-letter exchange: every instance of a service must agree) fails with
// the broker's PRECONDITION_FAILED, named in the error; so does an exchange
// of the configured name that is not a durable topic exchange.
//
// Inbox and Send fail with ErrUnavailable when the connection is lost
// meanwhile, Send with a *transport.TooLargeError (matching ErrTooLarge,
// nothing sent) over MaxMessageBytes, and all three Streamer methods with
// ErrClosed after Close.
//
// # Conformance
//
// The transporttest suite runs against a real RabbitMQ with an empty
// Features: this backend declares no limitation.
package amqp
