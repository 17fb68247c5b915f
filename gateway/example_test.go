package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"

	"github.com/httpbus/httpbus/gateway"
	"github.com/httpbus/httpbus/inmem"
	"github.com/httpbus/httpbus/transport"
)

// A Gateway puts services on the bus in front of HTTP clients: the first
// path segment names the service.
func ExampleGateway() {
	ctx := context.Background()
	bus := inmem.NewBus() // or transport.Dial(ctx, "nats://127.0.0.1:4222")

	// A service on the bus.
	l, _ := bus.Listen(ctx, transport.ListenConfig{Service: "orders"})
	srv := &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s for %s\n", r.Method, r.URL.Path, r.Header.Get("X-Forwarded-For"))
	})}
	go srv.Serve(l)
	defer srv.Shutdown(ctx)

	// The gateway, as an http.Server would run it.
	conn, _ := bus.Dial(ctx)
	defer conn.Close()
	web := httptest.NewServer(&gateway.Gateway{Conn: conn, Allow: []string{"orders"}})
	defer web.Close()

	for _, path := range []string{"/orders/items/42", "/billing/"} {
		resp, err := http.Get(web.URL + path)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%s: %d %s", path, resp.StatusCode, body)
	}
	// Output:
	// /orders/items/42: 200 GET /items/42 for 127.0.0.1
	// /billing/: 404 httpbus/gateway: no such service
}

// A Bridge puts an existing web application on the bus as a service.
func ExampleBridge() {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "app saw %s %s\n", r.Method, r.URL.Path)
	}))
	defer app.Close()
	upstream, _ := url.Parse(app.URL)

	ctx := context.Background()
	bus := inmem.NewBus() // or transport.Listen(ctx, "nats://127.0.0.1:4222?service=orders")
	l, _ := bus.Listen(ctx, transport.ListenConfig{Service: "orders"})
	srv := &transport.Server{Handler: &gateway.Bridge{Upstream: upstream}}
	go srv.Serve(l)
	defer srv.Shutdown(ctx)

	conn, _ := bus.Dial(ctx)
	defer conn.Close()
	client := transport.NewClient(conn)
	resp, err := client.Get("http://orders/items/42")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Printf("%d %s", resp.StatusCode, body)
	// Output:
	// 200 app saw GET /items/42
}
