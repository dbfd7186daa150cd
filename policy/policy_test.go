package policy_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"go.uber.org/goleak"

	"github.com/univrs/peerstate/policy"
	"github.com/univrs/peerstate/replica"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func idFor(name string) string {
	seed := sha256.Sum256([]byte(name))
	k, _, err := crypto.GenerateEd25519Key(bytes.NewReader(seed[:]))
	if err != nil {
		panic(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		panic(err)
	}
	return id.String()
}

func TestCheck(t *testing.T) {
	alice, bob, admin := idFor("alice"), idFor("bob"), idFor("admin")
	p, err := policy.New([]policy.Rule{
		{Prefix: "/peers/", Mode: policy.Owner, Allow: []string{admin}},
		{Prefix: "/peers/" + alice + "/public", Mode: policy.Anyone},
		{Prefix: "/cluster", Mode: policy.Allow, Allow: []string{admin}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key, writer string
		ok          bool
	}{
		{"/peers/" + alice + "/info", alice, true},
		{"/peers/" + alice, alice, true},
		{"/peers/" + alice + "/info", bob, false},
		{"/peers/" + alice + "/info", admin, true},
		{"/peers/" + alice + "x/info", alice, false},    // another segment
		{"/peers", alice, false},                        // names nobody
		{"/peers/" + alice + "/public/note", bob, true}, // the more specific rule
		{"/peers/" + alice + "/publicx", bob, false},    // not under it
		{"/cluster/leader", admin, true},
		{"/cluster/leader", alice, false},
		{"/cluster", alice, false},
		{"/clusters/x", alice, true}, // /cluster does not cover /clusters
		{"/anything", bob, true},
	} {
		err := p.Check(tc.key, tc.writer)
		if (err == nil) != tc.ok {
			t.Errorf("Check(%s, %s) = %v, want ok=%v", tc.key, tc.writer, err, tc.ok)
		}
		if err != nil && !errors.Is(err, policy.ErrViolation) {
			t.Errorf("Check(%s): %v does not wrap ErrViolation", tc.key, err)
		}
		if err != nil && !strings.Contains(err.Error(), "write policy") {
			t.Errorf("Check(%s): %q does not name the policy", tc.key, err)
		}
		c := replica.Change{Key: tc.key, Origin: tc.writer, Deleted: true}
		if (p.Admit(c) == nil) != tc.ok {
			t.Errorf("Admit of a delete of %s by %s disagrees with Check", tc.key, tc.writer)
		}
	}
	var v *policy.Violation
	if err := p.Check("/cluster/x", bob); !errors.As(err, &v) || v.Rule.Prefix != "/cluster" || v.Writer != bob {
		t.Fatalf("violation %+v does not carry the rule and writer", v)
	}
}

func TestNilPolicyAllowsAll(t *testing.T) {
	var p *policy.Policy
	if err := p.Check("/peers/x", "y"); err != nil {
		t.Fatal(err)
	}
}

func TestNewRejectsBadRules(t *testing.T) {
	for name, rules := range map[string][]policy.Rule{
		"root":          {{Prefix: "/", Mode: policy.Anyone}},
		"empty prefix":  {{Prefix: "", Mode: policy.Anyone}},
		"bad prefix":    {{Prefix: "peers", Mode: policy.Owner}},
		"unknown mode":  {{Prefix: "/a", Mode: "everyone"}},
		"allow no list": {{Prefix: "/a", Mode: policy.Allow}},
		"bad id":        {{Prefix: "/a", Mode: policy.Allow, Allow: []string{"not-a-peer"}}},
		"anyone list":   {{Prefix: "/a", Mode: policy.Anyone, Allow: []string{idFor("x")}}},
		"duplicate":     {{Prefix: "/a", Mode: policy.Owner}, {Prefix: "/a/", Mode: policy.Anyone}},
	} {
		if _, err := policy.New(rules); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParse(t *testing.T) {
	p, err := policy.Parse([]byte(`[{"prefix":"/peers/","mode":"owner"}]`))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Rules(); len(got) != 1 || got[0].Mode != policy.Owner {
		t.Fatalf("rules %+v", got)
	}
	for _, bad := range []string{`{}`, `[{"prefix":"/a","mode":"owner","extra":1}]`, `[{"prefix":"/a","mode":"x"}]`, `nope`} {
		if _, err := policy.Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%s) accepted", bad)
		}
	}
}

func TestParseRule(t *testing.T) {
	admin := idFor("admin")
	for _, s := range []string{"/peers/=owner", "/cluster=allow:" + admin, "/peers/=owner:" + admin + "," + idFor("b")} {
		r, err := policy.ParseRule(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if r.Spec() != s {
			t.Fatalf("%s read back as %s", s, r.Spec())
		}
		if _, err := policy.New([]policy.Rule{r}); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	for _, bad := range []string{"", "/peers/", "=owner", "/peers/="} {
		if _, err := policy.ParseRule(bad); err == nil {
			t.Errorf("ParseRule(%q) accepted", bad)
		}
	}
}
