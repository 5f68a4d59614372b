//! What a source holds, and the evaluation protocol its own data suggests.
//!
//! The reference data sets have published protocols (`BacktestConfig::birmingham`, the Málaga
//! preset). A user's own source (`csv-<name>`) has none: applying Birmingham's 30-minute grid and
//! December 2016 test week to it silently evaluates nothing useful. Its cadence and its last weeks
//! say what a fair protocol is: the finest common grid step at or above the cadence, the last week
//! as the test window, and as many earlier weeks as rolling origins as the history allows.

use std::collections::{BTreeMap, HashMap};

use chrono::{Days, NaiveDate};
use chrono_tz::Tz;
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::rows::LotRow;
use parkcast_warehouse::schema::Table;
use polars::prelude::*;

use crate::backtest::BacktestConfig;
use parkcast_warehouse::lots::LotsError;

/// One source of `fact_lot_occupancy`, summarised.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSummary {
    /// `fact_lot_occupancy.source`.
    pub source: String,
    /// Lots with readings.
    pub lots: usize,
    /// Readings.
    pub readings: usize,
    /// First local day with a reading (in the time zone of most of its lots).
    pub first_day: NaiveDate,
    /// Last local day with a reading.
    pub last_day: NaiveDate,
    /// Typical minutes between a lot's consecutive readings: the lower quartile of its gaps
    /// ([`typical_gap`]), median over lots.
    pub cadence_minutes: f64,
    /// The time zone of most of its lots.
    pub timezone: Tz,
}

/// Why no protocol follows from a source's data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Readings are too sparse for a sub-daily grid.
    #[error(
        "source {source_name:?} reports every {cadence_minutes:.0} min: too coarse for a forecast grid of an hour or less; give --step and --horizons"
    )]
    TooCoarse {
        /// The source.
        source_name: String,
        /// Its cadence.
        cadence_minutes: f64,
    },
    /// Too little history for a test week, its calibration days and something to train on.
    #[error(
        "source {source_name:?} covers {days} days ({first} to {last}); a backtest needs at least {needed} (a test week, {calibration} calibration days and two weeks to train on)"
    )]
    TooShort {
        /// The source.
        source_name: String,
        /// Days covered.
        days: i64,
        /// First day.
        first: NaiveDate,
        /// Last day.
        last: NaiveDate,
        /// Days needed.
        needed: i64,
        /// Calibration days of the protocol.
        calibration: u32,
    },
}

/// Grid steps a protocol chooses from: divisors of an hour, so every horizon in hours fits.
const STEPS_MINUTES: [u32; 6] = [5, 10, 15, 20, 30, 60];
/// Test window of a protocol from the data, days.
const TEST_DAYS: u32 = 7;
/// Days a model trains on at least before the first window.
const MIN_TRAINING_DAYS: i64 = 14;
/// Rolling windows of a protocol from the data, at most (the last is the test week).
const MAX_WINDOWS: u32 = 4;

/// The grid step a protocol takes for a cadence: the finest of [5, 10, 15, 20, 30, 60] minutes at
/// or above it, allowing 10% jitter (a 5-minute source whose readings drift by seconds is still
/// 5-minute); `None` for a cadence above an hour (or NaN).
pub fn grid_step_minutes(cadence_minutes: f64) -> Option<u32> {
    STEPS_MINUTES
        .into_iter()
        .find(|step| f64::from(*step) >= cadence_minutes * 0.9)
}

impl SourceSummary {
    /// Days from the first to the last day, both counted.
    pub fn days(&self) -> i64 {
        (self.last_day - self.first_day).num_days() + 1
    }

    /// The protocol the data suggests: the finest grid step of [5, 10, 15, 20, 30, 60] minutes at
    /// or above the cadence; horizons 30 min / 1 h / 2 h (1 / 2 / 4 h on an hourly grid); the last
    /// 7 days as the test window, with up to three earlier weeks as rolling origins where at least
    /// two weeks of training and the calibration days precede them; pairs across midnight.
    pub fn protocol(&self) -> Result<BacktestConfig, ProtocolError> {
        let step_minutes = self
            .step_minutes()
            .ok_or_else(|| ProtocolError::TooCoarse {
                source_name: self.source.clone(),
                cadence_minutes: self.cadence_minutes,
            })?;
        let calibration_days = BacktestConfig::birmingham().calibration_days;
        let needed = i64::from(TEST_DAYS) + i64::from(calibration_days) + MIN_TRAINING_DAYS;
        if self.days() < needed {
            return Err(ProtocolError::TooShort {
                source_name: self.source.clone(),
                days: self.days(),
                first: self.first_day,
                last: self.last_day,
                needed,
                calibration: calibration_days,
            });
        }
        let spare_weeks = (self.days() - needed) / i64::from(TEST_DAYS);
        let windows = 1 + u32::try_from(spare_weeks)
            .unwrap_or(u32::MAX)
            .min(MAX_WINDOWS - 1);
        Ok(self.config(step_minutes, windows))
    }

    /// [`SourceSummary::protocol`] without its checks, for a user who sets the test window (and,
    /// for a coarse source, the grid) themselves: too little history for a protocol of the data's
    /// own is no reason to refuse theirs. One window, the last 7 days until overridden; the
    /// backtest then says if a lot has too little data for it.
    pub fn unchecked_protocol(&self) -> BacktestConfig {
        self.config(self.step_minutes().unwrap_or(60), 1)
    }

    /// The finest grid step at or above the cadence; `None` above an hour.
    fn step_minutes(&self) -> Option<u32> {
        grid_step_minutes(self.cadence_minutes)
    }

    fn config(&self, step_minutes: u32, windows: u32) -> BacktestConfig {
        let horizons_minutes: [u32; 3] = if step_minutes <= 30 {
            [30, 60, 120]
        } else {
            [60, 120, 240]
        };
        BacktestConfig {
            source: self.source.clone(),
            step_minutes,
            horizons: horizons_minutes
                .iter()
                .map(|minutes| minutes / step_minutes)
                .collect(),
            test_start: self.last_day - Days::new(u64::from(TEST_DAYS) - 1),
            test_end: self.last_day,
            same_day: false,
            windows,
            window_days: None,
            training_days: (self.days() > 400).then_some(365),
            ..BacktestConfig::birmingham()
        }
    }
}

fn polars_error(context: &'static str) -> impl Fn(PolarsError) -> LotsError {
    move |source| LotsError::Polars { context, source }
}

/// Every source of `fact_lot_occupancy`, summarised, ordered by name.
///
/// Reads the lot, time and source columns of the whole table once; a warehouse of the three real
/// data sets holds a few million readings, which this reads in about a second.
pub fn sources(warehouse: &Warehouse) -> Result<Vec<SourceSummary>, LotsError> {
    summarize(warehouse, None)
}

/// One source, summarised; `None` when the warehouse has no reading of it.
pub fn source(warehouse: &Warehouse, name: &str) -> Result<Option<SourceSummary>, LotsError> {
    Ok(summarize(warehouse, Some(name))?.into_iter().next())
}

fn summarize(warehouse: &Warehouse, only: Option<&str>) -> Result<Vec<SourceSummary>, LotsError> {
    let timezones: HashMap<String, String> = warehouse
        .read_rows::<LotRow>()?
        .into_iter()
        .map(|lot| (lot.lot_id, lot.timezone))
        .collect();
    let mut scan = warehouse.scan(Table::FactLotOccupancy)?;
    if let Some(name) = only {
        scan = scan.filter(col("source").eq(lit(name.to_owned())));
    }
    let frame = scan
        .select([col("source"), col("lot_id"), col("ts")])
        .collect()
        .map_err(polars_error("reading fact_lot_occupancy"))?;
    let column = |name| frame.column(name).map_err(polars_error("reading a column"));
    let sources = column("source")?
        .str()
        .map_err(polars_error("source as text"))?
        .clone();
    let lot_ids = column("lot_id")?
        .str()
        .map_err(polars_error("lot_id as text"))?
        .clone();
    let timestamps = column("ts")?
        .datetime()
        .map_err(polars_error("ts as datetime"))?
        .physical()
        .clone();
    let mut readings: BTreeMap<&str, HashMap<&str, Vec<i64>>> = BTreeMap::new();
    for ((source, lot_id), ts) in sources.iter().zip(lot_ids.iter()).zip(timestamps.iter()) {
        let (Some(source), Some(lot_id), Some(ts)) = (source, lot_id, ts) else {
            continue;
        };
        readings
            .entry(source)
            .or_default()
            .entry(lot_id)
            .or_default()
            .push(ts);
    }
    let mut summaries = Vec::new();
    for (source, lots) in readings {
        let mut cadences = Vec::new();
        let mut zones: HashMap<&str, usize> = HashMap::new();
        let (mut first, mut last, mut count) = (i64::MAX, i64::MIN, 0);
        for (lot_id, times) in lots.iter() {
            let mut times = times.clone();
            times.sort_unstable();
            times.dedup();
            count += times.len();
            first = first.min(times[0]);
            last = last.max(times[times.len() - 1]);
            let mut gaps: Vec<i64> = times.windows(2).map(|pair| pair[1] - pair[0]).collect();
            if let Some(gap) = typical_gap(&mut gaps) {
                cadences.push(gap);
            }
            *zones
                .entry(timezones.get(*lot_id).map_or("UTC", String::as_str))
                .or_default() += 1;
        }
        let zone_name = zones
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))
            .map_or("UTC", |(zone, _)| zone);
        let timezone: Tz = zone_name.parse().unwrap_or(Tz::UTC);
        let local_day = |ms: i64| parkcast_localtime::local_date(timezone, ms);
        let (Some(first_day), Some(last_day)) = (local_day(first), local_day(last)) else {
            continue;
        };
        summaries.push(SourceSummary {
            source: source.to_owned(),
            lots: lots.len(),
            readings: count,
            first_day,
            last_day,
            cadence_minutes: median(&mut cadences).map_or(f64::NAN, |gap| gap as f64 / 60_000.0),
            timezone,
        });
    }
    Ok(summaries)
}

/// A lot's cadence from the gaps between its consecutive readings: their lower quartile; `None`
/// when empty.
///
/// Not the median: a source that writes only changes leaves a long gap wherever its count stood
/// still, and the median gap then overstates its cadence (a 15-minute count that stands still 40%
/// of the time, written a few minutes after each quarter, has a median gap of 17 minutes, which
/// chose a 20-minute grid). The lower quartile stays at the step as long as a quarter of the
/// readings follow the previous one by a single step, and equals the median for a sampled feed.
pub fn typical_gap(gaps: &mut [i64]) -> Option<i64> {
    if gaps.is_empty() {
        return None;
    }
    let quartile = (gaps.len() - 1) / 4;
    Some(*gaps.select_nth_unstable(quartile).1)
}

/// The median (the lower one of an even count); `None` when empty.
fn median(values: &mut [i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let middle = (values.len() - 1) / 2;
    Some(*values.select_nth_unstable(middle).1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(days: i64, cadence_minutes: f64) -> SourceSummary {
        let first_day = NaiveDate::from_ymd_opt(2026, 1, 1).expect("valid date");
        SourceSummary {
            source: "csv-town".to_owned(),
            lots: 3,
            readings: 1_000,
            first_day,
            last_day: first_day + Days::new(days as u64 - 1),
            cadence_minutes,
            timezone: Tz::Europe__Berlin,
        }
    }

    #[test]
    fn the_grid_is_the_finest_step_at_or_above_the_cadence() {
        let protocol = summary(90, 4.7).protocol().expect("a protocol");
        assert_eq!(protocol.step_minutes, 5);
        assert_eq!(protocol.horizons, vec![6, 12, 24]);
        assert_eq!(summary(90, 15.0).protocol().expect("ok").step_minutes, 15);
        assert_eq!(summary(90, 16.0).protocol().expect("ok").step_minutes, 15); // within 10% jitter
        assert_eq!(summary(90, 17.0).protocol().expect("ok").step_minutes, 20);
        let hourly = summary(90, 60.0).protocol().expect("ok");
        assert_eq!((hourly.step_minutes, hourly.horizons), (60, vec![1, 2, 4]));
        assert!(matches!(
            summary(90, 1_440.0).protocol(),
            Err(ProtocolError::TooCoarse { .. })
        ));
    }

    #[test]
    fn the_test_window_is_the_last_week_with_earlier_weeks_as_history_allows() {
        let protocol = summary(90, 15.0).protocol().expect("a protocol");
        let last = NaiveDate::from_ymd_opt(2026, 3, 31).expect("valid date");
        assert_eq!(protocol.test_end, last);
        assert_eq!(protocol.test_start, last - Days::new(6));
        assert_eq!(protocol.windows, 4);
        assert!(!protocol.same_day);
        // 35 days: one test week, 14 calibration days, 14 training days; nothing spare.
        assert_eq!(summary(35, 15.0).protocol().expect("ok").windows, 1);
        assert_eq!(summary(42, 15.0).protocol().expect("ok").windows, 2);
        let short = summary(34, 15.0).protocol().expect_err("too short");
        assert!(short.to_string().contains("covers 34 days"), "{short}");
        // The first window still has its calibration and training days before it.
        let protocol = summary(49, 15.0).protocol().expect("ok");
        let first_window = protocol.windows()[0].0;
        assert!((first_window - summary(49, 15.0).first_day).num_days() >= 28);
    }

    #[test]
    fn a_short_or_coarse_source_still_has_an_unchecked_protocol_for_a_users_own_window() {
        let short = summary(21, 15.0);
        assert!(matches!(
            short.protocol(),
            Err(ProtocolError::TooShort { days: 21, .. })
        ));
        let unchecked = short.unchecked_protocol();
        assert_eq!((unchecked.step_minutes, unchecked.windows), (15, 1));
        assert_eq!(unchecked.test_end, short.last_day);
        let coarse = summary(90, 180.0);
        assert!(matches!(
            coarse.protocol(),
            Err(ProtocolError::TooCoarse { .. })
        ));
        assert_eq!(coarse.unchecked_protocol().step_minutes, 60);
    }

    #[test]
    fn the_median_is_robust_to_gaps() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [5, 5, 5, 600, 5]), Some(5));
        assert_eq!(median(&mut [1, 2, 3, 4]), Some(2));
    }

    #[test]
    fn the_cadence_of_a_source_that_writes_only_changes_is_its_step() {
        // A 15-minute count written a few minutes after each quarter, standing still at 40% of
        // them: gaps of one step (with jitter) and of two or three.
        let mut gaps = vec![
            16, 18, 14, 17, 15, 18, 31, 29, 32, 16, 47, 18, 30, 17, 33, 44,
        ];
        assert_eq!(
            median(&mut gaps.clone()),
            Some(18),
            "the median overstates it"
        );
        let gap = typical_gap(&mut gaps).expect("gaps");
        assert_eq!(gap, 16);
        assert_eq!(grid_step_minutes(gap as f64), Some(15));
        // A sampled feed's quartile is its median.
        assert_eq!(typical_gap(&mut [15, 15, 15, 15, 15, 600]), Some(15));
        assert_eq!(typical_gap(&mut []), None);
        assert_eq!(grid_step_minutes(61.0 / 0.9 + 1.0), None);
    }
}
