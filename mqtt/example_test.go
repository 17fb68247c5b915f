package mqtt_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"

	"github.com/eclipse/paho.golang/autopaho"

	mqtttransport "github.com/httpbus/httpbus/mqtt" // also registers mqtt:// and mqtts://
	"github.com/httpbus/httpbus/transport"
)

// A service and a caller over Mosquitto (compile-only: it needs a broker).
func Example() {
	ctx := context.Background()
	l, err := transport.Listen(ctx, "mqtt://127.0.0.1:1883?service=orders&topics=prices")
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "item %s\n", r.URL.Path)
	})}
	go srv.Serve(l)
	defer srv.Shutdown(ctx)

	c, err := transport.Dial(ctx, "mqtt://127.0.0.1:1883")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	resp, err := transport.NewClient(c).Get("http://orders/items/42")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	fmt.Print(string(b))
}

// The package's own openers: a URL whose options override a Config
// (compile-only: it needs a broker).
func ExampleListen() {
	ctx := context.Background()
	cfg := mqtttransport.Config{Prefix: "acme/httpbus", Logger: slog.Default()}
	l, err := mqtttransport.Listen(ctx, "mqtt://127.0.0.1:1883?group=orders-eu", transport.ListenConfig{Service: "orders"}, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()
	c, err := mqtttransport.Dial(ctx, "mqtt://127.0.0.1:1883", cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	fmt.Println(c.State())
}

// An autopaho client configuration of your own (servers, credentials, TLS,
// backoff); the endpoint makes the connection manager from it
// (compile-only: it needs a broker).
func ExampleNewConn() {
	ctx := context.Background()
	ac := autopaho.ClientConfig{
		ServerUrls:      []*url.URL{{Scheme: "mqtt", Host: "127.0.0.1:1883"}},
		ConnectUsername: "svc",
		ConnectPassword: []byte("secret"),
	}
	c, err := mqtttransport.NewConn(ctx, ac, mqtttransport.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	resp, err := transport.NewClient(c).Get("http://orders/items/42")
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println(resp.Status)
}
