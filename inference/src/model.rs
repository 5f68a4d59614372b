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
//! - [`GbmParams`] -> [`GbmModel`]: gradient-boosted trees (forust-ml, pure Rust; see the trainer note
//!   for what was measured against LightGBM and the others). forust has only a squared loss; an L1
//!   objective is approximated by iteratively reweighted least squares: each extra round refits with
//!   weights `1 / max(|residual|, floor)` from the previous round.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use forust_ml::data::Matrix;
use forust_ml::gradientbooster::{GradientBooster, GrowPolicy};
use forust_ml::objective::ObjectiveType;
use linfa::prelude::*;
use linfa_elasticnet::ElasticNet;
use ndarray::{Array1, Array2, ShapeBuilder};
use parkcast_features::vector::{FEATURE_COUNT, FeatureVector, index};
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
    /// The tree library failed.
    #[error("gradient boosting failed: {0}")]
    Gbm(String),
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

/// Hyperparameters that check and fit into a [`Forecaster`].
pub trait ForecasterParams {
    /// The fitted model.
    type Model: Forecaster;
    /// Checks the hyperparameters.
    fn check(&self) -> Result<(), ModelError>;
    /// Fits on a training set (checks first).
    fn fit(&self, data: &TrainingSet) -> Result<Self::Model, ModelError>;
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

/// Hyperparameters of the gradient-boosted trees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GbmParams {
    /// Boosting rounds.
    pub iterations: usize,
    /// Shrinkage per round.
    pub learning_rate: f32,
    /// Leaves per tree (trees grow best-first).
    pub max_leaves: usize,
    /// Depth limit.
    pub max_depth: usize,
    /// Minimum hessian sum (about rows, with unit weights) per leaf.
    pub min_leaf_weight: f32,
    /// L2 penalty on leaf weights.
    pub l2: f32,
    /// Row subsampling per tree.
    pub subsample: f32,
    /// Column subsampling per tree.
    pub colsample_bytree: f64,
    /// Extra IRLS rounds towards an L1 objective (0 = squared loss).
    pub l1_rounds: u32,
    /// Seed of the subsampling.
    pub seed: u64,
    /// Features left out of the trees (by index).
    pub excluded_features: Vec<usize>,
}

impl Default for GbmParams {
    fn default() -> Self {
        GbmParams {
            iterations: 300,
            learning_rate: 0.05,
            max_leaves: 31,
            max_depth: 8,
            min_leaf_weight: 20.0,
            l2: 1.0,
            subsample: 0.8,
            colsample_bytree: 0.8,
            l1_rounds: 1,
            seed: 7,
            excluded_features: Vec::new(),
        }
    }
}

/// Column-major copy of the used features, as forust wants them.
fn column_major(rows: &[FeatureVector], used: &[usize]) -> Vec<f64> {
    let mut data = Vec::with_capacity(rows.len() * used.len());
    for &feature in used {
        data.extend(rows.iter().map(|row| row[feature]));
    }
    data
}

impl GbmParams {
    fn used_features(&self) -> Vec<usize> {
        (0..FEATURE_COUNT)
            .filter(|feature| !self.excluded_features.contains(feature))
            .collect()
    }

    fn booster(&self) -> GradientBooster {
        let mut booster = GradientBooster::default();
        booster.objective_type = ObjectiveType::SquaredLoss;
        booster.iterations = self.iterations;
        booster.learning_rate = self.learning_rate;
        booster.max_leaves = self.max_leaves;
        booster.max_depth = self.max_depth;
        booster.min_leaf_weight = self.min_leaf_weight;
        booster.l2 = self.l2;
        booster.subsample = self.subsample;
        booster.colsample_bytree = self.colsample_bytree;
        booster.seed = self.seed;
        booster.grow_policy = GrowPolicy::LossGuide;
        booster.base_score = 0.0;
        booster.initialize_base_score = true;
        booster.parallel = true;
        booster
    }
}

impl ForecasterParams for GbmParams {
    type Model = GbmModel;

    fn check(&self) -> Result<(), ModelError> {
        let invalid = |name, reason| Err(ModelError::InvalidParam { name, reason });
        if self.iterations == 0 {
            return invalid("iterations", "must be positive");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            return invalid("learning_rate", "must be in (0, 1]");
        }
        if self.max_leaves < 2 {
            return invalid("max_leaves", "must be at least 2");
        }
        if !(self.subsample > 0.0 && self.subsample <= 1.0) {
            return invalid("subsample", "must be in (0, 1]");
        }
        if !(self.colsample_bytree > 0.0 && self.colsample_bytree <= 1.0) {
            return invalid("colsample_bytree", "must be in (0, 1]");
        }
        if self.excluded_features.iter().any(|f| *f >= FEATURE_COUNT) {
            return invalid("excluded_features", "must be feature indices");
        }
        Ok(())
    }

    fn fit(&self, data: &TrainingSet) -> Result<GbmModel, ModelError> {
        self.check()?;
        let used = self.used_features();
        let mut boosters = BTreeMap::new();
        for (&horizon_minutes, rows) in data {
            if rows.features.is_empty() {
                return Err(ModelError::NoRows { horizon_minutes });
            }
            let columns = column_major(&rows.features, &used);
            let matrix = Matrix::new(&columns, rows.features.len(), used.len());
            let anchors: Vec<f64> = rows.features.iter().map(anchor).collect();
            let residuals: Vec<f64> = rows
                .targets
                .iter()
                .zip(&anchors)
                .map(|(target, anchor)| target - anchor)
                .collect();
            let mut weights = vec![1.0; residuals.len()];
            let mut booster = self.booster();
            for round in 0..=self.l1_rounds {
                booster = self.booster();
                booster
                    .fit(&matrix, &residuals, &weights, None)
                    .map_err(|error| ModelError::Gbm(error.to_string()))?;
                if round < self.l1_rounds {
                    let fitted = booster.predict(&matrix, true);
                    // Floor the weights at a tenth of the median absolute residual so near-perfect
                    // rows do not dominate.
                    let mut magnitudes: Vec<f64> = residuals
                        .iter()
                        .zip(&fitted)
                        .map(|(residual, fit)| (residual - fit).abs())
                        .collect();
                    let floor = median(&mut magnitudes.clone()).max(1e-6) * 0.1;
                    for (weight, magnitude) in weights.iter_mut().zip(magnitudes.drain(..)) {
                        *weight = 1.0 / magnitude.max(floor);
                    }
                    let mean_weight = weights.iter().sum::<f64>() / weights.len() as f64;
                    weights.iter_mut().for_each(|weight| *weight /= mean_weight);
                }
            }
            boosters.insert(horizon_minutes, booster);
        }
        Ok(GbmModel {
            params: self.clone(),
            used,
            boosters,
        })
    }
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let middle = values.len() / 2;
    values.select_nth_unstable_by(middle, f64::total_cmp);
    values[middle]
}

/// Fitted gradient-boosted trees, one booster per horizon.
#[derive(Serialize, Deserialize)]
pub struct GbmModel {
    params: GbmParams,
    used: Vec<usize>,
    boosters: BTreeMap<u32, GradientBooster>,
}

impl Forecaster for GbmModel {
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
struct LinearHorizon {
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

impl ForecasterParams for LinearParams {
    type Model = LinearModel;

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

    fn fit(&self, data: &TrainingSet) -> Result<LinearModel, ModelError> {
        self.check()?;
        let used: Vec<usize> = (0..FEATURE_COUNT)
            .filter(|feature| !self.excluded_features.contains(feature))
            .collect();
        let mut horizons = BTreeMap::new();
        for (&horizon_minutes, rows) in data {
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
            let fitted = ElasticNet::params()
                .penalty(self.penalty)
                .l1_ratio(self.l1_ratio)
                .max_iterations(1_000)
                .tolerance(1e-4)
                .fit(&Dataset::new(records, residuals))
                .map_err(|error| ModelError::Linear(error.to_string()))?;
            horizon.coefficients = fitted.hyperplane().to_vec();
            horizon.intercept = fitted.intercept();
            horizons.insert(horizon_minutes, horizon);
        }
        Ok(LinearModel {
            params: self.clone(),
            used,
            horizons,
        })
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
    /// Gradient-boosted trees.
    Gbm(GbmModel),
    /// Elastic net.
    Linear(LinearModel),
}

/// The model file's body. MessagePack (not JSON) because it stores every f64 as its 8 bytes: a
/// reloaded model predicts bit for bit what the saved one did, and NaN thresholds survive.
#[derive(Serialize)]
enum ModelFileRef<'a> {
    Gbm(&'a GbmModel),
    Linear(&'a LinearModel),
}

#[derive(Deserialize)]
enum ModelFile {
    Gbm(GbmModel),
    Linear(LinearModel),
}

impl SavedModel {
    /// The kind as the manifest names it.
    pub fn kind(&self) -> &'static str {
        match self {
            SavedModel::Gbm(_) => "gbm",
            SavedModel::Linear(_) => "linear",
        }
    }

    /// The model as a forecaster.
    pub fn forecaster(&self) -> &dyn Forecaster {
        match self {
            SavedModel::Gbm(model) => model,
            SavedModel::Linear(model) => model,
        }
    }

    /// Gzipped MessagePack bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        match self {
            SavedModel::Gbm(model) => pack(&ModelFileRef::Gbm(model)),
            SavedModel::Linear(model) => pack(&ModelFileRef::Linear(model)),
        }
    }

    /// Decodes [`SavedModel::to_bytes`] output; anything else is [`ModelError::Corrupt`].
    pub fn from_bytes(bytes: &[u8]) -> Result<SavedModel, ModelError> {
        let file: ModelFile = unpack(bytes)?;
        Ok(match file {
            ModelFile::Gbm(model) => {
                if model.used.iter().any(|feature| *feature >= FEATURE_COUNT) {
                    return Err(ModelError::Corrupt("feature index out of range".to_owned()));
                }
                SavedModel::Gbm(model)
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
    }
}
