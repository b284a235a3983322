//go:build race

package bench_test

// raceDetector is true in a binary built with -race.
const raceDetector = true
