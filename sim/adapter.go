package sim

// This file holds every use the simulation makes of the replica API, so a
// change there is adjusted in one place.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/replica"
)

// change is what the simulation tracks of one replicated write.
type change = replica.Change

// openReplica wraps local as the replica of the peer with identity key,
// its clock now and its changes handed to bc.
func openReplica(ctx context.Context, key crypto.PrivKey, local datastore.Store, now func() time.Time, bc replica.Broadcaster) (*replica.Replica, error) {
	return replica.New(ctx, local, replica.Config{
		Key:             key,
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
	if err := b.ObservePeer(ctx, a.ID(), have); err != nil {
		return 0, bytes, err
	}
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
	sources := make([]string, 0, len(cover))
	for src := range cover {
		sources = append(sources, src)
	}
	slices.Sort(sources)
	heads := b.Heads(sources)
	bytes += vectorSize(cover) + changesSize(heads)
	if err := a.ObservePeer(ctx, b.ID(), cover); err != nil {
		return n, bytes, err
	}
	_, err = a.Advance(ctx, cover, heads, b.Prefixes())
	return n, bytes, err
}

// peerKey derives peer i's identity from the seed, so runs with one seed
// have the same peer IDs.
func peerKey(seed uint64, i int) (crypto.PrivKey, error) {
	src := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24),
		byte(seed >> 32), byte(seed >> 40), byte(seed >> 48), byte(seed >> 56),
		byte(i), byte(i >> 8), byte(i >> 16), byte(i >> 24)})
	priv, _, err := crypto.GenerateEd25519Key(src)
	return priv, err
}

// invalidChange reports an Apply error that only rejected some changes
// (the valid ones were applied), as a receiver would reject them.
func invalidChange(err error) bool {
	return errors.Is(err, replica.ErrInvalidChange) || errors.Is(err, replica.ErrBadSignature)
}

// current returns the replicated state of key on r.
func current(ctx context.Context, r *replica.Replica, key string) (change, bool, error) {
	return r.Current(ctx, key)
}

// fingerprint is r's state fingerprint (tombstones included): equal
// fingerprints mean equal states.
func fingerprint(_ context.Context, r *replica.Replica) (string, error) {
	sum := r.StateFingerprint()
	return fmt.Sprintf("%x/%d", sum.FP[:], sum.Count), nil
}

// tracked identifies one write: its source (origin and generation) and
// sequence number.
type tracked struct {
	source string
	seq    uint64
}

func trackedOf(c change) tracked { return tracked{c.Source(), c.Seq} }

// changesSize estimates the wire size of changes: key, value, origin and
// the fixed-size fields, as the gossip message format carries them.
func changesSize(cs []change) int {
	n := 0
	for _, c := range cs {
		n += len(c.Key) + len(c.Value) + len(c.Origin) + len(c.Sig) + len(c.ValueHash) + 56
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
func sameChange(c, d change) bool { return c.Same(d) }
