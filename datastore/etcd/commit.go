package etcd

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/internal/engine"
)

// maxAttempts bounds the optimistic commits of one write; each lost attempt
// means another writer committed to one of its keys.
const maxAttempts = 64

// maxBackoff caps the pause between two attempts.
const maxBackoff = 50 * time.Millisecond

// committer implements engine.Committer with optimistic etcd transactions.
type committer struct{ s *Store }

// stored is what a read found in etcd for one key.
type stored struct {
	rec   engine.Record
	found bool  // the etcd key exists (live or tombstone)
	mod   int64 // its ModRevision
}

// snapshot holds the records of a request's keys, all read at one revision.
type snapshot map[string]stored

func (sn snapshot) read(key string) (engine.Record, bool, error) {
	st := sn[key]
	return st.rec, st.found, nil
}

// Commit reads the records of the request's keys, plans the commit, and
// commits it if none of the keys changed since the read; otherwise it plans
// again on the fresh records the failed transaction returned.
func (c committer) Commit(ctx context.Context, req engine.Request) (datastore.TxnResult, error) {
	s := c.s
	if s.isClosed() {
		return datastore.TxnResult{}, fmt.Errorf("etcd: commit: %w", datastore.ErrClosed)
	}
	keys := requestKeys(req.Ops)
	// The first read is serializable: the member's local state, without a
	// round of consensus. It may be stale, and that is safe: a commit
	// planned on stale records fails its compares and returns fresh ones.
	snap, rev, err := s.readKeys(ctx, keys, true)
	if err != nil {
		return datastore.TxnResult{}, err
	}
	fresh := false // snap is known current: read linearizably or by a failed commit
	for attempt := 1; ; attempt++ {
		plan, err := engine.Build(req, uint64(rev)+1, s.opts.Now(), s.opts.DeleteMissingOK, snap.read)
		if err != nil || len(plan.Writes) == 0 {
			if !fresh {
				// A failed check, or a request that writes nothing, is
				// answered from records that held at one point in time.
				if snap, rev, err = s.readKeys(ctx, keys, false); err != nil {
					return datastore.TxnResult{}, err
				}
				fresh = true
				continue
			}
			if err != nil {
				return datastore.TxnResult{}, fmt.Errorf("etcd: %w", err)
			}
			return plan.Result, nil // Result.Revision is rev, the revision of the read
		}
		resp, err := s.commitTxn(ctx, keys, snap, plan.Writes)
		if err != nil {
			return datastore.TxnResult{}, err
		}
		if resp.Succeeded {
			plan.Result.Revision = uint64(resp.Header.Revision)
			return plan.Result, nil
		}
		if attempt >= maxAttempts {
			return datastore.TxnResult{}, fmt.Errorf("etcd: commit: %d attempts: %w", attempt, ErrContended)
		}
		rev, fresh = resp.Header.Revision, true
		if snap, err = s.parseRanges(keys, resp.Responses); err != nil {
			return datastore.TxnResult{}, err
		}
		if err := pause(ctx, attempt); err != nil {
			return datastore.TxnResult{}, err
		}
	}
}

// requestKeys returns the distinct keys of ops, in op order.
func requestKeys(ops []datastore.Op) []string {
	keys := make([]string, 0, len(ops))
	seen := make(map[string]bool, len(ops))
	for _, op := range ops {
		if !seen[op.Key] {
			seen[op.Key] = true
			keys = append(keys, op.Key)
		}
	}
	return keys
}

// readKeys reads the records of keys in one read, linearizable unless
// serializable is set, and returns them with the revision they were read at.
func (s *Store) readKeys(ctx context.Context, keys []string, serializable bool) (snapshot, int64, error) {
	rctx, cancel := s.request(ctx)
	defer cancel()
	var opts []clientv3.OpOption
	if serializable {
		opts = append(opts, clientv3.WithSerializable())
	}
	if len(keys) == 1 {
		resp, err := s.client.Get(rctx, s.etcdKey(keys[0]), opts...)
		if err != nil {
			return nil, 0, s.fail(ctx, "commit: read", err)
		}
		snap := make(snapshot, 1)
		if err := s.addStored(snap, keys[0], resp.Kvs); err != nil {
			return nil, 0, err
		}
		return snap, resp.Header.Revision, nil
	}
	resp, err := s.client.Txn(rctx).Then(s.gets(keys, opts...)...).Commit()
	if err != nil {
		return nil, 0, s.fail(ctx, "commit: read", err)
	}
	snap, err := s.parseRanges(keys, resp.Responses)
	if err != nil {
		return nil, 0, err
	}
	return snap, resp.Header.Revision, nil
}

func (s *Store) gets(keys []string, opts ...clientv3.OpOption) []clientv3.Op {
	ops := make([]clientv3.Op, len(keys))
	for i, k := range keys {
		ops[i] = clientv3.OpGet(s.etcdKey(k), opts...)
	}
	return ops
}

// parseRanges reads the responses of the gets of keys, in order.
func (s *Store) parseRanges(keys []string, resps []*pb.ResponseOp) (snapshot, error) {
	if len(resps) != len(keys) {
		return nil, fmt.Errorf("etcd: commit: %d responses for %d keys", len(resps), len(keys))
	}
	snap := make(snapshot, len(keys))
	for i, k := range keys {
		if err := s.addStored(snap, k, resps[i].GetResponseRange().GetKvs()); err != nil {
			return nil, err
		}
	}
	return snap, nil
}

func (s *Store) addStored(snap snapshot, key string, kvs []*mvccpb.KeyValue) error {
	if len(kvs) == 0 {
		snap[key] = stored{}
		return nil
	}
	kv := kvs[0]
	r, err := decodeRecord(key, kv.ModRevision, kv.Value)
	if err != nil {
		return err
	}
	snap[key] = stored{rec: r, found: true, mod: kv.ModRevision}
	return nil
}

// commitTxn puts the records if every key of the request is as read; if one
// is not, the else branch reads them all again.
func (s *Store) commitTxn(ctx context.Context, keys []string, snap snapshot, writes []engine.Record) (*clientv3.TxnResponse, error) {
	cmps := make([]clientv3.Cmp, len(keys))
	for i, k := range keys {
		ek := s.etcdKey(k)
		if st := snap[k]; st.found {
			cmps[i] = clientv3.Compare(clientv3.ModRevision(ek), "=", st.mod)
		} else {
			cmps[i] = clientv3.Compare(clientv3.CreateRevision(ek), "=", 0)
		}
	}
	puts := make([]clientv3.Op, len(writes))
	for i, r := range writes {
		val, err := encodeRecord(r)
		if err != nil {
			return nil, fmt.Errorf("etcd: commit %q: %w", r.Key, err)
		}
		puts[i] = clientv3.OpPut(s.etcdKey(r.Key), string(val))
	}
	markers, err := s.markerOps(ctx, snap, writes)
	if err != nil {
		return nil, err
	}
	puts = append(puts, markers...)
	rctx, cancel := s.request(ctx)
	defer cancel()
	resp, err := s.client.Txn(rctx).If(cmps...).Then(puts...).Else(s.gets(keys)...).Commit()
	if err != nil {
		return nil, s.fail(ctx, "commit", err)
	}
	return resp, nil
}

// pause waits before attempt+1: not at all after the first lost attempt
// (the failed transaction already brought fresh records), then a jittered,
// doubling pause up to maxBackoff.
func pause(ctx context.Context, attempt int) error {
	if attempt < 2 {
		return nil
	}
	d := min(time.Millisecond<<min(attempt-2, 16), maxBackoff)
	t := time.NewTimer(rand.N(d) + 1)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
