// Package nats is the NATS backend of httpbus: an http.Handler served over
// NATS request/reply, called by a plain *http.Client. Import it as
// natstransport; the client library is github.com/nats-io/nats.go.
//
//	l, _ := transport.Listen(ctx, "nats://127.0.0.1:4222?service=orders")
//	go (&transport.Server{Handler: mux}).Serve(l)
//	c, _ := transport.Dial(ctx, "nats://127.0.0.1:4222")
//	resp, _ := transport.NewClient(c).Get("http://orders/items/42")
//
// Listen and Dial of this package open the same URLs and take a Config for
// what a URL cannot say (Logger); the URL's options override its fields.
// NewListener and NewConn take a *natsgo.Conn the caller owns instead.
//
// # URLs
//
//	nats://[user:pass@]host:port[,host:port...]?option=value&...
//	tls://host:port?...                         the same, TLS required
//
// A user with no password is sent as a token. Several hosts form the
// server pool nats.go reconnects over. transport.Listen also reads
// service= (required) and topics= (comma-separated). Options (a misspelt
// one is an error):
//
//	prefix=httpbus        first subject token(s) (Config.Prefix)
//	queue=<service>       queue group of the service (Config.Queue)
//	name=...              connection name shown by the server (default "httpbus <service>" / "httpbus client")
//	creds=FILE            user JWT and nkey seed (.creds file)
//	nkey=FILE             nkey seed file
//	tls_ca=FILE[,FILE]    root CAs to verify the server (implies TLS)
//	tls_cert=FILE&tls_key=FILE   client certificate (implies TLS)
//	tls_server_name=NAME  server name to verify (implies TLS)
//	reconnect_wait=1s     pause between reconnect attempts (default 1s)
//	max_reconnects=-1     reconnect attempts; -1 (default) means forever
//	connect_timeout=5s    first connection's timeout (also bounded by ctx)
//	pending_msgs=65536    per-subscription pending messages (Config.PendingMsgs)
//	pending_bytes=67108864   per-subscription pending bytes (Config.PendingBytes)
//
// Errors name the URL with its password redacted.
//
// # Delivery
//
// Requests for service S are published to subject "<prefix>.S" with a
// reply subject on the caller's shared response inbox (nats.go's
// RequestMsg). Every Listener of S queue-subscribes to it in queue group S
// (Config.Queue), so each request reaches one instance. The frame is the
// message payload; NATS headers carry only routing: Content-Type:
// message/http, Httpbus-Version: 1, Httpbus-Deadline (Unix ms) and the
// core's Message.Header entries (the stream headers, see Streams). The
// response frame is published to the reply subject with the same headers
// (no deadline). Names under the reserved Nats- prefix are never used.
// Received messages have every NATS header in Message.Header, keys
// canonicalised.
// Receivers match the routing header names case-insensitively (a client in
// another language may send "content-type"); a malformed Httpbus-Deadline
// is answered 400 by the listener. A request published without a reply
// subject is served and its response dropped.
//
// Notifications for topic T go to "<prefix>.notify.T"; every service
// subscribed to T queue-subscribes with its own queue group, so each
// service receives each notification once, on one of its instances.
// Service names "notify" and "notify.*" are therefore refused.
//
// A message without Content-Type message/http (say, from "nats req
// httpbus.orders hello") is served as POST / with the payload as body and
// its NATS headers as request headers, keys canonicalised
// (http.CanonicalHeaderKey), since nats.go keys are case-sensitive.
//
// Delivery is at most once, as NATS core is: a request taken by an
// instance that dies is lost and its caller gets 504 at its deadline.
// Messages wait in the client (PendingMsgs, PendingBytes) until the Server
// takes them, which it does while fewer than MaxInFlight requests run; so
// the in-flight limit bounds goroutines and the pending limits bound
// memory. Past them nats.go drops messages as a slow consumer (logged).
// NATS core has no prefetch: the server hands each request to one member of
// the queue group without regard to how busy it is, and the pending limits
// drop what exceeds them rather than leave it to another instance. So the
// pending limits do not follow MaxInFlight (that would turn a burst into
// lost requests): a slow instance gets its share of requests and queues
// them. Balance by load with more instances, or with a MaxInFlight that
// matches each instance's capacity. The Listener implements
// transport.Prefetcher only to learn MaxInFlight, the size of its pool of
// workers: under a transport.Server (transport.Pusher) each request is
// served on the goroutine that took it from the subscription, started as
// needed up to MaxInFlight (at most 2 of them stay idle), with no handoff
// to Receive and no goroutine per request.
// Drain (Server.Shutdown) unsubscribes at the server, confirms with a
// flush, and serves the messages already received before Receive returns
// transport.ErrClosed. Close instead hands the requests it holds back to
// the broker: it unsubscribes and republishes each to its subject, with
// Httpbus-Redelivered: true, keeping its reply subject, so another instance
// answers it (with none left, its caller gets 504 at its deadline); the same
// happens to a request the Server requeues. Notifications held at Close are
// dropped (republished, they would reach the other services twice).
//
// Reconnection is nats.go's: URL openers reconnect forever (max_reconnects)
// every reconnect_wait; subscriptions are restored by nats.go. Requests
// published while disconnected wait in nats.go's reconnect buffer and are
// answered after the reconnect if their deadline allows. State reports the
// connection's status.
//
// # Streams
//
// Conn and Listener implement transport.Streamer, the primitives the core
// runs streams on (WIRE.md §7). Inbox subscribes, on first use, to a
// subject of the endpoint's own with a plain (not queue) subscription:
// nc.NewInbox(), that is "_INBOX.<nuid>", or "<prefix>.<nuid>" on a
// connection opened with natsgo.CustomInboxPrefix. That is the namespace
// NATS request/reply already uses, so a secured deployment grants streams
// what it grants requesters: each httpbus user subscribes to its own inbox
// prefix ("_INBOX.>", or a per-user prefix that keeps users from reading
// each other's inboxes) and publishes to its peers' (servers send parts
// and callers send credit and cancel there, so allow_responses alone,
// which permits one reply per request, is not enough). Inbox returns once
// the server has confirmed the subscription; the subject stays the same
// for the endpoint's life (nats.go restores it after a reconnect; what
// was sent meanwhile is lost, which the core detects by sequence numbers).
// Send publishes to an inbox subject with the Message.Header entries as
// NATS headers (Httpbus-Stream, Httpbus-Seq, Httpbus-End, Httpbus-Control,
// Httpbus-Credit, Httpbus-Credit-Bytes, Httpbus-Reply-To), after a
// max_payload check. The inbox is an asynchronous subscription (a
// synchronous one costs a 512 KiB channel that the garbage collector scans
// in every cycle); it holds up to Config.InboxPendingBytes
// (DefaultInboxPendingBytes, 384 MiB) not yet taken by ReceiveInbox; past
// it nats.go drops messages as a slow consumer (logged; the core sees the
// gap). Close unsubscribes it.
//
// Listener.Reply with transport.Hold publishes the response (a stream's
// first message) to the reply subject and keeps the request held, in
// flight, until a later Reply settles it. A held request has been
// answered in part: Requeue settles it without republishing, and Close
// does not hand it back.
//
// # Errors
//
// Call maps nats.ErrNoResponders to transport.ErrNoResponders (503 at
// once), a passed deadline to transport.ErrTimeout (504), a message over
// the server's max_payload to *transport.TooLargeError (413, nothing sent),
// a closed Conn to transport.ErrClosed and other failures to
// transport.ErrUnavailable (502); the nats.go error is wrapped too.
// MaxMessageBytes is max_payload (1 MiB by default) minus HeaderRoom, so the
// core answers 413 before sending on the request path and replaces a
// response that would not fit with a 413 on the response path.
//
// The conformance suite runs in full on NATS; its large-body case uses
// max_payload minus HeaderRoom minus 4 KiB for the frame's own head, since
// one NATS message carries the whole frame.
package nats
