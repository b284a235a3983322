package pgstore

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/qim-im/qim/store"
)

// Group-scoped methods other than CreateGroup return store.ErrNotFound for
// a group that does not exist or is closed (members = 0). The write
// methods run in one transaction that first locks the group's row
// (SELECT ... FOR UPDATE): every membership change of a group holds that
// lock, so the checks that follow it, each a statement of its own and so
// (in READ COMMITTED) a snapshot taken after the lock, see every change
// committed before, and the decision and the write are one atomic step.

// groupRow is a group's row as the write methods lock it.
type groupRow struct {
	id      string
	owner   string
	joins   int64
	members int64
}

// CreateGroup implements store.Store, in one statement. The owner joins at
// the group conversation's last seq (0 for a new group). LastSeq in g is
// ignored; Created is stored as given.
func (s *Store) CreateGroup(ctx context.Context, app string, g store.Group) error {
	ctx, cancel, err := s.enter(ctx, app, g.ID, g.Owner)
	if err != nil {
		return err
	}
	defer cancel()
	tag, err := s.pool.Exec(ctx, `WITH g AS (
	INSERT INTO chat_groups (app, id, name, owner, created, joins, members)
	VALUES ($1, $2, $3, $4, $5, 1, 1) ON CONFLICT DO NOTHING RETURNING app, id, owner
)
INSERT INTO group_members (app, group_id, user_id, join_seq, join_num)
SELECT g.app, g.id, g.owner, COALESCE((SELECT c.last_seq FROM convs c WHERE c.app = g.app AND c.conv = $6), 0), 0 FROM g`,
		app, g.ID, []byte(g.Name), g.Owner, g.Created, store.GroupConv(g.ID))
	if err != nil {
		return s.fail("create group", err)
	}
	if tag.RowsAffected() == 0 {
		return store.ErrExists
	}
	return nil
}

// GetGroup implements store.Store.
func (s *Store) GetGroup(ctx context.Context, app, id string) (store.Group, error) {
	ctx, cancel, err := s.enter(ctx, app, id)
	if err != nil {
		return store.Group{}, err
	}
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT "+sqlGroupColumns+" FROM chat_groups g WHERE g.app = $1 AND g.id = $2 AND g.members > 0", app, id)
	if err != nil {
		return store.Group{}, s.fail("get group", err)
	}
	g, err := pgx.CollectExactlyOneRow(rows, scanGroup)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Group{}, store.ErrNotFound
	}
	return g, s.fail("get group", err)
}

// sqlGroupColumns are the columns of a group g, with its last seq, for
// scanGroup.
const sqlGroupColumns = `g.id, g.name, g.owner, g.created,
	COALESCE((SELECT c.last_seq FROM convs c WHERE c.app = g.app AND c.conv = 'g:' || g.id), 0)`

func scanGroup(row pgx.CollectableRow) (store.Group, error) {
	var g store.Group
	var name []byte
	var last int64
	err := row.Scan(&g.ID, &name, &g.Owner, &g.Created, &last)
	g.Name, g.LastSeq = string(name), uint64(last)
	return g, err
}

// JoinGroup implements store.Store. A maxMembers of 0 or less means no
// limit.
func (s *Store) JoinGroup(ctx context.Context, app, id, user string, maxMembers int) (added bool, err error) {
	ctx, cancel, err := s.enter(ctx, app, id, user)
	if err != nil {
		return false, err
	}
	defer cancel()
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		g, err := lockGroup(ctx, tx, app, id)
		if err != nil {
			return err
		}
		member, banned, err := memberState(ctx, tx, app, id, user)
		switch {
		case err != nil || member:
			return err
		case banned:
			return store.ErrBanned
		}
		added, err = addMember(ctx, tx, app, g, user, maxMembers)
		return err
	})
	return added, s.fail("join group", err)
}

// InviteMember implements store.Store. A maxMembers of 0 or less means no
// limit.
func (s *Store) InviteMember(ctx context.Context, app, id, by, user string, maxMembers int) (added bool, err error) {
	ctx, cancel, err := s.enter(ctx, app, id, by, user)
	if err != nil {
		return false, err
	}
	defer cancel()
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		g, err := lockGroup(ctx, tx, app, id)
		if err != nil {
			return err
		}
		if byMember, _, err := memberState(ctx, tx, app, id, by); err != nil || !byMember {
			return cmpErr(err, store.ErrNotMember)
		}
		member, banned, err := memberState(ctx, tx, app, id, user)
		switch {
		case err != nil || member:
			return err
		case banned && by != g.owner:
			return store.ErrBanned
		}
		added, err = addMember(ctx, tx, app, g, user, maxMembers)
		return err
	})
	return added, s.fail("invite member", err)
}

// LeaveGroup implements store.Store.
func (s *Store) LeaveGroup(ctx context.Context, app, id, user string) (newOwner string, err error) {
	ctx, cancel, err := s.enter(ctx, app, id, user)
	if err != nil {
		return "", err
	}
	defer cancel()
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		g, err := lockGroup(ctx, tx, app, id)
		if err != nil {
			return err
		}
		if member, _, err := memberState(ctx, tx, app, id, user); err != nil || !member {
			return cmpErr(err, store.ErrNotMember)
		}
		newOwner, err = removeMember(ctx, tx, app, g, user)
		return err
	})
	return newOwner, s.fail("leave group", err)
}

// KickMember implements store.Store. Banning a user who is not a member is
// allowed.
func (s *Store) KickMember(ctx context.Context, app, id, by, user string) error {
	ctx, cancel, err := s.enter(ctx, app, id, by, user)
	if err != nil {
		return err
	}
	defer cancel()
	if by == user {
		return errKickSelf
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		g, err := lockGroup(ctx, tx, app, id)
		if err != nil {
			return err
		}
		if g.owner != by {
			byMember, _, err := memberState(ctx, tx, app, id, by)
			switch {
			case err != nil:
				return err
			case byMember:
				return store.ErrNotOwner
			default:
				return store.ErrNotMember
			}
		}
		member, _, err := memberState(ctx, tx, app, id, user)
		if err != nil {
			return err
		}
		if member {
			// The owner stays, so the group stays open and keeps its owner.
			if _, err := removeMember(ctx, tx, app, g, user); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, "INSERT INTO group_bans (app, group_id, user_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", app, id, user)
		return err
	})
	return s.fail("kick member", err)
}

// errKickSelf refuses a KickMember of the owner by the owner.
var errKickSelf = errors.New("pgstore: the owner cannot kick themself")

// Members implements store.Store.
func (s *Store) Members(ctx context.Context, app, id string) ([]string, error) {
	ctx, cancel, err := s.enter(ctx, app, id)
	if err != nil {
		return nil, err
	}
	defer cancel()
	var users []string
	err = s.pool.QueryRow(ctx, `SELECT ARRAY(
	SELECT user_id FROM group_members m WHERE m.app = g.app AND m.group_id = g.id ORDER BY user_id
) FROM chat_groups g WHERE g.app = $1 AND g.id = $2 AND g.members > 0`, app, id).Scan(&users)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	return users, s.fail("members", err)
}

// UserGroups implements store.Store.
func (s *Store) UserGroups(ctx context.Context, app, user string) ([]store.Group, error) {
	ctx, cancel, err := s.enter(ctx, app, user)
	if err != nil {
		return nil, err
	}
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT "+sqlGroupColumns+`
FROM group_members m
CROSS JOIN LATERAL (SELECT * FROM chat_groups g WHERE g.app = m.app AND g.id = m.group_id LIMIT 1) AS g
WHERE m.app = $1 AND m.user_id = $2 AND g.members > 0 ORDER BY g.id`, app, user)
	if err != nil {
		return nil, s.fail("user groups", err)
	}
	groups, err := pgx.CollectRows(rows, scanGroup)
	return groups, s.fail("user groups", err)
}

// lockGroup locks the row of a group for the rest of tx and returns it,
// or store.ErrNotFound if the group does not exist or is closed.
func lockGroup(ctx context.Context, tx pgx.Tx, app, id string) (groupRow, error) {
	g := groupRow{id: id}
	err := tx.QueryRow(ctx, "SELECT owner, joins, members FROM chat_groups WHERE app = $1 AND id = $2 FOR UPDATE",
		app, id).Scan(&g.owner, &g.joins, &g.members)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && g.members == 0) {
		return groupRow{}, store.ErrNotFound
	}
	return g, err
}

// memberState reports whether user is a member of a group and whether
// they are banned from it. The caller holds the group's lock.
func memberState(ctx context.Context, tx pgx.Tx, app, id, user string) (member, banned bool, err error) {
	err = tx.QueryRow(ctx, `SELECT
	EXISTS (SELECT 1 FROM group_members WHERE app = $1 AND group_id = $2 AND user_id = $3),
	EXISTS (SELECT 1 FROM group_bans WHERE app = $1 AND group_id = $2 AND user_id = $3)`,
		app, id, user).Scan(&member, &banned)
	return member, banned, err
}

// addMember makes user, not a member, a member of g, joining at the
// group's last seq with the next join number, and lifts any ban, unless
// the group has maxMembers members (store.ErrFull). The caller holds the
// group's lock.
func addMember(ctx context.Context, tx pgx.Tx, app string, g groupRow, user string, maxMembers int) (bool, error) {
	if maxMembers > 0 && g.members >= int64(maxMembers) {
		return false, store.ErrFull
	}
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO group_members (app, group_id, user_id, join_seq, join_num)
VALUES ($1, $2, $3, COALESCE((SELECT last_seq FROM convs WHERE app = $1 AND conv = $4), 0), $5)`,
		app, g.id, user, store.GroupConv(g.id), g.joins)
	b.Queue("DELETE FROM group_bans WHERE app = $1 AND group_id = $2 AND user_id = $3", app, g.id, user)
	b.Queue("UPDATE chat_groups SET joins = joins + 1, members = members + 1 WHERE app = $1 AND id = $2", app, g.id)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return false, err
	}
	return true, nil
}

// removeMember removes user, a member, from g: when the owner leaves, the
// earliest remaining joiner (by join number, then user id) becomes owner
// and is returned; when the last member leaves, the group is closed and
// its bans are deleted. The caller holds the group's lock.
func removeMember(ctx context.Context, tx pgx.Tx, app string, g groupRow, user string) (newOwner string, err error) {
	if _, err := tx.Exec(ctx, "DELETE FROM group_members WHERE app = $1 AND group_id = $2 AND user_id = $3", app, g.id, user); err != nil {
		return "", err
	}
	g.members--
	switch {
	case g.members == 0:
		if _, err := tx.Exec(ctx, "DELETE FROM group_bans WHERE app = $1 AND group_id = $2", app, g.id); err != nil {
			return "", err
		}
	case g.owner == user:
		err := tx.QueryRow(ctx, `SELECT user_id FROM group_members WHERE app = $1 AND group_id = $2
ORDER BY join_num, user_id LIMIT 1`, app, g.id).Scan(&newOwner)
		if err != nil {
			return "", err
		}
		g.owner = newOwner
	}
	_, err = tx.Exec(ctx, "UPDATE chat_groups SET owner = $3, members = $4 WHERE app = $1 AND id = $2", app, g.id, g.owner, g.members)
	return newOwner, err
}

// cmpErr returns err if it is not nil, else refusal.
func cmpErr(err, refusal error) error {
	if err != nil {
		return err
	}
	return refusal
}
