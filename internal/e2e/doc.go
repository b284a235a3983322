// Package e2e holds end-to-end tests of whole qim deployments: real
// servers, real clients, and the networks between them (a UDP relay that
// emulates delay, loss and NAT rebinding, and network namespaces with real
// interfaces).
package e2e
