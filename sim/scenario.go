package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Levels a scenario runs at.
const (
	// LevelModel runs the real replica code of every peer over an
	// in-process message layer with virtual time: fast enough for 10,000
	// peers, and exactly reproducible from the seed.
	LevelModel = "model"
	// LevelNetwork runs every peer's full stack — replica, gossip with its
	// catch-up protocol, libp2p — on go-libp2p's simulated network inside
	// a testing/synctest bubble, so time is virtual.
	LevelNetwork = "network"
)

// Workloads a scenario can drive.
const (
	// WorkloadMixed mixes the users' writes: peer info and reputation
	// updates, topic log appends, orchestrator workloads with CAS, deletes
	// and re-creates.
	WorkloadMixed = "mixed"
	// WorkloadPeers writes only /peers/{id}/info and /peers/{id}/reputation.
	WorkloadPeers = "peers"
	// WorkloadTopics appends only to topic logs.
	WorkloadTopics = "topics"
	// WorkloadCAS has every writer compare-and-set a few hot
	// /workloads/{n} keys, deleting and re-creating some.
	WorkloadCAS = "cas"
)

// ErrScenario reports a scenario that cannot run.
var ErrScenario = errors.New("sim: invalid scenario")

// Duration is a time.Duration written as "150ms" or "2m" in scenario files.
type Duration time.Duration

// UnmarshalText implements encoding.TextUnmarshaler (TOML and JSON strings).
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Partition splits the peers in two for a while.
type Partition struct {
	// At is when the network splits, Heal when it joins again (both
	// measured from the start of the run).
	At   Duration `json:"at" toml:"at"`
	Heal Duration `json:"heal" toml:"heal"`
	// Fraction of the peers on the first side; 0 means one half.
	Fraction float64 `json:"fraction,omitempty" toml:"fraction"`
}

// Restart crashes peers and brings them back with their store.
type Restart struct {
	// Peers is how many peers crash (chosen from the seed).
	Peers int `json:"peers" toml:"peers"`
	// At is when the first crashes; the others follow at random times
	// within Spread.
	At     Duration `json:"at" toml:"at"`
	Spread Duration `json:"spread,omitempty" toml:"spread"`
	// Down is how long each stays down.
	Down Duration `json:"down" toml:"down"`
	// FromBackup restarts from a copy of the store taken Backup before
	// the crash, instead of the store as it was.
	FromBackup bool     `json:"from_backup,omitempty" toml:"from_backup"`
	Backup     Duration `json:"backup,omitempty" toml:"backup"`
}

// maxClockSkew is the replicas' allowed clock skew (replica.Config's
// default).
const maxClockSkew = time.Minute

// Skew sets the clocks of a few writers far off, beyond what ClockSkew
// allows: the first Ahead writers run Offset ahead of the others, the next
// Behind writers Offset behind. A clock more than the replicas' allowed
// skew (a minute) ahead has its writes left for later by the others until
// their clocks come within a minute of the stamps.
type Skew struct {
	Ahead  int      `json:"ahead,omitempty" toml:"ahead"`
	Behind int      `json:"behind,omitempty" toml:"behind"`
	Offset Duration `json:"offset" toml:"offset"`
}

// Hostile makes the last Peers peers attackers (model level): besides
// running an honest replica, each sends its mesh, every Every, a message of
// three changes chosen from the acknowledged writes — one with its value
// tampered with (its signature no longer holds), one claiming a newer
// version in another peer's name but signed with the attacker's key, and
// an old version replayed with its valid signature.
type Hostile struct {
	Peers int      `json:"peers" toml:"peers"`
	Every Duration `json:"every,omitempty" toml:"every"`
}

// Churn has peers leave for good and new, empty peers join while the
// workload runs.
type Churn struct {
	Leave int `json:"leave" toml:"leave"`
	Join  int `json:"join" toml:"join"`
}

// Scenario is one simulation run: peers, workload, faults. Zero fields take
// the defaults of DefaultScenario.
type Scenario struct {
	Name  string `json:"name,omitempty" toml:"name"`
	Level string `json:"level" toml:"level"`
	Peers int    `json:"peers" toml:"peers"`
	Seed  uint64 `json:"seed" toml:"seed"`
	// Store is the peers' local backend at the network level: memory or
	// sqlite (in a temporary directory). The model level uses memory.
	Store string `json:"store,omitempty" toml:"store"`

	// Workload, Writes in total spread evenly over Window, by Writers
	// distinct peers (0: every peer). HotKeys is how many /workloads keys
	// CAS writers contend on; ValueSize the bytes of each value.
	Workload  string   `json:"workload" toml:"workload"`
	Writes    int      `json:"writes" toml:"writes"`
	Window    Duration `json:"window" toml:"window"`
	Writers   int      `json:"writers,omitempty" toml:"writers"`
	HotKeys   int      `json:"hot_keys,omitempty" toml:"hot_keys"`
	ValueSize int      `json:"value_size,omitempty" toml:"value_size"`
	// Settle is how long the run goes on after the last write and fault,
	// for catch-up to finish before the checks.
	Settle Duration `json:"settle" toml:"settle"`

	// Links: one-way latency plus uniform jitter, bandwidth in bytes per
	// second (0: unlimited), and the per-message faults injected at the
	// broadcaster seam: loss, duplication and reordering probabilities.
	// Reordered messages are held back by up to ReorderDelay.
	Latency      Duration `json:"latency" toml:"latency"`
	Jitter       Duration `json:"jitter,omitempty" toml:"jitter"`
	Bandwidth    int      `json:"bandwidth,omitempty" toml:"bandwidth"`
	Loss         float64  `json:"loss,omitempty" toml:"loss"`
	Duplicate    float64  `json:"duplicate,omitempty" toml:"duplicate"`
	Reorder      float64  `json:"reorder,omitempty" toml:"reorder"`
	ReorderDelay Duration `json:"reorder_delay,omitempty" toml:"reorder_delay"`
	// ClockSkew bounds each peer's wall-clock offset (uniform in ±ClockSkew).
	ClockSkew Duration `json:"clock_skew,omitempty" toml:"clock_skew"`
	// Skew, if set, puts a few writers' clocks minutes off.
	Skew *Skew `json:"skew,omitempty" toml:"skew"`

	// Fanout is each peer's mesh degree at the model level (gossipsub's D).
	Fanout int `json:"fanout,omitempty" toml:"fanout"`
	// SyncInterval is the mean time between a peer's catch-up rounds, each
	// with SyncFanout random peers.
	SyncInterval Duration `json:"sync_interval" toml:"sync_interval"`
	SyncFanout   int      `json:"sync_fanout,omitempty" toml:"sync_fanout"`

	Partition *Partition `json:"partition,omitempty" toml:"partition"`
	Restart   *Restart   `json:"restart,omitempty" toml:"restart"`
	Churn     *Churn     `json:"churn,omitempty" toml:"churn"`
	Hostile   *Hostile   `json:"hostile,omitempty" toml:"hostile"`

	// Watchers is how many peers keep a watch on every key for the whole
	// run; their streams are checked at the end.
	Watchers int `json:"watchers,omitempty" toml:"watchers"`
	// Sample is the interval of the convergence curve.
	Sample Duration `json:"sample,omitempty" toml:"sample"`
}

// DefaultScenario returns the defaults: 50 model peers, a mixed workload of
// 1,000 writes over 10 s, 20 ms links, catch-up every 2 s.
func DefaultScenario() Scenario {
	return Scenario{
		Level:        LevelModel,
		Peers:        50,
		Seed:         1,
		Store:        "memory",
		Workload:     WorkloadMixed,
		Writes:       1000,
		Window:       Duration(10 * time.Second),
		HotKeys:      8,
		ValueSize:    64,
		Settle:       Duration(20 * time.Second),
		Latency:      Duration(20 * time.Millisecond),
		Jitter:       Duration(10 * time.Millisecond),
		ReorderDelay: Duration(200 * time.Millisecond),
		Fanout:       6,
		SyncInterval: Duration(2 * time.Second),
		SyncFanout:   2,
		Watchers:     3,
		Sample:       Duration(250 * time.Millisecond),
	}
}

// withDefaults fills the zero fields from DefaultScenario.
func (s Scenario) withDefaults() Scenario {
	d := DefaultScenario()
	if s.Level == "" {
		s.Level = d.Level
	}
	if s.Store == "" {
		s.Store = d.Store
	}
	if s.Workload == "" {
		s.Workload = d.Workload
	}
	if s.HotKeys == 0 {
		s.HotKeys = d.HotKeys
	}
	if s.ValueSize == 0 {
		s.ValueSize = d.ValueSize
	}
	if s.ReorderDelay == 0 {
		s.ReorderDelay = d.ReorderDelay
	}
	if s.Fanout == 0 {
		s.Fanout = d.Fanout
	}
	if s.SyncInterval == 0 {
		s.SyncInterval = d.SyncInterval
	}
	if s.SyncFanout == 0 {
		s.SyncFanout = d.SyncFanout
	}
	if s.Sample == 0 {
		s.Sample = d.Sample
	}
	if s.Writers == 0 || s.Writers > s.Peers {
		s.Writers = s.Peers
	}
	return s
}

// Validate checks the scenario.
func (s Scenario) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrScenario, fmt.Sprintf(format, a...))
	}
	switch s.Level {
	case LevelModel, LevelNetwork, "":
	default:
		return bad("level %q: want %s or %s", s.Level, LevelModel, LevelNetwork)
	}
	switch s.Workload {
	case WorkloadMixed, WorkloadPeers, WorkloadTopics, WorkloadCAS, "":
	default:
		return bad("workload %q: want mixed, peers, topics or cas", s.Workload)
	}
	switch s.Store {
	case "memory", "sqlite", "":
	default:
		return bad("store %q: want memory or sqlite", s.Store)
	}
	if s.Store == "sqlite" && s.Level != LevelNetwork {
		return bad("store sqlite is for the network level")
	}
	if s.Peers < 2 {
		return bad("peers %d: need at least 2", s.Peers)
	}
	if s.Writes < 0 || s.Writers < 0 || s.HotKeys < 0 || s.ValueSize < 0 || s.Bandwidth < 0 ||
		s.Fanout < 0 || s.SyncFanout < 0 || s.Watchers < 0 {
		return bad("counts must not be negative")
	}
	if s.Window < 0 || s.Settle < 0 || s.Latency < 0 || s.Jitter < 0 || s.ReorderDelay < 0 ||
		s.ClockSkew < 0 || s.SyncInterval < 0 || s.Sample < 0 {
		return bad("durations must not be negative")
	}
	for name, p := range map[string]float64{"loss": s.Loss, "duplicate": s.Duplicate, "reorder": s.Reorder} {
		if p < 0 || p >= 1 {
			return bad("%s %v: want a probability in [0, 1)", name, p)
		}
	}
	if s.ClockSkew > Duration(30*time.Second) {
		return bad("clock skew %v: at most 30s (replicas cap skew at one minute)", s.ClockSkew.D())
	}
	if k := s.Skew; k != nil {
		writers := s.Writers
		if writers == 0 {
			writers = s.Peers
		}
		if k.Ahead < 0 || k.Behind < 0 || k.Ahead+k.Behind > writers {
			return bad("skew of %d ahead and %d behind: want at most the %d writers", k.Ahead, k.Behind, writers)
		}
		if k.Offset <= 0 || k.Offset > Duration(time.Hour) {
			return bad("skew offset %v: want (0, 1h]", k.Offset.D())
		}
		spread := 2 * s.ClockSkew.D()
		if k.Ahead > 0 {
			spread += k.Offset.D()
		}
		if k.Behind > 0 {
			spread += k.Offset.D()
		}
		if s.Level != LevelNetwork && spread >= maxClockSkew {
			// A replica leaves changes stamped beyond the skew for later
			// but its watermarks move past them, so catch-up does not send
			// them again: only the network level's fingerprint repair does.
			return bad("clocks %v apart: the model level, which has no fingerprint repair, needs them within %v (the network level takes any)", spread, maxClockSkew)
		}
	}
	if h := s.Hostile; h != nil {
		if s.Level == LevelNetwork {
			return bad("hostile peers are for the model level")
		}
		if h.Peers <= 0 || h.Peers > s.Peers-max(s.Writers, min(s.Watchers, s.Peers)) {
			return bad("hostile %d peers of %d: want at least one, and none of the writers or watchers", h.Peers, s.Peers)
		}
		if h.Every < 0 {
			return bad("durations must not be negative")
		}
	}
	if p := s.Partition; p != nil {
		if p.Heal <= p.At {
			return bad("partition heals at %v, before it starts at %v", p.Heal.D(), p.At.D())
		}
		if p.Fraction < 0 || p.Fraction >= 1 {
			return bad("partition fraction %v: want (0, 1)", p.Fraction)
		}
	}
	if r := s.Restart; r != nil {
		if r.Peers < 0 || r.Peers >= s.Peers {
			return bad("restart %d peers of %d", r.Peers, s.Peers)
		}
		if r.Down <= 0 || r.At < 0 || r.Spread < 0 || r.Backup < 0 {
			return bad("restart needs a positive down time")
		}
		if s.Level == LevelNetwork {
			return bad("restarts are for the model level")
		}
	}
	if c := s.Churn; c != nil {
		if c.Leave < 0 || c.Join < 0 || c.Leave >= s.Peers {
			return bad("churn leave %d join %d of %d peers", c.Leave, c.Join, s.Peers)
		}
		if s.Level == LevelNetwork {
			return bad("churn is for the model level")
		}
	}
	return nil
}

// LoadScenario reads a scenario from a TOML (.toml) or JSON (.json) file.
// Fields the file leaves out take the defaults; unknown fields are an error.
func LoadScenario(path string) (Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Scenario{}, fmt.Errorf("sim: %w", err)
	}
	s := DefaultScenario()
	switch strings.ToLower(filepath.Ext(path)) {
	case ".toml":
		md, err := toml.Decode(string(data), &s)
		if err != nil {
			return Scenario{}, fmt.Errorf("%w: %s: %v", ErrScenario, path, err)
		}
		if und := md.Undecoded(); len(und) > 0 {
			return Scenario{}, fmt.Errorf("%w: %s: unknown field %q", ErrScenario, path, und[0].String())
		}
	case ".json":
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			return Scenario{}, fmt.Errorf("%w: %s: %v", ErrScenario, path, err)
		}
	default:
		return Scenario{}, fmt.Errorf("%w: %s: want a .toml or .json file", ErrScenario, path)
	}
	if err := s.Validate(); err != nil {
		return Scenario{}, err
	}
	return s, nil
}
