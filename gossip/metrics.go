package gossip

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exposes the gossip's Stats as Prometheus metrics.
func (g *Gossip) Collector() prometheus.Collector { return collector{g} }

type collector struct{ g *Gossip }

var (
	descChanges = prometheus.NewDesc("peerstate_gossip_changes_total",
		"Replicated changes by what happened to them.", []string{"event"}, nil)
	descMessages = prometheus.NewDesc("peerstate_gossip_messages_total",
		"Pubsub messages published and received.", []string{"direction"}, nil)
	descRejected = prometheus.NewDesc("peerstate_gossip_rejected_total",
		"Messages, frames and values rejected as invalid, by reason.", []string{"reason"}, nil)
	descIgnored = prometheus.NewDesc("peerstate_gossip_ignored_total",
		"Messages ignored without penalty, by reason.", []string{"reason"}, nil)
	descBytes = prometheus.NewDesc("peerstate_gossip_bytes_total",
		"Bytes of the gossip protocols.", []string{"protocol", "direction"}, nil)
	descSyncs = prometheus.NewDesc("peerstate_gossip_syncs_total",
		"Catch-up exchanges by outcome.", []string{"result"}, nil)
	descTopicPeers = prometheus.NewDesc("peerstate_gossip_topic_peers",
		"Peers subscribed to the change topic.", nil, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descChanges, descMessages, descRejected, descIgnored, descBytes, descSyncs, descTopicPeers} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.g.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for event, v := range map[string]uint64{
		"broadcast": st.Broadcast, "dropped": st.Dropped, "published": st.PublishedChanges,
		"received": st.ReceivedChanges, "applied": st.Applied, "stale": st.Stale,
		"skipped": st.Skipped, "apply_error": st.ApplyErrors, "fetched": st.Fetches,
		"sync_sent": st.SyncChangesSent, "sync_received": st.SyncChangesReceived,
	} {
		counter(descChanges, v, event)
	}
	counter(descMessages, st.Published, "published")
	counter(descMessages, st.Received, "received")
	for reason, v := range st.Rejected {
		counter(descRejected, v, reason)
	}
	for reason, v := range st.Ignored {
		counter(descIgnored, v, reason)
	}
	counter(descBytes, st.PubsubBytesSent, "pubsub", "sent")
	counter(descBytes, st.PubsubBytesReceived, "pubsub", "received")
	counter(descBytes, st.SyncBytesSent, "sync", "sent")
	counter(descBytes, st.SyncBytesReceived, "sync", "received")
	counter(descBytes, st.ValueBytesSent, "value", "sent")
	counter(descBytes, st.ValueBytesReceived, "value", "received")
	counter(descSyncs, st.Syncs, "ok")
	counter(descSyncs, st.SyncErrors, "error")
	counter(descSyncs, st.SyncsServed, "served")
	counter(descSyncs, st.SyncsRefused, "refused")
	ch <- prometheus.MustNewConstMetric(descTopicPeers, prometheus.GaugeValue, float64(len(c.g.Peers())))
}
