package reliability_test

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/qim-im/qim/client"
	"github.com/qim-im/qim/internal/testserver"
	qimpb "github.com/qim-im/qim/proto"
)

// TestKickHolds has a member leave and join a group in a loop while the
// owner kicks them, round after round (150 rounds; 1,000 with QIM_SOAK=1):
// once the kick is answered and the loop has stopped, the member is not a
// member, and a JOIN is refused with FORBIDDEN. Before the store decided
// bans atomically, a JOIN that checked the ban just before the kick added
// the member back and deleted the ban (34 of 100 rounds).
func TestKickHolds(t *testing.T) {
	rounds := 150
	if soak() {
		rounds = 1000
	}
	srv := testserver.Start(t, testserver.Options{})
	owner := dial(t, demoConfig(srv, "owner", "d"))
	victim := dial(t, demoConfig(srv, "victim", "d"))
	// The owner invites the victim back every round: from a contact,
	// invitations are not limited.
	if err := victim.AddContact(ctxT(t), "owner"); err != nil {
		t.Fatal(err)
	}
	g, err := owner.CreateGroup(ctxT(t), "kick race")
	if err != nil {
		t.Fatal(err)
	}
	id := g.GetId()

	isCode := func(err error, code qimpb.Code) bool {
		var ce *client.Error
		return errors.As(err, &ce) && ce.Code == code
	}
	var joined, refused int
	start := time.Now()
	for round := range rounds {
		if err := owner.Invite(ctxT(t), id, "victim"); err != nil {
			t.Fatalf("round %d: invite: %v", round, err)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var loopJoined, loopRefused int
		var loopErr error
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				// A refusal is FORBIDDEN: banned (JOIN) or not a
				// member any more (LEAVE after the kick).
				if _, err := victim.JoinGroup(ctxT(t), id); err == nil {
					loopJoined++
				} else if isCode(err, qimpb.Code_FORBIDDEN) {
					loopRefused++
				} else {
					loopErr = err
					return
				}
				if err := victim.LeaveGroup(ctxT(t), id); err != nil && !isCode(err, qimpb.Code_FORBIDDEN) {
					loopErr = err
					return
				}
			}
		})
		// Let the loop run for a varying moment, so that kicks land in
		// every phase of it.
		time.Sleep(time.Duration(round%7) * time.Millisecond)
		kickErr := owner.Kick(ctxT(t), id, "victim")
		close(stop)
		wg.Wait()
		joined += loopJoined
		refused += loopRefused
		if kickErr != nil {
			t.Fatalf("round %d: kick: %v", round, kickErr)
		}
		if loopErr != nil {
			t.Fatalf("round %d: the member's loop: %v", round, loopErr)
		}
		members, err := owner.Members(ctxT(t), id)
		if err != nil {
			t.Fatalf("round %d: members: %v", round, err)
		}
		if slices.Contains(members, "victim") {
			t.Fatalf("round %d: the kicked member is still a member", round)
		}
		if _, err := victim.JoinGroup(ctxT(t), id); !isCode(err, qimpb.Code_FORBIDDEN) {
			t.Fatalf("round %d: JOIN after the kick: %v, want FORBIDDEN", round, err)
		}
	}
	t.Logf("%d rounds in %v: the member's loop joined %d times, was refused %d times; every kick held",
		rounds, time.Since(start).Round(time.Millisecond), joined, refused)
}
