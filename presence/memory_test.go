package presence

import (
	"fmt"
	"runtime"
	"testing"
	"testing/synctest"
	"time"
)

// maxBytesPerUser is what an offline user remembered for its last_seen may
// cost at most, with a 9-byte user name: measured at about 205 bytes (the
// 112-byte entry, its 16-byte key and its share of the shard's map).
const maxBytesPerUser = 240

// TestMemoryPerUser measures the heap held per offline user remembered,
// then fills a tracker bounded to n users with 4n more, n/10 at a time, and
// checks that it still holds n users, in about as many bytes.
func TestMemoryPerUser(t *testing.T) {
	const n = 10_000
	synctest.Test(t, func(t *testing.T) {
		l := NewLocal(Config{MaxUsers: n})
		defer l.Close()
		names := make([]string, 5*n)
		for i := range names {
			names[i] = fmt.Sprintf("u%08d", i)
		}
		base := liveHeap()
		for _, u := range names[:n] {
			l.Join("app", u, "phone", false).Leave()
		}
		time.Sleep(DefaultGrace + 2*DefaultCoalesce)
		synctest.Wait()
		if got := remembered(l); got != n {
			t.Fatalf("%d users remembered, want %d", got, n)
		}
		full := liveHeap() - base
		per := full / n
		t.Logf("%d bytes per offline user remembered (%d in all)", per, full)
		if per > maxBytesPerUser {
			t.Errorf("%d bytes per offline user, want at most %d", per, maxBytesPerUser)
		}

		// In batches: users in their grace period are held on top of the
		// bound, and maps keep the room of their peak.
		for i, u := range names[n:] {
			l.Join("app", u, "phone", false).Leave()
			if (i+1)%(n/10) == 0 {
				time.Sleep(DefaultGrace + 2*DefaultCoalesce)
			}
		}
		synctest.Wait()
		if got := remembered(l); got != n {
			t.Errorf("%d users remembered after %d, want %d (MaxUsers)", got, len(names), n)
		}
		after := liveHeap() - base
		t.Logf("%d bytes after %d users", after, len(names))
		if after > full*5/4 {
			t.Errorf("%d bytes after %d users, %d after %d: the bound does not hold in bytes", after, len(names), full, n)
		}
		runtime.KeepAlive(names)
	})
}

// TestMaxUsers checks which users a small tracker forgets: the offline
// users that went offline first, never one that is online.
func TestMaxUsers(t *testing.T) {
	const max = 64
	synctest.Test(t, func(t *testing.T) {
		l := NewLocal(Config{MaxUsers: max})
		defer l.Close()
		l.Join("app", "keep", "phone", false)
		const n = 1000
		for i := range n {
			l.Join("app", fmt.Sprint("u", i), "phone", false).Leave()
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(DefaultGrace + 2*DefaultCoalesce)
		synctest.Wait()
		if got := remembered(l); got != max+1 {
			t.Errorf("%d users remembered, want %d offline and 1 online", got, max)
		}
		got := l.Get("app", []string{"keep", "u0", fmt.Sprint("u", n-1)})
		if got[0].State != online {
			t.Errorf("the user online was forgotten: %v", got[0])
		}
		if got[1].LastSeen != 0 {
			t.Errorf("the first user offline is remembered: %v", got[1])
		}
		if got[2].LastSeen == 0 || got[2].State != offline {
			t.Errorf("the last user offline is forgotten: %v", got[2])
		}
	})
}

// remembered returns the number of users l holds.
func remembered(l *Local) int {
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.users)
		s.mu.Unlock()
	}
	return n
}

// liveHeap returns the bytes of live heap objects, after a collection.
func liveHeap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
