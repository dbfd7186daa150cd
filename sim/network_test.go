package sim

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestNetQuick(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sc := DefaultScenario()
		sc.Level = LevelNetwork
		sc.Peers = 10
		sc.Writes = 100
		sc.Settle = Duration(10 * time.Second)
		start := time.Now()
		rep, err := Run(context.Background(), sc, Options{})
		if err != nil {
			t.Fatal(err)
		}
		f := rep.Figures
		f.Curve, f.Quantiles = nil, nil
		t.Logf("%+v\n%+v virtual %v", f, rep.Checks, time.Since(start))
	})
}
