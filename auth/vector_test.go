package auth

import (
	"encoding/hex"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestProtocolVector checks the token test vector printed in
// docs/PROTOCOL.md section 4, exactly as printed, so that the document an
// application backend in another language is written from cannot drift from
// the code: the hex secret (the content of the application's secret file)
// is decoded, and the token minted from it must be the one printed, and
// must verify.
func TestProtocolVector(t *testing.T) {
	doc, err := os.ReadFile("../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	field := func(name string) string {
		t.Helper()
		m := regexp.MustCompile(`(?m)^\s*`+name+`:\s+(\S+)\s*$`).FindAllSubmatch(doc, -1)
		if len(m) != 1 {
			t.Fatalf("docs/PROTOCOL.md has %d lines %q, want 1", len(m), name+":")
		}
		return string(m[0][1])
	}
	secret, err := hex.DecodeString(field("secret"))
	if err != nil {
		t.Fatalf("secret: %v", err)
	}
	org, appkey, user, token := field("org"), field("appkey"), field("user"), field("token")
	exp, err := strconv.ParseInt(field("expiry"), 10, 64)
	if err != nil {
		t.Fatalf("expiry: %v", err)
	}
	if got := Mint(secret, org, appkey, user, time.Unix(exp, 0)); got != token {
		t.Fatalf("Mint = %q, the document says %q", got, token)
	}
	if err := Verify(secret, org, appkey, user, token, time.Unix(exp-1, 0)); err != nil {
		t.Fatalf("Verify before expiry: %v", err)
	}
	if err := Verify(secret, org, appkey, user, token, time.Unix(exp, 0)); err != ErrExpired {
		t.Fatalf("Verify at expiry: %v, want ErrExpired", err)
	}
	// The key is the decoded bytes, not the hex text.
	if got := Mint([]byte(field("secret")), org, appkey, user, time.Unix(exp, 0)); got == token {
		t.Fatal("the hex text as key gives the same token")
	}
}
