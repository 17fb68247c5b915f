// Package stomp is the STOMP backend of httpbus: an http.Handler served
// from a STOMP queue and an *http.Client calling it, on Apache ActiveMQ 5.x
// and on RabbitMQ's STOMP plugin, over github.com/go-stomp/stomp/v3
// (imported as stompgo; pinned at v3.1.5). Import it as stomptransport.
//
// Each message body is one whole HTTP/1.1 message (content-type
// message/http), or a part of one in a stream; STOMP headers carry routing
// and the stream headers of package transport only. docs/wire/stomp.md
// and WIRE.md §6.5 are the language-neutral description of the wire.
//
// # URLs
//
//	stomp://[login:passcode@]host[:port][?option=value&...]       port 61613
//	stomp+ssl://[login:passcode@]host[:port][?option=value&...]   TLS, port 61614
//
// transport.Listen reads service= and topics= (comma-separated). Options:
//
//	dialect=activemq|rabbitmq   broker rules; default: the CONNECTED frame's server header
//	prefetch=N                  unacked messages per subscription (default: the Server's MaxInFlight, see Listener.SetPrefetch, else 128)
//	heartbeat=10s               STOMP heart-beats both ways; 0 disables
//	queue_prefix=/queue/        request destinations are queue_prefix+service
//	topic_prefix=/topic/        notification destinations start with it
//	max_frame=BYTES             the broker's frame limit (default 10 MiB ActiveMQ, 64 MiB RabbitMQ)
//	reconnect_max=5s            longest wait between reconnection attempts
//	vhost=/                     the CONNECT host header (RabbitMQ: the virtual host)
//	ca_file=PATH                stomp+ssl: PEM CA bundle to verify the broker with
//
// transport.Listen and transport.Dial open these URLs once the package is
// imported; Listen and Dial of this package do the same and take a Config
// for what a URL cannot say (Logger). A connection from a URL is redialled
// after it is lost. NewConn and
// NewListener take a *stompgo.Conn the caller dialled (see ConnOptions) and
// owns; set Config.Redial to reconnect.
//
// # Delivery
//
// A request is a SEND to QueuePrefix+service (default /queue/<service>)
// with content-type message/http, content-length, correlation-id, reply-to
// a temporary queue of the caller's connection, httpbus-version, and, with
// a deadline, httpbus-deadline (Unix ms) plus expires (ActiveMQ: absolute
// Unix ms, the broker drops it when expired) or expiration (RabbitMQ:
// milliseconds to live), and the entries of its Message.Header (see
// Headers). The temporary queue differs per broker: on
// ActiveMQ the caller SUBSCRIBEs to /temp-queue/NAME and servers see
// reply-to /remote-temp-queue/ID:…; on RabbitMQ the caller must not
// SUBSCRIBE (an ERROR closes the connection): the broker subscribes the
// session itself on the first SEND naming it, and servers see
// /reply-queue/amq.gen-…. Servers reply to the reply-to they received.
//
// Instances of a service compete on its queue with ack: client-individual
// and prefetch (activemq.prefetchSize and prefetch-count both sent): the
// broker never has more than Prefetch unacknowledged requests out per
// instance. A request is acknowledged only after its response was sent. A
// request left unacknowledged by an instance that stops or loses its
// connection is redelivered by the broker to another instance, with the
// redelivered header that the handler sees as Httpbus-Redelivered: true
// (both brokers set it). Dispositions: Reject (an undecodable frame) is a
// NACK — RabbitMQ requeue:false dead-letters it (or drops it when the queue
// has no dead-letter exchange); ActiveMQ moves it to its dead-letter queue
// (ActiveMQ.DLQ) if it is persistent and drops it otherwise (requests are
// sent non-persistent). Requeue is a NACK requeue:true on RabbitMQ; on
// ActiveMQ, whose NACK dead-letters, the message stays unacknowledged and
// returns to the queue when the listener closes. Drain stops serving: the
// deliveries already received are served; later ones are returned at Close.
// While draining, responses are sent with a receipt.
//
// A response to a caller that has gone (its connection, and with it its
// temporary queue, closed) is lost: RabbitMQ drops it; ActiveMQ answers the
// SEND with an ERROR frame (message temp-queue://…) but keeps the
// connection. go-stomp closes its connection on any ERROR frame, which
// would make the server reconnect and the broker redeliver everything it
// holds, so connections this package dials filter that one ERROR out (and
// log it). A connection given to NewConn or NewListener is not filtered.
//
// Notifications go to one queue per subscribing service, shared by its
// instances: on ActiveMQ a virtual topic (publish to
// TopicPrefix+"VirtualTopic."+topic; each service consumes
// QueuePrefix+"Consumer."+service+".VirtualTopic."+topic, dots in the
// service name replaced by "_"); on RabbitMQ a durable queue named
// httpbus.<service>.<topic> bound to the amq.topic exchange with routing
// key <topic> (publish to TopicPrefix+topic; subscribe to it with
// durable:true, auto-delete:false and x-queue-name). Notifications are
// published with a receipt: Publish returns when the broker has them. A
// notification published while no instance of a service ever subscribed is
// not kept for it; once the service's queue exists it keeps notifications
// while no instance runs (on RabbitMQ the queue is durable: delete it when
// the service no longer subscribes).
//
// STOMP cannot tell a caller that nobody listens: a request for a service
// with no instance ends as 504 at the caller's deadline, not 503 (the
// conformance suite's NoRespondersStatus), on both brokers. What a call for
// a service no instance ever listened to (a misspelt name) leaves behind
// differs:
//   - RabbitMQ: nothing. With the default queue_prefix a Conn sends to
//     /amq/queue/<service>, the queue Listeners declare (durable) by
//     subscribing to /queue/<service>; a SEND there declares nothing, and
//     the broker drops a request for a queue that does not exist (a SEND to
//     /queue/<service> would create a durable queue that stays). A 503 at
//     once is not possible over STOMP: RabbitMQ's STOMP has no mandatory
//     flag, and the destinations that do check (/exchange/amq.default/...,
//     a SUBSCRIBE to /amq/queue/<missing>) answer with an ERROR that closes
//     the connection, failing every call on it. The amqp backend answers 503
//     at once (a mandatory publish comes back).
//   - ActiveMQ: the SEND creates the queue (auto-creation; the request
//     expires in it at its deadline); the empty queue stays until the
//     broker restarts or deletes inactive destinations (policyEntry
//     gcInactiveDestinations="true" inactiveTimoutBeforeGC="…" in
//     activemq.xml), or it is deleted from the web console or JMX. A STOMP
//     client cannot delete it.
//
// The connection is watched by heart-beats (every HeartBeat/2; silence for
// 2.25×HeartBeat means dead) and by every subscription: on a socket drop,
// an ERROR frame or missed heart-beats, the Listener or Conn redials with
// exponential backoff (github.com/cenkalti/backoff/v5) and subscribes
// again (go-stomp does not). Meanwhile State reports StateReconnecting,
// calls wait for the new connection until their deadline, calls waiting
// for a response fail with transport.ErrUnavailable (their reply queue is
// gone with the connection), and deliveries of the lost connection are
// neither served nor acknowledged (the broker redelivers them).
//
// # Headers
//
// Every entry of a sent Message.Header (Call, Reply, Send) becomes a
// STOMP header: its name in lower case (Httpbus-Seq → httpbus-seq),
// several values joined by ", ", the value escaped as STOMP 1.2 says (by
// go-stomp). Names STOMP or a broker gives a meaning are left out:
// content-length, content-type, destination, receipt, transaction, ack,
// id, subscription, message-id, reply-to, correlation-id, expires,
// expiration, redelivered, persistent, priority, type, timestamp, user-id,
// app-id, content-encoding, durable, auto-delete, exclusive, selector and
// any name starting with activemq. or JMS. An entry replaces the header
// of the same name this package writes (httpbus-version,
// httpbus-deadline). Headers over 32 KiB in all (half of HeaderReserve)
// are refused like a body over the limit.
//
// A received request or reply (message/http) gets in Header its
// httpbus-… STOMP headers, with canonical keys (httpbus-reply-to →
// Httpbus-Reply-To); a foreign message and an inbox message get every
// STOMP header but content-length and content-type.
//
// # Streams
//
// Conn and Listener implement transport.Streamer: each has an inbox, a
// queue that only it consumes (ack:auto) and any STOMP client can SEND
// to, opened on the current connection by the first Inbox call. Its
// address is meant to be used verbatim as a SEND destination:
//
//   - RabbitMQ: /amq/queue/httpbus.inbox.<32 hex digits>. The owner
//     declares the queue by subscribing to /queue/httpbus.inbox.<id> with
//     durable:false, auto-delete:true and exclusive:true, so the broker
//     deletes it with the connection; peers SEND to the /amq/queue/ form,
//     which publishes to an existing queue without declaring it (a SEND to
//     /queue/<name> would declare it durable and fail with
//     precondition_failed, closing the sender's connection). A message
//     sent after the queue is gone is dropped silently. RabbitMQ's
//     /temp-queue/ is not used: its global name (/reply-queue/amq.gen-…)
//     is shown only to the receiver of a message carrying it in reply-to,
//     never to its owner.
//   - ActiveMQ: a temporary queue /temp-queue/httpbus-inbox-<id> of the
//     connection (deleted with it), which others reach as
//     /remote-temp-queue/<connection id>:<n>. ActiveMQ shows that name only
//     to other connections (to its owner the same queue reads as
//     /temp-queue/…), so the package computes it as ActiveMQ 5.x's STOMP
//     converter does: the connection id is the session header of
//     CONNECTED, n counts the temporary destinations made on the
//     connection (the Conn's reply queue is 1). It then SENDs a probe to
//     the computed name and waits (up to 10 s) until the probe arrives,
//     and fails with transport.ErrUnavailable if it does not: this is the
//     cost of the choice, an undocumented naming rule, checked at every
//     opening (one round trip). A connection given to NewConn or
//     NewListener that made temporary queues of its own makes the count
//     wrong, and Inbox fails. A named queue (/queue/httpbus.inbox.<id>)
//     would avoid the rule but stay in the broker after Close, and keep
//     what is sent to it, unless the broker garbage-collects inactive
//     destinations (gcInactiveDestinations, off by default). A SEND to a
//     temporary queue that is gone gets an ERROR frame, which connections
//     this package dials ignore (see Delivery).
//
// After a lost connection the inbox is gone with it; Inbox then opens a
// new one on the new connection, with a new address. ReceiveInbox returns
// messages of both in arrival order, Header holding every STOMP header
// but content-length and content-type. Messages from one sender to one
// inbox arrive in the order sent. The inbox is read into memory as it
// arrives (go-stomp stops reading the socket when a subscription is not
// drained): the credit of the stream protocol bounds it, not this
// package.
//
// Send is a SEND to the address with m.ContentType (no content-type
// header if empty), httpbus-version, the deadline headers of a request
// when m.Deadline is set, and m.Header; no receipt, except on a draining
// Listener, as for replies. The size rules of Call apply
// (*transport.TooLargeError).
//
// Reply with transport.Hold sends the response to reply-to with the
// correlation-id and leaves the request unacknowledged: it stays in
// flight (Close returns it to the broker, which redelivers it) until a
// later Reply with a nil response and Ack, Reject or Requeue settles it.
//
// # Errors
//
// A body larger than the broker's frame limit minus HeaderReserve fails
// with a *transport.TooLargeError before anything is sent (413 through a
// RoundTripper): ActiveMQ drops the TCP connection, without an ERROR
// frame, on a frame over its transport.maxFrameSize. A lost or unusable
// connection gives transport.ErrUnavailable (502) wrapping go-stomp's
// error; a caller's deadline passing gives transport.ErrTimeout (504);
// using a closed Listener or Conn gives transport.ErrClosed. A broker that
// refuses CONNECT (credentials, virtual host) gives an error saying so.
// Errors never contain the URL's password.
//
// # Limits of STOMP
//
// The conformance suite runs on both brokers with one declared difference:
// no responders is 504 (see Delivery). Header names of the HTTP message
// never collide with STOMP headers, since the HTTP message travels inside
// the body; STOMP header values are escaped as STOMP 1.2 says (by go-stomp).
// A Message.Header entry with a reserved name is not sent (see Headers).
// A message that is not message/http (from a STOMP console or another
// producer) is served as a POST to "/" whose headers are its STOMP headers
// (content-length and content-type aside), canonicalised.
package stomp
