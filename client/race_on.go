//go:build race

package client

// raceDetector reports whether the race detector is on (see openControl).
const raceDetector = true
