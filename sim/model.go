package sim

import (
	"container/heap"
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/replica"
)

// epoch is virtual time zero, the same instant testing/synctest starts at.
var epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// event is one scheduled step of a model run. Ties in time run in the order
// they were scheduled, so a run depends on its seed only.
type event struct {
	at  time.Duration
	seq uint64
	fn  func()
}

type eventQueue []*event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return e
}

// disk is a peer's local store that outlives a crash of its replica: the
// replica's Close leaves it open, as a process crash leaves a file.
type disk struct{ datastore.Store }

func (disk) Close() error { return nil }

// message is one pubsub message of the model: a batch of one origin's
// changes, identified like a pubsub message ID.
type message struct {
	id      uint64
	changes []change
	size    int
}

// modelPeer is one peer of a model run.
type modelPeer struct {
	idx    int
	id     string
	key    crypto.PrivKey
	store  datastore.Store // the durable store, across restarts
	rep    *replica.Replica
	up     bool
	gone   bool // left for good
	joined bool // joined during the run
	side   int
	skew   time.Duration
	mesh   []int
	seen   map[uint64]struct{}
	state  []int32 // per key: the tracked change the peer holds, -1 none
	match  int     // keys whose state is the newest acknowledged write
	backup datastore.Store
	watch  *watchLog

	ackedAtCrash int // writes acknowledged when it crashed
	missed       int // writes acknowledged while it was down
	restartedAt  time.Duration
	restartBytes int
	restartDone  bool
}

// model is one model-level run.
type model struct {
	ctx    context.Context
	sc     Scenario
	rng    *rand.Rand
	now    time.Duration
	end    time.Duration
	queue  eventQueue
	seq    uint64
	peers  []*modelPeer
	idList []string
	upN    int
	msgID  uint64

	tracker
	wl *workload

	// convergence
	totalMatch  int
	convergedAt time.Duration // start of the current converged stretch; -1 if not converged
	lastWrite   time.Duration
	curve       []CurvePoint

	// counters
	sent, sentBytes, dups, dropped        uint64
	syncs, syncChanges, syncBytes, events uint64
	rejected                              uint64
	attacks                               uint64
	peakHeap                              uint64
	restarts                              []*modelPeer
	err                                   error
	progress                              func(done, total time.Duration)
}

// tracker follows every acknowledged write and which peer holds what.
type tracker struct {
	keys     map[string]int32
	keyNames []string
	best     []int32 // per key: the newest acknowledged write
	ids      map[tracked]int32
	changes  []trackedChange
}

type trackedChange struct {
	c      change
	key    int32
	origin int
	at     time.Duration
}

func (m *model) schedule(after time.Duration, fn func()) {
	m.seq++
	heap.Push(&m.queue, &event{at: m.now + after, seq: m.seq, fn: fn})
}

func (m *model) clock(p *modelPeer) func() time.Time {
	return func() time.Time { return epoch.Add(m.now + p.skew) }
}

// runModel runs a scenario at the model level.
func runModel(ctx context.Context, sc Scenario, progress func(done, total time.Duration)) (*Report, error) {
	m := &model{
		ctx:         ctx,
		sc:          sc,
		rng:         rand.New(rand.NewPCG(sc.Seed, 0x5eed)),
		convergedAt: -1,
		progress:    progress,
		tracker:     tracker{keys: map[string]int32{}, ids: map[tracked]int32{}},
	}
	start := time.Now()
	defer m.closeAll()
	if err := m.setup(); err != nil {
		return nil, err
	}
	m.loop()
	if m.err != nil {
		return nil, m.err
	}
	rep, err := m.report()
	if err != nil {
		return nil, err
	}
	rep.Resources.Wall = time.Since(start)
	rep.Resources.PeakHeap = m.peakHeap
	rep.Resources.Events = m.events
	return rep, nil
}

func (m *model) setup() error {
	sc := m.sc
	for range sc.Peers {
		if err := m.addPeer(false); err != nil {
			return err
		}
	}
	// Mesh: a ring, so the mesh is connected, plus random links up to
	// about Fanout per peer.
	for i, p := range m.peers {
		m.link(i, (i+1)%len(m.peers))
		for len(p.mesh) < sc.Fanout {
			m.link(i, m.rng.IntN(len(m.peers)))
		}
	}
	m.wl = newWorkload(m.sc, m.rng)
	var restartSet, churnSet []int
	// The first Watchers peers keep a watch (and a long change log, so
	// the watch never falls behind it); faults pick among the others.
	perm := m.rng.Perm(sc.Peers - m.watchers())
	for i := range perm {
		perm[i] += m.watchers()
	}
	next := 0
	take := func(n int) []int {
		n = min(n, len(perm)-next)
		s := perm[next : next+n]
		next += n
		return s
	}
	if r := sc.Restart; r != nil {
		restartSet = take(r.Peers)
	}
	if c := sc.Churn; c != nil {
		churnSet = take(c.Leave)
	}
	for i := range m.watchers() {
		w, err := startWatch(m.ctx, m.peers[i].rep)
		if err != nil {
			return err
		}
		m.peers[i].watch = w
	}
	m.scheduleFaults(restartSet, churnSet)
	if h := sc.Hostile; h != nil {
		for i := sc.Peers - h.Peers; i < sc.Peers; i++ {
			m.scheduleAttack(m.peers[i])
		}
	}
	m.end = m.faultEnd() + sc.Settle.D()
	m.end = max(m.end, sc.Window.D()+sc.Settle.D())
	for i := range sc.Writes {
		at := time.Duration(int64(sc.Window.D()) * int64(i) / int64(max(sc.Writes, 1)))
		m.seq++
		heap.Push(&m.queue, &event{at: at, seq: m.seq, fn: m.write})
	}
	for _, p := range m.peers {
		m.scheduleSync(p)
	}
	m.schedule(0, m.sample)
	return nil
}

// addPeer creates the next peer, up and empty.
func (m *model) addPeer(joined bool) error {
	idx := len(m.peers)
	key, err := peerKey(m.sc.Seed, idx)
	if err != nil {
		return fmt.Errorf("sim: key: %w", err)
	}
	p := &modelPeer{idx: idx, key: key, up: true, joined: joined, seen: map[uint64]struct{}{}}
	p.skew = peerSkew(m.sc, idx, m.rng)
	p.store = m.newStore(p)
	rep, err := openReplica(m.ctx, key, disk{p.store}, m.clock(p), broadcaster{m, p})
	if err != nil {
		return fmt.Errorf("sim: open peer %d: %w", idx, err)
	}
	p.rep, p.id = rep, rep.ID()
	p.state = make([]int32, len(m.keyNames))
	for k := range p.state {
		p.state[k] = -1
	}
	m.peers = append(m.peers, p)
	m.upN++
	return nil
}

func (m *model) watchers() int { return min(m.sc.Watchers, m.sc.Peers) }

// newStore returns a store for p. Only watched peers need the default
// change log; the others keep a short one, which is most of a peer's memory
// in a 10,000-peer run.
func (m *model) newStore(p *modelPeer) datastore.Store {
	opts := []datastore.Option{datastore.WithClock(m.clock(p)), datastore.WithDeleteMissingOK()}
	if p.idx >= m.watchers() {
		opts = append(opts, datastore.WithChangeLogRetention(64))
	}
	return memory.New(opts...)
}

func (m *model) link(a, b int) {
	if a == b || slices.Contains(m.peers[a].mesh, b) {
		return
	}
	m.peers[a].mesh = append(m.peers[a].mesh, b)
	m.peers[b].mesh = append(m.peers[b].mesh, a)
}

func (m *model) faultEnd() time.Duration {
	var end time.Duration
	if p := m.sc.Partition; p != nil {
		end = max(end, p.Heal.D())
	}
	if r := m.sc.Restart; r != nil {
		end = max(end, r.At.D()+r.Spread.D()+r.Down.D())
	}
	return end
}

func (m *model) scheduleFaults(restartSet, churnSet []int) {
	sc := m.sc
	if p := sc.Partition; p != nil {
		frac := p.Fraction
		if frac == 0 {
			frac = 0.5
		}
		m.schedule(p.At.D(), func() {
			perm := m.rng.Perm(len(m.peers))
			for j, i := range perm {
				if float64(j) < frac*float64(len(perm)) {
					m.peers[i].side = 1
				} else {
					m.peers[i].side = 0
				}
			}
		})
		m.schedule(p.Heal.D(), func() {
			for _, q := range m.peers {
				q.side = 0
			}
			// Connections come back: each peer catches up with one peer.
			for _, q := range m.peers {
				if q.up {
					m.syncWithNeighbours(q, 1)
				}
			}
		})
	}
	if r := sc.Restart; r != nil {
		for _, i := range restartSet {
			at := r.At.D()
			if r.Spread > 0 {
				at += time.Duration(m.rng.Int64N(int64(r.Spread)))
			}
			p := m.peers[i]
			if r.FromBackup {
				m.schedule(max(0, at-r.Backup.D()), func() { m.takeBackup(p) })
			}
			m.schedule(at, func() { m.crash(p) })
			m.schedule(at+r.Down.D(), func() { m.restart(p) })
		}
	}
	if c := sc.Churn; c != nil {
		window := max(sc.Window.D(), time.Millisecond)
		for _, i := range churnSet {
			p := m.peers[i]
			m.schedule(time.Duration(m.rng.Int64N(int64(window))), func() { m.leave(p) })
		}
		for range c.Join {
			m.schedule(time.Duration(m.rng.Int64N(int64(window))), m.join)
		}
	}
}

// loop runs events until the end of the run.
func (m *model) loop() {
	for m.queue.Len() > 0 && m.err == nil {
		e := heap.Pop(&m.queue).(*event)
		if e.at > m.end {
			break
		}
		m.now = e.at
		m.events++
		e.fn()
		m.noteConvergence()
	}
	m.now = m.end
}

func (m *model) fail(err error) {
	if m.err == nil && err != nil {
		m.err = err
	}
}

// sample records a point of the convergence curve and the heap size.
func (m *model) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.peakHeap = max(m.peakHeap, ms.HeapInuse)
	m.curve = append(m.curve, CurvePoint{T: m.now.Seconds(), Converged: m.convergedFraction()})
	if m.progress != nil {
		m.progress(m.now, m.end)
	}
	if m.now+m.sc.Sample.D() <= m.end {
		m.schedule(m.sc.Sample.D(), m.sample)
	}
}

func (m *model) target() int { return m.upN * len(m.keyNames) }

func (m *model) convergedFraction() float64 {
	if m.target() == 0 {
		return 1
	}
	return float64(m.totalMatch) / float64(m.target())
}

func (m *model) noteConvergence() {
	if m.totalMatch == m.target() {
		if m.convergedAt < 0 {
			m.convergedAt = m.now
		}
	} else {
		m.convergedAt = -1
	}
}

// broadcaster is a peer's replica.Broadcaster: it hands local changes to
// the model's message layer.
type broadcaster struct {
	m *model
	p *modelPeer
}

func (b broadcaster) Broadcast(_ context.Context, changes []change) error {
	b.m.publish(b.p, changes)
	return nil
}

// publish records changes a peer's replica committed (so acknowledged) and
// sends them to the peer's mesh.
func (m *model) publish(p *modelPeer, changes []change) {
	for _, c := range changes {
		id := m.track(p, c)
		m.hold(p, c.Key, id)
	}
	m.msgID++
	msg := &message{id: m.msgID, changes: slices.Clone(changes), size: changesSize(changes)}
	p.seen[msg.id] = struct{}{}
	for _, q := range p.mesh {
		m.send(p, m.peers[q], msg)
	}
}

// track records an acknowledged write and makes it the key's newest if it
// is.
func (m *model) track(p *modelPeer, c change) int32 {
	k := m.keyIndex(c.Key)
	id := int32(len(m.changes))
	m.changes = append(m.changes, trackedChange{c: c, key: k, origin: p.idx, at: m.now})
	m.ids[trackedOf(c)] = id
	m.lastWrite = m.now
	if old := m.best[k]; old < 0 || newer(c, m.changes[old].c) {
		m.best[k] = id
		for _, q := range m.peers {
			if old >= 0 && q.state[k] == old {
				m.addMatch(q, -1)
			}
		}
	}
	return id
}

func (m *model) keyIndex(key string) int32 {
	if k, ok := m.keys[key]; ok {
		return k
	}
	k := int32(len(m.keyNames))
	m.keys[key] = k
	m.keyNames = append(m.keyNames, key)
	m.best = append(m.best, -1)
	for _, q := range m.peers {
		q.state = append(q.state, -1)
	}
	return k
}

// hold notes that peer p now holds change id for key (after a write or an
// apply), and records how long the change took to become visible there.
func (m *model) hold(p *modelPeer, key string, id int32) {
	k := m.keys[key]
	old := p.state[k]
	if old == id {
		return
	}
	best := m.best[k]
	if old == best && best >= 0 {
		m.addMatch(p, -1)
	}
	p.state[k] = id
	if id == best {
		m.addMatch(p, 1)
	}
	tc := m.changes[id]
	if tc.origin != p.idx {
		m.wl.visible(p.idx, m.now-tc.at)
	}
	if p.restartedAt > 0 && !p.restartDone && p.match == len(m.keyNames) {
		p.restartDone = true
		p.restartedAt = m.now - p.restartedAt
	}
}

func (m *model) addMatch(p *modelPeer, d int) {
	p.match += d
	if p.up {
		m.totalMatch += d
	}
}

// reachable reports whether a message from a can reach b now.
func (m *model) reachable(a, b *modelPeer) bool {
	return a.up && b.up && a.side == b.side
}

func (m *model) send(from, to *modelPeer, msg *message) {
	m.sent++
	m.sentBytes += uint64(msg.size)
	if !m.reachable(from, to) || m.rng.Float64() < m.sc.Loss {
		m.dropped++
		return
	}
	delay := m.delay(msg.size)
	if m.rng.Float64() < m.sc.Reorder {
		delay += time.Duration(m.rng.Int64N(int64(m.sc.ReorderDelay) + 1))
	}
	m.schedule(delay, func() { m.deliver(from, to, msg) })
	if m.rng.Float64() < m.sc.Duplicate {
		m.sent++
		m.sentBytes += uint64(msg.size)
		m.schedule(delay+m.delay(msg.size), func() { m.deliver(from, to, msg) })
	}
}

// delay is one message's one-way time: latency, jitter, transmission.
func (m *model) delay(size int) time.Duration {
	d := m.sc.Latency.D()
	if m.sc.Jitter > 0 {
		d += time.Duration(m.rng.Int64N(int64(m.sc.Jitter) + 1))
	}
	if m.sc.Bandwidth > 0 {
		d += time.Duration(int64(size) * int64(time.Second) / int64(m.sc.Bandwidth))
	}
	return d
}

func (m *model) deliver(from, to *modelPeer, msg *message) {
	// A message in flight arrives even if its sender has gone since.
	if !to.up || from.side != to.side {
		m.dropped++
		return
	}
	if _, ok := to.seen[msg.id]; ok {
		m.dups++
		return
	}
	to.seen[msg.id] = struct{}{}
	rejected, err := m.apply(to, from, msg.changes)
	if err != nil {
		m.fail(err)
		return
	}
	if rejected {
		return // gossipsub's validator stops it here
	}
	for _, q := range to.mesh {
		if q != from.idx {
			m.send(to, m.peers[q], msg)
		}
	}
}

// apply applies changes from a peer and follows what the receiver holds.
// It reports whether the replica rejected some of them as invalid.
func (m *model) apply(to, from *modelPeer, cs []change) (rejected bool, err error) {
	if _, err := to.rep.Apply(m.ctx, from.id, cs); err != nil {
		if !invalidChange(err) {
			return false, fmt.Errorf("sim: %s applies from %s: %w", to.id, from.id, err)
		}
		m.rejected++ // the valid ones are applied; the checks see the rest
		rejected = true
	}
	return rejected, m.refresh(to, cs)
}

// scheduleAttack has hostile peer p send its next attack (see Hostile).
func (m *model) scheduleAttack(p *modelPeer) {
	every := m.sc.Hostile.Every.D()
	if every == 0 {
		every = 200 * time.Millisecond
	}
	m.schedule(every/2+time.Duration(m.rng.Int64N(int64(every)+1)), func() {
		if p.gone || m.now > m.sc.Window.D() {
			return
		}
		if p.up && len(m.changes) > 1 {
			if err := m.attack(p); err != nil {
				m.fail(err)
				return
			}
		}
		m.scheduleAttack(p)
	})
}

func (m *model) attack(p *modelPeer) error {
	recent := m.changes[len(m.changes)-1-m.rng.IntN(min(len(m.changes), 20))].c
	tampered := recent
	tampered.Value = append(slices.Clone(recent.Value), "!"...)
	tampered.ValueHash = nil

	victim := m.changes[m.rng.IntN(len(m.changes))].c
	forged := victim
	forged.Version++
	forged.HLC++
	forged.Seq++
	forged.Deleted, forged.Value, forged.ValueHash = false, []byte("forged"), nil
	if err := replica.SignWith(p.key, &forged); err != nil {
		return fmt.Errorf("sim: forge: %w", err)
	}
	forged.Origin = victim.Origin // signed by p, in the victim's name

	old := m.changes[m.rng.IntN(len(m.changes))].c
	cs := []change{tampered, forged, old}
	m.attacks += uint64(len(cs))
	m.msgID++
	msg := &message{id: m.msgID, changes: cs, size: changesSize(cs)}
	p.seen[msg.id] = struct{}{}
	for _, q := range p.mesh {
		m.send(p, m.peers[q], msg)
	}
	return nil
}

// refresh reads back the keys of cs on p and tracks what p holds.
func (m *model) refresh(p *modelPeer, cs []change) error {
	for _, c := range cs {
		cur, ok, err := current(m.ctx, p.rep, c.Key)
		if err != nil {
			return fmt.Errorf("sim: %s: %w", p.id, err)
		}
		if !ok {
			continue
		}
		if id, ok := m.ids[trackedOf(cur)]; ok {
			m.hold(p, cur.Key, id)
		}
	}
	return nil
}

func (m *model) scheduleSync(p *modelPeer) {
	iv := m.sc.SyncInterval.D()
	d := iv/2 + time.Duration(m.rng.Int64N(int64(iv)+1))
	m.schedule(d, func() {
		if p.gone {
			return
		}
		if p.up {
			m.syncWithNeighbours(p, m.sc.SyncFanout)
		}
		m.scheduleSync(p)
	})
}

// syncWithNeighbours starts catch-ups of p with n random reachable mesh
// neighbours (or any reachable peer if none is).
func (m *model) syncWithNeighbours(p *modelPeer, n int) {
	var cands []int
	for _, q := range p.mesh {
		if m.reachable(p, m.peers[q]) {
			cands = append(cands, q)
		}
	}
	if len(cands) == 0 {
		for tries := 0; tries < 8 && len(cands) == 0; tries++ {
			q := m.rng.IntN(len(m.peers))
			if q != p.idx && m.reachable(p, m.peers[q]) {
				cands = append(cands, q)
			}
		}
	}
	for range min(n, len(cands)) {
		j := m.rng.IntN(len(cands))
		b := m.peers[cands[j]]
		cands = slices.Delete(cands, j, j+1)
		// A round trip before the stream starts, then the stream.
		m.schedule(2*m.delay(0), func() { m.catchUp(p, b) })
	}
}

func (m *model) catchUp(a, b *modelPeer) {
	if !m.reachable(a, b) {
		return
	}
	m.syncs++
	catching := a.restartedAt > 0 && !a.restartDone // before the stream completes it
	n, bytes, err := catchUp(m.ctx, a.rep, b.rep, func(cs []change) {
		if err := m.refresh(a, cs); err != nil {
			m.fail(err)
		}
	})
	if err != nil {
		m.fail(fmt.Errorf("sim: catch-up of %s from %s: %w", a.id, b.id, err))
		return
	}
	m.syncChanges += uint64(n)
	m.syncBytes += uint64(bytes)
	if catching {
		a.restartBytes += bytes
	}
}

func (m *model) setUp(p *modelPeer, up bool) {
	if p.up == up {
		return
	}
	p.up = up
	if up {
		m.upN++
		m.totalMatch += p.match
	} else {
		m.upN--
		m.totalMatch -= p.match
	}
}

func (m *model) crash(p *modelPeer) {
	if !p.up || p.gone {
		return
	}
	p.ackedAtCrash = len(m.changes)
	// match is kept while down so it is right again when the peer returns.
	m.setUp(p, false)
	m.fail(p.rep.Close())
	p.rep = nil
}

func (m *model) takeBackup(p *modelPeer) {
	b := m.newStore(p)
	if err := copyStore(m.ctx, p.store, b); err != nil {
		m.fail(err)
		return
	}
	p.backup = b
}

func (m *model) restart(p *modelPeer) {
	if p.gone || p.up {
		return
	}
	if p.backup != nil {
		m.fail(p.store.Close())
		p.store, p.backup = p.backup, nil
	}
	rep, err := openReplica(m.ctx, p.key, disk{p.store}, m.clock(p), broadcaster{m, p})
	if err != nil {
		m.fail(fmt.Errorf("sim: restart %s: %w", p.id, err))
		return
	}
	p.rep = rep
	// Recount what the restarted store holds.
	p.match = 0
	for k, key := range m.keyNames {
		p.state[k] = -1
		cur, ok, err := current(m.ctx, rep, key)
		if err != nil {
			m.fail(err)
			return
		}
		if !ok {
			continue
		}
		if id, ok := m.ids[trackedOf(cur)]; ok {
			p.state[k] = id
			if id == m.best[k] {
				p.match++
			}
		}
	}
	m.setUp(p, true)
	p.restartedAt, p.restartBytes, p.restartDone = m.now, 0, false
	p.missed = len(m.changes) - p.ackedAtCrash
	if p.match == len(m.keyNames) {
		p.restartDone, p.restartedAt = true, time.Nanosecond
	}
	m.restarts = append(m.restarts, p)
	// Catch-up with the peers it reconnects to.
	m.syncWithNeighbours(p, m.sc.SyncFanout)
}

func (m *model) leave(p *modelPeer) {
	if p.gone {
		return
	}
	m.setUp(p, false)
	p.gone = true
	if p.rep != nil {
		m.fail(p.rep.Close())
		p.rep = nil
	}
}

func (m *model) join() {
	if err := m.addPeer(true); err != nil {
		m.fail(err)
		return
	}
	p := m.peers[len(m.peers)-1]
	for len(p.mesh) < max(2, m.sc.Fanout/2) {
		q := m.rng.IntN(len(m.peers) - 1)
		if m.peers[q].up {
			m.link(p.idx, q)
		}
	}
	m.syncWithNeighbours(p, m.sc.SyncFanout)
	m.scheduleSync(p)
}

// copyStore copies every key of src, bookkeeping included, into dst.
func copyStore(ctx context.Context, src, dst datastore.Store) error {
	after := ""
	for {
		page, err := src.List(ctx, "/", datastore.ListOptions{After: after})
		if err != nil {
			return fmt.Errorf("sim: backup: %w", err)
		}
		for _, e := range page.Entries {
			if _, err := dst.Set(ctx, e.Key, e.Value); err != nil {
				return fmt.Errorf("sim: backup: %w", err)
			}
		}
		if !page.More {
			return nil
		}
		after = page.Next
	}
}

func (m *model) closeAll() {
	for _, p := range m.peers {
		if p.watch != nil {
			p.watch.stop()
		}
		if p.rep != nil {
			_ = p.rep.Close()
		}
		if p.store != nil {
			_ = p.store.Close()
		}
		if p.backup != nil {
			_ = p.backup.Close()
		}
	}
}
