package api_test

import (
	"fmt"
	"testing"

	"github.com/univrs/peerstate/datastore"
)

// BenchmarkAPI compares, side by side, store calls made directly on a
// memory store and the same calls made through Client and Server over
// loopback HTTP: the cost of the API itself.
func BenchmarkAPI(b *testing.B) {
	value := make([]byte, 256)
	for _, via := range []string{"direct", "http"} {
		e := newEnv(b, envOptions{})
		var s datastore.Store = e.store
		if via == "http" {
			s = e.client
		}
		b.Run(via+"/set", func(b *testing.B) {
			ctx := b.Context()
			for i := 0; b.Loop(); i++ {
				if _, err := s.Set(ctx, fmt.Sprintf("/bench/%d", i%1000), value); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(via+"/get", func(b *testing.B) {
			ctx := b.Context()
			for i := 0; b.Loop(); i++ {
				if _, err := s.Get(ctx, fmt.Sprintf("/bench/%d", i%1000)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(via+"/set-parallel", func(b *testing.B) {
			ctx := b.Context()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					i++
					if _, err := s.Set(ctx, fmt.Sprintf("/bench/%d", i%1000), value); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		b.Run(via+"/watch-delivery", func(b *testing.B) {
			ctx := b.Context()
			w, err := s.Watch(ctx, "/wb/")
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			for b.Loop() {
				if _, err := s.Set(ctx, "/wb/k", value); err != nil {
					b.Fatal(err)
				}
				<-w.Events()
			}
		})
	}
}
