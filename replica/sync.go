package replica

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/univrs/peerstate/datastore"
)

// Watermarks returns this peer's vector: for each source (an origin's
// generation) it has heard of, the sequence number up to which it has
// incorporated all that source's changes. Its own entry is its last
// sequence number.
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
	sources := make([]string, 0, len(cover))
	for o := range cover {
		sources = append(sources, o)
	}
	slices.Sort(sources)
	buf := make([]Change, 0, batch)
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		err := fn(buf)
		buf = make([]Change, 0, batch)
		return err
	}
	for _, src := range sources {
		opts := datastore.ListOptions{Limit: 1000, After: indexKey(src, have[src])}
		for {
			p, err := r.local.List(ctx, indexPrefix(src), opts)
			if err != nil {
				return nil, fmt.Errorf("replica: list index of %s: %w", src, err)
			}
			for _, e := range p.Entries {
				_, seq, ok := parseIndexKey(e.Key)
				key := string(e.Value)
				if !ok || !covered(want, key) || !r.Replicates(key) {
					continue
				}
				c, found, err := r.current(ctx, key)
				if err != nil {
					return nil, err
				}
				// The key may have moved on since the index was read; its
				// newer change is then found under its own origin, or the
				// peer already has it.
				if !found || c.Source() != src || c.Seq != seq || len(c.Sig) == 0 {
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

// Heads returns, for each of the given sources, the highest signed change
// of it this replica knows, value left out: the proof of how far the
// source's numbering reached. Sources it knows no change of are left out.
func (r *Replica) Heads(sources []string) []Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Change, 0, len(sources))
	for _, src := range sources {
		if src == r.source {
			if r.ownHead.Seq > 0 {
				out = append(out, r.ownHead)
			}
			continue
		}
		if h, ok := r.heads[src]; ok {
			out = append(out, h)
		}
	}
	return out
}

// Advance raises this peer's watermarks towards v, the vector a peer
// returned from ChangesSince, after the whole stream was applied. A vector
// is only the peer's word, so no watermark goes past what a signed head
// proves its source wrote: heads (from the peer, checked here) and the ones
// this replica already holds. It does nothing unless the sender replicates
// every prefix this replica does: otherwise the sender's vector says
// nothing about keys it does not hold. It returns how many of the peer's
// heads were invalid.
func (r *Replica) Advance(ctx context.Context, v Vector, heads []Change, senderPrefixes []string) (int, error) {
	bad := 0
	proven := map[string]Change{}
	for _, h := range heads {
		if h.Validate(0) != nil || r.keys.verify(h) != nil {
			bad++
			continue
		}
		if h.Seq > proven[h.Source()].Seq {
			proven[h.Source()] = h.Elide()
		}
	}
	if !coversAll(NormalizePrefixes(senderPrefixes), r.prefixes) {
		return bad, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var ops []datastore.Op
	raised := map[string]*seqSet{}
	newHeads := map[string]Change{}
	for src, seq := range v {
		if src == r.source {
			continue // our own numbering is ours to count
		}
		if _, _, err := ParseSource(src); err != nil {
			continue
		}
		limit := r.heads[src].Seq
		if h, ok := proven[src]; ok && h.Seq > limit {
			limit = h.Seq
			newHeads[src] = h
		}
		s := &seqSet{}
		if cur := r.seqs[src]; cur != nil {
			s = cur.clone()
		}
		if s.raise(min(seq, limit)) {
			raised[src] = s
			ops = append(ops, datastore.OpSet(watermarkKey(src), []byte(strconv.FormatUint(s.contig, 10))))
		}
	}
	for src, h := range newHeads {
		enc, err := encodeHead(h)
		if err != nil {
			return bad, err
		}
		ops = append(ops, datastore.OpSet(headKey(src), enc))
	}
	if len(ops) == 0 {
		return bad, nil
	}
	if _, err := r.local.Txn(ctx, ops...); err != nil {
		return bad, fmt.Errorf("replica: advance watermarks: %w", err)
	}
	for src, s := range raised {
		r.seqs[src] = s
	}
	for src, h := range newHeads {
		r.heads[src] = h
	}
	return bad, nil
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
