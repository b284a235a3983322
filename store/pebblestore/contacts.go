package pebblestore

import "context"

// AddContact implements store.Store.
func (s *Store) AddContact(ctx context.Context, app, user, contact string) error {
	return s.setContact(app, user, contact, true)
}

// RemoveContact implements store.Store.
func (s *Store) RemoveContact(ctx context.Context, app, user, contact string) error {
	return s.setContact(app, user, contact, false)
}

func (s *Store) setContact(app, user, contact string, add bool) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	if err := checkIDs(app, user, contact); err != nil {
		return err
	}
	b := s.db.NewBatch()
	if add {
		b.Set(contactKey(app, user, contact), nil, nil)
	} else {
		b.Delete(contactKey(app, user, contact), nil)
	}
	return s.write(b, true)
}

// Contacts implements store.Store. It returns the contacts sorted.
func (s *Store) Contacts(ctx context.Context, app, user string) ([]string, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	if err := checkIDs(app, user); err != nil {
		return nil, err
	}
	var out []string
	err := s.scan(contactPrefix(app, user), func(c, _ []byte) error {
		out = append(out, string(c))
		return nil
	})
	return out, err
}
