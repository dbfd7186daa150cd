package datastore_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/univrs/peerstate/datastore"
)

// matchReference is glob matching written the slow, obvious way: it
// expands "**" to every possible number of segments.
func matchReference(pat, key []string) bool {
	if len(pat) == 0 {
		return len(key) == 0
	}
	switch pat[0] {
	case "**":
		for i := 0; i <= len(key); i++ {
			if matchReference(pat[1:], key[i:]) {
				return true
			}
		}
		return false
	case "*":
		return len(key) > 0 && matchReference(pat[1:], key[1:])
	}
	return len(key) > 0 && key[0] == pat[0] && matchReference(pat[1:], key[1:])
}

// FuzzPatternMatch checks watch-pattern matching against a reference
// matcher for globs and the List-prefix rule for plain patterns, and that
// Prefix() narrows a scan without losing a match. The seed corpus is in
// testdata/fuzz/FuzzPatternMatch.
func FuzzPatternMatch(f *testing.F) {
	for _, s := range [][2]string{
		{"/a/*", "/a/b"}, {"/a/**", "/a"}, {"/**/rep", "/x/y/rep"}, {"/a/", "/a"}, {"/a", "/ab"},
		{"/*/*", "/a"}, {"/**/**", "/"}, {"/a/**/b/*", "/a/b/b/c"}, {"", "/x"}, {"/p*", "/p"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, key string) {
		p, err := datastore.ParsePattern(pattern)
		if err != nil {
			return
		}
		if datastore.ValidateKey(key) != nil {
			return
		}
		got := p.Match(key)
		trimmed := strings.Trim(pattern, "/")
		var want bool
		switch {
		case trimmed == "":
			want = true
		case strings.Contains(pattern, "*"):
			pat := strings.Split(trimmed, "/")
			if strings.Count(key, "/") > 24 && strings.Contains(trimmed, "**") {
				return // too slow for the reference
			}
			if strings.Count(trimmed, "**") > 4 {
				// The reference is exponential in the number of "**":
				// drop the redundant ones it would retry (a run of "**"
				// means what one does).
				pat = slices.CompactFunc(pat, func(a, b string) bool { return a == "**" && b == "**" })
				if strings.Count(strings.Join(pat, "/"), "**") > 4 {
					return
				}
			}
			want = matchReference(pat, strings.Split(key[1:], "/"))
		default:
			base := "/" + trimmed
			want = strings.HasPrefix(key, base+"/") || key == base && !strings.HasSuffix(pattern, "/")
		}
		if got != want {
			t.Fatalf("ParsePattern(%q).Match(%q) = %v, want %v", pattern, key, got, want)
		}
		if got && !strings.HasPrefix(key, p.Prefix()) {
			t.Fatalf("pattern %q matches %q outside its Prefix() %q", pattern, key, p.Prefix())
		}
	})
}

// Many "**" segments once made Match try every split of the key at each of
// them: 12 took minutes on a 30-segment key. Patterns come from API clients.
func TestPatternManyGlobstars(t *testing.T) {
	p, err := datastore.ParsePattern(strings.Repeat("/**", 60) + "/x")
	if err != nil {
		t.Fatal(err)
	}
	key := strings.Repeat("/a", 200)
	if p.Match(key) {
		t.Fatalf("matched %q", key)
	}
	if !p.Match(key + "/x") {
		t.Fatal("no match with the last segment")
	}
	q, _ := datastore.ParsePattern(strings.Repeat("/**/a", 30) + "/**")
	if !q.Match(key) || q.Match(strings.Repeat("/a", 29)) {
		t.Fatal("/**/a repeated 30 times: wrong match")
	}
}

func BenchmarkMatchGlobstars(b *testing.B) {
	p, _ := datastore.ParsePattern(strings.Repeat("/**", 12) + "/x")
	key := strings.Repeat("/a", 30)
	for b.Loop() {
		p.Match(key)
	}
}
