package replica

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/internal/engine"
)

// Bookkeeping lives under a reserved prefix of the local store, hidden from
// users' List and Watch and refused to their writes:
//
//	/.peerstate/format                        the layout version of this bookkeeping
//	/.peerstate/gen                           our current generation (decimal)
//	/.peerstate/wm/{origin}/{gen:020}         a source's watermark (decimal)
//	/.peerstate/idx/{origin}/{gen:020}/{seq:020}  the key whose current state that change is
//	/.peerstate/head/{origin}/{gen:020}       the source's highest signed change seen (value left out)
//	/.peerstate/floor/{bucket}                version floor of collected keys, per key bucket
//	/.peerstate/horizon/{origin}/{gen:020}    tombstones up to here may be collected
//	/.peerstate/peer/{id}                     a peer's vector as last observed, and when
//	/.peerstate/prefixes                      the prefixes replicated when the watermarks were made
const (
	reservedRoot  = "/.peerstate"
	formatKey     = reservedRoot + "/format"
	genKey        = reservedRoot + "/gen"
	watermarkRoot = reservedRoot + "/wm/"
	indexRoot     = reservedRoot + "/idx/"
	headRoot      = reservedRoot + "/head/"
	floorRoot     = reservedRoot + "/floor/"
	peerRoot      = reservedRoot + "/peer/"
	prefixesKey   = reservedRoot + "/prefixes"
)

// layoutFormat is the version of the bookkeeping layout above.
const layoutFormat = "2"

func isReserved(key string) bool {
	return key == reservedRoot || strings.HasPrefix(key, reservedRoot+"/")
}

// sourcePath is a source's segment pair in bookkeeping keys: origin and
// zero-padded generation, so an origin's generations sort in order.
func sourcePath(source string) string {
	origin, gen, err := ParseSource(source)
	if err != nil {
		return source // never stored: sources are validated before use
	}
	return fmt.Sprintf("%s/%020d", origin, gen)
}

// parseSourcePath is the inverse of sourcePath.
func parseSourcePath(p string) (string, bool) {
	origin, num, ok := strings.Cut(p, "/")
	if !ok || len(num) != 20 || ValidateOrigin(origin) != nil {
		return "", false
	}
	gen, err := strconv.ParseUint(num, 10, 64)
	if err != nil || gen == 0 {
		return "", false
	}
	return SourceOf(origin, gen), true
}

func watermarkKey(source string) string { return watermarkRoot + sourcePath(source) }

func headKey(source string) string { return headRoot + sourcePath(source) }

func indexPrefix(source string) string { return indexRoot + sourcePath(source) + "/" }

func indexKey(source string, seq uint64) string {
	return fmt.Sprintf("%s%020d", indexPrefix(source), seq)
}

func parseIndexKey(key string) (source string, seq uint64, ok bool) {
	rest, found := strings.CutPrefix(key, indexRoot)
	if !found {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		return "", 0, false
	}
	source, ok = parseSourcePath(rest[:i])
	if !ok {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(rest[i+1:], 10, 64)
	return source, seq, err == nil
}

// envelope is what the replica stores as the local value of a user key: the
// value with its replication metadata. The local store's own version and
// timestamps are not the replicated ones; the envelope's are.
//
// Format 2 added the generation and the origin's signature. A head (the
// highest change of a source, kept without its value) is an envelope with
// ValueHash set.
type envelope struct {
	_         struct{} `cbor:",toarray"`
	Format    uint8
	Value     []byte
	Deleted   bool
	Version   uint64
	HLC       HLC
	Origin    string
	Seq       uint64
	CreatedAt int64
	UpdatedAt int64
	Gen       uint64
	Sig       []byte
	ValueHash []byte
	Key       string // heads only: the key is not the entry's own
}

const envelopeFormat = 2

// expiringEnvelope is the envelope of a change with an expiry (format 3):
// format 2's fields, then the expiry and whether this replica has applied
// it. Changes without one keep format 2, so stores that never use TTL read
// the same as before.
type expiringEnvelope struct {
	_         struct{} `cbor:",toarray"`
	Format    uint8
	Value     []byte
	Deleted   bool
	Version   uint64
	HLC       HLC
	Origin    string
	Seq       uint64
	CreatedAt int64
	UpdatedAt int64
	Gen       uint64
	Sig       []byte
	ValueHash []byte
	Key       string
	ExpiresAt int64
	Expired   bool
}

const expiringFormat = 3

// marshalEnvelope encodes e, in format 3 when the change expires.
func marshalEnvelope(e envelope, expiresAt int64, expired bool) ([]byte, error) {
	if expiresAt == 0 {
		return cbor.Marshal(e)
	}
	return cbor.Marshal(expiringEnvelope{
		Format: expiringFormat, Value: e.Value, Deleted: e.Deleted, Version: e.Version, HLC: e.HLC,
		Origin: e.Origin, Seq: e.Seq, CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt,
		Gen: e.Gen, Sig: e.Sig, ValueHash: e.ValueHash, Key: e.Key, ExpiresAt: expiresAt, Expired: expired,
	})
}

func encodeEnvelope(c Change) ([]byte, error) {
	return marshalEnvelope(envelope{
		Format: envelopeFormat, Value: c.Value, Deleted: c.Deleted, Version: c.Version, HLC: c.HLC,
		Origin: c.Origin, Seq: c.Seq, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt,
		Gen: c.Gen, Sig: c.Sig, ValueHash: c.ValueHash,
	}, c.ExpiresAt, c.expired)
}

func decodeEnvelope(key string, b []byte) (Change, error) {
	var e expiringEnvelope
	// Format 3 is a CBOR array of 15 elements (head byte 0x8f); format 2 one
	// of 13.
	if len(b) > 0 && b[0] == 0x80|15 {
		if err := cbor.Unmarshal(b, &e); err != nil {
			return Change{}, fmt.Errorf("replica: %q: corrupt envelope: %w", key, err)
		}
		if e.Format != expiringFormat || e.ExpiresAt == 0 {
			return Change{}, fmt.Errorf("replica: %q: envelope format %d unknown", key, e.Format)
		}
	} else {
		var e2 envelope
		if err := cbor.Unmarshal(b, &e2); err != nil {
			return Change{}, fmt.Errorf("replica: %q: corrupt envelope: %w", key, err)
		}
		if e2.Format != envelopeFormat {
			return Change{}, fmt.Errorf("replica: %q: envelope format %d unknown", key, e2.Format)
		}
		e = expiringEnvelope{Value: e2.Value, Deleted: e2.Deleted, Version: e2.Version, HLC: e2.HLC,
			Origin: e2.Origin, Seq: e2.Seq, CreatedAt: e2.CreatedAt, UpdatedAt: e2.UpdatedAt,
			Gen: e2.Gen, Sig: e2.Sig, ValueHash: e2.ValueHash, Key: e2.Key}
	}
	c := Change{Key: key, Value: e.Value, Deleted: e.Deleted, Version: e.Version, HLC: e.HLC,
		Origin: e.Origin, Seq: e.Seq, CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt,
		Gen: e.Gen, Sig: e.Sig, ValueHash: e.ValueHash, ExpiresAt: e.ExpiresAt, expired: e.Expired}
	if e.Key != "" {
		c.Key = e.Key
	}
	if !c.Deleted && c.Value == nil && c.ValueHash == nil {
		c.Value = []byte{}
	}
	return c, nil
}

// encodeHead stores c without its value: the proof that its source reached
// c.Seq.
func encodeHead(c Change) ([]byte, error) {
	h := c.valueHash()
	e := envelope{
		Format: envelopeFormat, Deleted: c.Deleted, Version: c.Version, HLC: c.HLC,
		Origin: c.Origin, Seq: c.Seq, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt,
		Gen: c.Gen, Sig: c.Sig, Key: c.Key,
	}
	if !c.Deleted {
		e.ValueHash = h[:]
	}
	return marshalEnvelope(e, c.ExpiresAt, false)
}

// Elide returns c with its value left out and announced by its hash.
func (c Change) Elide() Change {
	if c.Deleted || c.Value == nil {
		return c
	}
	h := c.valueHash()
	c.ValueHash, c.Value = h[:], nil
	return c
}

func (c Change) record() engine.Record {
	return engine.Record{
		Key: c.Key, Value: c.Value, Version: c.Version, Deleted: c.Deleted,
		CreatedAt: time.Unix(0, c.CreatedAt), UpdatedAt: time.Unix(0, c.UpdatedAt),
	}
}

func (c Change) entry(revision uint64) datastore.Entry {
	e := datastore.Entry{
		Key: c.Key, Value: c.Value, Version: c.Version, Revision: revision,
		CreatedAt: time.Unix(0, c.CreatedAt), UpdatedAt: time.Unix(0, c.UpdatedAt),
	}
	if c.ExpiresAt != 0 {
		e.ExpiresAt = time.Unix(0, c.ExpiresAt)
	}
	return e
}
