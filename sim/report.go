package sim

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/univrs/peerstate/replica"
)

// Report is what a run measured and checked.
type Report struct {
	Scenario  Scenario  `json:"scenario"`
	Figures   Figures   `json:"figures"`
	Checks    Checks    `json:"checks"`
	Resources Resources `json:"resources"`
}

// Figures are the run's measurements. At the model level they depend on the
// scenario and its seed only: the same seed gives equal figures. At the
// network level so do the figures Outcome keeps (see Outcome for the rest).
type Figures struct {
	Peers     int `json:"peers"`     // peers up at the end
	Writes    int `json:"writes"`    // writes attempted
	Acked     int `json:"acked"`     // replicated changes acknowledged
	Conflicts int `json:"conflicts"` // CAS and create attempts refused locally
	Keys      int `json:"keys"`      // distinct keys written
	Deletes   int `json:"deletes"`   // deletes of hot workload keys
	// ConcurrentWins counts acknowledged writes that share their key and
	// version with another one: CAS (or create) winners on different peers
	// at the same moment, ordered afterwards by HLC and origin.
	ConcurrentWins int `json:"concurrent_wins"`
	Samples        int `json:"samples"` // (write, peer) visibility samples

	// Write-to-visible latency over every (write, other peer) pair, in
	// milliseconds; WorstPeerP99 is the highest per-peer p99.
	VisibleP50   float64 `json:"visible_p50_ms"`
	VisibleP95   float64 `json:"visible_p95_ms"`
	VisibleP99   float64 `json:"visible_p99_ms"`
	VisibleMax   float64 `json:"visible_max_ms"`
	WorstPeerP99 float64 `json:"worst_peer_p99_ms"`
	// Quantiles holds the latency at each percent 0..100, for plots.
	Quantiles []float64 `json:"quantiles_ms"`

	// Push traffic: messages (and payload bytes) sent, per acknowledged
	// change per peer; duplicates received and messages dropped.
	MessagesPerUpdatePerPeer float64 `json:"messages_per_update_per_peer"`
	BytesPerUpdatePerPeer    float64 `json:"bytes_per_update_per_peer"`
	Duplicates               uint64  `json:"duplicates"`
	// Rejected counts changes a receiver refused as invalid.
	Rejected uint64 `json:"rejected"`
	// Attacks counts the tampered, impersonated and replayed changes the
	// hostile peers sent.
	Attacks uint64 `json:"attacks,omitempty"`
	Dropped uint64 `json:"dropped"`
	// SkewedUpdates counts acknowledged updates (versions above 1) written
	// by the peers whose clocks Scenario.Skew set off.
	SkewedUpdates int `json:"skewed_updates,omitempty"`

	// Catch-up: rounds, changes and bytes streamed.
	CatchUps       uint64 `json:"catch_ups"`
	CatchUpChanges uint64 `json:"catch_up_changes"`
	CatchUpBytes   uint64 `json:"catch_up_bytes"`

	// Convergence, in virtual seconds from the start: when every peer last
	// came to hold the newest acknowledged write of every key (-1: never),
	// and how long that took after the last write and after the heal.
	ConvergedAt        float64         `json:"converged_at_s"`
	ConvergeAfterWrite float64         `json:"converge_after_last_write_s"`
	ConvergeAfterHeal  float64         `json:"converge_after_heal_s,omitempty"`
	Restarted          []RestartFigure `json:"restarted,omitempty"`
	Curve              []CurvePoint    `json:"curve"`
}

// Outcome returns f without its traffic counters: messages and bytes per
// update, duplicates, catch-up rounds, changes and bytes, and restarted
// peers' catch-up bytes. What remains — writes, keys, every latency
// figure, convergence times and curve — depends on the scenario and its
// seed only, at both levels.
//
// At the network level the traffic counters can differ between runs of one
// seed. Time there is virtual, and every choice is the seed's (peer keys,
// topology, per-link latencies, faults, writes, catch-up peers and jitter,
// catch-ups taking their turns in the order they were started, a gossipsub
// mesh with nothing left to chance), but data for two streams that reaches
// a peer over one connection in one virtual instant (often in one QUIC
// packet) is read by two goroutines, and the Go scheduler decides which
// runs first. No seed or fix inside the peer can order them: both are
// correct, concurrent protocol work. Seen in the suite: two peers
// reconnected after a heal catch up with each other at once; one's request
// and the frames answering the other's arrive together, so the vector the
// one serves is read before or after it applied those frames — the same
// changes streamed, a vector one source longer or shorter (CatchUpBytes
// differs by those bytes). Likewise a push and a catch-up frame carrying
// one change: which finds it applied already decides whether the push
// counts as received or as a duplicate, and how many changes a catch-up
// streams and whether it ends in a repair. Neither the instant a change
// became visible nor any final state depends on that order; the suite runs
// every network scenario twice and asserts the figures Outcome keeps equal.
func (f Figures) Outcome() Figures {
	f.MessagesPerUpdatePerPeer, f.BytesPerUpdatePerPeer, f.Duplicates = 0, 0, 0
	f.CatchUps, f.CatchUpChanges, f.CatchUpBytes = 0, 0, 0
	f.Restarted = slices.Clone(f.Restarted)
	for i := range f.Restarted {
		f.Restarted[i].CatchUpBytes = 0
	}
	return f
}

// peerSkew is peer idx's clock offset: uniform in ±ClockSkew, plus or
// minus the Skew offset for the writers it sets off.
func peerSkew(sc Scenario, idx int, rng *rand.Rand) time.Duration {
	var d time.Duration
	if sc.ClockSkew > 0 {
		d = time.Duration(rng.Int64N(2*int64(sc.ClockSkew)+1)) - sc.ClockSkew.D()
	}
	if k := sc.Skew; k != nil {
		switch {
		case idx < k.Ahead:
			d += k.Offset.D()
		case idx < k.Ahead+k.Behind:
			d -= k.Offset.D()
		}
	}
	return d
}

// skewedUpdates counts the acknowledged updates whose origin is one of the
// first n peers (those Scenario.Skew sets off) among ids.
func skewedUpdates(acked []change, ids []string, sc Scenario) int {
	if sc.Skew == nil {
		return 0
	}
	skewed := map[string]bool{}
	for i, id := range ids {
		if i < sc.Skew.Ahead+sc.Skew.Behind {
			skewed[id] = true
		}
	}
	n := 0
	for _, c := range acked {
		if skewed[c.Origin] && c.Version > 1 {
			n++
		}
	}
	return n
}

// concurrentWins counts the acknowledged writes that share key and version.
func concurrentWins(acked []change) int {
	type kv struct {
		key     string
		version uint64
	}
	n := map[kv]int{}
	for _, c := range acked {
		n[kv{c.Key, c.Version}]++
	}
	wins := 0
	for _, k := range n {
		if k > 1 {
			wins += k
		}
	}
	return wins
}

// round3 rounds to three decimals (a microsecond, for milliseconds).
func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// RestartFigure is one restarted peer's catch-up.
type RestartFigure struct {
	Peer         string  `json:"peer"`
	Missed       int     `json:"missed"`     // writes acknowledged while it was down
	CatchUpS     float64 `json:"catch_up_s"` // from restart until it held everything; -1: never
	CatchUpBytes int     `json:"catch_up_bytes"`
}

// CurvePoint is one sample of convergence over time: the fraction of
// (peer, key) pairs at which the peer holds the key's newest acknowledged
// write.
type CurvePoint struct {
	T         float64 `json:"t_s"`
	Converged float64 `json:"converged"`
}

// Checks are the end-of-run invariants.
type Checks struct {
	// States is how many distinct state fingerprints the peers have (1:
	// all equal).
	States      int    `json:"states"`
	Fingerprint string `json:"fingerprint"`
	// Lost counts acknowledged writes newer than a peer's final state of
	// their key; Resurrected keys whose newest write is a delete but that
	// a peer holds; Diverged keys whose final state is not their newest
	// acknowledged write. Each counts once per distinct final state.
	Lost        int `json:"lost"`
	Resurrected int `json:"resurrected"`
	Diverged    int `json:"diverged"`
	// BackInTime counts acknowledged writes updated before they were
	// created (UpdatedAt < CreatedAt), which every final state is one of.
	BackInTime  int      `json:"back_in_time"`
	Watchers    int      `json:"watchers"`
	WatchErrors []string `json:"watch_errors,omitempty"`
	Failures    []string `json:"failures,omitempty"`
}

// Passed reports whether every check held.
func (c Checks) Passed() bool { return len(c.Failures) == 0 }

// Resources are what the run cost this machine; they vary between runs.
type Resources struct {
	Wall     time.Duration `json:"wall_ns"`
	PeakHeap uint64        `json:"peak_heap_bytes"`
	Events   uint64        `json:"events"`
}

// quantile of sorted xs at q in [0, 1], nearest rank.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

// latencyFigures fills the latency figures from per-peer samples.
func latencyFigures(f *Figures, perPeer map[int][]float32) {
	var all []float64
	peers := make([]int, 0, len(perPeer))
	for p := range perPeer {
		peers = append(peers, p)
	}
	slices.Sort(peers)
	for _, p := range peers {
		xs := make([]float64, len(perPeer[p]))
		for i, x := range perPeer[p] {
			xs[i] = float64(x)
		}
		all = append(all, xs...)
		slices.Sort(xs)
		f.WorstPeerP99 = max(f.WorstPeerP99, quantile(xs, 0.99))
	}
	slices.Sort(all)
	f.Samples = len(all)
	f.VisibleP50, f.VisibleP95, f.VisibleP99 = round3(quantile(all, 0.5)), round3(quantile(all, 0.95)), round3(quantile(all, 0.99))
	if len(all) > 0 {
		f.VisibleMax = round3(all[len(all)-1])
	}
	f.WorstPeerP99 = round3(f.WorstPeerP99)
	f.Quantiles = make([]float64, 101)
	for i := range f.Quantiles {
		f.Quantiles[i] = round3(quantile(all, float64(i)/100))
	}
}

// report computes the figures and runs the checks of a finished model run.
func (m *model) report() (*Report, error) {
	ctx := m.ctx
	f := Figures{
		Writes: m.wl.Writes, Acked: len(m.changes), Conflicts: m.wl.Conflicts,
		Keys: len(m.keyNames), Deletes: m.wl.Deletes,
		Duplicates: m.dups, Dropped: m.dropped, Rejected: m.rejected, Attacks: m.attacks,
		CatchUps: m.syncs, CatchUpChanges: m.syncChanges, CatchUpBytes: m.syncBytes,
		Curve: m.curve, ConvergedAt: -1, ConvergeAfterWrite: -1,
	}
	var live []*modelPeer
	for _, p := range m.peers {
		if p.up && !p.gone {
			live = append(live, p)
		}
	}
	f.Peers = len(live)
	latencyFigures(&f, m.wl.latency)
	if f.Acked > 0 {
		per := float64(f.Acked) * float64(len(m.peers))
		f.MessagesPerUpdatePerPeer = float64(m.sent) / per
		f.BytesPerUpdatePerPeer = float64(m.sentBytes) / per
	}
	if m.convergedAt >= 0 {
		f.ConvergedAt = m.convergedAt.Seconds()
		f.ConvergeAfterWrite = max(0, m.convergedAt-m.lastWrite).Seconds()
		if p := m.sc.Partition; p != nil {
			f.ConvergeAfterHeal = max(0, m.convergedAt-p.Heal.D()).Seconds()
		}
	}
	for _, p := range m.restarts {
		rf := RestartFigure{Peer: p.id, Missed: p.missed, CatchUpS: -1, CatchUpBytes: p.restartBytes}
		if p.restartDone {
			rf.CatchUpS = p.restartedAt.Seconds()
		}
		f.Restarted = append(f.Restarted, rf)
	}
	reps := make([]replicaView, len(live))
	for i, p := range live {
		reps[i] = replicaView{id: p.id, r: p.rep}
	}
	best := make(map[string]change, len(m.keyNames))
	for k, key := range m.keyNames {
		if id := m.best[k]; id >= 0 {
			best[key] = m.changes[id].c
		}
	}
	acked := make([]change, len(m.changes))
	for i, tc := range m.changes {
		acked[i] = tc.c
	}
	f.ConcurrentWins = concurrentWins(acked)
	ids := make([]string, len(m.peers))
	for i, p := range m.peers {
		ids[i] = p.id
	}
	f.SkewedUpdates = skewedUpdates(acked, ids, m.sc)
	checks, err := runChecks(ctx, reps, acked, best)
	if err != nil {
		return nil, err
	}
	for _, p := range live {
		if p.watch == nil {
			continue
		}
		checks.Watchers++
		final, err := finalStates(ctx, p.rep, m.keyNames)
		if err != nil {
			return nil, err
		}
		for _, prob := range p.watch.check(final, 10*time.Second) {
			checks.WatchErrors = append(checks.WatchErrors, p.id+": "+prob)
		}
	}
	if len(checks.WatchErrors) > 0 {
		checks.Failures = append(checks.Failures, fmt.Sprintf("%d watch stream problems", len(checks.WatchErrors)))
	}
	return &Report{Scenario: m.sc, Figures: f, Checks: checks}, nil
}

// replicaView is a peer's replica as the checks see it.
type replicaView struct {
	id string
	r  *replica.Replica
}

func finalStates(ctx context.Context, r *replica.Replica, keys []string) (map[string]change, error) {
	out := make(map[string]change, len(keys))
	for _, k := range keys {
		c, ok, err := current(ctx, r, k)
		if err != nil {
			return nil, err
		}
		if ok {
			out[k] = c
		} else {
			out[k] = change{Key: k, Deleted: true}
		}
	}
	return out, nil
}

// runChecks checks the live peers' final states: equal fingerprints, no
// acknowledged write lost, deleted keys not back, every key at its newest
// acknowledged write.
func runChecks(ctx context.Context, peers []replicaView, acked []change, best map[string]change) (Checks, error) {
	var c Checks
	groups := map[string]replicaView{}
	var order []string
	for _, p := range peers {
		fp, err := fingerprint(ctx, p.r)
		if err != nil {
			return c, fmt.Errorf("sim: fingerprint %s: %w", p.id, err)
		}
		if _, ok := groups[fp]; !ok {
			groups[fp] = p
			order = append(order, fp)
		}
	}
	c.States = len(groups)
	if len(order) > 0 {
		c.Fingerprint = order[0][:16]
	}
	if c.States > 1 {
		c.Failures = append(c.Failures, fmt.Sprintf("peers end in %d different states", c.States))
	}
	// One peer per distinct state stands for its group.
	for _, fp := range order {
		p := groups[fp]
		finals := map[string]change{}
		for key := range best {
			cur, ok, err := current(ctx, p.r, key)
			if err != nil {
				return c, err
			}
			if ok {
				finals[key] = cur
			}
		}
		for _, a := range acked {
			cur, ok := finals[a.Key]
			if !ok || newer(a, cur) {
				c.Lost++
			}
		}
		for key, b := range best {
			cur, ok := finals[key]
			if b.Deleted && ok && !cur.Deleted {
				c.Resurrected++
			}
			if !ok || !sameChange(cur, b) {
				c.Diverged++
			}
		}
	}
	for _, a := range acked {
		if a.UpdatedAt < a.CreatedAt {
			c.BackInTime++
		}
	}
	if c.BackInTime > 0 {
		c.Failures = append(c.Failures, fmt.Sprintf("%d writes updated before they were created", c.BackInTime))
	}
	if c.Lost > 0 {
		c.Failures = append(c.Failures, fmt.Sprintf("%d acknowledged writes lost", c.Lost))
	}
	if c.Resurrected > 0 {
		c.Failures = append(c.Failures, fmt.Sprintf("%d deleted keys came back", c.Resurrected))
	}
	if c.Diverged > 0 {
		c.Failures = append(c.Failures, fmt.Sprintf("%d keys not at their newest acknowledged write", c.Diverged))
	}
	return c, nil
}
