package node

import (
	"context"
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

	mu    sync.Mutex
	syncs map[peer.ID]syncSeen // the last catch-up with each peer
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
		syncs: map[peer.ID]syncSeen{},
	}
}

func (m *nodeMetrics) sawSync(p peer.ID, st gossip.SyncStats, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
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
)

// nodeCollector reads the node's gauges at scrape time.
type nodeCollector struct{ n *Node }

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPeers, descRevision, descKeys, descGeneration, descDiskBytes, descSyncAge, descSyncLag} {
		ch <- d
	}
	c.n.metrics.commit.Describe(ch)
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
	n.metrics.mu.Unlock()
	n.metrics.commit.Collect(ch)
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
// keys, generation, data-dir size, local commit latency, and per connected
// peer the age and size of the last catch-up with it.
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
