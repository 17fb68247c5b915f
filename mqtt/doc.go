// Package mqtt is the MQTT 5 backend of httpbus: an http.Handler served
// over an MQTT broker (Mosquitto 2.0 or later), called by a plain
// *http.Client. Import it as mqtttransport; the client library is
// github.com/eclipse/paho.golang (autopaho reconnects).
//
//	l, _ := transport.Listen(ctx, "mqtt://127.0.0.1:1883?service=orders")
//	go (&transport.Server{Handler: mux}).Serve(l)
//	c, _ := transport.Dial(ctx, "mqtt://127.0.0.1:1883")
//	resp, _ := transport.NewClient(c).Get("http://orders/items/42")
//
// The package's Listen and Dial take the URL and a Config, whose fields
// the URL's options override; NewListener and NewConn take an
// autopaho.ClientConfig instead (servers, credentials, TLS, dialer,
// backoff), from which the endpoint makes its connection manager (autopaho
// fixes the callbacks, manual acknowledgement and CONNECT properties an
// endpoint needs when the manager is made, so it cannot take over one the
// caller made). Each endpoint owns one MQTT connection.
//
// # URLs
//
//	mqtt://[user:pass@]host:port[,host:port...]?option=value&...
//	mqtts://host:port?...                 the same over TLS
//
// Several hosts are tried in turn on every (re)connection.
// transport.Listen also reads service= (required) and topics=
// (comma-separated). Options (a misspelt one is an error):
//
//	prefix=httpbus        first topic level(s) (Config.Prefix)
//	group=<service>       shared subscription group (Config.Group)
//	client_id=hb-…        MQTT client identifier (Config.ClientID; random by default)
//	session_expiry=0s     Session Expiry Interval (Config.SessionExpiry)
//	receive_maximum=1024  Receive Maximum of a Listener (Config.ReceiveMaximum)
//	quick_ack=true        TCP_QUICKACK (Config.NoQuickAck is its negation)
//	keepalive=30          keep alive, seconds
//	connect_timeout=10s   first connection's timeout (also bounded by ctx)
//	tls_ca=FILE[,FILE]    root CAs to verify the server (implies TLS)
//	tls_cert=FILE&tls_key=FILE   client certificate (implies TLS)
//	tls_server_name=NAME  server name to verify (implies TLS)
//
// # Addressing
//
// Requests for service S are published to "<prefix>/S"; every Listener of
// S subscribes to "$share/<group>/<prefix>/S" (group S by default), so the
// broker gives each request to one instance. Notifications for topic T go
// to "<prefix>/notify/T"; each service subscribed to T has the shared
// subscription "$share/<service>/<prefix>/notify/T", so each service gets
// each notification once. Service names are one topic level (no "/"),
// topics may have several; neither may hold "+", "#", NUL or start with
// "$". WIRE.md §6.6 is the wire-level description.
//
// A request carries the MQTT 5 properties Content Type (message/http),
// Response Topic ("<prefix>/reply/<client id>" of the calling Conn),
// Correlation Data (opaque bytes, unique per Conn) and Message Expiry
// Interval (seconds to the caller's deadline, rounded up), and user
// properties for Httpbus-Deadline (Unix ms) and every entry of
// transport.Message.Header (the stream headers among them);
// Httpbus-Version only when it is not 1 (a missing one means 1). The
// response goes to the Response Topic with the same Correlation Data;
// the Conn matches it in a table of calls in flight. Received user
// properties become Message.Header with canonical keys; a message whose
// Content Type is not message/http is served as a foreign message
// (POST /, user properties as HTTP headers).
//
// # Delivery
//
// Requests and notifications are published and subscribed at QoS 1. A
// Listener acknowledges (PUBACK) a message only when Reply settles it:
// after the response was published, or after the last part of a stream.
// paho sends acknowledgements in the order the messages arrived, as MQTT
// requires, so a request held long (a stream) holds back the PUBACKs of
// later ones; Config.ReceiveMaximum bounds what the broker sends before
// it sees them. MQTT has no negative acknowledgement: Reject acks and
// drops; Requeue publishes the request again (Httpbus-Redelivered: true)
// and acks it. Close hands requests received but not yet taken back the
// same way, as does a Listener that receives a request after Drain. Served
// by a transport.Server (transport.Pusher), a Listener serves each request
// on a goroutine of its own as paho hands it over.
//
// What Mosquitto 2.0.11 does with unacknowledged requests when an
// instance disconnects without Close (killed, network cut), measured
// (mqtt/fault_test.go):
//   - session_expiry=0 (default): the session ends with the connection
//     and its unacknowledged and queued messages are dropped. They are not
//     given to another member of the shared subscription; their callers
//     get 504 at their deadline (a handler that still runs and answers
//     after a reconnect does reach its caller).
//   - session_expiry>0 with a fixed client_id: the session outlives the
//     connection; its unacknowledged requests are delivered again, with
//     the DUP flag (Httpbus-Redelivered: true), when an endpoint with that
//     client_id connects (the same instance reconnecting, or its
//     replacement). Meanwhile Mosquitto keeps giving the offline session
//     its round-robin share of new requests, which wait there too (until
//     the session expires, then they are dropped). Close ends the session
//     (DISCONNECT with Session Expiry Interval 0).
//
// # Streams
//
// Each endpoint has an inbox "<prefix>/inbox/<client id>", subscribed at
// QoS 0 (its messages are never acknowledged, so they never wait behind a
// held request); Send publishes to it at QoS 0. A message lost (a
// disconnect, a full queue) shows as a gap in Httpbus-Seq and fails the
// stream.
//
// # Errors and reconnection
//
// Mosquitto answers a QoS 1 PUBLISH that no subscription matches with
// PUBACK reason 0x10 (No matching subscribers), which Call reports as
// transport.ErrNoResponders (503) at once. Deadline: transport.ErrTimeout
// (504). autopaho reconnects with backoff (50 ms to 5 s) and the
// subscriptions are made again; meanwhile State reports
// transport.StateReconnecting and new calls wait for the connection up to
// their deadline. MaxMessageBytes is the broker's Maximum Packet Size
// from CONNACK (MaxPacketSize when none is announced) minus HeaderRoom.
package mqtt
