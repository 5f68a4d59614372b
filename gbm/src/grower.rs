//! Growing one tree, leaf-wise (best-first), as LightGBM does.
//!
//! The rows of the bag sit in one index array; every leaf owns a contiguous range of it, and a
//! split partitions its leaf's range in place, stably (so each leaf's rows stay in ascending order
//! and histogram building walks the binned matrix forwards). The tree always splits the leaf with
//! the largest gain until it has `max_leaves` leaves or no leaf can split.
//!
//! Histograms hold, per bin, the sums of gradient and hessian (with unit hessians, the row count).
//! Of a split's two children only the smaller one's histogram is built from its rows; the larger
//! one's is the parent's minus the smaller's, computed in the parent's buffer.

use rayon::prelude::*;

use crate::GbmValidParams;
use crate::dataset::{BinnedData, FeatureGroup};

/// Per bin: sum of gradients, sum of hessians.
pub(crate) type Bin = [f64; 2];

/// Below this many (row, feature) additions a histogram is built on the calling thread: handing
/// work to another thread costs a few microseconds.
const PARALLEL_MIN_WORK: usize = 64 * 1_024;

/// Leaves with fewer rows per thread are partitioned on the calling thread.
const PARALLEL_PARTITION_MIN_ROWS: usize = 16 * 1_024;

/// Leaves with fewer bins to scan than this look for their best split on the calling thread.
const PARALLEL_SPLIT_MIN_BINS: usize = 1_024;

/// A split found on a leaf's histogram.
#[derive(Debug, Clone, Copy)]
struct Split {
    /// Loss reduction over not splitting.
    gain: f64,
    /// Index into [`BinnedData::features`].
    feature: usize,
    /// Bins `<=` this go left.
    threshold: u8,
    default_left: bool,
    left_gradient: f64,
    left_hessian: f64,
    right_gradient: f64,
    right_hessian: f64,
}

/// Sums over a leaf's rows.
#[derive(Debug, Clone, Copy)]
struct LeafSums {
    gradient: f64,
    hessian: f64,
    count: usize,
}

#[derive(Debug)]
struct Leaf {
    begin: usize,
    sums: LeafSums,
    depth: usize,
    /// Its histogram buffer, while it may still split.
    histogram: Option<usize>,
    split: Option<Split>,
    /// The node that points at it, and whether as its left child.
    parent: Option<(usize, bool)>,
}

/// A node of a tree being grown, in bins.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GrownNode {
    pub(crate) feature: usize,
    pub(crate) threshold: u8,
    pub(crate) default_left: bool,
    pub(crate) left: i32,
    pub(crate) right: i32,
}

/// A grown tree: nodes in bins, and each leaf's Newton output and rows.
#[derive(Debug, Clone)]
pub(crate) struct GrownTree {
    pub(crate) nodes: Vec<GrownNode>,
    /// `-G / (H + lambda)` per leaf, before the learning rate.
    pub(crate) outputs: Vec<f64>,
    /// Each leaf's range in [`Grower::rows`].
    pub(crate) ranges: Vec<(usize, usize)>,
}

impl GrownTree {
    /// The leaf a training row falls in, walking bins.
    pub(crate) fn leaf_of(&self, data: &BinnedData, row: usize) -> usize {
        if self.nodes.is_empty() {
            return 0;
        }
        let mut next = 0i32;
        while next >= 0 {
            let node = &self.nodes[next as usize];
            let bin = data.bin(row, node.feature);
            let left = if Some(bin) == data.features[node.feature].mapper.missing_bin {
                node.default_left
            } else {
                bin <= node.threshold
            };
            next = if left { node.left } else { node.right };
        }
        !next as usize
    }
}

/// Buffers reused from tree to tree.
pub(crate) struct Grower<'a> {
    data: &'a BinnedData,
    params: &'a GbmValidParams,
    /// The bag's rows, partitioned by leaf.
    rows: Vec<u32>,
    scratch: Vec<u32>,
    ordered_gradients: Vec<f64>,
    ordered_hessians: Vec<f64>,
    histograms: Vec<Vec<Bin>>,
    free_histograms: Vec<usize>,
}

impl<'a> Grower<'a> {
    pub(crate) fn new(data: &'a BinnedData, params: &'a GbmValidParams) -> Self {
        Grower {
            data,
            params,
            rows: Vec::with_capacity(data.rows),
            scratch: Vec::with_capacity(data.rows),
            ordered_gradients: Vec::with_capacity(data.rows),
            ordered_hessians: Vec::new(),
            histograms: Vec::new(),
            free_histograms: Vec::new(),
        }
    }

    /// The rows of a leaf of the last grown tree.
    pub(crate) fn leaf_rows(&self, range: (usize, usize)) -> &[u32] {
        &self.rows[range.0..range.0 + range.1]
    }

    fn take_histogram(&mut self) -> usize {
        match self.free_histograms.pop() {
            Some(buffer) => buffer,
            None => {
                self.histograms.push(vec![[0.0; 2]; self.data.total_bins]);
                self.histograms.len() - 1
            }
        }
    }

    /// Grows a tree on the bag's rows (`None`: every row) with the features `allowed`.
    /// `hessians` is `None` when every hessian is 1.
    pub(crate) fn grow(
        &mut self,
        bag: Option<&[u32]>,
        gradients: &[f64],
        hessians: Option<&[f64]>,
        allowed: &[bool],
    ) -> GrownTree {
        self.rows.clear();
        match bag {
            Some(bag) => self.rows.extend_from_slice(bag),
            // Row counts are checked to fit u32 before a fit starts.
            None => self.rows.extend(0..self.data.rows as u32),
        }
        self.free_histograms = (0..self.histograms.len()).rev().collect();
        let root_sums = LeafSums {
            gradient: sum_at(gradients, &self.rows),
            hessian: match hessians {
                Some(hessians) => sum_at(hessians, &self.rows),
                None => self.rows.len() as f64,
            },
            count: self.rows.len(),
        };
        let mut leaves = vec![Leaf {
            begin: 0,
            sums: root_sums,
            depth: 0,
            histogram: None,
            split: None,
            parent: None,
        }];
        let mut nodes: Vec<GrownNode> = Vec::new();
        if self.splittable(&leaves[0], 1) {
            let buffer = self.take_histogram();
            self.build_histogram(0, self.rows.len(), gradients, hessians, buffer);
            leaves[0].histogram = Some(buffer);
            leaves[0].split = self.best_split(buffer, leaves[0].sums, allowed, hessians.is_none());
        }
        while leaves.len() < self.params.max_leaves {
            // The leaf with the largest gain; the first one on ties.
            let Some(chosen) = leaves
                .iter()
                .enumerate()
                .filter_map(|(index, leaf)| leaf.split.map(|split| (index, split.gain)))
                .fold(
                    None,
                    |best: Option<(usize, f64)>, (index, gain)| match best {
                        Some((_, best_gain)) if best_gain >= gain => best,
                        _ => Some((index, gain)),
                    },
                )
                .map(|(index, _)| index)
            else {
                break;
            };
            let split = leaves[chosen]
                .split
                .take()
                .expect("the chosen leaf should have a split");
            let (begin, count) = (leaves[chosen].begin, leaves[chosen].sums.count);
            let left_count = self.partition(begin, count, &split);
            let node_index = nodes.len();
            let right_leaf = leaves.len();
            nodes.push(GrownNode {
                feature: split.feature,
                threshold: split.threshold,
                default_left: split.default_left,
                left: !(chosen as i32),
                right: !(right_leaf as i32),
            });
            if let Some((parent, is_left)) = leaves[chosen].parent {
                let parent = &mut nodes[parent];
                if is_left {
                    parent.left = node_index as i32;
                } else {
                    parent.right = node_index as i32;
                }
            }
            let depth = leaves[chosen].depth + 1;
            let parent_histogram = leaves[chosen].histogram.take();
            let left = Leaf {
                begin,
                sums: LeafSums {
                    gradient: split.left_gradient,
                    hessian: split.left_hessian,
                    count: left_count,
                },
                depth,
                histogram: None,
                split: None,
                parent: Some((node_index, true)),
            };
            let right = Leaf {
                begin: begin + left_count,
                sums: LeafSums {
                    gradient: split.right_gradient,
                    hessian: split.right_hessian,
                    count: count - left_count,
                },
                depth,
                histogram: None,
                split: None,
                parent: Some((node_index, false)),
            };
            leaves[chosen] = left;
            leaves.push(right);
            let leaves_after = leaves.len();
            let left_splits = self.splittable(&leaves[chosen], leaves_after);
            let right_splits = self.splittable(&leaves[right_leaf], leaves_after);
            let Some(parent_histogram) = parent_histogram else {
                continue;
            };
            if !left_splits && !right_splits {
                self.free_histograms.push(parent_histogram);
                continue;
            }
            let (small, large) = if left_count <= count - left_count {
                (chosen, right_leaf)
            } else {
                (right_leaf, chosen)
            };
            let small_histogram = self.take_histogram();
            self.build_histogram(
                leaves[small].begin,
                leaves[small].sums.count,
                gradients,
                hessians,
                small_histogram,
            );
            self.subtract(parent_histogram, small_histogram);
            leaves[small].histogram = Some(small_histogram);
            leaves[large].histogram = Some(parent_histogram);
            let unit_hessian = hessians.is_none();
            let search = |index: usize, splits: bool| {
                let leaf = &leaves[index];
                match leaf.histogram {
                    Some(buffer) if splits => {
                        self.best_split(buffer, leaf.sums, allowed, unit_hessian)
                    }
                    _ => None,
                }
            };
            let (left_split, right_split) =
                if left_splits && right_splits && self.data.total_bins >= PARALLEL_SPLIT_MIN_BINS {
                    rayon::join(
                        || search(chosen, left_splits),
                        || search(right_leaf, right_splits),
                    )
                } else {
                    (
                        search(chosen, left_splits),
                        search(right_leaf, right_splits),
                    )
                };
            leaves[chosen].split = left_split;
            leaves[right_leaf].split = right_split;
            for index in [chosen, right_leaf] {
                let Some(buffer) = leaves[index].histogram else {
                    continue;
                };
                if leaves[index].split.is_none() {
                    leaves[index].histogram = None;
                    self.free_histograms.push(buffer);
                }
            }
        }
        let lambda = self.params.lambda_l2;
        GrownTree {
            nodes,
            outputs: leaves
                .iter()
                .map(|leaf| -leaf.sums.gradient / (leaf.sums.hessian + lambda))
                .collect(),
            ranges: leaves
                .iter()
                .map(|leaf| (leaf.begin, leaf.sums.count))
                .collect(),
        }
    }

    /// Whether a leaf could still split: enough rows and hessian for two children, within the
    /// depth limit, and room for another leaf.
    fn splittable(&self, leaf: &Leaf, leaves: usize) -> bool {
        let params = self.params;
        leaves < params.max_leaves
            && leaf.sums.count >= 2 * params.min_data_in_leaf
            && leaf.sums.hessian >= 2.0 * params.min_sum_hessian
            && params.max_depth.is_none_or(|max| leaf.depth < max)
    }

    /// Partitions a leaf's rows stably: left-going rows first. Returns how many go left.
    ///
    /// Large leaves are cut into one block per thread; each block is partitioned on its own and
    /// the blocks' left and right parts are then put back in order.
    fn partition(&mut self, begin: usize, count: usize, split: &Split) -> usize {
        let feature = &self.data.features[split.feature];
        let rule = PartitionRule {
            column: self.data.column(split.feature),
            // Without a missing bin no bin equals 256.
            missing: feature.mapper.missing_bin.map_or(256, u16::from),
            threshold: split.threshold,
            default_left: split.default_left,
        };
        let rows = &mut self.rows[begin..begin + count];
        self.scratch.clear();
        self.scratch.resize(count, 0);
        let right = self.scratch.as_mut_slice();
        let blocks = rayon::current_num_threads().min(count / PARALLEL_PARTITION_MIN_ROWS);
        if blocks < 2 {
            let (left_count, right_count) = rule.partition(rows, right);
            rows[left_count..].copy_from_slice(&right[..right_count]);
            return left_count;
        }
        let block_rows = count.div_ceil(blocks);
        let counts: Vec<(usize, usize)> = rows
            .par_chunks_mut(block_rows)
            .zip(right.par_chunks_mut(block_rows))
            .map(|(rows, right)| rule.partition(rows, right))
            .collect();
        let mut written = 0;
        for (block, (left_count, _)) in counts.iter().enumerate() {
            let start = block * block_rows;
            rows.copy_within(start..start + left_count, written);
            written += left_count;
        }
        let left_total = written;
        for (block, (_, right_count)) in counts.iter().enumerate() {
            let start = block * block_rows;
            rows[written..written + right_count]
                .copy_from_slice(&right[start..start + right_count]);
            written += right_count;
        }
        left_total
    }

    /// Sums the rows `begin..begin + count` of [`Grower::rows`] into a histogram buffer.
    fn build_histogram(
        &mut self,
        begin: usize,
        count: usize,
        gradients: &[f64],
        hessians: Option<&[f64]>,
        buffer: usize,
    ) {
        let rows = &self.rows[begin..begin + count];
        self.ordered_gradients.clear();
        self.ordered_gradients
            .extend(rows.iter().map(|&row| gradients[row as usize]));
        let ordered_hessians = match hessians {
            Some(hessians) => {
                self.ordered_hessians.clear();
                self.ordered_hessians
                    .extend(rows.iter().map(|&row| hessians[row as usize]));
                Some(self.ordered_hessians.as_slice())
            }
            None => None,
        };
        let ordered_gradients = self.ordered_gradients.as_slice();
        let histogram = &mut self.histograms[buffer];
        let mut parts: Vec<(&FeatureGroup, &mut [Bin])> =
            Vec::with_capacity(self.data.groups.len());
        let mut rest: &mut [Bin] = histogram;
        for group in &self.data.groups {
            let (part, tail) = rest.split_at_mut(group.histogram.len());
            parts.push((group, part));
            rest = tail;
        }
        let work = rows.len() * self.data.features.len();
        let fill = |(group, part): (&FeatureGroup, &mut [Bin])| {
            part.fill([0.0; 2]);
            accumulate(group, rows, ordered_gradients, ordered_hessians, part);
        };
        if work >= PARALLEL_MIN_WORK && parts.len() > 1 {
            parts.into_par_iter().for_each(fill);
        } else {
            parts.into_iter().for_each(fill);
        }
    }

    /// `parent -= small`: the larger sibling's histogram, in the parent's buffer.
    fn subtract(&mut self, parent: usize, small: usize) {
        let (parent, small) = if parent < small {
            let (head, tail) = self.histograms.split_at_mut(small);
            (&mut head[parent], &tail[0])
        } else {
            let (head, tail) = self.histograms.split_at_mut(parent);
            (&mut tail[0], &head[small])
        };
        for (bin, subtracted) in parent.iter_mut().zip(small.iter()) {
            bin[0] -= subtracted[0];
            bin[1] -= subtracted[1];
        }
    }

    /// The best split of a leaf over the allowed features, if any beats not splitting by more
    /// than `min_gain_to_split` while leaving both children `min_data_in_leaf` rows and
    /// `min_sum_hessian`.
    ///
    /// Features with missing values are scanned twice, missing rows going left and going right;
    /// the better direction is the split's default. Without missing rows in the leaf, NaN at
    /// prediction time goes to the side with more rows.
    fn best_split(
        &self,
        buffer: usize,
        sums: LeafSums,
        allowed: &[bool],
        unit_hessian: bool,
    ) -> Option<Split> {
        let params = self.params;
        let lambda = params.lambda_l2;
        let histogram = &self.histograms[buffer];
        let parent_gain = sums.gradient * sums.gradient / (sums.hessian + lambda);
        // Weighted rows: counts estimated from hessians, as LightGBM does.
        let count_per_hessian = if unit_hessian || sums.hessian <= 0.0 {
            1.0
        } else {
            sums.count as f64 / sums.hessian
        };
        let min_count = params.min_data_in_leaf as f64;
        let min_hessian = params.min_sum_hessian;
        let mut best: Option<Split> = None;
        let mut best_gain = parent_gain + params.min_gain_to_split;
        for (index, feature) in self.data.features.iter().enumerate() {
            if !allowed[index] {
                continue;
            }
            let bins = &histogram[feature.offset..feature.offset + feature.bins];
            let (regular, missing) = match feature.mapper.missing_bin {
                Some(missing) => (&bins[..usize::from(missing)], bins[usize::from(missing)]),
                None => (bins, [0.0; 2]),
            };
            let has_missing = feature.mapper.missing_bin.is_some();
            let missing_rows = missing[1] > 0.0;
            for default_left in [false, true] {
                if default_left && !missing_rows {
                    break;
                }
                let (mut left_gradient, mut left_hessian) = if default_left {
                    (missing[0], missing[1])
                } else {
                    (0.0, 0.0)
                };
                // Missing rows going right may be alone on the right: all regular bins go left.
                let thresholds = if has_missing && missing_rows && !default_left {
                    regular.len()
                } else {
                    regular.len() - 1
                };
                for (threshold, bin) in regular.iter().enumerate().take(thresholds) {
                    left_gradient += bin[0];
                    left_hessian += bin[1];
                    if left_hessian * count_per_hessian < min_count || left_hessian < min_hessian {
                        continue;
                    }
                    let right_hessian = sums.hessian - left_hessian;
                    if right_hessian * count_per_hessian < min_count || right_hessian < min_hessian
                    {
                        break;
                    }
                    let right_gradient = sums.gradient - left_gradient;
                    let gain = left_gradient * left_gradient / (left_hessian + lambda)
                        + right_gradient * right_gradient / (right_hessian + lambda);
                    if gain > best_gain {
                        best_gain = gain;
                        best = Some(Split {
                            gain: gain - parent_gain,
                            feature: index,
                            // At most 255 regular bins.
                            threshold: threshold as u8,
                            default_left: if missing_rows {
                                default_left
                            } else {
                                left_hessian >= right_hessian
                            },
                            left_gradient,
                            left_hessian,
                            right_gradient,
                            right_hessian,
                        });
                    }
                }
            }
        }
        best
    }
}

/// Where a split sends rows.
struct PartitionRule<'a> {
    column: &'a [u8],
    missing: u16,
    threshold: u8,
    default_left: bool,
}

impl PartitionRule<'_> {
    /// Moves the left-going rows to the front of `rows`, in order, and copies the right-going ones
    /// to the front of `right` (as long as `rows`), in order; returns both counts.
    ///
    /// Branch-free: every row is written to both sides and only the side it belongs to advances,
    /// because which side a row takes is as good as random and mispredicted branches cost more
    /// than the extra store.
    fn partition(&self, rows: &mut [u32], right: &mut [u32]) -> (usize, usize) {
        let (mut left_count, mut right_count) = (0usize, 0usize);
        for index in 0..rows.len() {
            let row = rows[index];
            let bin = self.column[row as usize];
            let is_missing = u16::from(bin) == self.missing;
            let left = (is_missing & self.default_left) | (!is_missing & (bin <= self.threshold));
            // `left_count <= index`: this never overwrites a row not read yet.
            rows[left_count] = row;
            right[right_count] = row;
            left_count += usize::from(left);
            right_count += usize::from(!left);
        }
        (left_count, right_count)
    }
}

/// `values[row]` summed over `rows`, in four interleaved sums (a single running sum is one long
/// chain of dependent additions).
fn sum_at(values: &[f64], rows: &[u32]) -> f64 {
    let mut lanes = [0.0; 4];
    let chunks = rows.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &row) in lanes.iter_mut().zip(chunk) {
            *lane += values[row as usize];
        }
    }
    let tail_sum: f64 = tail.iter().map(|&row| values[row as usize]).sum();
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + tail_sum
}

/// Adds the rows' gradients (and hessians, or 1 each) into a group's histogram part.
fn accumulate(
    group: &FeatureGroup,
    rows: &[u32],
    gradients: &[f64],
    hessians: Option<&[f64]>,
    histogram: &mut [Bin],
) {
    let width = group.width;
    let offsets = group.offsets.as_slice();
    match hessians {
        None => {
            for (&row, &gradient) in rows.iter().zip(gradients) {
                let start = row as usize * width;
                let bins = &group.bins[start..start + width];
                for (&bin, &offset) in bins.iter().zip(offsets) {
                    let entry = &mut histogram[offset + usize::from(bin)];
                    entry[0] += gradient;
                    entry[1] += 1.0;
                }
            }
        }
        Some(hessians) => {
            for ((&row, &gradient), &hessian) in rows.iter().zip(gradients).zip(hessians) {
                let start = row as usize * width;
                let bins = &group.bins[start..start + width];
                for (&bin, &offset) in bins.iter().zip(offsets) {
                    let entry = &mut histogram[offset + usize::from(bin)];
                    entry[0] += gradient;
                    entry[1] += hessian;
                }
            }
        }
    }
}
