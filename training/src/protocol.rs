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
use parkcast_features::conformal::CalibrationScope;
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::rows::LotRow;
use parkcast_warehouse::schema::Table;
use polars::prelude::*;

use crate::backtest::BacktestConfig;
use parkcast_warehouse::lots::{Columns, LotsError};

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
    let columns = Columns(&frame);
    let sources = columns.text("source")?;
    let lot_ids = columns.text("lot_id")?;
    let timestamps = columns.timestamps("ts")?;
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

/// The published reference protocols of the real data sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Preset {
    /// Birmingham: 30-minute grid, 30 min / 1 h / 2 h, test week 13-19 Dec 2016, same-day pairs.
    Birmingham,
    /// Málaga: 15-minute grid, 15 min / 1 h / 24 h, test Jul 2025 - Jun 2026 in quarterly rolling
    /// windows, pairs across midnight.
    Malaga,
}

impl Preset {
    /// The preset of a data set's own source name.
    pub fn of_source(source: &str) -> Option<Preset> {
        match source {
            "birmingham" => Some(Preset::Birmingham),
            "malaga" => Some(Preset::Malaga),
            _ => None,
        }
    }

    /// The source the preset evaluates.
    pub fn source(self) -> &'static str {
        match self {
            Preset::Birmingham => "birmingham",
            Preset::Malaga => "malaga",
        }
    }

    /// The protocol.
    pub fn config(self) -> BacktestConfig {
        match self {
            Preset::Birmingham => BacktestConfig::birmingham(),
            Preset::Malaga => BacktestConfig {
                source: "malaga".to_owned(),
                step_minutes: 15,
                horizons: vec![1, 4, 96],
                test_start: date(2025, 7, 1),
                test_end: date(2026, 6, 30),
                window_days: Some(91),
                same_day: false,
                training_days: Some(365),
                ..BacktestConfig::birmingham()
            },
        }
    }
}

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("preset dates are valid")
}

/// The protocol the demo trains its simulated city's model with (the one it serves live): a
/// 15-minute grid, horizons from 15 minutes to a week, the city's last 7 days as the test window
/// with 7 calibration days before, pairs across midnight. `first_day` and `days` are the city's.
pub fn simulated_city(source: &str, first_day: NaiveDate, days: u32) -> BacktestConfig {
    let last = days.saturating_sub(1);
    BacktestConfig {
        source: source.to_owned(),
        step_minutes: 15,
        horizons: vec![1, 2, 4, 8, 96, 672],
        test_start: first_day + Days::new(u64::from(last.saturating_sub(6))),
        test_end: first_day + Days::new(u64::from(last)),
        same_day: false,
        calibration_days: 7,
        ..BacktestConfig::birmingham()
    }
}

/// What a user asks of a protocol: a preset or a source, and overrides of its parts (`None`: the
/// preset's, or what the source's data suggests).
#[derive(Debug, Clone)]
pub struct ProtocolRequest {
    /// A named protocol to start from.
    pub preset: Option<Preset>,
    /// The source; default: the preset's, else the warehouse's only source, else Birmingham when
    /// the warehouse holds it.
    pub source: Option<String>,
    /// Grid step, minutes.
    pub step_minutes: Option<u32>,
    /// Horizons, minutes (multiples of the step).
    pub horizons_minutes: Option<Vec<u32>>,
    /// First local date of the test period.
    pub test_start: Option<NaiveDate>,
    /// Last local date of the test period (inclusive).
    pub test_end: Option<NaiveDate>,
    /// Rolling windows of this many days over the test period.
    pub window_days: Option<u32>,
    /// Earlier windows as long as the test period.
    pub windows: Option<u32>,
    /// Pair origins and targets across midnight.
    pub across_days: bool,
    /// Calibration days before each window.
    pub calibration_days: Option<u32>,
    /// Which residuals calibrate the intervals (default: the frozen configuration's).
    pub calibration: Option<CalibrationScope>,
    /// Train on at most this many days before each window.
    pub training_days: Option<u32>,
    /// Cap on training rows per horizon.
    pub max_training_rows: usize,
    /// Score the validation days only.
    pub validation_only: bool,
}

impl Default for ProtocolRequest {
    /// Nothing asked: the warehouse's own protocol, with the backtest's usual cap on training rows
    /// (a derived default of 0 rows would be a configuration the backtest refuses).
    fn default() -> Self {
        ProtocolRequest {
            preset: None,
            source: None,
            step_minutes: None,
            horizons_minutes: None,
            test_start: None,
            test_end: None,
            window_days: None,
            windows: None,
            across_days: false,
            calibration_days: None,
            calibration: None,
            training_days: None,
            max_training_rows: BacktestConfig::birmingham().max_training_rows,
            validation_only: false,
        }
    }
}

/// Why a protocol request cannot be resolved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The warehouse could not be read.
    #[error(transparent)]
    Lots(#[from] LotsError),
    /// No protocol follows from the source's data.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The warehouse holds no occupancy.
    #[error("the warehouse's fact_lot_occupancy is empty: import a data set first")]
    Empty,
    /// Several sources and none named.
    #[error("the warehouse holds several sources ({0}): pick one with --source")]
    SeveralSources(String),
    /// The named source is not in the warehouse.
    #[error("no source {name:?} in the warehouse's fact_lot_occupancy; it holds: {held}")]
    NoSuchSource {
        /// The source asked for.
        name: String,
        /// What the warehouse holds.
        held: String,
    },
    /// A horizon is not a whole number of grid steps.
    #[error("horizon {minutes} min is not a multiple of the {step_minutes}-minute step")]
    HorizonNotMultiple {
        /// The horizon.
        minutes: u32,
        /// The grid step.
        step_minutes: u32,
    },
}

impl ProtocolRequest {
    /// The source to evaluate (see [`ProtocolRequest::source`]).
    fn source_name(&self, warehouse: &Warehouse) -> Result<String, ResolveError> {
        if let Some(source) = &self.source {
            return Ok(source.clone());
        }
        if let Some(preset) = self.preset {
            return Ok(preset.source().to_owned());
        }
        let held = sources(warehouse)?;
        match held.as_slice() {
            [only] => Ok(only.source.clone()),
            _ if held.iter().any(|summary| summary.source == "birmingham") => {
                Ok("birmingham".to_owned())
            }
            [] => Err(ResolveError::Empty),
            _ => Err(ResolveError::SeveralSources(
                held.iter()
                    .map(|summary| summary.source.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
        }
    }

    /// The backtest configuration this request describes on `warehouse`, and where it came from
    /// (printed, so a run says which protocol it evaluated). `default_calibration` is the frozen
    /// configuration's.
    pub fn resolve(
        &self,
        warehouse: &Warehouse,
        default_calibration: CalibrationScope,
    ) -> Result<(BacktestConfig, String), ResolveError> {
        let source = self.source_name(warehouse)?;
        let source = source.as_str();
        let Some(summary) = self::source(warehouse, source)? else {
            let available: Vec<String> = sources(warehouse)?
                .into_iter()
                .map(|source| format!("{} ({} lots)", source.source, source.lots))
                .collect();
            return Err(ResolveError::NoSuchSource {
                name: source.to_owned(),
                held: if available.is_empty() {
                    "nothing (import a data set first)".to_owned()
                } else {
                    available.join(", ")
                },
            });
        };
        let preset = self.preset.or(Preset::of_source(source));
        let mut origin = match preset {
            Some(preset) => format!("preset {}", preset.source()),
            None => format!(
                "from the data of {source}: {} lots, {} to {}, a reading every {:.1} min",
                summary.lots, summary.first_day, summary.last_day, summary.cadence_minutes
            ),
        };
        let mut config = match preset {
            Some(preset) => preset.config(),
            None => {
                let window_given = self.test_start.is_some() && self.test_end.is_some();
                match summary.protocol() {
                    Ok(config) => config,
                    Err(ProtocolError::TooShort { .. }) if window_given => {
                        summary.unchecked_protocol()
                    }
                    Err(ProtocolError::TooCoarse { .. })
                        if window_given && self.step_minutes.is_some() =>
                    {
                        summary.unchecked_protocol()
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        };
        let mut horizons_minutes: Vec<u32> = config
            .horizons
            .iter()
            .map(|steps| steps * config.step_minutes)
            .collect();
        if let Some(source) = &self.source {
            config.source = source.clone();
        }
        if let Some(step) = self.step_minutes {
            config.step_minutes = step;
        }
        if let Some(horizons) = &self.horizons_minutes {
            horizons_minutes.clone_from(horizons);
        }
        config.horizons = horizons_minutes
            .iter()
            .map(|&minutes| {
                if config.step_minutes == 0 || minutes % config.step_minutes != 0 {
                    return Err(ResolveError::HorizonNotMultiple {
                        minutes,
                        step_minutes: config.step_minutes,
                    });
                }
                Ok(minutes / config.step_minutes)
            })
            .collect::<Result<_, _>>()?;
        if let Some(start) = self.test_start {
            config.test_start = start;
        }
        if let Some(end) = self.test_end {
            config.test_end = end;
        }
        if self.window_days.is_some() {
            config.window_days = self.window_days;
        }
        if let Some(windows) = self.windows {
            config.windows = windows;
        }
        if self.across_days {
            config.same_day = false;
        }
        if let Some(days) = self.calibration_days {
            config.calibration_days = days;
        }
        if self.training_days.is_some() {
            config.training_days = self.training_days;
        }
        config.max_training_rows = self.max_training_rows;
        config.calibration = self.calibration.unwrap_or(default_calibration);
        config.validation_only = self.validation_only;
        let windows = config.windows();
        origin.push_str(&format!(
            "; {}-min grid, horizons {}, {} window{}: {}",
            config.step_minutes,
            horizons_minutes
                .iter()
                .map(|minutes| horizon_label(*minutes))
                .collect::<Vec<_>>()
                .join(" / "),
            windows.len(),
            if windows.len() == 1 { "" } else { "s" },
            windows
                .iter()
                .map(|(start, end)| format!("{start}..{end}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok((config, origin))
    }
}

/// A horizon as the protocol line names it: `90` -> `1h30`, `60` -> `1h`, `15` -> `15 min`,
/// `1440` -> `24h`.
pub fn horizon_label(minutes: u32) -> String {
    match (minutes / 60, minutes % 60) {
        (0, rest) => format!("{rest} min"),
        (hours, 0) => format!("{hours}h"),
        (hours, rest) => format!("{hours}h{rest:02}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_the_published_protocols() {
        let malaga = Preset::Malaga.config();
        let minutes: Vec<u32> = malaga
            .horizons
            .iter()
            .map(|steps| steps * malaga.step_minutes)
            .collect();
        assert_eq!(minutes, [15, 60, 1_440]);
        assert_eq!(malaga.window_days, Some(91));
        assert!(!malaga.same_day);
        assert_eq!(Preset::of_source("birmingham"), Some(Preset::Birmingham));
        assert_eq!(Preset::of_source("csv-town"), None);
        assert_eq!(Preset::Birmingham.config(), BacktestConfig::birmingham());
    }

    #[test]
    fn the_simulated_city_tests_its_last_week() {
        let first = NaiveDate::from_ymd_opt(2025, 3, 3).expect("valid date");
        let city = simulated_city("simulated", first, 28);
        assert_eq!(city.test_start, first + Days::new(21));
        assert_eq!(city.test_end, first + Days::new(27));
        assert_eq!(
            city.horizons.last().map(|steps| steps * 15),
            Some(7 * 24 * 60)
        );
    }

    #[test]
    fn a_data_sets_source_names_its_preset_and_an_empty_request_a_valid_cap() {
        for preset in [Preset::Birmingham, Preset::Malaga] {
            assert_eq!(Preset::of_source(preset.source()), Some(preset));
            assert_eq!(preset.config().source, preset.source());
        }
        assert_eq!(
            ProtocolRequest::default().max_training_rows,
            BacktestConfig::birmingham().max_training_rows
        );
    }

    #[test]
    fn horizons_are_labelled_in_hours_and_minutes() {
        assert_eq!(horizon_label(15), "15 min");
        assert_eq!(horizon_label(60), "1h");
        assert_eq!(horizon_label(90), "1h30");
        assert_eq!(horizon_label(1_440), "24h");
    }

    #[test]
    fn resolve_errors_say_what_to_do() {
        let error = ResolveError::HorizonNotMultiple {
            minutes: 45,
            step_minutes: 30,
        };
        assert_eq!(
            error.to_string(),
            "horizon 45 min is not a multiple of the 30-minute step"
        );
        assert!(
            ResolveError::SeveralSources("a, b".into())
                .to_string()
                .contains("--source")
        );
    }

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
