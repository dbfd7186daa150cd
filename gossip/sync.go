package gossip

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/replica"
)

// SyncStats describes one catch-up we initiated (or, from SyncAll, several).
type SyncStats struct {
	Peers         int   // peers synced with
	Frames        int   // frames received
	Changes       int   // changes received
	Applied       int   // of which applied
	Stale         int   // of which already incorporated or superseded
	Skipped       int   // of which outside our prefixes
	BytesSent     int64 // protocol bytes on the stream
	BytesReceived int64
	// Advanced is set when the stream completed and our watermarks were
	// offered the responder's vector (replica.Advance).
	Advanced bool
	// Snapshot is set when the responder sent a full snapshot, we being
	// behind its tombstone horizon; Dropped counts the keys it showed
	// deleted, which we dropped.
	Snapshot bool
	Dropped  int
	// Matched is set when, after the stream, our state fingerprint equalled
	// the responder's; Repaired when it did not and a repair ran, and
	// RepairStats says what it did.
	Matched  bool
	Repaired bool
	Repair   RepairStats
	Duration time.Duration
}

func (s *SyncStats) add(o SyncStats) {
	s.Peers += o.Peers
	s.Frames += o.Frames
	s.Changes += o.Changes
	s.Applied += o.Applied
	s.Stale += o.Stale
	s.Skipped += o.Skipped
	s.BytesSent += o.BytesSent
	s.BytesReceived += o.BytesReceived
	s.Advanced = s.Advanced || o.Advanced
	s.Snapshot = s.Snapshot || o.Snapshot
	s.Dropped += o.Dropped
	s.Matched = s.Matched || o.Matched
	s.Repaired = s.Repaired || o.Repaired
	s.Repair.add(o.Repair)
	s.Duration += o.Duration
}

// syncRequest opens a catch-up: the initiator's vector and prefixes (none:
// every key).
type syncRequest struct {
	V        uint64            `cbor:"1,keyasint"`
	Have     map[string]uint64 `cbor:"2,keyasint"`
	Prefixes []string          `cbor:"3,keyasint,omitempty"`
	// Retired is the requester's retirement horizon: the sources it
	// retired are missing from Have, not missed (replica.RetireSources).
	Retired uint64 `cbor:"4,keyasint,omitempty"`
}

// syncFrame is one frame of the responder's answer: changes grouped by
// origin, or (Done) the vector the stream covers and the responder's
// prefixes, or an error.
type syncFrame struct {
	V        uint64            `cbor:"1,keyasint"`
	Groups   []Message         `cbor:"2,keyasint,omitempty"`
	Done     bool              `cbor:"3,keyasint,omitempty"`
	Vector   map[string]uint64 `cbor:"4,keyasint,omitempty"`
	Prefixes []string          `cbor:"5,keyasint,omitempty"`
	Err      string            `cbor:"6,keyasint,omitempty"`
	// Snapshot, on a first frame, says the stream is a full snapshot: the
	// initiator was behind the responder's tombstone horizon.
	Snapshot bool `cbor:"7,keyasint,omitempty"`
	// Heads, with Done, prove how far each source of Vector reached: the
	// highest signed change of it the responder knows, value left out.
	Heads []WireChange `cbor:"8,keyasint,omitempty"`
	// Fingerprint and Count, with Done, summarise the responder's live
	// replicated state (replica.Summary) as the stream ended.
	Fingerprint []byte `cbor:"9,keyasint,omitempty"`
	Count       int    `cbor:"10,keyasint,omitempty"`
	// Horizon, with Done after a snapshot, is the responder's collected
	// tombstone horizon (replica.Collected), which the initiator adopts.
	Horizon map[string]uint64 `cbor:"11,keyasint,omitempty"`
	// Floors, likewise, are its version floors (replica.Floors).
	Floors map[uint16]uint64 `cbor:"12,keyasint,omitempty"`
	// Retired, with Done, is the responder's retirement horizon: the
	// sources it retired are missing from Vector, not missed.
	Retired uint64 `cbor:"13,keyasint,omitempty"`
}

// rawSyncFrame is a syncFrame whose changes are already encoded.
type rawSyncFrame struct {
	V      uint64       `cbor:"1,keyasint"`
	Groups []rawMessage `cbor:"2,keyasint,omitempty"`
}

// SyncWith runs one catch-up with p: it sends our vector, applies what p
// streams back and then advances our watermarks. It dials p if needed.
func (g *Gossip) SyncWith(ctx context.Context, p peer.ID) (SyncStats, error) {
	if !g.enter() {
		return SyncStats{}, ErrClosed
	}
	defer g.wg.Done()
	return g.runSync(ctx, p, nil)
}

// SyncAll runs a catch-up with every connected peer that speaks the
// protocol, one after the other (so later ones send only what earlier ones
// did not), and returns the sums and every failure.
func (g *Gossip) SyncAll(ctx context.Context) (SyncStats, error) {
	if !g.enter() {
		return SyncStats{}, ErrClosed
	}
	defer g.wg.Done()
	var total SyncStats
	var errs []error
	for _, p := range g.syncPeers() {
		st, err := g.runSync(network.WithNoDial(ctx, "catch-up"), p, nil)
		total.add(st)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return total, errors.Join(errs...)
}

// runSync runs and counts one catch-up. progress, if set, is called each
// time a frame applied changes.
func (g *Gossip) runSync(ctx context.Context, p peer.ID, progress func()) (SyncStats, error) {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.SessionTimeout) // whatever the responder's pace
	defer cancel()
	st, err := g.syncWith(ctx, p, progress)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		g.reject(p, ReasonSessionTimeout)
	}
	if g.cfg.OnSync != nil {
		g.cfg.OnSync(p, st, err)
	}
	if err != nil {
		g.st.syncErrors.Add(1)
		return st, fmt.Errorf("gossip: sync with %s: %w", p, err)
	}
	g.st.syncs.Add(1)
	return st, nil
}

func (g *Gossip) syncWith(ctx context.Context, p peer.ID, progress func()) (st SyncStats, err error) {
	start := time.Now()
	st.Peers = 1
	if p == g.self {
		return st, errors.New("cannot sync with ourselves")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(g.ctx, cancel)()
	s, err := g.h.NewStream(ctx, p, g.cfg.SyncProtocol)
	if err != nil {
		return st, fmt.Errorf("open stream: %w", err)
	}
	defer context.AfterFunc(ctx, func() { _ = s.Reset() })()
	cs := &countingStream{rw: s}
	defer func() {
		st.BytesSent, st.BytesReceived = cs.written, cs.read
		st.Duration = time.Since(start)
		g.st.syncBytesSent.Add(uint64(cs.written))
		g.st.syncBytesReceived.Add(uint64(cs.read))
		g.st.syncChangesReceived.Add(uint64(st.Changes))
		if err != nil {
			_ = s.Reset()
		} else {
			_ = s.Close()
		}
	}()

	have, err := g.r.Watermarks(ctx)
	if err != nil {
		return st, err
	}
	retired, _ := g.r.RetiredHorizon()
	req := syncRequest{V: FormatVersion, Have: fitVector(have, g.cfg.MaxMessageSize/2), Prefixes: g.r.Prefixes(), Retired: uint64(retired)}
	_ = s.SetWriteDeadline(time.Now().Add(g.cfg.StreamTimeout))
	if _, err := writeFrame(cs, req); err != nil {
		return st, err
	}
	if err := s.CloseWrite(); err != nil {
		return st, fmt.Errorf("close write: %w", err)
	}
	br := bufio.NewReader(cs)
	var received map[string]bool // the keys of a snapshot stream
	for {
		_ = s.SetReadDeadline(time.Now().Add(g.cfg.StreamTimeout))
		var f syncFrame
		if err := readFrame(br, g.cfg.maxFrameSize(), &f); err != nil {
			if errors.Is(err, io.EOF) {
				return st, fmt.Errorf("stream ended before its last frame: %w", io.ErrUnexpectedEOF)
			}
			if errors.Is(err, ErrMessageTooLarge) || errors.Is(err, ErrMalformed) {
				g.reject(p, reasonOf(err))
			}
			return st, err
		}
		if f.V != FormatVersion {
			g.reject(p, ReasonUnknownVersion)
			return st, fmt.Errorf("%w: %d", ErrUnknownVersion, f.V)
		}
		if f.Err != "" {
			return st, fmt.Errorf("peer failed: %.200s", f.Err)
		}
		if f.Snapshot && st.Frames == 0 {
			received = map[string]bool{}
		}
		st.Frames++
		changes, skipped, err := g.syncChanges(f.Groups)
		if err != nil {
			g.reject(p, reasonOf(err))
			return st, err
		}
		st.Changes += len(changes) + skipped
		st.Skipped += skipped
		if received != nil {
			for _, c := range changes {
				received[c.Key] = true
			}
		}
		if len(changes) > 0 {
			res, err := g.apply(ctx, p, PathCatchUp, changes)
			st.Applied += res.Applied
			st.Stale += res.Stale
			st.Skipped += res.Skipped
			if err != nil {
				return st, err
			}
			if res.Applied > 0 && progress != nil {
				progress()
			}
		}
		if !f.Done {
			continue
		}
		if len(f.Vector) == 0 {
			return st, nil // nothing in common: nothing to advance
		}
		for src := range f.Vector {
			if _, _, err := replica.ParseSource(src); err != nil {
				g.reject(p, ReasonInvalidChange)
				return st, err
			}
		}
		for _, pr := range f.Prefixes {
			if err := datastore.ValidatePrefix(pr); err != nil {
				g.reject(p, ReasonInvalidKey)
				return st, err
			}
		}
		heads := make([]replica.Change, 0, len(f.Heads))
		for _, w := range f.Heads {
			h, err := w.head()
			if err != nil {
				g.reject(p, reasonOf(err))
				return st, err
			}
			heads = append(heads, h)
		}
		// Only now, with the whole stream applied, may the watermarks move,
		// and no further than the signed heads prove.
		if received != nil {
			dropped, err := g.r.Reconcile(ctx, replica.Vector(f.Vector), replica.Vector(f.Horizon), f.Floors, f.Prefixes, received)
			if err != nil {
				return st, err
			}
			st.Snapshot, st.Dropped = true, dropped
		}
		bad, err := g.r.Advance(ctx, replica.Vector(f.Vector), heads, f.Prefixes)
		if bad > 0 {
			g.reject(p, ReasonBadSignature)
		}
		if err != nil {
			return st, err
		}
		st.Advanced = true
		if err := g.r.ObservePeerRetired(ctx, p.String(), replica.Vector(f.Vector), replica.HLC(f.Retired)); err != nil {
			return st, err
		}
		// Watermarks are the fast path; the fingerprint is the truth. When
		// both peers replicate the same keys and our states still differ,
		// repair finds and exchanges exactly the differences.
		mine := g.r.StateFingerprint()
		same := slices.Equal(replica.NormalizePrefixes(f.Prefixes), g.r.Prefixes())
		st.Matched = same && bytes.Equal(mine.FP[:], f.Fingerprint) && mine.Count == f.Count
		g.recordMatch(p, st.Matched)
		if same && !st.Matched && !g.cfg.DisableRepair {
			// A responder that lacks many of the changes we hold is
			// catching up itself (a peer joining several at once): its own
			// catch-up brings them, and a repair now would send them twice.
			lag, err := g.lag(ctx, replica.Vector(f.Vector))
			if err != nil {
				return st, err
			}
			if lag > maxRepairLag {
				return st, nil
			}
			rs, err := g.repairWith(ctx, p)
			st.Repaired, st.Repair = true, rs
			if err != nil {
				return st, fmt.Errorf("repair: %w", err)
			}
		}
		return st, nil
	}
}

// maxRepairLag is how many changes, by watermark, a responder may lack from
// us for a catch-up that ends with different fingerprints to run a repair.
const maxRepairLag = 16

// lag returns how many changes, by sequence number, our watermarks are ahead
// of theirs.
func (g *Gossip) lag(ctx context.Context, theirs replica.Vector) (uint64, error) {
	mine, err := g.r.Watermarks(ctx)
	if err != nil {
		return 0, err
	}
	var n uint64
	for src, seq := range mine {
		if seq > theirs[src] {
			n += seq - theirs[src]
		}
	}
	return n, nil
}

// fitVector returns v, or as much of it as encodes within budget bytes: a
// responder sends from 0 for the sources left out, which costs bytes, never
// correctness.
func fitVector(v replica.Vector, budget int) map[string]uint64 {
	size := 16
	for src := range v {
		size += len(src) + 12
	}
	if size <= budget {
		return v
	}
	srcs := slices.Sorted(maps.Keys(v))
	out := map[string]uint64{}
	size = 16
	for _, src := range srcs {
		if size+len(src)+12 > budget {
			break
		}
		out[src] = v[src]
		size += len(src) + 12
	}
	return out
}

// syncChanges validates the changes of a catch-up frame and returns those
// under our prefixes, and how many others it skipped. Catch-up carries every
// value in full.
func (g *Gossip) syncChanges(groups []Message) ([]replica.Change, int, error) {
	var out []replica.Change
	skipped := 0
	for _, m := range groups {
		if m.V != FormatVersion {
			return nil, 0, fmt.Errorf("%w: %d", ErrUnknownVersion, m.V)
		}
		if err := replica.ValidateOrigin(m.Origin); err != nil {
			return nil, 0, err
		}
		for _, w := range m.Changes {
			c, ann, err := w.change(m.Origin, g.cfg.MaxValueSize)
			if err != nil {
				return nil, 0, err
			}
			if ann != nil {
				return nil, 0, fmt.Errorf("%w: %q: catch-up left its value out", replica.ErrInvalidChange, c.Key)
			}
			if !g.r.Replicates(c.Key) {
				skipped++
				continue
			}
			out = append(out, c)
		}
	}
	return out, skipped, nil
}

// handleSync answers a catch-up request.
func (g *Gossip) handleSync(s network.Stream) {
	g.serveStream(s, "catch-up", func(ctx context.Context, cs *countingStream, p peer.ID) error {
		sent, err := g.serveSync(ctx, s, cs, p)
		g.st.syncBytesSent.Add(uint64(cs.written))
		g.st.syncBytesReceived.Add(uint64(cs.read))
		g.st.syncChangesSent.Add(uint64(sent))
		if err == nil {
			g.st.syncsServed.Add(1)
		}
		return err
	})
}

// serveStream answers one catch-up or repair stream with serve. The peer
// must be within its limits (sessions at once and per second, see
// peerLimits) and the session holds one of MaxConcurrentSyncs slots; it is
// refused otherwise. Everything it writes is charged to the peer's byte
// budget, it ends after SessionTimeout or with the Gossip, and the stream
// is reset when serve fails.
func (g *Gossip) serveStream(s network.Stream, what string, serve func(ctx context.Context, cs *countingStream, p peer.ID) error) {
	if !g.enter() {
		_ = s.Reset()
		return
	}
	defer g.wg.Done()
	p := s.Conn().RemotePeer()
	end, reason := g.limits.begin(p)
	if reason != "" {
		g.st.syncsRefused.Add(1)
		g.reject(p, reason)
		_ = s.Reset()
		return
	}
	defer end()
	select {
	case g.serving <- struct{}{}:
		defer func() { <-g.serving }()
	default:
		g.st.syncsRefused.Add(1)
		_ = s.Reset()
		return
	}
	ctx, cancel := context.WithTimeout(g.ctx, g.cfg.SessionTimeout)
	defer cancel()
	defer context.AfterFunc(ctx, func() { _ = s.Reset() })()
	cs := &countingStream{rw: struct {
		io.Reader
		io.Writer
	}{s, budgetWriter{l: g.limits, p: p, w: s}}}
	if err := serve(ctx, cs, p); err != nil {
		_ = s.Reset()
		switch {
		case g.ctx.Err() != nil:
			return
		case errors.Is(err, errBudget):
			g.reject(p, ReasonBandwidth)
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			g.reject(p, ReasonSessionTimeout)
		}
		g.log.Debug(what+" request failed", "from", p, "err", err)
		return
	}
	_ = s.Close()
}

func (g *Gossip) serveSync(ctx context.Context, s network.Stream, cs *countingStream, p peer.ID) (int, error) {
	_ = s.SetReadDeadline(time.Now().Add(g.cfg.StreamTimeout))
	var req syncRequest
	if err := readFrame(bufio.NewReader(cs), g.cfg.MaxMessageSize, &req); err != nil {
		if errors.Is(err, ErrMessageTooLarge) || errors.Is(err, ErrMalformed) {
			g.reject(p, reasonOf(err))
		}
		return 0, err
	}
	if req.V != FormatVersion {
		g.reject(p, ReasonUnknownVersion)
		return 0, fmt.Errorf("%w: %d", ErrUnknownVersion, req.V)
	}
	for _, pr := range req.Prefixes {
		if err := datastore.ValidatePrefix(pr); err != nil {
			g.reject(p, ReasonInvalidKey)
			return 0, err
		}
	}
	write := func(v any) error {
		_ = s.SetWriteDeadline(time.Now().Add(g.cfg.StreamTimeout))
		_, err := writeFrame(cs, v)
		return err
	}
	want, overlap := replica.IntersectPrefixes(g.r.Prefixes(), req.Prefixes)
	sent := 0
	have := replica.Vector(req.Have)
	if err := g.r.ObservePeerRetired(ctx, p.String(), have, replica.HLC(req.Retired)); err != nil {
		return 0, err
	}
	snapshot := overlap && g.r.BehindHorizon(have, replica.HLC(req.Retired))
	if snapshot {
		// Tombstones the peer never saw are gone here: send everything, and
		// say so, so the peer drops what the snapshot shows was deleted.
		have = replica.Vector{}
		if err := write(syncFrame{V: FormatVersion, Snapshot: true}); err != nil {
			return 0, err
		}
	}
	var vec replica.Vector
	if overlap {
		pk := newPacker(g.cfg.MaxMessageSize)
		flush := func() error {
			if pk.empty() {
				return nil
			}
			return write(rawSyncFrame{V: FormatVersion, Groups: pk.take()})
		}
		var err error
		vec, err = g.r.ChangesSince(ctx, have, want, g.cfg.SyncBatch, func(changes []replica.Change) error {
			for _, c := range changes {
				enc, err := encodeChange(toWire(c, -1, false))
				if err != nil {
					return err
				}
				if !pk.fits(c.Origin, len(enc)) {
					if err := flush(); err != nil {
						return err
					}
				}
				pk.add(c.Origin, enc)
				sent++
			}
			return nil
		})
		if err == nil {
			err = flush()
		}
		if err != nil {
			if ctx.Err() == nil {
				_ = write(syncFrame{V: FormatVersion, Err: "responder failed to read its changes"})
			}
			return sent, err
		}
	}
	retired, _ := g.r.RetiredHorizon()
	done := syncFrame{V: FormatVersion, Done: true, Vector: vec, Prefixes: g.r.Prefixes(), Retired: uint64(retired)}
	if snapshot {
		done.Horizon, done.Floors = g.r.Collected(), g.r.Floors()
	}
	if overlap {
		// Heads only for the sources whose watermark this stream can move:
		// the initiator already has proof for the rest.
		var srcs []string
		for _, src := range slices.Sorted(maps.Keys(vec)) {
			if vec[src] > have[src] {
				srcs = append(srcs, src)
			}
		}
		budget := g.cfg.MaxMessageSize / 2
		for _, h := range g.r.Heads(srcs) {
			w := toWire(h, -1, true)
			if budget -= len(h.Key) + changeOverhead; budget < 0 {
				break // no head: the initiator's watermark for that source waits
			}
			done.Heads = append(done.Heads, w)
		}
		sum := g.r.StateFingerprint()
		done.Fingerprint, done.Count = sum.FP[:], sum.Count
	}
	return sent, write(done)
}

// syncLoop starts catch-ups: with peers already connected, with every newly
// identified peer that speaks the protocol, and every jittered interval
// with SyncFanout random peers.
func (g *Gossip) syncLoop() {
	onConnect := !g.cfg.DisableSyncOnConnect
	if onConnect {
		for _, p := range g.syncPeers() {
			g.startSync(p)
		}
	}
	var tick <-chan time.Time
	if g.cfg.SyncInterval > 0 {
		tick = g.cfg.After(g.nextInterval())
	}
	events := g.evSub.Out()
	for {
		select {
		case <-g.ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			e, isID := ev.(event.EvtPeerIdentificationCompleted)
			if onConnect && isID && slices.Contains(e.Protocols, g.cfg.SyncProtocol) {
				g.startSync(e.Peer)
			}
		case <-tick:
			g.syncRound()
			tick = g.cfg.After(g.nextInterval())
		}
	}
}

// nextInterval is SyncInterval jittered by ±SyncJitter.
func (g *Gossip) nextInterval() time.Duration {
	return jitter(g.cfg.SyncInterval, g.cfg.SyncJitter, g.cfg.Rand())
}

// jitter scales d by 1 + frac·(2r−1), r in [0, 1).
func jitter(d time.Duration, frac, r float64) time.Duration {
	return time.Duration(float64(d) * (1 + frac*(2*r-1)))
}

// syncRound starts catch-ups with up to SyncFanout random connected peers.
func (g *Gossip) syncRound() {
	peers := g.syncPeers()
	// Partial Fisher-Yates: the first SyncFanout are a uniform sample.
	for i := 0; i < len(peers) && i < g.cfg.SyncFanout; i++ {
		j := i + int(g.cfg.Rand()*float64(len(peers)-i))
		peers[i], peers[j] = peers[j], peers[i]
		g.startSync(peers[i])
	}
}

// syncPeers returns the connected peers known to speak SyncProtocol, in
// order of ID (the network lists them in map order), so a seeded Rand
// makes the same choices.
func (g *Gossip) syncPeers() []peer.ID {
	var out []peer.ID
	for _, p := range g.h.Network().Peers() {
		if p == g.self {
			continue
		}
		if ok, err := g.h.Peerstore().SupportsProtocols(p, g.cfg.SyncProtocol); err == nil && len(ok) > 0 {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// startSync runs a catch-up with p in the background, unless one with p is
// running or waiting. Background catch-ups take turns: each starts once the
// one before it ended, so it sends our watermarks as that one raised them
// and receives only what is still missing. A peer joining several others at
// once so fetches each missing entry about once, not once per neighbour. A
// catch-up that applies nothing for stallAfter gives up its turn (and goes
// on beside the next): a slow or hostile responder delays the others by
// that much at most. At most MaxConcurrentSyncs run at once. It never dials.
//
// The turns go in the order of the startSync calls, not in the order the
// catch-ups' goroutines happen to be scheduled: several started at one
// moment (a round's SyncFanout peers) would otherwise race for the turn,
// and which peer is asked first, and so what each catch-up brings, would
// vary between runs that are otherwise the same (such as the simulation's
// runs of one seed in virtual time).
func (g *Gossip) startSync(p peer.ID) {
	if p == g.self {
		return
	}
	g.mu.Lock()
	if g.closed || g.syncing[p] {
		g.mu.Unlock()
		return
	}
	g.syncing[p] = true
	turn := g.queueTurn()
	g.wg.Add(1)
	g.mu.Unlock()
	go func() {
		defer g.wg.Done()
		defer func() {
			g.mu.Lock()
			delete(g.syncing, p)
			g.mu.Unlock()
		}()
		select {
		case <-turn:
		case <-g.ctx.Done():
			g.leaveTurn(turn)
			return
		}
		var once sync.Once
		release := func() { once.Do(g.passTurn) }
		defer release()
		stall := time.AfterFunc(g.stallAfter(), release)
		defer stall.Stop()
		select {
		case g.outgoing <- struct{}{}:
			defer func() { <-g.outgoing }()
		case <-g.ctx.Done():
			return
		}
		progress := func() { stall.Reset(g.stallAfter()) }
		if _, err := g.runSync(network.WithNoDial(g.ctx, "catch-up"), p, progress); err != nil && g.ctx.Err() == nil {
			g.log.Debug("catch-up failed", "err", err)
		}
	}()
}

// queueTurn queues a background catch-up for the turn and returns the
// channel closed when it has it (at once if nobody has it). The caller
// holds g.mu.
func (g *Gossip) queueTurn() chan struct{} {
	turn := make(chan struct{})
	if !g.turnHeld {
		g.turnHeld = true
		close(turn)
	} else {
		g.turnQueue = append(g.turnQueue, turn)
	}
	return turn
}

// passTurn hands the turn to the catch-up queued first, if any.
func (g *Gossip) passTurn() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.turnQueue) == 0 {
		g.turnHeld = false
		return
	}
	next := g.turnQueue[0]
	g.turnQueue = slices.Delete(g.turnQueue, 0, 1)
	close(next)
}

// leaveTurn takes a catch-up that gives up waiting out of the queue, or
// passes the turn on if it was handed it meanwhile.
func (g *Gossip) leaveTurn(turn chan struct{}) {
	g.mu.Lock()
	if i := slices.Index(g.turnQueue, turn); i >= 0 {
		g.turnQueue = slices.Delete(g.turnQueue, i, i+1)
		g.mu.Unlock()
		return
	}
	g.mu.Unlock()
	g.passTurn()
}

// stallAfter is how long a background catch-up may go without applying a
// change before the next one may start beside it.
func (g *Gossip) stallAfter() time.Duration { return g.cfg.StreamTimeout / 3 }

// countingStream counts the bytes read and written through it. One
// goroutine uses it at a time.
type countingStream struct {
	rw            io.ReadWriter
	read, written int64
}

func (c *countingStream) Read(b []byte) (int, error) {
	n, err := c.rw.Read(b)
	c.read += int64(n)
	return n, err
}

func (c *countingStream) Write(b []byte) (int, error) {
	n, err := c.rw.Write(b)
	c.written += int64(n)
	return n, err
}
