package core

import (
	"context"
	"errors"

	"github.com/qim-im/qim/auth"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// AppKeys gives the hub the applications' secrets. It must be safe for
// concurrent use; the daemon's key ring implements it over the secret files
// of the data directory.
type AppKeys interface {
	// AppSecret returns the secret of the application org/appkey, or false
	// when there is no such application.
	AppSecret(org, appkey string) (secret []byte, ok bool)
}

// Reasons given with the refusals of tokens that are no longer good.
const (
	ReasonTokenExpired = "token expired"
	ReasonRevoked      = "token no longer valid: the application's secret was rotated or removed"
)

// Authenticate checks a CONNECT and returns the application id it belongs
// to. It sets c.Device to "default" when it is empty. Every refusal is an
// *Error; none reveals whether the user exists.
func (h *Hub) Authenticate(ctx context.Context, c *qimpb.Connect) (app string, err error) {
	if c.Device == "" {
		c.Device = "default"
	}
	for _, id := range []string{c.Org, c.Appkey, c.User, c.Device} {
		if !auth.ValidID(id) {
			return "", Errorf(qimpb.Code_INVALID_ARGUMENT, "org, appkey, user and device must be 1-64 characters of A-Z a-z 0-9 . _ @ -")
		}
	}
	if c.User == SystemUser {
		return "", Errorf(qimpb.Code_INVALID_ARGUMENT, "%s is reserved for the application's own messages", SystemUser)
	}
	if err := h.Verify(c.Org, c.Appkey, c.User, c.Token); err != nil {
		return "", err
	}
	return store.AppID(c.Org, c.Appkey), nil
}

// Verify checks a token of user against the current secret of the
// application org/appkey (Config.Apps): nil, or an *Error TOKEN_EXPIRED
// (reason ReasonTokenExpired) or UNAUTHENTICATED (an unknown application
// is a bad signature; so is any token of SystemUser). The device layer
// calls it again for live sessions when an application's secret changes,
// and the HTTP API for every request a user makes.
func (h *Hub) Verify(org, appkey, user, token string) error {
	if user == SystemUser {
		// No token is ever good for the application's own sender.
		return Errorf(qimpb.Code_UNAUTHENTICATED, "invalid token")
	}
	var secret []byte
	if h.apps != nil {
		secret, _ = h.apps.AppSecret(org, appkey)
	}
	switch err := auth.Verify(secret, org, appkey, user, token, h.now()); {
	case err == nil:
		return nil
	case errors.Is(err, auth.ErrExpired):
		return Errorf(qimpb.Code_TOKEN_EXPIRED, ReasonTokenExpired)
	default:
		return Errorf(qimpb.Code_UNAUTHENTICATED, "invalid token")
	}
}

// HasApps reports whether the hub was given application secrets
// (Config.Apps). Without them, Authenticate refuses everything.
func (h *Hub) HasApps() bool { return h.apps != nil }
