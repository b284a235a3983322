package core

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// groupCache holds groups' descriptions and member lists, so that sends and
// fan-out do not read the store. Every membership change goes through a
// hub, which drops the entry after the store write and broadcasts the
// change to the other nodes' hubs (Event.Group), which drop theirs; the
// next reader loads it again. In a cluster, where a broadcast may be lost,
// an entry also expires ttl after it was loaded.
type groupCache struct {
	ttl time.Duration // 0: entries do not expire (one node)
	lru *lru.Cache[convKey, *groupState]
	// gen counts changes; a snapshot loaded from the store is cached only
	// if no change happened while it was being read, so a stale snapshot
	// never outlives the change that made it stale.
	gen atomic.Uint64
	mu  sync.Mutex // orders a load's check of gen and Add against forgetGroup
}

// groupState is an immutable snapshot of a group.
type groupState struct {
	info    store.Group // LastSeq is not kept current here
	members []string    // sorted
	loaded  time.Time   // when it was read from the store
}

func (g *groupState) isMember(user string) bool {
	_, ok := slices.BinarySearch(g.members, user)
	return ok
}

func newGroupCache(n int, ttl time.Duration) (*groupCache, error) {
	c, err := lru.New[convKey, *groupState](n)
	if err != nil {
		return nil, err
	}
	return &groupCache{lru: c, ttl: ttl}, nil
}

// group returns a group's snapshot, from the cache or the store. A group
// that does not exist in app gives NOT_FOUND.
func (h *Hub) group(ctx context.Context, app, id string) (*groupState, error) {
	k := convKey{app, id}
	if g, ok := h.groups.lru.Get(k); ok && (h.groups.ttl == 0 || h.now().Sub(g.loaded) < h.groups.ttl) {
		return g, nil
	}
	loaded := h.now() // before the read: an entry never outlives its TTL
	gen := h.groups.gen.Load()
	info, err := h.store.GetGroup(ctx, app, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, Errorf(qimpb.Code_NOT_FOUND, "no such group")
	}
	if err != nil {
		return nil, StoreError("get group", err)
	}
	members, err := h.store.Members(ctx, app, id)
	if err != nil {
		return nil, StoreError("get members", err)
	}
	g := &groupState{info: info, members: members, loaded: loaded}
	h.groups.mu.Lock()
	if h.groups.gen.Load() == gen {
		h.groups.lru.Add(k, g)
	}
	h.groups.mu.Unlock()
	return g, nil
}

// changedGroup drops a group's snapshot after this hub changed it, and has
// every other node's hub drop theirs.
func (h *Hub) changedGroup(app, id string) {
	h.forgetGroup(app, id)
	if h.shared {
		h.router.Broadcast(app, Event{Group: id})
	}
}

// forgetGroup drops a group's snapshot.
func (h *Hub) forgetGroup(app, id string) {
	h.groups.mu.Lock()
	h.groups.gen.Add(1)
	h.groups.lru.Remove(convKey{app, id})
	h.groups.mu.Unlock()
}
