package httpapi

import (
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// TestSignatureVector checks the test vector of docs/HTTP.md section 2.2,
// which a backend in another language checks its signing code with.
func TestSignatureVector(t *testing.T) {
	secret := make([]byte, 32)
	for i := range secret {
		secret[i] = byte(i)
	}
	body := []byte(`{"to_user":"bob","text":"hi","system":true}`)
	sum := sha256.Sum256(body)
	const wantSum = "124180a9afbe0a8c9cd486a0a3bff3ecfca5e497f7ce7aa6fdadd9b2c75367ad"
	if got := hex.EncodeToString(sum[:]); got != wantSum {
		t.Errorf("body SHA-256 = %s, want %s", got, wantSum)
	}
	const want = "8b6009343bf3bd34456bd0762c36abb409866224d0d5e8a60a4cf867ef363c50"
	if got := Sign(secret, StringToSign("POST", "/v1/messages", "demo/demo", "", "1700000000", "nonce-0001", sum[:])); got != want {
		t.Errorf("signature = %s, want %s", got, want)
	}
	const wantKey = "k1.-1cNWCrdeEBXVXkJRR9vqfoqV7IzZ46K1Xnt79rYvEo"
	if got := APIKey(secret); got != wantKey {
		t.Errorf("API key = %s, want %s", got, wantKey)
	}
}
