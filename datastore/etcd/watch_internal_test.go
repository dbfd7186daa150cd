package etcd

import (
	"errors"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/internal/engine"
)

func TestWatcher_Event(t *testing.T) {
	pat, err := datastore.ParsePattern("/")
	if err != nil {
		t.Fatal(err)
	}
	w := &watcher{store: &Store{root: "/r"}, pattern: pat}
	now := time.Unix(0, 1)
	kv := func(r engine.Record, create, mod int64) *mvccpb.KeyValue {
		data, err := encodeRecord(r)
		if err != nil {
			t.Fatal(err)
		}
		return &mvccpb.KeyValue{Key: []byte("/r" + r.Key), Value: data, CreateRevision: create, ModRevision: mod}
	}
	live1 := engine.Record{Key: "/k", Value: []byte("a"), Version: 1, CreatedAt: now, UpdatedAt: now}
	live2 := engine.Record{Key: "/k", Value: []byte("b"), Version: 2, CreatedAt: now, UpdatedAt: now}
	tomb3 := engine.Record{Key: "/k", Version: 3, CreatedAt: now, UpdatedAt: now, Deleted: true}
	live4 := engine.Record{Key: "/k", Value: []byte("c"), Version: 4, CreatedAt: now, UpdatedAt: now}
	for _, tc := range []struct {
		name string
		ev   *clientv3.Event
		want datastore.Event
		skip bool
		err  error
	}{
		{name: "created", ev: &clientv3.Event{Type: mvccpb.PUT, Kv: kv(live1, 10, 10)},
			want: datastore.Event{Type: datastore.Created, Key: "/k", NewValue: []byte("a"), Version: 1, Revision: 10}},
		{name: "updated", ev: &clientv3.Event{Type: mvccpb.PUT, Kv: kv(live2, 10, 11), PrevKv: kv(live1, 10, 10)},
			want: datastore.Event{Type: datastore.Updated, Key: "/k", OldValue: []byte("a"), NewValue: []byte("b"), Version: 2, Revision: 11}},
		{name: "deleted", ev: &clientv3.Event{Type: mvccpb.PUT, Kv: kv(tomb3, 10, 12), PrevKv: kv(live2, 10, 11)},
			want: datastore.Event{Type: datastore.Deleted, Key: "/k", OldValue: []byte("b"), Version: 3, Revision: 12}},
		{name: "re-created", ev: &clientv3.Event{Type: mvccpb.PUT, Kv: kv(live4, 10, 13), PrevKv: kv(tomb3, 10, 12)},
			want: datastore.Event{Type: datastore.Created, Key: "/k", NewValue: []byte("c"), Version: 4, Revision: 13}},
		{name: "previous value compacted", ev: &clientv3.Event{Type: mvccpb.PUT, Kv: kv(live4, 10, 13)},
			err: datastore.ErrCompacted},
		{name: "etcd key of a live record removed", ev: &clientv3.Event{Type: mvccpb.DELETE,
			Kv: &mvccpb.KeyValue{Key: []byte("/r/k"), ModRevision: 14}, PrevKv: kv(live4, 10, 13)},
			want: datastore.Event{Type: datastore.Deleted, Key: "/k", OldValue: []byte("c"), Version: 5, Revision: 14}},
		{name: "etcd key of a tombstone removed", ev: &clientv3.Event{Type: mvccpb.DELETE,
			Kv: &mvccpb.KeyValue{Key: []byte("/r/k"), ModRevision: 14}, PrevKv: kv(tomb3, 10, 12)},
			skip: true},
	} {
		got, ok, err := w.event(tc.ev)
		switch {
		case tc.err != nil:
			if !errors.Is(err, tc.err) {
				t.Errorf("%s: error %v, want %v", tc.name, err, tc.err)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case ok == tc.skip:
			t.Errorf("%s: delivered %v, want %v", tc.name, ok, !tc.skip)
		case ok && (got.Type != tc.want.Type || got.Key != tc.want.Key || string(got.OldValue) != string(tc.want.OldValue) ||
			string(got.NewValue) != string(tc.want.NewValue) || got.Version != tc.want.Version || got.Revision != tc.want.Revision):
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
