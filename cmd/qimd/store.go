package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	"github.com/qim-im/qim/store"
	"github.com/qim-im/qim/store/pgstore"
)

// openStore opens the store that --store names: nil (the daemon's embedded
// Pebble store in the data directory) when spec is empty, PostgreSQL for a
// postgres:// or postgresql:// URL. The caller closes what it returns.
func openStore(ctx context.Context, spec string, logger *slog.Logger) (store.Store, error) {
	switch {
	case spec == "":
		return nil, nil
	case strings.HasPrefix(spec, "postgres://"), strings.HasPrefix(spec, "postgresql://"):
		s, err := pgstore.Open(ctx, spec, pgstore.Options{Logger: logger.With("component", "pgstore")})
		if err != nil {
			return nil, fmt.Errorf("--store %s: %w", redact(spec), err)
		}
		logger.Info("store: PostgreSQL", "url", redact(spec))
		return s, nil
	}
	return nil, fmt.Errorf("--store %s: unsupported (want postgres://USER@HOST:PORT/DB, or no --store for the embedded store in the data directory)", redact(spec))
}

// redact returns spec without the password it may hold, for logs and
// errors.
func redact(spec string) string {
	u, err := url.Parse(spec)
	if err != nil {
		return "(an unparsable URL)"
	}
	return u.Redacted()
}
