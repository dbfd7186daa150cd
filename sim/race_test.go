//go:build race

package sim

// raceEnabled scales the suite's scenarios down under -race, which makes
// the replica code about ten times slower.
const raceEnabled = true
