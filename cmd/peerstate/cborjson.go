package main

import (
	"encoding/json"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"

	"github.com/univrs/peerstate/codec"
)

// cborAsJSON shows a binary value that is CBOR as JSON, for people: get
// --json and ls --json add it as "value_cbor" next to "value_base64" (which
// stays the exact bytes). The daemon does not know which prefixes an
// application encodes as CBOR, so this goes by the bytes: a value that is
// not UTF-8 text and is exactly one well-formed CBOR data item whose maps
// have text keys is shown decoded (byte strings as base64). A text value is
// always shown as text, and any other value as base64 only. A binary value
// that merely happens to parse as CBOR is shown decoded too: the base64 is
// the truth.
func cborAsJSON(v []byte) json.RawMessage {
	if len(v) == 0 || utf8.Valid(v) || cbor.Wellformed(v) != nil {
		return nil
	}
	doc, err := codec.CBOR.Generic(v)
	if err != nil {
		return nil
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return nil
	}
	return out
}
