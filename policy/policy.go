// Package policy is peerstate's write policy: per key prefix, who may write
// there. A rule names a prefix and one of three modes:
//
//   - anyone: every peer of the network (the default for keys no rule
//     covers);
//   - owner: only the peer whose ID is the first key segment after the
//     prefix — under "/peers/" the key "/peers/{id}/info" is writable by
//     {id} alone — plus the peers the rule's allow-list names (say, an
//     operator's);
//   - allow: only the peers the allow-list names.
//
// The most specific rule wins: the one with the longest prefix covering the
// key, with prefixes meaning what they mean for List ("/a" covers "/a" and
// "/a/...", never "/ab").
//
// A Policy is enforced through replica.Config.Admit (see Policy.Admit): on
// every remote path before a change touches the store, judged by the
// change's signed origin, and on local writes, which fail with an error
// naming the rule. A change's signature proves who wrote it, so the rule is
// applied to the writer, never to the peer that relayed it. Peers with
// different policies converge on what both accept.
//
// What a policy does not do: a peer allowed to write a prefix may still
// write anything there, as fast as it likes (reputation and per-peer limits
// deal with floods), and a rule cannot stop a peer from reading what is
// replicated to it.
package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/replica"
)

// Mode is who may write under a rule's prefix.
type Mode string

// The modes of a rule.
const (
	Anyone Mode = "anyone"
	Owner  Mode = "owner"
	Allow  Mode = "allow"
)

// Rule is one prefix's rule.
type Rule struct {
	Prefix string `json:"prefix"`
	Mode   Mode   `json:"mode"`
	// Allow lists peer IDs: the only writers under Allow, extra writers
	// under Owner; not used by Anyone.
	Allow []string `json:"allow,omitempty"`
}

func (r Rule) String() string {
	switch r.Mode {
	case Owner:
		if len(r.Allow) > 0 {
			return fmt.Sprintf("%s is writable by the peer named in the key and %d allowed peers", r.Prefix, len(r.Allow))
		}
		return fmt.Sprintf("%s is writable by the peer named in the key only", r.Prefix)
	case Allow:
		return fmt.Sprintf("%s is writable by %d allowed peers only", r.Prefix, len(r.Allow))
	}
	return fmt.Sprintf("%s is writable by anyone", r.Prefix)
}

// ErrViolation is wrapped by every *Violation.
var ErrViolation = errors.New("write policy violation")

// Violation is a write a rule forbids.
type Violation struct {
	Key    string
	Writer string // the peer ID that wrote (the change's origin)
	Rule   Rule
}

func (v *Violation) Error() string {
	return fmt.Sprintf("write policy: %s; %s may not write %q", v.Rule, short(v.Writer), v.Key)
}

// Is makes errors.Is(err, ErrViolation) hold.
func (v *Violation) Is(target error) bool { return target == ErrViolation }

// short abbreviates a peer ID for messages.
func short(id string) string {
	if len(id) > 16 {
		return id[:6] + "…" + id[len(id)-6:]
	}
	return id
}

// Policy is a validated set of rules; the zero value and nil allow every
// write.
type Policy struct {
	rules []compiled // longest prefix first
}

type compiled struct {
	Rule
	norm  string // the prefix ending in "/"
	allow map[string]bool
}

// New validates rules and returns their policy. Every bad rule is named.
func New(rules []Rule) (*Policy, error) {
	p := &Policy{}
	var errs []error
	seen := map[string]bool{}
	for i, r := range rules {
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("rule %d (%q): %s", i+1, r.Prefix, fmt.Sprintf(format, args...)))
		}
		if err := datastore.ValidatePrefix(r.Prefix); err != nil || r.Prefix == "" || r.Prefix == "/" {
			bad("prefix must be a key prefix other than the root")
			continue
		}
		norm := strings.TrimSuffix(r.Prefix, "/") + "/"
		if seen[norm] {
			bad("a second rule for the same prefix")
			continue
		}
		seen[norm] = true
		c := compiled{Rule: r, norm: norm, allow: map[string]bool{}}
		switch r.Mode {
		case Anyone:
			if len(r.Allow) > 0 {
				bad("mode anyone takes no allow-list")
			}
		case Owner:
		case Allow:
			if len(r.Allow) == 0 {
				bad("mode allow needs at least one peer ID")
			}
		default:
			bad("mode %q: want anyone, owner or allow", r.Mode)
			continue
		}
		for _, id := range r.Allow {
			if _, err := peer.Decode(id); err != nil {
				bad("allow-list: %q is not a peer ID", id)
				continue
			}
			c.allow[id] = true
		}
		c.Allow = slices.Clone(r.Allow)
		p.rules = append(p.rules, c)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	slices.SortFunc(p.rules, func(a, b compiled) int { return len(b.norm) - len(a.norm) })
	return p, nil
}

// Parse reads rules from JSON (an array of rules) and validates them.
func Parse(data []byte) (*Policy, error) {
	var rules []Rule
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rules); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return New(rules)
}

// Rules returns the rules, most specific first.
func (p *Policy) Rules() []Rule {
	if p == nil {
		return nil
	}
	out := make([]Rule, len(p.rules))
	for i, c := range p.rules {
		out[i] = c.Rule
	}
	return out
}

// RuleFor returns the rule that governs key, if any.
func (p *Policy) RuleFor(key string) (Rule, bool) {
	c, ok := p.match(key)
	return c.Rule, ok
}

func (p *Policy) match(key string) (compiled, bool) {
	if p == nil {
		return compiled{}, false
	}
	for _, c := range p.rules {
		if strings.HasPrefix(key+"/", c.norm) {
			return c, true
		}
	}
	return compiled{}, false
}

// Check reports whether writer (a peer ID) may write key: nil, or a
// *Violation naming the rule.
func (p *Policy) Check(key, writer string) error {
	c, ok := p.match(key)
	if !ok || c.Mode == Anyone || c.allow[writer] {
		return nil
	}
	if c.Mode == Owner {
		rest := strings.TrimPrefix(key, c.norm)
		if owner, _, _ := strings.Cut(rest, "/"); owner != "" && owner == writer && len(key) > len(c.norm) {
			return nil
		}
	}
	return &Violation{Key: key, Writer: writer, Rule: c.Rule}
}

// Admit is the policy as a replica.Config.Admit rule: a change's signed
// origin must be allowed to write its key. Deletes count as writes.
func (p *Policy) Admit(c replica.Change) error { return p.Check(c.Key, c.Origin) }

// ParseRule reads a rule written as PREFIX=MODE, or PREFIX=MODE:ID,ID,...
// with an allow-list: "/peers/=owner", "/cluster/=allow:12D3Koo...". The
// rule is checked when the policy is built (New).
func ParseRule(s string) (Rule, error) {
	prefix, spec, ok := strings.Cut(s, "=")
	if !ok || prefix == "" || spec == "" {
		return Rule{}, fmt.Errorf("policy: rule %q: want PREFIX=MODE or PREFIX=MODE:ID,ID", s)
	}
	mode, ids, _ := strings.Cut(spec, ":")
	r := Rule{Prefix: prefix, Mode: Mode(mode)}
	if ids != "" {
		r.Allow = strings.Split(ids, ",")
	}
	return r, nil
}

// Spec writes r as ParseRule reads it.
func (r Rule) Spec() string {
	s := r.Prefix + "=" + string(r.Mode)
	if len(r.Allow) > 0 {
		s += ":" + strings.Join(r.Allow, ",")
	}
	return s
}
