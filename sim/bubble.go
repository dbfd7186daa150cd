package sim

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// RunNetwork runs a network-level scenario outside a test, as the peerstate
// sim command does, in virtual time like the suite: inside a
// testing/synctest bubble, so the run takes the machine's time rather than
// the scenario's, and a seed gives the figures it gives in the suite.
//
// A bubble is made only by synctest.Test, which needs the *testing.T of a
// running test. RunNetwork therefore starts the testing package's runner
// (testing.MainStart, with no flags parsed from the command line, no
// profiles and no coverage) with one test that runs the scenario in
// synctest.Test. MainStart is meant for the main function go test
// generates and is not under the Go 1 compatibility promise: a Go release
// that changes it breaks this file at compile time, not at run time. The
// runner prints PASS or FAIL on standard output, so RunNetwork points
// os.Stdout at the null device while it runs.
//
// Inside a running test the runner cannot be started again: there, call
// Run within synctest.Test, as the suite does; RunNetwork returns an error.
// It runs one scenario at a time.
func RunNetwork(ctx context.Context, sc Scenario, opts Options) (*Report, error) {
	sc = sc.withDefaults()
	sc.Level = LevelNetwork
	if err := sc.Validate(); err != nil {
		return nil, err
	}
	if testing.Testing() && flag.Parsed() {
		return nil, errors.New("sim: RunNetwork cannot run inside a test; run Run inside synctest.Test")
	}
	bubbleMu.Lock()
	defer bubbleMu.Unlock()

	var rep *Report
	var err error
	var ran bool
	test := testing.InternalTest{Name: bubbleTest, F: func(t *testing.T) {
		if ran { // -test.count in a test binary's arguments
			return
		}
		ran = true
		start := time.Now()
		synctest.Test(t, func(*testing.T) {
			// The bubble's own context: one from outside could not be
			// waited on in here, so runNetwork polls ctx instead.
			rep, err = runNetwork(context.Background(), ctx, sc, opts.Progress)
		})
		if rep != nil {
			rep.Resources.Wall = time.Since(start)
		}
	}}
	m := testing.MainStart(bubbleDeps{}, []testing.InternalTest{test}, nil, nil, nil)
	if !flag.Parsed() {
		// The runner parses the command line unless it was parsed: the
		// arguments are the program's, not the runner's.
		if perr := flag.CommandLine.Parse(nil); perr != nil {
			return nil, fmt.Errorf("sim: %w", perr)
		}
	}
	stdout := os.Stdout
	null, nerr := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if nerr != nil {
		return nil, fmt.Errorf("sim: %w", nerr)
	}
	os.Stdout = null
	code := m.Run()
	os.Stdout = stdout
	_ = null.Close()
	switch {
	case err != nil:
		return nil, err
	case rep == nil:
		return nil, fmt.Errorf("sim: the network run did not complete (test runner exit code %d)", code)
	}
	return rep, nil
}

const bubbleTest = "PeerstateSimNetwork"

// inBubble reports whether the caller runs in a synctest bubble: Wait
// panics outside one (and, inside, returns once the bubble's other
// goroutines are idle).
func inBubble() (in bool) {
	defer func() {
		if recover() != nil {
			in = false
		}
	}()
	synctest.Wait()
	return true
}

// bubbleMu keeps RunNetwork calls one at a time: the runner is
// process-wide state.
var bubbleMu sync.Mutex

// bubbleDeps is what testing.MainStart needs of go test's generated main,
// for a runner that runs bubbleTest only, with no profiles, coverage or
// fuzzing.
type bubbleDeps struct{}

func (bubbleDeps) ImportPath() string { return "github.com/univrs/peerstate/sim" }
func (bubbleDeps) ModulePath() string { return "github.com/univrs/peerstate" }

// MatchString selects bubbleTest for -test.run (and, if a test binary was
// given -test.skip, for that too: the run then reports it did not complete).
func (bubbleDeps) MatchString(_, name string) (bool, error) { return name == bubbleTest, nil }
func (bubbleDeps) SetPanicOnExit0(bool)                     {}
func (bubbleDeps) StartCPUProfile(io.Writer) error          { return nil }
func (bubbleDeps) StopCPUProfile()                          {}
func (bubbleDeps) StartTestLog(io.Writer)                   {}
func (bubbleDeps) StopTestLog() error                       { return nil }
func (bubbleDeps) WriteProfileTo(string, io.Writer, int) error {
	return nil
}
func (bubbleDeps) ResetCoverage()    {}
func (bubbleDeps) SnapshotCoverage() {}
func (bubbleDeps) InitRuntimeCoverage() (string, func(string, string) (string, error), func() float64) {
	return "", nil, nil
}

// fuzzEntry is the testing package's corpus entry type.
type fuzzEntry = struct {
	Parent     string
	Path       string
	Data       []byte
	Values     []any
	Generation int
	IsSeed     bool
}

var errNoFuzzing = errors.New("sim: no fuzzing")

func (bubbleDeps) CoordinateFuzzing(time.Duration, int64, time.Duration, int64, int, []fuzzEntry, []reflect.Type, string, string) error {
	return errNoFuzzing
}
func (bubbleDeps) RunFuzzWorker(func(fuzzEntry) error) error { return errNoFuzzing }
func (bubbleDeps) ReadCorpus(string, []reflect.Type) ([]fuzzEntry, error) {
	return nil, errNoFuzzing
}
func (bubbleDeps) CheckCorpus([]any, []reflect.Type) error { return errNoFuzzing }
