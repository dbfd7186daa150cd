package etcd

import (
	"bytes"
	"testing"
	"time"

	"github.com/univrs/peerstate/internal/engine"
)

func TestRecord_RoundTrip(t *testing.T) {
	now := time.Unix(0, 1_700_000_000_123_456_789)
	for _, r := range []engine.Record{
		{Key: "/k", Value: []byte("v"), Version: 1, CreatedAt: now, UpdatedAt: now},
		{Key: "/k", Value: []byte{}, Version: 7, CreatedAt: now, UpdatedAt: now.Add(time.Second)},
		{Key: "/k", Value: nil, Version: 2, CreatedAt: now, UpdatedAt: now},
		{Key: "/k", Version: 9, CreatedAt: now, UpdatedAt: now, Deleted: true},
		{Key: "/k", Value: bytes.Repeat([]byte{0, 0xff}, 5000), Version: 1 << 40, CreatedAt: time.Unix(0, 0), UpdatedAt: now},
	} {
		data, err := encodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeRecord(r.Key, 42, data)
		if err != nil {
			t.Fatalf("decode %+v: %v", r, err)
		}
		wantValue := r.Value
		switch {
		case r.Deleted:
			wantValue = nil
		case wantValue == nil:
			wantValue = []byte{} // a live value is never nil
		}
		if got.Key != r.Key || got.Version != r.Version || got.Deleted != r.Deleted || got.Revision != 42 ||
			!got.CreatedAt.Equal(r.CreatedAt) || !got.UpdatedAt.Equal(r.UpdatedAt) ||
			!bytes.Equal(got.Value, wantValue) || (got.Value == nil) != (wantValue == nil) {
			t.Fatalf("round trip of %+v gave %+v", r, got)
		}
	}
}

func TestRecord_Refused(t *testing.T) {
	good, err := encodeRecord(engine.Record{Key: "/k", Value: []byte("v"), Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"empty":        nil,
		"raw value":    []byte("not a record"),
		"truncated":    good[:len(good)-1],
		"trailing":     append(append([]byte{}, good...), 0),
		"other format": append([]byte{0x86, 0x02}, good[2:]...),
		"version 0":    {0x86, 0x01, 0x00, 0x00, 0x00, 0xf4, 0x40},
		"short array":  {0x85, 0x01, 0x01, 0x00, 0x00, 0xf4},
	} {
		if _, err := decodeRecord("/k", 1, data); err == nil {
			t.Errorf("%s: decoded %x", name, data)
		}
	}
}

// FuzzDecodeRecord checks that any etcd value either is refused or decodes
// to a record that encodes back to the same record.
func FuzzDecodeRecord(f *testing.F) {
	now := time.Unix(0, 1_700_000_000_000_000_000)
	for _, r := range []engine.Record{
		{Key: "/k", Value: []byte("value"), Version: 3, CreatedAt: now, UpdatedAt: now},
		{Key: "/k", Version: 4, CreatedAt: now, UpdatedAt: now, Deleted: true},
	} {
		data, err := encodeRecord(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("not a record"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeRecord("/k", 1, data)
		if err != nil {
			return
		}
		if r.Version == 0 || (!r.Deleted && r.Value == nil) || (r.Deleted && r.Value != nil) {
			t.Fatalf("decoded an invalid record %+v", r)
		}
		again, err := encodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := decodeRecord("/k", 1, again)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if r2.Version != r.Version || r2.Deleted != r.Deleted || !bytes.Equal(r2.Value, r.Value) ||
			!r2.CreatedAt.Equal(r.CreatedAt) || !r2.UpdatedAt.Equal(r.UpdatedAt) {
			t.Fatalf("round trip changed %+v to %+v", r, r2)
		}
	})
}
