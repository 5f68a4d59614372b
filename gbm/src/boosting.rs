//! The boosting loop.

use rayon::prelude::*;

use crate::dataset::BinnedData;
use crate::grower::{Grower, GrownTree};
use crate::model::{Node, Tree};
use crate::objective::{gradients, initial_score, percentile, weighted_percentile};
use crate::rng::SplitMix64;
use crate::{GbmError, GbmModel, GbmValidParams, RowMajor};

impl GbmValidParams {
    /// Fits boosted trees to `targets` from the rows of `features`, optionally weighting rows.
    ///
    /// Inputs are checked first (whole rows, one finite target per row, finite non-negative
    /// weights that do not all vanish); after that the fit cannot fail. NaN features are missing
    /// values. The result depends only on the inputs and the parameters (the seed included), not on
    /// the number of threads.
    pub fn fit(
        &self,
        features: RowMajor<'_>,
        targets: &[f64],
        weights: Option<&[f64]>,
    ) -> Result<GbmModel, GbmError> {
        let rows = features.rows();
        if rows == 0 {
            return Err(GbmError::NoRows);
        }
        if rows > u32::MAX as usize {
            return Err(GbmError::TooManyRows {
                rows,
                max: u32::MAX as usize,
            });
        }
        if targets.len() != rows {
            return Err(GbmError::LengthMismatch {
                what: "targets",
                expected: rows,
                found: targets.len(),
            });
        }
        if let Some(row) = targets.iter().position(|target| !target.is_finite()) {
            return Err(GbmError::NonFiniteTarget { row });
        }
        if let Some(weights) = weights {
            if weights.len() != rows {
                return Err(GbmError::LengthMismatch {
                    what: "weights",
                    expected: rows,
                    found: weights.len(),
                });
            }
            if let Some(row) = weights
                .iter()
                .position(|weight| !(weight.is_finite() && *weight >= 0.0))
            {
                return Err(GbmError::InvalidWeight { row });
            }
            if weights.iter().all(|weight| *weight == 0.0) {
                return Err(GbmError::ZeroWeight);
            }
        }
        Ok(self.boost(features, targets, weights))
    }

    fn boost(&self, features: RowMajor<'_>, targets: &[f64], weights: Option<&[f64]>) -> GbmModel {
        let rows = features.rows();
        let data = BinnedData::new(features, self);
        let init_score = initial_score(self.objective, targets, weights);
        let mut scores = vec![init_score; rows];
        let mut gradient_buffer = vec![0.0; rows];
        let mut hessian_buffer = if weights.is_some() {
            vec![0.0; rows]
        } else {
            Vec::new()
        };
        let mut grower = Grower::new(&data, self);
        let mut rng = SplitMix64::new(self.seed);
        let bag_size = ((rows as f64 * self.bagging_fraction).round() as usize).clamp(1, rows);
        let mut bag: Option<Vec<u32>> = None;
        let mut out_of_bag: Vec<u32> = Vec::new();
        let feature_count = data.features.len();
        let allowed_count = ((feature_count as f64 * self.feature_fraction).round() as usize)
            .clamp(1, feature_count.max(1));
        let mut allowed = vec![true; feature_count];
        let mut trees = Vec::with_capacity(self.iterations);
        for iteration in 0..self.iterations {
            if self.bagging() && iteration.is_multiple_of(self.bagging_freq) {
                let chosen = rng.sample_sorted(rows, bag_size);
                out_of_bag.clear();
                let mut next = chosen.iter().peekable();
                for row in 0..rows as u32 {
                    if next.peek() == Some(&&row) {
                        next.next();
                    } else {
                        out_of_bag.push(row);
                    }
                }
                bag = Some(chosen);
            }
            if allowed_count < feature_count {
                allowed.fill(false);
                for feature in rng.choose(feature_count, allowed_count) {
                    allowed[feature] = true;
                }
            }
            gradients(
                self.objective,
                &scores,
                targets,
                weights,
                &mut gradient_buffer,
                &mut hessian_buffer,
            );
            let hessians = weights.is_some().then_some(hessian_buffer.as_slice());
            let grown = grower.grow(bag.as_deref(), &gradient_buffer, hessians, &allowed);
            if grown.nodes.is_empty() && iteration > 0 {
                // No leaf can split any more: later trees would be the same constant.
                break;
            }
            let leaves = self.leaf_values(&grower, &grown, targets, weights, &scores);
            for (range, value) in grown.ranges.iter().zip(&leaves) {
                for &row in grower.leaf_rows(*range) {
                    scores[row as usize] += value;
                }
            }
            if bag.is_some() {
                for &row in &out_of_bag {
                    scores[row as usize] += leaves[grown.leaf_of(&data, row as usize)];
                }
            }
            trees.push(model_tree(&data, &grown, leaves));
        }
        GbmModel::new(features.columns(), self.objective, init_score, trees)
    }

    /// Leaf outputs times the learning rate: Newton steps, or for L1 and quantile the quantile of
    /// each leaf's residuals at the scores before this tree (LightGBM's leaf renewal).
    fn leaf_values(
        &self,
        grower: &Grower<'_>,
        grown: &GrownTree,
        targets: &[f64],
        weights: Option<&[f64]>,
        scores: &[f64],
    ) -> Vec<f64> {
        let Some(alpha) = self.objective.renew_alpha() else {
            return grown
                .outputs
                .iter()
                .map(|output| output * self.learning_rate)
                .collect();
        };
        grown
            .ranges
            .par_iter()
            .zip(&grown.outputs)
            .map(|(range, output)| {
                let rows = grower.leaf_rows(*range);
                if rows.is_empty() {
                    return output * self.learning_rate;
                }
                let mut residuals: Vec<f64> = rows
                    .iter()
                    .map(|&row| targets[row as usize] - scores[row as usize])
                    .collect();
                let renewed = match weights {
                    None => percentile(&mut residuals, alpha),
                    Some(weights) => {
                        let leaf_weights: Vec<f64> =
                            rows.iter().map(|&row| weights[row as usize]).collect();
                        weighted_percentile(&residuals, &leaf_weights, alpha)
                    }
                };
                renewed * self.learning_rate
            })
            .collect()
    }
}

/// The grown tree over raw values: each split's threshold is its bin's upper boundary.
fn model_tree(data: &BinnedData, grown: &GrownTree, leaves: Vec<f64>) -> Tree {
    let nodes = grown
        .nodes
        .iter()
        .map(|node| {
            let feature = &data.features[node.feature];
            Node {
                // Columns are counted from a slice, far below u32::MAX in any real matrix; a
                // larger column index cannot be a feature here (rows would not fit memory).
                column: u32::try_from(feature.column).unwrap_or(u32::MAX),
                threshold: feature.mapper.upper_bounds[usize::from(node.threshold)],
                left: node.left,
                right: node.right,
                default_left: node.default_left,
            }
        })
        .collect();
    Tree { nodes, leaves }
}
