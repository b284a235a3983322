package httpapi

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/auth"
	"github.com/qim-im/qim/core"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// Request headers of the API (docs/HTTP.md section 2).
const (
	HeaderApp    = "Qim-App"    // "<org>/<appkey>"
	HeaderUser   = "Qim-User"   // the user a token belongs to, or a backend acts as
	HeaderDevice = "Qim-Device" // the device a user's request is made from; default "default"
)

// SchemeHMAC is the Authorization scheme of a signed backend request.
const SchemeHMAC = "Qim-HMAC-SHA256"

// caller is who made a request.
type caller struct {
	org, appkey, app string
	// user is the user the request is made by or on behalf of; empty for a
	// backend that named none.
	user    string
	device  string
	backend bool   // authenticated with the application's secret
	secret  []byte // the application's secret
}

// actor returns the user a request acts as: the caller's user, which a
// backend must name with Qim-User.
func (c *caller) actor() (string, error) {
	if c.user == "" {
		return "", core.Errorf(qimpb.Code_INVALID_ARGUMENT, "a backend request of this endpoint names the user it acts as in %s", HeaderUser)
	}
	return c.user, nil
}

// authenticate identifies the caller of r, whose body has the SHA-256
// bodyHash. A request authenticated with a bearer credential needs no body
// hash (nil); a signed one does.
//
// A user presents "Authorization: Bearer <token>" with Qim-App and
// Qim-User, the same token as CONNECT. A backend presents either a signed
// request ("Authorization: Qim-HMAC-SHA256 t=<unix>,n=<nonce>,s=<hex>") or
// its API key ("Authorization: Bearer k1.<key>", see APIKey), with Qim-App
// and, to act as a user, Qim-User.
func (h *Handler) authenticate(r *http.Request, bodyHash []byte) (*caller, error) {
	ip, _ := remoteIP(r)
	if !h.failures.allowed(ip) {
		return nil, core.Errorf(qimpb.Code_RATE_LIMITED, "too many failed authentications from this address; retry later")
	}
	c, err := h.identify(r, bodyHash)
	if err != nil {
		if code, _ := core.CodeOf(err); code == qimpb.Code_UNAUTHENTICATED || code == qimpb.Code_TOKEN_EXPIRED {
			h.failures.failed(ip)
		}
		return nil, err
	}
	return c, nil
}

// identify does the work of authenticate.
func (h *Handler) identify(r *http.Request, bodyHash []byte) (*caller, error) {
	org, appkey, ok := strings.Cut(r.Header.Get(HeaderApp), "/")
	if !ok || !auth.ValidID(org) || !auth.ValidID(appkey) {
		return nil, core.Errorf(qimpb.Code_UNAUTHENTICATED, "%s must be <org>/<appkey>", HeaderApp)
	}
	c := &caller{org: org, appkey: appkey, app: store.AppID(org, appkey), user: r.Header.Get(HeaderUser), device: r.Header.Get(HeaderDevice)}
	if c.user != "" && !auth.ValidID(c.user) {
		return nil, core.Errorf(qimpb.Code_INVALID_ARGUMENT, "%s is not a valid user id", HeaderUser)
	}
	if c.device == "" {
		c.device = "default"
	} else if !auth.ValidID(c.device) {
		return nil, core.Errorf(qimpb.Code_INVALID_ARGUMENT, "%s is not a valid device id", HeaderDevice)
	}
	secret, _ := h.apps.AppSecret(org, appkey)
	c.secret = secret
	scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	switch {
	case strings.EqualFold(scheme, SchemeHMAC):
		if secret == nil {
			return nil, core.Errorf(qimpb.Code_UNAUTHENTICATED, "bad signature")
		}
		if err := h.checkSigned(r, c, cred, bodyHash); err != nil {
			return nil, err
		}
		c.backend = true
		return c, nil
	case strings.EqualFold(scheme, "Bearer") && strings.HasPrefix(cred, apiKeyPrefix):
		if secret == nil || !hmac.Equal([]byte(cred), []byte(APIKey(secret))) {
			return nil, core.Errorf(qimpb.Code_UNAUTHENTICATED, "invalid API key")
		}
		c.backend = true
		return c, nil
	case strings.EqualFold(scheme, "Bearer"):
		if c.user == "" {
			return nil, core.Errorf(qimpb.Code_UNAUTHENTICATED, "a token comes with %s", HeaderUser)
		}
		if err := h.hub.Verify(org, appkey, c.user, cred); err != nil {
			return nil, err
		}
		return c, nil
	default:
		return nil, core.Errorf(qimpb.Code_UNAUTHENTICATED, "missing or unknown Authorization")
	}
}

// apiKeyPrefix starts every API key.
const apiKeyPrefix = "k1."

// APIKey returns the API key of the application whose secret is secret:
// "k1." and the unpadded base64url HMAC-SHA256 of "qim-api-key-v1" under
// the secret. It changes when the secret does.
func APIKey(secret []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte("qim-api-key-v1"))
	return apiKeyPrefix + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

// StringToSign returns what a backend signs for a request (docs/HTTP.md
// section 2.2): lines of "qim-api-v1", the method, the request URI (path
// and query, as sent), Qim-App, Qim-User (empty if none), the timestamp,
// the nonce, and the hex SHA-256 of the body, joined by "\n".
func StringToSign(method, requestURI, app, user, ts, nonce string, bodyHash []byte) string {
	return strings.Join([]string{"qim-api-v1", method, requestURI, app, user, ts, nonce, hex.EncodeToString(bodyHash)}, "\n")
}

// Sign returns the hex HMAC-SHA256 of StringToSign under the
// application's secret: the s= of a signed request.
func Sign(secret []byte, stringToSign string) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(stringToSign))
	return hex.EncodeToString(mac.Sum(nil))
}

// checkSigned checks the credentials of a signed backend request: a
// timestamp within the replay window, a nonce not seen within it, and the
// signature over the request and its body's hash.
func (h *Handler) checkSigned(r *http.Request, c *caller, cred string, bodyHash []byte) error {
	var ts, nonce, sig string
	for part := range strings.SplitSeq(cred, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "n":
			nonce = v
		case "s":
			sig = v
		}
	}
	if ts == "" || sig == "" || len(nonce) < 8 || len(nonce) > 64 || !auth.ValidID(nonce) {
		return core.Errorf(qimpb.Code_UNAUTHENTICATED, "signed requests carry t=<unix seconds>,n=<nonce of 8-64 id characters>,s=<hex signature>")
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return core.Errorf(qimpb.Code_UNAUTHENTICATED, "bad timestamp")
	}
	now := h.hub.Now()
	if d := now.Sub(time.Unix(secs, 0)); d > h.window || d < -h.window {
		return core.Errorf(qimpb.Code_UNAUTHENTICATED, "timestamp outside the replay window of %v; check the clock", h.window)
	}
	want := Sign(c.secret, StringToSign(r.Method, r.URL.RequestURI(), c.app, c.user, ts, nonce, bodyHash))
	if !hmac.Equal([]byte(sig), []byte(want)) {
		return core.Errorf(qimpb.Code_UNAUTHENTICATED, "bad signature")
	}
	// Only a request whose signature holds spends its nonce, so that a
	// forger cannot burn a backend's nonces.
	if !h.nonces.add(c.app+"\x00"+nonce, now, h.window) {
		return core.Errorf(qimpb.Code_UNAUTHENTICATED, "replayed request (nonce seen before)")
	}
	return nil
}

// bodySHA256 returns the SHA-256 of a body.
func bodySHA256(b []byte) []byte {
	sum := sha256.Sum256(b)
	return sum[:]
}

// authJSON reads the body of a JSON request and authenticates its caller.
func (h *Handler) authJSON(w http.ResponseWriter, r *http.Request) (*caller, []byte, error) {
	b, err := readBody(w, r)
	if err != nil {
		return nil, nil, err
	}
	c, err := h.authenticate(r, bodySHA256(b))
	if err != nil {
		return nil, nil, err
	}
	return c, b, nil
}

// begin starts a JSON request: it reads the body, authenticates the
// caller, runs check on it, charges the rate limit (allow) and decodes the
// body into req (if not nil). It answers an error itself, and returns nil
// then.
func (h *Handler) begin(w http.ResponseWriter, r *http.Request, req proto.Message, check func(*caller) error) *caller {
	c, body, err := h.authJSON(w, r)
	if err == nil {
		err = check(c)
	}
	if err == nil {
		err = h.allow(c)
	}
	if err == nil && req != nil {
		err = decodeJSON(body, req)
	}
	if err != nil {
		h.writeError(w, r, err)
		return nil
	}
	return c
}

// allow charges one request to the rate limit of the user a request acts as
// (core.Hub.Allow), or of SystemUser for a backend request that acts as
// nobody.
func (h *Handler) allow(c *caller) error {
	return h.hub.Allow(c.app, cmp.Or(c.user, core.SystemUser))
}
