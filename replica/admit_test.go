package replica_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/sqlite"
	"github.com/univrs/peerstate/replica"
)

// errNotOwner is the rule of these tests: /own/{id}/... is writable by {id}
// alone.
var errNotOwner = errors.New("only the peer it names may write here")

func ownerOnly(c replica.Change) error {
	rest, ok := strings.CutPrefix(c.Key, "/own/")
	if !ok {
		return nil
	}
	if id, _, _ := strings.Cut(rest, "/"); id != c.Origin {
		return errNotOwner
	}
	return nil
}

// Admit refuses a local write as a whole, with its reason, and the store is
// unchanged.
func TestAdmit_LocalWriteRefused(t *testing.T) {
	ctx := context.Background()
	a := open(t, "a", memory.New(), func(c *replica.Config) { c.Admit = ownerOnly })
	mine := "/own/" + a.ID() + "/info"
	mustSet(t, a, mine, "ok")

	other := "/own/" + idFor("b") + "/info"
	_, err := a.Set(ctx, other, []byte("forged"))
	if !errors.Is(err, replica.ErrRefused) || !errors.Is(err, errNotOwner) {
		t.Fatalf("set %s: %v, want ErrRefused wrapping the rule", other, err)
	}
	_, err = a.Txn(ctx, datastore.OpSet("/plain", []byte("x")), datastore.OpSet(other, []byte("y")))
	if !errors.Is(err, replica.ErrRefused) {
		t.Fatalf("txn: %v, want ErrRefused", err)
	}
	if got := value(t, a, "/plain"); got != "<absent>" {
		t.Fatalf("a refused txn wrote /plain = %s", got)
	}
	if got := value(t, a, other); got != "<absent>" {
		t.Fatalf("refused key holds %s", got)
	}
	if got := value(t, a, mine); got != "ok" {
		t.Fatalf("%s = %s", mine, got)
	}
	// The refused write used no sequence number: the next one follows on.
	w, err := a.Watermarks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustSet(t, a, "/after", "1")
	w2, err := a.Watermarks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	src := replica.SourceOf(a.ID(), a.Generation())
	if w2[src] != w[src]+1 {
		t.Fatalf("own watermark %d then %d: a refused write consumed sequence numbers", w[src], w2[src])
	}
}

// A validly signed remote change that breaks the receiver's rule is left
// out on every path, counted against its origin (not the relay), and still
// incorporated for watermarks, so catch-up does not bring it back; the
// accepted changes of the same batch apply. Two peers with different rules
// converge on what both accept.
func TestAdmit_RemoteChangesRefused(t *testing.T) {
	ctx := context.Background()
	var out captured
	b := open(t, "b", memory.New(), func(c *replica.Config) { c.Broadcaster = &out }) // no rule
	a := open(t, "a", memory.New(), func(c *replica.Config) { c.Admit = ownerOnly })

	mustSet(t, b, "/own/"+b.ID()+"/info", "b's own")
	mustSet(t, b, "/own/"+a.ID()+"/info", "b writes for a")
	mustSet(t, b, "/shared", "anyone")

	// Push: the batch as broadcast, relayed by a third peer.
	res, err := a.Apply(ctx, idFor("relay"), out.changes)
	if !errors.Is(err, replica.ErrRefused) || !errors.Is(err, errNotOwner) {
		t.Fatalf("apply: %v, want a refusal naming the rule", err)
	}
	if res.Applied != 2 || res.Refused != 1 || res.RefusedBy[b.ID()] != 1 || len(res.RefusedBy) != 1 {
		t.Fatalf("apply: %+v, want 2 applied and 1 refused by %s", res, b.ID())
	}
	if got := value(t, a, "/own/"+a.ID()+"/info"); got != "<absent>" {
		t.Fatalf("refused change applied: %s", got)
	}
	if got := value(t, a, "/shared"); got != "anyone" {
		t.Fatalf("/shared = %s", got)
	}

	// Catch-up has nothing more to send: the refusal was incorporated.
	have, err := a.Watermarks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if w := have[replica.SourceOf(b.ID(), b.Generation())]; w != 3 {
		t.Fatalf("watermark of b = %d, want 3", w)
	}
	sent := 0
	if _, err := b.ChangesSince(ctx, have, a.Prefixes(), 64, func(cs []replica.Change) error {
		sent += len(cs)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if sent != 0 {
		t.Fatalf("catch-up streams %d changes after the refusal", sent)
	}

	// A fresh peer with the rule catching up from b refuses it the same way.
	c := open(t, "c", memory.New(), func(c *replica.Config) { c.Admit = ownerOnly })
	have, _ = c.Watermarks(ctx)
	if _, err := b.ChangesSince(ctx, have, c.Prefixes(), 64, func(cs []replica.Change) error {
		res, err := c.Apply(ctx, b.ID(), cs)
		if res.Refused != 1 || !errors.Is(err, replica.ErrRefused) {
			return fmt.Errorf("catch-up apply: %+v, %v", res, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ha, _ := stateHash(t, a)
	hc, _ := stateHash(t, c)
	if ha != hc {
		t.Fatal("two peers with the same rule hold different states")
	}
	// What both accept, b and a agree on.
	for _, k := range []string{"/shared", "/own/" + b.ID() + "/info"} {
		if value(t, a, k) != value(t, b, k) {
			t.Fatalf("%s differs: %s vs %s", k, value(t, a, k), value(t, b, k))
		}
	}
}

// Keys matching a Local pattern stay on their peer even under replicated
// prefixes: not broadcast, not applied from peers, not streamed by
// catch-up, outside Admit; once the pattern is dropped they replicate, and
// what was skipped while it held is fetched again.
func TestLocalPatterns(t *testing.T) {
	ctx := context.Background()
	keepRep := func(c *replica.Config) {
		c.Local = []string{"/peers/*/reputation"}
		c.Admit = func(c replica.Change) error { return errNotOwner } // refuses every replicated write
	}
	var out captured
	db := filepath.Join(t.TempDir(), "a.db")
	openDB := func() datastore.Store {
		s, err := sqlite.Open(db)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a := open(t, "a", openDB(), keepRep, func(c *replica.Config) { c.Broadcaster = &out })
	rep := "/peers/" + idFor("x") + "/reputation"
	mustSet(t, a, rep, `{"score":1}`)
	if len(out.changes) != 0 {
		t.Fatalf("a local key was broadcast: %+v", out.changes)
	}
	if _, err := a.Set(ctx, "/peers/x/info", []byte("y")); !errors.Is(err, replica.ErrRefused) {
		t.Fatalf("replicated key: %v, want the Admit refusal", err)
	}

	b := open(t, "b", memory.New())
	var bout captured
	b.SetBroadcaster(&bout)
	mustSet(t, b, rep, "b's opinion")
	mustSet(t, b, "/other", "1")
	res, err := a.Apply(ctx, b.ID(), bout.changes)
	if err == nil || res.Skipped != 1 || res.Refused != 1 {
		t.Fatalf("apply: %+v, %v; want the local key skipped and /other refused", res, err)
	}
	if got := value(t, a, rep); got != `{"score":1}` {
		t.Fatalf("local key overwritten by a peer: %s", got)
	}
	have, _ := b.Watermarks(ctx)
	if _, err := a.ChangesSince(ctx, have, nil, 64, func(cs []replica.Change) error {
		return fmt.Errorf("catch-up streams a local key: %+v", cs)
	}); err != nil {
		t.Fatal(err)
	}

	// Dropping the pattern: the key replicates (promoted), and b's change
	// to it, skipped while it was local, is fetched by the next catch-up.
	a.Close()
	a2 := open(t, "a", openDB())
	have, _ = a2.Watermarks(ctx)
	if w := have[replica.SourceOf(b.ID(), b.Generation())]; w != 0 {
		t.Fatalf("watermark of b kept at %d after the pattern was dropped", w)
	}
	pull(t, b, a2)
	if got := value(t, a2, "/other"); got != "1" {
		t.Fatalf("/other = %s after the rules were dropped", got)
	}
	if c, ok, err := a2.Current(ctx, rep); err != nil || !ok || c.Seq == 0 {
		t.Fatalf("formerly local key not promoted: %+v %v %v", c, ok, err)
	}
}
