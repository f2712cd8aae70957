package store

import "slices"

// MedianMAD returns the median of xs and the median absolute deviation from it, by the rules of
// Analytics.Quantiles: the median of an even count is the mean of the two middle values. xs is
// reordered and overwritten; an empty xs gives 0, 0.
func MedianMAD(xs []float64) (median, mad float64) {
	if len(xs) == 0 {
		return 0, 0
	}
	median = middle(xs)
	for i, x := range xs {
		if x < median {
			xs[i] = median - x
		} else {
			xs[i] = x - median
		}
	}
	return median, middle(xs)
}

// middle sorts xs and returns its median.
func middle(xs []float64) float64 {
	slices.Sort(xs)
	n := len(xs)
	if n%2 == 1 {
		return xs[n/2]
	}
	return (xs[n/2-1] + xs[n/2]) / 2
}
