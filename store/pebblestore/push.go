package pebblestore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"github.com/qim-im/qim/store"
)

// The offline-push outbox. Append writes a job (its record and its due
// index entry, see keys.go) in the batch of its message; the methods below
// change jobs under pushMu, each applying its batch under the lock and
// waiting for the sync after releasing it, as Append does.

// ClaimPush implements store.Store. It reads the due index from the push
// floor (see pushFloor) up to now, skipping the jobs whose message is not
// published yet (its Append has written its batch but not seen it synced;
// see Store), and moves each job it takes to now+lease in one synced
// batch. Holding pushMu from the read to the apply makes concurrent calls
// claim disjoint jobs: the next call's read sees the moved entries.
func (s *Store) ClaimPush(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]store.PushJob, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if limit <= 0 {
		return nil, nil
	}
	s.pushMu.Lock()
	jobs, b, err := s.claimBatch(pushMillis(now), pushMillis(now.Add(lease)), limit)
	if err == nil && b != nil {
		err = s.apply(b, true)
	}
	s.pushMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("pebblestore: claim push: %w", err)
	}
	if b == nil {
		return nil, nil
	}
	if err := s.wait(b, true); err != nil {
		return nil, fmt.Errorf("pebblestore: claim push: %w", err)
	}
	return jobs, nil
}

// claimBatch finds up to limit jobs due at now (Unix milliseconds) whose
// message is published, and returns them with Next set to until, and the
// batch that moves them there; a nil batch if there are none. It raises the
// push floor past what it read. The caller holds pushMu.
//
// Writers lower the floor after applying their batches, and the floor
// is read (and pushSince reset) before the iterator is opened. So a
// writer's entry that the iterator does not see, applied after it was
// opened, lowered the floor after the reset too, into pushSince, which the
// new floor takes into account; and one that lowered the floor before the
// read is at or above from and seen.
func (s *Store) claimBatch(now, until uint64, limit int) ([]store.PushJob, *pebble.Batch, error) {
	s.floorMu.Lock()
	from := s.pushFloor
	s.pushSince = math.MaxUint64
	s.floorMu.Unlock()
	if from > now {
		return nil, nil, nil // every entry is above the floor
	}
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: pushDueKey(from, 0), UpperBound: pushDueKey(now+1, 0)})
	if err != nil {
		return nil, nil, err
	}
	jobs, b, floor, err := s.claimScan(it, now, until, limit)
	if cerr := it.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if b != nil {
			b.Close()
		}
		return nil, nil, err
	}
	s.floorMu.Lock()
	s.pushFloor = min(floor, s.pushSince)
	s.floorMu.Unlock()
	return jobs, b, nil
}

// claimScan reads the due index entries of it, claiming up to limit jobs
// (claimJob). It returns them, their batch (nil if none), and the lowest
// Next an entry can have once the batch is applied: that of an entry left
// behind (skipped, or not read because of limit), of the moved ones
// (until), or of those above now.
func (s *Store) claimScan(it *pebble.Iterator, now, until uint64, limit int) ([]store.PushJob, *pebble.Batch, uint64, error) {
	var jobs []store.PushJob
	var b *pebble.Batch
	floor := min(now+1, until)
	for it.First(); it.Valid(); it.Next() {
		next, id, err := parsePushDueKey(it.Key())
		if err != nil {
			return nil, b, 0, err
		}
		if len(jobs) == limit {
			floor = min(floor, next) // the rest is at this Next or later
			break
		}
		claimed, err := s.claimJob(&jobs, &b, it.Key(), id, until)
		if err != nil {
			return nil, b, 0, err
		}
		if !claimed {
			floor = min(floor, next)
		}
	}
	return jobs, b, floor, it.Error()
}

// claimJob adds job id, whose due index entry is key, to jobs and to the
// batch *b (created if nil), moved to until, unless its message is not
// published yet; it reports whether it did.
func (s *Store) claimJob(jobs *[]store.PushJob, b **pebble.Batch, key []byte, id, until uint64) (bool, error) {
	v, err := s.get(pushJobKey(id))
	if err != nil {
		return false, fmt.Errorf("job %d of due index entry: %w", id, err)
	}
	j, err := decodeJob(v)
	if err != nil {
		return false, err
	}
	last, err := s.lastSeq(j.app, j.conv)
	if err != nil {
		return false, err
	}
	if last < j.seq {
		return false, nil // its message is not synced yet
	}
	if *b == nil {
		*b = s.db.NewBatch()
	}
	(*b).Delete(key, nil)
	j.next = until
	(*b).Set(pushJobKey(id), encodeJob(j), nil)
	(*b).Set(pushDueKey(until, id), nil, nil)
	*jobs = append(*jobs, j.job(id))
	return true, nil
}

// lowerPushFloor lowers the push floor to next, that of a due index entry
// written by a batch just applied (see claimBatch).
func (s *Store) lowerPushFloor(next uint64) {
	s.floorMu.Lock()
	s.pushFloor = min(s.pushFloor, next)
	s.pushSince = min(s.pushSince, next)
	s.floorMu.Unlock()
}

// RetryPush implements store.Store, in one synced batch that rewrites the
// job's record and moves its due index entry.
func (s *Store) RetryPush(ctx context.Context, job store.PushJob) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	if err := s.changePush(job.ID, &job); err != nil {
		return fmt.Errorf("pebblestore: retry push %d: %w", job.ID, err)
	}
	return nil
}

// FinishPush implements store.Store, in one synced batch.
func (s *Store) FinishPush(ctx context.Context, id uint64) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.exit()
	if err := s.changePush(id, nil); err != nil {
		return fmt.Errorf("pebblestore: finish push %d: %w", id, err)
	}
	return nil
}

// changePush stores retry's Users, Attempts and Next in job id or, with
// retry nil, deletes the job, if it exists, and waits for the sync; a
// deletion lowers pushJobs, a retry the push floor. A missing job is left
// alone.
func (s *Store) changePush(id uint64, retry *store.PushJob) error {
	s.pushMu.Lock()
	v, err := s.get(pushJobKey(id))
	if errors.Is(err, store.ErrNotFound) {
		s.pushMu.Unlock()
		return nil
	}
	var j jobRecord
	if err == nil {
		j, err = decodeJob(v)
	}
	if err != nil {
		s.pushMu.Unlock()
		return err
	}
	b := s.db.NewBatch()
	b.Delete(pushDueKey(j.next, id), nil)
	if retry == nil {
		b.Delete(pushJobKey(id), nil)
	} else {
		j.users = retry.Users
		if j.users == nil {
			j.users = []string{}
		}
		j.attempts = int64(retry.Attempts)
		j.next = pushMillis(retry.Next)
		b.Set(pushJobKey(id), encodeJob(j), nil)
		b.Set(pushDueKey(j.next, id), nil, nil)
	}
	err = s.apply(b, true)
	if err == nil && retry == nil {
		s.pushJobs.Add(-1)
	} else if err == nil {
		s.lowerPushFloor(j.next) // after the apply: see claimBatch
	}
	s.pushMu.Unlock()
	if err != nil {
		return err
	}
	return s.wait(b, true)
}

// PushBacklog implements store.Store. It reads the count the Store keeps
// (see pushJobs), which includes the jobs of Appends not synced yet.
func (s *Store) PushBacklog(ctx context.Context) (int, error) {
	if err := s.enter(); err != nil {
		return 0, err
	}
	defer s.exit()
	return int(s.pushJobs.Load()), nil
}

// countPushJobs sets pushJobs to the number of job records. Open calls it.
func (s *Store) countPushJobs() error {
	var n int64
	err := s.scan(pushJobPrefix, func(_, _ []byte) error {
		n++
		return nil
	})
	s.pushJobs.Store(n)
	return err
}

// DeliveredTo implements store.Store. For each user, it seeks to the
// user's first cursor key, point-reads the cursor of conv of that device,
// and seeks past the device's other cursors to the next device
// (deliveredOf), stopping at the first cursor at seq or beyond: a seek and
// a read per device, however many conversations each device acknowledged.
func (s *Store) DeliveredTo(ctx context.Context, app, conv string, seq uint64, users []string) (out []string, err error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.exit()
	if err := checkIDs(app, conv); err != nil {
		return nil, err
	}
	if err := checkIDs(users...); err != nil {
		return nil, err
	}
	if len(users) == 0 {
		return nil, nil
	}
	it, err := s.tenantIter(app)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, it.Close()) }()
	for _, u := range users {
		acked, found, err := deliveredOf(it, app, u, conv, seq)
		if err != nil {
			return nil, fmt.Errorf("pebblestore: delivered to: %w", err)
		}
		if found && acked >= seq {
			out = append(out, u)
		}
	}
	return out, nil
}

// job returns the store.PushJob of record j of job id.
func (j jobRecord) job(id uint64) store.PushJob {
	return store.PushJob{
		ID: id, App: j.app, Conv: j.conv, Seq: j.seq, Users: j.users,
		Attempts: int(j.attempts), Next: time.UnixMilli(int64(j.next)),
	}
}
