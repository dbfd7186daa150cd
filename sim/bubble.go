package sim

import (
	"context"
	"time"
)

// RunNetwork runs a network-level scenario outside a test, as the peerstate
// sim command does. testing/synctest needs a *testing.T for its bubble, so
// here the simulated network runs in real time: latencies and timers are
// real, the figures vary from run to run, and a run takes as long as its
// scenario (plus the time the machine needs). Tests call Run inside
// synctest.Test instead, where time is virtual.
func RunNetwork(ctx context.Context, sc Scenario, opts Options) (*Report, error) {
	sc = sc.withDefaults()
	sc.Level = LevelNetwork
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	rep, err := runNetwork(ctx, ctx, sc, opts.Progress)
	if err != nil {
		return nil, err
	}
	rep.Resources.Wall = time.Since(start)
	return rep, nil
}
