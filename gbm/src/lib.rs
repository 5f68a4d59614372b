//! Histogram gradient-boosted trees in pure Rust, grown the way LightGBM grows them.
//!
//! parkcast's forecasters want an L1 (or quantile) objective, a fit fast enough to run several
//! times per backtest, and a model the server scores in microseconds; the pure-Rust crates
//! measured had only a squared loss or were several times slower than LightGBM, and LightGBM's
//! Rust bindings need CMake, clang and a C++ toolchain. This crate does what LightGBM does, for
//! regression:
//!
//! - features are binned once per fit: at most 255 quantile bins from a row sample, and missing
//!   values (NaN) in a bin of their own, routed by each split's learned default direction;
//! - trees grow leaf-wise (best-first) up to `max_leaves`, limited by `max_depth`,
//!   `min_data_in_leaf`, `min_sum_hessian` and `lambda_l2`; a split's smaller child gets its
//!   histogram from its rows and the larger one by subtraction from the parent;
//! - objectives L2, L1, quantile and Huber; L1 and quantile renew every leaf's output to the
//!   quantile of its residuals once the tree is grown; the initial score is the mean, median or
//!   alpha-quantile;
//! - row bagging, feature sampling per tree, a learning rate; histograms are built in parallel
//!   over groups of features with rayon, and the result does not depend on the thread count;
//! - the fitted [`GbmModel`] predicts from raw values (no binning at predict time) and serializes
//!   with serde.
//!
//! The learner (binning, growing, boosting, and rayon) sits behind the `fit` feature; without it
//! the crate loads and predicts fitted models only, which is what the server needs.
//!
//! The shape is linfa's: [`GbmParams`] (a builder with defaults) -> [`GbmParams::check`] ->
//! [`GbmValidParams::fit`] -> [`GbmModel`], whose `predict` takes `&self`.
//!
//! ```
//! use parkcast_gbm::{GbmParams, Objective, RowMajor};
//!
//! // y = |x0 - 5| with a missing x1 column that does not matter.
//! let mut values = Vec::new();
//! let mut targets = Vec::new();
//! for row in 0..400 {
//!     let x0 = (row % 40) as f64 / 4.0;
//!     values.extend([x0, if row % 3 == 0 { f64::NAN } else { 1.0 }]);
//!     targets.push((x0 - 5.0).abs());
//! }
//! let features = RowMajor::new(&values, 2)?;
//! let model = GbmParams::default()
//!     .objective(Objective::L1)
//!     .iterations(200)
//!     .min_data_in_leaf(5)
//!     .check()?
//!     .fit(features, &targets, None)?;
//! assert!((model.predict_one(&[9.0, f64::NAN]) - 4.0).abs() < 0.3);
//! assert_eq!(model.predict(features).len(), 400);
//! # Ok::<(), parkcast_gbm::GbmError>(())
//! ```

#[cfg(feature = "fit")]
mod binning;
#[cfg(feature = "fit")]
mod boosting;
#[cfg(feature = "fit")]
mod dataset;
mod error;
#[cfg(feature = "fit")]
mod grower;
mod model;
#[cfg(feature = "fit")]
mod objective;
mod params;
#[cfg(feature = "fit")]
mod rng;

pub use error::GbmError;
pub use model::GbmModel;
pub use params::{GbmParams, GbmValidParams, Objective};

/// A borrowed matrix stored row after row: `values[row * columns + column]`.
///
/// `&[[f64; N]]` rows become one with `RowMajor::new(rows.as_flattened(), N)`.
#[derive(Debug, Clone, Copy)]
pub struct RowMajor<'a> {
    values: &'a [f64],
    columns: usize,
}

impl<'a> RowMajor<'a> {
    /// Views `values` as rows of `columns` values; the length must be a whole number of rows.
    pub fn new(values: &'a [f64], columns: usize) -> Result<Self, GbmError> {
        if columns == 0 {
            return Err(GbmError::NoColumns);
        }
        if !values.len().is_multiple_of(columns) {
            return Err(GbmError::RaggedRows {
                values: values.len(),
                columns,
            });
        }
        Ok(RowMajor { values, columns })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.values.len() / self.columns
    }

    /// Values per row.
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// All values, row after row.
    pub fn values(&self) -> &'a [f64] {
        self.values
    }

    /// One row.
    pub fn row(&self, row: usize) -> &'a [f64] {
        &self.values[row * self.columns..(row + 1) * self.columns]
    }

    #[cfg(feature = "fit")]
    #[inline]
    pub(crate) fn value(&self, row: usize, column: usize) -> f64 {
        self.values[row * self.columns + column]
    }
}

#[cfg(feature = "fit")]
impl GbmParams {
    /// Checks the parameters, then fits: [`GbmParams::check`] and [`GbmValidParams::fit`].
    pub fn fit(
        &self,
        features: RowMajor<'_>,
        targets: &[f64],
        weights: Option<&[f64]>,
    ) -> Result<GbmModel, GbmError> {
        self.check()?.fit(features, targets, weights)
    }
}
