// Package sim runs deterministic many-peer simulations of peerstate with
// faults, checks the replicated state at the end and reports figures.
//
// A Scenario runs at one of two levels:
//
//   - model: every peer runs the real replica code over an in-memory store;
//     a discrete-event message layer stands in for libp2p: gossipsub-like
//     fan-out over a random mesh, per-link latency, jitter and bandwidth,
//     loss, duplication, reordering, partitions, crashes, restarts from the
//     store or from an old backup, clock skew and churn, plus periodic
//     catch-up between peers through the replica's own catch-up calls.
//     Time is virtual and every choice comes from the seed, so a run is
//     exactly reproducible; 10,000 peers run on one machine.
//   - network: every peer runs the real stack — replica, gossip (pubsub push
//     and the catch-up stream protocol) and a libp2p host — on go-libp2p's
//     simulated network (x/simlibp2p over github.com/marcopolo/simnet),
//     inside a testing/synctest bubble in tests, so time is virtual too
//     (outside a test, RunNetwork runs the same peers in real time).
//
// After every run the checks compare all peers' state fingerprints, look for
// acknowledged writes lost and deleted keys come back, and verify the watch
// streams of a few peers. The figures cover write-to-visible latency,
// messages and bytes per update, convergence time after the last write and
// after a heal, and catch-up of restarted peers.
package sim

import (
	"context"
	"time"
)

// Options are the per-run knobs that do not change the outcome.
type Options struct {
	// Progress, if set, is called now and then with the virtual time
	// reached and the run's total.
	Progress func(done, total time.Duration)
}

// Run runs a scenario. At the network level it runs in the caller's
// testing/synctest bubble, or in a bubble of its own (RunNetwork) if the
// caller is in none. It returns the report; a run whose checks fail still
// returns its report, with Checks.Failures set.
func Run(ctx context.Context, sc Scenario, opts Options) (*Report, error) {
	sc = sc.withDefaults()
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	if sc.Level == LevelNetwork {
		if !inBubble() {
			return RunNetwork(ctx, sc, opts)
		}
		return runNetwork(ctx, ctx, sc, opts.Progress)
	}
	return runModel(ctx, sc, opts.Progress)
}
