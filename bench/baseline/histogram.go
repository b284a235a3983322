package baseline

import (
	"math/bits"
	"slices"
	"time"
)

// subBits is the precision of histogram: each power of two is split into
// 1<<subBits buckets, so a recorded value is known within 1/64 (1.6%).
const subBits = 6

// histogram counts durations in log-linear buckets, in a fixed 30 KiB
// whatever the number of samples: the echo load records millions of them.
// The zero value is empty. It is not safe for concurrent use; each
// goroutine records into its own and the results are merged.
type histogram struct {
	counts [(65 - subBits) << subBits]uint64 // indexed by bucketOf
	n      uint64
}

// record counts d; a negative d counts as 0.
func (h *histogram) record(d time.Duration) {
	h.counts[bucketOf(uint64(max(d, 0)))]++
	h.n++
}

// merge adds o's counts to h's.
func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
}

// quantile returns the duration below which a fraction q of the recorded
// ones lie, to the precision of a bucket: the middle of the bucket. It
// returns 0 for an empty histogram.
func (h *histogram) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q * float64(h.n))
	rank = min(rank, h.n-1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen > rank {
			lo, width := bucketRange(i)
			return time.Duration(lo + width/2)
		}
	}
	return 0 // unreachable: the counts add up to n
}

// bucketOf returns the bucket of v: v itself below 1<<subBits, above that
// the power of two and the subBits bits that follow its leading one.
func bucketOf(v uint64) int {
	if v < 1<<subBits {
		return int(v)
	}
	shift := bits.Len64(v) - subBits - 1
	return (shift+1)<<subBits | int(v>>shift&(1<<subBits-1))
}

// bucketRange returns the smallest value of bucket i and how many values
// it holds.
func bucketRange(i int) (lo, width uint64) {
	if i < 1<<subBits {
		return uint64(i), 1
	}
	shift := i>>subBits - 1
	top := uint64(i&(1<<subBits-1) | 1<<subBits)
	return top << shift, 1 << shift
}

// quantileOf returns the value below which a fraction q of d lie, exactly.
// It sorts d.
func quantileOf(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(q*float64(len(d))))]
}
