package main

import (
	"sync"
	"time"
)

const (
	// typingRenew is how often chat says "typing" again while keys come
	// (PROTOCOL.md 11.5: the receiver shows it for 6 s).
	typingRenew = 3 * time.Second
	// typingIdle is how long without a key before chat says the user
	// stopped typing.
	typingIdle = 5 * time.Second
)

// typist tells a conversation when the user of chat types: active at the
// first key, again every typingRenew while keys come, and inactive after
// typingIdle without a key or when a line is sent. key and lineSent never
// block: they are called from the terminal's key callback and chat's input
// loop; run does the sending, in order, in its own goroutine.
type typist struct {
	send func(active bool) // may take a round trip
	wake chan struct{}     // capacity 1: pending has something

	mu      sync.Mutex
	pending []bool // true: a key; false: a line was sent. Guarded by mu.
}

func newTypist(send func(active bool)) *typist {
	return &typist{send: send, wake: make(chan struct{}, 1)}
}

// key records a key press.
func (t *typist) key() { t.signal(true) }

// lineSent records that a line was sent: the user stopped typing.
func (t *typist) lineSent() { t.signal(false) }

func (t *typist) signal(key bool) {
	t.mu.Lock()
	// Keys in a row are one: only the order of keys and sends matters.
	if n := len(t.pending); !key || n == 0 || !t.pending[n-1] {
		t.pending = append(t.pending, key)
	}
	t.mu.Unlock()
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

// run sends what key and lineSent call for until stop is closed, and then
// says inactive if it said active.
func (t *typist) run(stop <-chan struct{}) {
	active := false
	var said time.Time // when active was last sent
	idle := time.NewTimer(typingIdle)
	idle.Stop()
	defer idle.Stop()
	for {
		select {
		case <-t.wake:
			t.mu.Lock()
			pending := t.pending
			t.pending = nil
			t.mu.Unlock()
			for _, key := range pending {
				switch {
				case key:
					idle.Reset(typingIdle)
					if !active || time.Since(said) >= typingRenew {
						t.send(true)
						active, said = true, time.Now()
					}
				case active:
					idle.Stop()
					t.send(false)
					active = false
				}
			}
		case <-idle.C:
			if active {
				t.send(false)
				active = false
			}
		case <-stop:
			if active {
				t.send(false)
			}
			return
		}
	}
}
