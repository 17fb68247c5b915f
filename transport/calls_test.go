package transport

import (
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestCallsAnswer(t *testing.T) {
	var c Calls[string]
	id1, ch1 := c.Start()
	id2, ch2 := c.Start()
	if id1 == id2 {
		t.Fatalf("two calls got one id %q", id1)
	}
	if c.Len() != 2 {
		t.Fatalf("Len = %d, want 2", c.Len())
	}
	if !c.Answer(id2, "two") {
		t.Fatal("Answer of a call in flight reported false")
	}
	if c.Answer(id2, "again") {
		t.Fatal("a second Answer to one call reported true")
	}
	if got := <-ch2; got != "two" {
		t.Fatalf("answer = %q, want two", got)
	}
	select {
	case v := <-ch1:
		t.Fatalf("call %s answered with %q by another call's reply", id1, v)
	default:
	}
	c.Done(id1)
	if c.Answer(id1, "late") {
		t.Fatal("Answer after Done reported true")
	}
	if c.Len() != 0 {
		t.Fatalf("Len = %d after Done and Answer, want 0", c.Len())
	}
	if c.Answer("unknown", "x") {
		t.Fatal("Answer of an unknown id reported true")
	}
}

func TestCallsPrefix(t *testing.T) {
	// A short prefix, and one longer than Start's stack buffer.
	for _, prefix := range []string{"abc.", strings.Repeat("p", 60) + "."} {
		c := Calls[int]{Prefix: prefix}
		id1, _ := c.Start()
		id2, _ := c.Start()
		if id1 != prefix+"1" || id2 != prefix+"2" {
			t.Errorf("ids %q and %q, want %q then %q", id1, id2, prefix+"1", prefix+"2")
		}
		c.Done(id1)
		c.Done(id2)
	}
}

// TestCallsStartAllocs: a call costs its id and its answer channel, and
// nothing else (the id is built in one allocation).
func TestCallsStartAllocs(t *testing.T) {
	c := Calls[int]{Prefix: "abcdef-"}
	id, _ := c.Start() // the table's map, once
	c.Done(id)
	if n := testing.AllocsPerRun(100, func() {
		id, _ := c.Start()
		c.Done(id)
	}); n > 2 {
		t.Fatalf("Start and Done allocate %v times, want at most 2 (the id and the channel)", n)
	}
}

func TestCallsAnswerAll(t *testing.T) {
	var c Calls[error]
	lost := errors.New("connection lost")
	var chans []<-chan error
	for range 3 {
		_, ch := c.Start()
		chans = append(chans, ch)
	}
	if n := c.AnswerAll(lost); n != 3 {
		t.Fatalf("AnswerAll answered %d calls, want 3", n)
	}
	for i, ch := range chans {
		if err := <-ch; err != lost {
			t.Fatalf("call %d: %v, want %v", i, err, lost)
		}
	}
	id, ch := c.Start() // the table is usable afterwards
	if !c.Answer(id, nil) || <-ch != nil {
		t.Fatal("a call started after AnswerAll was not answered")
	}
}

func TestCallsConcurrent(t *testing.T) {
	var c Calls[string]
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 200 {
				id, ch := c.Start()
				go c.Answer(id, id)
				if got := <-ch; got != id {
					t.Errorf("call %s got %s", id, got)
				}
				c.Done(id)
			}
		}()
	}
	wg.Wait()
	if c.Len() != 0 {
		t.Fatalf("Len = %d, want 0", c.Len())
	}
}
