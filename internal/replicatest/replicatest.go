// Package replicatest connects replicas in one process for tests: every
// local change of one replica is delivered to every other replica, in the
// order it was broadcast, by one delivery goroutine the Net owns.
package replicatest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/replica"
)

// Net is a set of replicas over memory stores joined by an in-process
// broadcaster.
type Net struct {
	Replicas []*replica.Replica

	// Filter, when set before any write, is called for each change a peer
	// receives; a change it refuses is not applied on that peer (the way a
	// remote-change validator would refuse it).
	Filter func(to int, c replica.Change) error

	mu       sync.Mutex
	cond     *sync.Cond
	queue    []delivery
	busy     bool
	closed   bool
	errs     []error
	rejected int
	done     chan struct{}
}

type delivery struct {
	from, to int
	changes  []replica.Change
}

type broadcaster struct {
	n    *Net
	from int
}

func (b broadcaster) Broadcast(_ context.Context, changes []replica.Change) error {
	n := b.n
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	for to := range n.Replicas {
		if to != b.from {
			n.queue = append(n.queue, delivery{b.from, to, slices.Clone(changes)})
		}
	}
	n.cond.Broadcast()
	return nil
}

// KeyFor returns a fixed Ed25519 identity for a test peer's name.
func KeyFor(name string) (crypto.PrivKey, error) {
	seed := sha256.Sum256([]byte(name))
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(seed[:]))
	return k, err
}

// New starts n replicas, each over its own memory store, configured by cfg
// (which may be nil) after Key and Broadcaster are set. Close stops them.
func New(n int, cfg func(i int, c *replica.Config)) (*Net, error) {
	net := &Net{done: make(chan struct{})}
	net.cond = sync.NewCond(&net.mu)
	for i := range n {
		key, err := KeyFor(fmt.Sprintf("peer%d", i))
		if err != nil {
			net.closeReplicas()
			return nil, err
		}
		c := replica.Config{Key: key, Broadcaster: broadcaster{net, i}}
		if cfg != nil {
			cfg(i, &c)
		}
		r, err := replica.New(context.Background(), memory.New(), c)
		if err != nil {
			net.closeReplicas()
			return nil, err
		}
		net.Replicas = append(net.Replicas, r)
	}
	go net.deliver()
	return net, nil
}

func (n *Net) deliver() {
	defer close(n.done)
	for {
		n.mu.Lock()
		for len(n.queue) == 0 && !n.closed {
			n.cond.Wait()
		}
		if n.closed {
			n.mu.Unlock()
			return
		}
		d := n.queue[0]
		n.queue = n.queue[1:]
		n.busy = true
		filter := n.Filter
		n.mu.Unlock()

		changes := d.changes
		refused := 0
		if filter != nil {
			changes = slices.DeleteFunc(slices.Clone(changes), func(c replica.Change) bool {
				if filter(d.to, c) != nil {
					refused++
					return true
				}
				return false
			})
		}
		var err error
		if len(changes) > 0 {
			_, err = n.Replicas[d.to].Apply(context.Background(), n.Replicas[d.from].ID(), changes)
		}

		n.mu.Lock()
		n.busy = false
		n.rejected += refused
		if err != nil && !errors.Is(err, datastore.ErrClosed) {
			n.errs = append(n.errs, err)
		}
		n.cond.Broadcast()
		n.mu.Unlock()
	}
}

// Settle waits until every broadcast change has been delivered, and returns
// the errors applying them produced.
func (n *Net) Settle(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		n.mu.Lock()
		n.cond.Broadcast()
		n.mu.Unlock()
	})
	defer stop()
	n.mu.Lock()
	defer n.mu.Unlock()
	for (len(n.queue) > 0 || n.busy) && !n.closed && ctx.Err() == nil {
		n.cond.Wait()
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.Join(n.errs...)
}

// Refused is how many received changes Filter refused.
func (n *Net) Refused() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rejected
}

// Close stops delivery and closes every replica; calling it again is a
// no-op.
func (n *Net) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.cond.Broadcast()
	n.mu.Unlock()
	<-n.done
	return n.closeReplicas()
}

func (n *Net) closeReplicas() error {
	var errs []error
	for _, r := range n.Replicas {
		errs = append(errs, r.Close())
	}
	return errors.Join(errs...)
}

// StateHash hashes every entry of s under prefix (key, value, version and
// timestamps, not the per-peer revision), so converged peers hash alike.
func StateHash(ctx context.Context, s datastore.Store, prefix string) (string, int, error) {
	h := sha256.New()
	n := 0
	opts := datastore.ListOptions{Limit: 500}
	for {
		p, err := s.List(ctx, prefix, opts)
		if err != nil {
			return "", 0, err
		}
		for _, e := range p.Entries {
			fmt.Fprintf(h, "%s\x00%x\x00%d\x00%d\x00%d\n", e.Key, e.Value, e.Version, e.CreatedAt.UnixNano(), e.UpdatedAt.UnixNano())
			n++
		}
		if !p.More {
			return fmt.Sprintf("%x", h.Sum(nil)), n, nil
		}
		opts.After = p.Next
	}
}
