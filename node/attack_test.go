package node_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-varint"

	"github.com/univrs/peerstate/gossip"
	"github.com/univrs/peerstate/node"
	"github.com/univrs/peerstate/replica"
	"github.com/univrs/peerstate/reputation"
)

// Attackers against real nodes on loopback. Each attacker is a bare libp2p
// host with its own valid key, speaking peerstate's topic and stream
// protocols by hand: it signs correctly and lies. Every attack must be
// rejected, cost the attacker its reputation until it is banned
// (disconnected and refused), and leave the honest nodes replicating and
// identical.

// attacker is a hostile peer.
type attacker struct {
	t      testing.TB
	h      host.Host
	key    crypto.PrivKey
	topic  *pubsub.Topic
	sub    *pubsub.Subscription
	cancel context.CancelFunc
	seq    uint64
}

// newAttackerHost is a bare libp2p host on loopback with a key of its own.
func newAttackerHost(t testing.TB) (crypto.PrivKey, host.Host) {
	t.Helper()
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.DisableRelay(), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	return key, h
}

func newAttacker(t testing.TB) *attacker {
	t.Helper()
	key, h := newAttackerHost(t)
	ctx, cancel := context.WithCancel(context.Background())
	m := &attacker{t: t, h: h, key: key, cancel: cancel}
	ps, err := gossip.NewPubSub(ctx, h, gossip.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if m.topic, err = ps.Join(gossip.DefaultTopic); err != nil {
		t.Fatal(err)
	}
	if m.sub, err = m.topic.Subscribe(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.sub.Cancel()
		_ = m.topic.Close()
		cancel()
		_ = h.Close()
	})
	return m
}

func (m *attacker) id() peer.ID { return m.h.ID() }

// dial connects the attacker to n and waits until n's topic peers include
// it, so that what it publishes reaches n.
func (m *attacker) dial(n *node.Node) {
	m.t.Helper()
	m.dialInfo(nodeInfo(n))
}

// dialInfo is dial to a node known by its identity and addresses.
func (m *attacker) dialInfo(n peer.AddrInfo) {
	m.t.Helper()
	if err := m.h.Connect(context.Background(), n); err != nil {
		m.t.Fatalf("attacker connect: %v", err)
	}
	waitFor(m.t, func() bool {
		for _, p := range m.topic.ListPeers() {
			if p == n.ID {
				return true
			}
		}
		return false
	})
}

// change is a change of the attacker's, signed by it: valid by every rule
// the signature can prove.
func (m *attacker) change(key, val string, version uint64) gossip.WireChange {
	m.seq++
	now := time.Now().UnixNano()
	c := replica.Change{Key: key, Value: []byte(val), Version: version, HLC: replica.HLC(uint64(now/1e6) << 16),
		Origin: m.id().String(), Gen: 1, Seq: m.seq, CreatedAt: now, UpdatedAt: now}
	if err := replica.SignWith(m.key, &c); err != nil {
		m.t.Fatal(err)
	}
	return gossip.WireChange{Key: c.Key, Value: c.Value, Version: c.Version, HLC: uint64(c.HLC), Gen: c.Gen,
		Seq: c.Seq, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt, Sig: c.Sig}
}

func (m *attacker) publish(origin string, cs ...gossip.WireChange) {
	m.t.Helper()
	data, err := gossip.EncodeMessage(gossip.Message{V: gossip.FormatVersion, Origin: origin, Changes: cs})
	if err != nil {
		m.t.Fatal(err)
	}
	m.publishRaw(data)
}

func (m *attacker) publishRaw(data []byte) {
	if err := m.topic.Publish(context.Background(), data); err != nil && m.h.Network().Connectedness(m.id()) == network.Connected {
		m.t.Logf("attacker publish: %v", err)
	}
}

// requestAll opens a catch-up stream to p asking for everything.
func (m *attacker) requestAll(p peer.ID) (network.Stream, error) {
	s, err := m.h.NewStream(context.Background(), p, gossip.DefaultSyncProtocol)
	if err != nil {
		return nil, err
	}
	body, _ := cbor.Marshal(map[int]any{1: gossip.FormatVersion, 2: map[string]uint64{}})
	if _, err := s.Write(append(varint.ToUvarint(uint64(len(body))), body...)); err != nil {
		_ = s.Reset()
		return nil, err
	}
	return s, nil
}

// honestNet is three honest nodes, all connected, with the attacker
// connected to the first two.
type honestNet struct {
	nodes []*node.Node
	m     *attacker
	start time.Time // when the attacker joined
	t     testing.TB
}

// nodeInfo is n's identity and addresses.
func nodeInfo(n *node.Node) peer.AddrInfo { return peer.AddrInfo{ID: n.ID(), Addrs: n.Host().Addrs()} }

func (hn *honestNet) info(i int) peer.AddrInfo { return nodeInfo(hn.nodes[i]) }

func (hn *honestNet) state(i int, p peer.ID) reputation.State {
	return hn.nodes[i].Reputation().State(p)
}

func (hn *honestNet) set(ctx context.Context, i int, key, val string) error {
	_, err := hn.nodes[i].Store().Set(ctx, key, []byte(val))
	return err
}

func (hn *honestNet) fingerprint(i int) string {
	return fmt.Sprint(hn.nodes[i].Replica().StateFingerprint())
}

func (hn *honestNet) holds(ctx context.Context, i int, key, val string) bool {
	e, err := hn.nodes[i].Store().Get(ctx, key)
	return err == nil && string(e.Value) == val
}

func newHonestNet(t testing.TB, mod func(*node.Config)) *honestNet {
	t.Helper()
	hn := &honestNet{t: t}
	for range honestNodes {
		cfg := testConfig(t, t.TempDir())
		cfg.Backend = node.BackendMemory
		cfg.Gossip.Logger = slog.New(slog.DiscardHandler)
		if mod != nil {
			mod(&cfg)
		}
		hn.nodes = append(hn.nodes, startNode(t, cfg))
	}
	for i, a := range hn.nodes {
		for _, b := range hn.nodes[i+1:] {
			if err := a.Connect(context.Background(), b.Addrs()[0].String()); err != nil {
				t.Fatal(err)
			}
		}
	}
	hn.m = newAttacker(t)
	hn.m.dial(hn.nodes[0])
	hn.m.dial(hn.nodes[1])
	hn.start = time.Now()
	return hn
}

// writeHonest writes n keys on the first node and waits until every honest
// node holds them and all three states are identical (fingerprints).
func (hn *honestNet) writeHonest(t testing.TB, tag string, n int) {
	t.Helper()
	writeHonest(t, hn, tag, n)
}

func (hn *honestNet) waitIdentical(t testing.TB) {
	t.Helper()
	waitIdentical(t, hn)
}

// writeHonest is honestNet.writeHonest on any honestSide.
func writeHonest(t testing.TB, hs honestSide, tag string, n int) {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		if err := hs.set(ctx, 0, fmt.Sprintf("/honest/%s/%03d", tag, i), "v"); err != nil {
			t.Fatal(err)
		}
	}
	last := fmt.Sprintf("/honest/%s/%03d", tag, n-1)
	waitFor(t, func() bool {
		for i := 1; i < honestNodes; i++ {
			if !hs.holds(ctx, i, last, "v") {
				return false
			}
		}
		return true
	})
	waitIdentical(t, hs)
}

// waitIdentical waits until the honest nodes' state fingerprints agree.
func waitIdentical(t testing.TB, hs honestSide) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		fps := make([]string, honestNodes)
		for i := range fps {
			fps[i] = hs.fingerprint(i)
		}
		if !slices.ContainsFunc(fps, func(fp string) bool { return fp != fps[0] }) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("honest nodes' states differ: %v", fps)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// expectPunished waits until the nodes the attacker talked to count
// reason against it and hold it at least graylisted (its pubsub messages
// no longer reach the validator, so pubsub attacks end there unless it
// does more) or, with banned, banned: then it must be disconnected and
// unable to come back.
func (hn *honestNet) expectPunished(t *testing.T, reason string, banned bool) {
	t.Helper()
	hn.expectPunishedBy(t, reason, banned, 2)
}

// expectPunishedBy is expectPunished for the first n nodes (the ones the
// attack was aimed at).
func (hn *honestNet) expectPunishedBy(t *testing.T, reason string, banned bool, n int) {
	t.Helper()
	hn.expectPunishedAs(t, hn.m, reason, banned, n)
}

// punishedAs reports whether state s is the punishment expected: banned,
// or with !banned at least graylisted.
func punishedAs(s reputation.State, banned bool) bool {
	return s == reputation.Banned || (!banned && s == reputation.Graylisted)
}

// expectPunishedAs is expectPunishedBy for attacker m, one of several the
// net may face at once.
func (hn *honestNet) expectPunishedAs(t *testing.T, m *attacker, reason string, banned bool, n int) {
	t.Helper()
	for i, nd := range hn.nodes[:n] {
		deadline := time.Now().Add(30 * time.Second)
		for !punishedAs(nd.Reputation().State(m.id()), banned) {
			if time.Now().After(deadline) {
				rec, _ := nd.Reputation().Record(m.id())
				t.Fatalf("%s: node %d did not punish the attacker: %+v; rejected %v", reason, i, rec, nd.Gossip().Stats().Rejected)
			}
			time.Sleep(20 * time.Millisecond)
		}
		rec, _ := nd.Reputation().Record(m.id())
		t.Logf("%s: node %d holds the attacker %s at score %.1f after %v, counts %v", reason, i, rec.State, rec.Score,
			time.Since(hn.start).Round(time.Millisecond), rec.Counts)
		if reason != "" && nd.Gossip().Stats().Rejected[reason] == 0 {
			t.Fatalf("node %d counted no %s rejection", i, reason)
		}
	}
	if !banned {
		return
	}
	waitFor(t, func() bool {
		for _, nd := range hn.nodes[:n] {
			if nd.Host().Network().Connectedness(m.id()) == network.Connected {
				return false
			}
		}
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.h.Connect(ctx, peer.AddrInfo{ID: hn.nodes[0].ID(), Addrs: hn.nodes[0].Host().Addrs()}); err == nil {
		waitFor(t, func() bool { return hn.nodes[0].Host().Network().Connectedness(m.id()) != network.Connected })
	}
}

func TestAttack_ForgedChanges(t *testing.T) {
	hn := newHonestNet(t, nil)
	hn.writeHonest(t, "before", 5)
	victim := hn.nodes[2].ID().String()
	for i := range 5 {
		// A change of its own, under the victim's name.
		hn.m.publish(victim, hn.m.change(fmt.Sprintf("/forged/%d", i), "x", 1))
	}
	hn.expectPunished(t, gossip.ReasonForgedOrigin, false)
	ctx := context.Background()
	for _, nd := range hn.nodes {
		if _, err := nd.Store().Get(ctx, "/forged/0"); err == nil {
			t.Fatal("a forged change reached a store")
		}
	}
	hn.writeHonest(t, "after", 5)
}

// Replays: the attacker republishes honest messages it received, under its
// own signature (their origin is not their signer), and its own old
// versions after newer ones (ignored: state keeps the newest).
func TestAttack_Replay(t *testing.T) {
	hn := newHonestNet(t, nil)
	ctx := context.Background()
	m := hn.m
	old := m.change("/replayed", "v1", 1)
	m.publish(m.id().String(), old)
	m.publish(m.id().String(), m.change("/replayed", "v2", 2))
	waitFor(t, func() bool {
		e, err := hn.nodes[2].Store().Get(ctx, "/replayed")
		return err == nil && string(e.Value) == "v2"
	})
	m.publish(m.id().String(), old) // an old version again
	hn.writeHonest(t, "before", 3)
	var captured [][]byte
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	for len(captured) < 1 {
		msg, err := m.sub.Next(rctx)
		if err != nil {
			break
		}
		if msg.GetFrom() != m.id() {
			captured = append(captured, msg.GetData())
		}
	}
	cancel()
	if len(captured) == 0 {
		t.Fatal("the attacker captured no honest message")
	}
	for range 3 {
		for _, data := range captured {
			m.publishRaw(data)
		}
	}
	hn.expectPunished(t, gossip.ReasonForgedOrigin, false)
	for _, nd := range hn.nodes {
		if e, err := nd.Store().Get(ctx, "/replayed"); err != nil || string(e.Value) != "v2" {
			t.Fatalf("replay rolled /replayed back: %q %v", e.Value, err)
		}
	}
	hn.writeHonest(t, "after", 3)
}

func TestAttack_MalformedAndOversized(t *testing.T) {
	hn := newHonestNet(t, nil)
	for i := range 6 {
		hn.m.publishRaw([]byte(fmt.Sprintf("not a message %d", i)))
	}
	big := bytes.Repeat([]byte{1}, 2<<20) // over the 1 MiB message cap
	hn.m.publish(hn.m.id().String(), hn.m.change("/big", string(big), 1))
	hn.expectPunished(t, gossip.ReasonMalformed, false)
	hn.writeHonest(t, "after", 3)
}

// A peer writing where the write policy forbids it: its changes are
// refused on every node, counted against it, and it is banned.
func TestAttack_PolicyViolation(t *testing.T) {
	hn := newHonestNet(t, nil)
	victim := hn.nodes[2].ID().String()
	key := "/peers/" + victim + "/info"
	for i := range 15 {
		hn.m.publish(hn.m.id().String(), hn.m.change(fmt.Sprintf("%s/%d", key, i), "lies", 1))
	}
	hn.expectPunished(t, "", false)
	ctx := context.Background()
	for _, nd := range hn.nodes {
		if _, err := nd.Store().Get(ctx, key+"/0"); err == nil {
			t.Fatal("a change the policy forbids reached a store")
		}
		if nd.Gossip().Stats().Refused == 0 && nd != hn.nodes[2] {
			t.Fatal("no refusal counted")
		}
	}
	// And the honest owner writes its own record.
	if _, err := hn.nodes[2].Store().Set(ctx, key, []byte("mine")); err != nil {
		t.Fatal(err)
	}
	// Nobody else may, locally either.
	if _, err := hn.nodes[0].Store().Set(ctx, key, []byte("not mine")); err == nil || !strings.Contains(err.Error(), "write policy") {
		t.Fatalf("local write against the policy: %v", err)
	}
	hn.writeHonest(t, "after", 3)
}

// A flood of validly signed spam over the origin rate is dropped and
// banned; the honest nodes keep replicating and stay within a memory
// bound.
func TestAttack_Flood(t *testing.T) {
	hn := newHonestNet(t, func(c *node.Config) { c.Gossip.OriginRate, c.Gossip.OriginBurst = 200, 400 })
	m := hn.m
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the flood, until the attacker is cut off
		defer wg.Done()
		for i := 0; i < 400 && hn.nodes[0].Reputation().State(m.id()) == reputation.Ok; i++ {
			batch := make([]gossip.WireChange, 50)
			for j := range batch {
				batch[j] = m.change(fmt.Sprintf("/spam/%d/%d", i, j), strings.Repeat("s", 200), 1)
			}
			m.publish(m.id().String(), batch...)
		}
	}()
	hn.writeHonest(t, "during", 50)
	wg.Wait()
	hn.expectPunished(t, gossip.ReasonRate, false)
	hn.waitIdentical(t)
	t.Logf("flood: peak RSS of this test process (3 nodes, attacker) %s", peakRSS())
}

// A peer holding catch-up streams open is refused past its limit, every
// time, until it is banned.
func TestAttack_HeldStreams(t *testing.T) {
	hn := newHonestNet(t, nil)
	hn.writeHonest(t, "state", 20)
	ctx := context.Background()
	target := hn.nodes[0].ID()
	var held []network.Stream
	defer func() {
		for _, s := range held {
			_ = s.Reset()
		}
	}()
	for i := 0; i < 20 && hn.nodes[0].Reputation().State(hn.m.id()) != reputation.Banned; i++ {
		s, err := hn.m.h.NewStream(ctx, target, gossip.DefaultSyncProtocol)
		if err != nil {
			break
		}
		_, _ = s.Write([]byte{9}) // a frame length, and then nothing
		held = append(held, s)
		time.Sleep(20 * time.Millisecond)
	}
	hn.expectPunishedBy(t, gossip.ReasonSessionLimit, true, 1)
	hn.writeHonest(t, "after", 3)
}

// A peer asking for the whole state in a loop is served until its byte
// budget is spent, then cut off every time until it is banned.
func TestAttack_WholeStateLoop(t *testing.T) {
	hn := newHonestNet(t, func(c *node.Config) {
		c.Gossip.MaxValueSize, c.Gossip.InlineValueLimit = 64<<10, 16<<10
		c.Gossip.ServeBytesBurst, c.Gossip.ServeBytesRate = 2<<20, 1<<10
	})
	ctx := context.Background()
	for i := range 2000 {
		if _, err := hn.nodes[0].Store().Set(ctx, fmt.Sprintf("/bulk/%04d", i), bytes.Repeat([]byte("b"), 256)); err != nil {
			t.Fatal(err)
		}
	}
	target := hn.nodes[0].ID()
	var got int64
	for i := 0; i < 100 && hn.nodes[0].Reputation().State(hn.m.id()) != reputation.Banned; i++ {
		s, err := hn.m.requestAll(target)
		if err != nil {
			break
		}
		n, _ := io.Copy(io.Discard, bufio.NewReader(s))
		got += n
	}
	if got > 2<<20+64<<10 {
		t.Fatalf("the attacker got %d bytes, over its budget", got)
	}
	waitFor(t, func() bool { return hn.nodes[0].Reputation().State(hn.m.id()) == reputation.Banned })
	if hn.nodes[0].Gossip().Stats().Rejected[gossip.ReasonBandwidth] == 0 {
		t.Fatal("no bandwidth cut-off counted")
	}
	t.Logf("whole-state loop: %d bytes served before the ban (budget %d)", got, 2<<20)
	hn.writeHonest(t, "after", 3)
}

// A catch-up responder that trickles its answer is given up on at the
// session deadline, every time, until it is banned.
func TestAttack_TricklingResponder(t *testing.T) {
	hn := newHonestNet(t, func(c *node.Config) {
		c.Gossip.SessionTimeout = 300 * time.Millisecond
		c.Gossip.SyncInterval = 200 * time.Millisecond
	})
	hn.m.h.SetStreamHandler(gossip.DefaultSyncProtocol, trickle)
	hn.expectPunished(t, gossip.ReasonSessionTimeout, true)
	hn.writeHonest(t, "after", 3)
}

// trickle answers a catch-up request a byte every 50 ms: a responder
// holding the session open without ever finishing a frame.
func trickle(s network.Stream) {
	defer s.Reset()
	for range 100 {
		if _, err := s.Write([]byte{0x7f}); err != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// peakRSS is this process's peak resident set, from /proc.
func peakRSS() string { return fmt.Sprintf("%d kB", peakRSSKB()) }

func peakRSSKB() int { return procStatusKB("VmHWM:") }

// procStatusKB is the field of /proc/self/status (a size in kB) named by
// its label; 0 if there is none.
func procStatusKB(label string) int { return statusFileKB("/proc/self/status", label) }

// statusFileKB is the field named by label (a size in kB) of a /proc
// status file; 0 if there is none.
func statusFileKB(path, label string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, label); ok {
			var kb int
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb
		}
	}
	return 0
}
