package auth

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

var (
	testSecret = []byte("0123456789abcdef0123456789abcdef")
	testNow    = time.Unix(1_700_000_000, 0)
	testExpiry = testNow.Add(time.Hour)
)

// TestMintKnownAnswer pins the format against a vector computed outside Go
// (Python hmac + base64.urlsafe_b64encode); it is the example in the package
// documentation.
func TestMintKnownAnswer(t *testing.T) {
	const want = "v1.1700000000.928-wk6d-1QSboOBuHQk-VRCFCrgB1seH9rFU5iDGd8"
	got := Mint([]byte("secret"), "acme", "chat", "alice", time.Unix(1700000000, 0))
	if got != want {
		t.Fatalf("Mint = %q, want %q", got, want)
	}
}

func TestMintShape(t *testing.T) {
	for _, tt := range []struct {
		name   string
		expiry time.Time
		want   string // expected "v1.<expiry>." prefix
	}{
		{"whole seconds", time.Unix(1234, 0), "v1.1234."},
		{"truncates fraction", time.Unix(1234, 999_999_999), "v1.1234."},
		{"epoch", time.Unix(0, 0), "v1.0."},
		{"before 1970 clamps to 0", time.Unix(-5, 0), "v1.0."},
		{"far future", time.Unix(1<<62, 0), "v1.4611686018427387904."},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tok := Mint(testSecret, "o", "a", "u", tt.expiry)
			if !strings.HasPrefix(tok, tt.want) {
				t.Fatalf("Mint = %q, want prefix %q", tok, tt.want)
			}
			if mac := tok[len(tt.want):]; len(mac) != macTextLen {
				t.Fatalf("mac %q has length %d, want %d", mac, len(mac), macTextLen)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	valid := Mint(testSecret, "acme", "chat", "alice", testExpiry)
	mac := valid[strings.LastIndexByte(valid, '.')+1:]
	// otherMAC differs from mac in its first character, which carries six
	// full bits of the tag.
	otherMAC := string(flip(mac[0])) + mac[1:]

	// Zero fields stand for testSecret, org "acme", appkey "chat", user
	// "alice" and testNow.
	for _, tt := range []struct {
		name              string
		secret            []byte
		org, appkey, user string
		token             string
		now               time.Time
		want              error
	}{
		{name: "valid", token: valid, want: nil},
		{name: "valid just before expiry", token: valid, now: testExpiry.Add(-time.Nanosecond), want: nil},
		{name: "expired at expiry", token: valid, now: testExpiry, want: ErrExpired},
		{name: "expired after expiry", token: valid, now: testExpiry.Add(time.Nanosecond), want: ErrExpired},
		{name: "expired long ago", token: Mint(testSecret, "acme", "chat", "alice", testNow.Add(-24*time.Hour)), want: ErrExpired},
		{name: "minted before 1970", token: Mint(testSecret, "acme", "chat", "alice", time.Unix(-100, 0)), want: ErrExpired},

		{name: "other user", user: "mallory", token: valid, want: ErrBadSignature},
		{name: "other org", org: "evil", token: valid, want: ErrBadSignature},
		{name: "other appkey", appkey: "chat2", token: valid, want: ErrBadSignature},
		{name: "other secret", secret: []byte("another secret of 32 bytes......"), token: valid, want: ErrBadSignature},
		{name: "empty secret", secret: []byte{}, token: Mint(nil, "acme", "chat", "alice", testExpiry), want: ErrBadSignature},
		{name: "NUL in id", user: "alice\x00", token: Mint(testSecret, "acme", "chat", "alice\x00", testExpiry), want: ErrBadSignature},
		{name: "altered mac", token: "v1." + expText(testExpiry) + "." + otherMAC, want: ErrBadSignature},
		{name: "expiry extended", token: "v1." + expText(testExpiry.Add(time.Hour)) + "." + mac, want: ErrBadSignature},
		// An altered expiry in the past must not reveal that it is expired.
		{name: "expiry moved into past", token: "v1." + expText(testNow.Add(-time.Hour)) + "." + mac, want: ErrBadSignature},
		{name: "expired and altered", token: "v1.1." + mac, want: ErrBadSignature},

		{name: "empty", token: "", want: ErrMalformed},
		{name: "garbage", token: "garbage", want: ErrMalformed},
		{name: "version 2", token: "v2." + expText(testExpiry) + "." + mac, want: ErrMalformed},
		{name: "version upper case", token: "V1." + expText(testExpiry) + "." + mac, want: ErrMalformed},
		{name: "v2 dots", token: "v2..", want: ErrMalformed},
		{name: "only prefix", token: "v1.", want: ErrMalformed},
		{name: "empty fields", token: "v1..", want: ErrMalformed},
		{name: "no mac", token: "v1." + expText(testExpiry), want: ErrMalformed},
		{name: "empty mac", token: "v1." + expText(testExpiry) + ".", want: ErrMalformed},
		{name: "empty expiry", token: "v1.." + mac, want: ErrMalformed},
		{name: "extra field", token: valid + ".x", want: ErrMalformed},
		{name: "leading space", token: " " + valid, want: ErrMalformed},
		{name: "trailing newline", token: valid + "\n", want: ErrMalformed},
		{name: "expiry not a number", token: "v1.abc." + mac, want: ErrMalformed},
		{name: "expiry negative", token: "v1.-5." + mac, want: ErrMalformed},
		{name: "expiry plus sign", token: "v1.+" + expText(testExpiry) + "." + mac, want: ErrMalformed},
		{name: "expiry leading zero", token: "v1.0" + expText(testExpiry) + "." + mac, want: ErrMalformed},
		{name: "expiry overflows int64", token: "v1.9223372036854775808." + mac, want: ErrMalformed},
		{name: "expiry hex", token: "v1.0x10." + mac, want: ErrMalformed},
		{name: "mac padded", token: valid + "=", want: ErrMalformed},
		{name: "mac short", token: valid[:len(valid)-1], want: ErrMalformed},
		{name: "mac long", token: valid + "A", want: ErrMalformed},
		{name: "mac standard alphabet", token: "v1." + expText(testExpiry) + "." + strings.Repeat("+", macTextLen), want: ErrMalformed},
		{name: "mac non-zero trailing bits", token: "v1." + expText(testExpiry) + "." + strings.Repeat("A", macTextLen-1) + "B", want: ErrMalformed},
		{name: "huge", token: "v1." + strings.Repeat("1", maxTokenLen) + "." + mac, want: ErrMalformed},
		{name: "huge garbage", token: strings.Repeat("x", 1<<20), want: ErrMalformed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			secret := testSecret
			if tt.secret != nil {
				secret = tt.secret
			}
			org, appkey, user := "acme", "chat", "alice"
			if tt.org != "" {
				org = tt.org
			}
			if tt.appkey != "" {
				appkey = tt.appkey
			}
			if tt.user != "" {
				user = tt.user
			}
			now := testNow
			if !tt.now.IsZero() {
				now = tt.now
			}
			if err := Verify(secret, org, appkey, user, tt.token, now); err != tt.want {
				t.Fatalf("Verify(%q) = %v, want %v", tt.token, err, tt.want)
			}
		})
	}
}

func TestVerifyAcceptsOnlyCanonicalToken(t *testing.T) {
	// Every tag has one text form: changing the last character's unused
	// bits must not yield a second accepted token.
	valid := Mint(testSecret, "acme", "chat", "alice", testExpiry)
	for c := byte(0); c < 128; c++ {
		tok := valid[:len(valid)-1] + string(c)
		if tok == valid {
			continue
		}
		if err := Verify(testSecret, "acme", "chat", "alice", tok, testNow); err == nil {
			t.Fatalf("Verify accepted %q, a variant of %q", tok, valid)
		}
	}
}

func TestNewSecret(t *testing.T) {
	a, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != SecretSize || len(b) != SecretSize {
		t.Fatalf("secret lengths %d, %d, want %d", len(a), len(b), SecretSize)
	}
	if bytes.Equal(a, b) {
		t.Fatal("two secrets are equal")
	}
	tok := Mint(a, "o", "a", "u", testExpiry)
	if err := Verify(a, "o", "a", "u", tok, testNow); err != nil {
		t.Fatalf("Verify with fresh secret: %v", err)
	}
	if err := Verify(b, "o", "a", "u", tok, testNow); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("Verify with other fresh secret = %v, want %v", err, ErrBadSignature)
	}
}

func TestValidID(t *testing.T) {
	for _, tt := range []struct {
		id   string
		want bool
	}{
		{"alice", true},
		{"a", true},
		{"A-Z_a-z.0-9@", true},
		{"alice@example.com", true},
		{"dev-01.phone_2", true},
		{"...", true},
		{strings.Repeat("x", 64), true},
		{"", false},
		{strings.Repeat("x", 65), false},
		{"a:b", false},
		{"a/b", false},
		{"a b", false},
		{"a\x00b", false},
		{"a\nb", false},
		{"a+b", false},
		{"a\\b", false},
		{"ålice", false},
		{"alice\u200b", false},
	} {
		if got := ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
}

func FuzzVerify(f *testing.F) {
	valid := Mint(testSecret, "acme", "chat", "alice", testExpiry)
	f.Add(valid, "alice", int64(0))
	f.Add(valid, "alice", int64(7200))
	f.Add(valid, "bob", int64(0))
	f.Add("v1.0.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "alice", int64(0))
	f.Add("v1..", "", int64(0))
	f.Add("", "alice", int64(-1))
	f.Fuzz(func(t *testing.T, token, user string, offset int64) {
		err := Verify(testSecret, "acme", "chat", user, token, testNow.Add(time.Duration(offset)*time.Second))
		switch err {
		case nil:
			// No forgery is possible, so only the one minted token can
			// pass, and only for its own user.
			if token != valid || user != "alice" {
				t.Fatalf("Verify accepted token %q for user %q", token, user)
			}
		case ErrMalformed, ErrBadSignature, ErrExpired:
		default:
			t.Fatalf("Verify returned unexpected error %v", err)
		}
	})
}

// expText returns the expiry field Mint writes for t.
func expText(t time.Time) string {
	tok := Mint(nil, "", "", "", t)
	return tok[len("v1."):strings.LastIndexByte(tok, '.')]
}

// flip returns a different base64url character than c.
func flip(c byte) byte {
	if c == 'A' {
		return 'B'
	}
	return 'A'
}
