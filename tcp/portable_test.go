package tcp_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/httpbus/httpbus/internal/natsserver"
	_ "github.com/httpbus/httpbus/nats"
	"github.com/httpbus/httpbus/tcp"
	"github.com/httpbus/httpbus/transport"
)

// program is a program that picks its backend by URL: it serves services
// alpha and beta from listenURL(service) and calls them (and a service
// nobody serves) through dialURL(listeners), the URL the listeners make
// (tcp's names their ports, taken at Listen: no port picked beforehand that
// another process could take meanwhile). It runs unchanged on nats and tcp.
func program(t *testing.T, listenURL func(service string) string, dialURL func(map[string]transport.Listener) string) {
	ctx := context.Background()
	listeners := map[string]transport.Listener{}
	for _, svc := range []string{"alpha", "beta"} {
		l, err := transport.Listen(ctx, listenURL(svc))
		if err != nil {
			t.Fatal(err)
		}
		listeners[svc] = l
		srv := &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, svc)
		})}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Shutdown(context.Background()) })
	}
	conn, err := transport.Dial(ctx, dialURL(listeners))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := &http.Client{Transport: transport.NewRoundTripper(conn), Timeout: 5 * time.Second}
	for _, c := range []struct {
		service string
		status  int
		body    string
	}{{"alpha", 200, "alpha"}, {"beta", 200, "beta"}, {"gamma", 503, ""}} {
		start := time.Now()
		resp, err := client.Get("http://" + c.service + "/who")
		if err != nil {
			t.Fatalf("GET %s: %v", c.service, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || (c.body != "" && string(b) != c.body) {
			t.Errorf("GET http://%s/who: %d %q, want %d %q", c.service, resp.StatusCode, b, c.status, c.body)
		}
		if c.status == 503 && (resp.Header.Get(transport.HeaderError) == "" || time.Since(start) > time.Second) {
			t.Errorf("GET http://%s/who: Httpbus-Error %q after %v, want one at once", c.service, resp.Header.Get(transport.HeaderError), time.Since(start))
		}
	}
}

func TestPortableByURLNATS(t *testing.T) {
	natsURL, stop, err := natsserver.Start(natsserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	program(t, func(svc string) string { return natsURL + "?service=" + svc },
		func(map[string]transport.Listener) string { return natsURL })
}

func TestPortableByURLTCP(t *testing.T) {
	program(t,
		func(svc string) string { return "tcp://127.0.0.1:0?service=" + svc },
		func(ls map[string]transport.Listener) string {
			addr := func(svc string) string { return ls[svc].(*tcp.Listener).Addr().String() }
			return "tcp://?service=alpha@" + addr("alpha") + "&service=beta@" + addr("beta")
		})
	t.Cleanup(func() { http.DefaultTransport.(*http.Transport).CloseIdleConnections() })
}

// A tcp listener refuses a request for a service it does not serve, as a
// broker with no server of that service would; addresses as Host (curl)
// are served.
func TestListenerRefusesOtherService(t *testing.T) {
	ctx := context.Background()
	l, err := transport.Listen(ctx, "tcp://127.0.0.1:0?service=alpha")
	if err != nil {
		t.Fatal(err)
	}
	srv := &transport.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "alpha")
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	addr := l.(*tcp.Listener).Addr().String()

	conn, err := transport.Dial(ctx, "tcp://"+addr) // every service to alpha's address
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := transport.NewClient(conn)
	for _, c := range []struct {
		url    string
		status int
	}{
		{"http://alpha/", 200},
		{"http://ALPHA/", 200},
		{"http://beta/", 503},
	} {
		resp, err := client.Get(c.url)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("GET %s: %d %q, want %d", c.url, resp.StatusCode, b, c.status)
		}
		if c.status == 503 && !strings.Contains(resp.Header.Get(transport.HeaderError), `serves "alpha", not "beta"`) {
			t.Errorf("GET %s: Httpbus-Error %q", c.url, resp.Header.Get(transport.HeaderError))
		}
	}
	// A stock client with the address as Host (curl) is served.
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	for _, host := range []string{addr, "localhost:" + addr[strings.LastIndex(addr, ":")+1:]} {
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req.Host = host
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("Host %s: %s, want 200", host, resp.Status)
		}
	}
}

func TestDialURLServiceMapErrors(t *testing.T) {
	for _, u := range []string{
		"tcp://?service=alpha",
		"tcp://?service=@127.0.0.1:1",
		"tcp://?service=alpha@127.0.0.1:1&service=alpha@127.0.0.1:2",
		"tcp://?service=alpha@127.0.0.1:1&sevrice=beta@127.0.0.1:2",
	} {
		if c, err := transport.Dial(context.Background(), u); err == nil {
			c.Close()
			t.Errorf("Dial(%q) succeeded, want an error", u)
		}
	}
}
