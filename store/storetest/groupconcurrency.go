package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/qim-im/qim/store"
)

// testGroupConcurrentJoins has more users join a group at once than it has
// room for: exactly the room is taken, every other join is ErrFull.
func testGroupConcurrentJoins(t *testing.T, s store.Store) {
	const limit, users = 20, 60
	mustCreateGroup(t, s, appA, "g1", "owner")
	var added, full atomic.Int64
	var wg sync.WaitGroup
	for i := range users {
		wg.Go(func() {
			ok, err := s.JoinGroup(t.Context(), appA, "g1", fmt.Sprintf("u%02d", i), limit)
			switch {
			case err == nil && ok:
				added.Add(1)
			case errors.Is(err, store.ErrFull):
				full.Add(1)
			default:
				t.Errorf("JoinGroup(u%02d) = %t, %v", i, ok, err)
			}
		})
	}
	wg.Wait()
	if added.Load() != limit-1 || full.Load() != users-limit+1 {
		t.Errorf("%d joined, %d ErrFull; want %d and %d", added.Load(), full.Load(), limit-1, users-limit+1)
	}
	if got := mustMembers(t, s, appA, "g1"); len(got) != limit {
		t.Errorf("%d members, want %d", len(got), limit)
	}
}

// testGroupKickRaces kicks a user while they leave and join in a loop, or
// while another member keeps inviting them: once the kick has returned,
// and the racing calls have ended, the user is not a member and cannot
// join.
func testGroupKickRaces(t *testing.T, s store.Store) {
	const rounds = 100
	ctx := t.Context()
	mustCreateGroup(t, s, appA, "g1", "owner")
	mustJoin(t, s, appA, "g1", "friend")
	for _, tt := range []struct {
		name string
		race func() error // one racing call; errors it may meet are filtered
	}{
		{"join and leave", func() error {
			if _, err := s.JoinGroup(ctx, appA, "g1", "victim", 0); err != nil {
				return err
			}
			_, err := s.LeaveGroup(ctx, appA, "g1", "victim")
			return err
		}},
		{"invite by a member", func() error {
			_, err := s.InviteMember(ctx, appA, "g1", "friend", "victim", 0)
			return err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for round := range rounds {
				if _, err := s.InviteMember(ctx, appA, "g1", "owner", "victim", 0); err != nil {
					t.Fatalf("round %d: the owner invites: %v", round, err)
				}
				stop := make(chan struct{})
				var wg sync.WaitGroup
				wg.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						if err := tt.race(); err != nil && !errors.Is(err, store.ErrBanned) && !errors.Is(err, store.ErrNotMember) {
							t.Errorf("round %d: racing call: %v", round, err)
							return
						}
					}
				})
				err := s.KickMember(ctx, appA, "g1", "owner", "victim")
				close(stop)
				wg.Wait()
				if err != nil {
					t.Fatalf("round %d: KickMember: %v", round, err)
				}
				if slices.Contains(mustMembers(t, s, appA, "g1"), "victim") {
					t.Fatalf("round %d: the kicked user is a member", round)
				}
				if _, err := s.JoinGroup(ctx, appA, "g1", "victim", 0); !errors.Is(err, store.ErrBanned) {
					t.Fatalf("round %d: JoinGroup after the kick: %v, want ErrBanned", round, err)
				}
			}
		})
	}
}

// testGroupConcurrentLeaves has every member but one leave at once, the
// owner among them: the one who stays ends up the owner, and the group's
// records agree with each other.
func testGroupConcurrentLeaves(t *testing.T, s store.Store) {
	const n = 30
	ctx := t.Context()
	mustCreateGroup(t, s, appA, "g1", "owner")
	for i := range n {
		mustJoin(t, s, appA, "g1", fmt.Sprintf("u%02d", i))
	}
	var wg sync.WaitGroup
	for i := range n - 1 { // u29 stays
		wg.Go(func() {
			if _, err := s.LeaveGroup(ctx, appA, "g1", fmt.Sprintf("u%02d", i)); err != nil {
				t.Errorf("LeaveGroup(u%02d): %v", i, err)
			}
		})
	}
	wg.Go(func() {
		if _, err := s.LeaveGroup(ctx, appA, "g1", "owner"); err != nil {
			t.Errorf("LeaveGroup(owner): %v", err)
		}
	})
	wg.Wait()
	if got := mustMembers(t, s, appA, "g1"); !slices.Equal(got, []string{"u29"}) {
		t.Errorf("Members = %v, want [u29]", got)
	}
	if g := mustGetGroup(t, s, appA, "g1"); g.Owner != "u29" {
		t.Errorf("owner %q, want the last member u29", g.Owner)
	}
	// The member count agrees: the last member's leaving closes the group.
	if _, err := s.LeaveGroup(ctx, appA, "g1", "u29"); err != nil {
		t.Fatalf("LeaveGroup(u29): %v", err)
	}
	if _, err := s.GetGroup(ctx, appA, "g1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetGroup after everyone left: %v, want ErrNotFound", err)
	}
}
