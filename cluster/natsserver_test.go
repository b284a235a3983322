package cluster

import (
	"strings"
	"testing"
)

// TestStartServer: a standalone server has no cluster URL; bad addresses
// are refused before anything starts.
func TestStartServer(t *testing.T) {
	s, err := StartServer(ServerConfig{Listen: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	if !strings.HasPrefix(s.ClientURL(), "nats://127.0.0.1:") || strings.HasSuffix(s.ClientURL(), ":0") {
		t.Errorf("ClientURL() = %q", s.ClientURL())
	}
	if got := s.ClusterURL(); got != "" {
		t.Errorf("a standalone server has the cluster URL %q", got)
	}
	for _, tt := range []struct {
		name string
		cfg  ServerConfig
	}{
		{"no port", ServerConfig{Listen: "127.0.0.1"}},
		{"bad port", ServerConfig{Listen: "127.0.0.1:x"}},
		{"bad cluster port", ServerConfig{Listen: "127.0.0.1:0", ClusterListen: "127.0.0.1:70000"}},
		{"bad route", ServerConfig{Listen: "127.0.0.1:0", ClusterListen: "127.0.0.1:0", Routes: []string{"127.0.0.1:6222"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if s, err := StartServer(tt.cfg); err == nil {
				s.Shutdown()
				t.Fatal("started")
			}
		})
	}
}
