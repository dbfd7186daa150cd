package replica_test

import (
	"context"
	"slices"
	"testing"

	"go.uber.org/goleak"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/storetest"
	"github.com/univrs/peerstate/replica"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A replica is a datastore.Store like any other: it passes the conformance
// suite over the reference backend.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) datastore.Store {
		r, err := replica.New(context.Background(), memory.New(), replica.Config{Key: keyFor("peerA")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	})
}

func TestIntersectPrefixes(t *testing.T) {
	for _, tc := range []struct {
		a, b, want []string
		overlap    bool
	}{
		{nil, nil, nil, true},
		{nil, []string{"/x"}, []string{"/x/"}, true},
		{[]string{"/"}, []string{"/x/"}, []string{"/x/"}, true},
		{[]string{"/a/"}, []string{"/a/b"}, []string{"/a/b/"}, true},
		{[]string{"/a/b/", "/c/"}, []string{"/a/"}, []string{"/a/b/"}, true},
		{[]string{"/a/"}, []string{"/ab/"}, nil, false},
		{[]string{"/a", "/b"}, []string{"/b/c", "/a"}, []string{"/a/", "/b/c/"}, true},
	} {
		got, overlap := replica.IntersectPrefixes(tc.a, tc.b)
		if overlap != tc.overlap || !slices.Equal(got, tc.want) {
			t.Errorf("intersect(%q, %q) = %q %v, want %q %v", tc.a, tc.b, got, overlap, tc.want, tc.overlap)
		}
	}
}
