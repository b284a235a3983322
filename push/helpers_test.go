package push_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/qim-im/qim/internal/pgtest"
	"github.com/qim-im/qim/metrics"
	qimpb "github.com/qim-im/qim/proto"
	"github.com/qim-im/qim/push"
	"github.com/qim-im/qim/store"
	"github.com/qim-im/qim/store/pebblestore"
	"github.com/qim-im/qim/store/pgstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const app = "acme/chat"

var testSecret = []byte("test push secret")

// backends opens a fresh store of each kind for f: the embedded Pebble
// store and PostgreSQL (a database of its own, see internal/pgtest).
func backends(t *testing.T, f func(t *testing.T, st store.Store)) {
	t.Run("pebble", func(t *testing.T) {
		st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		f(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		url := pgtest.Database(t)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		st, err := pgstore.Open(ctx, url, pgstore.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		f(t, st)
	})
}

// pebble opens a fresh embedded store for a test that needs one backend.
func pebble(t *testing.T) store.Store {
	t.Helper()
	st, err := pebblestore.Open(t.TempDir(), pebblestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// fast is a worker configuration with test-sized timings.
func fast(st store.Store, url string) push.Config {
	return push.Config{
		Store:      st,
		URL:        url,
		Secret:     testSecret,
		Preview:    true,
		MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 100 * time.Millisecond,
		Lease:      2 * time.Second,
		PollEvery:  20 * time.Millisecond,
	}
}

// run runs a worker for cfg until the returned stop is called or the test
// ends, and checks that Run returns.
func run(t *testing.T, cfg push.Config) (stop func()) {
	t.Helper()
	w, err := push.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return 10 s after its context ended")
		}
	}
	t.Cleanup(stop)
	return stop
}

// text returns a TXT message from from to a user or a group (one of to,
// group), as a device sends it.
func text(from, to, group, txt string) *qimpb.Message {
	payload, _ := proto.Marshal(&qimpb.MessageTxt{Txt: txt})
	return &qimpb.Message{Type: qimpb.MessageType_TXT, Payload: payload, FromUser: from, FromDevice: "phone", ToUser: to, ToGroup: group}
}

// appendMsg stores m as the hub does, with an outbox job due at pushAt,
// and returns the stored message.
func appendMsg(t *testing.T, st store.Store, m *qimpb.Message, pushAt time.Time) *qimpb.Message {
	t.Helper()
	a := store.Append{App: app, Msg: m, PushAt: pushAt}
	if m.ToGroup != "" {
		a.Conv = store.GroupConv(m.ToGroup)
	} else {
		a.Conv = store.DirectConv(m.FromUser, m.ToUser)
		a.Members = []string{m.FromUser, m.ToUser}
	}
	res, err := st.Append(context.Background(), []store.Append{a})
	if err != nil {
		t.Fatal(err)
	}
	return res[0].Msg
}

// backlog returns the store's outbox size.
func backlog(t *testing.T, st store.Store) int {
	t.Helper()
	n, err := st.PushBacklog(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not after %v: %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sample returns the value of metric name (with the given label, if
// any) that m exports, -1 if it has none.
func sample(t *testing.T, m *metrics.Metrics, name string, label ...string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	if err != nil {
		t.Fatal(err)
	}
	fam := fams[name]
	if fam == nil {
		return -1
	}
	for _, mt := range fam.GetMetric() {
		if len(label) == 2 {
			match := false
			for _, lp := range mt.GetLabel() {
				match = match || lp.GetName() == label[0] && lp.GetValue() == label[1]
			}
			if !match {
				continue
			}
		}
		switch {
		case mt.GetCounter() != nil:
			return mt.GetCounter().GetValue()
		case mt.GetGauge() != nil:
			return mt.GetGauge().GetValue()
		}
	}
	return -1
}
