package sim

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/x/simlibp2p"
	"github.com/marcopolo/simnet"
	"github.com/multiformats/go-multiaddr"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/sqlite"
	"github.com/univrs/peerstate/gossip"
	"github.com/univrs/peerstate/replica"
)

// netPeer is one peer of a network-level run: a libp2p host on the
// simulated network, a pubsub, a replica and the gossip between them.
type netPeer struct {
	idx    int
	id     string
	h      host.Host
	cancel context.CancelFunc
	rep    *replica.Replica
	g      *gossip.Gossip
	watch  *watchLog
	held   map[string]heldState // what the watch stream shows, by key
}

type heldState struct {
	version uint64
	origin  string
}

type ackKey struct {
	key     string
	version uint64
	origin  string
}

// netRun is one network-level run. Its goroutines all live in the caller's
// synctest bubble.
type netRun struct {
	ctx   context.Context
	sc    Scenario
	nw    *simnet.Simnet
	dir   string
	peers []*netPeer
	byID  map[peer.ID]*netPeer

	timers sync.WaitGroup // reordered broadcasts still held back
	bg     sync.WaitGroup // reconnections after a heal
	bgErr  error          // guarded by mu

	// topo holds the peers each peer dials, chosen once from the seed
	// (and dialled again after a heal).
	topo [][]int

	mu      sync.Mutex // guards what follows: peers' goroutines report here
	rng     *rand.Rand // faults at the broadcaster seam and partition sides
	side    map[peer.ID]int
	acked   []change
	ackAt   map[ackKey]time.Time
	best    map[string]change
	latency map[int][]float32
	wl      *workload
	dropped uint64
}

// gate is a peer's connection gater: it refuses peers on the other side of
// a partition.
type gate struct {
	run  *netRun
	self peer.ID
}

func (g gate) allowed(p peer.ID) bool {
	g.run.mu.Lock()
	defer g.run.mu.Unlock()
	return g.run.side[g.self] == g.run.side[p]
}
func (g gate) InterceptPeerDial(p peer.ID) bool                        { return g.allowed(p) }
func (g gate) InterceptAddrDial(p peer.ID, _ multiaddr.Multiaddr) bool { return g.allowed(p) }
func (g gate) InterceptAccept(network.ConnMultiaddrs) bool             { return true }
func (g gate) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.allowed(p)
}
func (g gate) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// seam is a peer's replica.Broadcaster: it records acknowledged writes and
// injects loss, duplication and reordering before the gossip.
type seam struct {
	run *netRun
	p   *netPeer
}

func (s *seam) Broadcast(ctx context.Context, changes []change) error {
	r := s.run
	r.mu.Lock()
	now := time.Now()
	for _, c := range changes {
		r.acked = append(r.acked, c)
		r.ackAt[ackKey{c.Key, c.Version, c.Origin}] = now
		if b, ok := r.best[c.Key]; !ok || newer(c, b) {
			r.best[c.Key] = c
		}
	}
	loss, dup, reorder := r.rng.Float64() < r.sc.Loss, r.rng.Float64() < r.sc.Duplicate, r.rng.Float64() < r.sc.Reorder
	delay := time.Duration(r.rng.Int64N(int64(r.sc.ReorderDelay) + 1))
	if loss {
		r.dropped++
	}
	r.mu.Unlock()
	if loss {
		return nil
	}
	if reorder {
		// Held back, so later batches overtake it.
		held := slices.Clone(changes)
		r.timers.Add(1)
		time.AfterFunc(delay, func() {
			defer r.timers.Done()
			_ = s.p.g.Broadcast(context.WithoutCancel(ctx), held)
		})
		return nil
	}
	err := s.p.g.Broadcast(ctx, changes)
	if dup {
		err = errors.Join(err, s.p.g.Broadcast(ctx, changes))
	}
	if errors.Is(err, gossip.ErrQueueFull) {
		return nil // catch-up repairs it
	}
	return err
}

// runNetwork runs a scenario at the network level. It must run inside a
// testing/synctest bubble (see RunNetwork): it sleeps through virtual time.
//
// ctx lives in the bubble; outer, which may come from outside it, is only
// polled (a channel of another bubble cannot be waited on), so cancelling
// it ends the run at its next step.
func runNetwork(ctx, outer context.Context, sc Scenario, progress func(done, total time.Duration)) (_ *Report, err error) {
	r := &netRun{
		ctx: ctx, sc: sc,
		rng:     rand.New(rand.NewPCG(sc.Seed, 0x6e6574)),
		side:    map[peer.ID]int{},
		ackAt:   map[ackKey]time.Time{},
		best:    map[string]change{},
		latency: map[int][]float32{},
		byID:    map[peer.ID]*netPeer{},
	}
	// The workload runs on this goroutine only, with its own generator.
	r.wl = newWorkload(sc, rand.New(rand.NewPCG(sc.Seed, 0x776c)))
	if sc.Store == "sqlite" {
		if r.dir, err = os.MkdirTemp("", "peerstate-sim-"); err != nil {
			return nil, fmt.Errorf("sim: %w", err)
		}
	}
	bw := sc.Bandwidth * 8
	if bw == 0 {
		// Unlimited: a link limit queues the packets of one instant in
		// the order the goroutines that send them happen to run, which
		// would make the figures vary between runs of one seed.
		bw = math.MaxInt
	}
	link := simnet.NodeBiDiLinkSettings{
		Downlink: simnet.LinkSettings{BitsPerSecond: bw},
		Uplink:   simnet.LinkSettings{BitsPerSecond: bw},
	}
	r.nw = &simnet.Simnet{LatencyFunc: linkLatency(sc)}
	r.nw.Start()
	defer func() { err = errors.Join(err, r.close()) }()
	start := time.Now()
	for i := range sc.Peers {
		if err := r.addPeer(i, link); err != nil {
			return nil, err
		}
	}
	r.topo = topology(len(r.peers), sc.Fanout, rand.New(rand.NewPCG(sc.Seed, 0x746f706f)))
	if err := r.connect(); err != nil {
		return nil, err
	}
	// Let the mesh form and the initial catch-ups finish. The run starts
	// on a whole second, a fixed time after the start, so its writes fall
	// on the same instants in every run of the seed.
	t0 := start.Add(setupTime)
	if now := time.Now(); now.After(t0.Add(-time.Second)) {
		t0 = now.Truncate(time.Second).Add(2 * time.Second)
	}
	time.Sleep(time.Until(t0))
	total := sc.Window.D() + sc.Settle.D()
	if p := sc.Partition; p != nil {
		total = max(total, p.Heal.D()+sc.Settle.D())
	}
	var curve []CurvePoint
	var peak uint64
	var lastWrite time.Time
	converged := time.Time{}
	sampleAt := time.Duration(0)
	writeAt := func(i int) time.Duration {
		return time.Duration(int64(sc.Window.D()) * int64(i) / int64(max(sc.Writes, 1)))
	}
	var partitioned, healed bool
	next := 0
	for {
		if err := outer.Err(); err != nil {
			return nil, err
		}
		// Everything due at this instant happens first: the messages,
		// catch-ups and watch events of the bubble's other goroutines.
		// Faults, writes and samples then see the same state in every run.
		synctest.Wait()
		el := time.Since(t0)
		if p := sc.Partition; p != nil && !partitioned && el >= p.At.D() {
			partitioned = true
			r.split(p.Fraction)
		}
		if p := sc.Partition; p != nil && partitioned && !healed && el >= p.Heal.D() {
			healed = true
			r.heal()
		}
		synctest.Wait()
		for next < sc.Writes && writeAt(next) <= el {
			if err := r.write(); err != nil {
				return nil, err
			}
			lastWrite = time.Now()
			next++
		}
		synctest.Wait()
		if el >= sampleAt {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			f := r.convergedFraction()
			curve = append(curve, CurvePoint{T: sampleAt.Seconds(), Converged: f})
			if f == 1 && converged.IsZero() {
				converged = t0.Add(sampleAt)
			} else if f < 1 {
				converged = time.Time{}
			}
			if progress != nil {
				progress(sampleAt, total)
			}
			sampleAt += sc.Sample.D()
		}
		if el >= total {
			break
		}
		wake := sampleAt
		if next < sc.Writes {
			wake = min(wake, writeAt(next))
		}
		time.Sleep(max(time.Until(t0.Add(wake)), time.Millisecond))
	}
	r.bg.Wait()
	r.mu.Lock()
	err = r.bgErr
	r.mu.Unlock()
	if err != nil {
		return nil, err
	}
	rep, err := r.report(curve, t0, lastWrite, converged)
	if err != nil {
		return nil, err
	}
	rep.Resources.PeakHeap = peak
	return rep, nil
}

// gossipConfig is peer i's gossip configuration: its catch-up jitter and
// choice of peers come from a generator of its own, seeded from the
// scenario's seed.
func (r *netRun) gossipConfig(i int) gossip.Config {
	cfg := gossip.DefaultConfig()
	cfg.SyncInterval = r.sc.SyncInterval.D()
	cfg.SyncFanout = r.sc.SyncFanout
	rng := rand.New(rand.NewPCG(r.sc.Seed, 0x73796e6300000000|uint64(i)))
	var mu sync.Mutex
	cfg.Rand = func() float64 {
		mu.Lock()
		defer mu.Unlock()
		return rng.Float64()
	}
	return cfg
}

// meshParams are gossipsub's parameters with a mesh degree no peer
// reaches, so every peer's mesh is all its connections. Gossipsub picks
// mesh members with the process-wide math/rand and in map order, neither
// of which a seed controls; with these bounds it has no choice to make, so
// the paths a message takes are those of the topology chosen from the
// seed. Peers have about Fanout connections, so the mesh degree is about
// that of gossipsub's default D.
func meshParams() pubsub.GossipSubParams {
	p := pubsub.DefaultGossipSubParams()
	p.D, p.Dlo, p.Dhi, p.Dscore, p.Dout = 1<<16, 1<<16, 1<<16, 1<<16, 0
	return p
}

func (r *netRun) addPeer(i int, link simnet.NodeBiDiLinkSettings) error {
	priv, err := peerKey(r.sc.Seed, i)
	if err != nil {
		return fmt.Errorf("sim: key: %w", err)
	}
	pid, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		return fmt.Errorf("sim: key: %w", err)
	}
	addr := fmt.Sprintf("/ip4/%s/udp/8000/quic-v1", simnet.IntToPublicIPv4(i))
	h, err := libp2p.New(
		libp2p.Identity(priv),
		libp2p.ListenAddrStrings(addr),
		simlibp2p.QUICSimnet(r.nw, link),
		libp2p.DisableIdentifyAddressDiscovery(),
		libp2p.ResourceManager(&network.NullResourceManager{}),
		libp2p.ConnectionGater(gate{run: r, self: pid}),
	)
	if err != nil {
		return fmt.Errorf("sim: host %d: %w", i, err)
	}
	p := &netPeer{idx: i, id: h.ID().String(), h: h, held: map[string]heldState{}}
	r.peers = append(r.peers, p)
	r.byID[h.ID()] = p
	var local datastore.Store
	if r.sc.Store == "sqlite" {
		s, err := sqlite.Open(filepath.Join(r.dir, fmt.Sprintf("peer-%05d.db", i)))
		if err != nil {
			return fmt.Errorf("sim: sqlite: %w", err)
		}
		local = s
	} else {
		local = memory.New(datastore.WithDeleteMissingOK())
	}
	bc := &seam{run: r, p: p}
	skew := peerSkew(r.sc, i, r.rng)
	now := func() time.Time { return time.Now().Add(skew) }
	if p.rep, err = openReplica(r.ctx, priv, local, now, bc); err != nil {
		_ = local.Close()
		return fmt.Errorf("sim: replica %d: %w", i, err)
	}
	cfg := r.gossipConfig(i)
	psCtx, cancel := context.WithCancel(r.ctx)
	p.cancel = cancel
	ps, err := gossip.NewPubSub(psCtx, h, cfg, pubsub.WithPeerExchange(false), pubsub.WithGossipSubParams(meshParams()))
	if err != nil {
		return fmt.Errorf("sim: pubsub %d: %w", i, err)
	}
	if p.g, err = gossip.New(r.ctx, h, ps, p.rep, cfg); err != nil {
		return fmt.Errorf("sim: gossip %d: %w", i, err)
	}
	p.watch, err = startWatchFunc(r.ctx, p.rep, func(ev datastore.Event) { r.observe(p, ev) })
	return err
}

// linkLatency returns the simulated network's latency function: each
// direction of each link has its own latency, Latency plus a jitter in
// [0, Jitter] drawn from the seed and the link's two addresses. It is a
// property of the link rather than of the packet, so it does not depend on
// the order in which the packets of one instant reach the router.
func linkLatency(sc Scenario) func(*simnet.Packet) time.Duration {
	if sc.Jitter == 0 {
		return func(*simnet.Packet) time.Duration { return sc.Latency.D() }
	}
	var mu sync.Mutex
	links := map[[2]string]time.Duration{}
	return func(p *simnet.Packet) time.Duration {
		k := [2]string{p.From.String(), p.To.String()}
		mu.Lock()
		defer mu.Unlock()
		d, ok := links[k]
		if !ok {
			h := fnv.New64a()
			_ = binary.Write(h, binary.LittleEndian, sc.Seed)
			_, _ = h.Write([]byte(k[0] + "|" + k[1]))
			d = sc.Latency.D() + time.Duration(h.Sum64()%uint64(sc.Jitter+1))
			links[k] = d
		}
		return d
	}
}

// setupTime is how long after its start a network-level run begins its
// workload: the hosts connect and the mesh forms first.
const setupTime = 3 * time.Second

// topology chooses the peers each of n peers dials: the next one, so the
// graph is connected, and random others up to fanout/2, so each peer has
// about fanout connections. Each link is dialled by one side only: two
// peers dialling each other at once would open two connections, and which
// one a protocol then uses would be left to chance.
func topology(n, fanout int, rng *rand.Rand) [][]int {
	topo := make([][]int, n)
	linked := map[[2]int]bool{}
	link := func(i, j int) bool {
		k := [2]int{min(i, j), max(i, j)}
		if i == j || linked[k] {
			return false
		}
		linked[k] = true
		topo[i] = append(topo[i], j)
		return true
	}
	for i := range n {
		link(i, (i+1)%n)
	}
	want := min(max(1, fanout/2), n-1)
	for i := range n {
		for tries := 0; len(topo[i]) < want && tries < 4*n; tries++ {
			link(i, rng.IntN(n))
		}
	}
	return topo
}

// connect dials the links of the topology, every peer at once, and waits.
// A link already up is left as it is.
func (r *netRun) connect() error {
	errs := make([]error, len(r.peers))
	var wg sync.WaitGroup
	for i, p := range r.peers {
		wg.Go(func() {
			for _, j := range r.topo[i] {
				q := r.peers[j]
				if !(gate{run: r, self: p.h.ID()}).allowed(q.h.ID()) {
					continue
				}
				ctx, cancel := context.WithTimeout(r.ctx, 30*time.Second)
				err := p.h.Connect(ctx, peer.AddrInfo{ID: q.h.ID(), Addrs: q.h.Addrs()})
				cancel()
				if err != nil {
					errs[i] = fmt.Errorf("sim: connect %d to %d: %w", i, j, err)
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (r *netRun) split(frac float64) {
	if frac == 0 {
		frac = 0.5
	}
	r.mu.Lock()
	perm := r.rng.Perm(len(r.peers))
	for j, i := range perm {
		s := 0
		if float64(j) < frac*float64(len(perm)) {
			s = 1
		}
		r.side[r.peers[i].h.ID()] = s
	}
	r.mu.Unlock()
	for _, p := range r.peers {
		for _, c := range p.h.Network().Conns() {
			if !(gate{run: r, self: p.h.ID()}).allowed(c.RemotePeer()) {
				_ = c.Close()
			}
		}
	}
}

// heal joins the sides again and, in the background, reconnects the links
// the split cut; the run waits for it before its report.
func (r *netRun) heal() {
	r.mu.Lock()
	clear(r.side)
	r.mu.Unlock()
	r.bg.Go(func() {
		if err := r.connect(); err != nil {
			r.mu.Lock()
			r.bgErr = errors.Join(r.bgErr, err)
			r.mu.Unlock()
		}
	})
}

// write does the next write of the workload on a random writer.
func (r *netRun) write() error {
	p := r.peers[r.wl.rng.IntN(r.sc.Writers)]
	ids := make([]string, len(r.peers))
	for i, q := range r.peers {
		ids[i] = q.id
	}
	return r.wl.do(r.ctx, p.rep, p.id, ids)
}

// observe follows a watch event on peer p: visibility latency and what the
// peer holds.
func (r *netRun) observe(p *netPeer, ev datastore.Event) {
	origin := ev.Origin
	if origin == "" {
		origin = p.id
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	p.held[ev.Key] = heldState{version: ev.Version, origin: origin}
	if ev.Origin == "" {
		return
	}
	if at, ok := r.ackAt[ackKey{ev.Key, ev.Version, origin}]; ok {
		r.latency[p.idx] = append(r.latency[p.idx], float32(time.Since(at).Seconds()*1000))
	}
}

func (r *netRun) convergedFraction() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.best) == 0 {
		return 1
	}
	match := 0
	for _, p := range r.peers {
		for key, b := range r.best {
			if h, ok := p.held[key]; ok && h.version == b.Version && h.origin == b.Origin {
				match++
			}
		}
	}
	return float64(match) / float64(len(r.peers)*len(r.best))
}

func (r *netRun) report(curve []CurvePoint, t0, lastWrite, converged time.Time) (*Report, error) {
	r.mu.Lock()
	f := Figures{
		Peers: len(r.peers), Writes: r.wl.Writes, Acked: len(r.acked), Conflicts: r.wl.Conflicts,
		Keys: len(r.best), Deletes: r.wl.Deletes, Dropped: r.dropped,
		Curve: curve, ConvergedAt: -1, ConvergeAfterWrite: -1,
	}
	latencyFigures(&f, r.latency)
	best := make(map[string]change, len(r.best))
	keys := make([]string, 0, len(r.best))
	for k, c := range r.best {
		best[k] = c
		keys = append(keys, k)
	}
	acked := slices.Clone(r.acked)
	r.mu.Unlock()
	f.ConcurrentWins = concurrentWins(acked)
	ids := make([]string, len(r.peers))
	for i, p := range r.peers {
		ids[i] = p.id
	}
	f.SkewedUpdates = skewedUpdates(acked, ids, r.sc)
	slices.Sort(keys)
	var msgs, bytes uint64
	for _, p := range r.peers {
		st := p.g.Stats()
		msgs += st.Received
		bytes += st.PubsubBytesReceived
		f.Duplicates += st.Ignored[gossip.ReasonStale]
		f.CatchUps += st.Syncs
		f.CatchUpChanges += st.SyncChangesReceived
		f.CatchUpBytes += st.SyncBytesReceived
	}
	if f.Acked > 0 {
		per := float64(f.Acked) * float64(len(r.peers))
		f.MessagesPerUpdatePerPeer = float64(msgs) / per
		f.BytesPerUpdatePerPeer = float64(bytes) / per
	}
	if !converged.IsZero() {
		f.ConvergedAt = converged.Sub(t0).Seconds()
		f.ConvergeAfterWrite = max(0, converged.Sub(lastWrite)).Seconds()
		if p := r.sc.Partition; p != nil {
			f.ConvergeAfterHeal = max(0, converged.Sub(t0)-p.Heal.D()).Seconds()
		}
	}
	views := make([]replicaView, len(r.peers))
	for i, p := range r.peers {
		views[i] = replicaView{id: p.id, r: p.rep}
	}
	checks, err := runChecks(r.ctx, views, acked, best)
	if err != nil {
		return nil, err
	}
	for _, p := range r.peers {
		checks.Watchers++
		final, err := finalStates(r.ctx, p.rep, keys)
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
	return &Report{Scenario: r.sc, Figures: f, Checks: checks}, nil
}

// close tears every peer down in dependency order and waits.
func (r *netRun) close() error {
	r.timers.Wait()
	var errs []error
	for _, p := range r.peers {
		if p.g != nil {
			errs = append(errs, p.g.Close())
		}
	}
	for _, p := range r.peers {
		if p.watch != nil {
			p.watch.stop()
		}
		if p.cancel != nil {
			p.cancel()
		}
		errs = append(errs, p.h.Close())
		if p.rep != nil {
			errs = append(errs, p.rep.Close())
		}
	}
	r.nw.Close()
	if r.dir != "" {
		errs = append(errs, os.RemoveAll(r.dir))
	}
	return errors.Join(errs...)
}
