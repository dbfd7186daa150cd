package node

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/gossip"
	"github.com/univrs/peerstate/replica"
)

// commitBuckets span a local commit's latency: an fsync on a fast disk to a
// slow one under load.
var commitBuckets = prometheus.ExponentialBuckets(0.0005, 2, 14) // 0.5 ms … 4 s

// nodeMetrics are what the node measures itself, beside gossip's counters.
type nodeMetrics struct {
	commit *prometheus.HistogramVec // local writes, by op, until durable
	apply  *prometheus.HistogramVec // remote batches, by path, until applied

	mu      sync.Mutex
	syncs   map[peer.ID]syncSeen  // the last catch-up with each peer
	origins map[string]originSeen // the newest change received from each writer
}

// originSeen is the newest change of one writer this node received: its
// HLC, when it arrived, and how old it was then.
type originSeen struct {
	newest replica.HLC
	at     time.Time
	lag    time.Duration
}

type syncSeen struct {
	at      time.Time
	applied int // changes we lacked and applied
	ok      bool
}

func newNodeMetrics() *nodeMetrics {
	return &nodeMetrics{
		commit: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "peerstate_store_commit_seconds",
			Help:    "Time from a local write's call until it is durable, replication bookkeeping included, by operation.",
			Buckets: commitBuckets,
		}, []string{"op"}),
		apply: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "peerstate_apply_seconds",
			Help:    "Time to apply a batch of remote changes to the local store, until durable, by the path that brought it (pubsub, fetch, catchup, repair).",
			Buckets: commitBuckets,
		}, []string{"path"}),
		syncs:   map[peer.ID]syncSeen{},
		origins: map[string]originSeen{},
	}
}

// forget drops what is known of the last catch-up with p, which left.
func (m *nodeMetrics) forget(p peer.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.syncs, p)
}

// Ready reports whether the node is ready to serve replicated state: it is
// connected to a peer and its last catch-up with one of the peers connected
// now completed since that peer connected. Otherwise reason says what is
// missing: "no peers connected" or "catching up: …".
func (n *Node) Ready() (ready bool, reason string) {
	peers := n.host.Network().Peers()
	if len(peers) == 0 {
		return false, "no peers connected"
	}
	n.metrics.mu.Lock()
	defer n.metrics.mu.Unlock()
	for _, p := range peers {
		if s, ok := n.metrics.syncs[p]; ok && s.ok {
			return true, ""
		}
	}
	return false, fmt.Sprintf("catching up: no catch-up with a connected peer has completed yet (%d connected)", len(peers))
}

// sawApply measures a batch of remote changes applied. A batch with
// invalid or future-dated changes is left out of the per-writer figures:
// which of its timestamps are genuine is not known here.
func (m *nodeMetrics) sawApply(self string, a gossip.Applied) {
	m.apply.WithLabelValues(a.Path).Observe(a.Took.Seconds())
	if a.Result.Invalid > 0 || a.Result.Future > 0 {
		return
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range a.Changes {
		if c.Origin == self {
			continue
		}
		if o, ok := m.origins[c.Origin]; ok && c.HLC <= o.newest {
			continue // not news: a copy, or older than what came before
		}
		if _, known := m.origins[c.Origin]; !known && len(m.origins) >= maxWriterSeries {
			forgetOldest(m.origins, func(o originSeen) time.Time { return o.at })
		}
		m.origins[c.Origin] = originSeen{newest: c.HLC, at: now, lag: max(now.Sub(c.HLC.Time()), 0)}
	}
}

// maxWriterSeries bounds the writers (and the peers synced with) that have
// series of their own: in an open network identities come and go, and a
// metric per identity ever seen would grow without end. Past it, the one
// heard from longest ago is forgotten.
const maxWriterSeries = 256

// forgetOldest deletes the entry of m whose time is earliest.
func forgetOldest[K comparable, V any](m map[K]V, at func(V) time.Time) {
	var oldest K
	var first time.Time
	found := false
	for k, v := range m {
		if t := at(v); !found || t.Before(first) {
			oldest, first, found = k, t, true
		}
	}
	if found {
		delete(m, oldest)
	}
}

func (m *nodeMetrics) sawSync(p peer.ID, st gossip.SyncStats, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, known := m.syncs[p]; !known && len(m.syncs) >= maxWriterSeries {
		forgetOldest(m.syncs, func(s syncSeen) time.Time { return s.at })
	}
	m.syncs[p] = syncSeen{at: time.Now(), applied: st.Applied, ok: err == nil}
}

var (
	descPeers = prometheus.NewDesc("peerstate_peers_connected",
		"Peers this node is connected to.", nil, nil)
	descRevision = prometheus.NewDesc("peerstate_store_revision",
		"The local store's revision (commits so far).", nil, nil)
	descKeys = prometheus.NewDesc("peerstate_replicated_keys",
		"Replicated keys held, tombstones included (the state fingerprint's count).", nil, nil)
	descGeneration = prometheus.NewDesc("peerstate_replica_generation",
		"This peer's replication generation (new at every start).", nil, nil)
	descDiskBytes = prometheus.NewDesc("peerstate_data_dir_bytes",
		"Bytes of the files in the data directory.", nil, nil)
	descSyncAge = prometheus.NewDesc("peerstate_peer_catchup_age_seconds",
		"Seconds since the last completed catch-up with a connected peer: how stale our view of it may be.", []string{"peer"}, nil)
	descSyncLag = prometheus.NewDesc("peerstate_peer_catchup_applied",
		"Changes the last catch-up with a connected peer brought that we lacked: how far behind it we were.", []string{"peer"}, nil)
	descLag = prometheus.NewDesc("peerstate_peer_lag_seconds",
		"How old the newest change written by a peer was when it reached this node (its arrival minus its HLC time, clock skew included): the replication delay from that peer.", []string{"peer"}, nil)
	descLastChange = prometheus.NewDesc("peerstate_peer_last_change_age_seconds",
		"Seconds since this node last received a new change written by a peer.", []string{"peer"}, nil)
)

// nodeCollector reads the node's gauges at scrape time.
type nodeCollector struct{ n *Node }

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPeers, descRevision, descKeys, descGeneration, descDiskBytes, descSyncAge, descSyncLag, descLag, descLastChange} {
		ch <- d
	}
	c.n.metrics.commit.Describe(ch)
	c.n.metrics.apply.Describe(ch)
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	peers := n.host.Network().Peers()
	ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(len(peers)))
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	if page, err := n.rep.List(ctx, "/", datastore.ListOptions{Limit: 1, KeysOnly: true}); err == nil {
		ch <- prometheus.MustNewConstMetric(descRevision, prometheus.GaugeValue, float64(page.Revision))
	}
	ch <- prometheus.MustNewConstMetric(descKeys, prometheus.GaugeValue, float64(n.rep.StateFingerprint().Count))
	ch <- prometheus.MustNewConstMetric(descGeneration, prometheus.GaugeValue, float64(n.rep.Generation()))
	ch <- prometheus.MustNewConstMetric(descDiskBytes, prometheus.GaugeValue, float64(dirSize(n.cfg.DataDir)))
	now := time.Now()
	n.metrics.mu.Lock()
	for _, p := range peers {
		s, ok := n.metrics.syncs[p]
		if !ok || !s.ok {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descSyncAge, prometheus.GaugeValue, now.Sub(s.at).Seconds(), p.String())
		ch <- prometheus.MustNewConstMetric(descSyncLag, prometheus.GaugeValue, float64(s.applied), p.String())
	}
	for origin, o := range n.metrics.origins {
		ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, o.lag.Seconds(), origin)
		ch <- prometheus.MustNewConstMetric(descLastChange, prometheus.GaugeValue, now.Sub(o.at).Seconds(), origin)
	}
	n.metrics.mu.Unlock()
	n.metrics.commit.Collect(ch)
	n.metrics.apply.Collect(ch)
}

func dirSize(dir string) int64 {
	var total int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	return total
}

// Collector returns the node's Prometheus metrics: gossip's counters (see
// gossip.Gossip.Collector), connected peers, store revision, replicated
// keys, generation, data-dir size, local commit latency, remote apply
// latency by path, per connected peer the age and size of the last
// catch-up with it, and per writer (every peer whose changes reached this
// node since it started) the replication delay of its newest change and
// the time since it came.
func (n *Node) Collector() prometheus.Collector {
	return multiCollector{n.gossip.Collector(), nodeCollector{n}}
}

type multiCollector []prometheus.Collector

func (m multiCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m {
		c.Describe(ch)
	}
}

func (m multiCollector) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m {
		c.Collect(ch)
	}
}

// timedStore is the replica as the node's users see it: every local write
// is timed into peerstate_store_commit_seconds. It embeds the replica, so
// every other method (Compact, replication access) is the replica's own.
type timedStore struct {
	*replica.Replica
	m *nodeMetrics
}

func (s timedStore) observe(op string, start time.Time) {
	s.m.commit.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

func (s timedStore) Set(ctx context.Context, key string, value []byte) (uint64, error) {
	defer s.observe("set", time.Now())
	return s.Replica.Set(ctx, key, value)
}

func (s timedStore) Delete(ctx context.Context, key string) error {
	defer s.observe("delete", time.Now())
	return s.Replica.Delete(ctx, key)
}

func (s timedStore) CompareAndSet(ctx context.Context, key string, expected uint64, value []byte) (uint64, error) {
	defer s.observe("cas", time.Now())
	return s.Replica.CompareAndSet(ctx, key, expected, value)
}

func (s timedStore) CreateIfNotExists(ctx context.Context, key string, value []byte) (uint64, error) {
	defer s.observe("create", time.Now())
	return s.Replica.CreateIfNotExists(ctx, key, value)
}

func (s timedStore) Txn(ctx context.Context, ops ...datastore.Op) (datastore.TxnResult, error) {
	defer s.observe("txn", time.Now())
	return s.Replica.Txn(ctx, ops...)
}
