package gossip

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/replica"
)

// fetchJob is a change whose value a message left out.
type fetchJob struct {
	change replica.Change // Value nil
	ann    announcement
	from   []peer.ID // whom to ask, in order: the origin, then the relaying peer
}

// valueRequest asks a peer for the state of Key at Version or newer.
type valueRequest struct {
	V       uint64 `cbor:"1,keyasint"`
	Key     string `cbor:"2,keyasint"`
	Version uint64 `cbor:"3,keyasint"`
}

// valueResponse carries the key's current change, value in full and origin
// set, when the peer has that version or a newer one.
type valueResponse struct {
	V      uint64      `cbor:"1,keyasint"`
	Change *WireChange `cbor:"2,keyasint,omitempty"`
}

// maxValueRequest caps a value request: a key and two integers.
const maxValueRequest = 2 << 10

var errNoValue = errors.New("gossip: peer has no such value")

// fetchLoop fetches announced values until Close.
func (g *Gossip) fetchLoop() {
	for {
		select {
		case <-g.ctx.Done():
			return
		case job := <-g.fetches:
			g.fetch(job)
		}
	}
}

// fetch gets and applies one announced value, asking each peer of job.from
// we are connected to. What fails is left to catch-up.
func (g *Gossip) fetch(job fetchJob) {
	c := job.change
	if cur, found, err := g.r.Current(g.ctx, c.Key); err == nil && found && !cur.Less(c) {
		return // we have it, or something newer, already
	}
	tried := map[peer.ID]bool{g.self: true}
	for _, p := range job.from {
		if tried[p] || g.h.Network().Connectedness(p) != network.Connected {
			continue
		}
		tried[p] = true
		got, err := g.fetchFrom(p, c, job.ann)
		if err != nil {
			if g.ctx.Err() == nil {
				g.log.Debug("value fetch failed", "key", c.Key, "from", p, "err", err)
			}
			continue
		}
		if _, err := g.apply(g.ctx, p, PathFetch, []replica.Change{got}); err == nil {
			g.st.fetches.Add(1)
			return
		}
	}
	g.st.fetchErrors.Add(1)
}

// fetchFrom asks p for the value of want. An answer with exactly want's
// metadata must match the announcement's size and hash; a newer state of the
// key is returned as is (it is applied like catch-up data).
func (g *Gossip) fetchFrom(p peer.ID, want replica.Change, ann announcement) (replica.Change, error) {
	ctx, cancel := context.WithTimeout(network.WithNoDial(g.ctx, "fetch value"), g.cfg.StreamTimeout)
	defer cancel()
	s, err := g.h.NewStream(ctx, p, g.cfg.ValueProtocol)
	if err != nil {
		return replica.Change{}, fmt.Errorf("open stream: %w", err)
	}
	defer context.AfterFunc(ctx, func() { _ = s.Reset() })()
	cs := &countingStream{rw: s}
	defer func() {
		g.st.valueBytesSent.Add(uint64(cs.written))
		g.st.valueBytesReceived.Add(uint64(cs.read))
	}()
	_ = s.SetDeadline(time.Now().Add(g.cfg.StreamTimeout))
	if _, err := writeFrame(cs, valueRequest{V: FormatVersion, Key: want.Key, Version: want.Version}); err != nil {
		_ = s.Reset()
		return replica.Change{}, err
	}
	_ = s.CloseWrite()
	// The answer may be no larger than what was announced: a peer cannot
	// make us read more than the announcement's size (a newer, larger
	// state of the key comes with catch-up instead).
	limit := min(g.cfg.maxFrameSize(), int(min(ann.Size, uint64(g.cfg.MaxValueSize)))+datastore.MaxKeyLen+changeOverhead)
	var resp valueResponse
	err = readFrame(bufio.NewReader(cs), limit, &resp)
	_ = s.Close()
	switch {
	case errors.Is(err, ErrMessageTooLarge) || errors.Is(err, ErrMalformed):
		g.reject(p, reasonOf(err))
		return replica.Change{}, err
	case err != nil:
		return replica.Change{}, err
	case resp.V != FormatVersion:
		g.reject(p, ReasonUnknownVersion)
		return replica.Change{}, fmt.Errorf("%w: %d", ErrUnknownVersion, resp.V)
	case resp.Change == nil:
		return replica.Change{}, errNoValue
	}
	w := *resp.Change
	if err := replica.ValidateOrigin(w.Origin); err != nil {
		g.reject(p, ReasonInvalidChange)
		return replica.Change{}, err
	}
	got, partial, err := w.change(w.Origin, g.cfg.MaxValueSize)
	if err == nil && (partial != nil || got.Key != want.Key) {
		err = fmt.Errorf("%w: %q: answer for %q or without its value", ErrBadValue, want.Key, got.Key)
	}
	if err != nil {
		g.reject(p, reasonOf(err))
		return replica.Change{}, err
	}
	if sameChange(got, want) {
		if uint64(len(got.Value)) != ann.Size || sha256.Sum256(got.Value) != ann.Hash {
			g.reject(p, ReasonBadValue)
			return replica.Change{}, fmt.Errorf("%w: %q", ErrBadValue, want.Key)
		}
		return got, nil
	}
	if want.Less(got) {
		return got, nil
	}
	return replica.Change{}, fmt.Errorf("%w: %q: peer is behind", errNoValue, want.Key)
}

// sameChange reports whether a and b are the same write (value aside).
func sameChange(a, b replica.Change) bool {
	return a.Key == b.Key && a.Version == b.Version && a.HLC == b.HLC && a.Origin == b.Origin &&
		a.Seq == b.Seq && a.Deleted == b.Deleted && a.CreatedAt == b.CreatedAt && a.UpdatedAt == b.UpdatedAt
}

// handleValue answers a value request with the key's current state when it
// is replicated here and at least the version asked for.
func (g *Gossip) handleValue(s network.Stream) {
	if !g.enter() {
		_ = s.Reset()
		return
	}
	defer g.wg.Done()
	select {
	case g.servingValues <- struct{}{}:
		defer func() { <-g.servingValues }()
	default:
		_ = s.Reset()
		return
	}
	p := s.Conn().RemotePeer()
	ctx, cancel := context.WithTimeout(g.ctx, g.cfg.StreamTimeout)
	defer cancel()
	defer context.AfterFunc(ctx, func() { _ = s.Reset() })()
	cs := &countingStream{rw: s}
	defer func() {
		g.st.valueBytesSent.Add(uint64(cs.written))
		g.st.valueBytesReceived.Add(uint64(cs.read))
	}()
	_ = s.SetDeadline(time.Now().Add(g.cfg.StreamTimeout))
	var req valueRequest
	if err := readFrame(bufio.NewReader(cs), maxValueRequest, &req); err != nil {
		if errors.Is(err, ErrMessageTooLarge) || errors.Is(err, ErrMalformed) {
			g.reject(p, reasonOf(err))
		}
		_ = s.Reset()
		return
	}
	resp := valueResponse{V: FormatVersion}
	// Only replicated user keys are served: local-only keys and the
	// replica's bookkeeping never leave this peer.
	probe := replica.Change{Key: req.Key, Version: 1, HLC: 1, Gen: 1, Seq: 1, Origin: g.self.String()}
	if req.V == FormatVersion && probe.Validate(0) == nil && g.r.Replicates(req.Key) {
		if cur, found, err := g.r.Current(ctx, req.Key); err == nil && found && cur.Version >= req.Version {
			w := toWire(cur, -1, true)
			resp.Change = &w
		}
	}
	if _, err := writeFrame(cs, resp); err != nil {
		_ = s.Reset()
		return
	}
	_ = s.Close()
}
