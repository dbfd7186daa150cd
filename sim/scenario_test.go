package sim

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/univrs/peerstate/datastore"
	"github.com/univrs/peerstate/datastore/memory"
)

func TestLoadScenario(t *testing.T) {
	sc, err := LoadScenario("testdata/partition.toml")
	if err != nil {
		t.Fatal(err)
	}
	if sc.Name != "partition" || sc.Peers != 50 || sc.Seed != 7 || sc.Window.D() != 8*time.Second ||
		sc.Partition == nil || sc.Partition.Heal.D() != 6*time.Second || sc.Loss != 0.01 {
		t.Fatalf("toml: %+v", sc)
	}
	if sc.SyncInterval != DefaultScenario().SyncInterval {
		t.Fatalf("unset field not defaulted: %v", sc.SyncInterval)
	}
	sc, err = LoadScenario("testdata/restart.json")
	if err != nil {
		t.Fatal(err)
	}
	if sc.Peers != 20 || sc.Restart == nil || sc.Restart.Down.D() != 3*time.Second || sc.Level != LevelModel {
		t.Fatalf("json: %+v", sc)
	}
}

func TestLoadScenario_Bad(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"unknown.toml":  "peers = 5\nbogus = 1\n",
		"unknown.json":  `{"peers": 5, "bogus": 1}`,
		"duration.toml": `window = "ten seconds"`,
		"invalid.json":  `{"peers": 1}`,
		"loss.toml":     "loss = 1.5\n",
		"scenario.yaml": "peers: 5\n",
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadScenario(path); !errors.Is(err, ErrScenario) {
			t.Errorf("%s: got %v, want ErrScenario", name, err)
		}
	}
	if _, err := LoadScenario(filepath.Join(dir, "missing.toml")); err == nil {
		t.Error("missing file loaded")
	}
}

func TestScenario_Validate(t *testing.T) {
	for name, mod := range map[string]func(*Scenario){
		"level":    func(s *Scenario) { s.Level = "cloud" },
		"workload": func(s *Scenario) { s.Workload = "bulk" },
		"one peer": func(s *Scenario) { s.Peers = 1 },
		"negative": func(s *Scenario) { s.Writes = -1 },
		"loss":     func(s *Scenario) { s.Loss = 1 },
		"skew":     func(s *Scenario) { s.ClockSkew = Duration(time.Hour) },
		"heal first": func(s *Scenario) {
			s.Partition = &Partition{At: Duration(2 * time.Second), Heal: Duration(time.Second)}
		},
		"restart all":    func(s *Scenario) { s.Restart = &Restart{Peers: 50, Down: Duration(time.Second)} },
		"no down time":   func(s *Scenario) { s.Restart = &Restart{Peers: 1} },
		"sqlite model":   func(s *Scenario) { s.Store = "sqlite" },
		"network churn":  func(s *Scenario) { s.Level = LevelNetwork; s.Churn = &Churn{Leave: 1} },
		"network backup": func(s *Scenario) { s.Level = LevelNetwork; s.Restart = &Restart{Peers: 1, Down: 1} },
	} {
		sc := DefaultScenario()
		mod(&sc)
		if err := sc.Validate(); !errors.Is(err, ErrScenario) {
			t.Errorf("%s: got %v, want ErrScenario", name, err)
		}
		if _, err := Run(context.Background(), sc, Options{}); !errors.Is(err, ErrScenario) {
			t.Errorf("%s: Run got %v, want ErrScenario", name, err)
		}
	}
	if err := DefaultScenario().Validate(); err != nil {
		t.Fatalf("default: %v", err)
	}
}

// TestChecks_Detect shows the checks fail on divergent peers: one peer
// misses a write, another holds a key deleted elsewhere.
func TestChecks_Detect(t *testing.T) {
	ctx := context.Background()
	now := func() time.Time { return epoch }
	var acked []change
	rec := recorder{&acked}
	ka, err := peerKey(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := peerKey(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	a, err := openReplica(ctx, ka, memory.New(), now, rec)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := openReplica(ctx, kb, memory.New(), now, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := a.Set(ctx, "/k/1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Apply(ctx, a.ID(), acked); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Set(ctx, "/k/2", []byte("y")); err != nil { // b misses it
		t.Fatal(err)
	}
	if err := a.Delete(ctx, "/k/1"); err != nil { // b misses the delete
		t.Fatal(err)
	}
	best := map[string]change{}
	for _, c := range acked {
		if o, ok := best[c.Key]; !ok || newer(c, o) {
			best[c.Key] = c
		}
	}
	peers := []replicaView{{id: "a", r: a}, {id: "b", r: b}}
	c, err := runChecks(ctx, peers, acked, best)
	if err != nil {
		t.Fatal(err)
	}
	if c.Passed() || c.States != 2 || c.Lost == 0 || c.Resurrected != 1 || c.Diverged != 2 {
		t.Fatalf("checks missed the divergence: %+v", c)
	}
	// Once b catches up, every check holds.
	if _, _, err := catchUp(ctx, b, a, func([]change) {}); err != nil {
		t.Fatal(err)
	}
	if c, err = runChecks(ctx, peers, acked, best); err != nil || !c.Passed() {
		t.Fatalf("after catch-up: %+v %v", c, err)
	}
}

type recorder struct{ out *[]change }

func (r recorder) Broadcast(_ context.Context, cs []change) error {
	*r.out = append(*r.out, cs...)
	return nil
}

func TestWatchLog_Verify(t *testing.T) {
	ev := func(typ datastore.EventType, key string, version, rev uint64, v string) datastore.Event {
		return datastore.Event{Type: typ, Key: key, Version: version, Revision: rev, NewValue: []byte(v)}
	}
	final := map[string]change{"/a": {Key: "/a", Version: 2, Value: []byte("2")}, "/b": {Key: "/b", Deleted: true}}
	for name, tc := range map[string]struct {
		events []datastore.Event
		want   string
	}{
		"good":            {[]datastore.Event{ev(datastore.Created, "/a", 1, 1, "1"), ev(datastore.Updated, "/a", 2, 2, "2"), ev(datastore.Created, "/b", 1, 3, "b"), ev(datastore.Deleted, "/b", 2, 4, "")}, ""},
		"revision back":   {[]datastore.Event{ev(datastore.Updated, "/a", 2, 5, "2"), ev(datastore.Created, "/b", 1, 3, "b"), ev(datastore.Deleted, "/b", 2, 6, "")}, "revision"},
		"version back":    {[]datastore.Event{ev(datastore.Updated, "/a", 2, 1, "2"), ev(datastore.Updated, "/a", 1, 2, "1"), ev(datastore.Updated, "/a", 2, 3, "2")}, "version 1 after 2"},
		"repeated":        {[]datastore.Event{ev(datastore.Updated, "/a", 2, 1, "2"), ev(datastore.Updated, "/a", 2, 2, "2")}, "repeated"},
		"missed final":    {[]datastore.Event{ev(datastore.Created, "/a", 1, 1, "1")}, "does not end there"},
		"deleted is back": {[]datastore.Event{ev(datastore.Updated, "/a", 2, 1, "2"), ev(datastore.Created, "/b", 1, 2, "b")}, "deleted"},
	} {
		l := &watchLog{events: tc.events}
		probs := strings.Join(l.verify(final), "; ")
		if (tc.want == "") != (probs == "") || !strings.Contains(probs, tc.want) {
			t.Errorf("%s: problems %q, want %q", name, probs, tc.want)
		}
	}
}
