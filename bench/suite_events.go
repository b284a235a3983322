package bench

import (
	"context"
	"path/filepath"
	"sync"
	"time"
)

// presenceCoalesce is the coalescing window of presence-fanout's qimd
// (qimd serve --presence-coalesce), instead of the default second, which
// would make the run last seconds per change.
const presenceCoalesce = 10 * time.Millisecond

// receipts runs pair-durable with the receipts scenario's pairs and window
// (a durable write plus a push to the peer, like a READ), then the
// receipts scenario, on the suite's qimd.
func (s *suite) receipts(ctx context.Context) error {
	o := s.o.Receipts
	o.defaults()
	base := s.o.Pair
	base.defaults()
	base.Pairs, base.Window, base.Offline = o.Pairs, o.Window, true
	s.progressf("baseline: pair-durable, %d pairs x %d in flight", base.Pairs, base.Window)
	dur, err := Pair(ctx, s.qim, base)
	if err != nil {
		return err
	}
	r, err := Receipts(ctx, s.qim, o)
	if err != nil {
		return err
	}
	s.progressf("receipts: %d READs acknowledged to their senders by %d events in %v (%d dropped)",
		r.Receipts, r.Events, r.Elapsed.Round(time.Millisecond), r.Dropped)
	s.emit(Line{"receipts", r.Rate(), "receipts/s", dur.Rate()})
	s.emit(Line{"receipts-p99", ms(r.Latency.P99), "ms", ms(dur.Latency.P99)})
	s.emit(Line{"receipts-cpu", r.CPUPerReceipt(), "us/receipt", dur.CPUPerMsg()})
	return nil
}

// presenceFanout runs the presence-fanout scenario, with the unstored group
// messages that are its baseline, on a qimd of its own whose presence
// coalescing window is presenceCoalesce, stopped after.
func (s *suite) presenceFanout(ctx context.Context) error {
	o := s.o.Presence
	if o.Gap == 0 {
		o.Gap = 5 * presenceCoalesce
	}
	env, stop, err := s.startSingle(ctx, "qimd-presence", "--presence-coalesce", presenceCoalesce.String())
	if err != nil {
		return err
	}
	defer stop()
	r, err := PresenceFanout(ctx, env, o)
	if err != nil {
		return err
	}
	s.progressf("presence-fanout: %d changes to %d watchers; request to first watcher p50 %v (message: %v)",
		r.Changes, r.Watchers, r.Presence.First.P50.Round(time.Microsecond), r.Message.First.P50.Round(time.Microsecond))
	if r.Presence.First.P50 > 20*presenceCoalesce {
		s.progressf("presence-fanout: warning: changes reach their first watcher %v after the request: qimd's coalescing window is not the %v asked for",
			r.Presence.First.P50.Round(time.Millisecond), presenceCoalesce)
	}
	s.emit(Line{"presence-fanout", r.Presence.Rate(), "deliveries/s", r.Message.Rate()})
	s.emit(Line{"presence-fanout-spread", ms(r.Presence.Spread.P50), "ms", ms(r.Message.Spread.P50)})
	s.emit(Line{"presence-fanout-spread-max", ms(r.Presence.Spread.Max), "ms", ms(r.Message.Spread.Max)})
	return nil
}

// startSingle starts one more qimd named name, with its data in a
// directory of that name and the extra flags of startQimd. stop kills it
// and waits until it has exited; it may be called more than once.
func (s *suite) startSingle(ctx context.Context, name string, extra ...string) (*Env, func(), error) {
	env, p, err := s.startQimd(ctx, name, filepath.Join(s.o.Dir, name), freeUDP(), freeTCP(), extra...)
	stop := sync.OnceFunc(func() {
		if p.cmd != nil {
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	if err != nil {
		stop()
		return nil, nil, err
	}
	return env, stop, nil
}
