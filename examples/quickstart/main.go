// Command quickstart serves a small standard-library ServeMux over httpbus
// and calls it with a plain *http.Client.
//
//	go run ./examples/quickstart                          # embedded NATS server
//	go run ./examples/quickstart -url mem://              # in memory
//	go run ./examples/quickstart -url nats://127.0.0.1:4222
//	go run ./examples/quickstart -url amqp://guest:guest@127.0.0.1:5672/
//	go run ./examples/quickstart -url stomp://127.0.0.1:61613
//	go run ./examples/quickstart -url tcp://127.0.0.1:8080  # keeps serving for curl
//
// The service, "greeter", answers GET /hello/{name} and POST /echo (JSON),
// and logs the notifications published to topic "greetings". The URL may
// also come from HTTPBUS_URL.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/httpbus/httpbus/internal/natsserver"
	"github.com/httpbus/httpbus/transport"

	// Backends register their URL schemes.
	_ "github.com/httpbus/httpbus/inmem"
	_ "github.com/httpbus/httpbus/nats"
	_ "github.com/httpbus/httpbus/tcp"
)

const (
	service = "greeter"
	topic   = "greetings"
)

// newMux is an ordinary net/http application: nothing in it knows httpbus.
func newMux(notified chan<- string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello/{name}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello, %s\n", r.PathValue("name"))
	})
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		var v any
		if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
			http.Error(w, "want JSON: "+err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"you_sent": v})
	})
	// Notifications arrive with method NOTIFY and the topic as Host.
	mux.HandleFunc("NOTIFY /", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		slog.Info("notification", "topic", r.Host, "body", string(b))
		select {
		case notified <- string(b):
		default:
		}
	})
	return mux
}

func main() {
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: quickstart [-url URL]\n\nWithout -url (or HTTPBUS_URL) it starts an embedded NATS server.\n")
		flag.PrintDefaults()
	}
	rawURL := flag.String("url", os.Getenv("HTTPBUS_URL"), "backend URL (default: an embedded NATS server)")
	flag.Parse()
	if err := run(*rawURL); err != nil {
		log.Fatal(err)
	}
}

func run(rawURL string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if rawURL == "" {
		u, shutdown, err := natsserver.Start(natsserver.Config{})
		if err != nil {
			return fmt.Errorf("embedded NATS server: %w", err)
		}
		defer shutdown()
		rawURL = u
		fmt.Println("embedded NATS server at", u)
	}
	listenURL, err := withService(rawURL)
	if err != nil {
		return err
	}

	// Server side: any http.Handler, served over the backend.
	l, err := transport.Listen(ctx, listenURL)
	if err != nil {
		return err
	}
	notified := make(chan string, 1)
	srv := &transport.Server{Handler: newMux(notified)}
	go srv.Serve(l)
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	fmt.Printf("serving %q on %s\n", service, transport.Redact(rawURL))

	// Client side: a plain *http.Client; the URL host names the service.
	dialURL := rawURL
	if u, _ := url.Parse(rawURL); u.Scheme == "tcp" {
		// tcp has no broker: notifications go to the subscriber addresses
		// the caller is configured with — here, this very server.
		dialURL = rawURL + "?subscriber=" + topic + "@" + u.Host
	}
	conn, err := transport.Dial(ctx, dialURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := &http.Client{Transport: transport.NewRoundTripper(conn), Timeout: 5 * time.Second}

	calls := []struct{ method, url, body string }{
		{"GET", "http://" + service + "/hello/world", ""},
		{"POST", "http://" + service + "/echo", `{"answer":42}`},
		{transport.MethodNotify, "http://" + topic + "/", "hi, everyone"},
	}
	for _, c := range calls {
		req, err := http.NewRequestWithContext(ctx, c.method, c.url, strings.NewReader(c.body))
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Printf("%s %s → %s %s\n", c.method, c.url, resp.Status, strings.TrimSpace(string(b)))
	}
	select {
	case <-notified:
	case <-time.After(5 * time.Second):
		return errors.New("the notification did not arrive")
	}

	if strings.HasPrefix(rawURL, "tcp:") {
		u, _ := url.Parse(rawURL)
		fmt.Printf("serving until interrupted; try:\n  curl -v http://%s/hello/curl\n  curl -d '{\"a\":1}' http://%s/echo\n", u.Host, u.Host)
		<-ctx.Done()
	}
	return nil
}

// withService adds the service and topic to a backend URL for Listen.
func withService(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("bad -url %q: %v", transport.Redact(raw), err)
	}
	q := u.Query()
	q.Set("service", service)
	q.Set("topics", topic)
	u.RawQuery = q.Encode()
	return u.String(), nil
}
