package node_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/gossip"
	"github.com/univrs/peerstate/node"
	"github.com/univrs/peerstate/reputation"
)

// All the attackers at once, each a distinct identity, against one honest
// net: every defence must hold while the others are busy, and the honest
// nodes must keep replicating and end identical.

// togetherAttack is one attacker of the all-together run and what the
// honest nodes must do to it.
type togetherAttack struct {
	name    string
	m       *attacker
	reason  string // the rejection counted against it (refused: a write-policy refusal)
	banned  bool   // punished by a ban (disconnected, refused), not only graylisted
	targets int    // it attacks the first targets nodes
	run     func(ctx context.Context)
	served  int64         // whole-state loop: bytes it was served
	took    time.Duration // whole-state loop: how long it asked
}

// refused stands, in a rejectionLog, for a change the write policy refused
// (an apply result, not a gossip rejection).
const refused = "refused"

// togetherSizes scales the attacks: small under the race detector,
// BenchmarkUnderAttack's flood in the benchmark.
type togetherSizes struct {
	floodBatches int           // distinct signed messages of 50 changes
	floodFrames  int           // pubsub messages sent, cycling through the batches
	floodEvery   time.Duration // one frame per interval
	trickler     bool          // include the trickling catch-up responder (needs a short SessionTimeout)
}

// honestSide is what the attackers of newTogether know of the three
// honest nodes and ask of them: nodes in this process (honestNet), or each
// in a process of its own (peerProcs, for BenchmarkUnderAttack).
type honestSide interface {
	info(i int) peer.AddrInfo                               // node i's identity and addresses
	state(i int, p peer.ID) reputation.State                // what node i holds p as
	set(ctx context.Context, i int, key, val string) error  // a write on node i
	holds(ctx context.Context, i int, key, val string) bool // node i's store holds key = val
	fingerprint(i int) string                               // node i's state fingerprint
}

// honestNodes is how many nodes an honestSide has.
const honestNodes = 3

// newTogether makes the attackers — forger forges (it is connected to the
// first two nodes already), the rest are identities of their own —
// connected to their targets (the trickler connects when it runs:
// connecting is its attack). Everything costly (the flood's signatures) is
// done here, before the attack starts.
func newTogether(t testing.TB, hn honestSide, forger *attacker, sz togetherSizes) []*togetherAttack {
	t.Helper()
	n0, n1, victim := hn.info(0), hn.info(1), hn.info(2).ID.String()
	two := []peer.ID{n0.ID, n1.ID}
	pubsubAttacker := func() *attacker {
		m := newAttacker(t)
		m.dialInfo(n0)
		m.dialInfo(n1)
		return m
	}
	bannedOn0 := func(m *attacker) bool { return hn.state(0, m.id()) == reputation.Banned }
	pause := func(ctx context.Context, d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}

	forged := &togetherAttack{name: "forged-origin", m: forger, reason: gossip.ReasonForgedOrigin, targets: 2}
	forged.run = func(context.Context) {
		for i := range 5 { // a change of its own, under the victim's name
			forged.m.publish(victim, forged.m.change(fmt.Sprintf("/forged/%d", i), "x", 1))
		}
	}

	replay := &togetherAttack{name: "replay", m: pubsubAttacker(), reason: gossip.ReasonForgedOrigin, targets: 2}
	replay.run = func(ctx context.Context) {
		m := replay.m
		old := m.change("/replayed", "v1", 1)
		m.publish(m.id().String(), old)
		m.publish(m.id().String(), m.change("/replayed", "v2", 2))
		for {
			if hn.holds(ctx, 2, "/replayed", "v2") {
				break
			}
			if !pause(ctx, 20*time.Millisecond) {
				return
			}
		}
		m.publish(m.id().String(), old) // an old version again
		// And honest messages it received, under its own signature.
		for {
			msg, err := m.sub.Next(ctx)
			if err != nil {
				return
			}
			if from := msg.GetFrom(); from == n0.ID || from == n1.ID || from.String() == victim {
				for range 3 {
					m.publishRaw(msg.GetData())
				}
				return
			}
		}
	}

	// Signed before the attack, like the flood below: the attacker's own
	// signing and hashing of 2 MiB (three times over, in a pubsub of its
	// own) is not the honest nodes' cost.
	malformed := &togetherAttack{name: "malformed-oversized", m: newBareAttackerTo(t, n0, n1), reason: gossip.ReasonMalformed, targets: 2}
	var junk [][]byte
	for i := range 6 {
		junk = append(junk, fmt.Appendf(nil, "not a message %d", i))
	}
	big := bytes.Repeat([]byte{1}, 2<<20) // over the 1 MiB message cap
	bigMsg, err := gossip.EncodeMessage(gossip.Message{V: gossip.FormatVersion, Origin: malformed.m.id().String(),
		Changes: []gossip.WireChange{malformed.m.change("/big", string(big), 1)}})
	if err != nil {
		t.Fatal(err)
	}
	junkFrames := malformed.m.presign(append(junk, bigMsg), len(junk)+1)
	malformed.run = func(ctx context.Context) { malformed.m.floodRaw(ctx, two, junkFrames, time.Millisecond) }

	policy := &togetherAttack{name: "write-policy", m: pubsubAttacker(), reason: refused, targets: 2}
	policy.run = func(context.Context) {
		m := policy.m
		for i := range 15 {
			m.publish(m.id().String(), m.change(fmt.Sprintf("/peers/%s/info/%d", victim, i), "lies", 1))
		}
	}

	// The flood is signed before it starts and written straight onto
	// gossipsub streams (see BenchmarkUnderAttack's flood): what the honest
	// nodes pay is receiving it, not the attacker's signing in this process.
	flood := &togetherAttack{name: "flood", m: newBareAttackerTo(t, n0, n1), reason: gossip.ReasonRate, targets: 2}
	batches := make([][]byte, sz.floodBatches)
	for i := range batches {
		batch := make([]gossip.WireChange, 50)
		for j := range batch {
			batch[j] = flood.m.change(fmt.Sprintf("/spam/%d/%d", i, j), strings.Repeat("s", 200), 1)
		}
		if batches[i], err = gossip.EncodeMessage(gossip.Message{V: gossip.FormatVersion, Origin: flood.m.id().String(), Changes: batch}); err != nil {
			t.Fatal(err)
		}
	}
	frames := flood.m.presign(batches, sz.floodFrames)
	flood.run = func(ctx context.Context) { flood.m.floodRaw(ctx, two, frames, sz.floodEvery) }

	held := &togetherAttack{name: "held-streams", m: newBareAttackerTo(t, n0), reason: gossip.ReasonSessionLimit, banned: true, targets: 1}
	held.run = func(ctx context.Context) {
		var streams []network.Stream
		defer func() {
			for _, s := range streams {
				_ = s.Reset()
			}
		}()
		for i := 0; i < 20 && !bannedOn0(held.m); i++ {
			s, err := held.m.h.NewStream(ctx, n0.ID, gossip.DefaultSyncProtocol)
			if err != nil {
				return
			}
			_, _ = s.Write([]byte{9}) // a frame length, and then nothing
			streams = append(streams, s)
			if !pause(ctx, 20*time.Millisecond) {
				return
			}
		}
	}

	whole := &togetherAttack{name: "whole-state-loop", m: newBareAttackerTo(t, n0), reason: gossip.ReasonBandwidth, banned: true, targets: 1}
	whole.run = func(ctx context.Context) {
		start := time.Now()
		defer func() { whole.took = time.Since(start) }()
		for i := 0; i < 100 && ctx.Err() == nil && !bannedOn0(whole.m); i++ {
			s, err := whole.m.requestAll(n0.ID)
			if err != nil {
				return
			}
			stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
			n, _ := io.Copy(io.Discard, bufio.NewReader(s))
			stop()
			_ = s.Reset()
			whole.served += n
		}
	}

	attacks := []*togetherAttack{forged, replay, malformed, policy, flood, held, whole}
	if sz.trickler {
		trickler := &togetherAttack{name: "trickling-responder", m: newBareAttacker(t), reason: gossip.ReasonSessionTimeout, banned: true, targets: 2}
		trickler.m.h.SetStreamHandler(gossip.DefaultSyncProtocol, trickle)
		trickler.run = func(ctx context.Context) {
			for _, ai := range []peer.AddrInfo{n0, n1} {
				if err := trickler.m.h.Connect(ctx, ai); err != nil && ctx.Err() == nil {
					t.Errorf("trickler connect: %v", err)
				}
			}
		}
		attacks = append(attacks, trickler)
	}
	return attacks
}

// punishments records when each attacker was first seen punished, as
// expected, on each of its targets, from a poll every few milliseconds.
type punishments struct {
	mu sync.Mutex
	at map[*togetherAttack][]time.Duration // by target; 0 while not yet
}

// watchPunished polls the targets' reputation books until every attacker
// stands punished or ctx ends; wg owns the poll.
func watchPunished(ctx context.Context, wg *sync.WaitGroup, hn honestSide, attacks []*togetherAttack, start time.Time) *punishments {
	p := &punishments{at: map[*togetherAttack][]time.Duration{}}
	for _, a := range attacks {
		p.at[a] = make([]time.Duration, a.targets)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for !p.all() {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			p.mu.Lock()
			for a, at := range p.at {
				for i := range at {
					if at[i] == 0 && punishedAs(hn.state(i, a.m.id()), a.banned) {
						at[i] = time.Since(start)
					}
				}
			}
			p.mu.Unlock()
		}
	}()
	return p
}

// after returns when a was first seen punished on target i (0: not yet).
func (p *punishments) after(a *togetherAttack, i int) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.at[a][i]
}

// all reports whether every attacker stands punished on all its targets.
func (p *punishments) all() bool {
	return p.last() > 0
}

// last is when the last attacker was punished on its last target (0: not
// every one yet).
func (p *punishments) last() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last time.Duration
	for _, at := range p.at {
		for _, d := range at {
			if d == 0 {
				return 0
			}
			last = max(last, d)
		}
	}
	return last
}

// rejectionLog counts, per honest node, the rejections (gossip's reasons,
// and refused for write-policy refusals, by origin) against each peer.
type rejectionLog struct {
	mu     sync.Mutex
	counts []map[peer.ID]map[string]int
}

// hook installs the counting on the node config c, the next node's in
// order.
func (r *rejectionLog) hook(c *node.Config) {
	r.mu.Lock()
	i := len(r.counts)
	r.counts = append(r.counts, map[peer.ID]map[string]int{})
	r.mu.Unlock()
	c.Gossip.OnReject = func(p peer.ID, reason string) { r.add(i, p, reason, 1) }
	c.Gossip.OnApply = func(_ peer.ID, a gossip.Applied) {
		for origin, k := range a.Result.RefusedBy {
			if id, err := peer.Decode(origin); err == nil {
				r.add(i, id, refused, k)
			}
		}
	}
}

func (r *rejectionLog) add(i int, p peer.ID, reason string, k int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counts[i][p] == nil {
		r.counts[i][p] = map[string]int{}
	}
	r.counts[i][p][reason] += k
}

// of returns node i's counts against p.
func (r *rejectionLog) of(i int, p peer.ID) map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.counts[i][p])
}

// togetherConfig is every single attack test's setting at once: a small
// origin rate (the flood), frames of at most 1 MiB and a serving budget a
// few whole states deep (the whole-state loop), a short session deadline
// (the trickler). Sessions may start at 10/s so that honest catch-ups
// every 300 ms never hit the session rate; the held streams hit the
// concurrency limit, which the rate does not loosen.
func togetherConfig(c *node.Config) {
	g := &c.Gossip
	g.OriginRate, g.OriginBurst = 200, 400
	g.MaxValueSize, g.InlineValueLimit = 64<<10, 16<<10
	g.ServeBytesBurst, g.ServeBytesRate = 5<<18, 4<<10
	g.SessionRate = 10
	g.SessionTimeout, g.SyncInterval = 500*time.Millisecond, 300*time.Millisecond
}

// Every attacker of the single tests at once, each its own identity: each
// is rejected for its own reason on the nodes it attacked and ends
// punished as it does alone, while honest writes keep replicating and the
// honest nodes end identical.
func TestAttack_AllTogether(t *testing.T) {
	var rec rejectionLog
	hn := newHonestNet(t, func(c *node.Config) { togetherConfig(c); rec.hook(c) })
	ctx := context.Background()
	for i := range 100 { // a state the whole-state loop asks for: ~400 KiB, a third of its budget
		if _, err := hn.nodes[0].Store().Set(ctx, fmt.Sprintf("/bulk/%03d", i), bytes.Repeat([]byte("b"), 4<<10)); err != nil {
			t.Fatal(err)
		}
	}
	attacks := newTogether(t, hn, hn.m, togetherSizes{floodBatches: 20, floodFrames: 600, floodEvery: 2 * time.Millisecond, trickler: true})
	hn.writeHonest(t, "before", 5)

	actx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() }) // before the attackers' and nodes' own cleanups
	hn.start = time.Now()
	pun := watchPunished(actx, &wg, hn, attacks, hn.start)
	for _, a := range attacks {
		wg.Add(1)
		go func() { defer wg.Done(); a.run(actx) }()
	}
	// Honest writes replicate all along.
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; !pun.all() && time.Now().Before(deadline); i++ {
		hn.writeHonest(t, fmt.Sprintf("during/%d", i), 5)
	}
	for _, a := range attacks {
		reason := a.reason
		if reason == refused { // not a gossip rejection: the log below checks it
			reason = ""
		}
		hn.expectPunishedAs(t, a.m, reason, a.banned, a.targets)
	}
	all := pun.last()
	cancel()
	wg.Wait()

	for _, a := range attacks {
		for i := range a.targets {
			counts := rec.of(i, a.m.id())
			r, _ := hn.nodes[i].Reputation().Record(a.m.id())
			t.Logf("%-19s %s node %d: %-10s score %6.1f after %-8v rejections %v", a.name, shortID(a.m.id()), i, r.State, r.Score,
				pun.after(a, i).Round(time.Millisecond), counts)
			if counts[a.reason] == 0 {
				t.Errorf("%s: node %d counted no %s against it: %v", a.name, i, a.reason, counts)
			}
		}
	}
	t.Logf("every attacker punished on every target after %v", all.Round(time.Millisecond))

	for _, nd := range hn.nodes {
		for _, key := range []string{"/forged/0", "/peers/" + hn.nodes[2].ID().String() + "/info/0"} {
			if _, err := nd.Store().Get(ctx, key); err == nil {
				t.Errorf("%s reached a store", key)
			}
		}
		if e, err := nd.Store().Get(ctx, "/replayed"); err != nil || string(e.Value) != "v2" {
			t.Errorf("replay rolled /replayed back: %q %v", e.Value, err)
		}
	}
	whole := attacks[slices.IndexFunc(attacks, func(a *togetherAttack) bool { return a.name == "whole-state-loop" })]
	var cfg node.Config
	togetherConfig(&cfg)
	g := cfg.Gossip
	if budget := int64(g.ServeBytesBurst) + int64(whole.took.Seconds()*float64(g.ServeBytesRate)) + 1; whole.served > budget {
		t.Errorf("the whole-state loop was served %d bytes, over its budget %d", whole.served, budget)
	}
	t.Logf("whole-state loop: %d bytes served in %v (burst %d)", whole.served, whole.took.Round(time.Millisecond), g.ServeBytesBurst)

	hn.writeHonest(t, "after", 10)
	for i, nd := range hn.nodes {
		fp := nd.Replica().StateFingerprint()
		t.Logf("honest node %d: fingerprint %x, %d entries", i, fp.FP[:8], fp.Count)
	}
	hn.logHonestStanding(t, &rec)
}

// logHonestStanding logs what the honest nodes hold against each other,
// and fails if one banned another: the attacks must cost honest peers no
// standing they cannot afford.
func (hn *honestNet) logHonestStanding(t *testing.T, rec *rejectionLog) {
	t.Helper()
	for i, nd := range hn.nodes {
		for j, other := range hn.nodes {
			if i == j {
				continue
			}
			r, _ := nd.Reputation().Record(other.ID())
			if counts := rec.of(i, other.ID()); len(counts) > 0 || r.State != reputation.Ok {
				t.Logf("honest node %d holds honest node %d %s at score %.1f, rejections %v", i, j, r.State, r.Score, counts)
			}
			if r.State == reputation.Banned {
				t.Errorf("honest node %d banned honest node %d", i, j)
			}
		}
	}
}

// shortID is the tail of a peer ID, for logs.
func shortID(p peer.ID) string {
	s := p.String()
	return "…" + s[len(s)-6:]
}
