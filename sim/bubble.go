package sim

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"
)

// RunNetwork runs a network-level scenario in a testing/synctest bubble of
// its own, for callers outside a test (the peerstate sim command). The
// bubble needs a *testing.T; it comes from testing.RunTests with the one
// test that runs the scenario. A test calls Run inside synctest.Test instead.
func RunNetwork(ctx context.Context, sc Scenario, opts Options) (*Report, error) {
	sc = sc.withDefaults()
	sc.Level = LevelNetwork
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	var rep *Report
	var err error
	start := time.Now()
	testing.Init()
	ok := testing.RunTests(func(string, string) (bool, error) { return true, nil }, []testing.InternalTest{{
		Name: "sim",
		F: func(t *testing.T) {
			synctest.Test(t, func(*testing.T) {
				rep, err = runNetwork(context.WithoutCancel(ctx), sc, opts.Progress)
			})
		},
	}})
	if err == nil && !ok {
		err = fmt.Errorf("sim: the network run failed")
	}
	if err != nil {
		return nil, err
	}
	rep.Resources.Wall = time.Since(start)
	return rep, nil
}
