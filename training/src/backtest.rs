//! Backtests of the baselines on the warehouse's lot occupancy.
//!
//! The protocol (the one behind the published Birmingham figures, which it reproduces): readings go to
//! the nearest grid instant ([`parkcast_features::grid`]); the profile is fitted on the data before the
//! test window only; each test target is forecast from the origin `horizon` steps earlier, on the same
//! local day when `same_day` is set (garages that close at night have no overnight origins); a baseline
//! that lacks an input falls back to persistence, and the fallbacks are counted. Errors are reported as
//! MAE and RMSE of the rate and in slots (rate error times the capacity at the target).
//!
//! Uncertainty: each model's residuals per horizon on the `calibration_days` before the test window
//! (from a profile fitted before those days) calibrate split-conformal 80% and 95% intervals
//! ([`parkcast_features::conformal`]); the report gives the share of test actuals they cover.
//!
//! Rolling origins: [`BacktestConfig::windows`] consecutive windows, each refitted and recalibrated on
//! the data before its own start. Models (linear, tree ensembles) join this module in the trainer issue.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{Days, NaiveDate, TimeZone};
use chrono_tz::Tz;
use parkcast_features::baseline::{Baseline, WeekdayProfile};
use parkcast_features::conformal::ResidualCalibration;
use parkcast_features::grid::{GridSeries, GridValue};
use parkcast_features::rows::LotRow;
use parkcast_features::schema::Table;
use parkcast_features::warehouse::{Warehouse, WarehouseError};
use polars::prelude::*;

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
    /// A lot's time zone is not an IANA name.
    #[error("lot {lot_id} has an unknown time zone {timezone:?}")]
    BadTimezone {
        /// The lot.
        lot_id: String,
        /// The zone found.
        timezone: String,
    },
    /// Invalid settings.
    #[error("invalid backtest config: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: &'static str,
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
        }
    }

    fn validate(&self) -> Result<(), BacktestError> {
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
        Ok(())
    }

    /// The rolling-origin windows, oldest first; the last is `[test_start, test_end]`.
    pub fn windows(&self) -> Vec<(NaiveDate, NaiveDate)> {
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
    pub model: &'static str,
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

/// The result of a backtest.
#[derive(Debug, Clone)]
pub struct BacktestReport {
    /// Lots evaluated.
    pub lots: Vec<String>,
    /// Lots left out for too little data.
    pub excluded_lots: Vec<String>,
    /// The test windows (first and last local date), oldest first.
    pub windows: Vec<(NaiveDate, NaiveDate)>,
    /// One entry per model and horizon over all windows, models in [`Baseline::ALL`] order.
    pub metrics: Vec<HorizonMetrics>,
    /// The same per lot.
    pub per_lot: Vec<LotMetrics>,
}

/// Errors of one model at one horizon for one lot.
#[derive(Debug, Clone, PartialEq)]
pub struct LotMetrics {
    /// The lot.
    pub lot_id: String,
    /// Its metrics.
    pub metrics: HorizonMetrics,
}

impl BacktestReport {
    /// The metrics of a model at a horizon.
    pub fn get(&self, model: &str, horizon_steps: u32) -> Option<&HorizonMetrics> {
        self.metrics
            .iter()
            .find(|metrics| metrics.model == model && metrics.horizon_steps == horizon_steps)
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
    /// Adds one pair: the model's forecast (persistence `last` when it has none) against the actual.
    fn record(
        &mut self,
        forecast: Option<f64>,
        last: f64,
        actual: GridValue,
        calibration: Option<&ResidualCalibration>,
    ) {
        if forecast.is_none() {
            self.fallbacks += 1;
        }
        let forecast = forecast.unwrap_or(last);
        let error = forecast - actual.rate();
        self.pairs += 1;
        self.abs_rate += error.abs();
        self.sq_rate += error * error;
        self.abs_slots += error.abs() * actual.capacity;
        self.sq_slots += (error * actual.capacity).powi(2);
        if let Some(calibration) = calibration {
            self.calibrated_pairs += 1;
            let inside = |(low, high): (f64, f64)| (low..=high).contains(&actual.rate());
            let interval_80 = calibration.interval(forecast, 0.8);
            self.covered_80 += u64::from(inside(interval_80));
            self.covered_95 += u64::from(inside(calibration.interval(forecast, 0.95)));
            self.width_80 += interval_80.1 - interval_80.0;
        }
    }

    fn metrics(
        &self,
        model: &'static str,
        horizon: u32,
        config: &BacktestConfig,
    ) -> HorizonMetrics {
        let pairs = self.pairs.max(1) as f64;
        // Coverage counts only pairs that had intervals (a window may lack calibration data).
        let calibrated_pairs = self.calibrated_pairs as f64;
        let share =
            |count: u64| (self.calibrated_pairs > 0).then(|| count as f64 / calibrated_pairs);
        HorizonMetrics {
            model,
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

/// Calls `visit(horizon, origin_ms, target_ms, actual, last_rate)` for every forecast pair whose target
/// lies in `[window_start_ms, window_end_ms)` and whose origin has a value.
fn for_each_pair(
    series: &GridSeries,
    config: &BacktestConfig,
    (window_start_ms, window_end_ms): (i64, i64),
    mut visit: impl FnMut(u32, i64, i64, GridValue, f64),
) {
    let step_ms = i64::from(config.step_minutes) * 60_000;
    for (target_ms, actual) in series
        .iter()
        .filter(|(instant, _)| (window_start_ms..window_end_ms).contains(instant))
    {
        for &horizon in &config.horizons {
            let origin_ms = target_ms - i64::from(horizon) * step_ms;
            let Some(last) = series.rate_at(origin_ms) else {
                continue;
            };
            if config.same_day && series.local(origin_ms).date() != series.local(target_ms).date() {
                continue;
            }
            visit(horizon, origin_ms, target_ms, actual, last);
        }
    }
}

/// Runs the baselines over the test window(s).
pub fn backtest_baselines(
    warehouse: &Warehouse,
    config: &BacktestConfig,
) -> Result<BacktestReport, BacktestError> {
    config.validate()?;
    let series = load_series(warehouse, config)?;
    let windows = config.windows();
    let first_start = windows
        .first()
        .expect("validate() ensures at least one window")
        .0;

    let mut excluded_lots = Vec::new();
    let mut usable: Vec<(&String, &GridSeries)> = Vec::new();
    for (lot_id, lot_series) in &series {
        let training_end_ms = local_midnight_ms(lot_series.timezone(), first_start);
        let training_days: HashSet<NaiveDate> = lot_series
            .iter()
            .filter(|(instant, _)| *instant < training_end_ms)
            .map(|(instant, _)| lot_series.local(instant).date())
            .collect();
        let first_day = lot_series
            .iter()
            .next()
            .map(|(instant, _)| lot_series.local(instant).date());
        let span_days = first_day.map_or(0, |first| (first_start - first).num_days().max(1));
        if (training_days.len() as f64) < config.min_day_share * span_days as f64 {
            excluded_lots.push(lot_id.clone());
            continue;
        }
        usable.push((lot_id, lot_series));
    }
    if usable.is_empty() {
        return Err(BacktestError::NoUsableLot {
            source_name: config.source.clone(),
            min_day_share: config.min_day_share * 100.0,
        });
    }

    let mut totals: BTreeMap<(usize, u32), Accumulator> = BTreeMap::new();
    let mut by_lot: BTreeMap<(&String, usize, u32), Accumulator> = BTreeMap::new();
    for &(window_start, window_end) in &windows {
        // Each origin refits and recalibrates on data before its own window only.
        let calibrations = calibrate(&usable, config, window_start);
        let days = (window_start, window_end + Days::new(1));
        forecast_days(
            &usable,
            config,
            window_start,
            days,
            |lot_id, model_index, horizon, forecast, last, actual| {
                let calibration = calibrations.get(&(model_index, horizon));
                totals.entry((model_index, horizon)).or_default().record(
                    forecast,
                    last,
                    actual,
                    calibration,
                );
                by_lot
                    .entry((lot_id, model_index, horizon))
                    .or_default()
                    .record(forecast, last, actual, calibration);
            },
        );
    }

    let metrics = totals
        .iter()
        .map(|(&(model_index, horizon), accumulator)| {
            accumulator.metrics(Baseline::ALL[model_index].name(), horizon, config)
        })
        .collect();
    let per_lot = by_lot
        .iter()
        .map(
            |(&(lot_id, model_index, horizon), accumulator)| LotMetrics {
                lot_id: lot_id.clone(),
                metrics: accumulator.metrics(Baseline::ALL[model_index].name(), horizon, config),
            },
        )
        .collect();
    let lots = usable.iter().map(|(lot_id, _)| (*lot_id).clone()).collect();
    Ok(BacktestReport {
        lots,
        excluded_lots,
        windows,
        metrics,
        per_lot,
    })
}

/// Residuals of every baseline per horizon on the `calibration_days` before `window_start`, from a
/// profile fitted before those days (so the residuals are out of sample), pooled over lots.
fn calibrate(
    usable: &[(&String, &GridSeries)],
    config: &BacktestConfig,
    window_start: NaiveDate,
) -> HashMap<(usize, u32), ResidualCalibration> {
    let calibration_start = window_start - Days::new(u64::from(config.calibration_days));
    let mut residuals: HashMap<(usize, u32), Vec<f64>> = HashMap::new();
    let days = (calibration_start, window_start);
    forecast_days(
        usable,
        config,
        calibration_start,
        days,
        |_, model_index, horizon, forecast, last, actual| {
            residuals
                .entry((model_index, horizon))
                .or_default()
                .push(actual.rate() - forecast.unwrap_or(last));
        },
    );
    residuals
        .into_iter()
        .filter_map(|(key, residuals)| {
            ResidualCalibration::fit(residuals).map(|calibration| (key, calibration))
        })
        .collect()
}

/// Calls `visit(lot, model_index, horizon, forecast, last, actual)` for every baseline's forecast of every
/// pair whose target lies in the local days `[first_day, end_day)`, each lot's profile fitted on its data
/// before `fit_until`. `forecast` is `None` where the baseline lacks an input; `last` is persistence.
fn forecast_days<'lot>(
    usable: &[(&'lot String, &GridSeries)],
    config: &BacktestConfig,
    fit_until: NaiveDate,
    (first_day, end_day): (NaiveDate, NaiveDate),
    mut visit: impl FnMut(&'lot String, usize, u32, Option<f64>, f64, GridValue),
) {
    for &(lot_id, lot_series) in usable {
        let timezone = lot_series.timezone();
        let profile = WeekdayProfile::fit(lot_series, local_midnight_ms(timezone, fit_until));
        let window = (
            local_midnight_ms(timezone, first_day),
            local_midnight_ms(timezone, end_day),
        );
        for_each_pair(
            lot_series,
            config,
            window,
            |horizon, origin_ms, target_ms, actual, last| {
                for (model_index, baseline) in Baseline::ALL.iter().enumerate() {
                    let forecast = baseline.forecast(lot_series, &profile, origin_ms, target_ms);
                    visit(lot_id, model_index, horizon, forecast, last, actual);
                }
            },
        );
    }
}

fn local_midnight_ms(tz: Tz, date: NaiveDate) -> i64 {
    let midnight = date.and_hms_opt(0, 0, 0).expect("midnight should be valid");
    tz.from_local_datetime(&midnight).earliest().map_or_else(
        || midnight.and_utc().timestamp_millis(),
        |instant| instant.timestamp_millis(),
    )
}

/// Every lot of the source as a grid series, read with a lazy scan (only the needed columns).
fn load_series(
    warehouse: &Warehouse,
    config: &BacktestConfig,
) -> Result<BTreeMap<String, GridSeries>, BacktestError> {
    let timezones: HashMap<String, String> = warehouse
        .read_rows::<LotRow>()?
        .into_iter()
        .map(|lot| (lot.lot_id, lot.timezone))
        .collect();
    let polars_error = |context| move |source| BacktestError::Polars { context, source };
    let frame = warehouse
        .scan(Table::FactLotOccupancy)?
        .filter(col("source").eq(lit(config.source.clone())))
        .select([col("lot_id"), col("ts"), col("occupied"), col("capacity")])
        .collect()
        .map_err(polars_error("reading fact_lot_occupancy"))?;
    let column = |name| frame.column(name).map_err(polars_error("reading a column"));
    let lot_ids = column("lot_id")?
        .str()
        .map_err(polars_error("lot_id as text"))?
        .clone();
    let timestamps = column("ts")?
        .datetime()
        .map_err(polars_error("ts as datetime"))?
        .physical()
        .clone();
    let occupied = column("occupied")?
        .i32()
        .map_err(polars_error("occupied as int32"))?
        .clone();
    let capacities = column("capacity")?
        .i32()
        .map_err(polars_error("capacity as int32"))?
        .clone();

    // Group by lot, then sort each lot by time (stable: file order breaks ties, so the later reading
    // of an instant wins). Cheaper in time and memory than polars sorting all rows on a text key.
    let mut readings: HashMap<&str, Vec<(i64, f64, f64)>> = HashMap::new();
    let rows = lot_ids
        .iter()
        .zip(timestamps.iter())
        .zip(occupied.iter())
        .zip(capacities.iter());
    for (((lot_id, ts), occupied), capacity) in rows {
        let (Some(lot_id), Some(ts), Some(occupied), Some(capacity)) =
            (lot_id, ts, occupied, capacity)
        else {
            continue;
        };
        readings
            .entry(lot_id)
            .or_default()
            .push((ts, f64::from(occupied), f64::from(capacity)));
    }
    let step_ms = i64::from(config.step_minutes) * 60_000;
    let mut series: BTreeMap<String, GridSeries> = BTreeMap::new();
    for (lot_id, mut lot_readings) in readings {
        let timezone_name = timezones.get(lot_id).map_or("UTC", String::as_str);
        let timezone: Tz = timezone_name
            .parse()
            .map_err(|_| BacktestError::BadTimezone {
                lot_id: lot_id.to_owned(),
                timezone: timezone_name.to_owned(),
            })?;
        lot_readings.sort_by_key(|(ts, _, _)| *ts);
        let mut lot_series = GridSeries::new(step_ms, timezone);
        for (ts, occupied, capacity) in lot_readings {
            lot_series.push(ts, occupied, capacity);
        }
        series.insert(lot_id.to_owned(), lot_series);
    }
    Ok(series)
}
