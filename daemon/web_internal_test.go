package daemon

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestTooEarly checks which requests tooEarly turns away: those of unsafe
// methods that arrived before the handshake completed (0-RTT; quicsrv's
// TestHTTP3EarlyData shows such requests reach the handler so).
func TestTooEarly(t *testing.T) {
	for _, tt := range []struct {
		method   string
		complete bool
		want     int
	}{
		{http.MethodGet, false, http.StatusOK},
		{http.MethodHead, false, http.StatusOK},
		{http.MethodOptions, false, http.StatusOK},
		{http.MethodPost, false, http.StatusTooEarly},
		{http.MethodPut, false, http.StatusTooEarly},
		{http.MethodDelete, false, http.StatusTooEarly},
		{http.MethodPost, true, http.StatusOK},
	} {
		h := tooEarly(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		r := httptest.NewRequest(tt.method, "https://localhost/", nil)
		r.TLS = &tls.ConnectionState{HandshakeComplete: tt.complete}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tt.want {
			t.Errorf("%s, handshake complete %v: %d, want %d", tt.method, tt.complete, w.Code, tt.want)
		}
	}
}

// TestHTTPErrorLog checks that the HTTPS server's failed TLS handshakes
// are logged at debug level only, and its other errors at warn level.
func TestHTTPErrorLog(t *testing.T) {
	for _, tt := range []struct {
		level      slog.Level
		handshakes bool // logged
	}{
		{slog.LevelDebug, true},
		{slog.LevelInfo, false},
	} {
		var buf bytes.Buffer
		l := slog.NewLogLogger(httpErrorLog{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: tt.level})}, slog.LevelWarn)
		l.Print("http: TLS handshake error from 192.0.2.1:1234: EOF")
		l.Print("http: panic serving 192.0.2.1:1234: boom")
		out := buf.String()
		if got := strings.Contains(out, "level=DEBUG") && strings.Contains(out, "TLS handshake error"); got != tt.handshakes {
			t.Errorf("at %v: handshake error logged at debug: %v, want %v:\n%s", tt.level, got, tt.handshakes, out)
		}
		if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "panic serving") {
			t.Errorf("at %v: other error not logged at warn:\n%s", tt.level, out)
		}
	}
}
