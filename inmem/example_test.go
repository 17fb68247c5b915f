package inmem_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"

	"github.com/httpbus/httpbus/inmem"
	"github.com/httpbus/httpbus/transport"
)

// Serve an http.Handler as service "orders" on a private bus and call it:
// the same frames as on a broker, with no broker.
func Example() {
	ctx := context.Background()
	bus := inmem.NewBus()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "item %s\n", r.PathValue("id"))
	})
	l, err := bus.Listen(ctx, transport.ListenConfig{Service: "orders"})
	if err != nil {
		log.Fatal(err)
	}
	srv := &transport.Server{Handler: mux}
	go srv.Serve(l)
	defer srv.Shutdown(ctx)

	c, err := bus.Dial(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	resp, err := transport.NewClient(c).Get("http://orders/items/42")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(resp.Status, " ", string(body))
	// Output: 200 OK item 42
}

// Open the process-wide bus by URL, as a program does with any backend:
// mem://<service> on the server side, mem:// on the caller's.
func Example_url() {
	ctx := context.Background()
	l, err := transport.Listen(ctx, "mem://greeter")
	if err != nil {
		log.Fatal(err)
	}
	srv := &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", r.Host)
	})}
	go srv.Serve(l)
	defer srv.Shutdown(ctx)

	c, err := transport.Dial(ctx, "mem://")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	resp, err := transport.NewClient(c).Get("http://greeter/")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(string(body))
	// Output: hello from greeter
}
