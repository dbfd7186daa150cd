package sim

// This file holds every use the simulation makes of the replica API, so a
// change there is adjusted in one place.

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"slices"
	"time"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/replica"
)

// change is what the simulation tracks of one replicated write.
type change = replica.Change

// openReplica wraps local as peer id's replica, its clock now and its
// changes handed to bc.
func openReplica(ctx context.Context, id string, local datastore.Store, now func() time.Time, bc replica.Broadcaster) (*replica.Replica, error) {
	return replica.New(ctx, local, replica.Config{
		ID:              id,
		Broadcaster:     bc,
		Now:             now,
		DeleteMissingOK: true,
	})
}

// catchUp runs one catch-up of a from b, in process: a sends its vector, b
// streams what a lacks, a applies it and advances. fn sees each applied
// batch. It returns the changes and estimated bytes transferred.
func catchUp(ctx context.Context, a, b *replica.Replica, fn func([]change)) (n, bytes int, err error) {
	have, err := a.Watermarks(ctx)
	if err != nil {
		return 0, 0, err
	}
	bytes = vectorSize(have)
	b.ObservePeer(a.ID(), have)
	cover, err := b.ChangesSince(ctx, have, a.Prefixes(), 256, func(cs []change) error {
		n += len(cs)
		bytes += changesSize(cs)
		if _, err := a.Apply(ctx, b.ID(), cs); err != nil && !invalidChange(err) {
			return err
		}
		fn(cs)
		return nil
	})
	if err != nil {
		return n, bytes, err
	}
	bytes += vectorSize(cover)
	a.ObservePeer(b.ID(), cover)
	return n, bytes, a.Advance(ctx, cover, b.Prefixes())
}

// invalidChange reports an Apply error that only rejected some changes
// (the valid ones were applied), as a receiver would reject them.
func invalidChange(err error) bool { return errors.Is(err, replica.ErrInvalidChange) }

// current returns the replicated state of key on r.
func current(ctx context.Context, r *replica.Replica, key string) (change, bool, error) {
	return r.Current(ctx, key)
}

// fingerprint hashes r's whole replicated state, tombstones included: equal
// fingerprints mean equal states.
func fingerprint(ctx context.Context, r *replica.Replica) ([32]byte, error) {
	var all []change
	_, err := r.ChangesSince(ctx, replica.Vector{}, nil, 1024, func(cs []change) error {
		all = append(all, cs...)
		return nil
	})
	if err != nil {
		return [32]byte{}, err
	}
	slices.SortFunc(all, func(a, b change) int {
		switch {
		case a.Key < b.Key:
			return -1
		case a.Key > b.Key:
			return 1
		}
		return 0
	})
	h := sha256.New()
	var num [8]byte
	for _, c := range all {
		h.Write([]byte(c.Key))
		h.Write([]byte{0})
		for _, v := range []uint64{c.Version, uint64(c.HLC), c.Seq, uint64(c.CreatedAt), uint64(c.UpdatedAt)} {
			binary.BigEndian.PutUint64(num[:], v)
			h.Write(num[:])
		}
		h.Write([]byte(c.Origin))
		if c.Deleted {
			h.Write([]byte{1})
		} else {
			h.Write([]byte{0})
		}
		binary.BigEndian.PutUint64(num[:], uint64(len(c.Value)))
		h.Write(num[:])
		h.Write(c.Value)
	}
	var out [32]byte
	h.Sum(out[:0])
	return out, nil
}

// changesSize estimates the wire size of changes: key, value, origin and
// the fixed-size fields, as the gossip message format carries them.
func changesSize(cs []change) int {
	n := 0
	for _, c := range cs {
		n += len(c.Key) + len(c.Value) + len(c.Origin) + 48
	}
	return n
}

func vectorSize(v replica.Vector) int {
	n := 0
	for o := range v {
		n += len(o) + 9
	}
	return n
}

// newer reports whether c is after d in the per-key order.
func newer(c, d change) bool { return d.Less(c) }

// sameChange reports whether c and d are one write.
func sameChange(c, d change) bool {
	return c.Origin == d.Origin && c.Seq == d.Seq && c.Version == d.Version && c.HLC == d.HLC
}
