package mqtt_test

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/httpbus/httpbus/transport"

	_ "github.com/httpbus/httpbus/mqtt" // registers mqtt:// and mqtts://
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
