package pebblestore

import (
	"context"

	"github.com/qim-im/qim/store"
)

// PutApp implements store.Store.
func (s *Store) PutApp(ctx context.Context, app store.App) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	if err := checkIDs(app.Org, app.Appkey); err != nil {
		return err
	}
	b := s.db.NewBatch()
	b.Set(appKey(app.ID()), encodeApp(app), nil)
	return s.write(b, true)
}

// GetApp implements store.Store.
func (s *Store) GetApp(ctx context.Context, org, appkey string) (store.App, error) {
	if err := s.enter(); err != nil {
		return store.App{}, err
	}
	defer s.exit()
	if err := checkIDs(org, appkey); err != nil {
		return store.App{}, err
	}
	v, err := s.get(appKey(store.AppID(org, appkey)))
	if err != nil {
		return store.App{}, err
	}
	return decodeApp(v)
}
