package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/datastore"
)

// CatchupConfig sets the catch-up suite's sizes.
type CatchupConfig struct {
	Missed    []int  // writes the fresh peer missed, one key each
	Join      []int  // members the fresh peer connects to at once
	Store     string // StoreMemory or StoreSQLite
	ValueSize int
	Dir       string // where SQLite stores go; a temporary directory when empty
}

// DefaultCatchupConfig returns the sizes: 10k and 100k missed
// writes, joining 1 and 4 peers, 256-byte values, SQLite stores.
func DefaultCatchupConfig() CatchupConfig {
	return CatchupConfig{Missed: []int{10_000, 100_000}, Join: []int{1, 4}, Store: StoreSQLite, ValueSize: 256}
}

// Validate reports the first invalid setting.
func (c CatchupConfig) Validate() error {
	switch {
	case len(c.Missed) == 0 || len(c.Join) == 0:
		return errors.New("bench: catchup: no size")
	case !ValidStore(c.Store):
		return fmt.Errorf("bench: catchup: store %q: want memory or sqlite", c.Store)
	case c.ValueSize < 8 || c.ValueSize > 64<<10:
		return fmt.Errorf("bench: catchup: value size %d outside [8, 65536]", c.ValueSize)
	}
	for _, n := range c.Missed {
		if n < 1 || n > 10_000_000 {
			return fmt.Errorf("bench: catchup: %d missed writes: want 1 to 10,000,000", n)
		}
	}
	for _, n := range c.Join {
		if n < 1 || n > 50 {
			return fmt.Errorf("bench: catchup: joining %d peers: want 1 to 50", n)
		}
	}
	return nil
}

// CatchupResult is one row of the catch-up table.
type CatchupResult struct {
	Missed int `json:"missed"`
	Join   int `json:"join"` // members the fresh peer connected to
	// Millis is the time from the first connection until the fresh peer
	// had every write.
	Millis float64 `json:"ms"`
	// DataBytes is the keys' and values' size; BytesReceived every byte of
	// catch-up and repair the fresh peer received (signatures, versions and
	// framing included), from all members, until their catch-ups ended.
	DataBytes     int64   `json:"data_bytes"`
	BytesReceived int64   `json:"bytes_received"`
	Ratio         float64 `json:"received_per_data"`
	Syncs         uint64  `json:"syncs"` // catch-ups the fresh peer ran
}

// CatchupRows returns how many results Catchup produces.
func CatchupRows(c CatchupConfig) int { return len(c.Missed) * len(c.Join) }

// Catchup runs the catch-up suite: for each size, max(Join) members
// (one writer; the others receive every write and, where pubsub lost some,
// catch up), then for each join count a fresh peer connecting to that
// many members at once, timed until it holds every write.
func Catchup(ctx context.Context, c CatchupConfig, progress func(CatchupResult)) ([]CatchupResult, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var out []CatchupResult
	for _, missed := range c.Missed {
		rows, err := catchupCase(ctx, c, missed, progress)
		out = append(out, rows...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// catchupValue returns the n-th write's value: distinct, so no two entries
// compress alike.
func catchupValue(n, size int) []byte {
	b := make([]byte, size)
	binary.BigEndian.PutUint64(b, uint64(n))
	for i := 8; i < size; i++ {
		b[i] = byte('a' + (n+i)%26)
	}
	return b
}

func catchupCase(ctx context.Context, c CatchupConfig, missed int, progress func(CatchupResult)) (out []CatchupResult, err error) {
	nw, err := startNetwork(ctx, slices.Max(c.Join), c.Store, c.Dir)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, nw.close()) }()
	writer := nw.peers[0]
	var data int64
	// The writes go 100 to a transaction (one change per key still), so
	// the set-up does not dominate the run.
	ops := make([]datastore.Op, 0, 100)
	for k := 0; k < missed; k += 100 {
		ops = ops[:0]
		for j := k; j < min(k+100, missed); j++ {
			key := fmt.Sprintf("/join/key-%08d", j)
			ops = append(ops, datastore.OpSet(key, catchupValue(j, c.ValueSize)))
			data += int64(len(key) + c.ValueSize)
		}
		if _, err := writer.r.Txn(ctx, ops...); err != nil {
			return nil, err
		}
	}
	target, err := writer.watermark(ctx, writer.id())
	if err != nil {
		return nil, err
	}
	rr := &replicationRun{nw: nw, writers: []*netPeer{writer}}
	targets := map[peer.ID]uint64{writer.id(): target}
	if err := waitUntil(ctx, 3*deliveryTimeout, "the members", func() (bool, error) { return allReached(ctx, nw.peers, targets) }); err != nil {
		if !errors.Is(err, errTimeout) {
			return nil, err
		}
		if err := rr.repair(ctx, targets); err != nil {
			return nil, err
		}
	}
	for _, join := range c.Join {
		r, err := joinOnce(ctx, nw, c.Store, join, target)
		if err != nil {
			return out, err
		}
		r.Missed, r.DataBytes = missed, data
		r.Ratio = float64(r.BytesReceived) / float64(data)
		out = append(out, r)
		if progress != nil {
			progress(r)
		}
	}
	return out, nil
}

// joinOnce times a fresh peer connecting to join members until its
// watermark of the writer (nw.peers[0]) reaches target.
func joinOnce(ctx context.Context, nw *peerNet, store string, join int, target uint64) (res CatchupResult, err error) {
	fresh, err := nw.add(store)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, fresh.close()) }()
	writer := nw.peers[0]
	start := time.Now()
	for _, p := range nw.peers[:join] {
		if err := fresh.connect(ctx, p); err != nil {
			return res, err
		}
	}
	err = waitUntil(ctx, 10*time.Minute, "the fresh peer to catch up", func() (bool, error) {
		w, err := fresh.watermark(ctx, writer.id())
		return w >= target, err
	})
	if err != nil {
		return res, err
	}
	res.Join, res.Millis = join, float64(time.Since(start).Microseconds())/1000
	// Catch-ups still running count too: wait for them to end.
	err = waitUntil(ctx, time.Minute, "the catch-ups to end", func() (bool, error) {
		st := fresh.g.Stats()
		return st.Syncs+st.SyncErrors >= uint64(join), nil
	})
	if err != nil {
		return res, err
	}
	st := fresh.g.Stats()
	res.BytesReceived = int64(st.SyncBytesReceived + st.RepairBytes)
	res.Syncs = st.Syncs
	return res, nil
}
