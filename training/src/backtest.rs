//! Rolling-origin backtests: every baseline and learned model, per horizon and per lot, on a source's
//! lot occupancy in the warehouse.
//!
//! The protocol (the one behind the published Birmingham figures, which the baselines reproduce):
//! readings go to the nearest grid instant ([`parkcast_features::grid`]); each test target is forecast
//! from the origin `horizon` steps earlier, on the same local day when `same_day` is set (garages that
//! close at night have no overnight origins). Features come from the batch path of
//! [`parkcast_features::vector`]; each window's profiles are fitted, and its models trained, on data
//! before the window only (training rows' targets too). A forecaster that cannot forecast a pair
//! falls back to persistence, and the fallbacks are counted. Errors are MAE and RMSE of the rate and
//! in slots (rate error times the capacity at the target).
//!
//! Uncertainty: split-conformal 80% and 95% intervals ([`parkcast_features::conformal`]) from each
//! forecaster's residuals per horizon over a sliding window of `calibration_days` before each origin.
//! The window starts on the days before the test window, forecast by profiles and models fitted
//! before those days (so the residuals are out of sample), and then takes in each test residual as
//! soon as its actual is known, as live serving does. The report gives the share of test actuals
//! the intervals cover.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate, NaiveDateTime, Timelike};
use parkcast_features::calendar::DayType;
use parkcast_features::conformal::{
    ADAPTIVE_COVERAGES, AdaptiveTracker, CalibrationScope, DayTypeCalibration, Misses,
    adaptive_class, interval_around, lot_scales,
};
use parkcast_features::grid::GridSeries;
use parkcast_features::vector::batch::{self, BatchRequest, LotHistory};
use parkcast_features::vector::{
    FeatureParams, FeatureVector, LotContext, LotProfile, index, local_time,
};
use parkcast_localtime::day_start_ms;
use parkcast_warehouse::{Warehouse, WarehouseError};
use polars::prelude::PolarsError;
use rayon::prelude::*;

use crate::groups::{DEFAULT_GROUP_LOTS, Group, LotGroups, LotSummary};
use crate::matrix::{MatrixDir, MatrixError, PartRows};
use crate::prior::{Prior, PriorSpec};
use crate::progress::Progress;
use parkcast_inference::model::{
    BaselineModel, Forecaster, ForecasterParams, GbmModel, GbmParams, HorizonRows, LinearModel,
    LinearParams, ModelError, TrainingSet,
};
use parkcast_inference::reference::HourlyError;
use parkcast_warehouse::lots::{LotInputs, LotsError};

/// Errors of a backtest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BacktestError {
    /// Reading the warehouse failed.
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    /// A polars query failed.
    #[error("{context}: {source}")]
    Polars {
        /// What was being done.
        context: &'static str,
        /// The polars error.
        source: PolarsError,
    },
    /// Reading the lots failed.
    #[error(transparent)]
    Lots(#[from] LotsError),
    /// Fitting a model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The training matrix could not be written or read.
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    /// The scratch folder of the training matrix could not be created.
    #[error("creating a scratch folder for the training matrix in {}: {source}", path.display())]
    Scratch {
        /// Where.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A training matrix built by shards does not fit this run.
    #[error("the prebuilt training matrix at {}: {reason}", path.display())]
    Prebuilt {
        /// The matrix folder.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
    /// A group of lots read again held another number of lots than the first pass found: the
    /// warehouse was written to during the run.
    #[error(
        "the warehouse changed during the run: a group of {expected} lots now reads {found}; run again"
    )]
    WarehouseChanged {
        /// Lots the first pass found.
        expected: usize,
        /// Lots read now.
        found: usize,
    },
    /// Invalid settings.
    #[error("invalid backtest config: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
    },
    /// The warehouse holds no reading of the source.
    #[error("no source {source_name:?} in fact_lot_occupancy; the warehouse holds: {}", if available.is_empty() { "nothing (import a data set first)".to_owned() } else { available.join(", ") })]
    NoSuchSource {
        /// The source asked for.
        source_name: String,
        /// The sources there are, with their lot counts (`birmingham (28 lots)`).
        available: Vec<String>,
    },
    /// No lot had enough data.
    #[error(
        "no usable lot for source {source_name:?} (each needs readings on at least {min_day_share:.0}% of training days)"
    )]
    NoUsableLot {
        /// The source.
        source_name: String,
        /// The coverage asked for, percent.
        min_day_share: f64,
    },
}

/// Residuals per model and horizon a conformal window holds at most by default.
pub const DEFAULT_CALIBRATION_RESIDUALS: usize = 100_000;

/// What to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestConfig {
    /// `fact_lot_occupancy.source` to evaluate (`birmingham`, `malaga`, `simulated`, ...).
    pub source: String,
    /// Grid step, minutes.
    pub step_minutes: u32,
    /// Horizons, in grid steps.
    pub horizons: Vec<u32>,
    /// First local date of the test window.
    pub test_start: NaiveDate,
    /// Last local date of the test window (inclusive).
    pub test_end: NaiveDate,
    /// Pair origins and targets only within one local day.
    pub same_day: bool,
    /// A lot is usable when it has readings on at least this share of the training days.
    pub min_day_share: f64,
    /// Days before the test window whose residuals calibrate the intervals (the profile used for
    /// them is fitted before these days, so the residuals are out of sample).
    pub calibration_days: u32,
    /// Rolling origins: how many consecutive windows as long as the test window, the last one being
    /// the test window itself. Each window is forecast with profiles and calibration from the data
    /// before its own start.
    pub windows: u32,
    /// Split `[test_start, test_end]` into consecutive windows of this many days (the last may be
    /// shorter; a rest under half a window joins the window before it, so a year in quarters of 91
    /// days is four windows, not four and a day with a model of its own); `windows` is then ignored.
    pub window_days: Option<u32>,
    /// Train models on at most this many days before each cut-off (`None`: all history).
    pub training_days: Option<u32>,
    /// Cap on training rows per horizon: origins are thinned evenly to stay under it.
    pub max_training_rows: usize,
    /// Which residuals calibrate each interval: all, or those of the target's day type.
    pub calibration: CalibrationScope,
    /// Calibrate residuals in units of their lot's scale ([`lot_scales`]): each lot's intervals
    /// follow its own errors. `false`: one calibration for every lot.
    pub lot_scale: bool,
    /// Score the validation days only: fit and forecast the calibration days before each window
    /// and skip the test windows entirely (no test fit is made, no test actual is read). What a
    /// hyperparameter search runs, so that it cannot choose on the test.
    pub validation_only: bool,
    /// Lots read, featurised and dropped together ([`crate::groups`]): peak memory grows with it,
    /// not with the city. Results do not depend on it.
    pub group_lots: usize,
    /// Where the training matrix is written while a run lasts (`None`: the system's temporary
    /// folder); removed when the run ends.
    pub scratch: Option<PathBuf>,
    /// A training matrix built beforehand by shards ([`crate::shards`]) for this very protocol:
    /// the fits read it instead of building their rows.
    pub matrix: Option<PathBuf>,
    /// Residuals per model and horizon a conformal window holds at most, about: a larger city's
    /// are a hashed share of its pairs, the same number per day type ([`residual_strides`]).
    pub calibration_residuals: usize,
}

impl BacktestConfig {
    /// The Birmingham protocol of the reference figures: 30-minute grid, horizons 30 min / 1 h / 2 h,
    /// test week 13-19 Dec 2016, same-day pairs.
    pub fn birmingham() -> Self {
        BacktestConfig {
            source: "birmingham".to_owned(),
            step_minutes: 30,
            horizons: vec![1, 2, 4],
            test_start: NaiveDate::from_ymd_opt(2016, 12, 13).expect("valid date"),
            test_end: NaiveDate::from_ymd_opt(2016, 12, 19).expect("valid date"),
            same_day: true,
            min_day_share: 0.5,
            calibration_days: 14,
            windows: 1,
            window_days: None,
            training_days: None,
            max_training_rows: 400_000,
            calibration: CalibrationScope::default(),
            lot_scale: true,
            validation_only: false,
            group_lots: DEFAULT_GROUP_LOTS,
            scratch: None,
            matrix: None,
            calibration_residuals: DEFAULT_CALIBRATION_RESIDUALS,
        }
    }

    /// The cut-off of every fit a backtest makes, in order: per window, the calibration fit's and
    /// (unless validation only) the test fit's. With weekly windows and two weeks of calibration
    /// days a cut-off recurs (a window's calibration fit is the test fit of the window two weeks
    /// before it); [`backtest`] fits each once.
    pub fn cuts(&self) -> Vec<NaiveDate> {
        let mut cuts = Vec::new();
        for (window_start, _) in self.windows() {
            cuts.push(window_start - Days::new(u64::from(self.calibration_days)));
            if !self.validation_only {
                cuts.push(window_start);
            }
        }
        cuts
    }

    /// The first day of the first window.
    pub fn first_start(&self) -> NaiveDate {
        self.windows()
            .first()
            .map_or(self.test_start, |window| window.0)
    }

    /// The feature parameters of this grid.
    pub fn feature_params(&self) -> FeatureParams {
        FeatureParams::new(self.step_minutes)
    }

    pub(crate) fn validate(&self) -> Result<(), BacktestError> {
        let invalid = |reason| Err(BacktestError::InvalidConfig { reason });
        if self.step_minutes == 0 || 1_440 % self.step_minutes != 0 {
            return invalid("step_minutes must divide a day");
        }
        if self.horizons.is_empty() || self.horizons.contains(&0) {
            return invalid("horizons must be non-empty and positive");
        }
        if self.test_end < self.test_start {
            return invalid("test_end must not be before test_start");
        }
        if !(0.0..=1.0).contains(&self.min_day_share) {
            return invalid("min_day_share must be within [0, 1]");
        }
        if self.calibration_days == 0 {
            return invalid("calibration_days must be positive");
        }
        if self.windows == 0 {
            return invalid("windows must be positive");
        }
        if self
            .horizons
            .iter()
            .any(|h| *h > self.feature_params().max_horizon_steps())
        {
            return invalid("horizons must be at most 7 days");
        }
        if self.max_training_rows == 0 {
            return invalid("max_training_rows must be positive");
        }
        if self.group_lots == 0 {
            return invalid("group_lots must be positive");
        }
        if self.calibration_residuals == 0 {
            return invalid("calibration_residuals must be positive");
        }
        Ok(())
    }

    /// The rolling-origin windows, oldest first; the last ends at `test_end`.
    pub fn windows(&self) -> Vec<(NaiveDate, NaiveDate)> {
        if let Some(days) = self.window_days.filter(|days| *days > 0) {
            let mut windows = Vec::new();
            let mut start = self.test_start;
            while start <= self.test_end {
                let end = (start + Days::new(u64::from(days) - 1)).min(self.test_end);
                windows.push((start, end));
                start = end + Days::new(1);
            }
            let rest = windows
                .last()
                .map_or(0, |(first, last)| (*last - *first).num_days() + 1);
            if windows.len() > 1 && rest * 2 < i64::from(days) {
                let (_, last) = windows.pop().expect("two or more");
                if let Some(before) = windows.last_mut() {
                    before.1 = last;
                }
            }
            return windows;
        }
        let length_days = ((self.test_end - self.test_start).num_days() + 1).max(1) as u64;
        (0..u64::from(self.windows))
            .rev()
            .map(|back| {
                let shift = Days::new(length_days * back);
                (self.test_start - shift, self.test_end - shift)
            })
            .collect()
    }
}

/// Errors of one model at one horizon.
#[derive(Debug, Clone, PartialEq)]
pub struct HorizonMetrics {
    /// The model.
    pub model: String,
    /// Horizon in grid steps.
    pub horizon_steps: u32,
    /// Horizon in minutes.
    pub horizon_minutes: u32,
    /// Forecast-actual pairs.
    pub pairs: u64,
    /// Pairs where the model fell back to persistence.
    pub fallbacks: u64,
    /// Mean absolute error of the rate.
    pub mae_rate: f64,
    /// Root mean squared error of the rate.
    pub rmse_rate: f64,
    /// Mean absolute error in slots.
    pub mae_slots: f64,
    /// Root mean squared error in slots.
    pub rmse_slots: f64,
    /// Share of test actuals inside the 80% conformal interval (`None` without calibration data).
    pub coverage_80: Option<f64>,
    /// Share of test actuals inside the 95% conformal interval.
    pub coverage_95: Option<f64>,
    /// Mean width of the 80% interval, as a rate.
    pub width_80: Option<f64>,
}

/// One forecast of the last window, kept for plots.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastSample {
    /// The lot.
    pub lot_id: String,
    /// Horizon in grid steps.
    pub horizon_steps: u32,
    /// The target instant, ms.
    pub target_ms: i64,
    /// The actual rate.
    pub actual_rate: f64,
    /// Every model's forecast, in [`BacktestReport::models`] order (persistence where the model fell
    /// back, as the metrics count it).
    pub forecasts: Vec<f64>,
    /// The 80% interval of every model (NaN bounds without calibration).
    pub intervals_80: Vec<(f64, f64)>,
}

/// The result of a backtest.
#[derive(Debug, Clone)]
pub struct BacktestReport {
    /// The forecasters, in report order: the baselines, then the learned models.
    pub models: Vec<String>,
    /// Lots evaluated.
    pub lots: Vec<String>,
    /// Lots left out for too little data.
    pub excluded_lots: Vec<String>,
    /// The test windows (first and last local date), oldest first.
    pub windows: Vec<(NaiveDate, NaiveDate)>,
    /// One entry per model and horizon over all windows, models in [`BacktestReport::models`] order.
    pub metrics: Vec<HorizonMetrics>,
    /// The same per lot.
    pub per_lot: Vec<LotMetrics>,
    /// The learned models' errors per lot and horizon by day type and local hour of the target:
    /// the references the server's live-accuracy monitor holds each lot to.
    pub per_lot_hour: Vec<LotHourlyError>,
    /// The same per day type of the target (weekday, Saturday, Sunday or holiday).
    pub per_day_type: Vec<(DayType, HorizonMetrics)>,
    /// The same per window (index into [`BacktestReport::windows`]).
    pub per_window: Vec<(usize, HorizonMetrics)>,
    /// Forecasts of the last window for the first 30 lots (for plots and notebooks).
    pub samples: Vec<ForecastSample>,
    /// Training rows per horizon (minutes) of the last window's models.
    pub training_rows: BTreeMap<u32, usize>,
    /// MAE of the rate per (model, horizon steps) on the calibration days before each window, from
    /// models fitted before those days: a validation set that precedes every test window, so
    /// choosing a model on it does not peek at the test.
    pub validation_mae: Vec<(String, u32, f64)>,
    /// Residuals (actual - forecast) of the last window per (model index, horizon steps), with the
    /// day type and the lot of their target: out of sample for models fitted before it, so they
    /// calibrate a final model's intervals.
    pub test_residuals: BTreeMap<(usize, u32), Vec<TestResidual>>,
    /// The run's scale and time per phase.
    pub run: RunStats,
}

/// A residual of the last window, as a final model's calibration reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestResidual {
    /// Actual - forecast, as a rate.
    pub residual: f64,
    /// The day type of its target.
    pub day_type: DayType,
    /// Its lot (index into [`BacktestReport::lots`]).
    pub lot: usize,
}

/// Errors of one model at one horizon for one lot.
#[derive(Debug, Clone, PartialEq)]
pub struct LotMetrics {
    /// The lot.
    pub lot_id: String,
    /// Its metrics.
    pub metrics: HorizonMetrics,
}

/// A learned model's errors at one lot and horizon by day type and local hour of the target.
#[derive(Debug, Clone, PartialEq)]
pub struct LotHourlyError {
    /// The lot.
    pub lot_id: String,
    /// The model's report name.
    pub model: String,
    /// The horizon, minutes.
    pub horizon_minutes: u32,
    /// The sums.
    pub error: HourlyError,
}

impl BacktestReport {
    /// The metrics of a model at a horizon.
    pub fn get(&self, model: &str, horizon_steps: u32) -> Option<&HorizonMetrics> {
        self.metrics
            .iter()
            .find(|metrics| metrics.model == model && metrics.horizon_steps == horizon_steps)
    }

    /// The horizons (steps) where `model` does not beat `baseline` (a tie does not beat; a horizon
    /// either lacks counts as lost, with NaN errors): (horizon minutes, model MAE, baseline MAE).
    pub fn losing_horizons(
        &self,
        model: &str,
        baseline: &str,
        horizons_steps: &[u32],
    ) -> Vec<(u32, f64, f64)> {
        horizons_steps
            .iter()
            .filter_map(
                |&steps| match (self.get(model, steps), self.get(baseline, steps)) {
                    (Some(ours), Some(theirs)) => (ours.mae_rate.is_nan()
                        || ours.mae_rate >= theirs.mae_rate)
                        .then_some((ours.horizon_minutes, ours.mae_rate, theirs.mae_rate)),
                    (ours, theirs) => Some((
                        ours.or(theirs).map_or(0, |metrics| metrics.horizon_minutes),
                        f64::NAN,
                        f64::NAN,
                    )),
                },
            )
            .collect()
    }
}

/// The 80% and 95% intervals of a forecast.
type Intervals = ((f64, f64), (f64, f64));

/// A forecast, or persistence where the forecaster had none.
fn or_last(forecast: f64, row: &EvalRow) -> f64 {
    if forecast.is_nan() {
        row.last_rate
    } else {
        forecast
    }
}

#[derive(Default)]
struct Accumulator {
    pairs: u64,
    fallbacks: u64,
    abs_rate: f64,
    sq_rate: f64,
    abs_slots: f64,
    sq_slots: f64,
    calibrated_pairs: u64,
    covered_80: u64,
    covered_95: u64,
    width_80: f64,
}

impl Accumulator {
    /// Adds one pair: the model's forecast (persistence when it has none) against the actual, with the
    /// 80% and 95% intervals when calibrated.
    fn record(&mut self, row: &EvalRow, forecast: f64, intervals: Option<Intervals>) {
        if forecast.is_nan() {
            self.fallbacks += 1;
        }
        let forecast = or_last(forecast, row);
        let error = forecast - row.actual_rate;
        self.pairs += 1;
        self.abs_rate += error.abs();
        self.sq_rate += error * error;
        self.abs_slots += error.abs() * row.capacity;
        self.sq_slots += (error * row.capacity).powi(2);
        if let Some((interval_80, interval_95)) = intervals {
            self.calibrated_pairs += 1;
            let inside = |(low, high): (f64, f64)| (low..=high).contains(&row.actual_rate);
            self.covered_80 += u64::from(inside(interval_80));
            self.covered_95 += u64::from(inside(interval_95));
            self.width_80 += interval_80.1 - interval_80.0;
        }
    }

    /// Adds another's sums.
    fn merge(&mut self, other: &Accumulator) {
        self.pairs += other.pairs;
        self.fallbacks += other.fallbacks;
        self.abs_rate += other.abs_rate;
        self.sq_rate += other.sq_rate;
        self.abs_slots += other.abs_slots;
        self.sq_slots += other.sq_slots;
        self.calibrated_pairs += other.calibrated_pairs;
        self.covered_80 += other.covered_80;
        self.covered_95 += other.covered_95;
        self.width_80 += other.width_80;
    }

    fn metrics(&self, model: &str, horizon: u32, config: &BacktestConfig) -> HorizonMetrics {
        let pairs = self.pairs.max(1) as f64;
        // Coverage counts only pairs that had intervals (a window may lack calibration data).
        let calibrated_pairs = self.calibrated_pairs as f64;
        let share =
            |count: u64| (self.calibrated_pairs > 0).then(|| count as f64 / calibrated_pairs);
        HorizonMetrics {
            model: model.to_owned(),
            horizon_steps: horizon,
            horizon_minutes: horizon * config.step_minutes,
            pairs: self.pairs,
            fallbacks: self.fallbacks,
            mae_rate: self.abs_rate / pairs,
            rmse_rate: (self.sq_rate / pairs).sqrt(),
            mae_slots: self.abs_slots / pairs,
            rmse_slots: (self.sq_slots / pairs).sqrt(),
            coverage_80: share(self.covered_80),
            coverage_95: share(self.covered_95),
            width_80: (self.calibrated_pairs > 0).then(|| self.width_80 / calibrated_pairs),
        }
    }
}

/// Which learned models to train next to the baselines (which always run).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelChoice {
    /// The elastic net, if wanted.
    pub linear: Option<LinearParams>,
    /// The gradient-boosted trees, if wanted.
    pub gbm: Option<GbmParams>,
    /// Rows other cities lend the learned models (the configuration's `[prior]`; `None`: the
    /// city's own rows only). [`backtest`] and [`crate::train::train`] read them into
    /// `prior_rows` from the warehouse before the first fit.
    pub prior: Option<PriorSpec>,
    /// The lent rows once read: every fit appends them to the city's own.
    pub prior_rows: Option<Arc<Prior>>,
}

impl ModelChoice {
    /// These models for lots with or without tariffs: without any, the price feature is missing on
    /// every row, so it is left out (the trees could never split on it, yet it would take a place
    /// in their feature sampling and move every other figure; the elastic net would have no value
    /// to impute it with).
    pub fn for_prices(&self, any_tariffs: bool) -> ModelChoice {
        let mut models = self.clone();
        if !any_tariffs {
            let price = index::TARGET_PRICE_CHANGE_WEEK;
            for excluded in [
                models
                    .linear
                    .as_mut()
                    .map(|params| &mut params.excluded_features),
                models
                    .gbm
                    .as_mut()
                    .map(|params| &mut params.excluded_features),
            ]
            .into_iter()
            .flatten()
            {
                if !excluded.contains(&price) {
                    excluded.push(price);
                    excluded.sort_unstable();
                }
            }
        }
        models
    }

    /// Both learned models with default hyperparameters.
    pub fn all() -> Self {
        ModelChoice {
            linear: Some(LinearParams::default()),
            gbm: Some(GbmParams::default()),
            ..ModelChoice::default()
        }
    }

    /// These models with their prior's rows read for `config`'s protocol (unchanged when there
    /// is no prior, no learned model, or the rows were read already).
    pub fn reading_prior(
        &self,
        warehouse: &Warehouse,
        config: &BacktestConfig,
        progress: &dyn Progress,
    ) -> Result<ModelChoice, BacktestError> {
        let mut models = self.clone();
        if let Some(spec) = &self.prior
            && self.prior_rows.is_none()
            && (self.linear.is_some() || self.gbm.is_some())
        {
            models.prior_rows = Some(Arc::new(Prior::build(warehouse, config, spec, progress)?));
        }
        Ok(models)
    }

    /// Names of every forecaster, in report order.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = BaselineModel::ALL
            .iter()
            .map(|baseline| baseline.name().to_owned())
            .collect();
        if self.linear.is_some() {
            names.push(LINEAR_NAME.to_owned());
        }
        if self.gbm.is_some() {
            names.push(GBM_NAME.to_owned());
        }
        names
    }
}

/// Report name of the elastic net.
pub const LINEAR_NAME: &str = "elastic net";
/// Report name of the gradient-boosted trees.
pub const GBM_NAME: &str = "gradient-boosted trees";

/// One evaluation pair: a target with a value, forecast from an origin with a value.
#[derive(Debug, Clone)]
pub(crate) struct EvalRow {
    pub(crate) lot: usize,
    pub(crate) horizon_steps: u32,
    pub(crate) target_ms: i64,
    pub(crate) actual_rate: f64,
    pub(crate) capacity: f64,
    pub(crate) last_rate: f64,
    /// The target's day type (weekday, Saturday, Sunday or holiday) in the lot's calendar.
    pub(crate) day_type: DayType,
    /// Whether the target's local date is a public holiday of the lot's calendar (its intervals
    /// read the widest calibration: [`parkcast_features::conformal::widest`]).
    pub(crate) holiday: bool,
}

impl EvalRow {
    /// The origin instant the pair is forecast from.
    fn origin_ms(&self, step_minutes: u32) -> i64 {
        self.target_ms - i64::from(self.horizon_steps) * i64::from(step_minutes) * 60_000
    }
}

/// The models fitted at one cut-off.
pub(crate) struct Fitted {
    pub(crate) linear: Option<LinearModel>,
    pub(crate) gbm: Option<GbmModel>,
    pub(crate) training_rows: BTreeMap<u32, usize>,
}

impl Fitted {
    /// Every forecaster in [`ModelChoice::names`] order.
    pub(crate) fn forecasters(&self) -> Vec<&dyn Forecaster> {
        let mut forecasters: Vec<&dyn Forecaster> = BaselineModel::ALL
            .iter()
            .map(|baseline| baseline as &dyn Forecaster)
            .collect();
        if let Some(linear) = &self.linear {
            forecasters.push(linear);
        }
        if let Some(gbm) = &self.gbm {
            forecasters.push(gbm);
        }
        forecasters
    }
}

/// Runs the baselines only.
pub fn backtest_baselines(
    warehouse: &Warehouse,
    config: &BacktestConfig,
) -> Result<BacktestReport, BacktestError> {
    backtest(
        warehouse,
        config,
        &ModelChoice::default(),
        &crate::progress::NoProgress,
    )
}

/// Runs every baseline and the chosen models over the test window(s).
pub fn backtest(
    warehouse: &Warehouse,
    config: &BacktestConfig,
    models: &ModelChoice,
    progress: &dyn Progress,
) -> Result<BacktestReport, BacktestError> {
    let phases = Phases::default();
    let (usable, excluded_lots) =
        phases.time("read lots", || prepare(warehouse, config, progress))?;
    let models = phases.time("read lots", || {
        models.reading_prior(warehouse, config, progress)
    })?;
    backtest_lots(&usable, excluded_lots, config, &models, progress, &phases)
}

/// Validates the config and finds the source's usable lots (and the ids of those left out),
/// reading the warehouse group by group.
pub fn prepare<'w>(
    warehouse: &'w Warehouse,
    config: &BacktestConfig,
    progress: &dyn Progress,
) -> Result<(LotGroups<'w>, Vec<String>), BacktestError> {
    config.validate()?;
    LotGroups::scan(warehouse, config, progress)
}

/// Where a run's time went, per phase, summed over windows (phases in the order they first ran).
#[derive(Debug, Default)]
pub struct Phases(Mutex<Vec<(String, Duration)>>);

impl Phases {
    /// Runs `work` and adds its time to `phase`.
    pub fn time<T>(&self, phase: &str, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = work();
        self.add(phase, started.elapsed());
        result
    }

    /// Adds `elapsed` to `phase`.
    pub fn add(&self, phase: &str, elapsed: Duration) {
        let mut phases = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match phases.iter_mut().find(|(name, _)| name == phase) {
            Some((_, total)) => *total += elapsed,
            None => phases.push((phase.to_owned(), elapsed)),
        }
    }

    /// Seconds per phase.
    pub fn seconds(&self) -> Vec<(String, f64)> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(name, elapsed)| (name.clone(), elapsed.as_secs_f64()))
            .collect()
    }
}

/// The scale of a run and where its time went: what the end-of-run summary prints.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunStats {
    /// Lot groups per pass over the city.
    pub groups: usize,
    /// Lots per group (the last may have fewer).
    pub group_lots: usize,
    /// Model fits made (each cut-off once: [`BacktestConfig::cuts`]).
    pub fits: usize,
    /// Who lent the fits rows ([`Prior::describe`]; `None`: no prior configured).
    pub prior: Option<String>,
    /// Seconds per phase, in the order phases first ran.
    pub phases: Vec<(String, f64)>,
}

/// [`backtest`] on lots from [`prepare`]; `phases` collects where the time goes.
///
/// Memory does not grow with the city: every pass reads the lots group by group, a group's pairs
/// are reduced to per-lot sums as soon as they are scored, and the conformal windows hold at most
/// about [`BacktestConfig::calibration_residuals`] residuals per model and horizon (a hashed,
/// stratified share of the pairs once a city has more; [`residual_strides`]). The test windows are
/// scored twice: once to collect their residuals, from which the intervals every origin would
/// have read are replayed in time order ([`IntervalTimeline`]), and once to score each pair
/// against them. Sums run per lot in row order and then over lots in code order, so the report
/// does not depend on the group size.
pub fn backtest_lots(
    usable: &LotGroups<'_>,
    excluded_lots: Vec<String>,
    config: &BacktestConfig,
    models: &ModelChoice,
    progress: &dyn Progress,
    phases: &Phases,
) -> Result<BacktestReport, BacktestError> {
    let windows = config.windows();
    let names = models.names();
    let learned = models.linear.is_some() || models.gbm.is_some();
    let first_learned = BaselineModel::ALL.len();
    let run = Run { progress, phases };
    let stride = residual_strides(config, usable.lots().len());

    let mut tally = Tally::default();
    let mut samples = Vec::new();
    let mut training_rows = BTreeMap::new();
    let mut test_residuals: BTreeMap<(usize, u32), Vec<TestResidual>> = BTreeMap::new();
    let mut validation = ValidationSums::new();
    let mut fits = Fits::new(config.cuts());
    for (window_index, &(window_start, window_end)) in windows.iter().enumerate() {
        // Calibration: fitted before the calibration days, evaluated on them.
        let calibration_start = window_start - Days::new(u64::from(config.calibration_days));
        let label = format!("window {}/{} calibration", window_index + 1, windows.len());
        let labelled = run.labelled(&label);
        let fitted = fits.get(calibration_start, || {
            fit_before(usable, config, models, calibration_start, &labelled)
        })?;
        let parts = score(
            usable,
            config,
            calibration_start,
            (calibration_start, window_start),
            fitted,
            &labelled,
            |part| {
                let mut lots: Vec<(usize, ValidationSums)> = Vec::new();
                let mut kept = Vec::new();
                for (position, row) in part.rows.iter().enumerate() {
                    if lots.last().is_none_or(|(lot, _)| *lot != row.lot) {
                        lots.push((row.lot, BTreeMap::new()));
                    }
                    let sums = &mut lots.last_mut().expect("pushed above").1;
                    let keep = keeps_residual(stride, row);
                    for (model_index, forecasts) in part.forecasts.iter().enumerate() {
                        let forecast = or_last(forecasts[position], row);
                        let entry = sums
                            .entry((model_index, row.horizon_steps))
                            .or_insert((0.0, 0));
                        entry.0 += (forecast - row.actual_rate).abs();
                        entry.1 += 1;
                        if keep {
                            kept.push(KeptResidual::of(row, model_index, forecast));
                        }
                    }
                }
                (lots, kept)
            },
        )?;
        fits.release(calibration_start);
        let calibrating = Instant::now();
        let mut kept = Vec::new();
        for (lots, part_kept) in parts {
            for (_, sums) in lots {
                for (key, (sum, count)) in sums {
                    let entry = validation.entry(key).or_insert((0.0, 0));
                    entry.0 += sum;
                    entry.1 += count;
                }
            }
            kept.extend(part_kept);
        }
        kept.sort_by_key(|residual| residual.target_ms);
        let mut timeline = IntervalTimeline::new(config, kept);
        phases.add("calibrate and score", calibrating.elapsed());
        if config.validation_only {
            continue;
        }

        // Test: fitted before the window, evaluated on it. Each residual joins the calibration
        // once its target's actual is known (a sliding window of `calibration_days`, as serving
        // does live), and each pair reads the intervals of the calibration as of its origin.
        let label = format!("window {}/{} test", window_index + 1, windows.len());
        let labelled = run.labelled(&label);
        let fitted = fits.get(window_start, || {
            fit_before(usable, config, models, window_start, &labelled)
        })?;
        let days = (window_start, window_end + Days::new(1));
        let last_window = window_index + 1 == windows.len();
        // Each group's scored pairs wait on disk for the second pass (`crate::pairs`).
        let spill = scratch_dir(config, "parkcast-pairs-")?;
        let spilled_parts = std::sync::atomic::AtomicUsize::new(0);
        let parts = score(
            usable,
            config,
            window_start,
            days,
            fitted,
            &labelled,
            |part| {
                let mut kept = Vec::new();
                let mut origins = (i64::MAX, i64::MIN);
                for (position, row) in part.rows.iter().enumerate() {
                    let origin = row.origin_ms(config.step_minutes);
                    origins = (origins.0.min(origin), origins.1.max(origin));
                    if keeps_residual(stride, row) {
                        for (model_index, forecasts) in part.forecasts.iter().enumerate() {
                            kept.push(KeptResidual::of(
                                row,
                                model_index,
                                or_last(forecasts[position], row),
                            ));
                        }
                    }
                }
                // Any unique name: the files come back in group order with the results.
                let path = spill.path().join(format!(
                    "part-{}.bin",
                    spilled_parts.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ));
                crate::pairs::write(&path, &part)
                    .map_err(|source| BacktestError::Scratch {
                        path: path.clone(),
                        source,
                    })
                    .map(|()| (kept, origins, path))
            },
        )?;
        let calibrating = Instant::now();
        let mut kept = Vec::new();
        let mut origins = (i64::MAX, i64::MIN);
        let mut spilled = Vec::new();
        for part in parts {
            let (part_kept, part_origins, path) = part?;
            kept.extend(part_kept);
            origins = (origins.0.min(part_origins.0), origins.1.max(part_origins.1));
            spilled.push(path);
        }
        kept.sort_by_key(|residual| residual.target_ms);
        if last_window {
            for residual in &kept {
                test_residuals
                    .entry((residual.model, residual.horizon_steps))
                    .or_default()
                    .push(TestResidual {
                        residual: residual.residual,
                        day_type: residual.day_type,
                        lot: residual.lot,
                    });
            }
        }
        timeline.replay(kept, origins, names.len());
        phases.add("calibrate and score", calibrating.elapsed());

        let parts = replay_scored(&spilled, &labelled, |part| {
            let mut lots: Vec<LotTally> = Vec::new();
            let mut part_samples = Vec::new();
            for (position, row) in part.rows.iter().enumerate() {
                if lots.last().is_none_or(|lot| lot.lot != row.lot) {
                    lots.push(LotTally::new(row.lot));
                }
                let lot = lots.last_mut().expect("pushed above");
                let origin = row.origin_ms(config.step_minutes);
                let local = local_time(usable.lots()[row.lot].timezone, row.target_ms);
                let mut sample_forecasts = Vec::new();
                let mut sample_intervals = Vec::new();
                for (model_index, forecasts) in part.forecasts.iter().enumerate() {
                    let forecast = forecasts[position];
                    let intervals =
                        timeline.intervals(model_index, row, origin, or_last(forecast, row));
                    lot.record(model_index, row, forecast, intervals);
                    if model_index >= first_learned {
                        lot.record_hour(model_index, row, forecast, local);
                    }
                    sample_forecasts.push(or_last(forecast, row));
                    sample_intervals
                        .push(intervals.map_or((f64::NAN, f64::NAN), |(eighty, _)| eighty));
                }
                if last_window && row.lot < SAMPLE_LOTS {
                    part_samples.push(ForecastSample {
                        lot_id: usable.lots()[row.lot].lot_id.clone(),
                        horizon_steps: row.horizon_steps,
                        target_ms: row.target_ms,
                        actual_rate: row.actual_rate,
                        forecasts: sample_forecasts,
                        intervals_80: sample_intervals,
                    });
                }
            }
            (lots, part_samples)
        })?;
        drop(spill);
        for (lots, part_samples) in parts {
            for lot in lots {
                tally.add(window_index, lot);
            }
            samples.extend(part_samples);
        }
        if last_window && learned {
            training_rows.clone_from(&fitted.training_rows);
        }
        fits.release(window_start);
    }

    let Tally {
        totals,
        by_lot,
        by_day_type,
        by_window,
        by_lot_hour,
    } = tally;
    let metrics = totals
        .iter()
        .map(|(&(model_index, horizon), accumulator)| {
            accumulator.metrics(&names[model_index], horizon, config)
        })
        .collect();
    let per_lot = by_lot
        .iter()
        .map(|(&(lot, model_index, horizon), accumulator)| LotMetrics {
            lot_id: usable.lots()[lot].lot_id.clone(),
            metrics: accumulator.metrics(&names[model_index], horizon, config),
        })
        .collect();
    let per_lot_hour = by_lot_hour
        .into_iter()
        .map(|((lot, model_index, horizon), error)| LotHourlyError {
            lot_id: usable.lots()[lot].lot_id.clone(),
            model: names[model_index].clone(),
            horizon_minutes: horizon * config.step_minutes,
            error,
        })
        .collect();
    let per_day_type = by_day_type
        .iter()
        .map(|(&(day_type, model_index, horizon), accumulator)| {
            (
                day_type,
                accumulator.metrics(&names[model_index], horizon, config),
            )
        })
        .collect();
    let per_window = by_window
        .iter()
        .map(|(&(window, model_index, horizon), accumulator)| {
            (
                window,
                accumulator.metrics(&names[model_index], horizon, config),
            )
        })
        .collect();
    samples.sort_by(|a, b| {
        (&a.lot_id, a.horizon_steps, a.target_ms).cmp(&(&b.lot_id, b.horizon_steps, b.target_ms))
    });
    Ok(BacktestReport {
        models: names.clone(),
        lots: usable.lots().iter().map(|lot| lot.lot_id.clone()).collect(),
        excluded_lots,
        windows,
        metrics,
        per_lot,
        per_lot_hour,
        per_day_type,
        per_window,
        samples,
        training_rows,
        test_residuals,
        validation_mae: validation
            .into_iter()
            .map(|((model_index, horizon), (sum, count))| {
                (
                    names[model_index].clone(),
                    horizon,
                    sum / count.max(1) as f64,
                )
            })
            .collect(),
        run: RunStats {
            groups: usable.group_count(),
            group_lots: config.group_lots,
            fits: fits.made,
            prior: models.prior_rows.as_ref().map(|prior| prior.describe()),
            phases: phases.seconds(),
        },
    })
}

/// Sums of absolute errors and pair counts per (model, horizon).
type ValidationSums = BTreeMap<(usize, u32), (f64, u64)>;

/// A run's fits by cut-off, each made once and kept until its last use in
/// [`BacktestConfig::cuts`]: with weekly windows and two weeks of calibration days, a window's
/// calibration fit is the test fit of the window two weeks before it, so four rolling weeks take 6
/// fits instead of 8. Fits are deterministic, so a reused one is the one a second fit would make.
struct Fits {
    uses: BTreeMap<NaiveDate, usize>,
    fitted: BTreeMap<NaiveDate, Fitted>,
    made: usize,
}

impl Fits {
    fn new(cuts: Vec<NaiveDate>) -> Self {
        let mut uses = BTreeMap::new();
        for cut in cuts {
            *uses.entry(cut).or_insert(0) += 1;
        }
        Fits {
            uses,
            fitted: BTreeMap::new(),
            made: 0,
        }
    }

    /// The fit at `cut`, made by `fit` unless an earlier use made it.
    fn get(
        &mut self,
        cut: NaiveDate,
        fit: impl FnOnce() -> Result<Fitted, BacktestError>,
    ) -> Result<&Fitted, BacktestError> {
        match self.fitted.entry(cut) {
            std::collections::btree_map::Entry::Occupied(entry) => Ok(entry.into_mut()),
            std::collections::btree_map::Entry::Vacant(entry) => {
                let fitted = fit()?;
                self.made += 1;
                Ok(entry.insert(fitted))
            }
        }
    }

    /// One use of the fit at `cut` is over; the last one drops it.
    fn release(&mut self, cut: NaiveDate) {
        let left = self.uses.get_mut(&cut).map_or(0, |uses| {
            *uses = uses.saturating_sub(1);
            *uses
        });
        if left == 0 {
            self.fitted.remove(&cut);
        }
    }
}

/// One in how many pairs' residuals calibrate the intervals, per day type ([`DayType::index`]): 1
/// until a day type's pairs in a calibration window exceed a third of
/// [`BacktestConfig::calibration_residuals`] per model and horizon.
///
/// A conformal quantile needs a large sample, not every pair of a large city: 100,000 residuals
/// place the 95% quantile within a tenth of a percentage point of coverage, and a window of every
/// pair of 1,000 lots held 4 million per model and horizon. Each day type gets the same share, so
/// Saturdays and Sundays (a seventh of the days each) keep the residuals of their own that their
/// intervals need (below [`parkcast_features::conformal::MIN_CONDITIONAL_RESIDUALS`] they would
/// read the weekdays').
pub fn residual_strides(config: &BacktestConfig, lots: usize) -> [u64; 3] {
    let per_day = f64::from(1_440 / config.step_minutes.max(1));
    let pairs = lots as f64 * f64::from(config.calibration_days) * per_day;
    let share = config.calibration_residuals.max(1) as f64 / 3.0;
    // Weekdays, Saturdays, Sundays (holidays are a few more of the last).
    [5.0 / 7.0, 1.0 / 7.0, 1.0 / 7.0].map(|days| ((pairs * days / share).ceil() as u64).max(1))
}

/// Whether a pair's residuals join the calibration: all of them at stride 1, else a hashed one in
/// `stride` of its day type's (the same pairs whatever the group size).
fn keeps_residual(strides: [u64; 3], row: &EvalRow) -> bool {
    let stride = strides[row.day_type.index()];
    if stride <= 1 {
        return true;
    }
    // splitmix64 of the lot, the horizon and the target.
    let mut key = (row.lot as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(row.horizon_steps).wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(row.target_ms as u64);
    key = (key ^ (key >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    key = (key ^ (key >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    key ^= key >> 31;
    key % stride == 0
}

/// A residual that calibrates intervals.
struct KeptResidual {
    target_ms: i64,
    residual: f64,
    lot: usize,
    model: usize,
    horizon_steps: u32,
    day_type: DayType,
    holiday: bool,
}

impl KeptResidual {
    fn of(row: &EvalRow, model: usize, forecast: f64) -> Self {
        KeptResidual {
            target_ms: row.target_ms,
            residual: row.actual_rate - forecast,
            lot: row.lot,
            model,
            horizon_steps: row.horizon_steps,
            day_type: row.day_type,
            holiday: row.holiday,
        }
    }
}

/// The conformal calibrations of a window and the intervals they gave at every origin instant.
///
/// Starts from the calibration days' residuals; [`IntervalTimeline::replay`] then walks the test
/// window's origin instants in time order, taking in each residual once its target is reached and
/// forgetting those older than `calibration_days`, and keeps the half-widths each (model, horizon,
/// day type, holiday) read at each instant: what a pair forecast from that origin was given.
///
/// Residuals are calibrated in units of their lot's scale ([`lot_scales`], from the calibration
/// days' residuals and fixed for the window): the half-widths a timeline holds are multiplied by
/// the pair's lot scale when an interval is read.
///
/// The half-widths are scaled by adaptive conformal inference ([`AdaptiveTracker`]): as each kept
/// residual's target is reached, whether it fell outside the 80% and the 95% interval its origin
/// was given is counted for its class, and each instant's outcomes move the scales the next
/// instants read, as the server's monitor does live.
struct IntervalTimeline {
    calibration_ms: i64,
    scope: CalibrationScope,
    step_ms: i64,
    rolling: BTreeMap<(usize, u32), DayTypeCalibration>,
    /// Per (model, horizon, lot): the lot's scale of residuals (absent: 1).
    lot_scales: HashMap<(usize, u32, usize), f64>,
    /// Per (model, horizon): the adaptive scales, as of the instant being replayed.
    adaptive: BTreeMap<(usize, u32), AdaptiveTracker>,
    /// First origin instant of `widths`.
    first_ms: i64,
    /// Per origin instant, per (model, horizon index), per class (day types, then a holiday):
    /// the 80% and 95% half-widths (NaN without calibration).
    widths: Vec<[[f64; 2]; TIMELINE_CLASSES]>,
    /// Horizons in the order of `widths`.
    horizons: Vec<u32>,
    models: usize,
}

/// Day types and the holiday class of a timeline.
const TIMELINE_CLASSES: usize = 4;

impl IntervalTimeline {
    /// The calibrations of the window's calibration days (`kept` in target order).
    fn new(config: &BacktestConfig, kept: Vec<KeptResidual>) -> Self {
        let calibration_ms = i64::from(config.calibration_days) * 86_400_000;
        let mut timeline = IntervalTimeline {
            calibration_ms,
            scope: config.calibration,
            step_ms: i64::from(config.step_minutes) * 60_000,
            rolling: BTreeMap::new(),
            lot_scales: HashMap::new(),
            adaptive: BTreeMap::new(),
            first_ms: 0,
            widths: Vec::new(),
            horizons: config.horizons.clone(),
            models: 0,
        };
        if config.lot_scale {
            let mut by_fit: BTreeMap<(usize, u32), Vec<(usize, f64)>> = BTreeMap::new();
            for residual in &kept {
                by_fit
                    .entry((residual.model, residual.horizon_steps))
                    .or_default()
                    .push((residual.lot, residual.residual));
            }
            for ((model, horizon), residuals) in by_fit {
                for (lot, scale) in lot_scales(residuals) {
                    timeline.lot_scales.insert((model, horizon, lot), scale);
                }
            }
        }
        for mut residual in kept {
            residual.residual /= timeline.lot_scale(&residual);
            timeline.push(&residual);
        }
        timeline
    }

    /// The scale of a residual's lot for its model and horizon.
    fn lot_scale(&self, residual: &KeptResidual) -> f64 {
        self.lot_scale_of(residual.model, residual.horizon_steps, residual.lot)
    }

    fn lot_scale_of(&self, model: usize, horizon_steps: u32, lot: usize) -> f64 {
        self.lot_scales
            .get(&(model, horizon_steps, lot))
            .copied()
            .unwrap_or(1.0)
    }

    fn push(&mut self, residual: &KeptResidual) {
        let (window_ms, scope) = (self.calibration_ms, self.scope);
        self.rolling
            .entry((residual.model, residual.horizon_steps))
            .or_insert_with(|| DayTypeCalibration::new(window_ms, scope))
            .push(residual.target_ms, residual.residual, residual.day_type);
    }

    /// Walks the origin instants `[first, last]`, taking in the test residuals (`kept`, in target
    /// order) as their targets are reached, and records the intervals of each instant.
    fn replay(&mut self, kept: Vec<KeptResidual>, (first, last): (i64, i64), models: usize) {
        self.models = models;
        self.widths.clear();
        if first > last {
            return;
        }
        self.first_ms = first;
        self.adaptive.clear();
        let step_minutes = u32::try_from(self.step_ms / 60_000).unwrap_or(u32::MAX);
        let mut pending = kept.into_iter().peekable();
        let mut instant = first;
        while instant <= last {
            while let Some(mut residual) = pending.next_if(|residual| residual.target_ms <= instant)
            {
                residual.residual /= self.lot_scale(&residual);
                if let Some(missed) = self.missed(&residual) {
                    let class = adaptive_class(residual.day_type, residual.holiday, self.scope);
                    self.adaptive
                        .entry((residual.model, residual.horizon_steps))
                        .or_insert_with(|| AdaptiveTracker::new(step_minutes))
                        .record(residual.target_ms, class, missed);
                }
                self.push(&residual);
            }
            let mut row = Vec::with_capacity(models * self.horizons.len());
            for model in 0..models {
                for &horizon in &self.horizons {
                    let mut classes = [[f64::NAN; 2]; TIMELINE_CLASSES];
                    let scales = self
                        .adaptive
                        .get(&(model, horizon))
                        .map(|tracker| *tracker.scales())
                        .unwrap_or_default();
                    if let Some(calibration) = self.rolling.get_mut(&(model, horizon)) {
                        calibration.advance_to(instant);
                        for (class, widths) in classes.iter_mut().enumerate() {
                            let (day_type, holiday) = match DayType::ALL.get(class) {
                                Some(day_type) => (*day_type, false),
                                None => (DayType::Weekday, true),
                            };
                            let scale = scales.scale(adaptive_class(day_type, holiday, self.scope));
                            *widths = scale.half_widths(ADAPTIVE_COVERAGES.map(|coverage| {
                                calibration
                                    .half_width(coverage, day_type, holiday)
                                    .unwrap_or(f64::NAN)
                            }));
                        }
                    }
                    row.push(classes);
                }
            }
            self.widths.extend(row);
            instant += self.step_ms;
        }
    }

    /// The 80% and 95% half-widths `model` gave a target of `horizon_steps` on `day_type` (a
    /// public `holiday` or not) from `origin_ms` (`None` before the replay's first instant or
    /// after its last; NaN without calibration).
    fn widths_at(
        &self,
        model: usize,
        horizon_steps: u32,
        origin_ms: i64,
        (day_type, holiday): (DayType, bool),
    ) -> Option<[f64; 2]> {
        if origin_ms < self.first_ms {
            return None;
        }
        let horizon = self.horizons.iter().position(|h| *h == horizon_steps)?;
        let instant = usize::try_from((origin_ms - self.first_ms) / self.step_ms).ok()?;
        let per_instant = self.models * self.horizons.len();
        let classes = self
            .widths
            .get(instant * per_instant + model * self.horizons.len() + horizon)?;
        Some(classes[self.class_of(day_type, holiday)])
    }

    /// Whether a replayed residual fell outside the 80% and the 95% half-width its origin instant
    /// was given (`None` when its origin is before the replay or had no interval).
    fn missed(&self, residual: &KeptResidual) -> Option<Misses> {
        let origin_ms = residual.target_ms - i64::from(residual.horizon_steps) * self.step_ms;
        let widths = self.widths_at(
            residual.model,
            residual.horizon_steps,
            origin_ms,
            (residual.day_type, residual.holiday),
        )?;
        (!widths.iter().any(|width| width.is_nan()))
            .then(|| widths.map(|width| residual.residual.abs() > width))
    }

    /// The timeline class a target reads: its day type, or the holiday class (day-type scope).
    fn class_of(&self, day_type: DayType, holiday: bool) -> usize {
        if holiday && self.scope == CalibrationScope::DayType {
            TIMELINE_CLASSES - 1
        } else {
            day_type.index()
        }
    }

    /// The 80% and 95% intervals around `point` of a pair forecast by `model` from `origin_ms`.
    fn intervals(
        &self,
        model: usize,
        row: &EvalRow,
        origin_ms: i64,
        point: f64,
    ) -> Option<Intervals> {
        let [eighty, ninety_five] = self.widths_at(
            model,
            row.horizon_steps,
            origin_ms,
            (row.day_type, row.holiday),
        )?;
        if eighty.is_nan() || ninety_five.is_nan() {
            return None;
        }
        let scale = self.lot_scale_of(model, row.horizon_steps, row.lot);
        let (eighty, ninety_five) = (eighty * scale, ninety_five * scale);
        Some((
            interval_around(point, eighty),
            interval_around(point, ninety_five),
        ))
    }
}

/// One lot's sums over a test window: per (model, horizon) and per (day type, model, horizon).
struct LotTally {
    lot: usize,
    totals: BTreeMap<(usize, u32), Accumulator>,
    by_day_type: BTreeMap<(DayType, usize, u32), Accumulator>,
    /// The learned models' errors by day type and local hour of the target, per (model, horizon).
    by_hour: BTreeMap<(usize, u32), HourlyError>,
    /// The same per local date of the target: sum of errors and pairs.
    by_day: BTreeMap<(usize, u32, NaiveDate), (f64, u32)>,
}

impl LotTally {
    fn new(lot: usize) -> Self {
        LotTally {
            lot,
            totals: BTreeMap::new(),
            by_day_type: BTreeMap::new(),
            by_hour: BTreeMap::new(),
            by_day: BTreeMap::new(),
        }
    }

    /// Adds a learned model's error by the target's local date and hour (the lot's backtest
    /// reference for live accuracy: [`parkcast_inference::reference`]).
    fn record_hour(&mut self, model: usize, row: &EvalRow, forecast: f64, local: NaiveDateTime) {
        let error = (or_last(forecast, row) - row.actual_rate).abs();
        self.by_hour
            .entry((model, row.horizon_steps))
            .or_default()
            .record(row.day_type, local.hour(), error);
        let day = self
            .by_day
            .entry((model, row.horizon_steps, local.date()))
            .or_default();
        day.0 += error;
        day.1 += 1;
    }

    /// Folds the daily sums into the hourly tallies' spread (a lot's days lie in one part). A day
    /// with fewer than half the pairs of the lot's fullest day (a sensor outage, the window's
    /// partial first or last day) is left out: its MAE rests on a few hours and would pass for a
    /// bad day.
    fn close_days(&mut self) {
        let days = std::mem::take(&mut self.by_day);
        let mut fullest: BTreeMap<(usize, u32), u32> = BTreeMap::new();
        for ((model, horizon, _), (_, pairs)) in &days {
            let most = fullest.entry((*model, *horizon)).or_default();
            *most = (*most).max(*pairs);
        }
        for ((model, horizon, _), (sum, pairs)) in days {
            if pairs * 2 < fullest[&(model, horizon)] {
                continue;
            }
            self.by_hour
                .entry((model, horizon))
                .or_default()
                .record_day(sum / f64::from(pairs.max(1)), pairs);
        }
    }

    fn record(&mut self, model: usize, row: &EvalRow, forecast: f64, intervals: Option<Intervals>) {
        self.totals
            .entry((model, row.horizon_steps))
            .or_default()
            .record(row, forecast, intervals);
        self.by_day_type
            .entry((row.day_type, model, row.horizon_steps))
            .or_default()
            .record(row, forecast, intervals);
    }
}

/// A backtest's sums, added lot by lot in code order.
#[derive(Default)]
struct Tally {
    totals: BTreeMap<(usize, u32), Accumulator>,
    by_lot: BTreeMap<(usize, usize, u32), Accumulator>,
    by_day_type: BTreeMap<(DayType, usize, u32), Accumulator>,
    by_window: BTreeMap<(usize, usize, u32), Accumulator>,
    by_lot_hour: BTreeMap<(usize, usize, u32), HourlyError>,
}

impl Tally {
    fn add(&mut self, window: usize, mut lot: LotTally) {
        lot.close_days();
        for (&(model, horizon), accumulator) in &lot.totals {
            self.totals
                .entry((model, horizon))
                .or_default()
                .merge(accumulator);
            self.by_lot
                .entry((lot.lot, model, horizon))
                .or_default()
                .merge(accumulator);
            self.by_window
                .entry((window, model, horizon))
                .or_default()
                .merge(accumulator);
        }
        for (key, accumulator) in &lot.by_day_type {
            self.by_day_type.entry(*key).or_default().merge(accumulator);
        }
        for (&(model, horizon), error) in &lot.by_hour {
            self.by_lot_hour
                .entry((lot.lot, model, horizon))
                .or_default()
                .merge(error);
        }
    }
}

/// Lots whose last-window forecasts are kept for plots and the report's CSV.
const SAMPLE_LOTS: usize = 30;

/// One lot group's evaluation pairs with every forecaster's forecasts of them
/// ([`ModelChoice::names`] order), rows in lot order. The feature vectors are scored as soon as
/// they are built and dropped.
pub(crate) struct ScoredPart {
    pub(crate) rows: Vec<EvalRow>,
    /// Per forecaster, one forecast per row.
    pub(crate) forecasts: Vec<Vec<f64>>,
}

/// What a pass over the city reports to: the progress bar and the phase clock, with the label of
/// the fit it belongs to.
pub(crate) struct Run<'a> {
    pub(crate) progress: &'a dyn Progress,
    pub(crate) phases: &'a Phases,
}

/// A [`Run`] with the label of one fit (`window 1/4 test`).
pub(crate) struct LabelledRun<'a> {
    run: &'a Run<'a>,
    label: String,
}

impl<'a> Run<'a> {
    pub(crate) fn labelled(&'a self, label: &str) -> LabelledRun<'a> {
        LabelledRun {
            run: self,
            label: label.to_owned(),
        }
    }
}

impl LabelledRun<'_> {
    /// Starts a stage of this fit and times `work` as `phase`.
    fn stage<T>(&self, phase: &str, what: &str, total: usize, work: impl FnOnce() -> T) -> T {
        self.run
            .progress
            .stage(&format!("{}: {what}", self.label), Some(total as u64));
        self.run.phases.time(phase, work)
    }
}

/// Fits the chosen models on the rows before `cut` (none when only baselines run).
///
/// Two passes, each reporting progress: the training rows are written group by group to a matrix
/// on disk ([`crate::matrix`]), or read from one built by shards ([`crate::shards`]); the models
/// are fitted horizon by horizon, reading one horizon of it at a time (the elastic net next to the
/// trees, which use the other cores).
pub(crate) fn fit_before(
    lots: &LotGroups<'_>,
    config: &BacktestConfig,
    models: &ModelChoice,
    cut: NaiveDate,
    run: &LabelledRun<'_>,
) -> Result<Fitted, BacktestError> {
    if models.linear.is_none() && models.gbm.is_none() {
        return Ok(Fitted {
            linear: None,
            gbm: None,
            training_rows: BTreeMap::new(),
        });
    }
    let scratch;
    let (matrix, training_rows) = match &config.matrix {
        Some(root) => crate::shards::Prebuilt::open(root, lots, config)?.matrix(cut)?,
        None => {
            scratch = scratch_dir(config, "parkcast-matrix-")?;
            let matrix = MatrixDir::new(scratch.path());
            let rows = write_training_matrix(lots, config, cut, &matrix, run)?;
            (matrix, rows)
        }
    };
    let models = models.for_prices(lots.any_tariffs());
    let (linear, gbm) = fit_models(&models, &matrix, &training_rows, run)?;
    Ok(Fitted {
        linear,
        gbm,
        training_rows,
    })
}

/// Scores the evaluation pairs whose targets fall in the local days `[first_day, end_day)`
/// (features from profiles fitted before `cut`) with every forecaster of `fitted`, group by group,
/// and hands each group's pairs to `reduce`; returns its results in group order.
fn score<T: Send>(
    lots: &LotGroups<'_>,
    config: &BacktestConfig,
    cut: NaiveDate,
    days: (NaiveDate, NaiveDate),
    fitted: &Fitted,
    run: &LabelledRun<'_>,
    reduce: impl Fn(ScoredPart) -> T + Sync,
) -> Result<Vec<T>, BacktestError> {
    if days.0 >= days.1 {
        return Ok(Vec::new());
    }
    let forecasters = fitted.forecasters();
    run.stage(
        "score pairs",
        &format!("scoring pairs ({} groups)", lots.group_count()),
        lots.group_count(),
        || {
            lots.map(run.run.progress, |group| {
                let mut part = ScoredPart {
                    rows: Vec::new(),
                    forecasts: vec![Vec::new(); forecasters.len()],
                };
                for (code, lot) in group.coded() {
                    let (rows, features) = lot_evaluation_pairs(code, lot, config, cut, days)?;
                    for (forecasts, forecaster) in part.forecasts.iter_mut().zip(&forecasters) {
                        forecasts.extend(forecaster.predict(&features));
                    }
                    part.rows.extend(rows);
                }
                Ok(reduce(part))
            })
        },
    )
}

/// Hands the pairs [`score`] wrote to `spilled` (one file per group, in group order) to `reduce`,
/// groups in parallel, and returns its results in group order.
fn replay_scored<T: Send>(
    spilled: &[PathBuf],
    run: &LabelledRun<'_>,
    reduce: impl Fn(ScoredPart) -> T + Sync,
) -> Result<Vec<T>, BacktestError> {
    run.stage(
        "score pairs",
        &format!("scoring against intervals ({} groups)", spilled.len()),
        spilled.len(),
        || {
            spilled
                .par_iter()
                .map(|path| {
                    let part =
                        crate::pairs::read(path).map_err(|source| BacktestError::Scratch {
                            path: path.clone(),
                            source,
                        })?;
                    let result = reduce(part);
                    run.run.progress.advance(1);
                    Ok(result)
                })
                .collect()
        },
    )
}

/// A scratch folder (a training matrix, a split of the warehouse) in the config's scratch folder
/// or the system's, removed when dropped.
pub(crate) fn scratch_dir(
    config: &BacktestConfig,
    prefix: &str,
) -> Result<tempfile::TempDir, BacktestError> {
    let parent = config.scratch.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&parent)
        .and_then(|()| tempfile::Builder::new().prefix(prefix).tempdir_in(&parent))
        .map_err(|source| BacktestError::Scratch {
            path: parent,
            source,
        })
}

/// Fits the chosen models from the matrix, as many horizons at once as rayon has threads: each
/// horizon's rows are read once for both models, and only the horizons being fitted are in memory.
fn fit_models(
    models: &ModelChoice,
    matrix: &MatrixDir,
    training_rows: &BTreeMap<u32, usize>,
    run: &LabelledRun<'_>,
) -> Result<(Option<LinearModel>, Option<GbmModel>), BacktestError> {
    if let Some(params) = &models.linear {
        params.check()?;
    }
    if let Some(params) = &models.gbm {
        params.check()?;
    }
    let (mut linear, mut gbm) = (BTreeMap::new(), BTreeMap::new());
    let total_rows: usize = training_rows.values().sum();
    run.stage(
        "fit models",
        &format!(
            "fitting {} horizons ({} rows)",
            training_rows.len(),
            parkcast_tables::thousands(total_rows as u64)
        ),
        training_rows.len(),
        || {
            // As many horizons at once as there are threads: a fit's own parallel loops are short
            // and leave cores idle (see `ForecasterParams::fit`), while reading one horizon's rows
            // at a time per thread keeps memory at that many horizons' rows.
            let horizons: Vec<u32> = training_rows.keys().copied().collect();
            for batch in horizons.chunks(rayon::current_num_threads().max(1)) {
                let fitted = batch
                    .par_iter()
                    .map(|&minutes| {
                        let mut rows: HorizonRows = matrix.read(minutes)?;
                        if let Some(prior) = &models.prior_rows {
                            prior.extend(minutes, &mut rows);
                        }
                        let (fitted_linear, fitted_gbm) = rayon::join(
                            || {
                                models
                                    .linear
                                    .as_ref()
                                    .map(|params| params.fit_horizon(minutes, &rows))
                                    .transpose()
                            },
                            || {
                                models
                                    .gbm
                                    .as_ref()
                                    .map(|params| params.fit_horizon(minutes, &rows))
                                    .transpose()
                            },
                        );
                        run.run.progress.advance(1);
                        Ok::<_, BacktestError>((minutes, fitted_linear?, fitted_gbm?))
                    })
                    .collect::<Result<Vec<_>, BacktestError>>()?;
                for (minutes, fitted_linear, fitted_gbm) in fitted {
                    if let Some(horizon) = fitted_linear {
                        linear.insert(minutes, horizon);
                    }
                    if let Some(horizon) = fitted_gbm {
                        gbm.insert(minutes, horizon);
                    }
                }
            }
            Ok::<_, BacktestError>(())
        },
    )?;
    Ok((
        models.linear.as_ref().map(|params| params.assemble(linear)),
        models.gbm.as_ref().map(|params| params.assemble(gbm)),
    ))
}

/// Runs `each` on a lot's feature history as of `cut_ms`: its profile fitted on the data before
/// it, its context with the lot's code in the model.
fn with_history<T>(
    code: usize,
    lot: &LotInputs,
    cut_ms: i64,
    each: impl FnOnce(LotHistory<'_>) -> T,
) -> T {
    let profile = LotProfile::fit(&lot.series, cut_ms);
    let context = LotContext {
        lot_code: u32::try_from(code).ok(),
        ..lot.context.clone()
    };
    each(lot.history(&profile, &context))
}

fn polars_error(context: &'static str) -> impl Fn(PolarsError) -> BacktestError {
    move |source| BacktestError::Polars { context, source }
}

/// The first day training rows may come from (`None`: all history).
fn training_from(config: &BacktestConfig, cut: NaiveDate) -> Option<NaiveDate> {
    config
        .training_days
        .map(|days| cut - Days::new(u64::from(days)))
}

/// The origin stride that keeps every lot's training rows before `cut` under the row cap (one
/// origin in `stride` of each lot's week cells is kept: `batch::origin_sample`), counted from the
/// lots' readings per day without reading them.
pub(crate) fn training_stride(lots: &[LotSummary], config: &BacktestConfig, cut: NaiveDate) -> u32 {
    let from = training_from(config, cut);
    let candidate_origins: usize = lots.iter().map(|lot| lot.readings_between(from, cut)).sum();
    let stride = candidate_origins.div_ceil(config.max_training_rows).max(1);
    u32::try_from(stride).unwrap_or(u32::MAX)
}

/// A lot's training rows before `cut`, per horizon in minutes (features from a profile fitted
/// before it, origins every `stride` steps).
fn lot_training_rows(
    code: usize,
    lot: &LotInputs,
    config: &BacktestConfig,
    cut: NaiveDate,
    stride: u32,
    rows: &mut BTreeMap<u32, PartRows>,
) -> Result<(), BacktestError> {
    let params = config.feature_params();
    let step = params.step_ms();
    let tz = lot.series.timezone();
    let cut_ms = day_start_ms(tz, cut);
    let request = BatchRequest {
        horizons: config.horizons.clone(),
        origins_from_ms: training_from(config, cut).map_or(i64::MIN, |day| day_start_ms(tz, day)),
        origins_until_ms: cut_ms,
        origin_stride: stride,
    };
    let frame = with_history(code, lot, cut_ms, |history| {
        batch::lot_features(&params, history, &request)
    })
    .map_err(polars_error("computing training features"))?;
    for row in batch::rows(&frame).map_err(polars_error("reading training features"))? {
        let target_ms = row.origin_ms + i64::from(row.horizon_steps) * step;
        let Some(target_rate) = row.target_rate else {
            continue;
        };
        if target_ms >= cut_ms || !pair_allowed(&lot.series, config, row.origin_ms, target_ms) {
            continue;
        }
        rows.entry(row.horizon_steps * config.step_minutes)
            .or_default()
            .push(row.origin_ms, row.features, target_rate);
    }
    Ok(())
}

pub(crate) const NO_TRAINING_ROWS: BacktestError = BacktestError::InvalidConfig {
    reason: "no training rows before the first window: move the test window later",
};

/// Every lot's training rows before `cut`, written to `matrix` group by group; returns the rows
/// per horizon (minutes).
fn write_training_matrix(
    lots: &LotGroups<'_>,
    config: &BacktestConfig,
    cut: NaiveDate,
    matrix: &MatrixDir,
    run: &LabelledRun<'_>,
) -> Result<BTreeMap<u32, usize>, BacktestError> {
    let stride = training_stride(lots.lots(), config, cut);
    let counts = run.stage(
        "build training rows",
        &format!("training rows ({} groups)", lots.group_count()),
        lots.group_count(),
        || {
            lots.map(run.run.progress, |group| {
                write_group_rows(&group, config, cut, stride, matrix)
            })
        },
    )?;
    let rows = sum_rows(counts);
    if rows.is_empty() {
        return Err(NO_TRAINING_ROWS);
    }
    Ok(rows)
}

/// One group's training rows before `cut`, per horizon (minutes), lots in code order.
fn group_training_rows(
    group: &Group<'_>,
    config: &BacktestConfig,
    cut: NaiveDate,
    stride: u32,
) -> Result<BTreeMap<u32, PartRows>, BacktestError> {
    let mut parts = BTreeMap::new();
    for (code, lot) in group.coded() {
        lot_training_rows(code, lot, config, cut, stride, &mut parts)?;
    }
    Ok(parts)
}

/// One group's training rows before `cut`, written to `matrix`; returns its rows per horizon.
pub(crate) fn write_group_rows(
    group: &Group<'_>,
    config: &BacktestConfig,
    cut: NaiveDate,
    stride: u32,
    matrix: &MatrixDir,
) -> Result<BTreeMap<u32, usize>, BacktestError> {
    let mut counts = BTreeMap::new();
    for (minutes, part) in group_training_rows(group, config, cut, stride)? {
        matrix.write_part(minutes, group.index, &part)?;
        counts.insert(minutes, part.len());
    }
    Ok(counts)
}

/// The groups' rows per horizon, added up.
pub(crate) fn sum_rows(groups: Vec<BTreeMap<u32, usize>>) -> BTreeMap<u32, usize> {
    let mut rows: BTreeMap<u32, usize> = BTreeMap::new();
    for group in groups {
        for (minutes, count) in group {
            *rows.entry(minutes).or_default() += count;
        }
    }
    rows
}

/// Every lot's training rows before `cut`, in memory (a search fits many times on the same rows).
pub(crate) fn training_set(
    lots: &LotGroups<'_>,
    config: &BacktestConfig,
    cut: NaiveDate,
    progress: &dyn Progress,
) -> Result<TrainingSet, BacktestError> {
    let stride = training_stride(lots.lots(), config, cut);
    let groups = lots.map(progress, |group| {
        group_training_rows(&group, config, cut, stride)
    })?;
    let mut training: TrainingSet = BTreeMap::new();
    for group in groups {
        for (minutes, part) in group {
            let rows = training.entry(minutes).or_default();
            rows.features.extend(part.rows.features);
            rows.targets.extend(part.rows.targets);
        }
    }
    if training.is_empty() {
        return Err(NO_TRAINING_ROWS);
    }
    Ok(training)
}

/// A lot's evaluation pairs whose targets fall in the local days `[first_day, end_day)` (features
/// from a profile fitted before `cut`), with their feature vectors.
fn lot_evaluation_pairs(
    code: usize,
    lot: &LotInputs,
    config: &BacktestConfig,
    cut: NaiveDate,
    (first_day, end_day): (NaiveDate, NaiveDate),
) -> Result<(Vec<EvalRow>, Vec<FeatureVector>), BacktestError> {
    let params = config.feature_params();
    let step = params.step_ms();
    let max_horizon = i64::from(config.horizons.iter().copied().max().unwrap_or(1));
    let tz = lot.series.timezone();
    let window = (day_start_ms(tz, first_day), day_start_ms(tz, end_day));
    let request = BatchRequest {
        horizons: config.horizons.clone(),
        origins_from_ms: window.0 - max_horizon * step,
        origins_until_ms: window.1,
        origin_stride: 1,
    };
    let frame = with_history(code, lot, day_start_ms(tz, cut), |history| {
        batch::lot_features(&params, history, &request)
    })
    .map_err(polars_error("computing evaluation features"))?;
    let holidays = &lot.context.holidays;
    let (mut rows, mut features) = (Vec::new(), Vec::new());
    for row in batch::rows(&frame).map_err(polars_error("reading evaluation features"))? {
        let target_ms = row.origin_ms + i64::from(row.horizon_steps) * step;
        let (Some(actual_rate), Some(capacity)) = (row.target_rate, row.target_capacity) else {
            continue;
        };
        if !(window.0..window.1).contains(&target_ms)
            || !pair_allowed(&lot.series, config, row.origin_ms, target_ms)
        {
            continue;
        }
        let target_date = lot.series.local(target_ms).date();
        rows.push(EvalRow {
            lot: code,
            horizon_steps: row.horizon_steps,
            target_ms,
            actual_rate,
            capacity,
            last_rate: row.features[index::RATE_ORIGIN],
            day_type: holidays.day_type(target_date),
            holiday: holidays.is_holiday(target_date),
        });
        features.push(row.features);
    }
    Ok((rows, features))
}

/// The validation days of every window with their training rows, computed once: a search fits
/// many hyperparameter sets on them without recomputing features. Built from the calibration days
/// before each window and the data before those days only, as [`BacktestConfig::validation_only`]
/// does: nothing of a test window is read.
pub struct ValidationSets {
    windows: Vec<ValidationWindow>,
    horizons: Vec<u32>,
    step_minutes: u32,
}

struct ValidationWindow {
    rows: Vec<EvalRow>,
    /// The rows' feature vectors (a search scores them once per trial).
    features: Vec<FeatureVector>,
    training: TrainingSet,
}

/// The trees' MAE of the rate at one horizon on the validation days, next to persistence + profile
/// change's on the same pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValidationScore {
    /// Horizon in grid steps.
    pub horizon_steps: u32,
    /// Horizon in minutes.
    pub horizon_minutes: u32,
    /// The trees' MAE of the rate (persistence where they cannot forecast, as the backtest counts).
    pub mae_rate: f64,
    /// Persistence + profile change's MAE on the same pairs.
    pub baseline_mae_rate: f64,
    /// Pairs over all windows.
    pub pairs: u64,
}

impl ValidationScore {
    /// The relative MAE change against persistence + profile change (-0.10: 10% better).
    pub fn change(&self) -> f64 {
        if self.baseline_mae_rate > 0.0 {
            self.mae_rate / self.baseline_mae_rate - 1.0
        } else {
            f64::NAN
        }
    }
}

/// Reads a source's validation days for a search: per window, the calibration days' pairs and the
/// training rows before them (the same ones [`backtest`] fits its calibration models on).
pub fn validation_sets(
    lots: &LotGroups<'_>,
    config: &BacktestConfig,
    progress: &dyn Progress,
) -> Result<ValidationSets, BacktestError> {
    config.validate()?;
    let windows = config.windows();
    let mut sets = Vec::with_capacity(windows.len());
    for (position, (window_start, _)) in windows.iter().enumerate() {
        let calibration_start = *window_start - Days::new(u64::from(config.calibration_days));
        progress.stage(
            &format!(
                "{}: validation features, window {}/{} ({} groups, twice)",
                config.source,
                position + 1,
                windows.len(),
                lots.group_count()
            ),
            Some(2 * lots.group_count() as u64),
        );
        let training = training_set(lots, config, calibration_start, progress)?;
        let groups = lots.map(progress, |group| {
            let (mut rows, mut features) = (Vec::new(), Vec::new());
            for (code, lot) in group.coded() {
                let (lot_rows, lot_features) = lot_evaluation_pairs(
                    code,
                    lot,
                    config,
                    calibration_start,
                    (calibration_start, *window_start),
                )?;
                rows.extend(lot_rows);
                features.extend(lot_features);
            }
            Ok((rows, features))
        })?;
        let (mut rows, mut features) = (Vec::new(), Vec::new());
        for (group_rows, group_features) in groups {
            rows.extend(group_rows);
            features.extend(group_features);
        }
        sets.push(ValidationWindow {
            rows,
            features,
            training,
        });
    }
    Ok(ValidationSets {
        windows: sets,
        horizons: config.horizons.clone(),
        step_minutes: config.step_minutes,
    })
}

impl ValidationSets {
    /// These sets with `prior`'s rows added to every window's training rows.
    pub fn with_prior(mut self, prior: &Prior) -> Self {
        for window in &mut self.windows {
            for (minutes, rows) in &mut window.training {
                prior.extend(*minutes, rows);
            }
        }
        self
    }

    /// Training rows per window (summed over horizons), for sizing a search.
    pub fn training_rows(&self) -> usize {
        self.windows
            .iter()
            .flat_map(|window| window.training.values())
            .map(|rows| rows.features.len())
            .sum()
    }

    /// Validation pairs over all windows and horizons.
    pub fn pairs(&self) -> usize {
        self.windows.iter().map(|window| window.rows.len()).sum()
    }

    /// Fits the trees with `params` before each window's validation days and scores them there,
    /// per horizon.
    pub fn score(&self, params: &GbmParams) -> Result<Vec<ValidationScore>, BacktestError> {
        let mut sums: BTreeMap<u32, (f64, f64, u64)> = BTreeMap::new();
        for window in &self.windows {
            let model = params.fit(&window.training)?;
            let forecasts = model.predict(&window.features);
            let baseline = BaselineModel::PersistencePlusProfileChange.predict(&window.features);
            for (position, row) in window.rows.iter().enumerate() {
                let entry = sums.entry(row.horizon_steps).or_insert((0.0, 0.0, 0));
                entry.0 += (or_last(forecasts[position], row) - row.actual_rate).abs();
                entry.1 += (or_last(baseline[position], row) - row.actual_rate).abs();
                entry.2 += 1;
            }
        }
        Ok(self
            .horizons
            .iter()
            .map(|&steps| {
                let (model, baseline, pairs) = sums.get(&steps).copied().unwrap_or((0.0, 0.0, 0));
                let count = pairs.max(1) as f64;
                ValidationScore {
                    horizon_steps: steps,
                    horizon_minutes: steps * self.step_minutes,
                    mae_rate: if pairs == 0 { f64::NAN } else { model / count },
                    baseline_mae_rate: if pairs == 0 {
                        f64::NAN
                    } else {
                        baseline / count
                    },
                    pairs,
                }
            })
            .collect())
    }
}

/// Whether an origin-target pair counts: same local day when the config asks for it.
fn pair_allowed(
    series: &GridSeries,
    config: &BacktestConfig,
    origin_ms: i64,
    target_ms: i64,
) -> bool {
    !config.same_day || series.local(origin_ms).date() == series.local(target_ms).date()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(month: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2016, month, day).expect("valid date")
    }

    #[test]
    fn a_rest_under_half_a_window_joins_the_window_before_it() {
        let split = |first: NaiveDate, last: NaiveDate, days: u32| {
            BacktestConfig {
                test_start: first,
                test_end: last,
                window_days: Some(days),
                ..BacktestConfig::birmingham()
            }
            .windows()
        };
        // Málaga's year in quarters: 365 days = 4 x 91 + 1.
        let year = split(
            NaiveDate::from_ymd_opt(2025, 7, 1).expect("valid date"),
            NaiveDate::from_ymd_opt(2026, 6, 30).expect("valid date"),
            91,
        );
        assert_eq!(year.len(), 4, "{year:?}");
        assert_eq!(
            year[3],
            (
                NaiveDate::from_ymd_opt(2026, 3, 31).expect("valid date"),
                NaiveDate::from_ymd_opt(2026, 6, 30).expect("valid date")
            )
        );
        // Half a window or more stays a window of its own; one window stays one.
        assert_eq!(split(date(11, 1), date(11, 11), 7).len(), 2);
        assert_eq!(split(date(11, 1), date(11, 10), 7).len(), 1);
        assert_eq!(
            split(date(11, 1), date(11, 3), 7),
            vec![(date(11, 1), date(11, 3))]
        );
        assert_eq!(split(date(11, 1), date(11, 14), 7).len(), 2);
    }

    #[test]
    fn each_cut_off_is_fitted_once_and_dropped_after_its_last_use() {
        let config = BacktestConfig {
            windows: 3,
            ..BacktestConfig::birmingham()
        };
        // Windows from 29 Nov, 6 Dec and 13 Dec: per window its calibration fit's cut-off (14 days
        // before), then its test fit's; the third window's calibration fit is the first's test fit.
        let cuts = config.cuts();
        assert_eq!(
            cuts,
            vec![
                date(11, 15),
                date(11, 29),
                date(11, 22),
                date(12, 6),
                date(11, 29),
                date(12, 13),
            ]
        );
        // What is kept after each use: 29 Nov from its first use to its second, nothing else.
        let kept_after = [
            vec![],
            vec![date(11, 29)],
            vec![date(11, 29)],
            vec![date(11, 29)],
            vec![],
            vec![],
        ];
        let mut fits = Fits::new(cuts.clone());
        let mut made = Vec::new();
        for (cut, kept) in cuts.into_iter().zip(kept_after) {
            fits.get(cut, || {
                made.push(cut);
                Ok(Fitted {
                    linear: None,
                    gbm: None,
                    training_rows: BTreeMap::new(),
                })
            })
            .expect("fitted");
            fits.release(cut);
            assert_eq!(
                fits.fitted.keys().copied().collect::<Vec<_>>(),
                kept,
                "after {cut}"
            );
        }
        assert_eq!(made.len(), 5, "{made:?}");
        assert_eq!(fits.made, 5);
    }

    #[test]
    fn the_price_feature_is_left_out_only_where_no_lot_has_a_tariff() {
        let price = index::TARGET_PRICE_CHANGE_WEEK;
        let mut models = ModelChoice::all();
        if let Some(gbm) = models.gbm.as_mut() {
            gbm.excluded_features = vec![index::LOT_CODE];
        }
        let priced = models.for_prices(true);
        assert_eq!(priced, models);
        let unpriced = models.for_prices(false);
        let gbm = unpriced.gbm.expect("trees");
        assert_eq!(gbm.excluded_features, vec![index::LOT_CODE, price]);
        let linear = unpriced.linear.expect("elastic net");
        assert!(linear.excluded_features.contains(&price));
        // Twice is once.
        assert_eq!(
            models.for_prices(false).for_prices(false),
            models.for_prices(false)
        );
    }

    #[test]
    fn a_model_loses_where_it_ties_or_trails_the_baseline_or_has_no_figure() {
        let metrics = |model: &str, horizon_steps: u32, mae_rate: f64| HorizonMetrics {
            model: model.to_owned(),
            horizon_steps,
            horizon_minutes: horizon_steps * 30,
            pairs: 10,
            fallbacks: 0,
            mae_rate,
            rmse_rate: mae_rate,
            mae_slots: mae_rate,
            rmse_slots: mae_rate,
            coverage_80: None,
            coverage_95: None,
            width_80: None,
        };
        let report = BacktestReport {
            models: vec!["base".to_owned(), "trees".to_owned()],
            lots: Vec::new(),
            excluded_lots: Vec::new(),
            windows: Vec::new(),
            metrics: vec![
                metrics("base", 1, 0.02),
                metrics("trees", 1, 0.01),
                metrics("base", 2, 0.03),
                metrics("trees", 2, 0.03),
                metrics("base", 4, 0.04),
                metrics("trees", 4, 0.05),
                metrics("base", 8, 0.05),
            ],
            per_lot: Vec::new(),
            per_lot_hour: Vec::new(),
            per_day_type: Vec::new(),
            per_window: Vec::new(),
            samples: Vec::new(),
            training_rows: BTreeMap::new(),
            validation_mae: Vec::new(),
            test_residuals: BTreeMap::new(),
            run: RunStats::default(),
        };
        assert!(report.losing_horizons("trees", "base", &[1]).is_empty());
        let losing = report.losing_horizons("trees", "base", &[1, 2, 4, 8]);
        assert_eq!(losing.len(), 3, "{losing:?}");
        assert_eq!(losing[0], (60, 0.03, 0.03));
        assert_eq!(losing[1], (120, 0.05, 0.04));
        assert_eq!(losing[2].0, 240);
        assert!(losing[2].1.is_nan());
    }
}
