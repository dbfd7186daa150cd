package main

import (
	"encoding/base64"
	"encoding/json"
	"time"
	"unicode/utf8"

	"github.com/univrs/peerstate/datastore"
)

// The CLI's JSON output shows values as people read them: a value that is
// UTF-8 text is a JSON string under "value"; any other value is base64
// under "value_base64". Exactly one of the two is present (neither for a
// keys-only listing or an absent old or new value).

// textOrBase64 splits v into its two forms; both are empty for nil.
func textOrBase64(v []byte) (text *string, b64 string) {
	switch {
	case v == nil:
		return nil, ""
	case utf8.Valid(v):
		s := string(v)
		return &s, ""
	default:
		return nil, base64.StdEncoding.EncodeToString(v)
	}
}

// entryOut is an entry as get --json and ls --json print it.
type entryOut struct {
	Key         string     `json:"key"`
	Value       *string    `json:"value,omitempty"`
	ValueBase64 string     `json:"value_base64,omitempty"`
	Version     uint64     `json:"version"`
	Revision    uint64     `json:"revision"`
	CreatedAt   *time.Time `json:"created_at,omitempty"`
	UpdatedAt   *time.Time `json:"updated_at,omitempty"`
	// ValueCBOR is a binary value that is CBOR, decoded (cborAsJSON).
	ValueCBOR json.RawMessage `json:"value_cbor,omitempty"`
	// ExpiresAt is set for an entry written with a TTL.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

func newEntryOut(e datastore.Entry) entryOut {
	out := entryOut{Key: e.Key, Version: e.Version, Revision: e.Revision}
	v := e.Value
	if v == nil {
		v = []byte{}
	}
	out.Value, out.ValueBase64 = textOrBase64(v)
	out.ValueCBOR = cborAsJSON(v)
	if !e.ExpiresAt.IsZero() {
		x := e.ExpiresAt.UTC()
		out.ExpiresAt = &x
	}
	if !e.CreatedAt.IsZero() {
		c, u := e.CreatedAt.UTC(), e.UpdatedAt.UTC()
		out.CreatedAt, out.UpdatedAt = &c, &u
	}
	return out
}

// eventOut is a watch event as watch prints it.
type eventOut struct {
	Type           string  `json:"type"`
	Key            string  `json:"key"`
	OldValue       *string `json:"old_value,omitempty"`
	OldValueBase64 string  `json:"old_value_base64,omitempty"`
	NewValue       *string `json:"new_value,omitempty"`
	NewValueBase64 string  `json:"new_value_base64,omitempty"`
	Version        uint64  `json:"version"`
	Revision       uint64  `json:"revision"`
	Origin         string  `json:"origin"`
}

// newEventOut converts ev. origin is always set: a change made on the
// daemon's own node carries self, that node's ID.
func newEventOut(ev datastore.Event, self string) eventOut {
	out := eventOut{Type: ev.Type.String(), Key: ev.Key, Version: ev.Version, Revision: ev.Revision, Origin: ev.Origin}
	if out.Origin == "" {
		out.Origin = self
	}
	out.OldValue, out.OldValueBase64 = textOrBase64(ev.OldValue)
	out.NewValue, out.NewValueBase64 = textOrBase64(ev.NewValue)
	return out
}

// encodeJSON writes v as one line of JSON, HTML characters left as they are.
func encodeJSON(enc *json.Encoder, v any) error {
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
