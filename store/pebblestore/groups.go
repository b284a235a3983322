package pebblestore

import (
	"context"
	"errors"

	"github.com/cockroachdb/pebble/v2"

	"github.com/qim-im/qim/store"
)

// Group-scoped methods other than CreateGroup return store.ErrNotFound for
// a group that does not exist or is closed. The write methods read, decide
// and write under groupMu, in one batch, so that every rule holds against
// concurrent calls.

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
	rec := groupRecord{Group: g, joins: 1, members: 1}
	b := s.db.NewBatch()
	b.Set(groupKey(app, g.ID), encodeGroup(rec), nil)
	b.Set(memberKey(app, g.ID, g.Owner), encodeMember(join, 0), nil)
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

// JoinGroup implements store.Store. A maxMembers of 0 or less means no
// limit.
func (s *Store) JoinGroup(ctx context.Context, app, id, user string, maxMembers int) (bool, error) {
	if err := s.enter(); err != nil {
		return false, err
	}
	defer s.exit()
	if err := checkIDs(app, id, user); err != nil {
		return false, err
	}
	s.groupMu.Lock()
	defer s.groupMu.Unlock()
	g, err := s.loadGroup(app, id)
	if err != nil {
		return false, err
	}
	if member, err := s.has(memberKey(app, id, user)); err != nil || member {
		return false, err
	}
	if banned, err := s.has(banKey(app, id, user)); err != nil || banned {
		if err == nil {
			err = store.ErrBanned
		}
		return false, err
	}
	return s.addMember(app, g, user, maxMembers)
}

// InviteMember implements store.Store. A maxMembers of 0 or less means no
// limit.
func (s *Store) InviteMember(ctx context.Context, app, id, by, user string, maxMembers int) (bool, error) {
	if err := s.enter(); err != nil {
		return false, err
	}
	defer s.exit()
	if err := checkIDs(app, id, by, user); err != nil {
		return false, err
	}
	s.groupMu.Lock()
	defer s.groupMu.Unlock()
	g, err := s.loadGroup(app, id)
	if err != nil {
		return false, err
	}
	if member, err := s.has(memberKey(app, id, by)); err != nil || !member {
		if err == nil {
			err = store.ErrNotMember
		}
		return false, err
	}
	if member, err := s.has(memberKey(app, id, user)); err != nil || member {
		return false, err
	}
	if banned, err := s.has(banKey(app, id, user)); err != nil || (banned && by != g.Owner) {
		if err == nil {
			err = store.ErrBanned
		}
		return false, err
	}
	return s.addMember(app, g, user, maxMembers)
}

// LeaveGroup implements store.Store.
func (s *Store) LeaveGroup(ctx context.Context, app, id, user string) (string, error) {
	if err := s.enter(); err != nil {
		return "", err
	}
	defer s.exit()
	if err := checkIDs(app, id, user); err != nil {
		return "", err
	}
	s.groupMu.Lock()
	defer s.groupMu.Unlock()
	g, err := s.loadGroup(app, id)
	if err != nil {
		return "", err
	}
	if member, err := s.has(memberKey(app, id, user)); err != nil || !member {
		if err == nil {
			err = store.ErrNotMember
		}
		return "", err
	}
	b := s.db.NewBatch()
	newOwner, err := s.removeMember(b, app, &g, user)
	if err != nil {
		b.Close()
		return "", err
	}
	b.Set(groupKey(app, id), encodeGroup(g), nil)
	return newOwner, s.write(b, true)
}

// KickMember implements store.Store. Banning a user who is not a member is
// allowed.
func (s *Store) KickMember(ctx context.Context, app, id, by, user string) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	if err := checkIDs(app, id, by, user); err != nil {
		return err
	}
	if by == user {
		return errKickSelf
	}
	s.groupMu.Lock()
	defer s.groupMu.Unlock()
	g, err := s.loadGroup(app, id)
	if err != nil {
		return err
	}
	if g.Owner != by {
		member, err := s.has(memberKey(app, id, by))
		switch {
		case err != nil:
			return err
		case member:
			return store.ErrNotOwner
		default:
			return store.ErrNotMember
		}
	}
	member, err := s.has(memberKey(app, id, user))
	if err != nil {
		return err
	}
	b := s.db.NewBatch()
	if member {
		if _, err := s.removeMember(b, app, &g, user); err != nil {
			b.Close()
			return err
		}
		b.Set(groupKey(app, id), encodeGroup(g), nil)
	}
	if g.members > 0 {
		b.Set(banKey(app, id, user), nil, nil)
	}
	return s.write(b, true)
}

// errKickSelf refuses a KickMember of the owner by the owner.
var errKickSelf = errors.New("pebblestore: the owner cannot kick themself")

// loadGroup returns the stored record of a group, with its member count
// (counted once for a group stored before records had one), or
// store.ErrNotFound if the group does not exist or is closed. The caller
// holds groupMu.
func (s *Store) loadGroup(app, id string) (groupRecord, error) {
	v, err := s.get(groupKey(app, id))
	if err != nil {
		return groupRecord{}, err
	}
	g, counted, err := decodeGroup(v)
	if err != nil {
		return groupRecord{}, err
	}
	if !counted {
		// Old members have join number 0; later joiners come after them.
		g.joins = 1
		err = s.scan(memberPrefix(app, id), func(_, _ []byte) error {
			g.members++
			return nil
		})
		if err != nil {
			return groupRecord{}, err
		}
	}
	if counted && g.members == 0 {
		return groupRecord{}, store.ErrNotFound
	}
	return g, nil
}

// addMember writes user as a new member of g, joining at the group's last
// seq with the next join number, and lifts any ban, unless the group has
// maxMembers members (store.ErrFull). The caller holds groupMu and has
// checked that user is not a member.
func (s *Store) addMember(app string, g groupRecord, user string, maxMembers int) (bool, error) {
	if maxMembers > 0 && g.members >= uint64(maxMembers) {
		return false, store.ErrFull
	}
	join, err := s.lastSeq(app, store.GroupConv(g.ID))
	if err != nil {
		return false, err
	}
	b := s.db.NewBatch()
	b.Set(memberKey(app, g.ID, user), encodeMember(join, g.joins), nil)
	b.Set(userGroupKey(app, user, g.ID), nil, nil)
	b.Delete(banKey(app, g.ID, user), nil)
	g.joins++
	g.members++
	b.Set(groupKey(app, g.ID), encodeGroup(g), nil)
	if err := s.write(b, true); err != nil {
		return false, err
	}
	return true, nil
}

// removeMember adds to b the removal of user, a member of g, and updates
// g: when the owner leaves, the earliest remaining joiner (by join number,
// then user id) becomes owner and is returned; when the last member leaves,
// the group is closed and its bans are deleted. The caller holds groupMu
// and writes g to b.
func (s *Store) removeMember(b *pebble.Batch, app string, g *groupRecord, user string) (newOwner string, err error) {
	b.Delete(memberKey(app, g.ID, user), nil)
	b.Delete(userGroupKey(app, user, g.ID), nil)
	g.members--
	if g.members == 0 {
		return "", s.scan(banPrefix(app, g.ID), func(banned, _ []byte) error {
			b.Delete(banKey(app, g.ID, string(banned)), nil)
			return nil
		})
	}
	if g.Owner != user {
		return "", nil
	}
	var next string
	var nextNum uint64
	err = s.scan(memberPrefix(app, g.ID), func(m, v []byte) error {
		if string(m) == user {
			return nil
		}
		_, num, err := decodeMember(v)
		if err != nil {
			return err
		}
		// Keys come in user id order, so the first of equal numbers wins.
		if next == "" || num < nextNum {
			next, nextNum = string(m), num
		}
		return nil
	})
	if err != nil || next == "" {
		return "", err
	}
	g.Owner = next
	return next, nil
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

// group returns a group with its last synced seq, or store.ErrNotFound
// if it does not exist or is closed.
func (s *Store) group(app, id string) (store.Group, error) {
	v, err := s.get(groupKey(app, id))
	if err != nil {
		return store.Group{}, err
	}
	g, counted, err := decodeGroup(v)
	if err != nil {
		return store.Group{}, err
	}
	if counted && g.members == 0 {
		return store.Group{}, store.ErrNotFound
	}
	g.LastSeq, err = s.lastSeq(app, store.GroupConv(id))
	return g.Group, err
}

// groupExists returns nil if the group exists and is open, else
// store.ErrNotFound.
func (s *Store) groupExists(app, id string) error {
	v, err := s.get(groupKey(app, id))
	if err != nil {
		return err
	}
	g, counted, err := decodeGroup(v)
	if err == nil && counted && g.members == 0 {
		err = store.ErrNotFound
	}
	return err
}
