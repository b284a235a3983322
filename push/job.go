package push

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/qim-im/qim/metrics"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/store"
)

// work does one pass over a job the worker claimed: it works out (once)
// and narrows down who is to be woken, sends up to maxUsersPerPass
// notifications, and removes the job or stores what is left of it. A
// store error leaves the job as it is: it is due again when its lease
// ends. It runs in a goroutine of Run's.
func (w *Worker) work(ctx context.Context, job store.PushJob) {
	log := w.logger.With("app", job.App, "conv", job.Conv, "seq", job.Seq, "job", job.ID)
	pass, cancel := context.WithTimeout(ctx, w.lease*3/4)
	defer cancel()

	msg, err := w.message(pass, job)
	if err != nil {
		w.storeFailed(ctx, log, job, "read the message", err)
		return
	}
	if msg == nil {
		log.Debug("push: the message is gone; nothing to send")
		w.finish(ctx, log, job)
		return
	}
	users := job.Users
	if users == nil {
		if users, err = w.recipients(pass, job, msg); err != nil {
			w.storeFailed(ctx, log, job, "read the recipients", err)
			return
		}
	}
	if len(users) > 0 {
		delivered, err := w.store.DeliveredTo(pass, job.App, job.Conv, job.Seq, users)
		if err != nil {
			w.storeFailed(ctx, log, job, "read the acknowledgements", err)
			return
		}
		users = without(users, delivered)
	}
	if len(users) == 0 {
		w.finish(ctx, log, job)
		return
	}
	now := w.now()
	if age := now.Sub(time.UnixMilli(msg.GetTimestamp())); age > w.maxAge {
		for range users {
			w.metrics.PushDropped(metrics.PushExpired)
		}
		log.Warn("push: gave up notifications older than the maximum age", "users", len(users), "age", age.Round(time.Second), "attempts", job.Attempts)
		w.finish(ctx, log, job)
		return
	}
	if job.Users == nil {
		// The recipients are decided: store them before the first
		// request, so that a worker that takes the job over after a crash
		// wakes the same users.
		job.Users, job.Next = users, now.Add(w.lease)
		if err := w.store.RetryPush(pass, job); err != nil {
			w.storeFailed(ctx, log, job, "store the recipients", err)
			return
		}
	}

	batch, rest := users[:min(len(users), maxUsersPerPass)], users[min(len(users), maxUsersPerPass):]
	failed, unsent, retryAfter := w.send(pass, log, job, msg, batch)
	left := slices.Concat(failed, unsent, rest)
	switch {
	case len(left) == 0:
		w.finish(ctx, log, job)
		return
	case len(failed) > 0:
		job.Attempts++
		job.Next = w.now().Add(w.backoff(job.Attempts, retryAfter))
		log.Debug("push: notifications failed; retrying later", "failed", len(failed), "left", len(left), "attempts", job.Attempts, "next", job.Next)
	default:
		// Not sent yet, through no fault of the gateway's (the pass ended,
		// or the worker is stopping): due again at once.
		job.Next = w.now()
		defer w.Wake()
	}
	job.Users = left
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer wcancel()
	if err := w.store.RetryPush(wctx, job); err != nil {
		log.Error("push: reschedule a job; it is due again after its lease", "err", err)
	}
}

// message returns the job's message, or nil if it is no longer stored.
func (w *Worker) message(ctx context.Context, job store.PushJob) (*qimpb.Message, error) {
	if job.Seq == 0 {
		return nil, nil
	}
	msgs, err := w.store.Messages(ctx, job.App, job.Conv, job.Seq-1, 1)
	if err != nil || len(msgs) == 0 || msgs[0].GetSeq() != job.Seq {
		return nil, err
	}
	return msgs[0], nil
}

// recipients returns the users msg is for, but its sender: the addressee
// of a 1:1 message, or the current members of its group (none if the
// group is closed).
func (w *Worker) recipients(ctx context.Context, job store.PushJob, msg *qimpb.Message) ([]string, error) {
	var users []string
	switch {
	case msg.GetToUser() != "":
		users = []string{msg.GetToUser()}
	case msg.GetToGroup() != "":
		members, err := w.store.Members(ctx, job.App, msg.GetToGroup())
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		users = members
	}
	users = slices.DeleteFunc(users, func(u string) bool { return u == msg.GetFromUser() })
	if users == nil {
		users = []string{} // decided: no one
	}
	return users, nil
}

// send sends msg's notification to each of users, at most Concurrency
// requests at a time across the worker. It returns the users whose
// request failed and is to be retried, those it did not send to because
// ctx ended first, and the longest Retry-After a gateway answered with.
func (w *Worker) send(ctx context.Context, log *slog.Logger, job store.PushJob, msg *qimpb.Message, users []string) (failed, unsent []string, retryAfter time.Duration) {
	var mu sync.Mutex // guards failed, unsent, retryAfter
	var wg sync.WaitGroup
	for _, user := range users {
		select {
		case w.requests <- struct{}{}:
		case <-ctx.Done():
			mu.Lock()
			unsent = append(unsent, user)
			mu.Unlock()
			continue
		}
		wg.Go(func() {
			defer func() { <-w.requests }()
			n := Notification(job.App, job.Conv, msg, user, w.preview)
			res := w.post(ctx, n)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case res.err == nil && res.status/100 == 2:
				w.metrics.PushSent()
				w.gatewayOK()
				log.Debug("push: sent", "user", user, "id", n.Id)
			case ctx.Err() != nil:
				unsent = append(unsent, user)
			case res.err == nil && res.status/100 == 4 && res.status != http.StatusRequestTimeout && res.status != http.StatusTooManyRequests:
				w.metrics.PushDropped(metrics.PushRejected)
				w.gatewayOK()
				log.Warn("push: the gateway refused a notification; gave it up", "user", user, "id", n.Id, "status", res.status)
			default:
				w.metrics.PushFailed()
				w.gatewayFailed(res)
				failed = append(failed, user)
				retryAfter = max(retryAfter, res.retryAfter)
			}
		})
	}
	wg.Wait()
	return failed, unsent, retryAfter
}

// result is the outcome of one request.
type result struct {
	status     int           // the answer's status, if err is nil
	retryAfter time.Duration // its Retry-After, in seconds, if any
	err        error         // no answer
}

// post sends n to the gateway.
func (w *Worker) post(ctx context.Context, n *qimpb.PushNotification) result {
	body, err := Marshal(n)
	if err != nil {
		return result{err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return result{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "qimd-push")
	req.Header.Set(IdempotencyHeader, n.Id)
	req.Header.Set(SignatureHeader, Sign(w.secret, body, w.now()))
	resp, err := w.client.Do(req)
	if err != nil {
		return result{err: err}
	}
	// Read a little of the body so that the connection can be reused.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	res := result{status: resp.StatusCode}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		res.retryAfter = time.Duration(s) * time.Second
	}
	return res
}

// gatewayOK and gatewayFailed log when the gateway starts and stops
// failing, once per change instead of once per request.
func (w *Worker) gatewayOK() {
	if w.failing.CompareAndSwap(true, false) {
		w.logger.Info("push: the gateway accepts notifications again", "url", w.url)
	}
}

func (w *Worker) gatewayFailed(res result) {
	if w.failing.CompareAndSwap(false, true) {
		w.logger.Warn("push: the gateway is failing; retrying with backoff", "url", w.url, "status", res.status, "err", res.err)
	}
}

// finish removes the job from the outbox.
func (w *Worker) finish(ctx context.Context, log *slog.Logger, job store.PushJob) {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := w.store.FinishPush(wctx, job.ID); err != nil {
		log.Error("push: remove a finished job; it will be done again after its lease (the gateway drops the copies)", "err", err)
	}
}

// storeFailed handles a store error of a job's pass: the job is due
// again when its lease ends. When the error comes from the worker
// stopping, it hands a job whose recipients are decided back at once
// instead (one whose recipients are not cannot be put back as it was:
// RetryPush stores nil users as none).
func (w *Worker) storeFailed(ctx context.Context, log *slog.Logger, job store.PushJob, what string, err error) {
	if ctx.Err() == nil {
		log.Error("push: "+what+"; the job is due again after its lease", "err", err)
		return
	}
	if job.Users == nil {
		return
	}
	job.Next = w.now()
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := w.store.RetryPush(wctx, job); err != nil {
		log.Error("push: hand a job back; it is due again after its lease", "err", err)
	}
}

// without returns users less those in drop, in their order.
func without(users, drop []string) []string {
	if len(drop) == 0 {
		return users
	}
	set := make(map[string]struct{}, len(drop))
	for _, u := range drop {
		set[u] = struct{}{}
	}
	out := make([]string, 0, len(users)-min(len(users), len(drop)))
	for _, u := range users {
		if _, ok := set[u]; !ok {
			out = append(out, u)
		}
	}
	return out
}

// jitter returns a random duration in [0, d].
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}
