//go:build race

package reliability_test

// raceEnabled reports whether the test binary has the race detector; the
// qimd subprocess is then built with it too.
const raceEnabled = true
