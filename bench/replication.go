package bench

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/datastore"
)

// Systems measured by the replication suite.
const (
	SystemPeerstate = "peerstate"
	SystemRawPubsub = "raw-pubsub" // the same peers' pubsub, a plain topic
)

// Modes of a replication measurement.
const (
	// ModePaced writes at ReplicationConfig.Rate writes/s in all, spread
	// over the writers: write-to-visible latency under a moderate load.
	ModePaced = "paced"
	// ModeSustained has every writer write as fast as it can for
	// ReplicationConfig.Sustained: the rate visible everywhere, the lag
	// under that load and the bytes of a burst.
	ModeSustained = "sustained"
)

// Writer counts of ReplicationConfig.Writers.
const (
	WritersOne = "one"
	WritersAll = "all"
)

// deliveryTimeout bounds the wait for pubsub delivery after the last write;
// what is missing then is counted as lost, and catch-up repairs it.
const deliveryTimeout = 10 * time.Second

// ReplicationConfig sets the replication suite's sizes.
type ReplicationConfig struct {
	Peers     []int         // network sizes, each at least 2
	Writers   []string      // WritersOne, WritersAll
	Store     string        // StoreMemory or StoreSQLite: each peer's store
	Rate      int           // paced writes per second, in all
	Paced     time.Duration // how long the paced writes last
	Sustained time.Duration // how long the writers write flat out
	ValueSize int           // bytes per value
	Dir       string        // where SQLite stores go; a temporary directory when empty
}

// DefaultReplicationConfig returns the sizes the issue asks about: 3 and 10
// peers, one and all writing, 256-byte values, SQLite stores.
func DefaultReplicationConfig() ReplicationConfig {
	return ReplicationConfig{
		Peers: []int{3, 10}, Writers: []string{WritersOne, WritersAll}, Store: StoreSQLite,
		Rate: 200, Paced: 3 * time.Second, Sustained: 5 * time.Second, ValueSize: 256,
	}
}

// Validate reports the first invalid setting.
func (c ReplicationConfig) Validate() error {
	switch {
	case len(c.Peers) == 0:
		return errors.New("bench: replication: no network size")
	case len(c.Writers) == 0:
		return errors.New("bench: replication: no writer count")
	case !ValidStore(c.Store):
		return fmt.Errorf("bench: replication: store %q: want memory or sqlite", c.Store)
	case c.Rate <= 0:
		return fmt.Errorf("bench: replication: rate %d: want at least 1 write/s", c.Rate)
	case c.Paced <= 0 || c.Sustained <= 0:
		return errors.New("bench: replication: durations must be positive")
	case c.ValueSize <= 0 || c.ValueSize > 64<<10:
		return fmt.Errorf("bench: replication: value size %d outside [1, 65536]", c.ValueSize)
	}
	for _, n := range c.Peers {
		if n < 2 || n > 50 {
			return fmt.Errorf("bench: replication: %d peers: want 2 to 50", n)
		}
	}
	for _, w := range c.Writers {
		if w != WritersOne && w != WritersAll {
			return fmt.Errorf("bench: replication: writers %q: want one or all", w)
		}
	}
	return nil
}

// ReplicationResult is one row of the replication table.
type ReplicationResult struct {
	System  string `json:"system"`
	Peers   int    `json:"peers"`
	Writers int    `json:"writers"`
	Mode    string `json:"mode"`
	Writes  int    `json:"writes"`
	// WritesPerSec is, paced, the rate written; sustained, the writes
	// visible on every peer per second, from the first write until the
	// last peer had the last one.
	WritesPerSec float64 `json:"writes_per_sec"`
	// P50Ms and P99Ms are the write-to-visible latency (the remote
	// watcher's event, the raw subscriber's message) over every receiver.
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	// Lost counts deliveries missing deliveryTimeout after the last write
	// (peerstate's catch-up repairs them; raw pubsub's are gone).
	Lost int `json:"lost"`
	// BytesPerWritePerReceiver is every byte sent on the network's streams
	// (payloads, signatures, forwarding, control traffic, catch-up) per
	// write per receiving peer.
	BytesPerWritePerReceiver float64 `json:"bytes_per_write_per_receiver"`
	// PayloadBytesPerWrite is what the writers published per write: for
	// peerstate the encoded, signed change (batched), for raw pubsub the
	// key and value.
	PayloadBytesPerWrite float64 `json:"payload_bytes_per_write"`
}

// ReplicationRows returns how many results Replication produces.
func ReplicationRows(c ReplicationConfig) int { return 4 * len(c.Peers) * len(c.Writers) }

// Replication runs the replication suite: for each network size and writer
// count, real libp2p hosts on loopback TCP in this process, each with a
// replica and a gossip (periodic catch-up off, so losses show), measure
// peerstate and, beside it on the same pubsubs, a plain topic, paced and
// sustained. progress, if not nil, sees each result as it comes.
func Replication(ctx context.Context, c ReplicationConfig, progress func(ReplicationResult)) ([]ReplicationResult, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var out []ReplicationResult
	for _, n := range c.Peers {
		for _, w := range c.Writers {
			rows, err := replicationCase(ctx, c, n, w, progress)
			out = append(out, rows...)
			if err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

func replicationCase(ctx context.Context, c ReplicationConfig, n int, w string, progress func(ReplicationResult)) (out []ReplicationResult, err error) {
	nw, err := startNetwork(ctx, n, c.Store, c.Dir)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, nw.close()) }()
	writers := nw.peers[:1]
	if w == WritersAll {
		writers = nw.peers
	}
	emit := func(r ReplicationResult) {
		out = append(out, r)
		if progress != nil {
			progress(r)
		}
	}
	run := &replicationRun{cfg: c, nw: nw, writers: writers}
	for i, mode := range []string{ModePaced, ModeSustained} {
		r, counts, err := run.peerstate(ctx, fmt.Sprintf("/repl/%d/", i), mode)
		if err != nil {
			return out, err
		}
		emit(r)
		r, err = run.raw(ctx, fmt.Sprintf("/bench/raw/%d", i), mode, counts)
		if err != nil {
			return out, err
		}
		emit(r)
	}
	return out, nil
}

// replicationRun is one network's measurements.
type replicationRun struct {
	cfg     ReplicationConfig
	nw      *peerNet
	writers []*netPeer
}

func (rr *replicationRun) result(system, mode string, writes int) ReplicationResult {
	return ReplicationResult{System: system, Peers: len(rr.nw.peers), Writers: len(rr.writers), Mode: mode, Writes: writes}
}

// schedule runs write(writer index, seq) for every writer: paced, at the
// configured rate in all, for the paced duration; sustained, as fast as
// each can for the sustained duration; or, with counts set, counts[i]
// times for writer i as fast as it can. It returns how many each did.
func (rr *replicationRun) schedule(ctx context.Context, mode string, counts []int, write func(i, seq int) error) ([]int, error) {
	done := make([]int, len(rr.writers))
	errs := make([]error, len(rr.writers))
	var wg sync.WaitGroup
	for i := range rr.writers {
		wg.Go(func() {
			switch {
			case counts != nil:
				for seq := range counts[i] {
					if errs[i] = write(i, seq); errs[i] != nil {
						return
					}
					done[i]++
				}
			case mode == ModePaced:
				each := max(1, rr.cfg.Rate/len(rr.writers))
				total := int(int64(each) * int64(rr.cfg.Paced) / int64(time.Second))
				tick := time.NewTicker(time.Second / time.Duration(each))
				defer tick.Stop()
				for seq := range max(1, total) {
					select {
					case <-tick.C:
					case <-ctx.Done():
						errs[i] = ctx.Err()
						return
					}
					if errs[i] = write(i, seq); errs[i] != nil {
						return
					}
					done[i]++
				}
			default:
				end := time.Now().Add(rr.cfg.Sustained)
				for seq := 0; time.Now().Before(end); seq++ {
					if errs[i] = write(i, seq); errs[i] != nil {
						return
					}
					done[i]++
				}
			}
		})
	}
	wg.Wait()
	return done, errors.Join(errs...)
}

// peerstate measures writes through the writers' replicas, under prefix,
// seen by watchers on every peer. It returns how many each writer wrote.
func (rr *replicationRun) peerstate(ctx context.Context, prefix, mode string) (ReplicationResult, []int, error) {
	nw := rr.nw
	var sent sync.Map // key -> time.Time
	lat := &latencies{}
	var wg sync.WaitGroup
	var watchers []datastore.Watcher
	defer func() {
		for _, w := range watchers {
			_ = w.Close()
		}
		wg.Wait()
	}()
	for _, p := range nw.peers {
		w, err := p.r.Watch(ctx, prefix)
		if err != nil {
			return ReplicationResult{}, nil, err
		}
		watchers = append(watchers, w)
		wg.Go(func() {
			for ev := range w.Events() {
				if ev.Origin == "" {
					continue // the writer's own
				}
				if t0, ok := sent.Load(ev.Key); ok {
					lat.add(time.Since(t0.(time.Time)))
				}
			}
		})
	}
	before := make([]uint64, len(rr.writers))
	published := func() (sum uint64) {
		for _, p := range rr.writers {
			sum += p.g.Stats().PubsubBytesSent
		}
		return sum
	}
	for i, p := range rr.writers {
		var err error
		if before[i], err = p.watermark(ctx, p.id()); err != nil {
			return ReplicationResult{}, nil, err
		}
	}
	payload0 := published()
	val := make([]byte, rr.cfg.ValueSize)
	nw.counter.reset()
	start := time.Now()
	counts, err := rr.schedule(ctx, mode, nil, func(i, seq int) error {
		key := fmt.Sprintf("%s%d/%08d", prefix, i, seq)
		sent.Store(key, time.Now())
		_, err := rr.writers[i].r.Set(ctx, key, val)
		return err
	})
	if err != nil {
		return ReplicationResult{}, nil, err
	}
	targets := map[peer.ID]uint64{}
	writes := 0
	for i, p := range rr.writers {
		targets[p.id()] = before[i] + uint64(counts[i])
		writes += counts[i]
	}
	res := rr.result(SystemPeerstate, mode, writes)
	err = waitUntil(ctx, deliveryTimeout, "delivery", func() (bool, error) { return allReached(ctx, nw.peers, targets) })
	elapsed := time.Since(start)
	res.BytesPerWritePerReceiver = float64(nw.counter.sent()) / float64(writes) / float64(len(nw.peers)-1)
	res.PayloadBytesPerWrite = float64(published()-payload0) / float64(writes)
	if errors.Is(err, errTimeout) {
		// Count what pubsub lost, then let catch-up repair it.
		res.Lost = writes*(len(nw.peers)-1) - lat.len()
		if err = rr.repair(ctx, targets); err != nil {
			return res, counts, err
		}
	} else if err != nil {
		return res, counts, err
	}
	res.P50Ms, res.P99Ms = lat.pct(50), lat.pct(99)
	if mode == ModePaced {
		res.WritesPerSec = float64(writes) / rr.cfg.Paced.Seconds()
	} else {
		res.WritesPerSec = float64(writes) / elapsed.Seconds()
	}
	return res, counts, nil
}

// repair runs the catch-up the periodic loop would have run, every peer
// with every writer, until targets are reached.
func (rr *replicationRun) repair(ctx context.Context, targets map[peer.ID]uint64) error {
	for _, p := range rr.nw.peers {
		for _, w := range rr.writers {
			if p != w {
				if _, err := p.g.SyncWith(ctx, w.id()); err != nil {
					return err
				}
			}
		}
	}
	return waitUntil(ctx, deliveryTimeout, "catch-up", func() (bool, error) { return allReached(ctx, rr.nw.peers, targets) })
}

// raw measures a plain topic on the same pubsubs: paced at the same rate,
// or sustained with as many messages as peerstate wrote (counts), as fast
// as the writers can publish.
func (rr *replicationRun) raw(ctx context.Context, topic, mode string, counts []int) (ReplicationResult, error) {
	nw := rr.nw
	var sent sync.Map
	lat := &latencies{}
	var last atomic.Int64 // unix nanos of the last delivery
	rt, err := joinRaw(ctx, nw.peers, topic, func(_ *netPeer, msg *pubsub.Message) {
		key, _, _ := strings.Cut(string(msg.GetData()), "\x00")
		if t0, ok := sent.Load(key); ok {
			lat.add(time.Since(t0.(time.Time)))
			last.Store(time.Now().UnixNano())
		}
	})
	if err != nil {
		return ReplicationResult{}, err
	}
	defer rt.close()
	index := map[*netPeer]int{}
	for i, p := range nw.peers {
		index[p] = i
	}
	val := make([]byte, rr.cfg.ValueSize)
	var payload atomic.Int64
	nw.counter.reset()
	start := time.Now()
	if mode == ModePaced {
		counts = nil
	}
	counts, err = rr.schedule(ctx, mode, counts, func(i, seq int) error {
		key := fmt.Sprintf("%d/%08d", i, seq)
		data := append([]byte(key+"\x00"), val...)
		payload.Add(int64(len(data)))
		sent.Store(key, time.Now())
		return rt.topics[index[rr.writers[i]]].Publish(ctx, data)
	})
	if err != nil {
		return ReplicationResult{}, err
	}
	writes := 0
	for _, n := range counts {
		writes += n
	}
	want := writes * (len(nw.peers) - 1)
	err = waitUntil(ctx, deliveryTimeout, "raw delivery", func() (bool, error) { return lat.len() >= want, nil })
	if err != nil && !errors.Is(err, errTimeout) {
		return ReplicationResult{}, err
	}
	res := rr.result(SystemRawPubsub, mode, writes)
	res.BytesPerWritePerReceiver = float64(nw.counter.sent()) / float64(writes) / float64(len(nw.peers)-1)
	res.PayloadBytesPerWrite = float64(payload.Load()) / float64(writes)
	res.Lost = want - lat.len()
	res.P50Ms, res.P99Ms = lat.pct(50), lat.pct(99)
	if mode == ModePaced {
		res.WritesPerSec = float64(writes) / rr.cfg.Paced.Seconds()
	} else if t := last.Load(); t > 0 {
		// Deliveries per receiver per second, until the last one.
		res.WritesPerSec = float64(lat.len()) / float64(len(nw.peers)-1) / time.Unix(0, t).Sub(start).Seconds()
	}
	return res, nil
}
