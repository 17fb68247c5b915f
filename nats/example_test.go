package nats_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"time"

	natsgo "github.com/nats-io/nats.go"

	natstransport "github.com/httpbus/httpbus/nats"
	"github.com/httpbus/httpbus/transport"
)

// Serve an http.Handler as service "orders" and call it, both from URLs.
// (Compile-only: it needs a NATS server on 127.0.0.1:4222.)
func Example() {
	ctx := context.Background()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "item %s\n", r.PathValue("id"))
	})

	l, err := transport.Listen(ctx, "nats://127.0.0.1:4222?service=orders&topics=orders.created")
	if err != nil {
		log.Fatal(err)
	}
	srv := &transport.Server{Handler: mux}
	go srv.Serve(l)
	defer srv.Shutdown(ctx)

	c, err := transport.Dial(ctx, "nats://127.0.0.1:4222")
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
}

// Use a NATS connection the program already has: the listener and the
// client side leave it open on Close.
func ExampleNewListener() {
	nc, err := natsgo.Connect("nats://127.0.0.1:4222", natsgo.MaxReconnects(-1))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()

	l, err := natstransport.NewListener(nc, transport.ListenConfig{Service: "orders"}, natstransport.Config{Prefix: "acme"})
	if err != nil {
		log.Fatal(err)
	}
	srv := &transport.Server{Handler: http.NotFoundHandler(), MaxInFlight: 64}
	go srv.Serve(l) // requests on subject acme.orders, queue group orders

	c, err := natstransport.NewConn(nc, natstransport.Config{Prefix: "acme"})
	if err != nil {
		log.Fatal(err)
	}
	client := transport.NewClient(c)
	if resp, err := client.Get("http://orders/missing"); err == nil {
		fmt.Println(resp.StatusCode) // 404
		resp.Body.Close()
	}
	srv.Shutdown(context.Background())
}

// Publish a notification: every service subscribed to topic
// "orders.created" gets it once (subject httpbus.notify.orders.created).
func ExampleConn_Publish() {
	c, err := transport.Dial(context.Background(), "nats://127.0.0.1:4222")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	req, _ := http.NewRequest(transport.MethodNotify, "http://orders.created/", nil)
	resp, err := transport.NewClient(c).Do(req)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode) // 202, answered locally
}
