package gossip

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/replica"
)

// Fingerprint repair, on Config.RepairProtocol. Watermarks say what a peer
// was sent; fingerprints say what it holds. When a catch-up ends with the
// two states' fingerprints different (changes lost or rejected on some
// path, a peer restored from an old backup, a bug), the initiator walks the
// responder's repair tree (replica.Node): it asks for the summaries of the
// children of every node whose summaries differ, descends until a node is
// small, asks for the keys and digests there, and then both sides send each
// other their current change of every key that differs. Both apply what
// they receive as any change: signature checked, the deterministic order
// decides. d differences among n keys cost O(d · log₁₆ n) summaries and
// round trips that grow with the tree's depth, not with n.
//
// Only peers replicating the same prefixes repair each other: their trees
// cover the same keys.

// RepairStats describes one repair.
type RepairStats struct {
	Rounds        int   // request/response round trips
	Nodes         int   // node summaries compared
	Differences   int   // keys whose changes differed
	Sent          int   // our changes sent
	Received      int   // the responder's changes received
	Applied       int   // of which applied here
	BytesSent     int64 // protocol bytes on the stream
	BytesReceived int64
}

func (s *RepairStats) add(o RepairStats) {
	s.Rounds += o.Rounds
	s.Nodes += o.Nodes
	s.Differences += o.Differences
	s.Sent += o.Sent
	s.Received += o.Received
	s.Applied += o.Applied
	s.BytesSent += o.BytesSent
	s.BytesReceived += o.BytesReceived
}

// Repair protocol limits.
const (
	repairLeafItems   = 16      // a node this small is compared key by key
	repairMaxNodes    = 1 << 15 // nodes per request: a response stays under 1 MiB
	repairMaxItems    = 1 << 16
	repairMaxKeys     = 4096 // keys per pull request
	repairMaxRequests = 1 << 12
)

// Repair operations.
const (
	repairHello = "hello"
	repairSum   = "sum"
	repairItems = "items"
	repairPush  = "push"
	repairPull  = "pull"
)

type wireNode struct {
	_      struct{} `cbor:",toarray"`
	Depth  uint8
	Prefix uint64
}

type wireSummary struct {
	_     struct{} `cbor:",toarray"`
	FP    []byte
	Count int
}

type wireItem struct {
	_      struct{} `cbor:",toarray"`
	Key    string
	Digest []byte
}

type repairRequest struct {
	V        uint64     `cbor:"1,keyasint"`
	Op       string     `cbor:"2,keyasint"`
	Prefixes []string   `cbor:"3,keyasint,omitempty"`
	Nodes    []wireNode `cbor:"4,keyasint,omitempty"`
	Keys     []string   `cbor:"5,keyasint,omitempty"`
	Groups   []Message  `cbor:"6,keyasint,omitempty"`
}

type repairResponse struct {
	V       uint64        `cbor:"1,keyasint"`
	Sums    []wireSummary `cbor:"2,keyasint,omitempty"`
	Items   [][]wireItem  `cbor:"3,keyasint,omitempty"`
	Groups  []Message     `cbor:"4,keyasint,omitempty"`
	More    bool          `cbor:"5,keyasint,omitempty"` // more frames follow for this request
	Err     string        `cbor:"6,keyasint,omitempty"`
	Applied int           `cbor:"7,keyasint,omitempty"`
}

// RepairWith runs a fingerprint repair with p now, whatever the
// fingerprints say.
func (g *Gossip) RepairWith(ctx context.Context, p peer.ID) (RepairStats, error) {
	if !g.enter() {
		return RepairStats{}, ErrClosed
	}
	defer g.wg.Done()
	ctx, cancel := context.WithTimeout(ctx, g.cfg.SessionTimeout)
	defer cancel()
	st, err := g.repairWith(ctx, p)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		g.reject(p, ReasonSessionTimeout)
	}
	return st, err
}

// repairSession is the initiator's side of one repair stream.
type repairSession struct {
	g  *Gossip
	p  peer.ID
	s  network.Stream
	cs *countingStream
	br *bufio.Reader
	st *RepairStats
}

func (g *Gossip) repairWith(ctx context.Context, p peer.ID) (st RepairStats, err error) {
	if p == g.self {
		return st, errors.New("cannot repair with ourselves")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(g.ctx, cancel)()
	s, err := g.h.NewStream(ctx, p, g.cfg.RepairProtocol)
	if err != nil {
		return st, fmt.Errorf("open stream: %w", err)
	}
	defer context.AfterFunc(ctx, func() { _ = s.Reset() })()
	cs := &countingStream{rw: s}
	defer func() {
		st.BytesSent, st.BytesReceived = cs.written, cs.read
		g.st.repairs.Add(1)
		g.st.repairBytes.Add(uint64(cs.written + cs.read))
		g.st.repaired.Add(uint64(st.Applied))
		if err != nil {
			g.st.repairErrors.Add(1)
			_ = s.Reset()
		} else {
			_ = s.Close()
		}
	}()
	rs := &repairSession{g: g, p: p, s: s, cs: cs, br: bufio.NewReader(cs), st: &st}
	if _, err := rs.call(repairRequest{Op: repairHello, Prefixes: g.r.Prefixes()}); err != nil {
		return st, err
	}
	diff, err := rs.walk()
	if err != nil {
		return st, err
	}
	st.Differences = len(diff)
	if len(diff) == 0 {
		return st, nil
	}
	return st, rs.exchange(ctx, diff)
}

// call sends one request and reads its (first) response.
func (rs *repairSession) call(req repairRequest) (repairResponse, error) {
	req.V = FormatVersion
	_ = rs.s.SetWriteDeadline(time.Now().Add(rs.g.cfg.StreamTimeout))
	if _, err := writeFrame(rs.cs, req); err != nil {
		return repairResponse{}, err
	}
	rs.st.Rounds++
	return rs.read()
}

func (rs *repairSession) read() (repairResponse, error) {
	_ = rs.s.SetReadDeadline(time.Now().Add(rs.g.cfg.StreamTimeout))
	var resp repairResponse
	if err := readFrame(rs.br, rs.g.cfg.maxFrameSize(), &resp); err != nil {
		if errors.Is(err, ErrMessageTooLarge) || errors.Is(err, ErrMalformed) {
			rs.g.reject(rs.p, reasonOf(err))
		}
		return resp, err
	}
	if resp.V != FormatVersion {
		rs.g.reject(rs.p, ReasonUnknownVersion)
		return resp, fmt.Errorf("%w: %d", ErrUnknownVersion, resp.V)
	}
	if resp.Err != "" {
		return resp, fmt.Errorf("peer failed: %.200s", resp.Err)
	}
	return resp, nil
}

// walk descends the two trees where they differ and returns the keys whose
// digests differ.
func (rs *repairSession) walk() ([]string, error) {
	g := rs.g
	frontier := []replica.Node{{}}
	var leaves []replica.Node
	for len(frontier) > 0 {
		var next []replica.Node
		for lo := 0; lo < len(frontier); lo += repairMaxNodes / 16 {
			var children []replica.Node
			for _, n := range frontier[lo:min(lo+repairMaxNodes/16, len(frontier))] {
				children = append(children, n.Children()...)
			}
			resp, err := rs.call(repairRequest{Op: repairSum, Nodes: toWireNodes(children)})
			if err != nil {
				return nil, err
			}
			if len(resp.Sums) != len(children) {
				g.reject(rs.p, ReasonMalformed)
				return nil, fmt.Errorf("%w: %d summaries for %d nodes", ErrMalformed, len(resp.Sums), len(children))
			}
			mine := g.r.Summarize(children)
			rs.st.Nodes += len(children)
			for i, n := range children {
				t := resp.Sums[i]
				if t.Count == mine[i].Count && slices.Equal(t.FP, mine[i].FP[:]) {
					continue
				}
				if n.Depth == replica.MaxDepth || (t.Count <= repairLeafItems && mine[i].Count <= repairLeafItems) {
					leaves = append(leaves, n)
				} else {
					next = append(next, n)
				}
			}
		}
		frontier = next
	}
	var diff []string
	for lo := 0; lo < len(leaves); lo += repairMaxNodes {
		part := leaves[lo:min(lo+repairMaxNodes, len(leaves))]
		resp, err := rs.call(repairRequest{Op: repairItems, Nodes: toWireNodes(part)})
		if err != nil {
			return nil, err
		}
		if len(resp.Items) != len(part) {
			g.reject(rs.p, ReasonMalformed)
			return nil, fmt.Errorf("%w: items of %d nodes for %d", ErrMalformed, len(resp.Items), len(part))
		}
		mine := g.r.Items(part, repairMaxItems)
		for i := range part {
			theirs := map[string]string{}
			for _, it := range resp.Items[i] {
				theirs[it.Key] = string(it.Digest)
			}
			for _, it := range mine[i] {
				if d, ok := theirs[it.Key]; !ok || d != string(it.Digest[:]) {
					diff = append(diff, it.Key)
				}
				delete(theirs, it.Key)
			}
			for k := range theirs {
				diff = append(diff, k)
			}
		}
	}
	slices.Sort(diff)
	return slices.Compact(diff), nil
}

// exchange sends our changes of the differing keys and applies the
// responder's.
func (rs *repairSession) exchange(ctx context.Context, diff []string) error {
	g := rs.g
	// Push ours, in frames of at most MaxMessageSize.
	pk := newPacker(g.cfg.MaxMessageSize)
	push := func() error {
		if pk.empty() {
			return nil
		}
		groups, err := decodeGroups(pk.take())
		if err != nil {
			return err
		}
		_, err = rs.call(repairRequest{Op: repairPush, Groups: groups})
		return err
	}
	for _, key := range diff {
		c, found, err := g.r.Current(ctx, key)
		if err != nil {
			return err
		}
		if !found || len(c.Sig) == 0 || !g.r.Replicates(key) {
			continue
		}
		enc, err := encodeChange(toWire(c, -1, false))
		if err != nil {
			return err
		}
		if !pk.fits(c.Origin, len(enc)) {
			if err := push(); err != nil {
				return err
			}
		}
		pk.add(c.Origin, enc)
		rs.st.Sent++
	}
	if err := push(); err != nil {
		return err
	}
	// Pull theirs.
	for lo := 0; lo < len(diff); lo += repairMaxKeys {
		resp, err := rs.call(repairRequest{Op: repairPull, Keys: diff[lo:min(lo+repairMaxKeys, len(diff))]})
		for {
			if err != nil {
				return err
			}
			changes, _, err := g.syncChanges(resp.Groups)
			if err != nil {
				g.reject(rs.p, reasonOf(err))
				return err
			}
			rs.st.Received += len(changes)
			if len(changes) > 0 {
				res, err := g.apply(ctx, rs.p, PathRepair, changes)
				rs.st.Applied += res.Applied
				if err != nil {
					return err
				}
			}
			if !resp.More {
				break
			}
			resp, err = rs.read()
		}
	}
	return nil
}

// decodeGroups turns packed raw groups back into Messages for a request.
func decodeGroups(raw []rawMessage) ([]Message, error) {
	out := make([]Message, 0, len(raw))
	for _, r := range raw {
		b, err := marshal(r)
		if err != nil {
			return nil, fmt.Errorf("gossip: encode repair changes: %w", err)
		}
		var m Message
		if err := unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("gossip: encode repair changes: %w", err)
		}
		out = append(out, m)
	}
	return out, nil
}

func toWireNodes(ns []replica.Node) []wireNode {
	out := make([]wireNode, len(ns))
	for i, n := range ns {
		out[i] = wireNode{Depth: n.Depth, Prefix: n.Prefix}
	}
	return out
}

func fromWireNodes(ws []wireNode) ([]replica.Node, error) {
	if len(ws) > repairMaxNodes {
		return nil, fmt.Errorf("%w: %d nodes in one request", ErrMalformed, len(ws))
	}
	out := make([]replica.Node, len(ws))
	for i, w := range ws {
		out[i] = replica.Node{Depth: w.Depth, Prefix: w.Prefix}
		if !out[i].Valid() {
			return nil, fmt.Errorf("%w: bad node %d/%x", ErrMalformed, w.Depth, w.Prefix)
		}
	}
	return out, nil
}

// handleRepair answers a repair stream.
func (g *Gossip) handleRepair(s network.Stream) {
	g.serveStream(s, "repair", func(ctx context.Context, cs *countingStream, p peer.ID) error {
		err := g.serveRepair(ctx, s, cs, p)
		g.st.repairBytes.Add(uint64(cs.written + cs.read))
		if err == nil {
			g.st.repairsServed.Add(1)
		}
		return err
	})
}

func (g *Gossip) serveRepair(ctx context.Context, s network.Stream, cs *countingStream, p peer.ID) error {
	br := bufio.NewReader(cs)
	write := func(resp repairResponse) error {
		resp.V = FormatVersion
		_ = s.SetWriteDeadline(time.Now().Add(g.cfg.StreamTimeout))
		_, err := writeFrame(cs, resp)
		return err
	}
	fail := func(err error) error {
		_ = write(repairResponse{Err: err.Error()})
		return err
	}
	hello := false
	for n := 0; ; n++ {
		if n > repairMaxRequests {
			return fail(errors.New("too many requests in one repair"))
		}
		_ = s.SetReadDeadline(time.Now().Add(g.cfg.StreamTimeout))
		var req repairRequest
		if err := readFrame(br, g.cfg.maxFrameSize(), &req); err != nil {
			if errors.Is(err, io.EOF) && hello {
				return nil // the initiator is done
			}
			if errors.Is(err, ErrMessageTooLarge) || errors.Is(err, ErrMalformed) {
				g.reject(p, reasonOf(err))
			}
			return err
		}
		if req.V != FormatVersion {
			g.reject(p, ReasonUnknownVersion)
			return fail(fmt.Errorf("%w: %d", ErrUnknownVersion, req.V))
		}
		if !hello && req.Op != repairHello {
			return fail(errors.New("repair must start with hello"))
		}
		switch req.Op {
		case repairHello:
			if !slices.Equal(replica.NormalizePrefixes(req.Prefixes), g.r.Prefixes()) {
				return fail(errors.New("repair needs the same replicated prefixes on both peers"))
			}
			hello = true
			if err := write(repairResponse{}); err != nil {
				return err
			}
		case repairSum:
			nodes, err := fromWireNodes(req.Nodes)
			if err != nil {
				g.reject(p, ReasonMalformed)
				return fail(err)
			}
			sums := g.r.Summarize(nodes)
			resp := repairResponse{Sums: make([]wireSummary, len(sums))}
			for i, sm := range sums {
				resp.Sums[i] = wireSummary{FP: sm.FP[:], Count: sm.Count}
			}
			if err := write(resp); err != nil {
				return err
			}
		case repairItems:
			nodes, err := fromWireNodes(req.Nodes)
			if err != nil {
				g.reject(p, ReasonMalformed)
				return fail(err)
			}
			items := g.r.Items(nodes, repairMaxItems)
			resp := repairResponse{Items: make([][]wireItem, len(items))}
			for i, its := range items {
				resp.Items[i] = make([]wireItem, len(its))
				for j, it := range its {
					resp.Items[i][j] = wireItem{Key: it.Key, Digest: it.Digest[:]}
				}
			}
			if err := write(resp); err != nil {
				return err
			}
		case repairPush:
			changes, _, err := g.syncChanges(req.Groups)
			if err != nil {
				g.reject(p, reasonOf(err))
				return fail(err)
			}
			res, err := g.apply(ctx, p, PathRepair, changes)
			if err != nil && res.Invalid > 0 {
				return fail(err)
			}
			if err := write(repairResponse{Applied: res.Applied}); err != nil {
				return err
			}
		case repairPull:
			if len(req.Keys) > repairMaxKeys {
				g.reject(p, ReasonMalformed)
				return fail(fmt.Errorf("%w: %d keys in one pull", ErrMalformed, len(req.Keys)))
			}
			if err := g.servePull(ctx, req.Keys, write); err != nil {
				return err
			}
		default:
			g.reject(p, ReasonMalformed)
			return fail(fmt.Errorf("%w: unknown repair op %q", ErrMalformed, req.Op))
		}
	}
}

// servePull streams our current change of each key (replicated user keys
// only), in frames.
func (g *Gossip) servePull(ctx context.Context, keys []string, write func(repairResponse) error) error {
	pk := newPacker(g.cfg.MaxMessageSize)
	flush := func(more bool) error {
		groups, err := decodeGroups(pk.take())
		if err != nil {
			return err
		}
		return write(repairResponse{Groups: groups, More: more})
	}
	for _, key := range keys {
		probe := replica.Change{Key: key, Version: 1, HLC: 1, Gen: 1, Seq: 1, Origin: g.self.String()}
		if probe.Validate(0) != nil || !g.r.Replicates(key) {
			continue
		}
		c, found, err := g.r.Current(ctx, key)
		if err != nil {
			return err
		}
		if !found || len(c.Sig) == 0 {
			continue
		}
		enc, err := encodeChange(toWire(c, -1, false))
		if err != nil {
			return err
		}
		if !pk.fits(c.Origin, len(enc)) {
			if err := flush(true); err != nil {
				return err
			}
		}
		pk.add(c.Origin, enc)
	}
	return flush(false)
}
