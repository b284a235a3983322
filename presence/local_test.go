package presence

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	qimpb "github.com/qim-im/qim/proto"
)

const (
	offline = qimpb.PresenceState_OFFLINE
	online  = qimpb.PresenceState_ONLINE
	away    = qimpb.PresenceState_AWAY
)

// recorder collects what a tracker publishes, with the (fake) time of each
// change relative to the start of the test's bubble.
type recorder struct {
	start time.Time
	mu    sync.Mutex
	got   []published
}

// published is one change as a recorder saw it: its times in ms since the
// start of the bubble.
type published struct {
	At       time.Duration // when Publish was called
	User     string
	State    qimpb.PresenceState
	Since    int64
	LastSeen int64
}

func (p published) String() string {
	return fmt.Sprintf("%v %s %v since=%d last_seen=%d", p.At, p.User, p.State, p.Since, p.LastSeen)
}

func newRecorder() *recorder { return &recorder{start: time.Now()} }

func (r *recorder) publish(c Change) {
	p := c.Presence
	base := r.start.UnixMilli()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, published{
		At: time.Since(r.start), User: p.User, State: p.State,
		Since: p.Since - base, LastSeen: p.LastSeen - base,
	})
}

func (r *recorder) events() []published {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]published(nil), r.got...)
}

// step is one action of a scenario: at At (since the start), device Dev of
// user "u" joins (away or not), leaves, or sets its away flag.
type step struct {
	At   time.Duration
	Do   string // "join", "join-away", "leave", "away", "back"
	Dev  string
	User string // "u" if empty
}

// TestScenarios plays timed joins, leaves and away toggles against a
// tracker with the default grace (5 s) and window (1 s), and checks every
// change it publishes: when, which state, since and last_seen. Actions fall
// between the tracker's deadlines (never on the same millisecond), so the
// order of timers and actions is fixed.
func TestScenarios(t *testing.T) {
	const s = time.Second
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	for _, tt := range []struct {
		name  string
		steps []step
		want  []published // User defaults to "u"; Since and LastSeen in ms since the start
	}{
		{
			name:  "join publishes ONLINE once, a window later",
			steps: []step{{At: ms(100), Do: "join", Dev: "a"}},
			want:  []published{{At: ms(1100), State: online, Since: 100, LastSeen: 1100}},
		},
		{
			name:  "join away publishes AWAY",
			steps: []step{{At: ms(100), Do: "join-away", Dev: "a"}},
			want:  []published{{At: ms(1100), State: away, Since: 100, LastSeen: 1100}},
		},
		{
			name: "leave publishes OFFLINE once, grace plus a window later, last seen at the leave",
			steps: []step{
				{At: ms(100), Do: "join", Dev: "a"},
				{At: 3 * s, Do: "leave", Dev: "a"},
			},
			want: []published{
				{At: ms(1100), State: online, Since: 100, LastSeen: 1100},
				{At: 9 * s, State: offline, Since: 3000, LastSeen: 3000},
			},
		},
		{
			name: "leave and rejoin within grace publishes nothing",
			steps: []step{
				{At: ms(100), Do: "join", Dev: "a"},
				{At: 3 * s, Do: "leave", Dev: "a"},
				{At: ms(7900), Do: "join", Dev: "a"},
			},
			want: []published{{At: ms(1100), State: online, Since: 100, LastSeen: 1100}},
		},
		{
			name: "rejoin after grace, within the window of OFFLINE, publishes nothing",
			steps: []step{
				{At: ms(100), Do: "join", Dev: "a"},
				{At: 3 * s, Do: "leave", Dev: "a"},
				{At: ms(8500), Do: "join", Dev: "b"},
			},
			want: []published{{At: ms(1100), State: online, Since: 100, LastSeen: 1100}},
		},
		{
			name: "rejoin after OFFLINE publishes ONLINE",
			steps: []step{
				{At: ms(100), Do: "join", Dev: "a"},
				{At: 3 * s, Do: "leave", Dev: "a"},
				{At: ms(9500), Do: "join", Dev: "a"},
			},
			want: []published{
				{At: ms(1100), State: online, Since: 100, LastSeen: 1100},
				{At: 9 * s, State: offline, Since: 3000, LastSeen: 3000},
				{At: ms(10500), State: online, Since: 9500, LastSeen: 10500},
			},
		},
		{
			name: "rejoin away within grace publishes AWAY only",
			steps: []step{
				{At: ms(100), Do: "join", Dev: "a"},
				{At: 3 * s, Do: "leave", Dev: "a"},
				{At: 4 * s, Do: "join-away", Dev: "a"},
			},
			want: []published{
				{At: ms(1100), State: online, Since: 100, LastSeen: 1100},
				{At: 5 * s, State: away, Since: 4000, LastSeen: 5000},
			},
		},
		{
			name: "join and leave before the first window publishes ONLINE, then OFFLINE",
			steps: []step{
				{At: ms(100), Do: "join", Dev: "a"},
				{At: ms(300), Do: "leave", Dev: "a"},
			},
			want: []published{
				{At: ms(1100), State: online, Since: 100, LastSeen: 1100},
				{At: ms(6300), State: offline, Since: 300, LastSeen: 300},
			},
		},
		{
			name: "two devices, one leaves: still online",
			steps: []step{
				{At: ms(100), Do: "join", Dev: "a"},
				{At: ms(200), Do: "join", Dev: "b"},
				{At: 3 * s, Do: "leave", Dev: "a"},
				{At: 20 * s, Do: "leave", Dev: "b"},
			},
			want: []published{
				{At: ms(1100), State: online, Since: 100, LastSeen: 1100},
				{At: 26 * s, State: offline, Since: 20000, LastSeen: 20000},
			},
		},
		{
			name: "away and back within a window publishes nothing",
			steps: []step{
				{At: ms(100), Do: "join", Dev: "a"},
				{At: 3 * s, Do: "away", Dev: "a"},
				{At: ms(3900), Do: "back", Dev: "a"},
			},
			want: []published{{At: ms(1100), State: online, Since: 100, LastSeen: 1100}},
		},
		{
			name: "toggles within a window publish the latest state once, a window after it began",
			steps: []step{
				{At: ms(100), Do: "join", Dev: "a"},
				{At: 3 * s, Do: "away", Dev: "a"},
				{At: ms(3300), Do: "back", Dev: "a"},
				{At: ms(3600), Do: "away", Dev: "a"},
			},
			want: []published{
				{At: ms(1100), State: online, Since: 100, LastSeen: 1100},
				{At: ms(4600), State: away, Since: 3600, LastSeen: 4600}, // the revert at 3.3 s closed the first window
			},
		},
		{
			name: "toggles in a row: at most one change per window",
			steps: []step{
				{At: ms(100), Do: "join", Dev: "a"},
				{At: ms(1300), Do: "away", Dev: "a"},
				{At: ms(2400), Do: "back", Dev: "a"},
				{At: ms(2500), Do: "away", Dev: "a"},
				{At: ms(3500), Do: "back", Dev: "a"},
			},
			want: []published{
				{At: ms(1100), State: online, Since: 100, LastSeen: 1100},
				{At: ms(2300), State: away, Since: 1300, LastSeen: 2300},
				{At: ms(4500), State: online, Since: 3500, LastSeen: 4500},
			},
		},
		{
			name: "one device away, the other not: online; both away: away",
			steps: []step{
				{At: ms(100), Do: "join", Dev: "a"},
				{At: ms(200), Do: "join", Dev: "b"},
				{At: 3 * s, Do: "away", Dev: "a"},
				{At: 5 * s, Do: "away", Dev: "b"},
				{At: 7 * s, Do: "leave", Dev: "a"},
			},
			want: []published{
				{At: ms(1100), State: online, Since: 100, LastSeen: 1100},
				{At: 6 * s, State: away, Since: 5000, LastSeen: 6000},
			},
		},
		{
			name: "the foreground device leaves: away",
			steps: []step{
				{At: ms(100), Do: "join", Dev: "a"},
				{At: ms(200), Do: "join-away", Dev: "b"},
				{At: 3 * s, Do: "leave", Dev: "a"},
			},
			want: []published{
				{At: ms(1100), State: online, Since: 100, LastSeen: 1100},
				{At: 4 * s, State: away, Since: 3000, LastSeen: 4000},
			},
		},
		{
			name: "users are independent",
			steps: []step{
				{At: ms(100), Do: "join", Dev: "a"},
				{At: ms(200), Do: "join", Dev: "a", User: "v"},
				{At: ms(300), Do: "leave", Dev: "a", User: "v"},
			},
			want: []published{
				{At: ms(1100), State: online, Since: 100, LastSeen: 1100},
				{At: ms(1200), User: "v", State: online, Since: 200, LastSeen: 1200},
				{At: ms(6300), User: "v", State: offline, Since: 300, LastSeen: 300},
			},
		},
		{
			name: "leave twice, away after leave: ignored",
			steps: []step{
				{At: ms(100), Do: "join", Dev: "a"},
				{At: ms(200), Do: "join", Dev: "b"},
				{At: 2 * s, Do: "leave", Dev: "a"},
				{At: ms(2100), Do: "leave", Dev: "a"},
				{At: ms(2200), Do: "away", Dev: "a"},
			},
			want: []published{{At: ms(1100), State: online, Since: 100, LastSeen: 1100}},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				r := newRecorder()
				l := NewLocal(Config{Publish: r.publish})
				defer l.Close()
				conns := map[string]Conn{}
				for _, st := range tt.steps {
					time.Sleep(st.At - time.Since(r.start))
					user := cmp(st.User, "u")
					key := user + "/" + st.Dev
					switch st.Do {
					case "join", "join-away":
						conns[key] = l.Join("app", user, st.Dev, st.Do == "join-away")
					case "leave":
						conns[key].Leave()
					case "away", "back":
						conns[key].SetAway(st.Do == "away")
					default:
						t.Fatalf("unknown action %q", st.Do)
					}
				}
				time.Sleep(time.Minute)
				synctest.Wait()
				want := make([]published, len(tt.want))
				for i, w := range tt.want {
					w.User = cmp(w.User, "u")
					want[i] = w
				}
				if got := r.events(); !equalEvents(got, want) {
					t.Errorf("published:\n%s\nwant:\n%s", list(got), list(want))
				}
			})
		})
	}
}

// TestGet checks Get against what was published: a user never seen, one
// online (whose last_seen is now), one offline.
func TestGet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := NewLocal(Config{})
		defer l.Close()
		base := time.Now().UnixMilli()
		a := l.Join("app", "alice", "phone", false)
		l.Join("app", "bob", "phone", false)
		if got := l.Get("app", []string{"alice"}); got[0].State != offline || got[0].LastSeen != 0 {
			t.Errorf("before the first window: %v, want OFFLINE, last_seen 0 (nothing published)", got[0])
		}
		time.Sleep(2 * time.Second)
		a.Leave()
		time.Sleep(10 * time.Second)
		got := l.Get("app", []string{"bob", "carol", "alice", "bob"})
		now := time.Now().UnixMilli()
		want := []*qimpb.Presence{
			{User: "bob", State: online, Since: base, LastSeen: now},
			{User: "carol"},
			{User: "alice", State: offline, Since: base + 2000, LastSeen: base + 2000},
			{User: "bob", State: online, Since: base, LastSeen: now},
		}
		for i := range want {
			if g, w := got[i], want[i]; g.User != w.User || g.State != w.State || g.Since != w.Since || g.LastSeen != w.LastSeen {
				t.Errorf("Get[%d] = %v, want %v", i, g, w)
			}
		}
		if got := l.Get("other", []string{"bob"}); got[0].State != offline {
			t.Errorf("bob in another app: %v, want OFFLINE", got[0])
		}
	})
}

// TestSinceIncreases checks that since grows by at least 1 ms between
// changes of a user even when they happen within one millisecond, with a
// window shorter than a millisecond.
func TestSinceIncreases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRecorder()
		l := NewLocal(Config{Publish: r.publish, Coalesce: 100 * time.Microsecond, Grace: 200 * time.Microsecond})
		defer l.Close()
		c := l.Join("app", "u", "a", false)
		time.Sleep(150 * time.Microsecond)
		c.SetAway(true)
		time.Sleep(150 * time.Microsecond)
		c.Leave()
		time.Sleep(time.Second)
		synctest.Wait()
		got := r.events()
		if len(got) != 3 {
			t.Fatalf("published %s, want ONLINE, AWAY, OFFLINE", list(got))
		}
		for i, want := range []int64{0, 1, 2} {
			if got[i].Since != want {
				t.Errorf("change %d since %d, want %d:\n%s", i, got[i].Since, want, list(got))
			}
		}
	})
}

// TestClose checks that no change is published after Close returns, not
// even those whose window closes later, and that joins after Close do
// nothing.
func TestClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRecorder()
		l := NewLocal(Config{Publish: r.publish})
		c := l.Join("app", "u", "a", false)
		time.Sleep(2 * time.Second)
		c.Leave()                      // OFFLINE would be published at 8 s
		l.Join("app", "v", "a", false) // ONLINE would be published at 3 s
		l.Close()
		l.Join("app", "w", "a", false).Leave()
		c.SetAway(true)
		time.Sleep(time.Minute)
		synctest.Wait()
		if got := r.events(); len(got) != 1 {
			t.Errorf("published %s, want only the ONLINE before Close", list(got))
		}
	})
}

// TestCloseWaitsForPublish checks that Close waits for a Publish in
// progress and that the rest of its batch is dropped.
func TestCloseWaitsForPublish(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		calls := 0
		entered := make(chan struct{}, 1)
		release := make(chan struct{})
		l := NewLocal(Config{MaxUsers: 1, Publish: func(Change) { // one shard: one batch
			mu.Lock()
			calls++
			mu.Unlock()
			select {
			case entered <- struct{}{}:
			default:
			}
			<-release
		}})
		for _, u := range []string{"a", "b", "c"} {
			l.Join("app", u, "d", false)
		}
		<-entered // the first of three changes is being published
		closed := make(chan struct{})
		go func() {
			l.Close()
			close(closed)
		}()
		synctest.Wait()
		select {
		case <-closed:
			t.Fatal("Close returned while Publish was running")
		default:
		}
		close(release)
		<-closed
		mu.Lock()
		defer mu.Unlock()
		if calls != 1 {
			t.Errorf("Publish called %d times, want 1 (the rest dropped by Close)", calls)
		}
	})
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func equalEvents(a, b []published) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func list(ps []published) string {
	if len(ps) == 0 {
		return "  (none)"
	}
	var b strings.Builder
	for _, p := range ps {
		fmt.Fprintf(&b, "  %v\n", p)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// TestKeys checks that users are told apart whatever bytes their names and
// apps hold, and that changes carry the names they joined with.
func TestKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		got := map[[2]string]qimpb.PresenceState{}
		l := NewLocal(Config{Publish: func(c Change) {
			mu.Lock()
			defer mu.Unlock()
			got[[2]string{c.App, c.Presence.User}] = c.Presence.State
		}})
		defer l.Close()
		keys := [][2]string{{"a\x00", "b"}, {"a", "\x00b"}, {"", "ab"}, {"ab", ""}, {strings.Repeat("x", 300), "u"}, {"x", strings.Repeat("u", 300)}}
		for i, k := range keys {
			l.Join(k[0], k[1], "d", i%2 == 0)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		for i, k := range keys {
			want := online
			if i%2 == 0 {
				want = away
			}
			if got[k] != want {
				t.Errorf("app %q user %q: published %v, want %v", k[0], k[1], got[k], want)
			}
			if g := l.Get(k[0], []string{k[1]})[0]; g.State != want {
				t.Errorf("Get(%q, %q) = %v, want %v", k[0], k[1], g.State, want)
			}
		}
		if len(got) != len(keys) {
			t.Errorf("published %d users, want %d", len(got), len(keys))
		}
	})
}
