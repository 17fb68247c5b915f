// Package gateway joins the bus to the web, in both directions, with
// net/http/httputil.ReverseProxy:
//
//   - Gateway, an http.Handler for an http.Server, forwards requests from
//     browsers and curl onto the bus (a transport.Conn): the web in front.
//   - Bridge, an http.Handler for a transport.Server, forwards requests from
//     the bus to an existing web application over HTTP: any app behind.
//
// Together they carry a request from curl to a Flask app under gunicorn
// through any broker, with neither side knowing:
//
//	curl → http.Server{Gateway} → broker → transport.Server{Bridge} → app
//
// The httpbus command runs each as a program: httpbus gateway and httpbus
// bridge.
//
// # Routing
//
// A Gateway finds the service by the first path segment, which it strips
// (RoutePath: /orders/items/42 is service "orders", path /items/42), or by
// the leftmost label of the Host header (RouteHost: orders.example.com is
// service "orders"). Allow limits the services exposed; a request for any
// other gets 404, as one that names no service does (ErrNoService), so the
// allow-list does not reveal which services exist. A request with method
// NOTIFY gets 405 (ErrNotify): the web does not publish notifications.
//
// # Headers
//
// Both strip hop-by-hop headers (ReverseProxy). The Gateway sets
// X-Forwarded-For (the client's IP), X-Forwarded-Host (the Host it
// received) and X-Forwarded-Proto (http or https), replacing any the client
// sent; the Bridge passes them on to the application unchanged. The service
// sees its own name as the request's Host.
//
// # Deadlines
//
// Gateway.Timeout becomes the request's context deadline, which the
// transport carries to the service: the Bridge's upstream exchange, and the
// handler's r.Context() in a Go service, end at the same instant.
//
// # Errors
//
// Answers made by httpbus rather than by a service carry the Httpbus-Error
// header (transport.HeaderError) with the error's text: 404 no such service
// (Gateway), 502 broker unavailable or upstream unreachable, 503 no server
// for the service (transport.ErrNoResponders; 504 where the broker cannot
// tell, see each backend's documentation), 504 deadline passed, 413 too
// large. A service's or upstream's own status, 5xx included, passes
// unchanged and without that header.
//
// # Streaming
//
// Both flush each write of a response at once (FlushInterval -1), and the
// transport streams (WIRE.md §7): server-sent events, large downloads and
// uploads pass through part by part, with no body limit unless
// Gateway.MaxBodyBytes sets one.
package gateway
