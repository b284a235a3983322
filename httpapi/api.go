// Package httpapi is qim's HTTP API (the "short connections" of the
// founding design): the same requests as the QUIC protocol's REQUESTs, plus
// what an application's backend needs (minting tokens, sending as any user
// or as the system, reading any conversation, logging users out) and image
// uploads. It is served over HTTPS (HTTP/1.1, HTTP/2) and HTTP/3 on qimd's
// port (package daemon wires it); docs/HTTP.md describes every endpoint.
//
// Bodies are JSON mapped from the messages of proto/api.proto and
// proto/qim.proto with protojson, so that the QUIC and HTTP protocols share
// one schema. Every request goes through the hub (package core) exactly as
// a device's REQUEST does: the same validation, permissions, limits and
// rate limits, and the same durable commit before a send is answered.
package httpapi

import (
	"cmp"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/qim-im/qim/blob"
	"github.com/qim-im/qim/core"
	"github.com/qim-im/qim/metrics"
)

// SessionEnder ends every live session of a user, on every node of a
// cluster (session.Devices implements it).
type SessionEnder interface {
	EndSessions(org, appkey, user string) int
}

// Config configures a Handler. Zero values take the documented defaults.
type Config struct {
	// Hub runs the requests. Required.
	Hub *core.Hub
	// Apps holds the applications' secrets, which authenticate backends
	// and sign tokens and blob URLs. Required.
	Apps core.AppKeys
	// Sessions ends a user's sessions (DELETE /v1/users/{user}/sessions).
	// Nil answers that endpoint NOT_FOUND.
	Sessions SessionEnder
	// Blobs stores uploads. Nil turns uploads off (NOT_FOUND).
	Blobs blob.Store
	// TempDir is where uploads are staged while they arrive and are
	// checked. Empty means os.TempDir().
	TempDir string
	// PublicURL is the base of the blob URLs the API hands out
	// ("https://chat.example.com"). Empty means https:// and the Host of
	// the upload request.
	PublicURL string
	// MaxUpload is the largest upload accepted, in bytes. Zero means 10 MiB.
	MaxUpload int64
	// UploadQuota is how many bytes one user may upload per hour (a token
	// bucket of that size, refilled over the hour), on each node. Zero
	// means 200 MiB; negative means no quota.
	UploadQuota int64
	// SignedURLTTL is how long the signed_url of an upload stays valid.
	// Zero means 24 hours.
	SignedURLTTL time.Duration
	// ReplayWindow is how far a signed backend request's timestamp may be
	// from the server's clock, and how long its nonce is remembered.
	// Zero means 5 minutes.
	ReplayWindow time.Duration
	// AuthFailureBurst is how many failed authentications one IP address
	// may make at once; after that it may fail once a second, and its
	// requests beyond are refused RATE_LIMITED unchecked. Zero means 10;
	// negative means no limit.
	AuthFailureBurst int
	// Metrics records the requests. Nil records nothing.
	Metrics *metrics.Metrics
	// Logger receives the API's logs. Nil discards them.
	Logger *slog.Logger
}

// Handler serves the HTTP API. Create it with New. It is safe for
// concurrent use.
type Handler struct {
	// Static after New.
	hub       *core.Hub
	apps      core.AppKeys
	sessions  SessionEnder
	blobs     blob.Store
	tempDir   string
	publicURL string
	maxUpload int64
	signedTTL time.Duration
	window    time.Duration
	logger    *slog.Logger
	metrics   *metrics.Metrics // nil: off
	mux       *http.ServeMux

	nonces   *nonceCache   // backend request nonces seen within the window
	failures *failureLimit // authentication failures per IP address; nil: no limit
	quota    *uploadQuota  // nil: no upload quota
}

// maxBody bounds the JSON body of a request.
const maxBody = 64 << 10

// New returns a Handler for cfg.
func New(cfg Config) (*Handler, error) {
	if cfg.Hub == nil || cfg.Apps == nil {
		return nil, errors.New("httpapi: Config needs Hub and Apps")
	}
	h := &Handler{
		hub:       cfg.Hub,
		apps:      cfg.Apps,
		sessions:  cfg.Sessions,
		blobs:     cfg.Blobs,
		tempDir:   cmp.Or(cfg.TempDir, os.TempDir()),
		publicURL: cfg.PublicURL,
		maxUpload: cmp.Or(max(cfg.MaxUpload, 0), 10<<20),
		signedTTL: cmp.Or(max(cfg.SignedURLTTL, 0), 24*time.Hour),
		window:    cmp.Or(max(cfg.ReplayWindow, 0), 5*time.Minute),
		logger:    cfg.Logger,
		metrics:   cfg.Metrics,
	}
	if h.logger == nil {
		h.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var err error
	if cfg.AuthFailureBurst >= 0 {
		if h.failures, err = newFailureLimit(cmp.Or(cfg.AuthFailureBurst, 10)); err != nil {
			return nil, err
		}
	}
	h.nonces = newNonceCache(maxNonces)
	if cfg.UploadQuota >= 0 {
		if h.quota, err = newUploadQuota(cmp.Or(cfg.UploadQuota, 200<<20)); err != nil {
			return nil, err
		}
	}
	h.routes()
	return h, nil
}

// endpoint is one route of the API.
type endpoint struct {
	pattern string // method and path, as http.ServeMux takes them
	serve   http.HandlerFunc
}

// endpoints lists every endpoint. docs/HTTP.md and docs/openapi.yaml
// describe the same ones (TestOpenAPIMatchesRoutes).
func (h *Handler) endpoints() []endpoint {
	return []endpoint{
		{"GET /v1/health", h.health},
		{"POST /v1/tokens", h.mintToken},
		{"POST /v1/messages", h.sendMessage},
		{"GET /v1/conversations", h.inbox},
		{"GET /v1/conversations/{conversation}/messages", h.history},
		{"POST /v1/conversations/{conversation}/read", h.markRead},
		{"GET /v1/settings", h.getSettings},
		{"PUT /v1/settings", h.putSettings},
		{"GET /v1/contacts", h.listContacts},
		{"PUT /v1/contacts/{user}", h.addContact},
		{"DELETE /v1/contacts/{user}", h.removeContact},
		{"GET /v1/groups", h.listGroups},
		{"POST /v1/groups", h.createGroup},
		{"GET /v1/groups/{group}", h.getGroup},
		{"POST /v1/groups/{group}/members", h.addMember},
		{"DELETE /v1/groups/{group}/members/{user}", h.removeMember},
		{"DELETE /v1/users/{user}/sessions", h.endSessions},
		{"POST /v1/blobs", h.upload},
		{"GET /v1/blobs/{id}", h.download},
	}
}

// routes builds the handler's mux, every endpoint measured.
func (h *Handler) routes() {
	m := http.NewServeMux()
	for _, e := range h.endpoints() {
		m.HandleFunc(e.pattern, h.measured(e.pattern, e.serve))
	}
	m.HandleFunc("/", h.measured("other", h.notFound))
	h.mux = m
}

// measured wraps an endpoint so that its requests are counted, by status,
// and timed, under route.
func (h *Handler) measured(route string, serve http.HandlerFunc) http.HandlerFunc {
	if h.metrics == nil {
		return serve
	}
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		serve(sw, r)
		h.metrics.HTTPRequest(route, sw.status, time.Since(start))
	}
}

// statusWriter remembers the status of an answer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Routes returns the method and path pattern of every endpoint.
func Routes() []string {
	var routes []string
	for _, e := range (&Handler{}).endpoints() {
		routes = append(routes, e.pattern)
	}
	return routes
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}
