package pebblestore

import (
	"context"
	"errors"

	"github.com/qim-im/qim/store"
)

// Group-scoped methods other than CreateGroup and GetGroup return
// store.ErrNotFound for a group that does not exist.

// CreateGroup implements store.Store. The owner joins at the group
// conversation's last seq (0 for a new group). LastSeq in g is ignored;
// Created is stored as given.
func (s *Store) CreateGroup(ctx context.Context, app string, g store.Group) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	if err := checkIDs(app, g.ID, g.Owner); err != nil {
		return err
	}
	s.groupMu.Lock()
	defer s.groupMu.Unlock()
	exists, err := s.has(groupKey(app, g.ID))
	if err != nil {
		return err
	}
	if exists {
		return store.ErrExists
	}
	join, err := s.lastSeq(app, store.GroupConv(g.ID))
	if err != nil {
		return err
	}
	b := s.db.NewBatch()
	b.Set(groupKey(app, g.ID), encodeGroup(g), nil)
	b.Set(memberKey(app, g.ID, g.Owner), encodeU64(join), nil)
	b.Set(userGroupKey(app, g.Owner, g.ID), nil, nil)
	b.Delete(banKey(app, g.ID, g.Owner), nil)
	return s.write(b, true)
}

// GetGroup implements store.Store.
func (s *Store) GetGroup(ctx context.Context, app, id string) (store.Group, error) {
	if err := s.enter(); err != nil {
		return store.Group{}, err
	}
	defer s.exit()
	if err := checkIDs(app, id); err != nil {
		return store.Group{}, err
	}
	return s.group(app, id)
}

// SetGroupOwner implements store.Store. The owner need not be a member.
func (s *Store) SetGroupOwner(ctx context.Context, app, id, owner string) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	if err := checkIDs(app, id, owner); err != nil {
		return err
	}
	s.groupMu.Lock()
	defer s.groupMu.Unlock()
	g, err := s.group(app, id)
	if err != nil {
		return err
	}
	if g.Owner == owner {
		return nil
	}
	g.Owner = owner
	b := s.db.NewBatch()
	b.Set(groupKey(app, id), encodeGroup(g), nil)
	return s.write(b, true)
}

// AddMember implements store.Store.
func (s *Store) AddMember(ctx context.Context, app, id, user string) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	if err := checkIDs(app, id, user); err != nil {
		return err
	}
	s.groupMu.Lock()
	defer s.groupMu.Unlock()
	if err := s.groupExists(app, id); err != nil {
		return err
	}
	member, err := s.has(memberKey(app, id, user))
	if err != nil {
		return err
	}
	banned, err := s.has(banKey(app, id, user))
	if err != nil {
		return err
	}
	if member && !banned {
		return nil
	}
	b := s.db.NewBatch()
	if !member {
		join, err := s.lastSeq(app, store.GroupConv(id))
		if err != nil {
			b.Close()
			return err
		}
		b.Set(memberKey(app, id, user), encodeU64(join), nil)
		b.Set(userGroupKey(app, user, id), nil, nil)
	}
	b.Delete(banKey(app, id, user), nil)
	return s.write(b, true)
}

// RemoveMember implements store.Store. Banning a user who is not a member
// is allowed.
func (s *Store) RemoveMember(ctx context.Context, app, id, user string, ban bool) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	if err := checkIDs(app, id, user); err != nil {
		return err
	}
	s.groupMu.Lock()
	defer s.groupMu.Unlock()
	if err := s.groupExists(app, id); err != nil {
		return err
	}
	b := s.db.NewBatch()
	b.Delete(memberKey(app, id, user), nil)
	b.Delete(userGroupKey(app, user, id), nil)
	if ban {
		b.Set(banKey(app, id, user), nil, nil)
	}
	return s.write(b, true)
}

// Members implements store.Store.
func (s *Store) Members(ctx context.Context, app, id string) ([]string, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	if err := checkIDs(app, id); err != nil {
		return nil, err
	}
	if err := s.groupExists(app, id); err != nil {
		return nil, err
	}
	var users []string
	err := s.scan(memberPrefix(app, id), func(user, _ []byte) error {
		users = append(users, string(user))
		return nil
	})
	return users, err
}

// Banned implements store.Store.
func (s *Store) Banned(ctx context.Context, app, id, user string) (bool, error) {
	if err := s.enter(); err != nil {
		return false, err
	}
	defer s.exit()
	if err := checkIDs(app, id, user); err != nil {
		return false, err
	}
	if err := s.groupExists(app, id); err != nil {
		return false, err
	}
	return s.has(banKey(app, id, user))
}

// UserGroups implements store.Store.
func (s *Store) UserGroups(ctx context.Context, app, user string) ([]store.Group, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	if err := checkIDs(app, user); err != nil {
		return nil, err
	}
	var ids []string
	err := s.scan(userGroupPrefix(app, user), func(id, _ []byte) error {
		ids = append(ids, string(id))
		return nil
	})
	if err != nil {
		return nil, err
	}
	groups := make([]store.Group, 0, len(ids))
	for _, id := range ids {
		g, err := s.group(app, id)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		groups = append(groups, g)
	}
	return groups, nil
}

// group returns a group with its last synced seq, or store.ErrNotFound.
func (s *Store) group(app, id string) (store.Group, error) {
	v, err := s.get(groupKey(app, id))
	if err != nil {
		return store.Group{}, err
	}
	g, err := decodeGroup(v)
	if err != nil {
		return store.Group{}, err
	}
	g.LastSeq, err = s.lastSeq(app, store.GroupConv(id))
	return g, err
}

// groupExists returns nil if the group exists, else store.ErrNotFound.
func (s *Store) groupExists(app, id string) error {
	ok, err := s.has(groupKey(app, id))
	if err == nil && !ok {
		err = store.ErrNotFound
	}
	return err
}
