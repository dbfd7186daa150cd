package replica

import (
	"bytes"
	"testing"
)

// FuzzDecodeEnvelope checks that a stored envelope never panics the decoder
// and that whatever decodes encodes back to the same change.
func FuzzDecodeEnvelope(f *testing.F) {
	for _, c := range []Change{
		{Key: "/k", Value: []byte("v"), Version: 1, HLC: 1 << 16, Origin: "p", Seq: 1, CreatedAt: 1, UpdatedAt: 2},
		{Key: "/k", Deleted: true, Version: 7, HLC: 9 << 16, Origin: "q", Seq: 3},
		{Key: "/k", Value: []byte("v"), Version: 2, HLC: 2 << 16, Origin: "p", Seq: 4, CreatedAt: 1, UpdatedAt: 2, ExpiresAt: 5},
		{Key: "/k", Value: []byte("v"), Version: 2, HLC: 2 << 16, Origin: "p", Seq: 4, CreatedAt: 1, UpdatedAt: 2, ExpiresAt: 5, expired: true},
	} {
		b, err := encodeEnvelope(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeEnvelope("/k", b)
		if err != nil {
			return
		}
		again, err := encodeEnvelope(c)
		if err != nil {
			t.Fatal(err)
		}
		d, err := decodeEnvelope("/k", again)
		if err != nil || d.Version != c.Version || d.HLC != c.HLC || d.Origin != c.Origin ||
			d.Seq != c.Seq || d.Deleted != c.Deleted || !bytes.Equal(d.Value, c.Value) ||
			d.ExpiresAt != c.ExpiresAt || d.expired != c.expired {
			t.Fatalf("round trip changed %+v into %+v (%v)", c, d, err)
		}
	})
}
