package gossip

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/fxamacker/cbor/v2"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/replica"
)

// FormatVersion is the wire format version carried by every message,
// request and frame. A peer rejects versions it does not know.
//
// Version 2 signs every change by its origin (WireChange.Sig) and counts
// sequence numbers per generation (WireChange.Gen).
const FormatVersion = 2

// Wire errors, matched with errors.Is.
var (
	ErrMessageTooLarge = errors.New("gossip: message too large")
	ErrMalformed       = errors.New("gossip: malformed message")
	ErrUnknownVersion  = errors.New("gossip: unknown format version")
	ErrForgedOrigin    = errors.New("gossip: origin is not the signer")
	ErrBadValue        = errors.New("gossip: value does not match its announcement")
)

// Message is the payload of one pubsub message: changes written on one
// peer, Origin, in sequence order. Catch-up frames reuse it to group changes
// by origin.
type Message struct {
	V       uint64       `cbor:"1,keyasint"`
	Origin  string       `cbor:"2,keyasint"`
	Changes []WireChange `cbor:"3,keyasint"`
}

// WireChange is a replica.Change on the wire. Origin is left empty when it
// is the enclosing Message's. A value larger than the sender's inline limit
// is left out (Value nil) and announced by ValueSize and ValueHash (SHA-256);
// receivers fetch it over the value protocol and check it against them.
type WireChange struct {
	Key       string `cbor:"1,keyasint"`
	Value     []byte `cbor:"2,keyasint"`
	Deleted   bool   `cbor:"3,keyasint,omitempty"`
	Version   uint64 `cbor:"4,keyasint"`
	HLC       uint64 `cbor:"5,keyasint"`
	Origin    string `cbor:"6,keyasint,omitempty"`
	Seq       uint64 `cbor:"7,keyasint"`
	CreatedAt int64  `cbor:"8,keyasint"`
	UpdatedAt int64  `cbor:"9,keyasint"`
	ValueSize uint64 `cbor:"10,keyasint,omitempty"`
	ValueHash []byte `cbor:"11,keyasint,omitempty"`
	Gen       uint64 `cbor:"12,keyasint"`
	Sig       []byte `cbor:"13,keyasint"`
	// ExpiresAt is the change's expiry (Unix nanoseconds), left out when it
	// has none; the signature covers it.
	ExpiresAt int64 `cbor:"14,keyasint,omitempty"`
}

// changeOverhead bounds a WireChange's encoding beyond its key and value.
const changeOverhead = 512

// maxElements caps CBOR arrays and maps in anything decoded: changes per
// message, origins per vector, prefixes. Sizes are capped first, so this
// only keeps the decoder from being asked for absurd counts.
const maxElements = 1 << 16

// decMode is the decoder every untrusted input goes through: no duplicate
// map keys, no indefinite lengths, no tags, bounded nesting and counts.
var decMode = sync.OnceValues(func() (cbor.DecMode, error) {
	return cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:  8,
		MaxArrayElements: maxElements,
		MaxMapPairs:      maxElements,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
	}.DecMode()
})

func unmarshal(b []byte, v any) error {
	dm, err := decMode()
	if err != nil {
		return fmt.Errorf("gossip: cbor decoder: %w", err)
	}
	return dm.Unmarshal(b, v)
}

func marshal(v any) ([]byte, error) { return cbor.Marshal(v) }

// toWire converts c for the wire; with inline >= 0, a value longer than
// inline is left out and announced by size and hash (the hash is what the
// origin's signature covers). keepOrigin keeps the change's origin (values
// answered over the value protocol, heads); otherwise the enclosing Message
// carries it. A change whose value is already left out (a head) keeps its
// hash and has no size.
func toWire(c replica.Change, inline int, keepOrigin bool) WireChange {
	w := WireChange{
		Key: c.Key, Value: c.Value, Deleted: c.Deleted, Version: c.Version, HLC: uint64(c.HLC),
		Seq: c.Seq, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt, Gen: c.Gen, Sig: c.Sig,
		ExpiresAt: c.ExpiresAt,
	}
	if keepOrigin {
		w.Origin = c.Origin
	}
	switch {
	case c.Deleted:
		w.Value = nil
	case c.Elided():
		w.Value, w.ValueHash = nil, c.ValueHash
		return w
	case w.Value == nil:
		w.Value = []byte{}
	}
	if inline >= 0 && len(c.Value) > inline {
		sum := sha256.Sum256(c.Value)
		w.Value, w.ValueSize, w.ValueHash = nil, uint64(len(c.Value)), sum[:]
	}
	return w
}

// announcement is what a message says about a value it left out.
type announcement struct {
	Size uint64
	Hash [sha256.Size]byte
}

// change converts w, found in a Message of origin, to a replica.Change and
// validates it. For a value left out it returns the announcement (the
// change's Value is then nil and must not be applied before the value is
// fetched and checked).
func (w WireChange) change(origin string, maxValue int) (replica.Change, *announcement, error) {
	if w.Origin != "" && w.Origin != origin {
		return replica.Change{}, nil, fmt.Errorf("%w: change of %q by %q in a message of %q", ErrForgedOrigin, w.Key, w.Origin, origin)
	}
	c := replica.Change{
		Key: w.Key, Value: w.Value, Deleted: w.Deleted, Version: w.Version, HLC: replica.HLC(w.HLC),
		Origin: origin, Seq: w.Seq, CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt, Gen: w.Gen, Sig: w.Sig,
		ExpiresAt: w.ExpiresAt,
	}
	var ann *announcement
	switch {
	case w.ValueHash != nil || w.ValueSize != 0:
		if len(w.ValueHash) != sha256.Size || w.Value != nil || w.Deleted {
			return replica.Change{}, nil, fmt.Errorf("%w: %q: malformed value announcement", replica.ErrInvalidChange, w.Key)
		}
		if w.ValueSize > uint64(maxValue) {
			return replica.Change{}, nil, fmt.Errorf("%q: announced %d bytes > %d: %w", w.Key, w.ValueSize, maxValue, datastore.ErrValueTooLarge)
		}
		ann = &announcement{Size: w.ValueSize}
		copy(ann.Hash[:], w.ValueHash)
		c.ValueHash = w.ValueHash
	case !c.Deleted && c.Value == nil:
		c.Value = []byte{}
	}
	if err := c.Validate(maxValue); err != nil {
		return replica.Change{}, nil, err
	}
	return c, ann, nil
}

// head converts a head (a change with its value left out, origin set) from
// a catch-up's last frame.
func (w WireChange) head() (replica.Change, error) {
	if err := replica.ValidateOrigin(w.Origin); err != nil {
		return replica.Change{}, err
	}
	if w.ValueSize != 0 || w.Value != nil || (!w.Deleted && len(w.ValueHash) != sha256.Size) {
		return replica.Change{}, fmt.Errorf("%w: head of %q is not a change without its value", replica.ErrInvalidChange, w.Key)
	}
	c := replica.Change{
		Key: w.Key, Deleted: w.Deleted, Version: w.Version, HLC: replica.HLC(w.HLC), Origin: w.Origin,
		Gen: w.Gen, Seq: w.Seq, CreatedAt: w.CreatedAt, UpdatedAt: w.UpdatedAt, ValueHash: w.ValueHash, Sig: w.Sig,
		ExpiresAt: w.ExpiresAt,
	}
	return c, c.Validate(0)
}

// EncodeMessage encodes m.
func EncodeMessage(m Message) ([]byte, error) {
	b, err := marshal(m)
	if err != nil {
		return nil, fmt.Errorf("gossip: encode message: %w", err)
	}
	return b, nil
}

// DecodeMessage decodes a pubsub payload of at most maxSize bytes. It checks
// the size before decoding and the format version after; allocations are
// bounded by the input's size. It does not validate the changes.
func DecodeMessage(data []byte, maxSize int) (Message, error) {
	if len(data) > maxSize {
		return Message{}, fmt.Errorf("%w: %d bytes > %d", ErrMessageTooLarge, len(data), maxSize)
	}
	var m Message
	if err := unmarshal(data, &m); err != nil {
		// Tell a newer format apart from garbage.
		var head struct {
			V uint64 `cbor:"1,keyasint"`
		}
		if unmarshal(data, &head) == nil && head.V != FormatVersion {
			return Message{}, fmt.Errorf("%w: %d", ErrUnknownVersion, head.V)
		}
		return Message{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if m.V != FormatVersion {
		return Message{}, fmt.Errorf("%w: %d", ErrUnknownVersion, m.V)
	}
	return m, nil
}

// rawMessage is a Message whose changes are already encoded.
type rawMessage struct {
	V       uint64            `cbor:"1,keyasint"`
	Origin  string            `cbor:"2,keyasint"`
	Changes []cbor.RawMessage `cbor:"3,keyasint"`
}

// packer groups encoded changes by origin into frames of at most budget
// bytes (a frame holding a single change may exceed it).
type packer struct {
	budget int
	groups []rawMessage
	index  map[string]int
	size   int
	count  int
}

// Per-group and per-frame encoding overhead beyond origins and changes.
const (
	groupOverhead = 24
	frameOverhead = 32
)

func newPacker(budget int) *packer {
	return &packer{budget: budget, index: map[string]int{}, size: frameOverhead}
}

// fits reports whether a change of n encoded bytes by origin fits the
// current frame.
func (p *packer) fits(origin string, n int) bool {
	if p.count == 0 {
		return true
	}
	extra := n
	if _, ok := p.index[origin]; !ok {
		extra += groupOverhead + len(origin)
	}
	return p.size+extra <= p.budget && p.count < maxElements
}

func (p *packer) add(origin string, enc []byte) {
	i, ok := p.index[origin]
	if !ok {
		i = len(p.groups)
		p.index[origin] = i
		p.groups = append(p.groups, rawMessage{V: FormatVersion, Origin: origin})
		p.size += groupOverhead + len(origin)
	}
	p.groups[i].Changes = append(p.groups[i].Changes, enc)
	p.size += len(enc)
	p.count++
}

// take returns the current frame's groups and starts a new frame.
func (p *packer) take() []rawMessage {
	g := p.groups
	p.groups, p.index, p.size, p.count = nil, map[string]int{}, frameOverhead, 0
	return g
}

func (p *packer) empty() bool { return p.count == 0 }

// encodeChange encodes one wire change.
func encodeChange(w WireChange) ([]byte, error) {
	b, err := marshal(w)
	if err != nil {
		return nil, fmt.Errorf("gossip: encode change %q: %w", w.Key, err)
	}
	return b, nil
}

// Stream frames: a uvarint length, then that many bytes of CBOR.

// writeFrame writes v as one frame.
func writeFrame(w io.Writer, v any) (int, error) {
	b, err := marshal(v)
	if err != nil {
		return 0, fmt.Errorf("gossip: encode frame: %w", err)
	}
	return writeRawFrame(w, b)
}

func writeRawFrame(w io.Writer, b []byte) (int, error) {
	var hdr [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], uint64(len(b)))
	buf := make([]byte, 0, n+len(b))
	buf = append(append(buf, hdr[:n]...), b...)
	if _, err := w.Write(buf); err != nil {
		return 0, fmt.Errorf("gossip: write frame: %w", err)
	}
	return len(buf), nil
}

// readFrame reads one frame of at most limit bytes into v. The buffer grows
// with the bytes actually received, never from the announced length alone.
func readFrame(r *bufio.Reader, limit int, v any) error {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return io.EOF
		}
		return fmt.Errorf("gossip: read frame: %w", err)
	}
	if n > uint64(limit) {
		return fmt.Errorf("%w: frame of %d bytes > %d", ErrMessageTooLarge, n, limit)
	}
	var buf bytes.Buffer
	if _, err := io.CopyN(&buf, r, int64(n)); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("gossip: read frame: %w", err)
	}
	if err := unmarshal(buf.Bytes(), v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil
}
