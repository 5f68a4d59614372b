//! Forecasting models behind one shape, linfa's: hyperparameters are checked, then fitted on a
//! training set into a model, which predicts.
//!
//! Every model forecasts the occupancy rate at the target from a feature vector
//! ([`parkcast_features::vector`]). The learned models predict a correction to an *anchor*, the
//! strongest baseline available in the row ("persistence + profile change", or persistence when the
//! profile is missing), and keep one sub-model per horizon: what helps at two hours hurts at fifteen
//! minutes when one model serves all horizons. Forecasts are clipped to [0, 1].
//!
//! - [`BaselineModel`]: the baselines read straight from the vector (nothing to fit).
//! - [`LinearParams`] -> [`LinearModel`]: elastic net (linfa-elasticnet) on standardised features.
//! - [`GbmParams`] -> [`GbmModel`]: histogram gradient-boosted trees ([`parkcast_gbm`], pure Rust,
//!   grown as LightGBM grows them; `gbm/README.md` has the measurements against LightGBM and
//!   forust-ml) with an L1 objective by default; several bagging seeds can be averaged.
//! - [`ForustGbmModel`]: the forust-ml trees earlier versions trained (squared loss with one IRLS
//!   round towards L1). Nothing fits them any more; model files that hold them still load and
//!   predict what they did.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use forust_ml::data::Matrix;
use forust_ml::gradientbooster::GradientBooster;
#[cfg(feature = "fit")]
use linfa::prelude::*;
#[cfg(feature = "fit")]
use linfa_elasticnet::ElasticNet;
#[cfg(feature = "fit")]
use ndarray::{Array1, Array2, ShapeBuilder};
use parkcast_features::vector::{FEATURE_COUNT, FeatureVector, index};
pub use parkcast_gbm::Objective;
use parkcast_gbm::{GbmError, RowMajor};
use serde::{Deserialize, Serialize};

/// Errors of fitting, saving and loading models.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A hyperparameter is out of range.
    #[error("invalid hyperparameter {name}: {reason}")]
    InvalidParam {
        /// The parameter.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// No training rows for a horizon.
    #[error("no training rows for horizon {horizon_minutes} min")]
    NoRows {
        /// The horizon.
        horizon_minutes: u32,
    },
    /// The tree learner refused its input.
    #[error("gradient boosting failed: {0}")]
    Gbm(#[from] GbmError),
    /// The linear solver failed.
    #[error("elastic net failed: {0}")]
    Linear(String),
    /// A model file could not be decoded.
    #[error("model file is corrupt: {0}")]
    Corrupt(String),
}

/// The rows of one horizon: features and the actual rate at the target.
#[derive(Debug, Clone, Default)]
pub struct HorizonRows {
    /// Feature vectors.
    pub features: Vec<FeatureVector>,
    /// Actual rates at the targets.
    pub targets: Vec<f64>,
}

/// A training set: rows per horizon in minutes.
pub type TrainingSet = BTreeMap<u32, HorizonRows>;

/// The anchor of a row: persistence + profile change, or persistence without a profile.
pub fn anchor(row: &FeatureVector) -> f64 {
    let combined = row[index::PERSISTENCE_PLUS_PROFILE_CHANGE];
    if combined.is_nan() {
        row[index::RATE_ORIGIN]
    } else {
        combined
    }
}

fn horizon_of(row: &FeatureVector) -> u32 {
    // Horizons are whole minutes well inside u32.
    row[index::HORIZON_MINUTES] as u32
}

/// The report name of a saved model kind (`gbm`, `linear`): what backtest metrics call it.
pub fn report_name(kind: &str) -> Option<&'static str> {
    match kind {
        "gbm" => Some("gradient-boosted trees"),
        "linear" => Some("elastic net"),
        _ => None,
    }
}

/// A fitted forecaster.
pub trait Forecaster: Send + Sync {
    /// Name in reports.
    fn name(&self) -> &str;
    /// Rate forecasts in [0, 1], one per row (NaN where the model cannot forecast the row).
    fn predict(&self, rows: &[FeatureVector]) -> Vec<f64>;
}

/// Hyperparameters that check and fit into a [`Forecaster`] (the `fit` feature: the trainer
/// fits, the server only loads and predicts, so it does not link the solvers).
#[cfg(feature = "fit")]
pub trait ForecasterParams {
    /// The fitted model.
    type Model: Forecaster;
    /// What one horizon's fit yields.
    type Horizon;
    /// Checks the hyperparameters.
    fn check(&self) -> Result<(), ModelError>;
    /// Fits one horizon's rows (the hyperparameters are checked).
    fn fit_horizon(
        &self,
        horizon_minutes: u32,
        rows: &HorizonRows,
    ) -> Result<Self::Horizon, ModelError>;
    /// The model of the fitted horizons.
    fn assemble(&self, horizons: BTreeMap<u32, Self::Horizon>) -> Self::Model;

    /// Fits on a training set (checks first), the horizons side by side: one fit's own parallel
    /// loops are short (a leaf's histogram), and on few cores the threads spent more time waking
    /// between them than working; fits running at once keep every core busy (gbm/README.md: the
    /// Birmingham probe's six fits in 1.35 s instead of 4.36 s). The fits are deterministic, so the
    /// model is the same as fitted one horizon after another.
    fn fit(&self, data: &TrainingSet) -> Result<Self::Model, ModelError>
    where
        Self: Sync,
        Self::Horizon: Send,
    {
        use rayon::prelude::*;
        self.check()?;
        let horizons = data
            .par_iter()
            .map(|(&horizon_minutes, rows)| {
                Ok((horizon_minutes, self.fit_horizon(horizon_minutes, rows)?))
            })
            .collect::<Result<BTreeMap<_, _>, ModelError>>()?;
        Ok(self.assemble(horizons))
    }
}

/// A baseline read from the feature vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineModel {
    /// The rate at the origin.
    Persistence,
    /// The same time one day back (or more, to stay at or before the origin).
    SeasonalDay,
    /// The same time one week back.
    SeasonalWeek,
    /// The weekday x time-of-day profile at the target.
    Profile,
    /// Persistence plus the profile's change from origin to target.
    PersistencePlusProfileChange,
}

impl BaselineModel {
    /// Every baseline, in report order.
    pub const ALL: [BaselineModel; 5] = [
        BaselineModel::Persistence,
        BaselineModel::SeasonalDay,
        BaselineModel::SeasonalWeek,
        BaselineModel::Profile,
        BaselineModel::PersistencePlusProfileChange,
    ];
}

impl Forecaster for BaselineModel {
    fn name(&self) -> &str {
        match self {
            BaselineModel::Persistence => "persistence",
            BaselineModel::SeasonalDay => "seasonal naive 1 day",
            BaselineModel::SeasonalWeek => "seasonal naive 1 week",
            BaselineModel::Profile => "weekday x time profile",
            BaselineModel::PersistencePlusProfileChange => "persistence + profile change",
        }
    }

    fn predict(&self, rows: &[FeatureVector]) -> Vec<f64> {
        let feature = match self {
            BaselineModel::Persistence => index::RATE_ORIGIN,
            BaselineModel::SeasonalDay => index::RATE_DAY_BACK,
            BaselineModel::SeasonalWeek => index::RATE_WEEK_BACK,
            BaselineModel::Profile => index::PROFILE_TARGET,
            BaselineModel::PersistencePlusProfileChange => index::PERSISTENCE_PLUS_PROFILE_CHANGE,
        };
        rows.iter().map(|row| row[feature]).collect()
    }
}

/// Hyperparameters of the gradient-boosted trees: one ensemble per horizon, fitted to the
/// correction of the anchor.
///
/// The names are LightGBM's (and [`parkcast_gbm::GbmParams`]'s), so a search or a comparison with
/// LightGBM maps one to one. Missing fields in a saved configuration take their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GbmParams {
    /// The loss (default L1: the backtest scores MAE, and L1 keeps a few odd days from pulling
    /// every leaf).
    pub objective: Objective,
    /// Boosting rounds per ensemble.
    pub iterations: usize,
    /// Shrinkage per round.
    pub learning_rate: f64,
    /// Leaves per tree (trees grow best-first).
    pub max_leaves: usize,
    /// Depth limit (none by default: `max_leaves` bounds the trees).
    pub max_depth: Option<usize>,
    /// Minimum training rows per leaf.
    pub min_data_in_leaf: usize,
    /// L2 penalty on leaf outputs.
    pub lambda_l2: f64,
    /// Share of rows each tree sees (1 = no row bagging).
    pub bagging_fraction: f64,
    /// Redraw the rows every this many trees (0 = no row bagging).
    pub bagging_freq: usize,
    /// Share of features each tree may split on.
    pub feature_fraction: f64,
    /// Ensembles per horizon, fitted with seeds `seed, seed + 1, ...` and averaged: bagging over
    /// seeds lowers the variance row and feature sampling add. More than one needs sampling on.
    /// Default 1: on Birmingham 3 seeds moved the MAE by under 0.5% (0.0128 / 0.0202 / 0.0323
    /// against 0.0128 / 0.0203 / 0.0324) for 3x the fit time and 3x the scoring time.
    pub bagging_seeds: usize,
    /// Seed of the first ensemble.
    pub seed: u64,
    /// Features left out of the trees (by index).
    pub excluded_features: Vec<usize>,
}

impl Default for GbmParams {
    fn default() -> Self {
        GbmParams {
            objective: Objective::L1,
            iterations: 300,
            learning_rate: 0.05,
            max_leaves: 31,
            max_depth: None,
            min_data_in_leaf: 20,
            lambda_l2: 0.0,
            bagging_fraction: 0.8,
            bagging_freq: 1,
            feature_fraction: 0.8,
            bagging_seeds: 1,
            seed: 7,
            excluded_features: Vec::new(),
        }
    }
}

/// The features a model reads: every one but `excluded`.
#[cfg(feature = "fit")]
fn used_features(excluded: &[usize]) -> Vec<usize> {
    (0..FEATURE_COUNT)
        .filter(|feature| !excluded.contains(feature))
        .collect()
}

#[cfg(feature = "fit")]
impl GbmParams {
    fn used_features(&self) -> Vec<usize> {
        used_features(&self.excluded_features)
    }

    /// The tree learner's parameters for one ensemble.
    fn trees(&self, bag: usize) -> parkcast_gbm::GbmParams {
        parkcast_gbm::GbmParams::default()
            .objective(self.objective)
            .iterations(self.iterations)
            .learning_rate(self.learning_rate)
            .max_leaves(self.max_leaves)
            .max_depth(self.max_depth)
            .min_data_in_leaf(self.min_data_in_leaf)
            .lambda_l2(self.lambda_l2)
            .bagging_fraction(self.bagging_fraction)
            .bagging_freq(self.bagging_freq)
            .feature_fraction(self.feature_fraction)
            .seed(self.seed.wrapping_add(bag as u64))
    }

    /// Whether trees sample rows or features, so that seeds give different ensembles.
    fn samples(&self) -> bool {
        (self.bagging_freq > 0 && self.bagging_fraction < 1.0) || self.feature_fraction < 1.0
    }
}

/// The used features of rows, row after row, as the tree learner reads them.
fn row_major(rows: &[FeatureVector], used: &[usize]) -> Vec<f64> {
    let mut values = Vec::with_capacity(rows.len() * used.len());
    for row in rows {
        values.extend(used.iter().map(|&feature| row[feature]));
    }
    values
}

#[cfg(feature = "fit")]
impl ForecasterParams for GbmParams {
    type Model = GbmModel;
    type Horizon = Vec<parkcast_gbm::GbmModel>;

    fn check(&self) -> Result<(), ModelError> {
        let invalid = |name, reason| Err(ModelError::InvalidParam { name, reason });
        if self.bagging_seeds == 0 {
            return invalid("bagging_seeds", "must be positive");
        }
        if self.bagging_seeds > 1 && !self.samples() {
            return invalid(
                "bagging_seeds",
                "more than one needs row bagging or feature sampling (seeds would give equal trees)",
            );
        }
        if self.excluded_features.iter().any(|f| *f >= FEATURE_COUNT) {
            return invalid("excluded_features", "must be feature indices");
        }
        if self.used_features().is_empty() {
            return invalid("excluded_features", "must leave at least one feature");
        }
        match self.trees(0).check() {
            Ok(_) => Ok(()),
            Err(GbmError::InvalidParam { name, reason }) => invalid(name, reason),
            Err(error) => Err(ModelError::Gbm(error)),
        }
    }

    /// Fits each horizon's ensembles to `target - anchor`. Rows whose correction is not finite
    /// (no anchor) teach nothing and are left out.
    fn fit_horizon(
        &self,
        horizon_minutes: u32,
        rows: &HorizonRows,
    ) -> Result<Vec<parkcast_gbm::GbmModel>, ModelError> {
        let used = self.used_features();
        let (mut values, mut corrections) = (Vec::new(), Vec::new());
        for (row, target) in rows.features.iter().zip(&rows.targets) {
            let correction = target - anchor(row);
            if correction.is_finite() {
                values.extend(used.iter().map(|&feature| row[feature]));
                corrections.push(correction);
            }
        }
        if corrections.is_empty() {
            return Err(ModelError::NoRows { horizon_minutes });
        }
        let matrix = RowMajor::new(&values, used.len())?;
        (0..self.bagging_seeds)
            .map(|bag| Ok(self.trees(bag).fit(matrix, &corrections, None)?))
            .collect()
    }

    fn assemble(&self, horizons: BTreeMap<u32, Vec<parkcast_gbm::GbmModel>>) -> GbmModel {
        GbmModel {
            params: self.clone(),
            used: self.used_features(),
            horizons,
        }
    }
}

/// Fitted gradient-boosted trees: per horizon, the ensembles of every bagging seed, whose
/// corrections are averaged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbmModel {
    params: GbmParams,
    used: Vec<usize>,
    horizons: BTreeMap<u32, Vec<parkcast_gbm::GbmModel>>,
}

impl GbmModel {
    /// The hyperparameters it was fitted with.
    pub fn params(&self) -> &GbmParams {
        &self.params
    }

    /// Trees over every horizon and seed.
    pub fn tree_count(&self) -> usize {
        self.horizons
            .values()
            .flatten()
            .map(parkcast_gbm::GbmModel::tree_count)
            .sum()
    }

    /// Whether the model holds together with this build's feature vector: a model file from
    /// elsewhere could name features beyond it or ensembles of another width.
    fn consistent(&self) -> bool {
        self.used.iter().all(|feature| *feature < FEATURE_COUNT)
            && self.horizons.values().all(|ensembles| {
                !ensembles.is_empty()
                    && ensembles
                        .iter()
                        .all(|ensemble| ensemble.columns() == self.used.len())
            })
    }
}

impl Forecaster for GbmModel {
    fn name(&self) -> &str {
        "gradient-boosted trees"
    }

    fn predict(&self, rows: &[FeatureVector]) -> Vec<f64> {
        predict_by_horizon(rows, |horizon, group| {
            let ensembles = self.horizons.get(&horizon)?;
            let values = row_major(group, &self.used);
            let matrix = RowMajor::new(&values, self.used.len()).ok()?;
            let mut sums = vec![0.0; group.len()];
            for ensemble in ensembles {
                for (sum, correction) in sums.iter_mut().zip(ensemble.predict(matrix)) {
                    *sum += correction;
                }
            }
            let count = ensembles.len() as f64;
            Some(sums.into_iter().map(|sum| sum / count).collect())
        })
    }
}

/// The hyperparameters forust-ml models were trained with; kept so their files still decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForustGbmParams {
    /// Boosting rounds.
    pub iterations: usize,
    /// Shrinkage per round.
    pub learning_rate: f32,
    /// Leaves per tree.
    pub max_leaves: usize,
    /// Depth limit.
    pub max_depth: usize,
    /// Minimum hessian sum per leaf.
    pub min_leaf_weight: f32,
    /// L2 penalty on leaf weights.
    pub l2: f32,
    /// Row subsampling per tree.
    pub subsample: f32,
    /// Column subsampling per tree.
    pub colsample_bytree: f64,
    /// Extra IRLS rounds towards an L1 objective.
    pub l1_rounds: u32,
    /// Seed of the subsampling.
    pub seed: u64,
    /// Features left out of the trees (by index).
    pub excluded_features: Vec<usize>,
}

/// Gradient-boosted trees of forust-ml, one booster per horizon, as earlier versions saved them.
/// Read-only: they load and predict, nothing fits them.
#[derive(Serialize, Deserialize)]
pub struct ForustGbmModel {
    params: ForustGbmParams,
    used: Vec<usize>,
    boosters: BTreeMap<u32, GradientBooster>,
}

/// Column-major copy of the used features, as forust wants them.
fn column_major(rows: &[FeatureVector], used: &[usize]) -> Vec<f64> {
    let mut data = Vec::with_capacity(rows.len() * used.len());
    for &feature in used {
        data.extend(rows.iter().map(|row| row[feature]));
    }
    data
}

impl Forecaster for ForustGbmModel {
    fn name(&self) -> &str {
        "gradient-boosted trees"
    }

    fn predict(&self, rows: &[FeatureVector]) -> Vec<f64> {
        predict_by_horizon(rows, |horizon, group| {
            let booster = self.boosters.get(&horizon)?;
            let columns = column_major(group, &self.used);
            let matrix = Matrix::new(&columns, group.len(), self.used.len());
            Some(booster.predict(&matrix, true))
        })
    }
}

/// Groups rows by horizon, asks `correct` for each group's corrections and applies them to the
/// anchors; rows of a horizon without a model get NaN.
fn predict_by_horizon(
    rows: &[FeatureVector],
    correct: impl Fn(u32, &[FeatureVector]) -> Option<Vec<f64>>,
) -> Vec<f64> {
    let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (position, row) in rows.iter().enumerate() {
        groups.entry(horizon_of(row)).or_default().push(position);
    }
    let mut forecasts = vec![f64::NAN; rows.len()];
    for (horizon, positions) in groups {
        let group: Vec<FeatureVector> = positions.iter().map(|&position| rows[position]).collect();
        let Some(corrections) = correct(horizon, &group) else {
            continue;
        };
        for ((position, row), correction) in positions.iter().zip(&group).zip(corrections) {
            forecasts[*position] = (anchor(row) + correction).clamp(0.0, 1.0);
        }
    }
    forecasts
}

/// Hyperparameters of the linear model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearParams {
    /// Overall penalty strength.
    pub penalty: f64,
    /// Share of the penalty on L1 (0 = ridge, 1 = lasso).
    pub l1_ratio: f64,
    /// Features left out (lot and kind codes are labels, not quantities).
    pub excluded_features: Vec<usize>,
}

impl Default for LinearParams {
    fn default() -> Self {
        LinearParams {
            penalty: 1e-4,
            l1_ratio: 0.5,
            excluded_features: vec![index::LOT_CODE, index::LOT_KIND],
        }
    }
}

/// One horizon's linear model on standardised features; a missing value is imputed with the
/// training mean (0 after standardising).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearHorizon {
    means: Vec<f64>,
    scales: Vec<f64>,
    coefficients: Vec<f64>,
    intercept: f64,
}

impl LinearHorizon {
    fn standardise(&self, row: &FeatureVector, used: &[usize]) -> Vec<f64> {
        used.iter()
            .zip(self.means.iter().zip(&self.scales))
            .map(|(&feature, (mean, scale))| {
                let value = row[feature];
                if value.is_finite() {
                    (value - mean) / scale
                } else {
                    0.0
                }
            })
            .collect()
    }

    fn correction(&self, row: &FeatureVector, used: &[usize]) -> f64 {
        self.standardise(row, used)
            .iter()
            .zip(&self.coefficients)
            .fold(self.intercept, |sum, (value, coefficient)| {
                sum + value * coefficient
            })
    }
}

/// A fitted elastic net per horizon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearModel {
    params: LinearParams,
    used: Vec<usize>,
    horizons: BTreeMap<u32, LinearHorizon>,
}

#[cfg(feature = "fit")]
impl ForecasterParams for LinearParams {
    type Model = LinearModel;
    type Horizon = LinearHorizon;

    fn check(&self) -> Result<(), ModelError> {
        if !(self.penalty >= 0.0 && self.penalty.is_finite()) {
            return Err(ModelError::InvalidParam {
                name: "penalty",
                reason: "must be finite and non-negative",
            });
        }
        if !(0.0..=1.0).contains(&self.l1_ratio) {
            return Err(ModelError::InvalidParam {
                name: "l1_ratio",
                reason: "must be in [0, 1]",
            });
        }
        Ok(())
    }

    fn fit_horizon(
        &self,
        horizon_minutes: u32,
        rows: &HorizonRows,
    ) -> Result<LinearHorizon, ModelError> {
        let used = self.used_features();
        if rows.features.is_empty() {
            return Err(ModelError::NoRows { horizon_minutes });
        }
        let (mut means, mut scales) = (Vec::new(), Vec::new());
        for &feature in &used {
            let finite: Vec<f64> = rows
                .features
                .iter()
                .map(|row| row[feature])
                .filter(|value| value.is_finite())
                .collect();
            let count = finite.len().max(1) as f64;
            let mean = finite.iter().sum::<f64>() / count;
            let variance = finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / count;
            means.push(mean);
            scales.push(if variance > 1e-18 {
                variance.sqrt()
            } else {
                1.0
            });
        }
        let mut horizon = LinearHorizon {
            means,
            scales,
            coefficients: Vec::new(),
            intercept: 0.0,
        };
        // Column-major: coordinate descent walks one feature's column at a time, and a row-major
        // matrix made every step a strided pass (the 200-lot benchmark spent most of its time there).
        let mut records = Array2::<f64>::zeros((rows.features.len(), used.len()).f());
        for (mut record, row) in records.outer_iter_mut().zip(&rows.features) {
            record.assign(&Array1::from(horizon.standardise(row, &used)));
        }
        let residuals = Array1::from_iter(
            rows.features
                .iter()
                .zip(&rows.targets)
                .map(|(row, target)| target - anchor(row)),
        );
        let (coefficients, intercept) =
            fit_elastic_net(&records, &residuals, self.penalty, self.l1_ratio)?;
        horizon.coefficients = coefficients;
        horizon.intercept = intercept;
        Ok(horizon)
    }

    fn assemble(&self, horizons: BTreeMap<u32, LinearHorizon>) -> LinearModel {
        LinearModel {
            params: self.clone(),
            used: self.used_features(),
            horizons,
        }
    }
}

/// Relative size below which an eigenvalue of the Gram matrix counts as zero in
/// [`fit_elastic_net`]: the direction is a constant column or an exact collinearity, and dividing
/// by its root would only amplify rounding.
#[cfg(feature = "fit")]
const NEGLIGIBLE_EIGENVALUE: f64 = 1e-12;

/// linfa's elastic net (with an intercept: the targets' mean) of `targets` on the n x p `records`,
/// fitted through an equivalent problem of p rows. Returns the coefficients and the intercept.
///
/// Coordinate descent on the n rows costs two passes over every row per coordinate step (the
/// 200-lot benchmark spent half of its fitting time there), but a squared loss sees the rows only
/// through `G = X'X` and `X'y`. With `G = Q diag(l) Q'`, the p rows `L = diag(sqrt l) Q'` and
/// targets `z = diag(1 / sqrt l) Q' X'y` have `L'L = G` and `L'z = X'y`, so `|y - Xw|^2` and
/// `|z - Lw|^2` differ by a constant for every `w`: each coordinate step (which reads `X'r` and
/// the column norms) is the same on both, and costs O(p) instead of O(n). linfa scales the penalty
/// by the row count, so it gets `penalty * n / p`. Only the duality-gap check that stops the
/// descent sees the constant; it stops within the same tolerance.
#[cfg(feature = "fit")]
fn fit_elastic_net(
    records: &Array2<f64>,
    targets: &Array1<f64>,
    penalty: f64,
    l1_ratio: f64,
) -> Result<(Vec<f64>, f64), ModelError> {
    use linfa_linalg::eigh::EighInto;

    let linear = |error: &dyn std::fmt::Display| ModelError::Linear(error.to_string());
    let (rows, features) = records.dim();
    let mean = targets.mean().unwrap_or(0.0);
    let centred = targets - mean;
    let gram = records.t().dot(records);
    let moments = records.t().dot(&centred);
    let (eigenvalues, eigenvectors) = gram.eigh_into().map_err(|error| linear(&error))?;
    let largest = eigenvalues.iter().copied().fold(0.0_f64, f64::max);
    let mut reduced = Array2::<f64>::zeros((features, features));
    let mut reduced_targets = Array1::<f64>::zeros(features);
    for (k, (&eigenvalue, vector)) in eigenvalues.iter().zip(eigenvectors.columns()).enumerate() {
        // NaN compares false: such a direction is left out too.
        let kept = eigenvalue > NEGLIGIBLE_EIGENVALUE * largest;
        if !kept {
            continue;
        }
        let root = eigenvalue.sqrt();
        reduced.row_mut(k).assign(&(&vector * root));
        reduced_targets[k] = vector.dot(&moments) / root;
    }
    let fitted = ElasticNet::params()
        .penalty(penalty * rows as f64 / features.max(1) as f64)
        .l1_ratio(l1_ratio)
        .with_intercept(false)
        .max_iterations(1_000)
        .tolerance(1e-4)
        .fit(&Dataset::new(reduced, reduced_targets))
        .map_err(|error| linear(&error))?;
    Ok((fitted.hyperplane().to_vec(), mean))
}

#[cfg(feature = "fit")]
impl LinearParams {
    fn used_features(&self) -> Vec<usize> {
        used_features(&self.excluded_features)
    }
}

impl Forecaster for LinearModel {
    fn name(&self) -> &str {
        "elastic net"
    }

    fn predict(&self, rows: &[FeatureVector]) -> Vec<f64> {
        predict_by_horizon(rows, |horizon, group| {
            let model = self.horizons.get(&horizon)?;
            Some(
                group
                    .iter()
                    .map(|row| model.correction(row, &self.used))
                    .collect(),
            )
        })
    }
}

/// Gzipped MessagePack of a value: the encoding of model files (every f64 kept as its 8 bytes).
pub(crate) fn pack<T: Serialize>(value: &T) -> Result<Vec<u8>, ModelError> {
    let body =
        rmp_serde::to_vec_named(value).map_err(|error| ModelError::Corrupt(error.to_string()))?;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(&body)
        .and_then(|()| encoder.finish())
        .map_err(|error| ModelError::Corrupt(error.to_string()))
}

/// The inverse of [`pack`]; anything else is [`ModelError::Corrupt`].
pub(crate) fn unpack<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ModelError> {
    let corrupt = |error: &dyn std::fmt::Display| ModelError::Corrupt(error.to_string());
    let mut body = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut body)
        .map_err(|error| corrupt(&error))?;
    rmp_serde::from_slice(&body).map_err(|error| corrupt(&error))
}

/// A model as saved in a model file.
pub enum SavedModel {
    /// Gradient-boosted trees ([`parkcast_gbm`]): what the trainer fits.
    Gbm(GbmModel),
    /// Elastic net.
    Linear(LinearModel),
    /// forust-ml trees from model files of earlier versions (load and predict only).
    ForustGbm(ForustGbmModel),
}

/// The model file's body. MessagePack (not JSON) because it stores every f64 as its 8 bytes: a
/// reloaded model predicts bit for bit what the saved one did, and NaN thresholds survive.
///
/// The variant names are the tags in the files: `Gbm` holds forust-ml trees because files of
/// earlier versions say so, and the new trees came as `Trees`.
#[derive(Serialize)]
enum ModelFileRef<'a> {
    Gbm(&'a ForustGbmModel),
    Linear(&'a LinearModel),
    Trees(&'a GbmModel),
}

#[derive(Deserialize)]
enum ModelFile {
    Gbm(ForustGbmModel),
    Linear(LinearModel),
    Trees(GbmModel),
}

impl SavedModel {
    /// The kind as the manifest names it (both tree libraries are `gbm`: one report line).
    pub fn kind(&self) -> &'static str {
        match self {
            SavedModel::Gbm(_) | SavedModel::ForustGbm(_) => "gbm",
            SavedModel::Linear(_) => "linear",
        }
    }

    /// The model as a forecaster.
    pub fn forecaster(&self) -> &dyn Forecaster {
        match self {
            SavedModel::Gbm(model) => model,
            SavedModel::Linear(model) => model,
            SavedModel::ForustGbm(model) => model,
        }
    }

    /// Gzipped MessagePack bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        match self {
            SavedModel::Gbm(model) => pack(&ModelFileRef::Trees(model)),
            SavedModel::Linear(model) => pack(&ModelFileRef::Linear(model)),
            SavedModel::ForustGbm(model) => pack(&ModelFileRef::Gbm(model)),
        }
    }

    /// Decodes [`SavedModel::to_bytes`] output, of this version or an earlier one; anything else
    /// is [`ModelError::Corrupt`].
    pub fn from_bytes(bytes: &[u8]) -> Result<SavedModel, ModelError> {
        let file: ModelFile = unpack(bytes)?;
        Ok(match file {
            ModelFile::Trees(model) => {
                if !model.consistent() {
                    return Err(ModelError::Corrupt(
                        "tree model dimensions disagree".to_owned(),
                    ));
                }
                SavedModel::Gbm(model)
            }
            ModelFile::Gbm(model) => {
                if model.used.iter().any(|feature| *feature >= FEATURE_COUNT) {
                    return Err(ModelError::Corrupt("feature index out of range".to_owned()));
                }
                SavedModel::ForustGbm(model)
            }
            ModelFile::Linear(model) => {
                let consistent = model.used.iter().all(|feature| *feature < FEATURE_COUNT)
                    && model.horizons.values().all(|horizon| {
                        horizon.means.len() == model.used.len()
                            && horizon.scales.len() == model.used.len()
                            && horizon.coefficients.len() == model.used.len()
                    });
                if !consistent {
                    return Err(ModelError::Corrupt(
                        "linear model dimensions disagree".to_owned(),
                    ));
                }
                SavedModel::Linear(model)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows where the target is the anchor plus a known function of two features.
    fn synthetic(rows: usize, horizon_minutes: f64) -> HorizonRows {
        let mut data = HorizonRows::default();
        for row in 0..rows {
            let mut vector = [f64::NAN; FEATURE_COUNT];
            let x = (row % 97) as f64 / 97.0;
            let y = (row % 13) as f64 / 13.0;
            vector[index::HORIZON_MINUTES] = horizon_minutes;
            vector[index::RATE_ORIGIN] = 0.5;
            vector[index::PERSISTENCE_PLUS_PROFILE_CHANGE] = 0.4 + 0.2 * x;
            vector[index::DEVIATION_ORIGIN] = y - 0.5;
            vector[index::DEVIATION_TODAY] = if row % 5 == 0 { f64::NAN } else { x };
            data.targets
                .push((0.4 + 0.2 * x + 0.1 * (y - 0.5)).clamp(0.0, 1.0));
            data.features.push(vector);
        }
        data
    }

    fn training_set() -> TrainingSet {
        [(30, synthetic(2_000, 30.0)), (60, synthetic(2_000, 60.0))]
            .into_iter()
            .collect()
    }

    /// The reduced fit finds what linfa finds on the rows themselves, with a constant column and
    /// two exactly collinear ones among the features.
    #[test]
    fn the_gram_fit_of_the_elastic_net_equals_linfas_fit_on_the_rows() {
        let rows = 5_000;
        let mut state = 0x9e37_79b9_u64;
        let mut uniform = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let mut records = Array2::<f64>::zeros((rows, 6).f());
        let mut targets = Array1::<f64>::zeros(rows);
        for row in 0..rows {
            let (a, b, c) = (uniform(), uniform(), uniform());
            let values = [a, b, 0.0, a + b, c, 0.3 * a + uniform() * 0.1];
            for (column, value) in values.iter().enumerate() {
                records[[row, column]] = *value;
            }
            targets[row] = 0.2 + 1.5 * a - 0.7 * c + 0.4 * values[5] + 0.05 * uniform();
        }
        for (penalty, l1_ratio) in [(1e-4, 0.5), (1e-2, 0.9), (0.0, 0.5)] {
            let direct = ElasticNet::params()
                .penalty(penalty)
                .l1_ratio(l1_ratio)
                .max_iterations(1_000)
                .tolerance(1e-4)
                .fit(&Dataset::new(records.clone(), targets.clone()))
                .expect("direct fit");
            let (coefficients, intercept) =
                fit_elastic_net(&records, &targets, penalty, l1_ratio).expect("reduced fit");
            assert_eq!(intercept, direct.intercept());
            let predictions = records.dot(&Array1::from(coefficients.clone())) + intercept;
            let direct_predictions = records.dot(direct.hyperplane()) + direct.intercept();
            let largest_gap = predictions
                .iter()
                .zip(&direct_predictions)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                largest_gap < 1e-3,
                "penalty {penalty}, l1 {l1_ratio}: predictions differ by {largest_gap} \
                 ({coefficients:?} against {:?})",
                direct.hyperplane()
            );
            assert_eq!(coefficients[2], 0.0, "the constant column stays out");
        }
    }

    fn mae(model: &dyn Forecaster, rows: &HorizonRows) -> f64 {
        let forecasts = model.predict(&rows.features);
        forecasts
            .iter()
            .zip(&rows.targets)
            .map(|(forecast, target)| (forecast - target).abs())
            .sum::<f64>()
            / rows.targets.len() as f64
    }

    #[test]
    fn models_learn_the_correction_and_round_trip_exactly() {
        let data = training_set();
        let test = synthetic(500, 60.0);
        let anchor_mae = mae(&BaselineModel::PersistencePlusProfileChange, &test);
        let gbm = GbmParams {
            iterations: 60,
            learning_rate: 0.2,
            ..GbmParams::default()
        }
        .fit(&data)
        .expect("fits");
        let linear = LinearParams::default().fit(&data).expect("fits");
        assert!(
            mae(&gbm, &test) < anchor_mae / 3.0,
            "trees learn the deviation"
        );
        assert!(
            mae(&linear, &test) < anchor_mae / 3.0,
            "so does the linear model"
        );
        for saved in [SavedModel::Gbm(gbm), SavedModel::Linear(linear)] {
            let bytes = saved.to_bytes().expect("saves");
            let loaded = SavedModel::from_bytes(&bytes).expect("loads");
            assert_eq!(loaded.kind(), saved.kind());
            let (before, after) = (
                saved.forecaster().predict(&test.features),
                loaded.forecaster().predict(&test.features),
            );
            assert!(
                before
                    .iter()
                    .zip(&after)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{} predicts identically after reload",
                saved.kind()
            );
        }
    }

    #[test]
    fn unknown_horizons_and_bad_files_are_refused() {
        let linear = LinearParams::default().fit(&training_set()).expect("fits");
        let other = synthetic(3, 90.0);
        assert!(linear.predict(&other.features).iter().all(|v| v.is_nan()));
        assert!(matches!(
            SavedModel::from_bytes(b"not gzip"),
            Err(ModelError::Corrupt(_))
        ));
        assert!(
            GbmParams {
                learning_rate: 0.0,
                ..GbmParams::default()
            }
            .check()
            .is_err()
        );
        let empty: TrainingSet = [(30, HorizonRows::default())].into_iter().collect();
        assert!(matches!(
            LinearParams::default().fit(&empty),
            Err(ModelError::NoRows { .. })
        ));
        assert!(matches!(
            GbmParams::default().fit(&empty),
            Err(ModelError::NoRows { .. })
        ));
    }

    #[test]
    fn tree_hyperparameters_are_checked_before_fitting_and_name_themselves() {
        let name_of = |params: GbmParams| match params.check() {
            Err(ModelError::InvalidParam { name, .. }) => name,
            other => panic!("expected InvalidParam, got {other:?}"),
        };
        assert!(GbmParams::default().check().is_ok());
        assert_eq!(GbmParams::default().objective, Objective::L1);
        let cases = [
            (
                GbmParams {
                    bagging_seeds: 0,
                    ..GbmParams::default()
                },
                "bagging_seeds",
            ),
            (
                GbmParams {
                    bagging_seeds: 2,
                    bagging_freq: 0,
                    feature_fraction: 1.0,
                    ..GbmParams::default()
                },
                "bagging_seeds",
            ),
            (
                GbmParams {
                    max_leaves: 1,
                    ..GbmParams::default()
                },
                "max_leaves",
            ),
            (
                GbmParams {
                    objective: Objective::Quantile { alpha: 1.5 },
                    ..GbmParams::default()
                },
                "objective",
            ),
            (
                GbmParams {
                    excluded_features: (0..FEATURE_COUNT).collect(),
                    ..GbmParams::default()
                },
                "excluded_features",
            ),
        ];
        for (params, expected) in cases {
            assert_eq!(name_of(params), expected);
        }
        // A configuration saved before a field existed takes the default for it.
        let old: GbmParams =
            serde_json::from_str(r#"{"iterations": 50, "learning_rate": 0.1}"#).expect("parses");
        assert_eq!(old.iterations, 50);
        assert_eq!(old.bagging_seeds, GbmParams::default().bagging_seeds);
    }

    #[test]
    fn bagging_seeds_average_the_corrections_of_one_fit_per_seed() {
        let data = training_set();
        let test = synthetic(300, 30.0);
        let params = GbmParams {
            iterations: 20,
            learning_rate: 0.2,
            bagging_seeds: 2,
            ..GbmParams::default()
        };
        let bagged = params.fit(&data).expect("fits");
        assert!(
            bagged
                .horizons
                .values()
                .all(|ensembles| ensembles.len() == 2)
        );
        let single = |seed| {
            GbmParams {
                bagging_seeds: 1,
                seed,
                ..params.clone()
            }
            .fit(&data)
            .expect("fits")
            .predict(&test.features)
        };
        let (first, second) = (single(params.seed), single(params.seed + 1));
        assert_ne!(first, second, "seeds sample differently");
        for ((bagged, first), (second, row)) in bagged
            .predict(&test.features)
            .iter()
            .zip(&first)
            .zip(second.iter().zip(&test.features))
        {
            // Forecasts are anchor + correction, clipped; these stay inside [0, 1].
            let average = anchor(row) + ((first - anchor(row)) + (second - anchor(row))) / 2.0;
            assert!((bagged - average).abs() < 1e-12, "{bagged} vs {average}");
        }
    }

    /// A model of horizons fitted one after another on the calling thread.
    fn fitted_one_by_one<P: ForecasterParams>(params: &P, data: &TrainingSet) -> P::Model {
        params.assemble(
            data.iter()
                .map(|(&minutes, rows)| (minutes, params.fit_horizon(minutes, rows).expect("fits")))
                .collect(),
        )
    }

    #[test]
    fn horizons_fitted_side_by_side_equal_horizons_fitted_one_by_one() {
        let data = training_set();
        // Three threads for two horizons: each fit's own loops share the pool with the other's.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("a pool");
        let trees = GbmParams {
            iterations: 30,
            ..GbmParams::default()
        };
        let side_by_side = pool.install(|| trees.fit(&data)).expect("fits");
        assert_eq!(side_by_side, fitted_one_by_one(&trees, &data));
        let linear = LinearParams::default();
        let side_by_side = pool.install(|| linear.fit(&data)).expect("fits");
        assert_eq!(side_by_side, fitted_one_by_one(&linear, &data));
    }

    #[test]
    fn the_l1_objective_shrugs_off_outliers_that_pull_a_squared_loss() {
        let mut data = training_set();
        for rows in data.values_mut() {
            // One row in ten reads 0.4 above what the features explain (a sensor glitch).
            for (position, target) in rows.targets.iter_mut().enumerate() {
                if position % 10 == 3 {
                    *target = (*target + 0.4).min(1.0);
                }
            }
        }
        let test = synthetic(500, 60.0);
        let fit = |objective| {
            GbmParams {
                objective,
                iterations: 60,
                learning_rate: 0.2,
                bagging_seeds: 1,
                ..GbmParams::default()
            }
            .fit(&data)
            .expect("fits")
        };
        let (l1, l2) = (
            mae(&fit(Objective::L1), &test),
            mae(&fit(Objective::L2), &test),
        );
        assert!(l1 < l2 / 2.0, "L1 {l1} vs L2 {l2} on clean test rows");
    }

    #[test]
    fn a_tree_model_file_that_disagrees_with_its_features_is_refused() {
        let mut model = GbmParams {
            iterations: 5,
            bagging_seeds: 1,
            ..GbmParams::default()
        }
        .fit(&training_set())
        .expect("fits");
        model.used.pop();
        let bytes = SavedModel::Gbm(model).to_bytes().expect("saves");
        assert!(matches!(
            SavedModel::from_bytes(&bytes),
            Err(ModelError::Corrupt(_))
        ));
    }

    /// A model file of an earlier version (forust-ml trees, fitted on these synthetic rows) and its
    /// forecasts then, as f64 bits: it must still load as forust trees and forecast bit for bit
    /// the same.
    #[test]
    fn forust_model_files_of_earlier_versions_still_load_and_predict_identically() {
        #[derive(Deserialize)]
        struct Expected {
            rows: Vec<Vec<u64>>,
            predictions: Vec<u64>,
        }
        let expected: Expected =
            serde_json::from_str(include_str!("../tests/data/forust-gbm.expected.json"))
                .expect("fixture parses");
        let loaded = SavedModel::from_bytes(include_bytes!("../tests/data/forust-gbm.model"))
            .expect("the old file loads");
        assert!(matches!(loaded, SavedModel::ForustGbm(_)));
        assert_eq!(loaded.kind(), "gbm");
        // Features appended to the vector since then are NaN for the old model, which never read
        // them; features moved within the vector would need a new fixture.
        let rows: Vec<FeatureVector> = expected
            .rows
            .iter()
            .map(|bits| {
                let mut row = [f64::NAN; FEATURE_COUNT];
                for (value, bits) in row.iter_mut().zip(bits) {
                    *value = f64::from_bits(*bits);
                }
                row
            })
            .collect();
        let forecasts: Vec<u64> = loaded
            .forecaster()
            .predict(&rows)
            .iter()
            .map(|forecast| forecast.to_bits())
            .collect();
        assert_eq!(forecasts, expected.predictions);
        let saved_again =
            SavedModel::from_bytes(&loaded.to_bytes().expect("saves")).expect("loads");
        assert!(matches!(saved_again, SavedModel::ForustGbm(_)));
    }
}
