package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/httpbus/httpbus/handlertest"
	"github.com/httpbus/httpbus/internal/natsserver"
	"github.com/httpbus/httpbus/transport"
)

// exchange is one call of the router and what it must answer.
type exchange struct {
	path, key   string
	status      int
	route, body string
	service     string // X-Service, set by a middleware
}

var exchanges = []exchange{
	{"/items/42", "", 200, "/items/{id}", "item 42\n", service},
	{"/users/ada/orders/7", apiKey, 200, "/users/{user}/orders/{order}", "order 7 of ada\n", service},
	{"/users/ada/orders/7", "wrong", 401, "/users/{user}/orders/{order}", "missing or wrong X-Api-Key\n", service},
	{"/nowhere", "", 404, "", "404 page not found\n", ""}, // gorilla runs middleware on matched routes only
}

// check runs every exchange through client against base ("http://catalog").
func check(t *testing.T, client *http.Client, base string) {
	t.Helper()
	for _, e := range exchanges {
		req, err := http.NewRequest("GET", base+e.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if e.key != "" {
			req.Header.Set("X-Api-Key", e.key)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", e.path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != e.status || resp.Header.Get("X-Route") != e.route || string(b) != e.body ||
			resp.Header.Get("X-Service") != e.service {
			t.Errorf("GET %s (key %q): got %d route %q service %q body %q; want %d route %q service %q body %q",
				e.path, e.key, resp.StatusCode, resp.Header.Get("X-Route"), resp.Header.Get("X-Service"), b,
				e.status, e.route, e.service, e.body)
		}
	}
}

func TestRouterHandlertest(t *testing.T) {
	bus := handlertest.NewBus(t)
	notified := make(chan string, 1)
	svc := bus.Serve(service, newRouter(notified), "prices")
	check(t, svc.Client, svc.URL)

	bus.Notify("prices", "up")
	select {
	case got := <-notified:
		if got != "prices up" {
			t.Fatalf("notification: got %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the notification did not reach the gorilla router")
	}
}

func TestRouterOverNATS(t *testing.T) {
	natsURL, stop, err := natsserver.Start(natsserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	ctx := context.Background()

	notified := make(chan string, 1)
	l, err := transport.Listen(ctx, natsURL+"?service="+service+"&topics=prices")
	if err != nil {
		t.Fatal(err)
	}
	srv := &transport.Server{Handler: newRouter(notified)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })

	conn, err := transport.Dial(ctx, natsURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := &http.Client{Transport: transport.NewRoundTripper(conn), Timeout: 5 * time.Second}
	check(t, client, "http://"+service)

	req, _ := http.NewRequest(transport.MethodNotify, "http://prices/", strings.NewReader("up"))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case got := <-notified:
		if got != "prices up" {
			t.Fatalf("notification: got %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the notification did not reach the gorilla router")
	}
}

func TestRun(t *testing.T) {
	var out strings.Builder
	if err := run(context.Background(), "", &out); err != nil {
		t.Fatal(err)
	}
	want := "GET /items/42 → 200 OK (route /items/{id}) item 42\n" +
		"GET /users/ada/orders/7 → 200 OK (route /users/{user}/orders/{order}) order 7 of ada\n" +
		"GET /users/ada/orders/7 → 401 Unauthorized (route /users/{user}/orders/{order}) missing or wrong X-Api-Key\n"
	if out.String() != want {
		t.Fatalf("run printed:\n%s\nwant:\n%s", out.String(), want)
	}
}
