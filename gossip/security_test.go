package gossip_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-varint"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/gossip"
	"github.com/univrs/peerstate/replica"
)

// hostile is a bare pubsub peer joined to the topic, with no validator of
// its own: it publishes whatever the test crafts.
type hostile struct {
	*testPeer
	topic *pubsub.Topic
	sub   *pubsub.Subscription
}

func newHostile(t *testing.T, cfg gossip.Config) *hostile {
	t.Helper()
	p := newPeer(t, cfg, peerOpts{noGossip: true})
	topic, err := p.ps.Join(cfg.Topic)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := topic.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sub.Cancel()
		_ = topic.Close()
	})
	return &hostile{testPeer: p, topic: topic, sub: sub}
}

func (m *hostile) publish(t *testing.T, data []byte, opts ...pubsub.PubOpt) {
	t.Helper()
	if err := m.topic.Publish(context.Background(), data, opts...); err != nil {
		t.Fatalf("hostile publish: %v", err)
	}
}

func encode(t *testing.T, m gossip.Message) []byte {
	t.Helper()
	b, err := gossip.EncodeMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wireChange(key, val string, seq uint64) gossip.WireChange {
	now := time.Now().UnixNano()
	return gossip.WireChange{Key: key, Value: []byte(val), Version: 1, HLC: uint64(now/1e6) << 16, Gen: 1, Seq: seq, CreatedAt: now, UpdatedAt: now}
}

// sign signs w as p's own change: what an origin that lies within the rules
// can do.
func sign(t *testing.T, p *testPeer, w gossip.WireChange) gossip.WireChange {
	t.Helper()
	c := replica.Change{
		Key: w.Key, Value: w.Value, Deleted: w.Deleted, Version: w.Version, HLC: replica.HLC(w.HLC),
		Origin: p.id().String(), Gen: w.Gen, Seq: w.Seq, CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt,
	}
	if w.ValueHash != nil {
		c.Value, c.ValueHash = nil, w.ValueHash
	}
	if err := replica.SignWith(p.h.Peerstore().PrivKey(p.id()), &c); err != nil {
		t.Fatal(err)
	}
	w.Sig = c.Sig
	return w
}

// Forged origins, invalid changes, oversized and undecodable messages are
// rejected and counted per peer and reason; stale replays are ignored and
// counted; none changes any state.
func TestValidator_RejectsHostileMessages(t *testing.T) {
	ctx := context.Background()
	cfg := quiet()
	var mu sync.Mutex
	hooked := map[string]int{}
	bcfg := cfg
	bcfg.OnReject = func(p peer.ID, reason string) {
		mu.Lock()
		hooked[reason]++
		mu.Unlock()
	}
	a := newPeer(t, cfg, peerOpts{})
	b := newPeer(t, bcfg, peerOpts{})
	m := newHostile(t, cfg)
	connect(t, a, b)
	connect(t, m.testPeer, b)
	waitMesh(t, a, b)
	waitFor(t, 10*time.Second, "hostile peer in the topic", func() bool {
		return len(m.topic.ListPeers()) > 0
	})

	// Valid writes by A, one of which M records as it relays through B (B
	// adds M to its mesh at its next heartbeat; writes before that do not
	// reach M).
	var old []byte
	i := 0
	waitFor(t, 10*time.Second, "M to see A's message", func() bool {
		i++
		if _, err := a.r.Set(ctx, "/r/key", fmt.Appendf(nil, "v1-%d", i)); err != nil {
			t.Fatal(err)
		}
		msgCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		for {
			msg, err := m.sub.Next(msgCtx)
			if err != nil {
				return false
			}
			if msg.GetFrom() == a.id() {
				old = msg.GetData()
				return true
			}
		}
	})
	if _, err := a.r.Set(ctx, "/r/key", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "v2 on B", func() bool {
		e, err := b.r.Get(ctx, "/r/key")
		return err == nil && string(e.Value) == "v2"
	})
	before := replicaHash(t, b.r)

	cases := []struct {
		name   string
		data   []byte
		reason string
	}{
		{"origin is another peer", encode(t, gossip.Message{V: gossip.FormatVersion, Origin: a.id().String(), Changes: []gossip.WireChange{wireChange("/forged/a", "x", 1)}}), gossip.ReasonForgedOrigin},
		{"change claims another origin", encode(t, gossip.Message{V: gossip.FormatVersion, Origin: m.id().String(), Changes: []gossip.WireChange{
			func() gossip.WireChange { w := wireChange("/forged/b", "x", 1); w.Origin = a.id().String(); return w }(),
		}}), gossip.ReasonForgedOrigin},
		{"bad key", encode(t, gossip.Message{V: gossip.FormatVersion, Origin: m.id().String(), Changes: []gossip.WireChange{wireChange("no-slash", "x", 1)}}), gossip.ReasonInvalidKey},
		{"reserved key", encode(t, gossip.Message{V: gossip.FormatVersion, Origin: m.id().String(), Changes: []gossip.WireChange{wireChange("/.peerstate/wm/x", "9", 1)}}), gossip.ReasonInvalidKey},
		{"version 0", encode(t, gossip.Message{V: gossip.FormatVersion, Origin: m.id().String(), Changes: []gossip.WireChange{
			func() gossip.WireChange { w := wireChange("/forged/c", "x", 1); w.Version = 0; return w }(),
		}}), gossip.ReasonInvalidChange},
		{"announced value too large", encode(t, gossip.Message{V: gossip.FormatVersion, Origin: m.id().String(), Changes: []gossip.WireChange{
			func() gossip.WireChange {
				w := wireChange("/forged/d", "", 1)
				w.Value, w.ValueSize, w.ValueHash = nil, 1<<40, make([]byte, 32)
				return w
			}(),
		}}), gossip.ReasonValueTooLarge},
		{"oversized", bytes.Repeat([]byte{0}, cfg.MaxMessageSize+1), gossip.ReasonTooLarge},
		{"garbage", []byte("\xff\x00 not cbor"), gossip.ReasonMalformed},
		{"unknown format", encode(t, gossip.Message{V: gossip.FormatVersion + 1, Origin: m.id().String()}), gossip.ReasonUnknownVersion},
		{"unsigned change", encode(t, gossip.Message{V: gossip.FormatVersion, Origin: m.id().String(), Changes: []gossip.WireChange{wireChange("/forged/e", "x", 1)}}), gossip.ReasonBadSignature},
		{"change signed by another key", encode(t, gossip.Message{V: gossip.FormatVersion, Origin: m.id().String(), Changes: []gossip.WireChange{
			func() gossip.WireChange {
				w := sign(t, a, wireChange("/forged/f", "x", 1)) // A's signature, M's message
				return w
			}(),
		}}), gossip.ReasonBadSignature},
		{"value not the one signed", encode(t, gossip.Message{V: gossip.FormatVersion, Origin: m.id().String(), Changes: []gossip.WireChange{
			func() gossip.WireChange {
				w := sign(t, m.testPeer, wireChange("/forged/g", "x", 1))
				w.Value = []byte("y")
				return w
			}(),
		}}), gossip.ReasonBadSignature},
	}
	for _, tc := range cases {
		m.publish(t, tc.data)
	}
	// The stale replay: A's first message again, validly signed by A (M
	// holds A's key here, standing in for a replay after pubsub's seen-cache
	// forgot the original's ID: the payload is old, the message ID new).
	aKey := a.h.Peerstore().PrivKey(a.id())
	m.publish(t, old, pubsub.WithSecretKeyAndPeerId(aKey, a.id()))

	waitFor(t, 10*time.Second, "rejections and ignores to be counted", func() bool {
		st := b.g.Stats()
		return st.RejectedByPeer[m.id()] == uint64(len(cases)) && st.Ignored[gossip.ReasonStale] == 1
	})
	st := b.g.Stats()
	want := map[string]uint64{}
	for _, tc := range cases {
		want[tc.reason]++
	}
	for reason, n := range want {
		if st.Rejected[reason] != n {
			t.Errorf("rejected %q: %d, want %d (all: %v)", reason, st.Rejected[reason], n, st.Rejected)
		}
	}
	mu.Lock()
	for reason, n := range want {
		if uint64(hooked[reason]) != n {
			t.Errorf("OnReject %q: %d calls, want %d", reason, hooked[reason], n)
		}
	}
	mu.Unlock()
	if after := replicaHash(t, b.r); after != before {
		t.Fatal("hostile messages changed B's state")
	}
	for _, k := range []string{"/forged/a", "/forged/b", "/forged/c", "/forged/d", "/forged/e", "/forged/f", "/forged/g"} {
		if _, err := b.r.Get(ctx, k); !errors.Is(err, datastore.ErrKeyNotFound) {
			t.Fatalf("%s on B: %v", k, err)
		}
	}
	e, err := b.r.Get(ctx, "/r/key")
	if err != nil || string(e.Value) != "v2" {
		t.Fatalf("replay changed B: %+v %v", e, err)
	}
	// Rejected messages are not forwarded: A never counted any.
	if st := a.g.Stats(); len(st.Rejected) != 0 || st.RejectedByPeer[m.id()] != 0 {
		t.Fatalf("A saw hostile messages: %+v", st.Rejected)
	}
}

// A value that does not match its announcement is rejected and not applied.
func TestValueFetch_RejectsTamperedValue(t *testing.T) {
	ctx := context.Background()
	cfg := quiet()
	b := newPeer(t, cfg, peerOpts{})
	m := newHostile(t, cfg)
	connect(t, m.testPeer, b)
	waitFor(t, 10*time.Second, "hostile peer in the topic", func() bool {
		return len(m.topic.ListPeers()) > 0 && len(b.g.Peers()) > 0
	})
	announced := bytes.Repeat([]byte("A"), 100_000)
	served := bytes.Repeat([]byte("B"), 100_000)
	sum := sha256.Sum256(announced)
	w := wireChange("/big/tampered", "", 1)
	w.Value, w.ValueSize, w.ValueHash = nil, uint64(len(announced)), sum[:]
	w = sign(t, m.testPeer, w) // M signs the announced value, then serves another

	var served1 sync.WaitGroup
	served1.Add(1)
	m.h.SetStreamHandler(gossip.DefaultValueProtocol, func(s network.Stream) {
		defer served1.Done()
		defer s.Close()
		// Skip the request frame, answer with the wrong bytes and the right
		// metadata.
		br := bufio.NewReader(s)
		n, err := varint.ReadUvarint(br)
		if err != nil {
			return
		}
		if _, err := br.Discard(int(n)); err != nil {
			return
		}
		answer := w
		answer.Origin, answer.Value, answer.ValueSize, answer.ValueHash = m.id().String(), served, 0, nil
		body, _ := cbor.Marshal(map[int]any{1: gossip.FormatVersion, 2: answer})
		_, _ = s.Write(append(varint.ToUvarint(uint64(len(body))), body...))
	})
	m.publish(t, encode(t, gossip.Message{V: gossip.FormatVersion, Origin: m.id().String(), Changes: []gossip.WireChange{w}}))
	served1.Wait()
	waitFor(t, 10*time.Second, "bad value to be counted", func() bool {
		st := b.g.Stats()
		return st.Rejected[gossip.ReasonBadValue] == 1 && st.FetchErrors == 1
	})
	if _, err := b.r.Get(ctx, "/big/tampered"); !errors.Is(err, datastore.ErrKeyNotFound) {
		t.Fatalf("tampered value applied: %v", err)
	}
}

// A catch-up responder that sends an invalid change makes the sync fail
// before any watermark moves.
func TestSync_RejectsInvalidFrames(t *testing.T) {
	ctx := context.Background()
	cfg := quiet()
	cfg.DisableSyncOnConnect = true
	b := newPeer(t, cfg, peerOpts{})
	m := newPeer(t, cfg, peerOpts{noGossip: true})
	m.h.SetStreamHandler(gossip.DefaultSyncProtocol, func(s network.Stream) {
		defer s.Close()
		br := bufio.NewReader(s)
		n, err := varint.ReadUvarint(br)
		if err != nil {
			return
		}
		if _, err := br.Discard(int(n)); err != nil {
			return
		}
		frames := []any{
			map[int]any{1: gossip.FormatVersion, 2: []gossip.Message{{V: gossip.FormatVersion, Origin: m.id().String(), Changes: []gossip.WireChange{wireChange("bad key", "x", 1)}}}},
			map[int]any{1: gossip.FormatVersion, 3: true, 4: map[string]uint64{replica.SourceOf(m.id().String(), 1): 1 << 40}},
		}
		for _, f := range frames {
			body, _ := cbor.Marshal(f)
			_, _ = s.Write(append(varint.ToUvarint(uint64(len(body))), body...))
		}
	})
	connect(t, b, m)
	st, err := b.g.SyncWith(ctx, m.id())
	if err == nil || st.Advanced {
		t.Fatalf("sync with a hostile responder: %+v %v", st, err)
	}
	if !errors.Is(err, datastore.ErrInvalidKey) {
		t.Fatalf("error %v, want invalid key", err)
	}
	if wm := watermark(t, b, m.id()); wm != 0 {
		t.Fatalf("watermark moved to %d", wm)
	}
	if got := b.g.Stats().Rejected[gossip.ReasonInvalidKey]; got != 1 {
		t.Fatalf("rejections %d", got)
	}
}
