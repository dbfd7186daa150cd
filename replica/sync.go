package replica

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/univrs/peerstate/datastore"
)

// Watermarks returns this peer's vector: for each origin it has heard of,
// the sequence number up to which it has incorporated all that origin's
// changes. Its own entry is its last sequence number.
func (r *Replica) Watermarks(ctx context.Context) (Vector, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := make(Vector, len(r.seqs))
	for origin, s := range r.seqs {
		v[origin] = s.contig
	}
	return v, nil
}

// ChangesSince streams to fn, in batches of at most batch changes, the
// current state (tombstones included) of every replicated key whose last
// change a peer with vector `have` lacks, restricted to keys under prefixes
// (nil: every key this replica replicates). It reads the cost of what the
// peer lacks only: for each origin, the index from the peer's watermark on.
//
// It returns the vector the stream covers, read before streaming: once the
// receiver has applied the whole stream it has incorporated every change up
// to that vector (see Advance).
func (r *Replica) ChangesSince(ctx context.Context, have Vector, prefixes []string, batch int, fn func([]Change) error) (Vector, error) {
	if batch <= 0 {
		batch = 256
	}
	want := NormalizePrefixes(prefixes)
	cover, err := r.Watermarks(ctx)
	if err != nil {
		return nil, err
	}
	origins := make([]string, 0, len(cover))
	for o := range cover {
		origins = append(origins, o)
	}
	slices.Sort(origins)
	buf := make([]Change, 0, batch)
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		err := fn(buf)
		buf = make([]Change, 0, batch)
		return err
	}
	for _, origin := range origins {
		opts := datastore.ListOptions{Limit: 1000, After: indexKey(origin, have[origin])}
		for {
			p, err := r.local.List(ctx, indexRoot+origin+"/", opts)
			if err != nil {
				return nil, fmt.Errorf("replica: list index of %s: %w", origin, err)
			}
			for _, e := range p.Entries {
				_, seq, ok := parseIndexKey(e.Key)
				key := string(e.Value)
				if !ok || !covered(want, key) {
					continue
				}
				c, found, err := r.current(ctx, key)
				if err != nil {
					return nil, err
				}
				// The key may have moved on since the index was read; its
				// newer change is then found under its own origin, or the
				// peer already has it.
				if !found || c.Origin != origin || c.Seq != seq {
					continue
				}
				buf = append(buf, c)
				if len(buf) == batch {
					if err := flush(); err != nil {
						return nil, err
					}
				}
			}
			if !p.More {
				break
			}
			opts.After = p.Next
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return cover, nil
}

// Advance raises this peer's watermarks to v, the vector a peer returned
// from ChangesSince, after the whole stream was applied. It does nothing
// unless the sender replicates every prefix this replica does: otherwise
// the sender's vector says nothing about keys it does not hold.
func (r *Replica) Advance(ctx context.Context, v Vector, senderPrefixes []string) error {
	if !coversAll(NormalizePrefixes(senderPrefixes), r.prefixes) {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var ops []datastore.Op
	raised := map[string]*seqSet{}
	for origin, seq := range v {
		if origin == r.cfg.ID || ValidateOrigin(origin) != nil {
			continue // our own sequence is ours to count
		}
		s := &seqSet{}
		if cur := r.seqs[origin]; cur != nil {
			s = cur.clone()
		}
		if s.raise(seq) {
			raised[origin] = s
			ops = append(ops, datastore.OpSet(watermarkKey(origin), []byte(strconv.FormatUint(s.contig, 10))))
		}
	}
	if len(ops) == 0 {
		return nil
	}
	if _, err := r.local.Txn(ctx, ops...); err != nil {
		return fmt.Errorf("replica: advance watermarks: %w", err)
	}
	for origin, s := range raised {
		r.seqs[origin] = s
	}
	return nil
}

// coversAll reports whether the keys under outer include every key under
// inner (nil means all keys).
func coversAll(outer, inner []string) bool {
	if outer == nil {
		return true
	}
	if inner == nil {
		return false
	}
	for _, in := range inner {
		ok := false
		for _, out := range outer {
			if strings.HasPrefix(in, out) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
