package pgstore

import (
	"context"
	"errors"

	"github.com/qim-im/qim/store"
)

var errReceiptsTODO = errors.New("pgstore: receipts not implemented yet")

// SetRead implements store.Store.
func (s *Store) SetRead(ctx context.Context, app, user, conv string, seq uint64, share bool) (uint64, uint64, error) {
	return 0, 0, errReceiptsTODO
}

// Receipts implements store.Store.
func (s *Store) Receipts(ctx context.Context, app, conv string, users []string) ([]store.Receipt, error) {
	return nil, errReceiptsTODO
}

// Prefs implements store.Store.
func (s *Store) Prefs(ctx context.Context, app, user string) (store.Prefs, error) {
	return store.Prefs{}, errReceiptsTODO
}

// SetPrefs implements store.Store.
func (s *Store) SetPrefs(ctx context.Context, app, user string, p store.Prefs) error {
	return errReceiptsTODO
}

// ContactOf implements store.Store.
func (s *Store) ContactOf(ctx context.Context, app, contact string, owners []string) ([]string, error) {
	return nil, errReceiptsTODO
}
