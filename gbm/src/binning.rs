//! Feature binning, done once per fit: each feature's non-missing values map to at most 255 bins
//! with boundaries at quantiles of a row sample (LightGBM's greedy scheme), and missing values
//! (NaN) to one more bin of their own. Trees then split on bin numbers; each split also keeps the
//! bin's raw upper boundary, so prediction compares raw values and never bins.

/// Bin boundaries of one feature: a value `x` falls in the first bin whose upper bound is `>= x`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BinMapper {
    /// Upper bounds of the non-missing bins, ascending; the last is +inf.
    pub(crate) upper_bounds: Vec<f64>,
    /// The bin of NaN (one past the last non-missing bin), when the training data had NaN.
    pub(crate) missing_bin: Option<u8>,
}

impl BinMapper {
    /// Boundaries from sampled non-missing values (sorted here) of a feature.
    ///
    /// With at most `max_bins` distinct values every value gets its own bin, except that a bin
    /// collects at least `min_data_in_bin` rows before it closes. With more, bins hold about equal
    /// numbers of rows, and a value frequent enough to fill a bin by itself gets one alone (so a
    /// heavy value, such as a rate of exactly 0, never shares a bin with its neighbours). Bounds
    /// sit half-way between the neighbouring distinct values, as in LightGBM.
    pub(crate) fn fit(
        sample: &mut [f64],
        has_missing: bool,
        max_bins: usize,
        min_data_in_bin: usize,
    ) -> BinMapper {
        sample.sort_unstable_by(f64::total_cmp);
        let mut distinct: Vec<f64> = Vec::new();
        let mut counts: Vec<usize> = Vec::new();
        for &value in sample.iter() {
            // -0.0 and 0.0 are one value.
            if distinct.last().is_some_and(|last| *last == value) {
                if let Some(count) = counts.last_mut() {
                    *count += 1;
                }
            } else {
                distinct.push(value);
                counts.push(1);
            }
        }
        let mut upper_bounds = Vec::new();
        if distinct.len() > 1 {
            let cut_after = if distinct.len() <= max_bins {
                cuts_few_values(&counts, min_data_in_bin)
            } else {
                cuts_many_values(&counts, max_bins, min_data_in_bin)
            };
            for index in cut_after {
                upper_bounds.push(midpoint(distinct[index], distinct[index + 1]));
            }
        }
        upper_bounds.push(f64::INFINITY);
        let missing_bin = has_missing.then(|| {
            u8::try_from(upper_bounds.len()).expect("at most 255 non-missing bins should be made")
        });
        BinMapper {
            upper_bounds,
            missing_bin,
        }
    }

    /// Number of bins, the missing one included.
    pub(crate) fn bin_count(&self) -> usize {
        self.upper_bounds.len() + usize::from(self.missing_bin.is_some())
    }

    /// The bin of a value. NaN goes to the missing bin; a feature that had no NaN in training puts
    /// NaN in its last bin (never reached at training time, and prediction routes NaN itself).
    pub(crate) fn bin(&self, value: f64) -> u8 {
        if value.is_nan() {
            return self
                .missing_bin
                .unwrap_or(u8::try_from(self.upper_bounds.len() - 1).unwrap_or(u8::MAX));
        }
        let bin = self.upper_bounds.partition_point(|bound| *bound < value);
        // The last bound is +inf, so every non-NaN value lands within the bounds.
        u8::try_from(bin).unwrap_or(u8::MAX)
    }
}

/// A bound strictly between two distinct sorted values, as close to half-way as floating point
/// allows; it is `>= low` and `< high`, so `low` bins left and `high` right.
fn midpoint(low: f64, high: f64) -> f64 {
    let middle = low + (high - low) / 2.0;
    if middle.is_finite() && middle >= low && middle < high {
        middle
    } else {
        low
    }
}

/// Few distinct values: a cut after every value once the open bin holds `min_data_in_bin` rows.
fn cuts_few_values(counts: &[usize], min_data_in_bin: usize) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut open = 0usize;
    for (index, &count) in counts.iter().enumerate().take(counts.len() - 1) {
        open += count;
        if open >= min_data_in_bin {
            cuts.push(index);
            open = 0;
        }
    }
    // The rows after the last cut may be fewer than the minimum: merge them into the bin before.
    if open + counts[counts.len() - 1] < min_data_in_bin {
        cuts.pop();
    }
    cuts
}

/// Many distinct values: greedy equal-count bins, heavy values alone.
fn cuts_many_values(counts: &[usize], max_bins: usize, min_data_in_bin: usize) -> Vec<usize> {
    let total: usize = counts.iter().sum();
    let mean_size = total as f64 / max_bins as f64;
    let is_big: Vec<bool> = counts.iter().map(|&c| c as f64 >= mean_size).collect();
    let big_bins = is_big.iter().filter(|big| **big).count();
    let big_rows: usize = counts
        .iter()
        .zip(&is_big)
        .filter(|(_, big)| **big)
        .map(|(c, _)| c)
        .sum();
    let mut rest_bins = max_bins.saturating_sub(big_bins).max(1);
    let mut rest_rows = total - big_rows;
    let mut target = (rest_rows as f64 / rest_bins as f64).max(min_data_in_bin as f64);
    let mut cuts = Vec::new();
    let mut open = 0usize;
    for index in 0..counts.len() - 1 {
        open += counts[index];
        let close = is_big[index]
            || open as f64 >= target
            || (is_big[index + 1] && open as f64 >= (target * 0.5).max(1.0));
        if close && (is_big[index] || open >= min_data_in_bin) {
            cuts.push(index);
            if !is_big[index] {
                rest_rows = rest_rows.saturating_sub(open);
                rest_bins = rest_bins.saturating_sub(1).max(1);
                target = (rest_rows as f64 / rest_bins as f64).max(min_data_in_bin as f64);
            }
            open = 0;
            if cuts.len() + 1 >= max_bins {
                break;
            }
        }
    }
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_values_get_a_bin_each_and_nan_its_own() {
        let mut values: Vec<f64> = (0..30).map(|i| f64::from(i % 3)).collect();
        let mapper = BinMapper::fit(&mut values, true, 255, 3);
        assert_eq!(mapper.upper_bounds, vec![0.5, 1.5, f64::INFINITY]);
        assert_eq!(mapper.missing_bin, Some(3));
        assert_eq!(mapper.bin_count(), 4);
        assert_eq!(mapper.bin(0.0), 0);
        assert_eq!(mapper.bin(0.5), 0);
        assert_eq!(mapper.bin(0.7), 1);
        assert_eq!(mapper.bin(2.0), 2);
        assert_eq!(mapper.bin(1e300), 2);
        assert_eq!(mapper.bin(f64::NEG_INFINITY), 0);
        assert_eq!(mapper.bin(f64::NAN), 3);
    }

    #[test]
    fn many_values_fill_at_most_max_bins_of_similar_size() {
        let mut values: Vec<f64> = (0..10_000).map(|i| f64::from(i) * 0.37).collect();
        let mapper = BinMapper::fit(&mut values.clone(), false, 64, 3);
        assert!(mapper.upper_bounds.len() <= 64);
        assert!(mapper.upper_bounds.len() >= 60);
        let mut sizes = vec![0usize; mapper.bin_count()];
        for value in values.iter_mut() {
            sizes[usize::from(mapper.bin(*value))] += 1;
        }
        let (min, max) = (
            sizes.iter().min().copied().unwrap_or(0),
            sizes.iter().max().copied().unwrap_or(0),
        );
        assert!(min >= 100 && max <= 300, "sizes {min}..{max}");
    }

    #[test]
    fn a_heavy_value_keeps_a_bin_of_its_own() {
        let mut values: Vec<f64> = (0..1_000).map(|i| f64::from(i) / 1_000.0).collect();
        values.extend(std::iter::repeat_n(0.25, 2_000));
        let mapper = BinMapper::fit(&mut values, false, 16, 3);
        let heavy = mapper.bin(0.25);
        // The rows just below it may share its bin (fewer than half a bin), those above never.
        assert_ne!(mapper.bin(0.2), heavy);
        assert_ne!(mapper.bin(0.251), heavy);
    }

    #[test]
    fn a_constant_feature_has_one_bin() {
        let mut values = vec![4.0; 50];
        let mapper = BinMapper::fit(&mut values, false, 255, 3);
        assert_eq!(mapper.bin_count(), 1);
    }
}
