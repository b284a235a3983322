package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/qim-im/qim/client"
)

// receiptTimeout bounds each READ and GROUP_RECEIPTS request of chat, and
// the last READs sent when chat ends.
const receiptTimeout = 5 * time.Second

// receiptSender sends, for chat, READ for the messages it shows and, for
// each message it sends to a group, GROUP_RECEIPTS with watch, so that the
// group's counts come as events. READs are cumulative, so it sends only
// the latest seq of each conversation: a burst of messages costs one
// request. read and watch never block; run sends, in its own goroutine.
type receiptSender struct {
	c      *client.Client
	errOut io.Writer // refusals are reported there

	wake chan struct{} // capacity 1

	mu      sync.Mutex
	reads   map[client.Peer]uint64 // guarded by mu
	watches map[string]uint64      // by group; guarded by mu
}

func newReceiptSender(c *client.Client, errOut io.Writer) *receiptSender {
	return &receiptSender{c: c, errOut: errOut, wake: make(chan struct{}, 1),
		reads: make(map[client.Peer]uint64), watches: make(map[string]uint64)}
}

// read asks for a READ of conv up to seq.
func (r *receiptSender) read(conv client.Peer, seq uint64) {
	r.mu.Lock()
	r.reads[conv] = max(r.reads[conv], seq)
	r.mu.Unlock()
	r.poke()
}

// watch asks for the receipt counts of message seq of group.
func (r *receiptSender) watch(group string, seq uint64) {
	r.mu.Lock()
	r.watches[group] = max(r.watches[group], seq)
	r.mu.Unlock()
	r.poke()
}

func (r *receiptSender) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// run sends what read and watch ask for until stop is closed, and then the
// READs still waiting, for at most receiptTimeout.
func (r *receiptSender) run(stop <-chan struct{}) {
	for {
		select {
		case <-r.wake:
			r.send(false)
		case <-stop:
			r.send(true)
			return
		}
	}
}

// send sends what is waiting, each request within receiptTimeout. last
// sends only the READs, within one receiptTimeout, and reports no errors:
// the session is ending.
func (r *receiptSender) send(last bool) {
	r.mu.Lock()
	reads, watches := r.reads, r.watches
	r.reads, r.watches = make(map[client.Peer]uint64), make(map[string]uint64)
	r.mu.Unlock()
	deadline := time.Now().Add(receiptTimeout)
	for _, conv := range slices.SortedFunc(maps.Keys(reads), func(a, b client.Peer) int {
		return strings.Compare(a.String(), b.String())
	}) {
		if !last {
			deadline = time.Now().Add(receiptTimeout)
		}
		err := within(deadline, func(ctx context.Context) error {
			_, err := r.c.Read(ctx, conv, reads[conv])
			return err
		})
		if err != nil && !last {
			fmt.Fprintf(r.errOut, "qim: read receipt for %s #%d: %v\n", conv, reads[conv], err)
		}
	}
	if last {
		return
	}
	for _, g := range slices.Sorted(maps.Keys(watches)) {
		err := within(time.Now().Add(receiptTimeout), func(ctx context.Context) error {
			_, err := r.c.GroupReceipts(ctx, g, watches[g], "", 1, true)
			return err
		})
		if err != nil {
			fmt.Fprintf(r.errOut, "qim: receipts of #%s #%d: %v\n", g, watches[g], err)
		}
	}
}

// within runs f with a context that ends at deadline.
func within(deadline time.Time, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	return f(ctx)
}
