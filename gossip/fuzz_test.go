package gossip

import (
	"bytes"
	"testing"
)

// FuzzDecodeMessage feeds arbitrary payloads to the decoder and the change
// validation behind the topic validator: they must never panic, never
// accept more than the cap, and what they accept must re-encode to a
// message that decodes to the same changes. The seed corpus is in
// testdata/fuzz/FuzzDecodeMessage.
func FuzzDecodeMessage(f *testing.F) {
	const maxSize = 64 << 10
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMessage(data, maxSize)
		if err != nil {
			return
		}
		if len(data) > maxSize || m.V != FormatVersion {
			t.Fatalf("accepted %d bytes of version %d", len(data), m.V)
		}
		for _, w := range m.Changes {
			c, ann, err := w.change(m.Origin, maxSize)
			if err != nil {
				continue
			}
			if ann != nil && c.Value != nil {
				t.Fatal("announced change carries a value")
			}
			if c.Validate(maxSize) != nil {
				t.Fatal("accepted change fails validation")
			}
		}
		b, err := EncodeMessage(m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		m2, err := DecodeMessage(b, 1<<30)
		if err != nil {
			t.Fatalf("decode re-encoded: %v", err)
		}
		if m2.Origin != m.Origin || len(m2.Changes) != len(m.Changes) {
			t.Fatal("re-encoded message differs")
		}
		for i := range m.Changes {
			a, b := m.Changes[i], m2.Changes[i]
			if a.Key != b.Key || !bytes.Equal(a.Value, b.Value) || a.Version != b.Version || a.Seq != b.Seq || a.HLC != b.HLC {
				t.Fatalf("change %d differs after re-encoding", i)
			}
		}
	})
}
