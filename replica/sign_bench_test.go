package replica_test

import (
	"context"
	"testing"

	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/replica"
)

// The cost of signing and checking one change (256-byte value): a local
// write signs once; every receiver checks once per process (pubsub's
// validator and Apply share the check).
func BenchmarkChange_SignVerify(b *testing.B) {
	key := keyFor("bench")
	c := replica.Change{Key: "/bench/key", Value: make([]byte, 256), Version: 1, HLC: 1 << 40,
		Origin: idFor("bench"), Gen: 1, Seq: 1, CreatedAt: 1, UpdatedAt: 1}
	b.Run("sign", func(b *testing.B) {
		for b.Loop() {
			if err := replica.SignWith(key, &c); err != nil {
				b.Fatal(err)
			}
		}
	})
	r, err := replica.New(context.Background(), memory.New(), replica.Config{Key: keyFor("verifier")})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	// Distinct changes, signed beforehand: each check is a real one.
	presign := func(b *testing.B, n int) []replica.Change {
		out := make([]replica.Change, n)
		for j := range out {
			out[j] = c
			out[j].Seq = c.Seq + uint64(j) + 1
			if err := replica.SignWith(key, &out[j]); err != nil {
				b.Fatal(err)
			}
		}
		c.Seq += uint64(n)
		return out
	}
	b.Run("verify", func(b *testing.B) {
		cs := presign(b, b.N)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := r.VerifyChange(cs[i]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("verify-parallel-256", func(b *testing.B) {
		cs := presign(b, b.N*256)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			for _, err := range r.VerifyChanges(cs[i*256 : (i+1)*256]) {
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*256)/1e3, "µs/change")
	})
}
