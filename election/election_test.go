package election_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/etcd"
	"github.com/univrs/peerstate/datastore/memory"
	"github.com/univrs/peerstate/datastore/storetest"
	"github.com/univrs/peerstate/election"
	"github.com/univrs/peerstate/internal/etcdtest"
	"github.com/univrs/peerstate/internal/replicatest"
)

var etcdSrv *etcdtest.Server

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(etcdtest.Main(m, &etcdSrv, etcdtest.WithoutFsync()))
}

const ttl, renew = 2 * time.Second, 20 * time.Millisecond

func candidate(t *testing.T, s datastore.Store, id string, now func() time.Time) *election.Election {
	t.Helper()
	e, err := election.New(s, election.Config{ID: id, TTL: ttl, RenewEvery: renew, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

type won struct {
	id   string
	term *election.Term
}

// campaignAll starts every candidate's campaign and returns the channel of
// winners.
func campaignAll(ctx context.Context, t *testing.T, cands map[string]*election.Election, wg *sync.WaitGroup) chan won {
	ch := make(chan won, 100)
	for id, e := range cands {
		wg.Go(func() {
			// Campaign again whenever a term ends, as an application does.
			for {
				term, err := e.Campaign(ctx)
				if err != nil {
					if !errors.Is(err, context.Canceled) && !errors.Is(err, election.ErrClosed) {
						t.Errorf("%s: %v", id, err)
					}
					return
				}
				select {
				case ch <- won{id, term}:
				case <-ctx.Done():
					return
				}
				select {
				case <-term.Lost():
				case <-ctx.Done():
					return
				}
			}
		})
	}
	return ch
}

func next(t *testing.T, ch chan won) won {
	t.Helper()
	select {
	case w := <-ch:
		return w
	case <-time.After(30 * time.Second):
		t.Fatal("no candidate won")
		return won{}
	}
}

// Hand-over on one shared store, with an injected clock: exactly one
// leader at a time, renewals keep the lease past many TTLs, a leader that
// stops renewing is replaced once its lease runs out, one that resigns is
// replaced at once, and term numbers grow.
func testHandOver(t *testing.T, s datastore.Store, clk *storetest.Clock) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	cands := map[string]*election.Election{}
	for i := range 3 {
		id := fmt.Sprint("c", i)
		cands[id] = candidate(t, s, id, clk.Now)
	}
	ch := campaignAll(ctx, t, cands, &wg)
	first := next(t, ch)

	// Move the clock on by half a TTL at a time, each time waiting for a
	// renewal made after the move (its deadline is a whole TTL from the new
	// time; one begun before the move reaches only half a TTL past it): after
	// 3 TTLs the first leader still leads, and nobody else won.
	for range 6 {
		clk.Advance(ttl / 2)
		for !first.term.Deadline().After(clk.Now().Add(ttl / 2)) {
			time.Sleep(renew)
		}
	}
	select {
	case w := <-ch:
		t.Fatalf("%s won while %s renews", w.id, first.id)
	default:
	}
	if !first.term.Valid() {
		t.Fatalf("the renewing leader's term is not valid: %v", first.term.Err())
	}
	l, err := cands[first.id].Leader(ctx)
	if err != nil || l.Holder != first.id {
		t.Fatalf("leader %+v %v", l, err)
	}

	// It stops renewing (as if it crashed): another takes over once the
	// lease has run out.
	cands[first.id].Close()
	<-first.term.Lost()
	if !errors.Is(first.term.Err(), election.ErrClosed) {
		t.Fatal(first.term.Err())
	}
	select {
	case w := <-ch:
		t.Fatalf("%s won before the lease ran out", w.id)
	case <-time.After(10 * renew):
	}
	clk.Advance(ttl)
	second := next(t, ch)
	if second.id == first.id || second.term.Number <= first.term.Number {
		t.Fatalf("second leader %s term %d", second.id, second.term.Number)
	}

	// It leaves and resigns: the third takes over at once, without the
	// clock moving.
	cands[second.id].Close()
	if err := second.term.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	third := next(t, ch)
	if third.id == first.id || third.id == second.id || third.term.Number <= second.term.Number {
		t.Fatalf("third leader %s term %d", third.id, third.term.Number)
	}
	if l, err := cands[third.id].Leader(ctx); err != nil || l.Holder != third.id {
		t.Fatal(l, err)
	}
}

func TestElection_HandOverMemory(t *testing.T) {
	clk := &storetest.Clock{}
	s := memory.New(datastore.WithClock(clk.Now))
	defer s.Close()
	testHandOver(t, s, clk)
}

func TestElection_HandOverEtcd(t *testing.T) {
	clk := &storetest.Clock{}
	s, err := etcd.Open(context.Background(), etcd.Config{Endpoints: etcdSrv.Endpoints, Root: fmt.Sprintf("/election-test/%d", time.Now().UnixNano()), Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	testHandOver(t, s, clk)
}

// A lease replaced behind the leader's back ends its term.
func TestElection_LostWhenReplaced(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	defer s.Close()
	e := candidate(t, s, "a", nil)
	term, err := e.TryAcquire(ctx)
	if err != nil || term == nil {
		t.Fatal(term, err)
	}
	if again, _ := e.TryAcquire(ctx); again != term {
		t.Fatal("a second attempt while leading returned another term")
	}
	if _, err := s.Set(ctx, election.DefaultKey, []byte(`{"holder":"intruder","expires":1}`)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-term.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("term survived a replaced lease")
	}
	if !errors.Is(term.Err(), election.ErrLost) || term.Valid() {
		t.Fatal(term.Err())
	}
	// The intruder's lease has run out: a new attempt takes it over.
	old := term.Number
	term, err = e.TryAcquire(ctx)
	if err != nil || term == nil || term.Number <= old {
		t.Fatal(term, err)
	}
}

func TestConfig_Validate(t *testing.T) {
	for _, c := range []election.Config{
		{},
		{ID: "a", TTL: time.Second, RenewEvery: time.Second},
		{ID: "a", Key: "no-slash"},
		{ID: "a", TTL: time.Microsecond},
	} {
		if _, err := election.New(nil, c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if err := election.DefaultConfig("a").Validate(); err != nil {
		t.Error(err)
	}
}

// Under replication the election is best effort, but the peers agree on one
// leader once changes have spread, and hand over when it stops renewing.
func TestElection_ReplicatedPeersAgree(t *testing.T) {
	net, err := replicatest.New(3, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	cands := map[string]*election.Election{}
	byID := map[string]int{}
	for i, r := range net.Replicas {
		cands[r.ID()] = candidate(t, r, r.ID(), nil)
		byID[r.ID()] = i
	}
	ch := campaignAll(ctx, t, cands, &wg)
	first := next(t, ch)
	// Agreement: wait until every peer reads the same holder.
	agreed := func(notHolder string) string {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			net.Settle(ctx)
			var holders []string
			for _, e := range cands {
				if l, err := e.Leader(ctx); err == nil {
					holders = append(holders, l.Holder)
				}
			}
			if len(holders) == len(cands) && holders[0] != notHolder && holders[1] == holders[0] && holders[2] == holders[0] {
				return holders[0]
			}
			time.Sleep(renew)
		}
		for id, e := range cands {
			l, err := e.Leader(ctx)
			t.Logf("%s sees %+v %v", id, l, err)
		}
		t.Fatal("peers never agreed on a leader")
		return ""
	}
	leader := agreed("")
	// Any other winner won concurrently and lost the per-key order: its
	// term has ended.
	if first.id != leader {
		<-first.term.Lost()
	}
	cands[leader].Close()
	if newLeader := agreed(leader); newLeader == leader {
		t.Fatal("no hand-over")
	}
}
