package sim

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/univrs/peerstate/datastore"
)

// workload generates the users' writes: peer info and reputation, topic
// log appends, orchestrator workloads under CAS contention, deletes and
// re-creates. It also collects the write-to-visible latencies.
type workload struct {
	sc      Scenario
	rng     *rand.Rand
	n       int
	value   []byte
	latency map[int][]float32 // per peer, in milliseconds

	Writes, Failed, Conflicts, Deletes, Creates int
}

func newWorkload(sc Scenario, rng *rand.Rand) *workload {
	return &workload{sc: sc, rng: rng, latency: map[int][]float32{}}
}

func (w *workload) visible(peer int, d time.Duration) {
	w.latency[peer] = append(w.latency[peer], float32(d.Seconds()*1000))
}

// op kinds
const (
	opInfo = iota
	opReputation
	opTopic
	opWorkload
)

func (w *workload) pick() int {
	switch w.sc.Workload {
	case WorkloadPeers:
		if w.rng.IntN(3) == 0 {
			return opReputation
		}
		return opInfo
	case WorkloadTopics:
		return opTopic
	case WorkloadCAS:
		return opWorkload
	}
	switch x := w.rng.IntN(100); {
	case x < 30:
		return opInfo
	case x < 45:
		return opReputation
	case x < 75:
		return opTopic
	default:
		return opWorkload
	}
}

func (w *workload) valueFor(writer string) []byte {
	w.n++
	v := fmt.Appendf(nil, "%s#%d:", writer, w.n)
	for len(v) < w.sc.ValueSize {
		v = append(v, byte('a'+len(v)%26))
	}
	return v
}

// do runs one write of the workload on store s of peer self; peers lists
// every peer's ID.
func (w *workload) do(ctx context.Context, s datastore.Store, self string, peers []string) error {
	w.Writes++
	var err error
	switch w.pick() {
	case opInfo:
		_, err = s.Set(ctx, "/peers/"+self+"/info", w.valueFor(self))
	case opReputation:
		target := peers[w.rng.IntN(len(peers))]
		_, err = s.Set(ctx, "/peers/"+target+"/reputation", w.valueFor(self))
	case opTopic:
		topic := fmt.Sprintf("/topics/t%d/log/%s-%07d", w.rng.IntN(4), self, w.n)
		_, err = s.CreateIfNotExists(ctx, topic, w.valueFor(self))
	case opWorkload:
		err = w.workloadOp(ctx, s, self)
	}
	if err != nil {
		w.Failed++
		if errors.Is(err, datastore.ErrVersionConflict) || errors.Is(err, datastore.ErrAlreadyExists) || errors.Is(err, datastore.ErrTxnFailed) {
			w.Conflicts++
			return nil
		}
		if errors.Is(err, datastore.ErrKeyNotFound) {
			return nil
		}
	}
	return err
}

// workloadOp is an orchestrator's step on a hot key: create it if absent,
// otherwise claim it by compare-and-set on the version it read, or, one
// time in ten, delete it if still at that version.
func (w *workload) workloadOp(ctx context.Context, s datastore.Store, self string) error {
	key := fmt.Sprintf("/workloads/w%d", w.rng.IntN(max(w.sc.HotKeys, 1)))
	e, err := s.Get(ctx, key)
	if errors.Is(err, datastore.ErrKeyNotFound) {
		w.Creates++
		_, err = s.CreateIfNotExists(ctx, key, w.valueFor(self))
		return err
	}
	if err != nil {
		return err
	}
	if w.rng.IntN(10) == 0 {
		w.Deletes++
		_, err = s.Txn(ctx, datastore.OpCheckVersion(key, e.Version), datastore.OpDelete(key))
		return err
	}
	_, err = s.CompareAndSet(ctx, key, e.Version, w.valueFor(self))
	return err
}

// peerIDs returns every peer's ID, cached until a peer joins.
func (m *model) peerIDs() []string {
	if len(m.idList) != len(m.peers) {
		m.idList = m.idList[:0]
		for _, p := range m.peers {
			m.idList = append(m.idList, p.id)
		}
	}
	return m.idList
}

// write is the model's scheduled write: a random up writer does one op.
func (m *model) write() {
	n := m.sc.Writers
	start := m.rng.IntN(n)
	for i := range n {
		p := m.peers[(start+i)%n]
		if p.up {
			m.fail(m.wl.do(m.ctx, p.rep, p.id, m.peerIDs()))
			return
		}
	}
}
