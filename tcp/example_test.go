package tcp_test

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/httpbus/httpbus/tcp"
	"github.com/httpbus/httpbus/transport"
)

// A service on a TCP port speaks plain HTTP/1.1: a stock http.Client (or
// curl) calls it directly, and the httpbus client calls it by service name.
func Example() {
	ctx := context.Background()
	l, err := tcp.Listen(ctx, "tcp://127.0.0.1:0", transport.ListenConfig{}, tcp.Config{})
	if err != nil {
		panic(err)
	}
	srv := &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s", r.Host)
	})}
	go srv.Serve(l)
	defer srv.Shutdown(ctx)

	// A stock net/http client, no httpbus involved:
	resp, err := http.Get("http://" + l.Addr().String() + "/")
	if err != nil {
		panic(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(b) == "hello from "+l.Addr().String())

	// The httpbus client: the URL host is the service name.
	conn, err := tcp.Dial(ctx, "tcp://"+l.Addr().String(), tcp.Config{})
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	resp, err = transport.NewClient(conn).Get("http://orders/")
	if err != nil {
		panic(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	fmt.Println(string(b))
	// Output:
	// true
	// hello from orders
}
