package transport_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	_ "github.com/httpbus/httpbus/inmem" // registers mem://
	"github.com/httpbus/httpbus/transport"
)

// A service is any http.Handler, served over a backend chosen by URL; a
// caller is a plain http.Client.
func Example() {
	ctx := context.Background()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "item %s from %s\n", r.PathValue("id"), r.Host)
	})
	l, err := transport.Listen(ctx, "mem://orders")
	if err != nil {
		panic(err)
	}
	srv := &transport.Server{Handler: mux}
	go srv.Serve(l)
	defer srv.Shutdown(ctx)

	conn, err := transport.Dial(ctx, "mem://")
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	client := &http.Client{Transport: transport.NewRoundTripper(conn), Timeout: 5 * time.Second}
	resp, err := client.Get("http://orders/items/42")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Print(resp.Status, ": ", string(b))
	// Output: 200 OK: item 42 from orders
}

// Transport failures arrive as responses made by httpbus, with the reason in
// the Httpbus-Error header.
func ExampleRoundTripper_noResponders() {
	conn, _ := transport.Dial(context.Background(), "mem://")
	defer conn.Close()
	resp, err := transport.NewClient(conn).Get("http://nobody/")
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, resp.Header.Get(transport.HeaderError))
	// Output: 503 transport/inmem: service "nobody": transport: no responders
}

// With ReturnErrors, the same failures are errors that match the sentinels.
func ExampleRoundTripper_returnErrors() {
	conn, _ := transport.Dial(context.Background(), "mem://")
	defer conn.Close()
	client := &http.Client{Transport: &transport.RoundTripper{Conn: conn, ReturnErrors: true}}
	_, err := client.Get("http://nobody/")
	fmt.Println(errors.Is(err, transport.ErrNoResponders))
	// Output: true
}

// A notification is a request with method NOTIFY to the topic named by the
// host; every subscribing service gets it once.
func Example_notify() {
	ctx := context.Background()
	got := make(chan string, 1)
	l, _ := transport.Listen(ctx, "mem://audit?topics=orders.created")
	srv := &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r.Method + " " + r.Host + " " + string(b)
	})}
	go srv.Serve(l)
	defer srv.Shutdown(ctx)

	conn, _ := transport.Dial(ctx, "mem://")
	defer conn.Close()
	req, _ := http.NewRequest(transport.MethodNotify, "http://orders.created/", strings.NewReader(`{"id":7}`))
	resp, err := transport.NewClient(conn).Do(req)
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(resp.Status)
	fmt.Println(<-got)
	// Output:
	// 202 Accepted
	// NOTIFY orders.created {"id":7}
}

// The caller's deadline becomes the handler's context deadline.
func ExampleServer_deadline() {
	ctx := context.Background()
	l, _ := transport.Listen(ctx, "mem://slow")
	srv := &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // a handler that waits for its deadline
	})}
	go srv.Serve(l)
	defer srv.Shutdown(ctx)
	conn, _ := transport.Dial(ctx, "mem://")
	defer conn.Close()
	client := &http.Client{Transport: transport.NewRoundTripper(conn), Timeout: 50 * time.Millisecond}
	resp, err := client.Get("http://slow/")
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode)
	// Output: 504
}
