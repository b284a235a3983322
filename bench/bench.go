// Package bench is qim's load generator: the scenarios of `qim bench`
// (pair, fanout, idle, connect, migrate), run against a qim server, and the
// figures they report. Package bench/baseline runs the same shapes over bare
// quic-go, so that every figure can be read as a ratio to its transport's
// ceiling measured on the same machine in the same command.
package bench

import (
	"crypto/tls"
	"fmt"
	"io"
	"time"

	"github.com/qim-im/qim/auth"
	"github.com/qim-im/qim/client"
)

// Env is the server a scenario runs against and how to reach it.
type Env struct {
	Addr string      // the qim server's host:port
	TLS  *tls.Config // trusts the server's certificate; cloned per client

	// Org and Appkey name the application; Secret is its token secret, from
	// which the scenario mints a token for each user it makes up.
	Org, Appkey string
	Secret      []byte

	// Prefix starts every user and group id the scenario makes up, so that
	// runs against one server do not meet. "" means "bench".
	Prefix string

	// Metrics is the URL of the server's Prometheus endpoint (qimd serve
	// --metrics), e.g. http://127.0.0.1:9090. "" means no server-side
	// figures (CPU, heap, RSS).
	Metrics string

	// Progress, if not nil, receives a progress line now and then on long
	// runs.
	Progress io.Writer
}

// User returns the id of the scenario's made-up user i.
func (e *Env) User(name string, i int) string {
	p := e.Prefix
	if p == "" {
		p = "bench"
	}
	return fmt.Sprintf("%s-%s-%d", p, name, i)
}

// ClientConfig returns the client configuration of user's device "bench",
// with a freshly minted token valid for a day.
func (e *Env) ClientConfig(user string) client.Config {
	return client.Config{
		Addr:      e.Addr,
		TLSConfig: e.TLS.Clone(),
		Org:       e.Org,
		Appkey:    e.Appkey,
		User:      user,
		Token:     auth.Mint(e.Secret, e.Org, e.Appkey, user, time.Now().Add(24*time.Hour)),
		Device:    "bench",
	}
}

// progressf writes one progress line, if e.Progress is set.
func (e *Env) progressf(format string, args ...any) {
	if e.Progress != nil {
		fmt.Fprintf(e.Progress, format+"\n", args...)
	}
}

// Line is one figure of a run: what `make bench` prints, one per line, as
//
//	scenario=NAME value=V unit=U baseline=B ratio=R
//
// with ratio = value / baseline. Baseline is 0 when the figure has none.
type Line struct {
	Scenario string
	Value    float64
	Unit     string
	Baseline float64
}

// Ratio is Value / Baseline, or 0 without a baseline.
func (l Line) Ratio() float64 {
	if l.Baseline == 0 {
		return 0
	}
	return l.Value / l.Baseline
}

func (l Line) String() string {
	return fmt.Sprintf("scenario=%s value=%s unit=%s baseline=%s ratio=%.3f",
		l.Scenario, num(l.Value), l.Unit, num(l.Baseline), l.Ratio())
}

// num formats v with precision that suits its size.
func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 1000 || v <= -1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10 || v <= -10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}
