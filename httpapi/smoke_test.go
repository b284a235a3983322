package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/qim-im/qim/auth"
	"github.com/qim-im/qim/core"
	"github.com/qim-im/qim/store/pebblestore"
)

type oneApp struct{ secret []byte }

func (a oneApp) AppSecret(org, appkey string) ([]byte, bool) {
	return a.secret, org == "demo" && appkey == "demo"
}

// TestSmoke sends a message over HTTPS and reads it back, as a quick
// check of the handler alone; the endpoint tests run against qimd.
func TestSmoke(t *testing.T) {
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	apps := oneApp{[]byte("0123456789abcdef0123456789abcdef")}
	hub, err := core.NewHub(core.Config{Store: st, Apps: apps})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	h, err := New(Config{Hub: hub, Apps: apps})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	hc := srv.Client()
	do := func(method, path, user, authz, body string) (int, map[string]any) {
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewBufferString(body))
		req.Header.Set("Qim-App", "demo/demo")
		if user != "" {
			req.Header.Set("Qim-User", user)
		}
		req.Header.Set("Authorization", authz)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s %s: %d %q", method, path, resp.StatusCode, b)
		}
		t.Logf("%s %s → %d %s", method, path, resp.StatusCode, b)
		return resp.StatusCode, m
	}
	key := "Bearer " + APIKey(apps.secret)
	code, m := do("POST", "/v1/tokens", "", key, `{"user":"alice"}`)
	if code != 200 {
		t.Fatalf("mint: %d %v", code, m)
	}
	tok := "Bearer " + m["token"].(string)
	if err := auth.Verify(apps.secret, "demo", "demo", "alice", m["token"].(string), time.Now()); err != nil {
		t.Fatal(err)
	}
	code, m = do("POST", "/v1/messages", "alice", tok, `{"to_user":"bob","text":"hi","client_msg_id":"c1"}`)
	if code != 200 || m["seq"] != "1" {
		t.Fatalf("send: %d %v", code, m)
	}
	code, m = do("POST", "/v1/messages", "alice", tok, `{"to_user":"bob","text":"hi","client_msg_id":"c1"}`)
	if code != 200 || m["duplicate"] != true {
		t.Fatalf("resend: %d %v", code, m)
	}
	code, m = do("GET", "/v1/conversations/u:alice:bob/messages", "alice", tok, "")
	if code != 200 || len(m["messages"].([]any)) != 1 {
		t.Fatalf("history: %d %v", code, m)
	}
	code, m = do("GET", "/v1/conversations", "alice", tok, "")
	if code != 200 {
		t.Fatalf("inbox: %d %v", code, m)
	}
	code, m = do("GET", "/v1/conversations/u:bob:carol/messages", "alice", tok, "")
	if code != 403 || m["code"] != "FORBIDDEN" {
		t.Fatalf("foreign history: %d %v", code, m)
	}
	code, m = do("POST", "/v1/groups", "alice", tok, `{"name":"g"}`)
	if code != 201 {
		t.Fatalf("create group: %d %v", code, m)
	}
	code, _ = do("POST", "/v1/messages", "alice", tok, `{"to_user":"bob","text":"hi","bogus":1}`)
	if code != 400 {
		t.Fatalf("unknown field: %d", code)
	}
}
