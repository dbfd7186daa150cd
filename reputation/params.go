package reputation

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"
)

// Event is one kind of observed behaviour.
type Event string

// The events a Book scores.
const (
	Valid      Event = "valid"       // a valid change received from the peer (applied or already known)
	Invalid    Event = "invalid"     // a message, frame or change that fails validation (malformed, oversized, bad key): the sender's fault
	Forged     Event = "forged"      // a change not signed by its origin, or a forged origin: the sender's fault
	Policy     Event = "policy"      // a validly signed change the write policy refused: the origin's fault
	SyncOK     Event = "sync-ok"     // a catch-up or repair session with it completed
	SyncFailed Event = "sync-failed" // a session with it failed (timeout, stream error)
	Abuse      Event = "abuse"       // it exceeded a per-peer limit (sessions, rate, bytes, deadline)
)

// Events returns every known event, good ones first.
func Events() []Event {
	return []Event{Valid, SyncOK, Invalid, Forged, Policy, SyncFailed, Abuse}
}

// Known reports whether e is one of the events above.
func (e Event) Known() bool {
	switch e {
	case Valid, Invalid, Forged, Policy, SyncOK, SyncFailed, Abuse:
		return true
	}
	return false
}

// Good reports whether e is good behaviour (its weight may only be ≥ 0);
// every other known event is bad (weight ≤ 0).
func (e Event) Good() bool { return e == Valid || e == SyncOK }

// State is what a peer's standing lets it do.
type State string

// The states, from best to worst.
const (
	Ok         State = "ok"         // everything allowed
	Graylisted State = "graylisted" // its gossip is ignored by pubsub
	Banned     State = "banned"     // disconnected and refused by the connection gater
)

// ErrInvalidParams is wrapped by every error of Params.Validate.
var ErrInvalidParams = errors.New("reputation: invalid params")

// Params tunes scoring. Build it with DefaultParams and adjust; Validate
// before use (New does).
type Params struct {
	// Weights is the score change per occurrence of each event. Good events
	// (Valid, SyncOK) must weigh ≥ 0, bad ones ≤ 0; a missing event weighs 0
	// (it is still counted).
	Weights map[Event]float64
	// UptimeWeight is the score earned per hour connected (≥ 0).
	UptimeWeight float64
	// SlowSync is the latency above which an observed session counts as
	// slow; 0 disables the penalty.
	SlowSync time.Duration
	// SlowSyncWeight is the score change per slow session (≤ 0).
	SlowSyncWeight float64
	// MaxScore caps the positive part: good behaviour cannot be banked
	// beyond it (> 0).
	MaxScore float64
	// MinScore floors the negative part, so recovery time is bounded
	// (< BanThreshold).
	MinScore float64
	// HalfLife is the half-life of both parts' exponential decay toward 0
	// (> 0).
	HalfLife time.Duration
	// GraylistThreshold: a score below it is Graylisted (< 0).
	GraylistThreshold float64
	// BanThreshold: a score below it is Banned (< GraylistThreshold).
	BanThreshold float64
	// StandingThreshold: a score at or above it gives a peer standing, as
	// an origin of changes: a newcomer's (below it) are verified at a
	// bounded rate, so that a fresh identity's flood cannot take the CPU
	// (gossip.Config.NewcomerRate). In [0, MaxScore]; 0 gives every peer
	// not in bad standing standing at once.
	StandingThreshold float64
	// FlushInterval is how often Run persists dirty records and re-evaluates
	// states (> 0).
	FlushInterval time.Duration
}

// DefaultParams returns the defaults; the package documentation explains
// them.
func DefaultParams() Params {
	return Params{
		Weights: map[Event]float64{
			Valid:      0.01,
			SyncOK:     0.1,
			Invalid:    -5,
			Forged:     -20,
			Policy:     -5,
			SyncFailed: -1,
			Abuse:      -10,
		},
		UptimeWeight:      1,
		SlowSync:          10 * time.Second,
		SlowSyncWeight:    -0.5,
		MaxScore:          10,
		MinScore:          -100,
		HalfLife:          time.Hour,
		GraylistThreshold: -9,
		BanThreshold:      -50,
		StandingThreshold: 1,
		FlushInterval:     10 * time.Second,
	}
}

// Validate reports every bad field at once; the error wraps
// ErrInvalidParams.
func (p Params) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrInvalidParams, field, fmt.Sprintf(format, args...)))
	}
	finite := func(field string, v float64) bool {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			bad(field, "%v is not a finite number", v)
			return false
		}
		return true
	}
	for _, e := range sortedEvents(p.Weights) {
		w := p.Weights[e]
		field := fmt.Sprintf("Weights[%q]", e)
		switch {
		case !e.Known():
			bad(field, "unknown event")
		case !finite(field, w):
		case e.Good() && w < 0:
			bad(field, "%v < 0: a good event cannot cost score", w)
		case !e.Good() && w > 0:
			bad(field, "%v > 0: a bad event cannot earn score", w)
		}
	}
	if finite("UptimeWeight", p.UptimeWeight) && p.UptimeWeight < 0 {
		bad("UptimeWeight", "%v < 0", p.UptimeWeight)
	}
	if p.SlowSync < 0 {
		bad("SlowSync", "%v < 0", p.SlowSync)
	}
	if finite("SlowSyncWeight", p.SlowSyncWeight) && p.SlowSyncWeight > 0 {
		bad("SlowSyncWeight", "%v > 0: a slow session cannot earn score", p.SlowSyncWeight)
	}
	if finite("MaxScore", p.MaxScore) && p.MaxScore <= 0 {
		bad("MaxScore", "%v ≤ 0", p.MaxScore)
	}
	if p.HalfLife <= 0 {
		bad("HalfLife", "%v ≤ 0", p.HalfLife)
	}
	if p.FlushInterval <= 0 {
		bad("FlushInterval", "%v ≤ 0", p.FlushInterval)
	}
	okMin := finite("MinScore", p.MinScore)
	okBan := finite("BanThreshold", p.BanThreshold)
	okGray := finite("GraylistThreshold", p.GraylistThreshold)
	if okGray && p.GraylistThreshold >= 0 {
		bad("GraylistThreshold", "%v ≥ 0: an unknown peer (score 0) would be graylisted", p.GraylistThreshold)
	}
	if okBan && okGray && p.BanThreshold >= p.GraylistThreshold {
		bad("BanThreshold", "%v ≥ GraylistThreshold %v", p.BanThreshold, p.GraylistThreshold)
	}
	if finite("StandingThreshold", p.StandingThreshold) && (p.StandingThreshold < 0 || p.StandingThreshold > p.MaxScore) {
		bad("StandingThreshold", "%v not in [0, MaxScore %v]: no peer could earn standing, or a fresh one has it", p.StandingThreshold, p.MaxScore)
	}
	if okMin && okBan && p.MinScore >= p.BanThreshold {
		bad("MinScore", "%v ≥ BanThreshold %v: no score could be banned", p.MinScore, p.BanThreshold)
	}
	return errors.Join(errs...)
}

// RecoveryTime is how long a score below BanThreshold takes, with no further
// events and while disconnected (no uptime), to decay back up to
// BanThreshold: HalfLife · log2(score / BanThreshold). Both parts decay by
// the same factor, so the whole score s decays as s·2^(-t/HalfLife) and
// reaches BanThreshold exactly then. It is 0 for a score at or above
// BanThreshold. Uptime only shortens it, and MinScore bounds it by
// HalfLife · log2(MinScore / BanThreshold).
func (p Params) RecoveryTime(score float64) time.Duration {
	if !(score < p.BanThreshold) || p.BanThreshold >= 0 {
		return 0
	}
	return time.Duration(math.Ceil(float64(p.HalfLife) * math.Log2(score/p.BanThreshold)))
}

// state maps a score to a state.
func (p Params) state(score float64) State {
	switch {
	case score < p.BanThreshold:
		return Banned
	case score < p.GraylistThreshold:
		return Graylisted
	}
	return Ok
}

func sortedEvents(m map[Event]float64) []Event { return slices.Sorted(maps.Keys(m)) }
