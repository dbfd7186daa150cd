package etcd

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/internal/engine"
)

// Entries with a TTL. The record itself carries its expiry (record format
// 2), and two marker keys beside the store's keys, outside the range List
// and Watch read (they sort before root+"/"):
//
//   - root+"\x00ttl/"+key, the schedule: [version, expires], kept until the
//     entry is written again or expires; ExpireDue scans it;
//   - root+"\x00alarm/"+key, the same value attached to an etcd lease of
//     the TTL: etcd deletes it when the lease runs out, and every store
//     watching the alarms (one per client that wrote a TTL or found one at
//     Open) then expires the entry.
//
// Expiring is an ordinary optimistic commit guarded by the entry's
// ModRevision, so when many clients see one alarm, exactly one tombstone is
// written and the others find nothing left to do.
const (
	schedInfix = "\x00ttl/"
	alarmInfix = "\x00alarm/"
)

type marker struct {
	_       struct{} `cbor:",toarray"`
	Version uint64
	Expires int64
}

func (s *Store) schedKey(key string) string { return s.root + schedInfix + key }
func (s *Store) alarmKey(key string) string { return s.root + alarmInfix + key }

// markerOps returns the ops that keep the markers of the written records
// right: put both for a record with an expiry, delete both for one that had
// an expiry and has none now.
func (s *Store) markerOps(ctx context.Context, snap snapshot, writes []engine.Record) ([]clientv3.Op, error) {
	var ops []clientv3.Op
	for _, r := range writes {
		if !r.ExpiresAt.IsZero() {
			val, err := cbor.Marshal(marker{Version: r.Version, Expires: r.ExpiresAt.UnixNano()})
			if err != nil {
				return nil, err
			}
			secs := int64(math.Ceil(r.ExpiresAt.Sub(s.opts.Now()).Seconds()))
			rctx, cancel := s.request(ctx)
			lease, err := s.client.Grant(rctx, max(secs, 1))
			cancel()
			if err != nil {
				return nil, s.fail(ctx, fmt.Sprintf("grant lease for %q", r.Key), err)
			}
			ops = append(ops,
				clientv3.OpPut(s.schedKey(r.Key), string(val)),
				clientv3.OpPut(s.alarmKey(r.Key), string(val), clientv3.WithLease(lease.ID)))
			s.ttl.start()
			continue
		}
		if old := snap[r.Key]; old.found && !old.rec.ExpiresAt.IsZero() {
			ops = append(ops, clientv3.OpDelete(s.schedKey(r.Key)), clientv3.OpDelete(s.alarmKey(r.Key)))
		}
	}
	return ops, nil
}

// SetTTL implements datastore.Expirer. Each write with a TTL grants an etcd
// lease of the TTL rounded up to whole seconds.
func (s *Store) SetTTL(ctx context.Context, key string, value []byte, ttl time.Duration) (uint64, error) {
	return s.SetWithTTL(ctx, key, value, ttl)
}

// ExpireDue implements datastore.Expirer: it expires every entry of the
// schedule whose expiry has passed by the store's clock. Besides the lease
// alarms, the store runs it once a second while it has expiries to watch,
// and once when Open finds scheduled entries, so an expiry that fell due
// while no client was watching is applied too.
func (s *Store) ExpireDue(ctx context.Context) (int, error) {
	n := 0
	now := s.opts.Now()
	after := ""
	for {
		rctx, cancel := s.request(ctx)
		from := s.schedKey(after) + "\x00"
		if after == "" {
			from = s.schedKey("")
		}
		resp, err := s.client.Get(rctx, from, clientv3.WithRange(clientv3.GetPrefixRangeEnd(s.schedKey(""))), clientv3.WithLimit(256))
		cancel()
		if err != nil {
			return n, s.fail(ctx, "expire: scan", err)
		}
		var due []engine.Due
		for _, kv := range resp.Kvs {
			key := string(kv.Key[len(s.schedKey("")):])
			after = key
			var m marker
			if err := cbor.Unmarshal(kv.Value, &m); err != nil {
				continue // not ours to judge; the commit re-reads the record
			}
			if at := time.Unix(0, m.Expires); !at.After(now) {
				due = append(due, engine.Due{At: at, Key: key, Version: m.Version})
			}
		}
		if len(due) > 0 {
			k, err := s.expire(ctx, due)
			n += k
			if err != nil {
				return n, err
			}
		}
		if !resp.More {
			return n, nil
		}
	}
}

// expire commits the expiry of due entries, in batches that fit a txn.
func (s *Store) expire(ctx context.Context, due []engine.Due) (int, error) {
	n := 0
	for len(due) > 0 {
		b := due[:min(len(due), 16)] // 2 records ops + 2 marker ops each
		due = due[len(b):]
		res, err := committer{s}.Commit(ctx, engine.ExpireRequest(b))
		if err != nil {
			return n, fmt.Errorf("etcd: expire: %w", err)
		}
		for i := 1; i < len(res.Versions); i += 2 {
			if res.Versions[i] == b[i/2].Version+1 {
				n++
			}
		}
	}
	return n, nil
}

// ttlLoop watches the lease alarms and polls the schedule; it starts on the
// store's first write with a TTL, or at Open when entries are scheduled.
type ttlLoop struct {
	s    *Store
	once sync.Once
}

func (l *ttlLoop) start() {
	l.once.Do(func() {
		s := l.s
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return
		}
		s.watchers.Add(1)
		go l.run()
	})
}

func (l *ttlLoop) run() {
	s := l.s
	defer s.watchers.Done()
	ctx := s.ctx
	tick := time.NewTicker(engine.MaxExpiryWait)
	defer tick.Stop()
	for first := true; ctx.Err() == nil; first = false {
		if !first { // the last watch ended: pause before the next
			select {
			case <-ctx.Done():
				return
			case <-time.After(engine.MaxExpiryWait):
			}
		}
		alarms := s.client.Watch(clientv3.WithRequireLeader(ctx), s.alarmKey(""), clientv3.WithPrefix(), clientv3.WithPrevKV())
		_, _ = s.ExpireDue(ctx) // what fell due before this watch began
	watch:
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				_, _ = s.ExpireDue(ctx) // a failure is retried on the next tick
			case resp, ok := <-alarms:
				if !ok || resp.Err() != nil {
					break watch // the watch ended: start another
				}
				var due []engine.Due
				for _, ev := range resp.Events {
					if ev.Type != clientv3.EventTypeDelete || ev.PrevKv == nil {
						continue
					}
					var m marker
					if cbor.Unmarshal(ev.PrevKv.Value, &m) != nil {
						continue
					}
					due = append(due, engine.Due{Key: string(ev.Kv.Key[len(s.alarmKey("")):]), Version: m.Version})
				}
				if len(due) > 0 {
					_, _ = s.expire(ctx, due)
				}
			}
		}
	}
}

// scheduled reports whether any entry of this root has an expiry.
func (s *Store) scheduled(ctx context.Context) (bool, error) {
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.client.Get(rctx, s.schedKey(""), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return false, s.fail(ctx, "open: read the expiry schedule", err)
	}
	return resp.Count > 0, nil
}

var _ datastore.Expirer = (*Store)(nil)
