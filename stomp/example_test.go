package stomp_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"time"

	stompgo "github.com/go-stomp/stomp/v3"

	stomptransport "github.com/httpbus/httpbus/stomp"
	"github.com/httpbus/httpbus/transport"
)

// Serve an http.Handler from the STOMP queue /queue/orders, subscribed to
// the notification topic orders.created.
func Example_server() {
	ctx := context.Background()
	l, err := transport.Listen(ctx, "stomp://guest:guest@127.0.0.1:61613?service=orders&topics=orders.created")
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "item %s\n", r.PathValue("id"))
	})
	srv := &transport.Server{Handler: mux}
	log.Fatal(srv.Serve(l))
}

// Call a service over STOMP with a plain *http.Client.
func Example_client() {
	ctx := context.Background()
	conn, err := transport.Dial(ctx, "stomp://guest:guest@127.0.0.1:61613")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	client := &http.Client{Transport: transport.NewRoundTripper(conn), Timeout: 5 * time.Second}
	resp, err := client.Get("http://orders/items/42") // SEND to /queue/orders
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.Status, string(body))
}

// Use a go-stomp connection you dialled yourself; the package reconnects
// only with Config.Redial.
func ExampleNewConn() {
	ctx := context.Background()
	cfg := stomptransport.Config{Dialect: stomptransport.DialectActiveMQ}
	raw, err := stompgo.Dial("tcp", "127.0.0.1:61614", append(stomptransport.ConnOptions(cfg), stompgo.ConnOpt.Login("admin", "admin"))...)
	if err != nil {
		log.Fatal(err)
	}
	defer raw.Disconnect()
	conn, err := stomptransport.NewConn(ctx, raw, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	client := transport.NewClient(conn)
	resp, err := client.Get("http://orders/items/42")
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.Status, conn.State())
}
