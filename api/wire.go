package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/univrs/peerstate/datastore"
)

// Entry is a datastore.Entry as JSON; Value is base64, as encoding/json
// writes []byte.
type Entry struct {
	Key       string    `json:"key"`
	Value     []byte    `json:"value"` // null with keys_only
	Version   uint64    `json:"version"`
	Revision  uint64    `json:"revision"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// ExpiresAt is when an entry written with a TTL expires; absent for
	// one without.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// FromEntry converts a store entry to its JSON form.
func FromEntry(e datastore.Entry) Entry {
	out := Entry{Key: e.Key, Value: e.Value, Version: e.Version, Revision: e.Revision, CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt}
	if !e.ExpiresAt.IsZero() {
		at := e.ExpiresAt
		out.ExpiresAt = &at
	}
	return out
}

// Datastore converts the JSON form back. JSON keeps nil (null) and empty
// ("") values apart.
func (e Entry) Datastore() datastore.Entry {
	out := datastore.Entry{Key: e.Key, Value: e.Value, Version: e.Version, Revision: e.Revision, CreatedAt: e.CreatedAt, UpdatedAt: e.UpdatedAt}
	if e.ExpiresAt != nil {
		out.ExpiresAt = *e.ExpiresAt
	}
	return out
}

// Page is a datastore.Page as JSON.
type Page struct {
	Entries  []Entry `json:"entries"`
	More     bool    `json:"more"`
	Next     string  `json:"next,omitempty"`
	Revision uint64  `json:"revision"`
}

// FromPage converts a page to its JSON form.
func FromPage(p datastore.Page) Page {
	out := Page{Entries: make([]Entry, len(p.Entries)), More: p.More, Next: p.Next, Revision: p.Revision}
	for i, e := range p.Entries {
		out.Entries[i] = FromEntry(e)
	}
	return out
}

// Datastore converts the JSON form back.
func (p Page) Datastore() datastore.Page {
	out := datastore.Page{Entries: make([]datastore.Entry, len(p.Entries)), More: p.More, Next: p.Next, Revision: p.Revision}
	for i, e := range p.Entries {
		out.Entries[i] = e.Datastore()
	}
	return out
}

// Event is a datastore.Event as JSON: one line of a watch stream. Type is
// "created", "updated" or "deleted"; values are base64.
type Event struct {
	Type     string `json:"type"`
	Key      string `json:"key"`
	OldValue []byte `json:"old_value"` // null for created
	NewValue []byte `json:"new_value"` // null for deleted
	Version  uint64 `json:"version"`
	Revision uint64 `json:"revision"`
	Origin   string `json:"origin,omitempty"`
}

// FromEvent converts a store event to its JSON form.
func FromEvent(ev datastore.Event) Event {
	return Event{Type: ev.Type.String(), Key: ev.Key, OldValue: ev.OldValue, NewValue: ev.NewValue,
		Version: ev.Version, Revision: ev.Revision, Origin: ev.Origin}
}

// Datastore converts the JSON form back.
func (ev Event) Datastore() (datastore.Event, error) {
	out := datastore.Event{Key: ev.Key, OldValue: ev.OldValue, NewValue: ev.NewValue,
		Version: ev.Version, Revision: ev.Revision, Origin: ev.Origin}
	switch ev.Type {
	case "created":
		out.Type = datastore.Created
	case "updated":
		out.Type = datastore.Updated
	case "deleted":
		out.Type = datastore.Deleted
	default:
		return datastore.Event{}, fmt.Errorf("api: event type %q: %w", ev.Type, ErrBadRequest)
	}
	return out, nil
}

// WriteResult answers a PUT or DELETE: the key's version after the write
// (for a delete, its tombstone's) and the commit's revision.
type WriteResult struct {
	Version  uint64 `json:"version"`
	Revision uint64 `json:"revision"`
}

// ExpireResult answers POST /v1/expire: how many entries expired.
type ExpireResult struct {
	Expired int `json:"expired"`
}

// TxnResult answers a transaction.
type TxnResult struct {
	Revision uint64   `json:"revision"`
	Versions []uint64 `json:"versions"`
}

// TxnOp is one op of a transaction as JSON: {"op":"set","key":K,"value":B64}
// or {"op":"set","key":K,"value_string":S}, {"op":"delete","key":K},
// {"op":"check","key":K,"version":N} (0: absent). A set may carry
// "ttl":"30s" (a Go duration): the entry expires that long after the
// commit (datastore.OpSetTTL).
type TxnOp struct {
	Op          string  `json:"op"`
	Key         string  `json:"key"`
	Value       *[]byte `json:"value,omitempty"`
	ValueString *string `json:"value_string,omitempty"`
	Version     *uint64 `json:"version,omitempty"`
	TTL         string  `json:"ttl,omitempty"`
}

// TxnRequest is the body of POST /v1/txn.
type TxnRequest struct {
	Ops []TxnOp `json:"ops"`
}

// FromOps converts store ops to their JSON form.
func FromOps(ops []datastore.Op) ([]TxnOp, error) {
	out := make([]TxnOp, len(ops))
	for i, op := range ops {
		o := TxnOp{Op: op.Kind.String(), Key: op.Key}
		if op.TTL != 0 {
			if op.Kind != datastore.OpKindSet || op.TTL < 0 {
				return nil, fmt.Errorf("op %d: %q: TTL %v on a %s: %w", i, op.Key, op.TTL, op.Kind, datastore.ErrInvalidTxn)
			}
			o.TTL = op.TTL.String()
		}
		switch op.Kind {
		case datastore.OpKindSet:
			v := op.Value
			if v == nil {
				v = []byte{}
			}
			o.Value = &v
		case datastore.OpKindDelete:
		case datastore.OpKindCheckVersion:
			ver := op.Version
			o.Version = &ver
		default:
			return nil, fmt.Errorf("op %d: unknown kind %d: %w", i, op.Kind, datastore.ErrInvalidTxn)
		}
		out[i] = o
	}
	return out, nil
}

// Ops converts JSON ops to store ops, checking that each has what its kind
// needs and nothing else.
func Ops(in []TxnOp) ([]datastore.Op, error) {
	out := make([]datastore.Op, len(in))
	for i, o := range in {
		switch o.Op {
		case "set":
			if o.Version != nil {
				return nil, fmt.Errorf("op %d: set takes no version: %w", i, datastore.ErrInvalidTxn)
			}
			var v []byte
			switch {
			case o.Value != nil && o.ValueString != nil:
				return nil, fmt.Errorf("op %d: set has both value and value_string: %w", i, datastore.ErrInvalidTxn)
			case o.Value != nil:
				v = *o.Value
			case o.ValueString != nil:
				v = []byte(*o.ValueString)
			default:
				return nil, fmt.Errorf("op %d: set needs a value or value_string: %w", i, datastore.ErrInvalidTxn)
			}
			if v == nil {
				v = []byte{}
			}
			out[i] = datastore.OpSet(o.Key, v)
			if o.TTL != "" {
				ttl, err := ParseTTL(o.TTL)
				if err != nil {
					return nil, fmt.Errorf("op %d: %w", i, err)
				}
				out[i] = datastore.OpSetTTL(o.Key, v, ttl)
			}
		case "delete":
			if o.TTL != "" {
				return nil, fmt.Errorf("op %d: delete takes no ttl: %w", i, datastore.ErrInvalidTxn)
			}
			if o.Value != nil || o.ValueString != nil || o.Version != nil {
				return nil, fmt.Errorf("op %d: delete takes only a key: %w", i, datastore.ErrInvalidTxn)
			}
			out[i] = datastore.OpDelete(o.Key)
		case "check":
			if o.Value != nil || o.ValueString != nil || o.TTL != "" {
				return nil, fmt.Errorf("op %d: check takes no value: %w", i, datastore.ErrInvalidTxn)
			}
			if o.Version == nil {
				return nil, fmt.Errorf("op %d: check needs a version (0: absent): %w", i, datastore.ErrInvalidTxn)
			}
			out[i] = datastore.OpCheckVersion(o.Key, *o.Version)
		case "":
			return nil, fmt.Errorf(`op %d: no "op" (set, delete or check): %w`, i, datastore.ErrInvalidTxn)
		default:
			return nil, fmt.Errorf("op %d: unknown op %q (want set, delete or check): %w", i, o.Op, datastore.ErrInvalidTxn)
		}
	}
	return out, nil
}

// ParseTTL parses a time to live: a positive Go duration ("30s", "5m").
func ParseTTL(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("ttl %q: want a positive duration such as 30s: %w", s, datastore.ErrInvalidTxn)
	}
	return d, nil
}

// ParseTxn decodes a transaction: a JSON array of ops or {"ops": [...]}.
// Malformed JSON and unknown fields are ErrBadRequest; ops that do not make
// sense are datastore.ErrInvalidTxn. Keys are checked by the store.
func ParseTxn(data []byte) ([]datastore.Op, error) {
	var req TxnRequest
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		if err := decodeStrict(trimmed, &req.Ops); err != nil {
			return nil, err
		}
	} else if err := decodeStrict(trimmed, &req); err != nil {
		return nil, err
	}
	return Ops(req.Ops)
}

// checkJSONText refuses what encoding/json would silently replace with
// U+FFFD — invalid UTF-8 and unpaired surrogate escapes — so no key or value
// is rewritten on its way in.
func checkJSONText(data []byte) error {
	if !utf8.Valid(data) {
		return fmt.Errorf("malformed JSON: not valid UTF-8: %w", ErrBadRequest)
	}
	for i := 0; i < len(data); i++ {
		if data[i] != '\\' {
			continue
		}
		i++
		if i >= len(data) || data[i] != 'u' {
			continue // an escape of one character, or the end
		}
		r, ok := hex4(data[i+1:])
		if !ok {
			continue // the decoder reports it
		}
		i += 4
		switch {
		case utf16.IsSurrogate(r) && r < 0xdc00: // high: a low one must follow
			low, ok := rune(0), false
			if i+2 < len(data) && data[i+1] == '\\' && data[i+2] == 'u' {
				low, ok = hex4(data[i+3:])
			}
			if !ok || low < 0xdc00 || low > 0xdfff {
				return fmt.Errorf("malformed JSON: unpaired surrogate \\u%04x: %w", r, ErrBadRequest)
			}
			i += 6
		case utf16.IsSurrogate(r):
			return fmt.Errorf("malformed JSON: unpaired surrogate \\u%04x: %w", r, ErrBadRequest)
		}
	}
	return nil
}

// hex4 parses four hex digits.
func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(b[:4]), 16, 32)
	return rune(n), err == nil
}

// decodeStrict decodes exactly one JSON value with no unknown fields.
func decodeStrict(data []byte, v any) error {
	if err := checkJSONText(data); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("malformed JSON: %v: %w", err, ErrBadRequest)
	}
	if dec.More() {
		return fmt.Errorf("malformed JSON: data after the value: %w", ErrBadRequest)
	}
	return nil
}

// Status answers GET /v1/status. ID, Addrs and Peers are empty when the
// daemon has no p2p node.
type Status struct {
	ID        string    `json:"id"`
	Addrs     []string  `json:"addrs"`         // full multiaddrs ending in /p2p/ID
	Peers     int       `json:"peers"`         // connected peers
	Revision  uint64    `json:"revision"`      // the store's revision
	Backend   string    `json:"backend"`       // sqlite, badger, memory, etcd
	Version   string    `json:"version"`       // the daemon's version
	StartedAt time.Time `json:"started_at"`    // when the server was made
	Node      bool      `json:"node"`          // whether a p2p node runs
	API       string    `json:"api,omitempty"` // the address the API listens on
	// Fingerprint summarises the live replicated state (hex); peers whose
	// fingerprints are equal hold the same state. Keys is how many keys it
	// covers. Both are set when a p2p node runs.
	Fingerprint string `json:"fingerprint,omitempty"`
	Keys        int    `json:"keys,omitempty"`
}

// PeerInfo is a connected peer.
type PeerInfo struct {
	ID    string   `json:"id"`
	Addrs []string `json:"addrs"`
	// Matched says whether our state fingerprint equalled the peer's at the
	// end of the last catch-up with it (when, MatchedAt); nil before one.
	Matched   *bool      `json:"matched,omitempty"`
	MatchedAt *time.Time `json:"matched_at,omitempty"`
	// Score and State are the node's opinion of the peer (package
	// reputation): state ok, graylisted or banned.
	Score *float64 `json:"score,omitempty"`
	State string   `json:"state,omitempty"`
}

// PeersResponse answers GET /v1/peers.
type PeersResponse struct {
	Peers []PeerInfo `json:"peers"`
}

// ConnectRequest is the body of POST /v1/peers/connect.
type ConnectRequest struct {
	Addr string `json:"addr"`
}

// CompactRequest is the body of POST /v1/compact.
type CompactRequest struct {
	Revision uint64 `json:"revision"`
}
