//! The binned training matrix.
//!
//! Features that can split (two bins or more) are cut into a few *groups* of neighbouring
//! features, one per worker thread; inside a group the bins are stored row by row, one byte per
//! feature. Building a leaf's histogram then reads each of the leaf's rows once per group (one
//! cache line) and adds its gradient to every feature's histogram of the group, so the additions
//! for different features are independent and overlap; groups are built in parallel. Every
//! histogram bin is still summed over the leaf's rows in row order by one thread, so the result
//! does not depend on the number of threads or groups.

use std::ops::Range;

use rayon::prelude::*;

use crate::binning::BinMapper;
use crate::rng::SplitMix64;
use crate::{GbmValidParams, RowMajor};

/// A feature that can split.
#[derive(Debug, Clone)]
pub(crate) struct BinnedFeature {
    /// Its column in the caller's rows.
    pub(crate) column: usize,
    /// Its bin boundaries.
    pub(crate) mapper: BinMapper,
    /// Bins, the missing one included.
    pub(crate) bins: usize,
    /// Where its bins start in a leaf histogram.
    pub(crate) offset: usize,
    /// Its group.
    pub(crate) group: usize,
    /// Its byte within a row of its group.
    pub(crate) slot: usize,
}

/// Neighbouring features stored row by row.
#[derive(Debug, Clone)]
pub(crate) struct FeatureGroup {
    /// The features (indices into [`BinnedData::features`]).
    pub(crate) features: Range<usize>,
    /// Bytes per row.
    pub(crate) width: usize,
    /// `rows * width` bins.
    pub(crate) bins: Vec<u8>,
    /// The group's part of a leaf histogram.
    pub(crate) histogram: Range<usize>,
    /// Each feature's offset within the group's part.
    pub(crate) offsets: Vec<usize>,
}

/// The training matrix as bins.
#[derive(Debug, Clone)]
pub(crate) struct BinnedData {
    pub(crate) rows: usize,
    pub(crate) features: Vec<BinnedFeature>,
    pub(crate) groups: Vec<FeatureGroup>,
    /// Bins over all features: the length of a leaf histogram.
    pub(crate) total_bins: usize,
    /// The same bins column by column (`feature * rows + row`): partitioning a leaf reads one
    /// feature of many rows, which a column holds in a few cache lines where the row-wise groups
    /// would touch one line per row.
    pub(crate) columns: Vec<u8>,
}

impl BinnedData {
    pub(crate) fn new(matrix: RowMajor<'_>, params: &GbmValidParams) -> BinnedData {
        let rows = matrix.rows();
        let columns = matrix.columns();
        let mut rng = SplitMix64::new(params.seed ^ 0xB1A5);
        let sample: Option<Vec<u32>> = (rows > params.bin_sample_rows)
            .then(|| rng.sample_sorted(rows, params.bin_sample_rows));
        let mappers: Vec<Option<BinMapper>> = (0..columns)
            .into_par_iter()
            .map(|column| {
                let has_missing = (0..rows).any(|row| matrix.value(row, column).is_nan());
                let mut values: Vec<f64> = match &sample {
                    Some(sample) => sample
                        .iter()
                        .map(|&row| matrix.value(row as usize, column))
                        .filter(|value| !value.is_nan())
                        .collect(),
                    None => (0..rows)
                        .map(|row| matrix.value(row, column))
                        .filter(|value| !value.is_nan())
                        .collect(),
                };
                if values.is_empty() {
                    // Missing everywhere (in the sample): nothing to split on.
                    return None;
                }
                let mapper = BinMapper::fit(
                    &mut values,
                    has_missing,
                    params.max_bins,
                    params.min_data_in_bin,
                );
                (mapper.bin_count() >= 2).then_some(mapper)
            })
            .collect();
        let mut features: Vec<BinnedFeature> = mappers
            .into_iter()
            .enumerate()
            .filter_map(|(column, mapper)| {
                let mapper = mapper?;
                Some(BinnedFeature {
                    column,
                    bins: mapper.bin_count(),
                    mapper,
                    offset: 0,
                    group: 0,
                    slot: 0,
                })
            })
            .collect();
        let group_count = rayon::current_num_threads().clamp(1, features.len().max(1));
        let mut groups = Vec::with_capacity(group_count);
        let mut offset = 0;
        for group in 0..group_count {
            let range =
                group * features.len() / group_count..(group + 1) * features.len() / group_count;
            let start = offset;
            let mut offsets = Vec::with_capacity(range.len());
            for (slot, feature) in features[range.clone()].iter_mut().enumerate() {
                feature.offset = offset;
                feature.group = group;
                feature.slot = slot;
                offsets.push(offset - start);
                offset += feature.bins;
            }
            groups.push(FeatureGroup {
                width: range.len(),
                features: range,
                bins: Vec::new(),
                histogram: start..offset,
                offsets,
            });
        }
        groups.par_iter_mut().for_each(|group| {
            let members = &features[group.features.clone()];
            let width = group.width;
            let mut bins = vec![0u8; rows * width];
            if width > 0 {
                bins.par_chunks_mut(width * 4_096)
                    .enumerate()
                    .for_each(|(block, chunk)| {
                        for (within, row_bins) in chunk.chunks_exact_mut(width).enumerate() {
                            let row = block * 4_096 + within;
                            for (bin, feature) in row_bins.iter_mut().zip(members) {
                                *bin = feature.mapper.bin(matrix.value(row, feature.column));
                            }
                        }
                    });
            }
            group.bins = bins;
        });
        let mut columns = vec![0u8; rows * features.len()];
        if rows > 0 {
            columns
                .par_chunks_mut(rows)
                .zip(&features)
                .for_each(|(column, feature)| {
                    let group = &groups[feature.group];
                    for (row, bin) in column.iter_mut().enumerate() {
                        *bin = group.bins[row * group.width + feature.slot];
                    }
                });
        }
        BinnedData {
            rows,
            features,
            groups,
            total_bins: offset,
            columns,
        }
    }

    /// The bins of one feature, row by row.
    #[inline]
    pub(crate) fn column(&self, feature: usize) -> &[u8] {
        &self.columns[feature * self.rows..(feature + 1) * self.rows]
    }

    /// The bin of a row's feature.
    #[inline]
    pub(crate) fn bin(&self, row: usize, feature: usize) -> u8 {
        self.columns[feature * self.rows + row]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GbmParams;

    #[test]
    fn constant_and_all_missing_columns_are_dropped_and_bins_match_the_mappers() {
        let rows = 500;
        let mut values = Vec::new();
        for row in 0..rows {
            values.push(row as f64);
            values.push(7.0);
            values.push(if row % 4 == 0 {
                f64::NAN
            } else {
                (row % 10) as f64
            });
            values.push(f64::NAN);
        }
        let matrix = RowMajor::new(&values, 4).expect("whole rows");
        let params = GbmParams::default().check().expect("valid");
        let data = BinnedData::new(matrix, &params);
        let columns: Vec<usize> = data.features.iter().map(|f| f.column).collect();
        assert_eq!(columns, vec![0, 2]);
        assert_eq!(
            data.total_bins,
            data.features.iter().map(|f| f.bins).sum::<usize>()
        );
        for row in [0, 1, 4, 499] {
            for (index, feature) in data.features.iter().enumerate() {
                assert_eq!(
                    data.bin(row, index),
                    feature.mapper.bin(matrix.value(row, feature.column))
                );
            }
        }
        assert_eq!(
            data.bin(0, 1),
            data.features[1].mapper.missing_bin.expect("has NaN")
        );
    }
}
