package topiclog_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/univrs/peerstate/topiclog"
)

// FuzzParsePosition: any string either parses to a time and writer, or is
// ErrBadPosition; never a panic.
func FuzzParsePosition(f *testing.F) {
	for _, s := range []string{"", "0000018f3a2b4c5d.w1", "zzzzzzzzzzzzzzzz.w", ".", "0000000000000000.", "ffffffffffffffff.a.b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ts, w, err := topiclog.ParsePosition(s)
		if err != nil {
			return
		}
		if w == "" {
			t.Fatalf("%q parsed to an empty writer", s)
		}
		if back := fmt.Sprintf("%016x.%s", uint64(ts.UnixNano()), w); !strings.EqualFold(back, s) {
			t.Fatalf("%q parsed to %v %q, which formats as %q", s, ts, w, back)
		}
	})
}
