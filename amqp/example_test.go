package amqp_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"strings"
	"time"

	amqptransport "github.com/httpbus/httpbus/amqp"
	"github.com/httpbus/httpbus/transport"
)

// A service served from RabbitMQ and called with a plain http.Client. The
// examples need a broker, so they are compiled but not run.
func Example() {
	ctx := context.Background()
	const url = "amqp://guest:guest@127.0.0.1:5672/"

	// Server: serve the "orders" service, subscribed to one topic.
	l, err := amqptransport.Listen(ctx, url, transport.ListenConfig{Service: "orders", Topics: []string{"stock.changed"}}, amqptransport.Config{})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "item %s\n", r.PathValue("id"))
	})
	mux.HandleFunc("NOTIFY /", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		log.Printf("notification on %s: %s", r.Host, b)
	})
	srv := &transport.Server{Handler: mux}
	go srv.Serve(l)
	defer srv.Shutdown(ctx)

	// Client: the URL's host names the service.
	c, err := amqptransport.Dial(ctx, url, amqptransport.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	client := &http.Client{Transport: transport.NewRoundTripper(c), Timeout: 5 * time.Second}
	resp, err := client.Get("http://orders/items/42")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(string(body))

	// A notification to every service subscribed to the topic.
	req, _ := http.NewRequest(transport.MethodNotify, "http://stock.changed/", strings.NewReader(`{"sku":"42"}`))
	if resp, err := client.Do(req); err == nil {
		resp.Body.Close() // 202 Accepted once the broker confirmed it
	}
}

// Opening the backend from URLs, as configuration.
func Example_urls() {
	ctx := context.Background()
	l, err := transport.Listen(ctx, "amqp://guest:guest@127.0.0.1:5672/?service=orders&prefetch=32&dead_letter_exchange=orders.dlx")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	c, err := transport.Dial(ctx, "amqps://user:secret@rabbit.example:5671/prod?cacertfile=/etc/ssl/ca.pem")
	if err != nil {
		log.Fatal(err) // the error shows the URL with the password redacted
	}
	defer c.Close()
}

// Health checks read the connection state.
func ExampleListener_State() {
	var l *amqptransport.Listener // from Listen
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if s := l.State(); s != transport.StateConnected {
			http.Error(w, s.String(), http.StatusServiceUnavailable)
		}
	})
}
