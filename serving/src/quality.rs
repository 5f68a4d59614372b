//! Live accuracy: the server scores the forecasts it issued against the actuals it sees later.
//!
//! A backtest says how good a model was; this says how good it is now, on today's streams. Every
//! forecast a lot's answer carries is kept ([`QualityMonitor::issue`]: per lot, one entry per
//! origin grid instant, the last one issued for it, since a late session event can re-forecast the
//! same origin) for as long as the longest horizon. When the lot's final value at a grid instant
//! arrives ([`QualityMonitor::observe`]), every horizon whose target is that instant is scored: the
//! absolute error of the rate and whether the 80% interval covered it. Scores are kept a day, in
//! time order, so the rolling figures of the last hour and the last day are sums over a suffix
//! ([`QualityMonitor::summary`]).
//!
//! Storage is compact and bounded: an issued forecast is an origin and three `f32` per horizon
//! (rate, 80% interval), a score a target instant, an `f32` error and a flag; a lot on a 5-minute
//! grid with a 7-day longest horizon holds 2,016 origins (about 190 KB with 8 horizons) and a day of
//! scores (about 37 KB).
//!
//! **Drift.** Each lot is held to a reference per horizon ([`LotReference`]): its own backtest MAE
//! at the same local hour of the same kind of day when the model file has it
//! ([`parkcast_inference::reference`]), else its whole-day backtest MAE, else the city's. A lot
//! drifts at a horizon when, in each of the last [`QualityConfig::drift_hours`] whole hours, it has
//! at least [`QualityConfig::min_pairs_per_hour`] scores and their MAE is
//! - above [`QualityConfig::drift_factor`] times its reference for that hour, times the lot's
//!   spread of daily MAE in the backtest (a lot whose error varied much from day to day, such as
//!   a commuter garage whose office workers come or stay home together, is allowed the bad days
//!   the backtest saw it have), times the median lot's ratio of live MAE to reference in the same
//!   hour where that is above 1 (a wet Friday that makes every lot worse is the city's hour, not
//!   a lot's drift), and
//! - above the city's backtest MAE at that horizon (a lot forecast almost perfectly at night is not
//!   named for an error of a car or two).
//!
//! Persistence is the point: a noisy lot has bad hours, not bad hours in a row, while a lot whose
//! demand shifted is bad every hour. The hour of day is the other: errors gather in each lot's own
//! busy hours (a commuter garage at 08:00, a street zone at lunch), so a day average as the
//! reference names every lot in its rush hour and a shifted lot late. The city as a whole drifts
//! when its MAE over the last 24 whole hours (the day's shape averaged out as in the backtest) is
//! above the factor times the backtest's. The alarm ([`QualityMonitor::drift`]) names every
//! drifting lot and horizon.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::Timelike;
use chrono_tz::Tz;
use parkcast_features::calendar::HolidayCalendar;
use parkcast_features::conformal::{
    ADAPTIVE_LEVELS, AdaptiveTracker, CalibrationScope, adaptive_class,
};
use parkcast_features::vector::local_time;
use parkcast_inference::artifact::LotForecast;
use parkcast_inference::reference::reference_index;

/// One hour, ms.
pub const HOUR_MS: i64 = 3_600_000;

/// One day, ms: how long scores are kept.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// The rolling windows reported, with their labels.
pub const WINDOWS: [(&str, i64); 2] = [("hour", HOUR_MS), ("day", DAY_MS)];

/// How the monitor judges drift (the `[quality]` section of the server's configuration).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// Live MAE above this many times the backtest's is bad.
    pub drift_factor: f64,
    /// Whole hours in a row that must all be bad.
    pub drift_hours: u32,
    /// Scores an hour needs to be judged (a lot on a 5-minute grid gets 12 per horizon).
    pub min_pairs_per_hour: usize,
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            drift_factor: 1.5,
            drift_hours: 3,
            min_pairs_per_hour: 6,
        }
    }
}

/// The 80% and the 95% interval of one horizon's forecast, as (low, high) rates.
pub type IssuedIntervals = [(f64, f64); ADAPTIVE_LEVELS];

/// A forecast as kept until its targets are known.
#[derive(Debug, Clone)]
struct Issued {
    origin_ms: i64,
    /// Per horizon: rate, 80% low, 80% high, 95% low, 95% high (NaN: none).
    values: Box<[[f32; 5]]>,
}

/// One scored forecast.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score {
    target_ms: i64,
    error: f32,
    /// `None`: the forecast had no interval.
    covered: Option<bool>,
}

#[derive(Debug, Clone)]
struct LotQuality {
    issued: VecDeque<Issued>,
    /// Per horizon, in target order.
    scores: Vec<VecDeque<Score>>,
    /// Per horizon, the sums of the scores of each hour (hour `b` holds the targets in `(b, b + 1]`
    /// hours since the epoch, the windows' own half-open side), oldest first: the report reads a
    /// window's whole hours from here and scans only its partial ends, so its cost per lot is ~24
    /// sums and two partial hours instead of every score of the day (12.7 us per lot every 10 s,
    /// under the scorer's lock, before).
    hours: Vec<VecDeque<(i64, Tally)>>,
    /// Scores with targets at or before this were dropped: an hour reaching back to it is read from
    /// `scores` (its sum would still count them).
    dropped_until_ms: i64,
}

impl LotQuality {
    fn new(horizons: usize) -> Self {
        LotQuality {
            issued: VecDeque::new(),
            scores: vec![VecDeque::new(); horizons],
            hours: vec![VecDeque::new(); horizons],
            dropped_until_ms: i64::MIN,
        }
    }

    /// Holds a score of horizon `index` (targets in time order).
    fn push(&mut self, index: usize, score: Score) {
        let (Some(scores), Some(hours)) = (self.scores.get_mut(index), self.hours.get_mut(index))
        else {
            return;
        };
        scores.push_back(score);
        let hour = (score.target_ms - 1).div_euclid(HOUR_MS);
        match hours.back_mut() {
            Some((last, tally)) if *last == hour => tally.add(&score),
            _ => {
                let mut tally = Tally::default();
                tally.add(&score);
                hours.push_back((hour, tally));
            }
        }
    }

    /// Drops the scores with targets at or before `cutoff_ms`, and the hours with none left.
    fn drop_until(&mut self, cutoff_ms: i64) {
        self.dropped_until_ms = self.dropped_until_ms.max(cutoff_ms);
        for scores in &mut self.scores {
            while scores
                .front()
                .is_some_and(|score| score.target_ms <= cutoff_ms)
            {
                scores.pop_front();
            }
        }
        for hours in &mut self.hours {
            while hours
                .front()
                .is_some_and(|(hour, _)| (hour + 1) * HOUR_MS <= cutoff_ms)
            {
                hours.pop_front();
            }
        }
    }

    /// The scores of horizon `index` with targets in `(from_ms, until_ms]`.
    fn tally(&self, index: usize, from_ms: i64, until_ms: i64) -> Tally {
        let (Some(scores), Some(hours)) = (self.scores.get(index), self.hours.get(index)) else {
            return Tally::default();
        };
        // Whole hours inside the window whose scores are all still held: `first..=last`.
        let first = from_ms
            .max(self.dropped_until_ms)
            .saturating_add(HOUR_MS - 1)
            .div_euclid(HOUR_MS);
        let last = until_ms.div_euclid(HOUR_MS) - 1;
        if first > last {
            return scan(scores, from_ms, until_ms);
        }
        let start = hours.partition_point(|(hour, _)| *hour < first);
        let whole = hours
            .range(start..)
            .take_while(|(hour, _)| *hour <= last)
            .fold(Tally::default(), |sum, (_, tally)| sum.plus(*tally));
        // The partial ends, when there are any (the drift's whole hours have none).
        let mut tally = whole;
        if from_ms < first * HOUR_MS {
            tally = tally.plus(scan(scores, from_ms, first * HOUR_MS));
        }
        if (last + 1) * HOUR_MS < until_ms {
            tally = tally.plus(scan(scores, (last + 1) * HOUR_MS, until_ms));
        }
        tally
    }
}

/// The scores with targets in `(from_ms, until_ms]`.
fn scan(scores: &VecDeque<Score>, from_ms: i64, until_ms: i64) -> Tally {
    let start = scores.partition_point(|score| score.target_ms <= from_ms);
    scores
        .range(start..)
        .take_while(|score| score.target_ms <= until_ms)
        .fold(Tally::default(), |mut tally, score| {
            tally.add(score);
            tally
        })
}

/// Sums over some scores.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tally {
    /// Scores.
    pub pairs: u64,
    /// Sum of absolute errors of the rate.
    pub error_sum: f64,
    /// Scores whose forecast had an 80% interval.
    pub with_interval: u64,
    /// Of them, covered.
    pub covered: u64,
}

impl Tally {
    fn add(&mut self, score: &Score) {
        self.pairs += 1;
        self.error_sum += f64::from(score.error);
        if let Some(covered) = score.covered {
            self.with_interval += 1;
            self.covered += u64::from(covered);
        }
    }

    fn plus(mut self, other: Tally) -> Tally {
        self.pairs += other.pairs;
        self.error_sum += other.error_sum;
        self.with_interval += other.with_interval;
        self.covered += other.covered;
        self
    }

    /// Mean absolute error (NaN without scores).
    pub fn mae(&self) -> f64 {
        if self.pairs == 0 {
            f64::NAN
        } else {
            self.error_sum / self.pairs as f64
        }
    }

    /// Share of interval forecasts covered (NaN without any).
    pub fn coverage(&self) -> f64 {
        if self.with_interval == 0 {
            f64::NAN
        } else {
            self.covered as f64 / self.with_interval as f64
        }
    }
}

/// Live accuracy of one horizon over one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowQuality {
    /// The horizon, minutes.
    pub horizon_minutes: u32,
    /// The window's label ([`WINDOWS`]).
    pub window: &'static str,
    /// City-wide.
    pub city: Tally,
    /// Per lot, by lot index.
    pub lots: Vec<Tally>,
    /// The backtest's MAE at this horizon (NaN: unknown).
    pub backtest_mae: f64,
}

/// A lot (or the city) whose live MAE stayed above the backtest's.
#[derive(Debug, Clone, PartialEq)]
pub struct Drifting {
    /// The lot index; `None` for the city as a whole.
    pub lot: Option<usize>,
    /// The horizon, minutes.
    pub horizon_minutes: u32,
    /// The MAE of the last whole hour (of the last 24 for the city).
    pub live_mae: f64,
    /// The backtest MAE it was held to: the lot's reference for that hour, or the city's.
    pub backtest_mae: f64,
}

/// What one lot's live error is held to, per horizon.
#[derive(Debug, Clone)]
pub struct LotReference {
    /// Per horizon: the lot's backtest MAE by day type and local hour of the target
    /// ([`reference_index`] order), where the model file has it.
    pub hourly: Vec<Option<Arc<[f32]>>>,
    /// Per horizon: the lot's whole-day backtest MAE (NaN: unknown).
    pub whole_day: Vec<f64>,
    /// Per horizon: the spread of the lot's daily backtest MAE, how much worse than its reference
    /// an ordinary bad day of the lot is (NaN: unknown, taken as 1).
    pub spread: Vec<f64>,
    /// The lot's time zone and holiday calendar, which say the day type and hour of an instant.
    pub clock: Option<(Tz, Arc<HolidayCalendar>)>,
}

impl LotReference {
    /// A lot with no figures of its own (held to the city's).
    pub fn unknown(horizons: usize) -> Self {
        LotReference {
            hourly: vec![None; horizons],
            whole_day: vec![f64::NAN; horizons],
            spread: vec![f64::NAN; horizons],
            clock: None,
        }
    }

    /// Where the hour starting at `hour_start_ms` reads an hourly reference: the day type and
    /// local hour at the hour's middle (the local hour of a zone with a half-hour offset).
    fn slot(&self, hour_start_ms: i64) -> Option<usize> {
        let (timezone, holidays) = self.clock.as_ref()?;
        let local = local_time(*timezone, hour_start_ms + HOUR_MS / 2);
        Some(reference_index(
            holidays.day_type(local.date()),
            local.hour(),
        ))
    }

    /// The reference at horizon `index` for an hour whose [`LotReference::slot`] is `slot` (NaN:
    /// unknown).
    fn at(&self, index: usize, slot: Option<usize>) -> f64 {
        if let (Some(Some(hourly)), Some(slot)) = (self.hourly.get(index), slot) {
            let mae = hourly.get(slot).copied().unwrap_or(f32::NAN);
            if mae.is_finite() && mae > 0.0 {
                return f64::from(mae);
            }
        }
        self.whole_day.get(index).copied().unwrap_or(f64::NAN)
    }

    /// The adaptive-conformal class of a target of the lot at `target_ms` (its local day type, or
    /// a public holiday; 0 without a calendar or in the pooled scope).
    fn adaptive_class(&self, target_ms: i64, scope: CalibrationScope) -> usize {
        let Some((timezone, holidays)) = self.clock.as_ref() else {
            return 0;
        };
        let date = local_time(*timezone, target_ms).date();
        adaptive_class(holidays.day_type(date), holidays.is_holiday(date), scope)
    }

    /// The spread at horizon `index` (1 where unknown).
    fn spread(&self, index: usize) -> f64 {
        let spread = self.spread.get(index).copied().unwrap_or(f64::NAN);
        if spread.is_finite() {
            spread.max(1.0)
        } else {
            1.0
        }
    }
}

/// The forecasts a server issued and how they turned out.
#[derive(Debug, Clone)]
pub struct QualityMonitor {
    horizons: Vec<u32>,
    backtest_mae: Vec<f64>,
    /// Per lot: what it is held to.
    references: Vec<LotReference>,
    config: QualityConfig,
    lots: Vec<LotQuality>,
    /// Adaptive conformal inference on the model's intervals, fed by this monitor's outcomes
    /// ([`QualityMonitor::with_adaptive`]).
    adaptive: Option<Adaptive>,
}

/// The monitor's adaptive conformal inference: a tracker per horizon and the classes' scope.
#[derive(Debug, Clone)]
struct Adaptive {
    trackers: Vec<AdaptiveTracker>,
    scope: CalibrationScope,
}

impl QualityMonitor {
    /// A monitor of `lots` lots for a model with `horizons` (minutes, ascending) whose backtest MAE
    /// per horizon is `backtest_mae` (NaN where unknown: never drifts).
    pub fn new(
        horizons: Vec<u32>,
        backtest_mae: Vec<f64>,
        lots: usize,
        config: QualityConfig,
    ) -> Self {
        let unknown = vec![LotReference::unknown(horizons.len()); lots];
        Self::with_references(horizons, backtest_mae, unknown, config)
    }

    /// The same, with each lot's own references (one per lot): a lot is then held to its own
    /// figures, so a lot that was always harder to forecast (a small one, whose rate moves in large
    /// steps), or harder at some hours, is not named for being itself.
    pub fn with_references(
        horizons: Vec<u32>,
        backtest_mae: Vec<f64>,
        references: Vec<LotReference>,
        config: QualityConfig,
    ) -> Self {
        let lots = references.len();
        let lot = LotQuality::new(horizons.len());
        QualityMonitor {
            backtest_mae,
            references,
            config,
            lots: vec![lot; lots],
            horizons,
            adaptive: None,
        }
    }

    /// The same, adapting its model's intervals: each scored target's coverage (whether the actual
    /// fell inside the 80% interval the forecast carried) feeds an
    /// [`AdaptiveTracker`] per horizon on a grid of `step_minutes`, by the target's class under
    /// `scope`, as the backtest's replay does; [`QualityMonitor::adapt`] applies the scales to a
    /// new forecast.
    pub fn with_adaptive(mut self, step_minutes: u32, scope: CalibrationScope) -> Self {
        self.adaptive = Some(Adaptive {
            trackers: vec![AdaptiveTracker::new(step_minutes); self.horizons.len()],
            scope,
        });
        self
    }

    /// Continues `other`'s adaptation (the model it monitored was replaced by this one's, or this
    /// one is shadowed beside it): its scales reflect how the city behaves against the intervals
    /// now (a holiday, a shift), which a new version meets just as well, and reactivating the same
    /// file then changes no answer. Only between monitors of the same horizons and classes.
    pub fn inherit_adaptive(&mut self, other: &QualityMonitor) {
        if let (Some(mine), Some(theirs)) = (&mut self.adaptive, &other.adaptive)
            && self.horizons == other.horizons
            && mine.scope == theirs.scope
        {
            mine.trackers.clone_from(&theirs.trackers);
        }
    }

    /// Multiplies each horizon's interval scale of a new forecast of `lot` (the lot's own scale,
    /// from the model file) by the adaptive scales of its target's class (left as it is without
    /// adaptation).
    pub fn adapt(&self, lot: usize, forecast: &mut LotForecast) {
        let (Some(adaptive), Some(reference)) = (&self.adaptive, self.references.get(lot)) else {
            return;
        };
        for horizon in &mut forecast.horizons {
            let Some(index) = self
                .horizons
                .iter()
                .position(|minutes| *minutes == horizon.horizon_minutes)
            else {
                continue;
            };
            let class = reference.adaptive_class(horizon.target_ms, adaptive.scope);
            horizon.interval_scale = adaptive.trackers[index]
                .scales()
                .scale(class)
                .then(horizon.interval_scale);
        }
    }

    /// Keeps the forecast a lot's answer carries, with each horizon's 80% interval (same order as
    /// its horizons). A later forecast of the same origin replaces it.
    pub fn issue(
        &mut self,
        lot: usize,
        forecast: &LotForecast,
        intervals: &[Option<IssuedIntervals>],
    ) {
        let horizons = &self.horizons;
        let Some(quality) = self.lots.get_mut(lot) else {
            return;
        };
        let values: Box<[[f32; 5]]> = horizons
            .iter()
            .map(|minutes| {
                let position = forecast
                    .horizons
                    .iter()
                    .position(|horizon| horizon.horizon_minutes == *minutes);
                match position {
                    Some(position) => {
                        let [(low_80, high_80), (low_95, high_95)] = intervals
                            .get(position)
                            .copied()
                            .flatten()
                            .unwrap_or([(f64::NAN, f64::NAN); 2]);
                        [
                            forecast.horizons[position].rate,
                            low_80,
                            high_80,
                            low_95,
                            high_95,
                        ]
                        .map(|value| value as f32)
                    }
                    None => [f32::NAN; 5],
                }
            })
            .collect();
        let issued = Issued {
            origin_ms: forecast.origin_ms,
            values,
        };
        match quality.issued.back() {
            Some(last) if last.origin_ms == issued.origin_ms => {
                *quality.issued.back_mut().expect("checked above") = issued;
            }
            Some(last) if last.origin_ms > issued.origin_ms => {
                // An older origin than one already kept: a replayed input; keep the newer.
            }
            _ => quality.issued.push_back(issued),
        }
    }

    /// Scores every kept forecast of `lot` whose target is `instant_ms`, against the lot's actual
    /// rate then, and drops what is too old to be scored or reported.
    pub fn observe(&mut self, lot: usize, instant_ms: i64, actual_rate: f64) {
        let longest_ms = self
            .horizons
            .last()
            .map_or(0, |minutes| i64::from(*minutes) * 60_000);
        let Some(quality) = self.lots.get_mut(lot) else {
            return;
        };
        if actual_rate.is_finite() {
            for (index, minutes) in self.horizons.iter().enumerate() {
                let origin_ms = instant_ms - i64::from(*minutes) * 60_000;
                let Ok(position) = quality
                    .issued
                    .binary_search_by_key(&origin_ms, |issued| issued.origin_ms)
                else {
                    continue;
                };
                let [rate, low_80, high_80, low_95, high_95] =
                    quality.issued[position].values[index];
                if !rate.is_finite() {
                    continue;
                }
                let inside = |low: f32, high: f32| {
                    (low.is_finite() && high.is_finite())
                        .then(|| f64::from(low) <= actual_rate && actual_rate <= f64::from(high))
                };
                let covered = inside(low_80, high_80);
                let covered_95 = inside(low_95, high_95);
                let scores = &mut quality.scores[index];
                if scores
                    .back()
                    .is_some_and(|last| last.target_ms >= instant_ms)
                {
                    // Each target is scored once, in time order.
                    continue;
                }
                if let (Some(adaptive), Some(covered), Some(covered_95), Some(reference)) = (
                    &mut self.adaptive,
                    covered,
                    covered_95,
                    self.references.get(lot),
                ) {
                    let class = reference.adaptive_class(instant_ms, adaptive.scope);
                    adaptive.trackers[index].record(instant_ms, class, [!covered, !covered_95]);
                }
                quality.push(
                    index,
                    Score {
                        target_ms: instant_ms,
                        error: (f64::from(rate) - actual_rate).abs() as f32,
                        covered,
                    },
                );
            }
        }
        while quality
            .issued
            .front()
            .is_some_and(|issued| issued.origin_ms < instant_ms - longest_ms)
        {
            quality.issued.pop_front();
        }
        quality.drop_until(instant_ms - DAY_MS);
    }

    /// The horizons judged, minutes.
    pub fn horizons(&self) -> &[u32] {
        &self.horizons
    }

    /// What lot `lot` is held to at horizon `index` in the hour starting at `hour_start_ms`: its
    /// own backtest MAE for that day type and local hour, else over the day (NaN: unknown, the
    /// city's then).
    pub fn reference(&self, lot: usize, index: usize, hour_start_ms: i64) -> f64 {
        self.references.get(lot).map_or(f64::NAN, |reference| {
            reference.at(index, reference.slot(hour_start_ms))
        })
    }

    /// Forecasts kept, scores held and hourly sums held, for the memory figure.
    pub fn held(&self) -> (usize, usize, usize) {
        self.lots
            .iter()
            .fold((0, 0, 0), |(issued, scores, hours), lot| {
                (
                    issued + lot.issued.len(),
                    scores + lot.scores.iter().map(VecDeque::len).sum::<usize>(),
                    hours + lot.hours.iter().map(VecDeque::len).sum::<usize>(),
                )
            })
    }

    /// Each lot's scores of horizon `index` with targets in `(from_ms, until_ms]`.
    fn lot_tallies(&self, index: usize, from_ms: i64, until_ms: i64) -> Vec<Tally> {
        self.lots
            .iter()
            .map(|lot| lot.tally(index, from_ms, until_ms))
            .collect()
    }

    /// Live accuracy per horizon over the windows ending at `now_ms`, city-wide and per lot.
    pub fn summary(&self, now_ms: i64) -> Vec<WindowQuality> {
        let mut out = Vec::new();
        for (index, minutes) in self.horizons.iter().enumerate() {
            for (window, length_ms) in WINDOWS {
                let lots = self.lot_tallies(index, now_ms - length_ms, now_ms);
                out.push(WindowQuality {
                    horizon_minutes: *minutes,
                    window,
                    city: lots
                        .iter()
                        .fold(Tally::default(), |sum, lot| sum.plus(*lot)),
                    lots,
                    backtest_mae: self.backtest_mae.get(index).copied().unwrap_or(f64::NAN),
                });
            }
        }
        out
    }

    /// The lots (and the city) drifting at `now_ms`, judged on whole hours (see the module), with
    /// the MAE of the last whole hour (of the last 24 for the city).
    pub fn drift(&self, now_ms: i64) -> Vec<Drifting> {
        let config = self.config;
        let hours = i64::from(config.drift_hours.max(1));
        let last_whole_hour = now_ms.div_euclid(HOUR_MS) * HOUR_MS;
        // Per hour judged (newest first), where each lot's hourly references read: one time-zone
        // conversion per lot and hour, whatever the horizons.
        let slots: Vec<Vec<Option<usize>>> = (0..hours)
            .map(|back| {
                let start = last_whole_hour - (back + 1) * HOUR_MS;
                self.references.iter().map(|lot| lot.slot(start)).collect()
            })
            .collect();
        let mut out = Vec::new();
        for (index, minutes) in self.horizons.iter().enumerate() {
            let reference = self.backtest_mae.get(index).copied().unwrap_or(f64::NAN);
            if !(reference.is_finite() && reference > 0.0) {
                continue;
            }
            let limit = config.drift_factor * reference;
            // The city's 24 whole hours, each scored (a young server has no day to judge yet).
            let city_hours: Vec<Tally> = (0..24)
                .map(|back| {
                    let until = last_whole_hour - back * HOUR_MS;
                    self.lot_tallies(index, until - HOUR_MS, until)
                        .into_iter()
                        .fold(Tally::default(), Tally::plus)
                })
                .collect();
            let whole_day = city_hours
                .iter()
                .all(|hour| hour.pairs as usize >= config.min_pairs_per_hour);
            let day = city_hours.into_iter().fold(Tally::default(), Tally::plus);
            if whole_day && day.mae() > limit {
                out.push(Drifting {
                    lot: None,
                    horizon_minutes: *minutes,
                    live_mae: day.mae(),
                    backtest_mae: reference,
                });
            }
            // Per hour (newest first): each lot's bar, and its tally.
            let by_hour: Vec<(Vec<f64>, Vec<Tally>)> = (0..hours)
                .map(|back| {
                    let until = last_whole_hour - back * HOUR_MS;
                    let lots = self.lot_tallies(index, until - HOUR_MS, until);
                    let own: Vec<f64> = self
                        .references
                        .iter()
                        .zip(&slots[back as usize])
                        .map(|(lot, slot)| {
                            let mae = lot.at(index, *slot);
                            if mae.is_finite() && mae > 0.0 {
                                mae
                            } else {
                                reference
                            }
                        })
                        .collect();
                    let mut ratios: Vec<f64> = lots
                        .iter()
                        .zip(&own)
                        .filter(|(tally, _)| tally.pairs as usize >= config.min_pairs_per_hour)
                        .map(|(tally, own)| tally.mae() / own)
                        .collect();
                    ratios.sort_by(f64::total_cmp);
                    // The lower median: with two lots, the better one.
                    let median = ratios
                        .get(ratios.len().saturating_sub(1) / 2)
                        .copied()
                        .unwrap_or(1.0)
                        .max(1.0);
                    let bars = own
                        .iter()
                        .zip(&self.references)
                        .map(|(own, lot)| {
                            (config.drift_factor * own * lot.spread(index) * median).max(reference)
                        })
                        .collect();
                    (bars, lots)
                })
                .collect();
            for lot in 0..self.lots.len() {
                let drifts = by_hour.iter().all(|(bars, lots)| {
                    let tally = &lots[lot];
                    tally.pairs as usize >= config.min_pairs_per_hour && tally.mae() > bars[lot]
                });
                if drifts {
                    let held_to = self.references[lot].at(index, slots[0][lot]);
                    out.push(Drifting {
                        lot: Some(lot),
                        horizon_minutes: *minutes,
                        live_mae: by_hour[0].1[lot].mae(),
                        backtest_mae: if held_to.is_finite() {
                            held_to
                        } else {
                            reference
                        },
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use parkcast_features::conformal::IntervalScale;
    use parkcast_inference::artifact::HorizonForecast;

    use super::*;

    const STEP_MS: i64 = 5 * 60_000;

    #[test]
    fn hourly_sums_give_every_window_what_a_scan_of_its_scores_gives() {
        // Scores every 5 min for three days, some steps missing, some without an interval; the
        // lot drops what is older than a day as the monitor does.
        let mut lot = LotQuality::new(1);
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let start = 1_700_000_000_000_i64 - 1_700_000_000_000 % HOUR_MS + 7 * 60_000;
        let mut now = start;
        for step in 0..3 * 288 {
            now = start + step * STEP_MS;
            if next() % 7 == 0 {
                continue;
            }
            let score = Score {
                target_ms: now,
                error: (next() % 1000) as f32 / 1e4,
                covered: (next() % 5 != 0).then(|| next() % 4 != 0),
            };
            lot.push(0, score);
            lot.drop_until(now - DAY_MS);
            if step % 37 != 0 {
                continue;
            }
            // The report's windows (last hour and day, whole hours back) and arbitrary ones,
            // also reaching before what is held.
            let mut windows = vec![
                (now - HOUR_MS, now),
                (now - DAY_MS, now),
                (
                    now.div_euclid(HOUR_MS) * HOUR_MS - HOUR_MS,
                    now.div_euclid(HOUR_MS) * HOUR_MS,
                ),
            ];
            for _ in 0..20 {
                let from = now - (next() % (2 * DAY_MS as u64)) as i64;
                let until = from + (next() % (DAY_MS as u64)) as i64;
                windows.push((from, until));
            }
            for (from, until) in windows {
                let expected = scan(&lot.scores[0], from, until);
                let found = lot.tally(0, from, until);
                assert_eq!(
                    (found.pairs, found.with_interval, found.covered),
                    (expected.pairs, expected.with_interval, expected.covered),
                    "window ({from}, {until}] at {now}"
                );
                assert!((found.error_sum - expected.error_sum).abs() < 1e-9);
            }
        }
        assert!(lot.hours[0].len() <= 25, "a day of hours is held, not more");
        assert!(now > start);
    }

    fn forecast(origin_ms: i64, rate: f64) -> LotForecast {
        LotForecast {
            origin_ms,
            capacity: 100.0,
            horizons: [15, 60]
                .iter()
                .map(|minutes| HorizonForecast {
                    horizon_minutes: *minutes,
                    target_ms: origin_ms + i64::from(*minutes) * 60_000,
                    rate,
                    interval_scale: IntervalScale::ONE,
                })
                .collect(),
        }
    }

    const LOTS: usize = 10;

    /// Runs `hours` of ten lots on a 5-minute grid: lot 0 forecast with error `error(t)`, the
    /// others always off by 0.02; intervals of +-0.05.
    fn run(hours: i64, error_of_lot0: impl Fn(i64) -> f64) -> (QualityMonitor, i64) {
        run_with(
            hours,
            |lot, t| if lot == 0 { error_of_lot0(t) } else { 0.02 },
        )
    }

    /// Runs `hours` of ten lots, lot `l` forecast at `t` with error `error(l, t)`.
    fn run_with(hours: i64, error: impl Fn(usize, i64) -> f64) -> (QualityMonitor, i64) {
        let monitor = QualityMonitor::new(
            vec![15, 60],
            vec![0.03, 0.03],
            LOTS,
            QualityConfig::default(),
        );
        feed(monitor, hours, error)
    }

    /// Feeds `monitor` `hours` of its lots, lot `l` forecast at `t` with error `error(l, t)`.
    fn feed(
        mut monitor: QualityMonitor,
        hours: i64,
        error: impl Fn(usize, i64) -> f64,
    ) -> (QualityMonitor, i64) {
        let steps = hours * HOUR_MS / STEP_MS;
        let actual = 0.5;
        let mut now = 0;
        for step in 0..steps {
            now = step * STEP_MS;
            for lot in 0..LOTS {
                monitor.observe(lot, now, actual);
                let error = error(lot, now);
                let rate = actual + error;
                monitor.issue(
                    lot,
                    &forecast(now, rate),
                    &[Some([(rate - 0.05, rate + 0.05), (rate - 0.1, rate + 0.1)]); 2],
                );
            }
        }
        (monitor, now)
    }

    #[test]
    fn adaptation_widens_intervals_that_miss_and_narrows_those_that_always_cover() {
        let adaptive = || {
            QualityMonitor::new(
                vec![15, 60],
                vec![0.03, 0.03],
                LOTS,
                QualityConfig::default(),
            )
            .with_adaptive(5, CalibrationScope::DayType)
        };
        let scales = |monitor: &QualityMonitor, of: fn(IntervalScale) -> f64| {
            let mut next = forecast(0, 0.5);
            monitor.adapt(0, &mut next);
            next.horizons
                .iter()
                .map(|horizon| of(horizon.interval_scale))
                .collect::<Vec<_>>()
        };
        let scale = |monitor: &QualityMonitor| scales(monitor, |scale| scale.central);
        let wide_scale = |monitor: &QualityMonitor| scales(monitor, |scale| scale.wide);
        // Half the lots forecast 0.08 off with +-0.05 80% intervals: half the targets missed, more
        // than the 20% an 80% interval may miss; their +-0.1 95% intervals miss none.
        let (missing, _) = feed(adaptive(), 3, |lot, _| if lot < 5 { 0.08 } else { 0.0 });
        // Every target inside: fewer misses than the 20% allowed.
        let (covering, _) = feed(adaptive(), 3, |_, _| 0.0);
        // Three hours of 5-minute steps, less the steps before the first targets and the last
        // instant waiting: about 2.75 h x 0.3 x (0.5 - 0.2) at 15 min.
        let widened = scale(&missing);
        assert!(
            widened.iter().all(|s| *s > 1.15 && *s < 1.35),
            "{widened:?}"
        );
        let narrowed = scale(&covering);
        assert!(
            narrowed.iter().all(|s| *s < 0.9 && *s > 0.8),
            "{narrowed:?}"
        );
        // The 95% intervals follow their own misses (none, in both runs: 2.75 h x 0.3 x -0.05).
        for monitor in [&missing, &covering] {
            let wide = wide_scale(monitor);
            assert!(wide.iter().all(|s| *s < 0.98 && *s > 0.94), "{wide:?}");
        }
        // A monitor that does not adapt leaves forecasts as they are; a new monitor of the same
        // horizons continues another's adaptation.
        let (plain, _) = run(3, |_| 0.08);
        assert_eq!(scale(&plain), [1.0, 1.0]);
        let mut successor = adaptive();
        successor.inherit_adaptive(&missing);
        assert_eq!(scale(&successor), widened);
    }

    #[test]
    fn scores_match_the_forecasts_and_actuals() {
        let (monitor, now) = run(6, |_| 0.04);
        let summary = monitor.summary(now);
        let hour_15 = summary
            .iter()
            .find(|quality| quality.horizon_minutes == 15 && quality.window == "hour")
            .expect("15 min, last hour");
        // 12 targets in the last hour per lot.
        assert_eq!(hour_15.lots[0].pairs, 12);
        assert!((hour_15.lots[0].mae() - 0.04).abs() < 1e-6);
        assert!((hour_15.lots[1].mae() - 0.02).abs() < 1e-6);
        assert!((hour_15.city.mae() - (0.04 + 9.0 * 0.02) / 10.0).abs() < 1e-6);
        assert_eq!(hour_15.lots[0].coverage(), 1.0);
        let day_60 = summary
            .iter()
            .find(|quality| quality.horizon_minutes == 60 && quality.window == "day")
            .expect("60 min, last day");
        // 6 hours of targets, the first hour has no origin an hour before it.
        assert_eq!(
            day_60.lots[0].pairs as i64,
            (6 * HOUR_MS - HOUR_MS) / STEP_MS
        );
        // Held forecasts stop at the longest horizon.
        let (issued, _, _) = monitor.held();
        assert_eq!(issued as i64, LOTS as i64 * (HOUR_MS / STEP_MS + 1));
    }

    #[test]
    fn a_lot_that_stays_off_drifts_and_is_named() {
        let shift_at = 4 * HOUR_MS;
        let (monitor, now) = run(10, |t| if t >= shift_at { 0.12 } else { 0.01 });
        let drifting = monitor.drift(now);
        assert!(
            drifting
                .iter()
                .any(|drift| drift.lot == Some(0) && drift.horizon_minutes == 15),
            "{drifting:?}"
        );
        assert!(
            drifting
                .iter()
                .all(|drift| drift.lot.is_none_or(|lot| lot == 0)),
            "{drifting:?}"
        );
        // Before the shift had lasted the drift hours, nothing.
        let (monitor, now) = run(5, |t| if t >= shift_at { 0.12 } else { 0.01 });
        assert!(monitor.drift(now).is_empty());
    }

    #[test]
    fn a_noisy_lot_does_not_drift() {
        // Very wrong one hour in three: bad hours (two in a row at 15 minutes, whose targets in an
        // hour come partly from the hour before), never three in a row.
        let (monitor, now) = run(12, |t| if (t / HOUR_MS) % 3 == 0 { 0.3 } else { 0.0 });
        assert!(monitor.drift(now).is_empty(), "{:?}", monitor.drift(now));
        // Yet over the day it was well above the backtest's 0.03.
        let summary = monitor.summary(now);
        assert!(
            summary
                .iter()
                .any(|quality| quality.window == "day" && quality.lots[0].mae() > 0.06)
        );
    }

    #[test]
    fn a_rush_hour_of_every_lot_is_no_lots_drift_but_a_bad_day_is_the_citys() {
        // Every lot twice the backtest's error for 5 hours a day: no lot is worse than the others.
        let rush = |_: usize, t: i64| if (t / HOUR_MS) % 24 < 5 { 0.06 } else { 0.02 };
        let (monitor, now) = run_with(6, rush);
        assert!(monitor.drift(now).is_empty(), "{:?}", monitor.drift(now));
        let (monitor, now) = run_with(30, rush);
        assert!(monitor.drift(now).is_empty(), "{:?}", monitor.drift(now));
        // The whole city off all day: the city drifts, no lot is named.
        let (monitor, now) = run_with(26, |_, _| 0.06);
        let drifting = monitor.drift(now);
        assert!(
            drifting.iter().any(|drift| drift.lot.is_none()),
            "{drifting:?}"
        );
        assert!(
            drifting.iter().all(|drift| drift.lot.is_none()),
            "{drifting:?}"
        );
    }

    fn monitor_with(references: Vec<LotReference>) -> QualityMonitor {
        QualityMonitor::with_references(
            vec![15, 60],
            vec![0.03, 0.03],
            references,
            QualityConfig::default(),
        )
    }

    #[test]
    fn a_lot_is_held_to_its_own_backtest_figure_too() {
        // Lot 0 is always off by 0.06: twice the city's backtest and three times the median lot.
        let error = |lot: usize, _: i64| if lot == 0 { 0.06 } else { 0.02 };
        let (monitor, now) = run_with(6, error);
        assert!(monitor.drift(now).iter().any(|drift| drift.lot == Some(0)));
        // It always was: its own backtest MAE was 0.05.
        let mut references = vec![LotReference::unknown(2); LOTS];
        references[0].whole_day = vec![0.05, 0.05];
        let (monitor, now) = feed(monitor_with(references), 6, error);
        assert!(monitor.drift(now).is_empty(), "{:?}", monitor.drift(now));
    }

    #[test]
    fn a_lot_whose_error_varied_from_day_to_day_is_allowed_its_bad_days() {
        // Lot 0 off by 0.08 all day, against its own 0.04: twice its figure.
        let error = |lot: usize, _: i64| if lot == 0 { 0.08 } else { 0.01 };
        let mut references = vec![LotReference::unknown(2); LOTS];
        references[0].whole_day = vec![0.04, 0.04];
        let (monitor, now) = feed(monitor_with(references.clone()), 6, error);
        assert!(monitor.drift(now).iter().any(|drift| drift.lot == Some(0)));
        // Its backtest days ranged so widely that a bad one was 1.5x its mean: 0.08 is within
        // 1.5 x 1.5 x 0.04 = 0.09.
        references[0].spread = vec![1.5, 1.5];
        let (monitor, now) = feed(monitor_with(references.clone()), 6, error);
        assert!(monitor.drift(now).is_empty(), "{:?}", monitor.drift(now));
        // Three times its figure is beyond even that.
        let worse = |lot: usize, _: i64| if lot == 0 { 0.12 } else { 0.01 };
        let (monitor, now) = feed(monitor_with(references), 6, worse);
        assert!(monitor.drift(now).iter().any(|drift| drift.lot == Some(0)));
    }

    /// Lot 0's reference: `busy` from 06:00 to 12:00 UTC on every day type, 0.01 otherwise.
    fn rush_hour_reference(busy: f32) -> LotReference {
        use parkcast_features::calendar::DayType;
        use parkcast_inference::reference::REFERENCE_LEN;
        let mut hourly = vec![0.01f32; REFERENCE_LEN];
        for day_type in DayType::ALL {
            for hour in 6..12 {
                hourly[reference_index(day_type, hour)] = busy;
            }
        }
        let calendar = HolidayCalendar::load(&"GB".parse().expect("an embedded region"));
        LotReference {
            hourly: vec![Some(hourly.clone().into()), Some(hourly.into())],
            whole_day: vec![0.02, 0.02],
            spread: vec![f64::NAN, f64::NAN],
            clock: Some((Tz::UTC, Arc::new(calendar))),
        }
    }

    #[test]
    fn each_hour_is_held_to_the_lots_own_figure_for_that_hour() {
        // Lot 0 is off by 0.08 from 06:00 to 12:00 every day, as its backtest said it would be.
        let busy = |lot: usize, t: i64| {
            let hour = (t / HOUR_MS) % 24;
            if lot == 0 && (6..12).contains(&hour) {
                0.08
            } else {
                0.01
            }
        };
        let mut references = vec![LotReference::unknown(2); LOTS];
        references[0] = rush_hour_reference(0.07);
        let (monitor, now) = feed(monitor_with(references.clone()), 12, busy);
        assert!(monitor.drift(now).is_empty(), "{:?}", monitor.drift(now));
        // Held to its whole-day figure instead, its rush hour is named.
        references[0].hourly = vec![None, None];
        let (monitor, now) = feed(monitor_with(references), 12, busy);
        assert!(monitor.drift(now).iter().any(|drift| drift.lot == Some(0)));
        // Off by 0.05 from 13:00, when its backtest said 0.01: named, and held to that hour's.
        let shifted = |lot: usize, t: i64| {
            if lot == 0 && t >= 13 * HOUR_MS {
                0.05
            } else {
                0.01
            }
        };
        let mut references = vec![LotReference::unknown(2); LOTS];
        references[0] = rush_hour_reference(0.07);
        let (monitor, now) = feed(monitor_with(references), 17, shifted);
        let drifting = monitor.drift(now);
        let named = drifting
            .iter()
            .find(|drift| drift.lot == Some(0) && drift.horizon_minutes == 15)
            .unwrap_or_else(|| panic!("lot 0 not named: {drifting:?}"));
        assert!((named.backtest_mae - 0.01).abs() < 1e-6, "{named:?}");
        // Yet below the city's backtest MAE (0.03), the same ratio is no drift.
        let small = |lot: usize, t: i64| {
            if lot == 0 && t >= 13 * HOUR_MS {
                0.025
            } else {
                0.01
            }
        };
        let mut references = vec![LotReference::unknown(2); LOTS];
        references[0] = rush_hour_reference(0.07);
        let (monitor, now) = feed(monitor_with(references), 17, small);
        assert!(monitor.drift(now).is_empty(), "{:?}", monitor.drift(now));
    }

    #[test]
    fn a_re_forecast_origin_is_scored_once_with_its_last_forecast() {
        let mut monitor = QualityMonitor::new(vec![15], vec![0.03], 1, QualityConfig::default());
        monitor.issue(0, &forecast(0, 0.9), &[None]);
        monitor.issue(0, &forecast(0, 0.6), &[None]);
        monitor.observe(0, 15 * 60_000, 0.5);
        monitor.observe(0, 15 * 60_000, 0.5);
        let summary = monitor.summary(15 * 60_000);
        assert_eq!(summary[0].city.pairs, 1);
        assert!((summary[0].city.mae() - 0.1).abs() < 1e-6);
        assert!(summary[0].city.coverage().is_nan());
    }
}
