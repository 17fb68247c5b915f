package handlertest_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/httpbus/httpbus/handlertest"
)

// newMux is the service under test: a greeting, and an order endpoint that
// publishes a notification with the client it is given.
func newMux(client *http.Client) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello/{name}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello, %s\n", r.PathValue("name"))
	})
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req, _ := http.NewRequestWithContext(r.Context(), "NOTIFY", "http://orders.created/", strings.NewReader(string(body)))
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		resp.Body.Close()
		w.WriteHeader(http.StatusCreated)
	})
	return mux
}

// exampleT stands in for the *testing.T a real test has.
type exampleT struct{ cleanups []func() }

func (t *exampleT) Helper()                   {}
func (t *exampleT) Cleanup(f func())          { t.cleanups = append(t.cleanups, f) }
func (t *exampleT) Log(args ...any)           {}
func (t *exampleT) Errorf(f string, a ...any) { fmt.Printf(f+"\n", a...) }
func (t *exampleT) Fatal(a ...any)            { panic(fmt.Sprint(a...)) }
func (t *exampleT) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
func (t *exampleT) done() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}

func Example() {
	t := &exampleT{} // in a test: the *testing.T
	defer t.done()

	svc := handlertest.New(t, newMux(nil))
	resp, err := svc.Client.Get(svc.URL + "/hello/ada")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(resp.Status, " ", string(body))
	// Output: 200 OK hello, ada
}

func ExampleBus_Capture() {
	t := &exampleT{}
	defer t.done()

	bus := handlertest.NewBus(t)
	created := bus.Capture("orders.created")
	svc := bus.Serve("orders", newMux(bus.Client))
	resp, err := svc.Client.Post(svc.URL+"/orders", "application/json", strings.NewReader(`{"item":42}`))
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	for _, n := range created.Wait(t, 1, 5*time.Second) {
		fmt.Println(resp.Status, "then NOTIFY", n.Topic, string(n.Body))
	}
	// Output: 201 Created then NOTIFY orders.created {"item":42}
}

func TestExample(t *testing.T) {
	svc := handlertest.New(t, newMux(nil))
	resp, err := svc.Client.Get(svc.URL + "/hello/ada")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello, ada\n" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
}

func TestCapturePublishedNotifications(t *testing.T) {
	bus := handlertest.NewBus(t)
	created := bus.Capture("orders.created")
	svc := bus.Serve("orders", newMux(bus.Client))
	resp, err := svc.Client.Post(svc.URL+"/orders", "application/json", strings.NewReader(`{"item":42}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /orders: %s", resp.Status)
	}
	got := created.Wait(t, 1, 5*time.Second)
	if len(got) != 1 || got[0].Topic != "orders.created" || string(got[0].Body) != `{"item":42}` {
		t.Fatalf("captured %+v", got)
	}
}

func TestNotifyReachesHandler(t *testing.T) {
	seen := make(chan string, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen <- r.Method + " " + r.Host + " " + string(b)
	})
	svc := handlertest.New(t, h, "prices")
	svc.Notify("prices", "up")
	select {
	case got := <-seen:
		if got != "NOTIFY prices up" {
			t.Fatalf("handler saw %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("notification did not reach the handler")
	}
}
