package transport

import (
	"net/http"
	"slices"
	"testing"
	"time"
)

func TestEachHeader(t *testing.T) {
	dl := time.UnixMilli(1796070687611)
	for _, c := range []struct {
		name string
		m    Message
		want []string // name=value, sorted
	}{
		{"empty", Message{}, []string{"Httpbus-Version=" + Version}},
		{"deadline", Message{Deadline: dl}, []string{"Httpbus-Deadline=1796070687611", "Httpbus-Version=" + Version}},
		{"headers", Message{Header: http.Header{
			"Content-Type":    {"text/plain"},
			"Httpbus-Stream":  {"a.1"},
			"Httpbus-Version": {Version2},
			"X-Two":           {"1", "2"},
		}}, []string{"Httpbus-Stream=a.1", "Httpbus-Version=" + Version2, "X-Two=1", "X-Two=2"}},
	} {
		var got []string
		EachHeader(&c.m, func(k, v string) { got = append(got, k+"="+v) })
		slices.Sort(got)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
