package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sample is one scrape of a server's Prometheus endpoint: the value of each
// unlabelled gauge or counter, and of each labelled one summed over its
// labels.
type Sample struct {
	At     time.Time
	Values map[string]float64
}

// Get returns the value of metric name, or 0 if the scrape did not have it.
// A histogram's value is its count of observations, and name_sum their sum.
func (s Sample) Get(name string) float64 { return s.Values[name] }

// CPU is the server's process CPU time in seconds.
func (s Sample) CPU() float64 { return s.Get("process_cpu_seconds_total") }

// Heap is the server's Go heap in bytes (heap_alloc: live objects, right
// after a forced collection).
func (s Sample) Heap() float64 { return s.Get("go_memstats_heap_alloc_bytes") }

// RSS is the server's resident set in bytes.
func (s Sample) RSS() float64 { return s.Get("process_resident_memory_bytes") }

// Scrape reads the Prometheus endpoint at base (e.g. http://127.0.0.1:9090).
// With gc, it first asks the server for a garbage collection through
// /debug/pprof/heap?gc=1, so that heap figures count live memory only.
func Scrape(ctx context.Context, base string, gc bool) (Sample, error) {
	if gc {
		if err := get(ctx, base+"/debug/pprof/heap?gc=1", io.Discard); err != nil {
			return Sample{}, err
		}
	}
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := get(ctx, base+"/metrics", pw)
		pw.CloseWithError(err)
		errc <- err
	}()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, perr := p.TextToMetricFamilies(pr)
	pr.Close()
	if err := <-errc; err != nil {
		return Sample{}, err
	}
	if perr != nil {
		return Sample{}, fmt.Errorf("bench: parse %s/metrics: %w", base, perr)
	}
	s := Sample{At: time.Now(), Values: make(map[string]float64)}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			s.Values[name] += value(m)
			if h := m.GetHistogram(); h != nil {
				s.Values[name+"_sum"] += h.GetSampleSum()
			}
		}
	}
	return s, nil
}

func value(m *dto.Metric) float64 {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue()
	case m.GetHistogram() != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return 0
}

func get(ctx context.Context, url string, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bench: GET %s: %s", url, resp.Status)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}
