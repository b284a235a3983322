// Package reliability holds qim's scenario tests: crashes, lost
// acknowledgements, large backlogs, lossy networks, slow consumers and
// garbage on the wire. Each test runs real servers (real QUIC on 127.0.0.1,
// a real Pebble store, no mocks) and checks the promises of
// docs/PROTOCOL.md: a message acknowledged is stored once, gets a dense seq,
// and reaches every device once and in order.
//
// The package has no code of its own besides this comment. The results are
// recorded in docs/RELIABILITY.md. Longer variants run with QIM_SOAK=1.
package reliability
