package storetest

import (
	"fmt"
	"slices"
	"testing"

	"github.com/univrs/peerstate/datastore"
)

func testListOrderAndPrefix(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	keys := []string{"/a", "/a/b", "/a/b/c", "/a-x", "/a.y", "/ab", "/A", "/b", "/a/ü", "/a/z", "/a/Z", "/a/0"}
	for _, k := range keys {
		mustSet(t, s, k, "v"+k)
	}
	mustSet(t, s, "/a/gone", "x")
	if err := s.Delete(ctx, "/a/gone"); err != nil {
		t.Fatal(err)
	}
	sorted := slices.Clone(keys)
	slices.Sort(sorted) // Go orders strings by bytes
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"", sorted},
		{"/", sorted},
		{"/a", []string{"/a", "/a/0", "/a/Z", "/a/b", "/a/b/c", "/a/z", "/a/ü"}},
		{"/a/", []string{"/a/0", "/a/Z", "/a/b", "/a/b/c", "/a/z", "/a/ü"}},
		{"/a/b", []string{"/a/b", "/a/b/c"}},
		{"/ab", []string{"/ab"}},
		{"/nothing/", nil},
	} {
		got, _ := listAll(t, s, tc.prefix)
		if !slices.Equal(got, tc.want) {
			t.Errorf("List(%q) = %q, want %q", tc.prefix, got, tc.want)
		}
	}
	p, err := s.List(ctx, "/a/", datastore.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range p.Entries {
		want := mustGet(t, s, e.Key)
		if string(e.Value) != "v"+e.Key || e.Version != want.Version || e.Revision != want.Revision ||
			!e.CreatedAt.Equal(want.CreatedAt) || !e.UpdatedAt.Equal(want.UpdatedAt) {
			t.Fatalf("List entry %+v differs from Get %+v", e, want)
		}
	}
	ko, err := s.List(ctx, "/a/", datastore.ListOptions{KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ko.Entries {
		if e.Value != nil || e.Version == 0 {
			t.Fatalf("KeysOnly entry %+v: want nil value and a version", e)
		}
	}
}

func testListPagination(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	var want []string
	for i := range 25 {
		k := fmt.Sprintf("/p/%03d", i)
		want = append(want, k)
		mustSet(t, s, k, "v")
	}
	mustSet(t, s, "/q", "outside")
	rev := revision(t, s)
	var got []string
	opts := datastore.ListOptions{Limit: 10}
	pages := 0
	for {
		p, err := s.List(ctx, "/p/", opts)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if p.Revision != rev {
			t.Fatalf("page read at revision %d, want %d", p.Revision, rev)
		}
		if len(p.Entries) > 10 {
			t.Fatalf("page of %d entries, limit 10", len(p.Entries))
		}
		for _, e := range p.Entries {
			got = append(got, e.Key)
		}
		if !p.More {
			if p.Next != "" && len(p.Entries) == 0 {
				t.Fatalf("last page has Next %q", p.Next)
			}
			break
		}
		if p.Next != p.Entries[len(p.Entries)-1].Key {
			t.Fatalf("Next = %q, want the page's last key %q", p.Next, p.Entries[len(p.Entries)-1].Key)
		}
		opts.After = p.Next
	}
	if pages != 3 || !slices.Equal(got, want) {
		t.Fatalf("paged %d times over %q, want 3 pages over %q", pages, got, want)
	}
	// An exact page is not followed by an empty one claiming More.
	p, err := s.List(ctx, "/p/", datastore.ListOptions{Limit: 25})
	if err != nil || len(p.Entries) != 25 || p.More {
		t.Fatalf("List limit 25 = %d entries, more %v, %v", len(p.Entries), p.More, err)
	}
	// Default page size is 1000.
	for i := range 1001 {
		mustSet(t, s, fmt.Sprintf("/many/%04d", i), "")
	}
	p, err = s.List(ctx, "/many/", datastore.ListOptions{})
	if err != nil || len(p.Entries) != datastore.DefaultListLimit || !p.More {
		t.Fatalf("default List = %d entries, more %v, %v; want %d and more", len(p.Entries), p.More, err, datastore.DefaultListLimit)
	}
	// A cursor between keys and past the end.
	p, err = s.List(ctx, "/p/", datastore.ListOptions{After: "/p/0105"})
	if err != nil || len(p.Entries) == 0 || p.Entries[0].Key != "/p/011" {
		t.Fatalf("List after /p/0105 starts at %+v, %v", p.Entries, err)
	}
	p, err = s.List(ctx, "/p/", datastore.ListOptions{After: "/p/999"})
	if err != nil || len(p.Entries) != 0 || p.More {
		t.Fatalf("List after the end = %+v, %v", p, err)
	}
}

func testListPastTombstones(t *testing.T, newStore Factory) {
	s := newStore(t)
	ctx := ctxT(t)
	for _, k := range []string{"/a", "/a!", "/a-b", "/a/x", "/a/y", "/ab", "/a/x/z"} {
		mustSet(t, s, k, k)
	}
	if err := s.Delete(ctx, "/a/y"); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		k := fmt.Sprintf("/t/%02d", i)
		mustSet(t, s, k, "")
		if i%10 != 9 {
			if err := s.Delete(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Small pages must step over neighbours of the prefix and runs of
	// tombstones without losing or repeating a key.
	for _, limit := range []int{1, 2} {
		for prefix, want := range map[string][]string{
			"/a": {"/a", "/a/x", "/a/x/z"},
			"/t": {"/t/09", "/t/19", "/t/29", "/t/39"},
		} {
			var got []string
			opts := datastore.ListOptions{Limit: limit}
			for {
				p, err := s.List(ctx, prefix, opts)
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range p.Entries {
					got = append(got, e.Key)
				}
				if !p.More {
					break
				}
				opts.After = p.Next
			}
			if !slices.Equal(got, want) {
				t.Fatalf("List(%q) in pages of %d = %q, want %q", prefix, limit, got, want)
			}
		}
	}
}
