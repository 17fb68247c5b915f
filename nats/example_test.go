package nats_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/httpbus/httpbus/internal/natsserver"
	natstransport "github.com/httpbus/httpbus/nats"
	"github.com/httpbus/httpbus/transport"
)

// startNATS starts an embedded nats-server on a free loopback port for the
// examples. A program of yours uses its own server's URL instead, such as
// nats://127.0.0.1:4222.
func startNATS() (url string, stop func()) {
	url, stop, err := natsserver.Start(natsserver.Config{})
	if err != nil {
		log.Fatal(err)
	}
	return url, stop
}

// Serve an http.Handler as service "orders" and call it, both from URLs.
func Example() {
	natsURL, stop := startNATS() // e.g. "nats://127.0.0.1:4222"
	defer stop()
	ctx := context.Background()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "item %s\n", r.PathValue("id"))
	})
	l, err := transport.Listen(ctx, natsURL+"?service=orders")
	if err != nil {
		log.Fatal(err)
	}
	srv := &transport.Server{Handler: mux}
	go srv.Serve(l)
	defer srv.Shutdown(ctx)

	c, err := transport.Dial(ctx, natsURL)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	client := &http.Client{Transport: transport.NewRoundTripper(c), Timeout: 5 * time.Second}
	resp, err := client.Get("http://orders/items/42") // subject httpbus.orders
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(resp.Status, " ", string(body))
	// Output: 200 OK item 42
}

// Use a NATS connection the program already has: the listener and the
// client side leave it open on Close.
func ExampleNewListener() {
	natsURL, stop := startNATS()
	defer stop()

	nc, err := natsgo.Connect(natsURL, natsgo.MaxReconnects(-1))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	l, err := natstransport.NewListener(context.Background(), nc, transport.ListenConfig{Service: "orders"}, natstransport.Config{Prefix: "acme"})
	if err != nil {
		log.Fatal(err)
	}
	srv := &transport.Server{Handler: http.NotFoundHandler(), MaxInFlight: 64}
	go srv.Serve(l) // requests on subject acme.orders, queue group orders
	defer srv.Shutdown(context.Background())

	c, err := natstransport.NewConn(context.Background(), nc, natstransport.Config{Prefix: "acme"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	resp, err := transport.NewClient(c).Get("http://orders/missing")
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode)
	// Output: 404
}

// Publish a notification: every service subscribed to topic
// "orders.created" gets it once (subject httpbus.notify.orders.created),
// as a request with method NOTIFY whose Host is the topic.
func ExampleConn_Publish() {
	natsURL, stop := startNATS()
	defer stop()
	ctx := context.Background()

	got := make(chan string, 1)
	l, err := transport.Listen(ctx, natsURL+"?service=audit&topics=orders.created")
	if err != nil {
		log.Fatal(err)
	}
	srv := &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r.Method + " " + r.Host + " " + string(b)
	})}
	go srv.Serve(l)
	defer srv.Shutdown(ctx)

	c, err := transport.Dial(ctx, natsURL)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	req, _ := http.NewRequest(transport.MethodNotify, "http://orders.created/", strings.NewReader(`{"id":42}`))
	resp, err := transport.NewClient(c).Do(req)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode) // answered locally, before any handler runs
	fmt.Println(<-got)
	// Output:
	// 202
	// NOTIFY orders.created {"id":42}
}
