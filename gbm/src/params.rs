//! Hyperparameters, in linfa's shape: [`GbmParams`] is a builder with defaults, [`GbmParams::check`]
//! turns it into [`GbmValidParams`] or a typed error, and only valid parameters reach the algorithm.

use serde::{Deserialize, Serialize};

use crate::GbmError;

/// The loss the trees minimise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Objective {
    /// Squared error: the trees fit the mean. Initial score: the (weighted) mean of the targets.
    L2,
    /// Absolute error: the trees fit the median. Splits are found on the sign of the residuals and
    /// each leaf's output is then renewed to the (weighted) median of its residuals, as LightGBM
    /// does. Initial score: the (weighted) median of the targets.
    L1,
    /// Pinball loss at `alpha`: the trees fit the alpha-quantile. Leaves are renewed to the
    /// alpha-quantile of their residuals; the initial score is the targets' alpha-quantile.
    Quantile {
        /// The quantile, in (0, 1).
        alpha: f64,
    },
    /// Huber loss: squared within `delta` of the target, absolute beyond. Initial score: the mean.
    Huber {
        /// Where the loss turns from squared to absolute, positive.
        delta: f64,
    },
}

impl Objective {
    /// The quantile a leaf's output is renewed to, for the objectives that renew leaves.
    pub(crate) fn renew_alpha(self) -> Option<f64> {
        match self {
            Objective::L1 => Some(0.5),
            Objective::Quantile { alpha } => Some(alpha),
            Objective::L2 | Objective::Huber { .. } => None,
        }
    }

    /// The loss of one prediction, for reports and tests.
    pub fn loss(self, prediction: f64, target: f64) -> f64 {
        let residual = target - prediction;
        match self {
            Objective::L2 => 0.5 * residual * residual,
            Objective::L1 => residual.abs(),
            Objective::Quantile { alpha } => {
                if residual >= 0.0 {
                    alpha * residual
                } else {
                    (alpha - 1.0) * residual
                }
            }
            Objective::Huber { delta } => {
                if residual.abs() <= delta {
                    0.5 * residual * residual
                } else {
                    delta * (residual.abs() - 0.5 * delta)
                }
            }
        }
    }
}

/// Checked hyperparameters: what [`GbmValidParams::fit`](crate::GbmValidParams::fit) runs with.
///
/// Defaults are LightGBM's (4.x) where LightGBM has the knob, so a probe with the same settings
/// compares like with like.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbmValidParams {
    pub(crate) objective: Objective,
    pub(crate) iterations: usize,
    pub(crate) learning_rate: f64,
    pub(crate) max_leaves: usize,
    pub(crate) max_depth: Option<usize>,
    pub(crate) min_data_in_leaf: usize,
    pub(crate) min_sum_hessian: f64,
    pub(crate) lambda_l2: f64,
    pub(crate) min_gain_to_split: f64,
    pub(crate) bagging_fraction: f64,
    pub(crate) bagging_freq: usize,
    pub(crate) feature_fraction: f64,
    pub(crate) max_bins: usize,
    pub(crate) min_data_in_bin: usize,
    pub(crate) bin_sample_rows: usize,
    pub(crate) seed: u64,
}

/// Hyperparameters of the boosted trees, a builder over [`GbmValidParams`].
///
/// ```
/// use parkcast_gbm::{GbmParams, Objective};
/// let params = GbmParams::default()
///     .objective(Objective::L1)
///     .iterations(200)
///     .max_leaves(15)
///     .check()
///     .expect("valid");
/// assert_eq!(params.iterations(), 200);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbmParams(GbmValidParams);

impl Default for GbmParams {
    fn default() -> Self {
        GbmParams(GbmValidParams {
            objective: Objective::L2,
            iterations: 100,
            learning_rate: 0.1,
            max_leaves: 31,
            max_depth: None,
            min_data_in_leaf: 20,
            min_sum_hessian: 1e-3,
            lambda_l2: 0.0,
            min_gain_to_split: 0.0,
            bagging_fraction: 1.0,
            bagging_freq: 0,
            feature_fraction: 1.0,
            max_bins: 255,
            min_data_in_bin: 3,
            bin_sample_rows: 200_000,
            seed: 0,
        })
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $type:ty),* $(,)?) => {
        impl GbmParams {
            $(
                $(#[$doc])*
                pub fn $name(mut self, $name: $type) -> Self {
                    self.0.$name = $name;
                    self
                }
            )*
        }
        impl GbmValidParams {
            $(
                $(#[$doc])*
                pub fn $name(&self) -> $type {
                    self.$name
                }
            )*
        }
    };
}

setters! {
    /// The loss (default L2).
    objective: Objective,
    /// Boosting rounds, one tree each (default 100). Training stops early when no leaf can split.
    iterations: usize,
    /// Shrinkage of every tree's output (default 0.1).
    learning_rate: f64,
    /// Leaves per tree; trees grow best-first, always splitting the leaf with the largest gain
    /// (default 31).
    max_leaves: usize,
    /// Depth limit, the root's children being at depth 1 (default none).
    max_depth: Option<usize>,
    /// Minimum rows in a leaf (default 20).
    min_data_in_leaf: usize,
    /// Minimum hessian sum in a leaf (default 1e-3; with unit weights every row adds 1).
    min_sum_hessian: f64,
    /// L2 penalty on leaf outputs (default 0).
    lambda_l2: f64,
    /// A split must improve the loss by more than this (default 0).
    min_gain_to_split: f64,
    /// Share of rows each tree sees when bagging is on (default 1).
    bagging_fraction: f64,
    /// Redraw the bag every this many trees; 0 turns bagging off (default 0).
    bagging_freq: usize,
    /// Share of the features each tree may split on, drawn per tree (default 1).
    feature_fraction: f64,
    /// Bins per feature for non-missing values, at most 255; missing values get a bin of their own
    /// (default 255).
    max_bins: usize,
    /// Minimum rows a bin holds when a feature has few distinct values (default 3).
    min_data_in_bin: usize,
    /// Rows sampled to find the bin boundaries (default 200,000, LightGBM's
    /// `bin_construct_sample_cnt`).
    bin_sample_rows: usize,
    /// Seed of bagging, feature sampling and the bin sample: equal seeds give equal models.
    seed: u64,
}

impl GbmParams {
    /// Checks every hyperparameter; what comes back can fit.
    pub fn check(&self) -> Result<GbmValidParams, GbmError> {
        let params = &self.0;
        let invalid = |name, reason| Err(GbmError::InvalidParam { name, reason });
        match params.objective {
            Objective::Quantile { alpha } if !(alpha > 0.0 && alpha < 1.0) => {
                return invalid("objective", "quantile alpha must be in (0, 1)");
            }
            Objective::Huber { delta } if !(delta > 0.0 && delta.is_finite()) => {
                return invalid("objective", "huber delta must be finite and positive");
            }
            _ => {}
        }
        if params.iterations == 0 {
            return invalid("iterations", "must be positive");
        }
        if !(params.learning_rate > 0.0 && params.learning_rate.is_finite()) {
            return invalid("learning_rate", "must be finite and positive");
        }
        if !(2..=65_536).contains(&params.max_leaves) {
            return invalid("max_leaves", "must be in 2..=65536");
        }
        if params.max_depth == Some(0) {
            return invalid("max_depth", "must be positive (or none)");
        }
        if params.min_data_in_leaf == 0 {
            return invalid("min_data_in_leaf", "must be positive");
        }
        if !(params.min_sum_hessian >= 0.0 && params.min_sum_hessian.is_finite()) {
            return invalid("min_sum_hessian", "must be finite and non-negative");
        }
        if !(params.lambda_l2 >= 0.0 && params.lambda_l2.is_finite()) {
            return invalid("lambda_l2", "must be finite and non-negative");
        }
        if !(params.min_gain_to_split >= 0.0 && params.min_gain_to_split.is_finite()) {
            return invalid("min_gain_to_split", "must be finite and non-negative");
        }
        if !(params.bagging_fraction > 0.0 && params.bagging_fraction <= 1.0) {
            return invalid("bagging_fraction", "must be in (0, 1]");
        }
        if !(params.feature_fraction > 0.0 && params.feature_fraction <= 1.0) {
            return invalid("feature_fraction", "must be in (0, 1]");
        }
        if !(2..=255).contains(&params.max_bins) {
            return invalid("max_bins", "must be in 2..=255");
        }
        if params.min_data_in_bin == 0 {
            return invalid("min_data_in_bin", "must be positive");
        }
        if params.bin_sample_rows == 0 {
            return invalid("bin_sample_rows", "must be positive");
        }
        Ok(params.clone())
    }
}

impl GbmValidParams {
    /// Whether rows are bagged.
    pub(crate) fn bagging(&self) -> bool {
        self.bagging_freq > 0 && self.bagging_fraction < 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_parameter() {
        assert!(GbmParams::default().check().is_ok());
        let cases: Vec<(GbmParams, &str)> = vec![
            (GbmParams::default().iterations(0), "iterations"),
            (GbmParams::default().learning_rate(0.0), "learning_rate"),
            (
                GbmParams::default().learning_rate(f64::NAN),
                "learning_rate",
            ),
            (GbmParams::default().max_leaves(1), "max_leaves"),
            (GbmParams::default().max_depth(Some(0)), "max_depth"),
            (GbmParams::default().min_data_in_leaf(0), "min_data_in_leaf"),
            (
                GbmParams::default().min_sum_hessian(-1.0),
                "min_sum_hessian",
            ),
            (GbmParams::default().lambda_l2(f64::INFINITY), "lambda_l2"),
            (
                GbmParams::default().min_gain_to_split(-0.1),
                "min_gain_to_split",
            ),
            (
                GbmParams::default().bagging_fraction(0.0),
                "bagging_fraction",
            ),
            (
                GbmParams::default().bagging_fraction(1.5),
                "bagging_fraction",
            ),
            (
                GbmParams::default().feature_fraction(0.0),
                "feature_fraction",
            ),
            (GbmParams::default().max_bins(256), "max_bins"),
            (GbmParams::default().max_bins(1), "max_bins"),
            (GbmParams::default().min_data_in_bin(0), "min_data_in_bin"),
            (GbmParams::default().bin_sample_rows(0), "bin_sample_rows"),
            (
                GbmParams::default().objective(Objective::Quantile { alpha: 1.0 }),
                "objective",
            ),
            (
                GbmParams::default().objective(Objective::Huber { delta: 0.0 }),
                "objective",
            ),
        ];
        for (params, expected) in cases {
            match params.check() {
                Err(GbmError::InvalidParam { name, .. }) => assert_eq!(name, expected),
                other => panic!("{expected}: expected InvalidParam, got {other:?}"),
            }
        }
    }

    #[test]
    fn losses_match_their_definitions() {
        assert_eq!(Objective::L2.loss(1.0, 3.0), 2.0);
        assert_eq!(Objective::L1.loss(1.0, -2.0), 3.0);
        let quantile = Objective::Quantile { alpha: 0.9 };
        assert!((quantile.loss(0.0, 1.0) - 0.9).abs() < 1e-12);
        assert!((quantile.loss(1.0, 0.0) - 0.1).abs() < 1e-12);
        let huber = Objective::Huber { delta: 1.0 };
        assert_eq!(huber.loss(0.0, 0.5), 0.125);
        assert_eq!(huber.loss(0.0, 3.0), 2.5);
    }
}
