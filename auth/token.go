// Package auth mints and verifies the bearer tokens that qim clients present
// when they connect, and checks the identifiers those tokens name.
//
// # Token format
//
// A token is ASCII text of the form
//
//	v1.<expiry>.<mac>
//
// where
//
//   - "v1" is the literal version tag. Any other tag is malformed.
//   - <expiry> is the moment the token stops being valid, as Unix time in
//     whole seconds, written in decimal with no sign and no leading zeros
//     ("0" is written as "0"). It must fit in a signed 64-bit integer.
//   - <mac> is the HMAC-SHA256 tag, 32 bytes, encoded as unpadded
//     base64url (RFC 4648 section 5, alphabet A-Z a-z 0-9 - _, no "="),
//     which is always exactly 43 characters. The unused low bits of the
//     last character must be zero.
//
// The tag is computed with the server secret as the HMAC key over the bytes
//
//	"qim-token-v1" 0x00 org 0x00 appkey 0x00 user 0x00 expiry
//
// where org, appkey and user are the identifiers the client presents
// alongside the token (see ValidID) and expiry is exactly the <expiry> text
// of the token. For example, with the secret "secret", org "acme", appkey
// "chat", user "alice" and expiry 1700000000, the token is
//
//	v1.1700000000.928-wk6d-1QSboOBuHQk-VRCFCrgB1seH9rFU5iDGd8
//
// A token is valid at time now when it is well formed, its tag matches, and
// its expiry is strictly after now. Verifiers refuse tokens longer than 512
// bytes without computing anything, compare tags in constant time, and check
// the tag before the expiry, so a forged or altered token is always reported
// as a bad signature and never as expired.
package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// SecretSize is the length in bytes of the secrets made by NewSecret.
const SecretSize = 32

// maxTokenLen is the longest token Verify will look at. Any longer token is
// malformed; a well-formed token is at most 66 bytes.
const maxTokenLen = 512

const (
	tokenPrefix = "v1."
	macDomain   = "qim-token-v1"
	macLen      = sha256.Size
	macTextLen  = 43 // base64.RawURLEncoding.EncodedLen(macLen)
	maxIDLen    = 64
)

// Errors returned by Verify. Verify returns them unwrapped.
var (
	// ErrMalformed reports a token that does not have the v1 format.
	ErrMalformed = errors.New("auth: malformed token")
	// ErrBadSignature reports a token whose tag does not match the secret
	// and the identifiers it was presented with.
	ErrBadSignature = errors.New("auth: bad token signature")
	// ErrExpired reports a genuine token whose expiry is not after now.
	ErrExpired = errors.New("auth: token expired")
)

// macEncoding is the base64url alphabet without padding, refusing non-zero
// trailing bits so that every tag has exactly one text form.
var macEncoding = base64.RawURLEncoding.Strict()

// Mint returns a token that lets user of appkey in org connect until expiry.
// The expiry is truncated to whole seconds; an expiry before 1970 is written
// as 0, which makes a token that is already expired. The identifiers should
// satisfy ValidID: one containing a NUL byte yields a token that never
// verifies.
func Mint(secret []byte, org, appkey, user string, expiry time.Time) string {
	exp := expiry.Unix()
	if exp < 0 {
		exp = 0
	}
	expText := strconv.FormatInt(exp, 10)
	tag := computeMAC(secret, org, appkey, user, expText)
	return tokenPrefix + expText + "." + macEncoding.EncodeToString(tag)
}

// Verify reports whether token lets user of appkey in org connect at time
// now. It returns nil, ErrMalformed, ErrBadSignature or ErrExpired, checking
// in that order, so an altered token is never reported as expired. An empty
// secret, or an identifier containing a NUL byte, makes every token a bad
// signature. Verify is safe for concurrent use.
func Verify(secret []byte, org, appkey, user, token string, now time.Time) error {
	expText, tag, exp, ok := parseToken(token)
	if !ok {
		return ErrMalformed
	}
	if len(secret) == 0 || hasNUL(org) || hasNUL(appkey) || hasNUL(user) {
		return ErrBadSignature
	}
	if !hmac.Equal(tag, computeMAC(secret, org, appkey, user, expText)) {
		return ErrBadSignature
	}
	if !time.Unix(exp, 0).After(now) {
		return ErrExpired
	}
	return nil
}

// Expiry returns the expiry written in token, without checking its tag: call
// it only on a token Verify accepted. It returns ErrMalformed for anything
// that is not the v1 format.
func Expiry(token string) (time.Time, error) {
	_, _, exp, ok := parseToken(token)
	if !ok {
		return time.Time{}, ErrMalformed
	}
	return time.Unix(exp, 0), nil
}

// NewSecret returns SecretSize bytes from crypto/rand, suitable as the
// secret for Mint and Verify.
func NewSecret() ([]byte, error) {
	b := make([]byte, SecretSize)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return b, nil
}

// ValidID reports whether s can be used as an org, appkey, user or device
// identifier: 1 to 64 bytes, each an ASCII letter, digit, '.', '_', '@' or
// '-'. In particular ':' and '/' are not allowed, so identifiers can be
// joined with them unambiguously.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == '@', c == '-':
		default:
			return false
		}
	}
	return true
}

// parseToken splits token into its expiry text, decoded tag and expiry
// value. It reports false for anything that is not exactly the v1 format.
func parseToken(token string) (expText string, tag []byte, exp int64, ok bool) {
	if len(token) > maxTokenLen {
		return "", nil, 0, false
	}
	rest, found := strings.CutPrefix(token, tokenPrefix)
	if !found {
		return "", nil, 0, false
	}
	expText, macText, found := strings.Cut(rest, ".")
	if !found || !canonicalDecimal(expText) || len(macText) != macTextLen {
		return "", nil, 0, false
	}
	exp, err := strconv.ParseInt(expText, 10, 64)
	if err != nil {
		return "", nil, 0, false
	}
	tag, err = macEncoding.DecodeString(macText)
	if err != nil || len(tag) != macLen {
		return "", nil, 0, false
	}
	return expText, tag, exp, true
}

// canonicalDecimal reports whether s is a non-negative decimal number with
// no sign and no leading zeros.
func canonicalDecimal(s string) bool {
	if s == "" || (s[0] == '0' && len(s) > 1) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// computeMAC returns the HMAC-SHA256 tag of the token fields.
func computeMAC(secret []byte, org, appkey, user, expText string) []byte {
	m := hmac.New(sha256.New, secret)
	for _, field := range []string{macDomain, org, appkey, user} {
		m.Write([]byte(field))
		m.Write([]byte{0})
	}
	m.Write([]byte(expText))
	return m.Sum(nil)
}

func hasNUL(s string) bool {
	return strings.IndexByte(s, 0) >= 0
}
