package replica

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"sync"

	"github.com/google/btree"
)

// State fingerprints. Every live replicated key contributes its current
// change's Digest; a set of keys is summarised by the sum of their digests
// (as 128-bit integers, mod 2^128: independent of order, updated in O(1) per
// write) and their count. Two peers holding the same changes for the same
// keys have the same fingerprint, whatever order the changes arrived in.
// Tombstones are left out, so peers that collect them at different times
// still agree; a key deleted on one peer and live on another still differs.
//
// For repair the keys are arranged by the SHA-256 of the key, as a 16-ary
// tree over the hash's hex digits: a Node is the set of keys whose hash
// starts with Depth given digits. Peers compare the summaries of a node's 16
// children and descend only into those that differ, so finding d differences
// among n keys takes O(d · log n) summaries (range-based reconciliation, as
// in Merkle-tree repair), and the differing keys are then exchanged in full.

// Fingerprint is the sum of a set of digests.
type Fingerprint [16]byte

func (f Fingerprint) String() string { return hex.EncodeToString(f[:]) }

func (f *Fingerprint) add(d [16]byte) {
	lo := binary.LittleEndian.Uint64(f[:8])
	hi := binary.LittleEndian.Uint64(f[8:])
	dl, dh := binary.LittleEndian.Uint64(d[:8]), binary.LittleEndian.Uint64(d[8:])
	nlo := lo + dl
	carry := uint64(0)
	if nlo < lo {
		carry = 1
	}
	binary.LittleEndian.PutUint64(f[:8], nlo)
	binary.LittleEndian.PutUint64(f[8:], hi+dh+carry)
}

func (f *Fingerprint) sub(d [16]byte) {
	lo := binary.LittleEndian.Uint64(f[:8])
	hi := binary.LittleEndian.Uint64(f[8:])
	dl, dh := binary.LittleEndian.Uint64(d[:8]), binary.LittleEndian.Uint64(d[8:])
	borrow := uint64(0)
	if lo < dl {
		borrow = 1
	}
	binary.LittleEndian.PutUint64(f[:8], lo-dl)
	binary.LittleEndian.PutUint64(f[8:], hi-dh-borrow)
}

// Summary summarises a set of keys.
type Summary struct {
	FP    Fingerprint
	Count int
}

// Node is the set of replicated keys whose key hash (KeyHash) starts with
// the Depth hex digits of Prefix: Depth 0 is every key, and a node's
// children are Depth+1 with Prefix·16 + 0…15. Depth is at most MaxDepth.
type Node struct {
	Depth  uint8
	Prefix uint64
}

// MaxDepth is the depth of single key hashes.
const MaxDepth = 16

// Valid reports whether the node is well formed.
func (n Node) Valid() bool {
	return n.Depth <= MaxDepth && (n.Depth == MaxDepth || n.Prefix>>(4*uint(n.Depth)) == 0)
}

// Children returns the node's 16 children.
func (n Node) Children() []Node {
	out := make([]Node, 16)
	for i := range out {
		out[i] = Node{Depth: n.Depth + 1, Prefix: n.Prefix<<4 | uint64(i)}
	}
	return out
}

func (n Node) contains(kh uint64) bool {
	if n.Depth == 0 {
		return true
	}
	return kh>>(64-4*uint(n.Depth)) == n.Prefix
}

func (n Node) low() uint64 {
	if n.Depth == 0 {
		return 0
	}
	return n.Prefix << (64 - 4*uint(n.Depth))
}

// KeyHash places a key in the repair tree.
func KeyHash(key string) uint64 {
	sum := sha256.Sum256([]byte(key))
	return binary.BigEndian.Uint64(sum[:8])
}

// Item is one key of a node and the digest of its current change.
type Item struct {
	Key    string
	Digest [16]byte
}

type fpItem struct {
	kh  uint64
	key string
	d   [16]byte
}

func fpLess(a, b fpItem) bool {
	if a.kh != b.kh {
		return a.kh < b.kh
	}
	return a.key < b.key
}

// fingerprints holds the digests of the live replicated keys.
type fingerprints struct {
	mu   sync.Mutex
	tree *btree.BTreeG[fpItem]
	root Summary
}

func newFingerprints() *fingerprints {
	return &fingerprints{tree: btree.NewG(32, fpLess)}
}

// set records c as key's current change; a tombstone removes the key.
func (f *fingerprints) set(c Change) {
	it := fpItem{kh: KeyHash(c.Key), key: c.Key}
	if !c.Deleted {
		it.d = c.Digest()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if old, ok := f.tree.Delete(it); ok {
		f.root.FP.sub(old.d)
		f.root.Count--
	}
	if !c.Deleted {
		f.tree.ReplaceOrInsert(it)
		f.root.FP.add(it.d)
		f.root.Count++
	}
}

// remove drops key.
func (f *fingerprints) remove(key string) {
	f.set(Change{Key: key, Deleted: true})
}

func (f *fingerprints) rootSummary() Summary {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.root
}

// visit calls fn for each item of n, in hash order, until fn returns false.
func (f *fingerprints) visit(n Node, fn func(fpItem) bool) {
	f.tree.AscendGreaterOrEqual(fpItem{kh: n.low()}, func(it fpItem) bool {
		if !n.contains(it.kh) {
			return false
		}
		return fn(it)
	})
}

func (f *fingerprints) summarize(nodes []Node) []Summary {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Summary, len(nodes))
	for i, n := range nodes {
		if n.Depth == 0 {
			out[i] = f.root
			continue
		}
		f.visit(n, func(it fpItem) bool {
			out[i].FP.add(it.d)
			out[i].Count++
			return true
		})
	}
	return out
}

func (f *fingerprints) items(nodes []Node, limit int) [][]Item {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([][]Item, len(nodes))
	total := 0
	for i, n := range nodes {
		f.visit(n, func(it fpItem) bool {
			if total >= limit {
				return false
			}
			out[i] = append(out[i], Item{Key: it.key, Digest: it.d})
			total++
			return true
		})
	}
	return out
}

// StateFingerprint summarises every live replicated key this replica holds.
func (r *Replica) StateFingerprint() Summary { return r.fp.rootSummary() }

// Summarize returns the summary of each node.
func (r *Replica) Summarize(nodes []Node) []Summary { return r.fp.summarize(nodes) }

// Items returns the keys of each node with their digests, at most limit in
// all (the rest are left out).
func (r *Replica) Items(nodes []Node, limit int) [][]Item { return r.fp.items(nodes, limit) }
