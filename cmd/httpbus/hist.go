package main

import (
	"math/bits"
	"time"
)

// histogram records latencies in log-linear buckets (in the manner of
// HdrHistogram): values below 128 ns are exact, larger ones fall into one of
// 64 buckets per power of two, so a percentile is within 1.6 % of the true
// value. Recording allocates nothing; one histogram per caller goroutine,
// merged at the end.
type histogram struct {
	counts [histBuckets]uint64
	n      uint64
	max    time.Duration
}

const (
	histExact   = 128 // values below are their own bucket
	histSub     = 64  // buckets per power of two above histExact
	histBuckets = histExact + 57*histSub
)

func bucketOf(v uint64) int {
	if v < histExact {
		return int(v)
	}
	shift := bits.Len64(v) - 7 // v>>shift is in [64, 128)
	return histExact + (shift-1)*histSub + int(v>>shift) - histSub
}

// bucketValue returns the midpoint of bucket i, in nanoseconds.
func bucketValue(i int) uint64 {
	if i < histExact {
		return uint64(i)
	}
	i -= histExact
	shift := i/histSub + 1
	top := uint64(i%histSub + histSub)
	lo := top << shift
	return lo + (uint64(1)<<shift)/2
}

// record adds one latency; negative values count as zero.
func (h *histogram) record(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.counts[bucketOf(uint64(d))]++
	h.n++
	if d > h.max {
		h.max = d
	}
}

// merge adds o's counts to h.
func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	if o.max > h.max {
		h.max = o.max
	}
}

// count returns the number of recorded values.
func (h *histogram) count() uint64 { return h.n }

// percentile returns the value at or below which p percent (0 < p ≤ 100) of
// the recorded values lie; 0 when nothing was recorded.
func (h *histogram) percentile(p float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if p >= 100 {
		return h.max
	}
	rank := uint64(p / 100 * float64(h.n))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			v := time.Duration(bucketValue(i))
			if v > h.max {
				v = h.max
			}
			return v
		}
	}
	return h.max
}
