package pgstore

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// AddContact implements store.Store.
func (s *Store) AddContact(ctx context.Context, app, user, contact string) error {
	return s.setContact(ctx, app, user, contact,
		"INSERT INTO contacts (app, user_id, contact) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
}

// RemoveContact implements store.Store.
func (s *Store) RemoveContact(ctx context.Context, app, user, contact string) error {
	return s.setContact(ctx, app, user, contact,
		"DELETE FROM contacts WHERE app = $1 AND user_id = $2 AND contact = $3")
}

func (s *Store) setContact(ctx context.Context, app, user, contact, sql string) error {
	ctx, cancel, err := s.enter(ctx, app, user, contact)
	if err != nil {
		return err
	}
	defer cancel()
	_, err = s.pool.Exec(ctx, sql, app, user, contact)
	return s.fail("contact", err)
}

// Contacts implements store.Store. It returns the contacts sorted.
func (s *Store) Contacts(ctx context.Context, app, user string) ([]string, error) {
	ctx, cancel, err := s.enter(ctx, app, user)
	if err != nil {
		return nil, err
	}
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT contact FROM contacts WHERE app = $1 AND user_id = $2 ORDER BY contact", app, user)
	if err != nil {
		return nil, s.fail("contacts", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return out, s.fail("contacts", err)
}
