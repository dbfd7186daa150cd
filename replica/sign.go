package replica

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Every change is signed by its origin with the origin's libp2p identity
// key, over a canonical encoding of everything that identifies and orders it
// (signingBytes). The signature is stored with the change and travels with
// it on every path — push, catch-up, value fetch, snapshot, repair — so any
// peer can relay a change and every receiver checks it before it touches the
// store. The origin's public key is the one its peer ID embeds (Ed25519 and
// secp256k1 IDs do; libp2p's default keys are Ed25519), so no key exchange
// is needed and nobody can sign for an origin whose key they lack.

// ErrBadSignature reports a change its origin did not sign.
var ErrBadSignature = errors.New("replica: change not signed by its origin")

// signingDomain separates change signatures from any other use of the key.
const signingDomain = "peerstate/change/v2\x00"

// valueHash is the SHA-256 of a change's value, or zero for a delete.
func (c Change) valueHash() [sha256.Size]byte {
	if c.Deleted {
		return [sha256.Size]byte{}
	}
	if c.Value == nil && len(c.ValueHash) == sha256.Size {
		var h [sha256.Size]byte
		copy(h[:], c.ValueHash)
		return h
	}
	return sha256.Sum256(c.Value)
}

// signingBytes is the canonical encoding a change's signature covers:
// fixed-width integers, length-prefixed strings, the value's hash, and the
// expiry last, only when there is one (so a change without one signs as
// before expiries existed; every field before it has a fixed or prefixed
// length, so the encoding stays unambiguous).
func (c Change) signingBytes() []byte {
	h := c.valueHash()
	b := make([]byte, 0, len(signingDomain)+len(c.Key)+len(c.Origin)+96)
	b = append(b, signingDomain...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(c.Key)))
	b = append(b, c.Key...)
	if c.Deleted {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = append(b, h[:]...)
	b = binary.BigEndian.AppendUint64(b, c.Version)
	b = binary.BigEndian.AppendUint64(b, uint64(c.HLC))
	b = binary.BigEndian.AppendUint16(b, uint16(len(c.Origin)))
	b = append(b, c.Origin...)
	b = binary.BigEndian.AppendUint64(b, c.Gen)
	b = binary.BigEndian.AppendUint64(b, c.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(c.CreatedAt))
	b = binary.BigEndian.AppendUint64(b, uint64(c.UpdatedAt))
	if c.ExpiresAt != 0 {
		b = binary.BigEndian.AppendUint64(b, uint64(c.ExpiresAt))
	}
	return b
}

// Digest is a short fingerprint of a change: the first 16 bytes of the
// SHA-256 of what its signature covers. Two peers holding the same change of
// a key hold the same digest.
func (c Change) Digest() [16]byte {
	sum := sha256.Sum256(c.signingBytes())
	var d [16]byte
	copy(d[:], sum[:16])
	return d
}

// sign signs c with key. Only when key is known to be c's origin's own
// (ours, for our writes) is the signature remembered as verified.
func sign(key crypto.PrivKey, c *Change, ours bool) error {
	msg := c.signingBytes()
	sig, err := key.Sign(msg)
	if err != nil {
		return fmt.Errorf("replica: sign %q: %w", c.Key, err)
	}
	c.Sig = sig
	if ours {
		rememberVerified(sigID(msg, sig))
	}
	return nil
}

// keyCache maps origins to their public keys; an ID decodes once.
type keyCache struct {
	mu   sync.Mutex
	keys map[string]crypto.PubKey
}

// Cache bounds; past one, that cache starts over.
const (
	maxCachedKeys     = 4096
	maxCachedVerified = 1 << 17
)

// verifiedSigs remembers, process-wide, the signatures recently checked or
// made here, by the SHA-256 of the signed bytes and the signature: a change
// checked by the pubsub validator is not checked again when applied, nor by
// each of many replicas in one process (simulations, tests). A hit means
// these exact bytes carried a valid signature.
var verifiedSigs struct {
	mu sync.Mutex
	m  map[[32]byte]struct{}
}

func sigID(msg, sig []byte) [32]byte {
	h := sha256.New()
	h.Write(msg)
	h.Write(sig)
	var id [32]byte
	h.Sum(id[:0])
	return id
}

func rememberVerified(id [32]byte) {
	verifiedSigs.mu.Lock()
	defer verifiedSigs.mu.Unlock()
	if verifiedSigs.m == nil || len(verifiedSigs.m) >= maxCachedVerified {
		verifiedSigs.m = map[[32]byte]struct{}{}
	}
	verifiedSigs.m[id] = struct{}{}
}

func wasVerified(id [32]byte) bool {
	verifiedSigs.mu.Lock()
	defer verifiedSigs.mu.Unlock()
	_, ok := verifiedSigs.m[id]
	return ok
}

func (kc *keyCache) pubKey(origin string) (crypto.PubKey, error) {
	kc.mu.Lock()
	k, ok := kc.keys[origin]
	kc.mu.Unlock()
	if ok {
		return k, nil
	}
	id, err := peer.Decode(origin)
	if err != nil {
		return nil, fmt.Errorf("%w: origin %q is not a peer ID: %w", ErrBadSignature, origin, err)
	}
	k, err = id.ExtractPublicKey()
	if err != nil {
		return nil, fmt.Errorf("%w: origin %q has no embedded public key: %w", ErrBadSignature, origin, err)
	}
	kc.mu.Lock()
	if kc.keys == nil || len(kc.keys) >= maxCachedKeys {
		kc.keys = map[string]crypto.PubKey{}
	}
	kc.keys[origin] = k
	kc.mu.Unlock()
	return k, nil
}

// verify checks that c's origin signed c.
func (kc *keyCache) verify(c Change) error {
	if len(c.Sig) == 0 {
		return fmt.Errorf("%w: %q by %s is unsigned", ErrBadSignature, c.Key, c.Origin)
	}
	msg := c.signingBytes()
	id := sigID(msg, c.Sig)
	if wasVerified(id) {
		return nil
	}
	k, err := kc.pubKey(c.Origin)
	if err != nil {
		return err
	}
	ok, err := k.Verify(msg, c.Sig)
	if err != nil || !ok {
		return fmt.Errorf("%w: %q by %s", ErrBadSignature, c.Key, c.Origin)
	}
	rememberVerified(id)
	return nil
}

// verifyAll checks every change, in parallel when there are many, and
// returns the error of each (nil when valid).
func (kc *keyCache) verifyAll(cs []Change) []error {
	errs := make([]error, len(cs))
	workers := min(runtime.GOMAXPROCS(0), len(cs)/32+1)
	if workers <= 1 {
		for i, c := range cs {
			errs[i] = kc.verify(c)
		}
		return errs
	}
	var wg sync.WaitGroup
	chunk := (len(cs) + workers - 1) / workers
	for lo := 0; lo < len(cs); lo += chunk {
		hi := min(lo+chunk, len(cs))
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				errs[i] = kc.verify(cs[i])
			}
		})
	}
	wg.Wait()
	return errs
}

// VerifyChange checks that c's origin signed c. Apply does this for every
// change it is given; gossip uses it to check a change before relaying it.
func (r *Replica) VerifyChange(c Change) error { return r.keys.verify(c) }

// VerifyChanges checks many changes, in parallel, and returns each one's
// error (nil when signed by its origin).
func (r *Replica) VerifyChanges(cs []Change) []error { return r.keys.verifyAll(cs) }

// SignWith signs c with key, which must be c.Origin's identity key.
func SignWith(key crypto.PrivKey, c *Change) error { return sign(key, c, false) }
