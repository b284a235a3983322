package core

import (
	"slices"
	"sync"
)

// Listeners is a router's listeners (Router.Listen), itself a Listener
// that hands each call to all of them. The zero value is empty and ready
// to use; its methods are safe for concurrent use, and a listener is
// never called with a lock of Listeners held.
type Listeners struct {
	mu sync.Mutex
	ls []Listener // guarded by mu; copy-on-write
}

// Add adds l; the returned func removes it.
func (s *Listeners) Add(l Listener) (remove func()) {
	s.mu.Lock()
	s.ls = append(slices.Clip(s.ls), l)
	s.mu.Unlock()
	return sync.OnceFunc(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if i := slices.Index(s.ls, l); i >= 0 {
			s.ls = slices.Delete(slices.Clone(s.ls), i, i+1)
		}
	})
}

// all returns the listeners now.
func (s *Listeners) all() []Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ls
}

// ReceiveNode implements Listener: every listener gets ev.
func (s *Listeners) ReceiveNode(app string, ev Event) {
	for _, l := range s.all() {
		l.ReceiveNode(app, ev)
	}
}

// Missed implements Listener: every listener is told.
func (s *Listeners) Missed() {
	for _, l := range s.all() {
		l.Missed()
	}
}
