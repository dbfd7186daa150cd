package reputation

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// RecordVersion is the format version this package writes in
// Record.Version. A reader skips records of a newer version than it knows.
const RecordVersion = 1

// KeyPrefix and KeySuffix frame the datastore key of a peer's record:
// /peers/{peer_id}/reputation.
const (
	KeyPrefix = "/peers/"
	KeySuffix = "/reputation"
)

// Key returns the datastore key of p's record.
func Key(p peer.ID) string { return KeyPrefix + p.String() + KeySuffix }

// ErrBadRecord is wrapped by the errors of DecodeRecord.
var ErrBadRecord = errors.New("reputation: bad record")

// Record is one peer's reputation as persisted (JSON) at
// /peers/{peer_id}/reputation and shown by the API.
//
// Positive and Negative are the two parts at UpdatedAt; Score and State are
// derived from them (and the manual ban) at UpdatedAt, which for a record
// returned by Book.Record or Book.Records is the moment of the call. A reader
// of a persisted record recomputes them by decaying both parts from
// UpdatedAt.
//
// In JSON, Latency is "latency_ms" (milliseconds, fractional) and the zero
// BannedUntil is omitted.
type Record struct {
	Peer        string           `json:"peer"`
	Score       float64          `json:"score"`
	State       State            `json:"state"`
	Positive    float64          `json:"positive"`
	Negative    float64          `json:"negative"`
	UpdatedAt   time.Time        `json:"updated_at"`
	Counts      map[Event]uint64 `json:"counts,omitempty"`
	Latency     time.Duration    `json:"-"` // EWMA of observed session latency; 0 = none observed
	BannedUntil time.Time        `json:"banned_until,omitzero"`
	BanReason   string           `json:"ban_reason,omitempty"`
	// Connected says whether the peer was connected when the record was
	// taken. It is informational: a loaded record never counts as connected.
	Connected bool `json:"connected,omitempty"`
	// Version is the format version (RecordVersion), so that records can
	// later be exchanged between peers as opinions.
	Version int `json:"version"`
}

type recordJSON Record

type recordWire struct {
	recordJSON
	LatencyMS float64 `json:"latency_ms,omitempty"`
}

// MarshalJSON writes the record with Latency as latency_ms.
func (r Record) MarshalJSON() ([]byte, error) {
	return json.Marshal(recordWire{recordJSON: recordJSON(r), LatencyMS: float64(r.Latency) / float64(time.Millisecond)})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Record) UnmarshalJSON(b []byte) error {
	var w recordWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	if math.IsNaN(w.LatencyMS) || math.IsInf(w.LatencyMS, 0) || w.LatencyMS < 0 || w.LatencyMS > float64(math.MaxInt64/int64(time.Millisecond)) {
		return fmt.Errorf("latency_ms %v out of range", w.LatencyMS)
	}
	*r = Record(w.recordJSON)
	r.Latency = time.Duration(w.LatencyMS * float64(time.Millisecond))
	return nil
}

// DecodeRecord parses a persisted record stored at key and checks it: the key
// has the form /peers/{peer_id}/reputation, the record names the same peer,
// its version is known, its parts are finite with Positive ≥ 0 ≥ Negative and
// it has an UpdatedAt. Counts of events this version does not know are
// dropped. The error wraps ErrBadRecord.
func DecodeRecord(key string, value []byte) (Record, peer.ID, error) {
	id, ok := peerOfKey(key)
	if !ok {
		return Record{}, "", fmt.Errorf("%w: key %q is not %s{peer_id}%s", ErrBadRecord, key, KeyPrefix, KeySuffix)
	}
	p, err := peer.Decode(id)
	if err != nil {
		return Record{}, "", fmt.Errorf("%w: key %q: peer id: %v", ErrBadRecord, key, err)
	}
	var r Record
	if err := json.Unmarshal(value, &r); err != nil {
		return Record{}, "", fmt.Errorf("%w: %s: %v", ErrBadRecord, key, err)
	}
	switch {
	case r.Peer != id:
		return Record{}, "", fmt.Errorf("%w: %s: names peer %q", ErrBadRecord, key, r.Peer)
	case r.Version < 1 || r.Version > RecordVersion:
		return Record{}, "", fmt.Errorf("%w: %s: version %d, this reader knows 1..%d", ErrBadRecord, key, r.Version, RecordVersion)
	case math.IsNaN(r.Positive) || math.IsInf(r.Positive, 0) || r.Positive < 0:
		return Record{}, "", fmt.Errorf("%w: %s: positive part %v", ErrBadRecord, key, r.Positive)
	case math.IsNaN(r.Negative) || math.IsInf(r.Negative, 0) || r.Negative > 0:
		return Record{}, "", fmt.Errorf("%w: %s: negative part %v", ErrBadRecord, key, r.Negative)
	case r.UpdatedAt.IsZero():
		return Record{}, "", fmt.Errorf("%w: %s: no updated_at", ErrBadRecord, key)
	}
	for e := range r.Counts {
		if !e.Known() {
			delete(r.Counts, e)
		}
	}
	return r, p, nil
}

// peerOfKey returns the peer ID segment of /peers/{id}/reputation.
func peerOfKey(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, KeyPrefix)
	if !ok {
		return "", false
	}
	id, ok := strings.CutSuffix(rest, KeySuffix)
	if !ok || id == "" || strings.Contains(id, "/") {
		return "", false
	}
	return id, true
}
