package ipfsds

import (
	"fmt"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"

	ds "github.com/ipfs/go-datastore"

	"github.com/univrs/peerstate/datastore"
)

// keyMap maps go-datastore keys to store keys and back; see the package doc
// for the rules. ns is the store key every mapped key lives under ("" for
// none).
type keyMap struct {
	ns string
}

func newKeyMap(prefix string) keyMap {
	p := ds.NewKey(prefix).String()
	if p == "/" {
		return keyMap{}
	}
	var b strings.Builder
	writeSegments(&b, p)
	return keyMap{ns: b.String()}
}

// encode returns the store key of k. It fails, wrapping
// datastore.ErrInvalidKey, only when the result would be longer than
// datastore.MaxKeyLen.
func (m keyMap) encode(k ds.Key) (string, error) {
	s := k.String()
	var b strings.Builder
	b.Grow(len(m.ns) + len(s) + 2)
	b.WriteString(m.ns)
	writeSegments(&b, s)
	if b.Len() > datastore.MaxKeyLen {
		return "", fmt.Errorf("ipfsds: key %q maps to %d bytes, longer than %d: %w",
			truncate(s), b.Len(), datastore.MaxKeyLen, datastore.ErrInvalidKey)
	}
	return b.String(), nil
}

// decode returns the go-datastore key whose store key is key, and false
// when key is outside the adapter's key space: not under the namespace, or
// not the canonical encoding of any go-datastore key.
func (m keyMap) decode(key string) (ds.Key, bool) {
	rest, ok := strings.CutPrefix(key, m.ns)
	if !ok || len(rest) < 2 || rest[0] != '/' {
		return ds.Key{}, false
	}
	if !strings.Contains(rest, "%") {
		// A store key's segments are never empty, so they need no escaping.
		if strings.Contains(rest, "//") || strings.HasSuffix(rest, "/") {
			return ds.Key{}, false
		}
		return ds.RawKey(rest), true
	}
	segs := strings.Split(rest[1:], "/")
	for i, seg := range segs {
		plain, ok := unescapeSegment(seg)
		if !ok {
			return ds.Key{}, false
		}
		segs[i] = plain
	}
	// A trailing empty segment is only the root key: "/a/" is no key.
	if len(segs) > 1 && segs[len(segs)-1] == "" {
		return ds.Key{}, false
	}
	return ds.RawKey("/" + strings.Join(segs, "/")), true
}

// listPrefix returns the store List prefix covering exactly the keys a
// go-datastore query with the given prefix selects (the prefix's strict
// children; everything for "" and "/"), and false when no key can be under
// it.
func (m keyMap) listPrefix(prefix string) (string, bool) {
	if prefix == "" {
		prefix = "/"
	} else if prefix[0] != '/' {
		prefix = "/" + prefix
	}
	prefix = path.Clean(prefix)
	if prefix == "/" {
		if m.ns == "" {
			return "", true
		}
		return m.ns + "/", len(m.ns)+2 <= datastore.MaxKeyLen
	}
	enc, err := m.encode(ds.RawKey(prefix))
	if err != nil || len(enc)+2 > datastore.MaxKeyLen {
		return "", false // no key fits under it
	}
	return enc + "/", true
}

// writeSegments writes the escaped segments of the go-datastore key string
// s, each preceded by "/". The root key "/" (and "") is one empty segment.
func writeSegments(b *strings.Builder, s string) {
	s = strings.TrimPrefix(s, "/")
	for {
		seg, rest, more := strings.Cut(s, "/")
		b.WriteByte('/')
		escapeSegment(b, seg)
		if !more {
			return
		}
		s = rest
	}
}

const upperHex = "0123456789ABCDEF"

// escapeSegment writes seg so that it is a valid, non-empty store key
// segment: "%" for the empty segment; otherwise seg with every byte of an
// invalid UTF-8 sequence, of a control character, and of "%" itself written
// as "%XX" (upper-case hex).
func escapeSegment(b *strings.Builder, seg string) {
	if seg == "" {
		b.WriteByte('%')
		return
	}
	for i := 0; i < len(seg); {
		r, size := utf8.DecodeRuneInString(seg[i:])
		if (r == utf8.RuneError && size == 1) || r == '%' || unicode.IsControl(r) {
			for j := i; j < i+size; j++ {
				c := seg[j]
				b.WriteByte('%')
				b.WriteByte(upperHex[c>>4])
				b.WriteByte(upperHex[c&0xf])
			}
		} else {
			b.WriteString(seg[i : i+size])
		}
		i += size
	}
}

// unescapeSegment reverses escapeSegment. It accepts only canonical input:
// the output of escapeSegment for some segment.
func unescapeSegment(seg string) (string, bool) {
	if seg == "%" {
		return "", true
	}
	if !strings.Contains(seg, "%") {
		return seg, seg != ""
	}
	buf := make([]byte, 0, len(seg))
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if c != '%' {
			buf = append(buf, c)
			continue
		}
		if i+2 >= len(seg) {
			return "", false
		}
		hi, ok1 := unhex(seg[i+1])
		lo, ok2 := unhex(seg[i+2])
		if !ok1 || !ok2 {
			return "", false
		}
		buf = append(buf, hi<<4|lo)
		i += 2
	}
	plain := string(buf)
	var b strings.Builder
	b.Grow(len(seg))
	escapeSegment(&b, plain)
	return plain, b.String() == seg
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
