package datastore_test

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/univrs/peerstate/datastore"
)

func TestValidateKey(t *testing.T) {
	for _, tc := range []struct {
		key string
		ok  bool
	}{
		{"/a", true},
		{"/a/b/c", true},
		{"/ünï/键", true},
		{"/" + strings.Repeat("x", datastore.MaxKeyLen-1), true},
		{"/" + strings.Repeat("x", datastore.MaxKeyLen), false},
		{"", false},
		{"/", false},
		{"a", false},
		{"/a/", false},
		{"//a", false},
		{"/a//b", false},
		{"/a\tb", false},
		{"/a\u0085b", false},
		{"/\xc3", false},
	} {
		err := datastore.ValidateKey(tc.key)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateKey(%q) = %v, want ok=%v", tc.key, err, tc.ok)
		}
		if err != nil && !errors.Is(err, datastore.ErrInvalidKey) {
			t.Errorf("ValidateKey(%q) = %v, not ErrInvalidKey", tc.key, err)
		}
	}
}

func TestValidatePrefix(t *testing.T) {
	for _, p := range []string{"", "/", "/a", "/a/", "/a/b/"} {
		if err := datastore.ValidatePrefix(p); err != nil {
			t.Errorf("ValidatePrefix(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"a", "//", "/a//", "/a//b/"} {
		if err := datastore.ValidatePrefix(p); !errors.Is(err, datastore.ErrInvalidKey) {
			t.Errorf("ValidatePrefix(%q) = %v, want ErrInvalidKey", p, err)
		}
	}
}

func TestPattern_Match(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		key     string
		want    bool
	}{
		{"", "/anything", true},
		{"/", "/anything/deep", true},
		{"/a", "/a", true},
		{"/a", "/a/b", true},
		{"/a", "/ab", false},
		{"/a/", "/a", false},
		{"/a/", "/a/b", true},
		{"/a/*", "/a/b", true},
		{"/a/*", "/a/b/c", false},
		{"/a/*", "/a", false},
		{"/a/**", "/a", true},
		{"/a/**", "/a/b/c", true},
		{"/a/**", "/ab", false},
		{"/peers/*/reputation", "/peers/X/reputation", true},
		{"/peers/*/reputation", "/peers/X/info", false},
		{"/peers/*/reputation", "/peers/X/Y/reputation", false},
		{"/**/rep", "/rep", true},
		{"/**/rep", "/x/y/rep", true},
		{"/**/rep", "/x/rep/y", false},
		{"/*/b/**/d", "/a/b/d", true},
		{"/*/b/**/d", "/a/b/c/c/d", true},
		{"/*/b/**/d", "/a/x/c/d", false},
	} {
		p, err := datastore.ParsePattern(tc.pattern)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", tc.pattern, err)
		}
		if got := p.Match(tc.key); got != tc.want {
			t.Errorf("%q.Match(%q) = %v, want %v", tc.pattern, tc.key, got, tc.want)
		}
	}
	for _, bad := range []string{"a/*", "/a*", "/a/b*c", "/***", "/a//*"} {
		if _, err := datastore.ParsePattern(bad); !errors.Is(err, datastore.ErrInvalidKey) {
			t.Errorf("ParsePattern(%q) = %v, want ErrInvalidKey", bad, err)
		}
	}
}

func TestPattern_Prefix(t *testing.T) {
	for pattern, want := range map[string]string{
		"":                    "",
		"/a/b":                "/a/b",
		"/a/*":                "/a/",
		"/a/**":               "/a",
		"/peers/*/reputation": "/peers/",
		"/**/x":               "/",
	} {
		p, err := datastore.ParsePattern(pattern)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Prefix(); got != want {
			t.Errorf("%q.Prefix() = %q, want %q", pattern, got, want)
		}
	}
}

func TestPrefixEnd(t *testing.T) {
	for in, want := range map[string]string{"/a/": "/a0", "/a": "/b", "": "", "/\xff": "0"} {
		if got := datastore.PrefixEnd(in); got != want {
			t.Errorf("PrefixEnd(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestValidateOps(t *testing.T) {
	if err := datastore.ValidateOps([]datastore.Op{datastore.OpSet("/a", nil), datastore.OpCheckVersion("/a", 1)}, 0); err != nil {
		t.Fatalf("a check and a write of one key: %v", err)
	}
	if err := datastore.ValidateOps([]datastore.Op{datastore.OpSet("/a", nil), datastore.OpDelete("/a")}, 0); !errors.Is(err, datastore.ErrInvalidTxn) {
		t.Fatalf("two writes of one key: %v", err)
	}
	if err := datastore.ValidateOps([]datastore.Op{datastore.OpSet("/a", make([]byte, 11))}, 10); !errors.Is(err, datastore.ErrValueTooLarge) {
		t.Fatalf("value over the limit: %v", err)
	}
	if err := datastore.ValidateOps([]datastore.Op{{Kind: 99, Key: "/a"}}, 0); !errors.Is(err, datastore.ErrInvalidTxn) {
		t.Fatalf("unknown op kind: %v", err)
	}
}

func TestTxnError(t *testing.T) {
	var err error = &datastore.TxnError{Index: 2, Key: "/k", Expected: 3, Actual: 4}
	if !errors.Is(err, datastore.ErrTxnFailed) {
		t.Fatal("TxnError does not match ErrTxnFailed")
	}
	var te *datastore.TxnError
	if !errors.As(err, &te) || te.Index != 2 {
		t.Fatal("errors.As lost the fields")
	}
}

// FuzzValidateKey checks that key validation never panics, that accepted keys
// obey every rule, and that an accepted key matches itself as a pattern.
func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"/a", "/a/b", "", "/", "//", "/a/", "/a\x00", "/\xff", "/a/*", "/**"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if err := datastore.ValidateKey(key); err == nil {
			if len(key) > datastore.MaxKeyLen || key[0] != '/' || strings.HasSuffix(key, "/") ||
				strings.Contains(key, "//") || !utf8.ValidString(key) {
				t.Fatalf("accepted bad key %q", key)
			}
			if strings.Contains(key, "*") {
				return
			}
			p, err := datastore.ParsePattern(key)
			if err != nil {
				t.Fatalf("valid key %q is not a valid pattern: %v", key, err)
			}
			if !p.Match(key) {
				t.Fatalf("pattern %q does not match itself", key)
			}
		}
		if p, err := datastore.ParsePattern(key); err == nil {
			p.Match("/a/b")
			p.Prefix()
		}
	})
}
