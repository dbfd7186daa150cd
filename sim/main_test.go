package sim

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// runNetworkEnv makes the test binary a child that runs the scenario in
// the variable (JSON) with RunNetwork, as the peerstate sim command does,
// and prints the report: RunNetwork cannot run inside a running test.
const runNetworkEnv = "PEERSTATE_SIM_RUNNETWORK"

func TestMain(m *testing.M) {
	if js := os.Getenv(runNetworkEnv); js != "" {
		os.Exit(runNetworkChild(js))
	}
	goleak.VerifyTestMain(m)
}

func runNetworkChild(js string) int {
	var sc Scenario
	if err := json.Unmarshal([]byte(js), &sc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	rep, err := RunNetwork(context.Background(), sc, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := goleak.Find(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}
