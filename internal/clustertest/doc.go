// Package clustertest holds the tests of qim as a cluster in one test
// process: three nodes (daemons, each with its own QUIC listener and its
// own embedded NATS server, the NATS servers clustered over loopback) on
// one PostgreSQL database, with devices spread over them. Every check
// reads what the receiving devices themselves received. The test with
// nodes killed by SIGKILL, which needs processes, is in
// internal/reliability (TestClusterKill9).
package clustertest
