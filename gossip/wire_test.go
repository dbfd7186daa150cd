package gossip

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/replica"
)

const testOrigin = "12D3KooWExampleOrigin"

func testChange(key string, value []byte, seq uint64) replica.Change {
	return replica.Change{
		Key: key, Value: value, Version: seq, HLC: replica.HLC(seq << 16), Origin: testOrigin, Gen: 1, Seq: seq,
		CreatedAt: 1_700_000_000_000_000_000, UpdatedAt: 1_700_000_000_000_000_000 + int64(seq),
	}
}

// A change survives the wire: inline, deleted, empty, and announced.
func TestWireChange_RoundTrip(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 100)
	del := testChange("/a/deleted", nil, 3)
	del.Deleted = true
	for _, c := range []replica.Change{
		testChange("/a/b", []byte("value"), 1),
		testChange("/a/empty", []byte{}, 2),
		del,
		testChange("/a/big", big, 4),
	} {
		msg := Message{V: FormatVersion, Origin: testOrigin, Changes: []WireChange{toWire(c, 64, false)}}
		b, err := EncodeMessage(msg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeMessage(b, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		back, ann, err := got.Changes[0].change(got.Origin, 1<<20)
		if err != nil {
			t.Fatalf("%s: %v", c.Key, err)
		}
		if len(c.Value) > 64 {
			if ann == nil || ann.Size != uint64(len(big)) || ann.Hash != sha256.Sum256(big) || back.Value != nil {
				t.Fatalf("announcement %+v, value %q", ann, back.Value)
			}
			back.Value = c.Value
		} else if ann != nil {
			t.Fatalf("%s announced", c.Key)
		}
		if !sameChange(back, c) || !bytes.Equal(back.Value, c.Value) || (back.Value == nil) != (c.Value == nil) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", back, c)
		}
	}
}

func TestDecodeMessage_Limits(t *testing.T) {
	ok, _ := EncodeMessage(Message{V: FormatVersion, Origin: testOrigin})
	for name, tc := range map[string]struct {
		data []byte
		max  int
		want error
	}{
		"over the cap":       {bytes.Repeat([]byte{0}, 101), 100, ErrMessageTooLarge},
		"empty":              {nil, 100, ErrMalformed},
		"huge array claimed": {[]byte{0xa1, 0x03, 0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 100, ErrMalformed},
		"indefinite length":  {[]byte{0xa1, 0x03, 0x9f, 0xff}, 100, ErrMalformed},
		"deep nesting":       {append(bytes.Repeat([]byte{0x81}, 40), 0x00), 100, ErrMalformed},
		"version 0":          {[]byte{0xa0}, 100, ErrUnknownVersion},
		"valid":              {ok, 100, nil},
	} {
		_, err := DecodeMessage(tc.data, tc.max)
		if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

func TestWireChange_Invalid(t *testing.T) {
	good := toWire(testChange("/k", []byte("v"), 1), -1, false)
	for name, tc := range map[string]struct {
		mod  func(*WireChange)
		want error
	}{
		"other origin":      {func(w *WireChange) { w.Origin = "someone-else" }, ErrForgedOrigin},
		"bad key":           {func(w *WireChange) { w.Key = "k" }, datastore.ErrInvalidKey},
		"seq 0":             {func(w *WireChange) { w.Seq = 0 }, replica.ErrInvalidChange},
		"delete with value": {func(w *WireChange) { w.Deleted = true }, replica.ErrInvalidChange},
		"short hash":        {func(w *WireChange) { w.Value, w.ValueSize, w.ValueHash = nil, 10, []byte{1} }, replica.ErrInvalidChange},
		"hash and value":    {func(w *WireChange) { w.ValueSize, w.ValueHash = 10, make([]byte, 32) }, replica.ErrInvalidChange},
		"too large":         {func(w *WireChange) { w.Value = make([]byte, 11) }, datastore.ErrValueTooLarge},
		"announced too big": {func(w *WireChange) { w.Value, w.ValueSize, w.ValueHash = nil, 11, make([]byte, 32) }, datastore.ErrValueTooLarge},
	} {
		w := good
		tc.mod(&w)
		if _, _, err := w.change(testOrigin, 10); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}

// The packer keeps frames under budget, and a lone oversized change gets a
// frame of its own.
func TestPacker_Budget(t *testing.T) {
	const budget = 4096
	p := newPacker(budget)
	var frames [][]rawMessage
	for i := range 200 {
		size := 100
		if i == 50 {
			size = 10_000
		}
		c := testChange(fmt.Sprintf("/k/%03d", i), bytes.Repeat([]byte("v"), size), uint64(i+1))
		c.Origin = fmt.Sprintf("origin-%d", i%3)
		enc, err := encodeChange(toWire(c, -1, false))
		if err != nil {
			t.Fatal(err)
		}
		if !p.fits(c.Origin, len(enc)) {
			frames = append(frames, p.take())
		}
		p.add(c.Origin, enc)
	}
	frames = append(frames, p.take())
	total := 0
	for _, f := range frames {
		b, err := marshal(rawSyncFrame{V: FormatVersion, Groups: f})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, g := range f {
			n += len(g.Changes)
		}
		total += n
		if len(b) > budget && n > 1 {
			t.Fatalf("frame of %d changes is %d bytes > %d", n, len(b), budget)
		}
		var back syncFrame
		if err := unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
	}
	if total != 200 {
		t.Fatalf("%d changes packed", total)
	}
}

// readFrame refuses frames over the limit and does not trust a length the
// bytes do not back.
func TestReadFrame(t *testing.T) {
	var buf bytes.Buffer
	if _, err := writeFrame(&buf, syncRequest{V: 1, Have: map[string]uint64{"a": 1}}); err != nil {
		t.Fatal(err)
	}
	frame := buf.Bytes()
	var req syncRequest
	if err := readFrame(bufio.NewReader(bytes.NewReader(frame)), 1<<10, &req); err != nil || req.Have["a"] != 1 {
		t.Fatalf("read back: %+v %v", req, err)
	}
	if err := readFrame(bufio.NewReader(bytes.NewReader(frame)), 3, &req); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("over the limit: %v", err)
	}
	// Claims 1 GiB, sends 3 bytes.
	lie := []byte{0x80, 0x80, 0x80, 0x80, 0x04, 1, 2, 3}
	if err := readFrame(bufio.NewReader(bytes.NewReader(lie)), 2<<30, &req); err == nil {
		t.Fatal("short frame accepted")
	}
}

func TestJitter(t *testing.T) {
	for _, r := range []float64{0, 0.25, 0.5, 0.999} {
		d := jitter(10*time.Second, 0.2, r)
		if d < 8*time.Second || d > 12*time.Second {
			t.Errorf("jitter(r=%v) = %v", r, d)
		}
	}
	if d := jitter(10*time.Second, 0.2, 0.5); d != 10*time.Second {
		t.Errorf("mid jitter %v", d)
	}
}
