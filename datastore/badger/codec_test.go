package badger

import (
	"bytes"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/internal/engine"
)

func TestCodec_RecordRoundTrip(t *testing.T) {
	now := engine.Timestamp(time.Now())
	for _, r := range []engine.Record{
		{Key: "/a", Value: []byte("v"), Version: 1, CreatedAt: now, UpdatedAt: now, Revision: 1},
		{Key: "/a", Value: []byte{}, Version: 7, CreatedAt: now.Add(-time.Hour), UpdatedAt: now, Revision: 1 << 40},
		{Key: "/a", Version: 8, CreatedAt: now, UpdatedAt: now, Revision: 9, Deleted: true},
		{Key: "/old", Value: []byte("x"), Version: 1, CreatedAt: time.Unix(0, -5), UpdatedAt: time.Unix(0, 0), Revision: 2},
	} {
		got, err := decodeRecord(r.Key, encodeRecord(r))
		if err != nil {
			t.Fatalf("decode %+v: %v", r, err)
		}
		if got.Key != r.Key || !bytes.Equal(got.Value, r.Value) || got.Version != r.Version || got.Revision != r.Revision ||
			got.Deleted != r.Deleted || !got.CreatedAt.Equal(r.CreatedAt) || !got.UpdatedAt.Equal(r.UpdatedAt) {
			t.Fatalf("round trip %+v -> %+v", r, got)
		}
		if r.Deleted != (got.Value == nil) {
			t.Fatalf("value nil-ness: %+v -> %+v", r, got)
		}
	}
}

func TestCodec_EventRoundTrip(t *testing.T) {
	for _, ev := range []datastore.Event{
		{Type: datastore.Created, Key: "/a", NewValue: []byte("new"), Version: 1, Revision: 3},
		{Type: datastore.Updated, Key: "/a/b", NewValue: []byte{}, Version: 2, Revision: 4},
		{Type: datastore.Deleted, Key: "/a", Version: 3, Revision: 5},
	} {
		got, err := decodeEvent(ev.Revision, encodeEvent(ev))
		if err != nil {
			t.Fatalf("decode %+v: %v", ev, err)
		}
		if got.Type != ev.Type || got.Key != ev.Key || !bytes.Equal(got.NewValue, ev.NewValue) || got.Version != ev.Version || got.Revision != ev.Revision {
			t.Fatalf("round trip %+v -> %+v", ev, got)
		}
	}
}

func TestCodec_Keys(t *testing.T) {
	k := changeKey(1<<33+5, 7, partOldValue)
	rev, idx, part, err := parseChangeKey(k)
	if err != nil || rev != 1<<33+5 || idx != 7 || part != partOldValue {
		t.Fatalf("parseChangeKey = %d %d %d %v", rev, idx, part, err)
	}
	// Change-log keys sort by revision, then index, then part.
	if !(bytes.Compare(changeKey(1, 9, 1), changeKey(2, 0, 0)) < 0 &&
		bytes.Compare(changeKey(2, 0, 1), changeKey(2, 1, 0)) < 0 &&
		bytes.Compare(changeRevKey(2), changeKey(2, 0, 0)) < 0) {
		t.Fatal("change-log keys out of order")
	}
	if _, _, _, err := parseChangeKey(recordKey("/a")); err == nil {
		t.Fatal("parsed a record key as a change-log key")
	}
}

// The decoders read bytes from disk: whatever they get, they return a
// record (event) or an error, never panic, and what they accept encodes to
// bytes that decode to the same record (event).
func FuzzDecodeRecord(f *testing.F) {
	now := time.Unix(1700000000, 123)
	f.Add(encodeRecord(engine.Record{Key: "/a", Value: []byte("v"), Version: 1, CreatedAt: now, UpdatedAt: now, Revision: 1}))
	f.Add(encodeRecord(engine.Record{Key: "/a", Version: 2, CreatedAt: now, UpdatedAt: now, Revision: 2, Deleted: true}))
	f.Add([]byte{})
	f.Add([]byte{formatVersion, 0, 0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord("/k", b)
		if err != nil {
			return
		}
		again, err := decodeRecord("/k", encodeRecord(r))
		if err != nil || again.Version != r.Version || again.Revision != r.Revision || again.Deleted != r.Deleted ||
			!again.CreatedAt.Equal(r.CreatedAt) || !again.UpdatedAt.Equal(r.UpdatedAt) ||
			!bytes.Equal(again.Value, r.Value) || (again.Value == nil) != (r.Value == nil) {
			t.Fatalf("%+v re-decoded as %+v, %v", r, again, err)
		}
	})
}

func FuzzDecodeEvent(f *testing.F) {
	f.Add(encodeEvent(datastore.Event{Type: datastore.Created, Key: "/a", NewValue: []byte("v"), Version: 1}))
	f.Add(encodeEvent(datastore.Event{Type: datastore.Deleted, Key: "/a/b", Version: 3}))
	f.Add([]byte{formatVersion, byte(datastore.Updated), 1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := decodeEvent(1, b)
		if err != nil {
			return
		}
		again, err := decodeEvent(1, encodeEvent(ev))
		if err != nil || again.Type != ev.Type || again.Key != ev.Key || again.Version != ev.Version ||
			!bytes.Equal(again.NewValue, ev.NewValue) || (again.NewValue == nil) != (ev.NewValue == nil) {
			t.Fatalf("%+v re-decoded as %+v, %v", ev, again, err)
		}
	})
}
