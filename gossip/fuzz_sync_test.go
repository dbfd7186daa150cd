package gossip

import (
	"bufio"
	"bytes"
	"reflect"
	"testing"
)

// FuzzReadSyncFrame feeds arbitrary streams to the catch-up frame reader,
// as a request (the responder's side) and as answer frames (the
// initiator's side): it must never panic, never accept a frame over the
// limit, and every frame it accepts must re-encode to one that reads back
// the same. The seed corpus is in testdata/fuzz/FuzzReadSyncFrame.
func FuzzReadSyncFrame(f *testing.F) {
	const limit = 1 << 16
	for _, v := range []any{
		syncRequest{V: 1, Have: map[string]uint64{"peerA": 3}, Prefixes: []string{"/app/"}},
		syncFrame{V: 1, Done: true, Vector: map[string]uint64{"peerA": 7}},
		syncFrame{V: 1, Groups: []Message{{V: FormatVersion, Origin: "peerA", Changes: []WireChange{{Key: "/k", Value: []byte("v"), Version: 1, Seq: 1, HLC: 1 << 16}}}}},
		syncFrame{V: 1, Err: "busy"},
	} {
		var buf bytes.Buffer
		if _, err := writeFrame(&buf, v); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip(t, data, limit, func() any { return &syncRequest{} })
		roundTrip(t, data, limit, func() any { return &syncFrame{} })
	})
}

// roundTrip reads frames into fresh values until the stream ends or fails.
func roundTrip(t *testing.T, data []byte, limit int, fresh func() any) {
	r := bufio.NewReader(bytes.NewReader(data))
	read := 0
	for {
		v := fresh()
		if err := readFrame(r, limit, v); err != nil {
			return // io.EOF or a refused frame: the stream ends there
		}
		var buf bytes.Buffer
		n, err := writeFrame(&buf, reflect.ValueOf(v).Elem().Interface())
		if err != nil {
			t.Fatalf("re-encode %+v: %v", v, err)
		}
		if n > limit+10 {
			t.Fatalf("accepted a frame that re-encodes to %d bytes > %d", n, limit)
		}
		w := fresh()
		if err := readFrame(bufio.NewReader(&buf), limit+10, w); err != nil {
			t.Fatalf("read re-encoded frame: %v", err)
		}
		if !reflect.DeepEqual(reflect.ValueOf(v).Elem().Interface(), reflect.ValueOf(w).Elem().Interface()) {
			t.Fatalf("frame differs after re-encoding:\n %+v\n %+v", v, w)
		}
		if read++; read > 64 {
			return
		}
	}
}
