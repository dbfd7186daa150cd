package ipfsds_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/ipfsds"
	"github.com/univrs/peerstate/datastore/memory"
)

func TestDatastore_StoreKey(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		key    ds.Key
		want   string
	}{
		{"", ds.NewKey("/a/b"), "/a/b"},
		{"", ds.NewKey("/peers/addrs/CIQA4T3TD3BP3C2M"), "/peers/addrs/CIQA4T3TD3BP3C2M"},
		{"", ds.NewKey("/Comedy/MontyPython/Actor:JohnCleese"), "/Comedy/MontyPython/Actor:JohnCleese"},
		{"", ds.NewKey("/é/日本/\uFFFD"), "/é/日本/\uFFFD"}, // a literal U+FFFD is valid UTF-8
		{"", ds.NewKey("/"), "/%"},
		{"", ds.Key{}, "/%"},
		{"", ds.NewKey("/100%"), "/100%25"},
		{"", ds.NewKey("/%41"), "/%2541"},
		{"", ds.NewKey("/a\x00b/\x1f"), "/a%00b/%1F"},
		{"", ds.NewKey("/del\x7f"), "/del%7F"},
		{"", ds.NewKey("/c1\u0085"), "/c1%C2%85"},
		{"", ds.NewKey("/bin\xff\xfe/\xc3"), "/bin%FF%FE/%C3"},
		{"", ds.RawKey("/a//b"), "/a/%/b"},
		{"", ds.RawKey("//a"), "/%/a"},
		{"/ipfs", ds.NewKey("/a/b"), "/ipfs/a/b"},
		{"/ipfs", ds.NewKey("/"), "/ipfs/%"},
		{"ipfs/", ds.NewKey("/a"), "/ipfs/a"},
		{"/", ds.NewKey("/a"), "/a"},
		{"/x%y/z", ds.NewKey("/a"), "/x%25y/z/a"},
	} {
		d := ipfsds.New(memory.New(), ipfsds.WithPrefix(tc.prefix), ipfsds.WithCloseStore())
		got, err := d.StoreKey(tc.key)
		if err != nil || got != tc.want {
			t.Errorf("prefix %q: StoreKey(%q) = %q, %v; want %q", tc.prefix, tc.key, got, err, tc.want)
		}
		if err := datastore.ValidateKey(got); err != nil {
			t.Errorf("prefix %q: StoreKey(%q) = %q is not a valid store key: %v", tc.prefix, tc.key, got, err)
		}
		back, ok := d.DatastoreKey(got)
		if want := tc.key.String(); !ok || back.String() != want && !(want == "" && back.String() == "/") {
			t.Errorf("prefix %q: DatastoreKey(%q) = %q, %v; want %q", tc.prefix, got, back, ok, tc.key)
		}
		d.Close()
	}
}

func TestDatastore_DatastoreKeyForeign(t *testing.T) {
	d := ipfsds.New(memory.New(), ipfsds.WithPrefix("/ipfs"), ipfsds.WithCloseStore())
	defer d.Close()
	for _, k := range []string{
		"/a",            // outside the prefix
		"/ipfs",         // the prefix itself
		"/ipfsx/a",      // not under it
		"/ipfs/a%zz",    // a bad escape
		"/ipfs/a%4",     // a short escape
		"/ipfs/a%41",    // "A" needs no escape: not canonical
		"/ipfs/a%c3%a9", // lower-case hex
		"/ipfs/%C3%A9",  // "é" needs no escape
		"/ipfs/a/%",     // "/a/" is no go-datastore key
		"/ipfs/a/",      // not a store key
		"/ipfs//a",
		"",
	} {
		if got, ok := d.DatastoreKey(k); ok {
			t.Errorf("DatastoreKey(%q) = %q; want no key", k, got)
		}
	}
}

func TestDatastore_LongKeys(t *testing.T) {
	d, _ := newDatastore(t, backends[0].open, ipfsds.WithPrefix("/ns"))
	ctx := t.Context()
	fits := ds.NewKey("/" + strings.Repeat("k", datastore.MaxKeyLen-len("/ns/")))
	if err := d.Put(ctx, fits, []byte("v")); err != nil {
		t.Fatalf("Put of a key that maps to %d bytes: %v", datastore.MaxKeyLen, err)
	}
	for _, k := range []ds.Key{
		ds.NewKey("/" + strings.Repeat("k", datastore.MaxKeyLen-len("/ns/")+1)),
		ds.NewKey("/" + strings.Repeat("\x00", 400)), // 401 bytes, 1201 escaped
	} {
		if err := d.Put(ctx, k, []byte("v")); !errors.Is(err, datastore.ErrInvalidKey) {
			t.Errorf("Put of a key too long: %v, want ErrInvalidKey", err)
		}
		b, _ := d.Batch(ctx)
		if err := b.Put(ctx, k, []byte("v")); !errors.Is(err, datastore.ErrInvalidKey) {
			t.Errorf("Batch.Put of a key too long: %v, want ErrInvalidKey", err)
		}
		if _, err := d.Get(ctx, k); err != ds.ErrNotFound {
			t.Errorf("Get of a key too long: %v, want ds.ErrNotFound", err)
		}
		if n, err := d.GetSize(ctx, k); err != ds.ErrNotFound || n != -1 {
			t.Errorf("GetSize of a key too long: %d, %v", n, err)
		}
		if ok, err := d.Has(ctx, k); ok || err != nil {
			t.Errorf("Has of a key too long: %v, %v", ok, err)
		}
		if err := d.Delete(ctx, k); err != nil {
			t.Errorf("Delete of a key too long: %v", err)
		}
		res, err := d.Query(ctx, dsq.Query{Prefix: k.String()})
		if err != nil {
			t.Fatal(err)
		}
		if es, err := res.Rest(); err != nil || len(es) != 0 {
			t.Errorf("Query under a key too long: %d entries, %v", len(es), err)
		}
	}
}

// TestDatastore_EscapedKeys stores keys that need escaping and checks that
// Get, Query and prefixes see them as go-datastore keys, and that the
// hierarchy is kept: a prefix selects its children and nothing else.
func TestDatastore_EscapedKeys(t *testing.T) {
	d, s := newDatastore(t, backends[0].open)
	ctx := t.Context()
	keys := []ds.Key{
		ds.NewKey("/"),
		ds.NewKey("/a\x00"),
		ds.NewKey("/a\x00/b"),
		ds.NewKey("/a\x00b"),
		ds.NewKey("/a%"),
		ds.NewKey("/a%/c"),
		ds.NewKey("/a"),
		ds.NewKey("/a/\xff"),
		ds.NewKey("/a/\xff/\u0080"),
		ds.RawKey("/a//b"),
	}
	for _, k := range keys {
		if err := d.Put(ctx, k, []byte(k.String())); err != nil {
			t.Fatalf("Put(%q): %v", k, err)
		}
	}
	for _, k := range keys {
		v, err := d.Get(ctx, k)
		if err != nil || string(v) != k.String() {
			t.Errorf("Get(%q) = %q, %v", k, v, err)
		}
	}
	// Every stored key is valid; none collides.
	p, err := s.List(ctx, "", datastore.ListOptions{KeysOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Entries) != len(keys) {
		t.Fatalf("store holds %d keys, want %d", len(p.Entries), len(keys))
	}
	for _, prefix := range []string{"", "/", "/a", "/a\x00", "/a%", "/a/\xff", "/a/", "/b"} {
		res, err := d.Query(ctx, dsq.Query{Prefix: prefix, Orders: []dsq.Order{dsq.OrderByKey{}}})
		if err != nil {
			t.Fatal(err)
		}
		got, err := res.Rest()
		if err != nil {
			t.Fatal(err)
		}
		var all []dsq.Entry
		for _, k := range keys {
			all = append(all, dsq.Entry{Key: k.String(), Value: []byte(k.String()), Size: len(k.String())})
		}
		want, _ := dsq.NaiveQueryApply(dsq.Query{Prefix: prefix, Orders: []dsq.Order{dsq.OrderByKey{}}},
			dsq.ResultsWithEntries(dsq.Query{}, all)).Rest()
		if !slices.EqualFunc(got, want, func(a, b dsq.Entry) bool {
			return a.Key == b.Key && string(a.Value) == string(b.Value) && a.Size == b.Size
		}) {
			t.Errorf("Query(prefix %q) = %q, want %q", prefix, keysOf(got), keysOf(want))
		}
	}
}

func keysOf(es []dsq.Entry) []string {
	var ks []string
	for _, e := range es {
		ks = append(ks, e.Key)
	}
	return ks
}

// FuzzKeyMapping checks that every go-datastore key maps to a valid store
// key (or is too long) and back, and that every store key the adapter
// accepts maps back to itself.
func FuzzKeyMapping(f *testing.F) {
	for _, s := range []string{"/a/b", "/", "/a%", "/a\x00b", "/\xff", "/a//b", "/%25", "/%/%", "/\u0085/é"} {
		f.Add(s, "", s)
	}
	f.Add("/a", "/ipfs", "/ipfs/a%41")
	d := map[string]*ipfsds.Datastore{}
	f.Fuzz(func(t *testing.T, key, prefix, storeKey string) {
		a, ok := d[prefix]
		if !ok {
			a = ipfsds.New(nil, ipfsds.WithPrefix(prefix))
			d[prefix] = a
		}
		// Any string the go-datastore API lets through RawKey.
		if !strings.HasPrefix(key, "/") {
			key = "/" + key
		}
		for len(key) > 1 && strings.HasSuffix(key, "/") {
			key = key[:len(key)-1]
		}
		k := ds.RawKey(key)
		sk, err := a.StoreKey(k)
		switch {
		case err != nil:
			if !errors.Is(err, datastore.ErrInvalidKey) {
				t.Fatalf("StoreKey(%q): %v", key, err)
			}
		case datastore.ValidateKey(sk) != nil:
			t.Fatalf("StoreKey(%q) = %q: %v", key, sk, datastore.ValidateKey(sk))
		default:
			back, ok := a.DatastoreKey(sk)
			if !ok || back != k {
				t.Fatalf("DatastoreKey(StoreKey(%q) = %q) = %q, %v", key, sk, back, ok)
			}
		}
		if back, ok := a.DatastoreKey(storeKey); ok {
			again, err := a.StoreKey(back)
			if err != nil || again != storeKey {
				t.Fatalf("StoreKey(DatastoreKey(%q) = %q) = %q, %v", storeKey, back, again, err)
			}
		}
	})
}
