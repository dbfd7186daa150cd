package datastore

import (
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxKeyLen is the longest key, in bytes.
const MaxKeyLen = 1024

// ValidateKey reports whether key follows the key rules: it starts with "/",
// is "/"-separated with no empty segment and no trailing "/", is valid UTF-8
// with no control characters, and is at most MaxKeyLen bytes. The error wraps
// ErrInvalidKey.
func ValidateKey(key string) error {
	if err := validatePath(key, false); err != nil {
		return fmt.Errorf("%w: %q: %s", ErrInvalidKey, truncate(key), err)
	}
	return nil
}

// ValidatePrefix checks a List prefix: "" or "/" (everything), or a key that
// may end in "/".
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if err := validatePath(prefix, true); err != nil {
		return fmt.Errorf("%w: prefix %q: %s", ErrInvalidKey, truncate(prefix), err)
	}
	return nil
}

type pathError string

func (e pathError) Error() string { return string(e) }

func validatePath(p string, trailingSlash bool) error {
	switch {
	case p == "":
		return pathError("empty")
	case len(p) > MaxKeyLen:
		return pathError(fmt.Sprintf("%d bytes, longer than %d", len(p), MaxKeyLen))
	case p[0] != '/':
		return pathError(`does not start with "/"`)
	case !utf8.ValidString(p):
		return pathError("not valid UTF-8")
	}
	if p == "/" {
		if trailingSlash {
			return nil
		}
		return pathError("no segment")
	}
	body := p[1:]
	if trailingSlash {
		body = strings.TrimSuffix(body, "/")
	} else if strings.HasSuffix(body, "/") {
		return pathError(`ends with "/"`)
	}
	if strings.Contains(body, "//") || strings.HasPrefix(body, "/") || strings.HasSuffix(body, "/") || body == "" {
		return pathError("empty segment")
	}
	for _, r := range p {
		if unicode.IsControl(r) {
			return pathError(fmt.Sprintf("control character %U", r))
		}
	}
	return nil
}

func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}

// PrefixEnd returns the smallest string greater than every string with the
// given prefix, or "" when there is none (the prefix is empty or all 0xff).
// Backends use it as the exclusive upper bound of a range scan.
func PrefixEnd(prefix string) string {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1])
		}
	}
	return ""
}

// Pattern is a parsed watch pattern. A pattern without "*" segments is a
// prefix, with the same meaning as a List prefix: "/workloads/" matches every
// key under /workloads, and "/a/b" matches /a/b and every key under it, never
// /a/bc. In a glob, "*" matches exactly one segment and
// "**" any number of segments, including none: "/workloads/*" matches
// /workloads/x but not /workloads/x/y; "/peers/*/reputation" matches
// /peers/ID/reputation.
type Pattern struct {
	raw    string
	prefix string   // for a plain prefix pattern
	under  bool     // the prefix ended in "/": the key itself does not match
	segs   []string // for a glob; nil for a prefix
}

// ParsePattern parses a watch pattern; a bad one is ErrInvalidKey. "" and "/"
// match every key.
func ParsePattern(pattern string) (Pattern, error) {
	if err := ValidatePrefix(pattern); err != nil {
		return Pattern{}, err
	}
	p := Pattern{raw: pattern}
	trimmed := strings.Trim(pattern, "/")
	if trimmed == "" {
		return p, nil
	}
	segs := strings.Split(trimmed, "/")
	glob := false
	for _, s := range segs {
		if strings.Contains(s, "*") {
			if s != "*" && s != "**" {
				return Pattern{}, fmt.Errorf("%w: pattern %q: segment %q: \"*\" must be a whole segment", ErrInvalidKey, truncate(pattern), s)
			}
			glob = true
		}
	}
	if glob {
		p.segs = segs
		return p, nil
	}
	p.prefix = "/" + trimmed
	p.under = strings.HasSuffix(pattern, "/")
	return p, nil
}

// String returns the pattern as given.
func (p Pattern) String() string { return p.raw }

// Prefix returns the longest literal key prefix every matching key starts
// with, useful to narrow a scan; "" means any key.
func (p Pattern) Prefix() string {
	if p.segs == nil {
		return p.prefix
	}
	var b strings.Builder
	for _, s := range p.segs {
		if s == "**" && b.Len() > 0 {
			return b.String() // "/a/**" matches /a itself
		}
		if s == "*" || s == "**" {
			b.WriteByte('/')
			return b.String()
		}
		b.WriteByte('/')
		b.WriteString(s)
	}
	return b.String()
}

// Match reports whether key matches the pattern.
func (p Pattern) Match(key string) bool {
	if p.segs == nil {
		if p.prefix == "" {
			return true
		}
		if key == p.prefix {
			return !p.under
		}
		return strings.HasPrefix(key, p.prefix) && key[len(p.prefix)] == '/'
	}
	if len(key) == 0 || key[0] != '/' {
		return false
	}
	return matchSegs(p.segs, strings.Split(key[1:], "/"))
}

func matchSegs(pat, key []string) bool {
	if slices.Contains(pat, "**") {
		return matchGlobstar(pat, key)
	}
	if len(pat) != len(key) {
		return false
	}
	for i, s := range pat {
		if s != "*" && s != key[i] {
			return false
		}
	}
	return true
}

// matchGlobstar matches a pattern with "**" segments in O(len(pat) ×
// len(key)) steps: next[j] tells whether the rest of the pattern matches
// key[j:]. (Trying every split of the key at every "**" is exponential in
// their number, and patterns come from API clients.)
func matchGlobstar(pat, key []string) bool {
	next := make([]bool, len(key)+1)
	cur := make([]bool, len(key)+1)
	next[len(key)] = true
	for i := len(pat) - 1; i >= 0; i-- {
		for j := len(key); j >= 0; j-- {
			switch pat[i] {
			case "**":
				cur[j] = next[j] || j < len(key) && cur[j+1]
			case "*":
				cur[j] = j < len(key) && next[j+1]
			default:
				cur[j] = j < len(key) && key[j] == pat[i] && next[j+1]
			}
		}
		next, cur = cur, next
	}
	return next[0]
}
