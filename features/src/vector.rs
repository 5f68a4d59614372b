//! Forecast features: one definition, two paths.
//!
//! A forecast is issued at an *origin* grid instant `t` for a *target* `t + h * step`. Its feature
//! vector ([`FEATURE_NAMES`]) holds the lot's statics, the target's calendar, recent occupancy (lags,
//! the same time one day and one week back), the lot's weekday x time-of-day profile at origin and
//! target, how far today runs above or below that profile (now, over the last few steps, since the
//! first reading of the day, yesterday, last week), and recent arrivals and departures.
//!
//! - The **incremental path** ([`LotFeatureState`]) takes one grid value or one arrival/departure at a
//!   time and answers the vector "as of now" in O(1): what serving runs on live state.
//! - The **batch path** ([`batch`], behind the `polars` feature) computes the vectors of every origin of
//!   a lot's history at once with polars expressions: what the trainer runs.
//!
//! A parity test feeds the same real data through both and asserts equal vectors; a leakage test
//! perturbs data after the origin and asserts no vector changes.
//!
//! Point in time: everything in a vector at origin `t` comes from grid values at or before `t` (and
//! arrivals/departures at or before `t`), except the profile, which is *fitted state* ([`LotProfile`]):
//! it is fitted on the data before `fitted_until`, and every instant before that cut-off reads it with
//! its own observation left out (otherwise a training row sits inside its own profile and its deviation
//! from the profile shrinks, which teaches the model to trust deviations too little). Serving origins
//! are after the cut-off, where the profile is plain history.
//!
//! Floating point: the two paths add the same numbers in the same order where they can; polars sums
//! whole groups with its own summation, so the parity test allows 1e-12 of difference.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveDateTime, Timelike, Utc};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};

use crate::baseline::WeekdayProfile;
use crate::calendar::{HolidayCalendar, is_weekend};
use crate::grid::{GridSeries, GridValue};

#[cfg(feature = "polars")]
pub mod batch;

/// Number of features in a vector.
pub const FEATURE_COUNT: usize = 42;

/// Feature names, in vector order. Part of the model file's contract: [`FeatureParams::schema_hash`]
/// covers them.
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = [
    "lot_code",
    "lot_kind",
    "capacity",
    "horizon_minutes",
    "target_weekday",
    "target_minute_of_day",
    "target_day_off",
    "target_holiday",
    "target_days_to_holiday",
    "origin_minute_of_day",
    "rate_origin",
    "rate_lag1",
    "rate_lag2",
    "rate_lag4",
    "rate_same_time_day_back",
    "rate_same_time_week_back",
    "profile_target",
    "profile_origin",
    "profile_change",
    "persistence_plus_profile_change",
    "deviation_origin",
    "deviation_recent_mean",
    "deviation_today_mean",
    "minutes_since_first_reading_today",
    "deviation_yesterday_mean",
    "deviation_last_week_mean",
    "arrivals_recent_rate",
    "departures_recent_rate",
    "target_event_cars_rate",
    "target_days_from_holiday",
    "deviation_target_day1_back",
    "deviation_target_day2_back",
    "deviation_target_day3_back",
    "deviation_target_week_back",
    "deviation_daily_trend",
    "target_school_holiday",
    "target_bridge_day",
    "target_days_to_major_holiday",
    "target_days_from_major_holiday",
    "target_price_change_week",
    "deviation_change_1_step",
    "deviation_change_2_steps",
];

/// Index of each feature in a vector.
#[allow(missing_docs)]
pub mod index {
    pub const LOT_CODE: usize = 0;
    pub const LOT_KIND: usize = 1;
    pub const CAPACITY: usize = 2;
    pub const HORIZON_MINUTES: usize = 3;
    pub const TARGET_WEEKDAY: usize = 4;
    pub const TARGET_MINUTE_OF_DAY: usize = 5;
    pub const TARGET_DAY_OFF: usize = 6;
    pub const TARGET_HOLIDAY: usize = 7;
    pub const TARGET_DAYS_TO_HOLIDAY: usize = 8;
    pub const ORIGIN_MINUTE_OF_DAY: usize = 9;
    pub const RATE_ORIGIN: usize = 10;
    pub const RATE_LAG1: usize = 11;
    pub const RATE_LAG2: usize = 12;
    pub const RATE_LAG4: usize = 13;
    pub const RATE_DAY_BACK: usize = 14;
    pub const RATE_WEEK_BACK: usize = 15;
    pub const PROFILE_TARGET: usize = 16;
    pub const PROFILE_ORIGIN: usize = 17;
    pub const PROFILE_CHANGE: usize = 18;
    pub const PERSISTENCE_PLUS_PROFILE_CHANGE: usize = 19;
    pub const DEVIATION_ORIGIN: usize = 20;
    pub const DEVIATION_RECENT: usize = 21;
    pub const DEVIATION_TODAY: usize = 22;
    pub const MINUTES_SINCE_FIRST_TODAY: usize = 23;
    pub const DEVIATION_YESTERDAY: usize = 24;
    pub const DEVIATION_LAST_WEEK: usize = 25;
    pub const ARRIVALS_RECENT: usize = 26;
    pub const DEPARTURES_RECENT: usize = 27;
    pub const TARGET_EVENT_CARS: usize = 28;
    pub const TARGET_DAYS_FROM_HOLIDAY: usize = 29;
    pub const DEVIATION_TARGET_DAY1: usize = 30;
    pub const DEVIATION_TARGET_DAY2: usize = 31;
    pub const DEVIATION_TARGET_DAY3: usize = 32;
    pub const DEVIATION_TARGET_WEEK: usize = 33;
    pub const DEVIATION_DAILY_TREND: usize = 34;
    pub const TARGET_SCHOOL_HOLIDAY: usize = 35;
    pub const TARGET_BRIDGE_DAY: usize = 36;
    pub const TARGET_DAYS_TO_MAJOR_HOLIDAY: usize = 37;
    pub const TARGET_DAYS_FROM_MAJOR_HOLIDAY: usize = 38;
    pub const TARGET_PRICE_CHANGE_WEEK: usize = 39;
    pub const DEVIATION_CHANGE_1: usize = 40;
    pub const DEVIATION_CHANGE_2: usize = 41;
}

/// Days back from the target of the level features `deviation_target_*_back`: how far the same time
/// of day ran above its profile 1, 2, 3 and 7 days before the target (missing when that instant lies
/// after the origin). Trees cannot extrapolate a level they have not seen; these tell them how far
/// the recent days sat from the profile at the very time forecast.
pub const LEVEL_DAYS_BACK: [u32; 4] = [1, 2, 3, 7];

/// Rate lags, in grid steps before the origin.
pub const LAG_STEPS: [u32; 3] = [1, 2, 4];

/// Steps back of the deviation changes `deviation_change_*`: the deviation from the profile at the
/// origin minus the deviation 1 and 2 steps before, i.e. how fast today is drifting away from (or
/// back to) its profile. The rate lags carry the rate's slope, but a tree cannot subtract the
/// profile's slope from it; these hand it the difference (Birmingham's validation days: -2 to -3.5%).
pub const DEVIATION_CHANGE_STEPS: [u32; 2] = [1, 2];

/// A feature vector; missing inputs are NaN (tree models route them, linear models impute them).
pub type FeatureVector = [f64; FEATURE_COUNT];

/// Lot kinds with a stable code (an unknown kind has none).
pub const LOT_KINDS: [&str; 8] = [
    "garage",
    "commuter_garage",
    "shopping_centre",
    "street_zone",
    "nightlife",
    "stadium",
    "hospital",
    "park_and_ride",
];

/// The code of a lot kind, if it is one of [`LOT_KINDS`].
pub fn lot_kind_code(kind: &str) -> Option<u32> {
    LOT_KINDS
        .iter()
        .position(|known| *known == kind)
        .and_then(|position| u32::try_from(position).ok())
}

/// Errors of feature settings.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FeatureError {
    /// A setting is out of range.
    #[error("invalid feature parameter {name}: {reason}")]
    InvalidParam {
        /// The parameter.
        name: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The knobs of the feature definitions. They change what a vector means, so they are part of the
/// schema hash a model file records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeatureParams {
    /// Grid step, minutes (divides a day).
    pub step_minutes: u32,
    /// Steps in the "recent" deviation mean, the origin included.
    pub recent_steps: u32,
    /// Window of the recent arrival and departure counts, minutes (rounded to whole steps, at least one).
    pub flow_window_minutes: u32,
}

impl FeatureParams {
    /// The defaults on a grid of `step_minutes`.
    pub fn new(step_minutes: u32) -> Self {
        FeatureParams {
            step_minutes,
            recent_steps: 4,
            flow_window_minutes: 60,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), FeatureError> {
        let invalid = |name, reason| Err(FeatureError::InvalidParam { name, reason });
        if self.step_minutes == 0 || 1_440 % self.step_minutes != 0 {
            return invalid("step_minutes", "must be positive and divide a day");
        }
        if self.recent_steps == 0 || self.recent_steps > self.day_steps() {
            return invalid("recent_steps", "must be between 1 and the steps in a day");
        }
        if self.flow_window_minutes > 1_440 {
            return invalid("flow_window_minutes", "must be at most a day");
        }
        Ok(())
    }

    /// The step, ms.
    pub fn step_ms(&self) -> i64 {
        i64::from(self.step_minutes) * 60_000
    }

    /// Grid steps in a day.
    pub fn day_steps(&self) -> u32 {
        1_440 / self.step_minutes.max(1)
    }

    /// Grid steps in the arrival/departure window.
    pub fn flow_steps(&self) -> u32 {
        (self.flow_window_minutes / self.step_minutes.max(1)).max(1)
    }

    /// The longest horizon the features support: a week (the week-back value must not lie after the
    /// origin).
    pub fn max_horizon_steps(&self) -> u32 {
        7 * self.day_steps()
    }

    /// Steps of history the incremental state keeps: eight days and one step, enough for the week-back
    /// value at a week's horizon and for last week's deviation.
    pub fn history_steps(&self) -> usize {
        8 * self.day_steps() as usize + 1
    }

    /// Hex SHA-256 of the feature names, their order and these parameters: a model trained on one
    /// schema refuses to score another.
    pub fn schema_hash(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"parkcast-features/2\n");
        for name in FEATURE_NAMES {
            hasher.update(name.as_bytes());
            hasher.update(b"\n");
        }
        hasher.update(
            format!(
                "lags={LAG_STEPS:?} levels={LEVEL_DAYS_BACK:?} changes={DEVIATION_CHANGE_STEPS:?}\n"
            )
            .as_bytes(),
        );
        hasher.update(
            format!(
                "step={} recent={} flow={}\n",
                self.step_minutes, self.recent_steps, self.flow_window_minutes
            )
            .as_bytes(),
        );
        hex::encode(hasher.finalize())
    }

    /// The season offset, in steps, of the "same time `season_days` back" value for a horizon: the
    /// smallest multiple of the season that reaches back to the origin or before.
    pub fn season_back_steps(&self, horizon_steps: u32, season_days: u32) -> i64 {
        let season = i64::from(season_days * self.day_steps());
        let horizon = i64::from(horizon_steps);
        let multiples = (horizon + season - 1) / season;
        multiples.max(1) * season
    }
}

/// A scheduled special event at a lot (a match, a concert): known in advance, so it may describe the
/// target.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScheduledEvent {
    /// Start, ms.
    pub start_ms: i64,
    /// End, ms.
    pub end_ms: i64,
    /// Visitors expected to arrive by car.
    pub expected_cars: f64,
}

/// Hours before an event's start from which it counts (arrivals come early).
pub const EVENT_LEAD_MS: i64 = 3 * 3_600_000;
/// Hours after its end until which it counts (departures take a while).
pub const EVENT_TAIL_MS: i64 = 3_600_000;

/// An hourly tariff of a lot (from `dim_tariff`): a price per hour in a band of the local day on
/// some weekdays, over a validity range. Tariffs are published before they take effect (an
/// operator announces a price change), so the price at a target is known at the origin, like a
/// scheduled event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HourlyTariff {
    /// In force from, ms.
    pub valid_from_ms: i64,
    /// In force until, ms (exclusive); `None`: still in force.
    pub valid_until_ms: Option<i64>,
    /// The band's start, minutes after local midnight.
    pub band_starts_minute: u32,
    /// The band's end, minutes after local midnight (exclusive; 1440 is the end of the day). A band
    /// ending before it starts runs past midnight.
    pub band_ends_minute: u32,
    /// The weekdays the band applies on: bit `n` for the `n`th day from Monday.
    pub weekdays: u8,
    /// Price per hour, cents (positive).
    pub cents_per_hour: i64,
    /// Whether it is the lot's own price rather than its zone's (the lot's own wins).
    pub lot_own: bool,
}

/// Every weekday, for [`HourlyTariff::weekdays`].
pub const ALL_WEEKDAYS: u8 = 0b111_1111;

impl HourlyTariff {
    /// Whether the tariff applies at an instant whose local time is `local`.
    pub fn covers(&self, instant_ms: i64, local: NaiveDateTime) -> bool {
        let in_force = self.valid_from_ms <= instant_ms
            && self.valid_until_ms.is_none_or(|until| instant_ms < until);
        let weekday = self.weekdays & (1 << local.weekday().num_days_from_monday()) != 0;
        let minute = local.hour() * 60 + local.minute();
        let in_band = if self.band_starts_minute < self.band_ends_minute {
            (self.band_starts_minute..self.band_ends_minute).contains(&minute)
        } else {
            minute >= self.band_starts_minute || minute < self.band_ends_minute
        };
        in_force && weekday && in_band
    }
}

/// The hourly price in force at an instant under a lot's `tariffs` (its own and its zone's), cents:
/// the highest of its own that cover the instant, else the highest of its zone's.
pub fn price_in_force(tariffs: &[HourlyTariff], timezone: Tz, instant_ms: i64) -> Option<i64> {
    if tariffs.is_empty() {
        return None;
    }
    let local = local_time(timezone, instant_ms);
    let highest = |own: bool| {
        tariffs
            .iter()
            .filter(|tariff| tariff.lot_own == own && tariff.covers(instant_ms, local))
            .map(|tariff| tariff.cents_per_hour)
            .max()
    };
    highest(true).or_else(|| highest(false))
}

/// A week, ms: how far back [`LotContext::price_change_week`] compares.
pub const WEEK_MS: i64 = 7 * 24 * 3_600_000;

/// What a lot is, for its features.
#[derive(Debug, Clone)]
pub struct LotContext {
    /// The lot's code in the model (its position in the model's lot list); `None` for a lot the model
    /// has not seen.
    pub lot_code: Option<u32>,
    /// [`lot_kind_code`] of the lot's kind.
    pub kind_code: Option<u32>,
    /// The lot's time zone: calendars and profiles run on local time.
    pub timezone: Tz,
    /// The lot's public holidays.
    pub holidays: Arc<HolidayCalendar>,
    /// Whether the lot records sessions; without them the flow features are missing, not zero.
    pub has_sessions: bool,
    /// The lot's scheduled events (from `dim_event`), any order.
    pub events: Arc<[ScheduledEvent]>,
    /// The lot's hourly tariffs and its zone's (from `dim_tariff`), any order; empty where the city
    /// has none.
    pub tariffs: Arc<[HourlyTariff]>,
}

impl LotContext {
    /// Local wall-clock time of an instant.
    pub fn local(&self, instant_ms: i64) -> NaiveDateTime {
        local_time(self.timezone, instant_ms)
    }

    /// Cars expected by the events under way at an instant (from [`EVENT_LEAD_MS`] before their start
    /// to [`EVENT_TAIL_MS`] after their end).
    pub fn event_cars(&self, instant_ms: i64) -> f64 {
        self.events
            .iter()
            .filter(|event| {
                instant_ms >= event.start_ms - EVENT_LEAD_MS
                    && instant_ms < event.end_ms + EVENT_TAIL_MS
            })
            .map(|event| event.expected_cars)
            .sum()
    }

    /// The hourly price in force at an instant, cents: the highest of the lot's own tariffs that
    /// cover it, else the highest of its zone's; `None` where none does.
    pub fn price_at(&self, instant_ms: i64) -> Option<i64> {
        price_in_force(&self.tariffs, self.timezone, instant_ms)
    }

    /// `ln(price at the instant / price a week (168 hours) before it)`: what a price change did to
    /// the week the level features look back on. NaN where either price is unknown.
    pub fn price_change_week(&self, instant_ms: i64) -> f64 {
        match (
            self.price_at(instant_ms),
            self.price_at(instant_ms - WEEK_MS),
        ) {
            (Some(now), Some(before)) if now > 0 && before > 0 => (now as f64 / before as f64).ln(),
            _ => f64::NAN,
        }
    }

    /// Calendar features of a local date: (weekday from Monday = 0, day off, holiday, days to
    /// holiday, days from holiday).
    pub fn day_calendar(&self, date: NaiveDate) -> [f64; DAY_CALENDAR_COLUMNS] {
        let holiday = self.holidays.is_holiday(date);
        [
            f64::from(date.weekday().num_days_from_monday()),
            flag(holiday || is_weekend(date)),
            flag(holiday),
            f64::from(self.holidays.days_to_holiday(date)),
            f64::from(self.holidays.days_from_holiday(date)),
            // NaN outside the years the region's school data covers: "no data" is not "term time".
            self.holidays
                .school_holiday_flag(date)
                .map_or(f64::NAN, flag),
            flag(self.holidays.is_bridge_day(date)),
            f64::from(self.holidays.days_to_major_holiday(date)),
            f64::from(self.holidays.days_from_major_holiday(date)),
        ]
    }
}

/// The values of [`LotContext::day_calendar`]: weekday, day off, public holiday, days to and from
/// the next public holiday, school holiday (NaN where unknown), bridge day, days to and from the
/// next major holiday.
pub const DAY_CALENDAR_COLUMNS: usize = 9;

/// Local wall-clock time of an instant in a zone.
pub fn local_time(timezone: Tz, instant_ms: i64) -> NaiveDateTime {
    DateTime::<Utc>::from_timestamp_millis(instant_ms)
        .unwrap_or_default()
        .with_timezone(&timezone)
        .naive_local()
}

/// Minutes since local midnight.
pub fn minute_of_day(local: NaiveDateTime) -> f64 {
    f64::from(local.hour() * 60 + local.minute())
}

fn flag(value: bool) -> f64 {
    if value { 1.0 } else { 0.0 }
}

fn or_nan(value: Option<f64>) -> f64 {
    value.unwrap_or(f64::NAN)
}

/// A lot's weekday x time-of-day profile as fitted state.
#[derive(Debug, Clone, PartialEq)]
pub struct LotProfile {
    profile: WeekdayProfile,
    fitted_until_ms: i64,
}

impl LotProfile {
    /// Fits on the series' values before `until_ms`.
    pub fn fit(series: &GridSeries, until_ms: i64) -> Self {
        LotProfile {
            profile: WeekdayProfile::fit(series, until_ms),
            fitted_until_ms: until_ms,
        }
    }

    /// Wraps a profile fitted on the data before `fitted_until_ms`.
    pub fn new(profile: WeekdayProfile, fitted_until_ms: i64) -> Self {
        LotProfile {
            profile,
            fitted_until_ms,
        }
    }

    /// The cut-off of the fit.
    pub fn fitted_until_ms(&self) -> i64 {
        self.fitted_until_ms
    }

    /// The underlying profile.
    pub fn profile(&self) -> &WeekdayProfile {
        &self.profile
    }

    /// The profile at an instant. Before the cut-off the instant's own observation (`own_rate`, if it
    /// had one) is left out; `None` when the cell is empty (or held only that observation).
    pub fn value(
        &self,
        local: NaiveDateTime,
        instant_ms: i64,
        own_rate: Option<f64>,
    ) -> Option<f64> {
        let (sum, count) = self.profile.cell(local)?;
        leave_one_out(sum, count, instant_ms < self.fitted_until_ms, own_rate)
    }
}

/// The profile mean of a cell with `sum` and `count`, leaving `own_rate` out when `inside_fit`.
/// Shared arithmetic of both paths, so they round alike.
pub fn leave_one_out(sum: f64, count: u32, inside_fit: bool, own_rate: Option<f64>) -> Option<f64> {
    match (inside_fit, own_rate) {
        (true, Some(own)) => (count > 1).then(|| (sum - own) / (f64::from(count) - 1.0)),
        _ => (count > 0).then(|| sum / f64::from(count)),
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    instant_ms: i64,
    value: Option<GridValue>,
    deviation: Option<f64>,
    arrivals: u32,
    departures: u32,
}

const EMPTY_SLOT: Slot = Slot {
    instant_ms: i64::MIN,
    value: None,
    deviation: None,
    arrivals: 0,
    departures: 0,
};

#[derive(Debug, Clone, Copy, Default)]
struct DayStats {
    deviation_sum: f64,
    deviation_count: u32,
    first_reading_ms: Option<i64>,
}

/// The incremental path: one lot's recent history, updated one grid value or session event at a time,
/// answering feature vectors as of its latest grid instant.
///
/// Memory is fixed: [`FeatureParams::history_steps`] slots (40 bytes each; 92 KB at a 5-minute step)
/// and nine days of daily sums. Values older than the history are refused.
#[derive(Debug, Clone)]
pub struct LotFeatureState {
    params: FeatureParams,
    context: LotContext,
    profile: Arc<LotProfile>,
    ring: Vec<Slot>,
    now_ms: Option<i64>,
    days: BTreeMap<NaiveDate, DayStats>,
}

impl LotFeatureState {
    /// An empty state. `params` should be validated.
    pub fn new(params: FeatureParams, context: LotContext, profile: Arc<LotProfile>) -> Self {
        LotFeatureState {
            ring: vec![EMPTY_SLOT; params.history_steps()],
            params,
            context,
            profile,
            now_ms: None,
            days: BTreeMap::new(),
        }
    }

    /// Bytes the state holds on the heap (its ring of grid slots and its per-day sums), for memory
    /// figures; the profile and context are shared with the model.
    pub fn heap_bytes(&self) -> usize {
        self.ring.capacity() * std::mem::size_of::<Slot>()
            + self.days.len()
                * (std::mem::size_of::<NaiveDate>() + std::mem::size_of::<DayStats>() + 16)
    }

    /// The latest grid instant with a value: the origin of [`LotFeatureState::vector`].
    pub fn now_ms(&self) -> Option<i64> {
        self.now_ms
    }

    /// The lot's context.
    pub fn context(&self) -> &LotContext {
        &self.context
    }

    fn slot_index(&self, instant_ms: i64) -> usize {
        let position = instant_ms.div_euclid(self.params.step_ms());
        // The ring length fits in i64 and the remainder is below it, so both casts are lossless.
        position.rem_euclid(self.ring.len() as i64) as usize
    }

    /// The slot of a grid instant, claimed (cleared) if it held an older instant; `None` if the instant
    /// is older than what the slot holds (it fell out of the history).
    fn claim(&mut self, instant_ms: i64) -> Option<&mut Slot> {
        let index = self.slot_index(instant_ms);
        let slot = &mut self.ring[index];
        if slot.instant_ms > instant_ms {
            return None;
        }
        if slot.instant_ms < instant_ms {
            *slot = Slot {
                instant_ms,
                ..EMPTY_SLOT
            };
        }
        Some(slot)
    }

    fn slot(&self, instant_ms: i64) -> Option<&Slot> {
        let slot = &self.ring[self.slot_index(instant_ms)];
        (slot.instant_ms == instant_ms).then_some(slot)
    }

    fn rate(&self, instant_ms: i64) -> Option<f64> {
        self.slot(instant_ms)
            .and_then(|slot| slot.value)
            .map(|value| value.rate())
    }

    /// Applies the grid value of `instant_ms` (a grid instant). A later value of the same instant
    /// replaces the earlier one. Returns `false` if the instant is off the grid or older than the
    /// history.
    pub fn push_value(&mut self, instant_ms: i64, value: GridValue) -> bool {
        if instant_ms.rem_euclid(self.params.step_ms()) != 0 {
            return false;
        }
        let local = self.context.local(instant_ms);
        let rate = value.rate();
        let deviation = self
            .profile
            .value(local, instant_ms, Some(rate))
            .map(|profile| rate - profile);
        let Some(slot) = self.claim(instant_ms) else {
            return false;
        };
        let replaced = slot.value.is_some().then_some(slot.deviation).flatten();
        let had_value = slot.value.is_some();
        slot.value = Some(value);
        slot.deviation = deviation;

        let day = self.days.entry(local.date()).or_default();
        if let Some(old) = replaced {
            day.deviation_sum -= old;
            day.deviation_count -= 1;
        }
        if let Some(deviation) = deviation {
            day.deviation_sum += deviation;
            day.deviation_count += 1;
        }
        if !had_value {
            day.first_reading_ms = Some(
                day.first_reading_ms
                    .map_or(instant_ms, |first| first.min(instant_ms)),
            );
        }
        if self.now_ms.is_none_or(|now| instant_ms > now) {
            self.now_ms = Some(instant_ms);
            if let Some(oldest_kept) = local.date().checked_sub_days(Days::new(9)) {
                self.days = self.days.split_off(&oldest_kept);
            }
        }
        true
    }

    /// Counts a session arrival at `ts_ms` (it belongs to the first grid instant at or after it).
    /// Returns `false` if that instant is older than the history.
    pub fn push_arrival(&mut self, ts_ms: i64) -> bool {
        let bucket = flow_bucket(ts_ms, self.params.step_ms());
        self.claim(bucket).map(|slot| slot.arrivals += 1).is_some()
    }

    /// Counts a session departure at `ts_ms`, like [`LotFeatureState::push_arrival`].
    pub fn push_departure(&mut self, ts_ms: i64) -> bool {
        let bucket = flow_bucket(ts_ms, self.params.step_ms());
        self.claim(bucket)
            .map(|slot| slot.departures += 1)
            .is_some()
    }

    /// The feature vector of a forecast from now (the latest grid instant with a value) to
    /// `horizon_steps` ahead; `None` before the first value. Origins before the profile's cut-off
    /// are a training concern: there the batch path leaves the target's own observation out of its
    /// profile, which a live state cannot know.
    pub fn vector(&self, horizon_steps: u32) -> Option<FeatureVector> {
        let origin = self.now_ms?;
        let step = self.params.step_ms();
        let current = self.slot(origin)?.value?;
        let r0 = current.rate();
        let target = origin + i64::from(horizon_steps) * step;
        let origin_local = self.context.local(origin);
        let target_local = self.context.local(target);
        let mut vector = [f64::NAN; FEATURE_COUNT];
        vector[index::LOT_CODE] = or_nan(self.context.lot_code.map(f64::from));
        vector[index::LOT_KIND] = or_nan(self.context.kind_code.map(f64::from));
        vector[index::CAPACITY] = current.capacity;
        vector[index::HORIZON_MINUTES] = f64::from(horizon_steps * self.params.step_minutes);
        let calendar = self.context.day_calendar(target_local.date());
        let [
            weekday,
            day_off,
            holiday,
            days_to_holiday,
            days_from_holiday,
            school_holiday,
            bridge_day,
            days_to_major,
            days_from_major,
        ] = calendar;
        vector[index::TARGET_SCHOOL_HOLIDAY] = school_holiday;
        vector[index::TARGET_BRIDGE_DAY] = bridge_day;
        vector[index::TARGET_DAYS_TO_MAJOR_HOLIDAY] = days_to_major;
        vector[index::TARGET_DAYS_FROM_MAJOR_HOLIDAY] = days_from_major;
        vector[index::TARGET_WEEKDAY] = weekday;
        vector[index::TARGET_DAY_OFF] = day_off;
        vector[index::TARGET_HOLIDAY] = holiday;
        vector[index::TARGET_DAYS_TO_HOLIDAY] = days_to_holiday;
        vector[index::TARGET_DAYS_FROM_HOLIDAY] = days_from_holiday;
        vector[index::TARGET_MINUTE_OF_DAY] = minute_of_day(target_local);
        vector[index::ORIGIN_MINUTE_OF_DAY] = minute_of_day(origin_local);
        vector[index::RATE_ORIGIN] = r0;
        for (feature, lag) in [index::RATE_LAG1, index::RATE_LAG2, index::RATE_LAG4]
            .into_iter()
            .zip(LAG_STEPS)
        {
            vector[feature] = or_nan(self.rate(origin - i64::from(lag) * step));
        }
        let day_back = self.params.season_back_steps(horizon_steps, 1);
        let week_back = self.params.season_back_steps(horizon_steps, 7);
        vector[index::RATE_DAY_BACK] = or_nan(self.rate(target - day_back * step));
        vector[index::RATE_WEEK_BACK] = or_nan(self.rate(target - week_back * step));

        let profile_target = self.profile.value(target_local, target, None);
        let profile_origin = self.profile.value(origin_local, origin, Some(r0));
        vector[index::PROFILE_TARGET] = or_nan(profile_target);
        vector[index::PROFILE_ORIGIN] = or_nan(profile_origin);
        if let (Some(at_target), Some(at_origin)) = (profile_target, profile_origin) {
            let change = at_target - at_origin;
            vector[index::PROFILE_CHANGE] = change;
            vector[index::PERSISTENCE_PLUS_PROFILE_CHANGE] = (r0 + change).clamp(0.0, 1.0);
        }
        vector[index::DEVIATION_ORIGIN] = or_nan(self.slot(origin).and_then(|slot| slot.deviation));
        let (mut sum, mut count) = (0.0, 0u32);
        for back in (0..i64::from(self.params.recent_steps)).rev() {
            if let Some(deviation) = self
                .slot(origin - back * step)
                .and_then(|slot| slot.deviation)
            {
                sum += deviation;
                count += 1;
            }
        }
        vector[index::DEVIATION_RECENT] = mean(sum, count);
        let deviation_origin = vector[index::DEVIATION_ORIGIN];
        for (feature, back) in [index::DEVIATION_CHANGE_1, index::DEVIATION_CHANGE_2]
            .into_iter()
            .zip(DEVIATION_CHANGE_STEPS)
        {
            vector[feature] = deviation_origin
                - or_nan(
                    self.slot(origin - i64::from(back) * step)
                        .and_then(|slot| slot.deviation),
                );
        }

        let today = origin_local.date();
        let stats = |date: Option<NaiveDate>| date.and_then(|date| self.days.get(&date));
        if let Some(day) = stats(Some(today)) {
            vector[index::DEVIATION_TODAY] = mean(day.deviation_sum, day.deviation_count);
            vector[index::MINUTES_SINCE_FIRST_TODAY] = or_nan(
                day.first_reading_ms
                    .map(|first| (origin - first) as f64 / 60_000.0),
            );
        }
        if let Some(day) = stats(today.checked_sub_days(Days::new(1))) {
            vector[index::DEVIATION_YESTERDAY] = mean(day.deviation_sum, day.deviation_count);
        }
        let (mut week_sum, mut week_count) = (0.0, 0u32);
        for back in (1..=7).rev() {
            if let Some(day) = stats(today.checked_sub_days(Days::new(back))) {
                week_sum += day.deviation_sum;
                week_count += day.deviation_count;
            }
        }
        vector[index::DEVIATION_LAST_WEEK] = mean(week_sum, week_count);
        let day_steps = i64::from(self.params.day_steps());
        for (feature, days) in [
            index::DEVIATION_TARGET_DAY1,
            index::DEVIATION_TARGET_DAY2,
            index::DEVIATION_TARGET_DAY3,
            index::DEVIATION_TARGET_WEEK,
        ]
        .into_iter()
        .zip(LEVEL_DAYS_BACK)
        {
            let back = target - i64::from(days) * day_steps * step;
            if back <= origin {
                vector[feature] = or_nan(self.slot(back).and_then(|slot| slot.deviation));
            }
        }
        let day_mean = |back: u64| {
            stats(today.checked_sub_days(Days::new(back)))
                .map_or(f64::NAN, |day| mean(day.deviation_sum, day.deviation_count))
        };
        vector[index::DEVIATION_DAILY_TREND] = (day_mean(1) - day_mean(3)) / 2.0;

        if self.context.has_sessions && current.capacity > 0.0 {
            let (mut arrivals, mut departures) = (0u32, 0u32);
            for back in 0..i64::from(self.params.flow_steps()) {
                if let Some(slot) = self.slot(origin - back * step) {
                    arrivals += slot.arrivals;
                    departures += slot.departures;
                }
            }
            vector[index::ARRIVALS_RECENT] = f64::from(arrivals) / current.capacity;
            vector[index::DEPARTURES_RECENT] = f64::from(departures) / current.capacity;
        }
        if current.capacity > 0.0 {
            vector[index::TARGET_EVENT_CARS] = self.context.event_cars(target) / current.capacity;
        }
        vector[index::TARGET_PRICE_CHANGE_WEEK] = self.context.price_change_week(target);
        Some(vector)
    }
}

/// The grid instant a session event at `ts_ms` counts towards: the first at or after it, so an origin's
/// counts hold only events that happened by then.
pub fn flow_bucket(ts_ms: i64, step_ms: i64) -> i64 {
    (ts_ms + step_ms - 1).div_euclid(step_ms) * step_ms
}

fn mean(sum: f64, count: u32) -> f64 {
    if count == 0 {
        f64::NAN
    } else {
        sum / f64::from(count)
    }
}

/// Whether two vectors agree: equal, or both NaN, or within `tolerance`.
pub fn vectors_match(left: &FeatureVector, right: &FeatureVector, tolerance: f64) -> bool {
    left.iter().zip(right).all(|(left, right)| {
        (left.is_nan() && right.is_nan()) || left == right || (left - right).abs() <= tolerance
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calendar::CalendarSource;

    const HOUR: i64 = 3_600_000;

    fn context() -> LotContext {
        LotContext {
            lot_code: Some(3),
            kind_code: lot_kind_code("garage"),
            timezone: chrono_tz::UTC,
            holidays: Arc::new(HolidayCalendar::from_dates(
                "XX",
                [(
                    NaiveDate::from_ymd_opt(2024, 1, 10).expect("valid"),
                    "Test day".to_owned(),
                )],
            )),
            has_sessions: true,
            events: Arc::from(vec![ScheduledEvent {
                start_ms: start_ms() + (8 * 24 + 14) * HOUR,
                end_ms: start_ms() + (8 * 24 + 16) * HOUR,
                expected_cars: 50.0,
            }]),
            tariffs: Arc::from(Vec::new()),
        }
    }

    #[test]
    fn the_target_calendar_knows_school_holidays_bridge_days_and_major_holidays() {
        let england = LotContext {
            holidays: Arc::new(CalendarSource::embedded().load_or_empty("GB-ENG")),
            timezone: chrono_tz::Europe::London,
            ..context()
        };
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("valid");
        let at = |day| {
            let [.., school, bridge, to_major, from_major] = england.day_calendar(day);
            (school, bridge, to_major, from_major)
        };
        // Half term (24-28 Oct 2016) and term time after it; 26 Dec is Boxing Day (major: Christmas).
        assert_eq!(at(date(2016, 10, 25)).0, 1.0);
        assert_eq!(at(date(2016, 11, 8)).0, 0.0);
        let (_, bridge, to_major, _) = at(date(2016, 12, 19));
        assert_eq!(bridge, 0.0);
        assert!(
            (5.0..=7.0).contains(&to_major),
            "{to_major} days to Christmas"
        );
        // Before the school data begins, unknown is missing, not term time.
        assert!(at(date(1990, 3, 1)).0.is_nan());
        // Germany (Saxony): Friday 26 May 2017 sits between Ascension Thursday and the weekend.
        let saxony = LotContext {
            holidays: Arc::new(CalendarSource::embedded().load_or_empty("DE-SN")),
            ..context()
        };
        assert_eq!(saxony.day_calendar(date(2017, 5, 26))[6], 1.0);
        assert_eq!(saxony.day_calendar(date(2017, 5, 30))[6], 0.0);
    }

    #[test]
    fn the_price_in_force_prefers_the_lots_own_band_in_local_time() {
        let tariff = |from_ms, until_ms, band: (u32, u32), weekdays, cents, lot_own| HourlyTariff {
            valid_from_ms: from_ms,
            valid_until_ms: until_ms,
            band_starts_minute: band.0,
            band_ends_minute: band.1,
            weekdays,
            cents_per_hour: cents,
            lot_own,
        };
        // 2024-01-01 is a Monday. The zone charges 100 all day; the lot 200 on weekdays 08-18,
        // 300 from 8 Jan; an evening band (22-02) runs past midnight at 50.
        let start = start_ms();
        let rise = start + 7 * 24 * HOUR;
        let lot = LotContext {
            timezone: chrono_tz::Europe::Berlin,
            tariffs: Arc::from(vec![
                tariff(start, None, (0, 1_440), ALL_WEEKDAYS, 100, false),
                tariff(start, Some(rise), (480, 1_080), 0b1_1111, 200, true),
                tariff(rise, None, (480, 1_080), 0b1_1111, 300, true),
                tariff(start, None, (1_320, 120), ALL_WEEKDAYS, 50, true),
            ]),
            ..context()
        };
        // Berlin is UTC+1 in January: 07:30 UTC is 08:30 local.
        let monday = |hour_utc: i64, minutes: i64| start_ms() + hour_utc * HOUR + minutes * 60_000;
        assert_eq!(lot.price_at(monday(7, 30)), Some(200));
        assert_eq!(
            lot.price_at(monday(6, 30)),
            Some(100),
            "before the band: the zone's"
        );
        assert_eq!(
            lot.price_at(monday(22, 0)),
            Some(50),
            "23:00 local, in the evening band"
        );
        assert_eq!(
            lot.price_at(monday(24, 30)),
            Some(50),
            "01:30 local, past midnight"
        );
        let saturday = monday(5 * 24 + 7, 30);
        assert_eq!(
            lot.price_at(saturday),
            Some(100),
            "the weekday band skips Saturday"
        );
        let next_monday = monday(7 * 24 + 7, 30);
        assert_eq!(lot.price_at(next_monday), Some(300));
        assert!((lot.price_change_week(next_monday) - 1.5_f64.ln()).abs() < 1e-12);
        assert_eq!(lot.price_change_week(monday(14 * 24 + 7, 30)), 0.0);
        // Without tariffs, or a week back before any, the change is missing.
        assert!(context().price_change_week(next_monday).is_nan());
        assert!(lot.price_change_week(monday(7, 30)).is_nan());
        assert_eq!(context().price_at(next_monday), None);
    }

    fn start_ms() -> i64 {
        NaiveDate::from_ymd_opt(2024, 1, 1)
            .and_then(|date| date.and_hms_opt(0, 0, 0))
            .expect("valid")
            .and_utc()
            .timestamp_millis()
    }

    #[test]
    fn params_validate_and_hash_changes_with_them() {
        let params = FeatureParams::new(30);
        assert!(params.validate().is_ok());
        assert!(FeatureParams::new(7).validate().is_err());
        assert_ne!(params.schema_hash(), FeatureParams::new(15).schema_hash());
        assert_eq!(params.schema_hash().len(), 64);
        assert_eq!(params.season_back_steps(1, 1), 48);
        assert_eq!(params.season_back_steps(48, 1), 48);
        assert_eq!(params.season_back_steps(49, 1), 96);
        assert_eq!(params.season_back_steps(4, 7), 336);
        assert_eq!(params.flow_steps(), 2);
    }

    #[test]
    fn leave_one_out_removes_only_inside_the_fit() {
        assert_eq!(leave_one_out(3.0, 3, true, Some(1.0)), Some(1.0));
        assert_eq!(leave_one_out(3.0, 3, false, Some(1.0)), Some(1.0));
        assert_eq!(leave_one_out(1.0, 1, true, Some(1.0)), None);
        assert_eq!(leave_one_out(0.0, 0, false, None), None);
    }

    /// An hourly lot of 100 spaces whose rate is hour / 100 for `days` days from `start_ms`, and
    /// its profile fitted on the first week.
    fn hour_of_day_lot(days: i64) -> (GridSeries, Arc<LotProfile>) {
        let mut series = GridSeries::new(HOUR, chrono_tz::UTC);
        for hour in 0..days * 24 {
            series.push(start_ms() + hour * HOUR, (hour % 24) as f64, 100.0);
        }
        let profile = Arc::new(LotProfile::fit(&series, start_ms() + 7 * 24 * HOUR));
        (series, profile)
    }

    #[test]
    fn incremental_state_reads_only_its_history() {
        // Hourly grid, rate = hour / 100, for nine days; the profile is fitted on the first seven.
        let params = FeatureParams {
            step_minutes: 60,
            recent_steps: 2,
            flow_window_minutes: 120,
        };
        let (series, profile) = hour_of_day_lot(9);
        let mut state = LotFeatureState::new(params, context(), profile);
        assert!(state.vector(1).is_none());
        for (instant, value) in series.iter() {
            assert!(state.push_value(instant, value));
        }
        let origin = start_ms() + (8 * 24 + 10) * HOUR; // day 8, 10:00
        while state.now_ms() != Some(origin) {
            // Rebuild up to the origin only: a state answers as of its latest value.
            state = LotFeatureState::new(params, context(), state.profile.clone());
            for (instant, value) in series.iter().take_while(|(instant, _)| *instant <= origin) {
                state.push_value(instant, value);
            }
        }
        state.push_arrival(origin - HOUR / 2);
        state.push_arrival(origin - HOUR);
        state.push_departure(origin - 3 * HOUR); // outside the two-hour window
        let vector = state.vector(3).expect("a value at the origin");
        assert_eq!(vector[index::RATE_ORIGIN], 0.10);
        assert_eq!(vector[index::RATE_LAG1], 0.09);
        assert_eq!(vector[index::RATE_LAG4], 0.06);
        assert_eq!(vector[index::RATE_DAY_BACK], 0.13);
        assert_eq!(vector[index::RATE_WEEK_BACK], 0.13);
        assert!((vector[index::PROFILE_TARGET] - 0.13).abs() < 1e-12);
        assert!((vector[index::PERSISTENCE_PLUS_PROFILE_CHANGE] - 0.13).abs() < 1e-12);
        assert!(vector[index::DEVIATION_ORIGIN].abs() < 1e-12);
        assert_eq!(vector[index::MINUTES_SINCE_FIRST_TODAY], 600.0);
        assert_eq!(vector[index::ARRIVALS_RECENT], 0.02);
        assert_eq!(vector[index::DEPARTURES_RECENT], 0.0);
        assert_eq!(vector[index::TARGET_WEEKDAY], 1.0); // 2024-01-09 is a Tuesday
        assert_eq!(vector[index::HORIZON_MINUTES], 180.0);
        assert_eq!(
            vector[index::TARGET_EVENT_CARS],
            0.5,
            "13:00 is within 3 h of a 14:00 start"
        );
        assert_eq!(
            state.vector(9).expect("a value")[index::TARGET_EVENT_CARS],
            0.0
        );
        // Too old for the history: refused.
        assert!(!state.push_value(
            start_ms(),
            GridValue {
                occupied: 1.0,
                capacity: 100.0
            }
        ));
    }

    #[test]
    fn the_deviation_change_is_how_far_the_deviation_moved_and_missing_across_a_gap() {
        // Hourly grid, rate = hour / 100 for a week (the profile's fit); on the eighth day the lot
        // runs 0.01 further above its profile every hour from 07:00 (08:00 +0.02 ... 12:00 +0.06),
        // and 11:00 is missing.
        let (series, profile) = hour_of_day_lot(7);
        let until = start_ms() + 7 * 24 * HOUR;
        let mut state = LotFeatureState::new(FeatureParams::new(60), context(), profile);
        for (instant, value) in series.iter() {
            assert!(state.push_value(instant, value));
        }
        let push = |state: &mut LotFeatureState, hour: i64| {
            let above = (hour - 6).max(0) as f64;
            let value = GridValue {
                occupied: hour as f64 + above,
                capacity: 100.0,
            };
            assert!(state.push_value(until + hour * HOUR, value));
        };
        for hour in 0..=10 {
            push(&mut state, hour);
        }
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        let vector = state.vector(2).expect("a value at 10:00");
        assert!(close(vector[index::DEVIATION_ORIGIN], 0.04));
        assert!(close(vector[index::DEVIATION_CHANGE_1], 0.01));
        assert!(close(vector[index::DEVIATION_CHANGE_2], 0.02));
        push(&mut state, 12);
        let vector = state.vector(2).expect("a value at 12:00");
        assert!(
            vector[index::DEVIATION_CHANGE_1].is_nan(),
            "11:00 has no value: missing, not zero"
        );
        assert!(close(vector[index::DEVIATION_CHANGE_2], 0.02));
    }

    #[test]
    fn replacing_a_value_updates_the_day() {
        let params = FeatureParams::new(60);
        let series = GridSeries::new(HOUR, chrono_tz::UTC);
        let profile = Arc::new(LotProfile::fit(&series, 0));
        let mut state = LotFeatureState::new(params, context(), profile);
        let value = |occupied| GridValue {
            occupied,
            capacity: 10.0,
        };
        assert!(state.push_value(start_ms(), value(1.0)));
        assert!(state.push_value(start_ms(), value(2.0)));
        assert!(
            !state.push_value(start_ms() + 1, value(2.0)),
            "off the grid"
        );
        let vector = state.vector(1).expect("a value");
        assert_eq!(vector[index::RATE_ORIGIN], 0.2);
        assert!(
            vector[index::DEVIATION_TODAY].is_nan(),
            "no profile, no deviation"
        );
        assert_eq!(vector[index::MINUTES_SINCE_FIRST_TODAY], 0.0);
    }
}
