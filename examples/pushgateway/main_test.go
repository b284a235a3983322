package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/push"
)

// TestGateway posts notifications to the example gateway over real HTTP:
// a signed one is logged once however often it comes, a badly signed one
// is refused.
func TestGateway(t *testing.T) {
	secret := []byte("gateway secret")
	var log bytes.Buffer
	srv := httptest.NewServer(&Gateway{Secret: secret, Logger: slog.New(slog.NewTextHandler(&log, nil))})
	defer srv.Close()
	post := func(body []byte, sig string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(push.SignatureHeader, sig)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	msg := &qimpb.Message{Id: 7, Seq: 3, FromUser: "alice", ToUser: "bob", Timestamp: time.Now().UnixMilli()}
	body, err := push.Marshal(push.Notification("demo/demo", "u:alice:bob", msg, "bob", true))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		body []byte
		sig  string
		want int
	}{
		{"signed", body, push.Sign(secret, body, time.Now()), http.StatusOK},
		{"the same again", body, push.Sign(secret, body, time.Now()), http.StatusOK},
		{"other secret", body, push.Sign([]byte("other"), body, time.Now()), http.StatusUnauthorized},
		{"unsigned", body, "", http.StatusUnauthorized},
		{"stale", body, push.Sign(secret, body, time.Now().Add(-time.Hour)), http.StatusUnauthorized},
		{"not a notification", []byte("{}"), push.Sign(secret, []byte("{}"), time.Now()), http.StatusBadRequest},
	} {
		if got := post(tt.body, tt.sig); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
	if n := strings.Count(log.String(), "msg=notification"); n != 1 {
		t.Errorf("logged %d notifications, want 1:\n%s", n, log.String())
	}
}
