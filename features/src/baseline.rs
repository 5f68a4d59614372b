//! Baseline forecasters: the honest yardsticks every model must beat, per horizon, to be promoted.
//!
//! All of them forecast an occupancy *rate* at a target grid instant from an origin instant, using
//! only grid values at or before the origin and a profile fitted on data before the evaluation window.

use std::collections::HashMap;

use chrono::{Datelike, Days, NaiveDateTime, TimeZone};

use crate::grid::{GridSeries, nearest_instant, slot_of_day};

/// Mean rate per (local weekday, local slot of day): the historical weekday x time-of-day profile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WeekdayProfile {
    step_minutes: u32,
    cells: HashMap<(u32, u32), (f64, u32)>,
}

impl WeekdayProfile {
    /// An empty profile on a grid of `step_minutes`.
    pub fn new(step_minutes: u32) -> Self {
        WeekdayProfile {
            step_minutes: step_minutes.max(1),
            cells: HashMap::new(),
        }
    }

    /// Fits the profile of a series on its values strictly before `until_ms`.
    pub fn fit(series: &GridSeries, until_ms: i64) -> Self {
        let step_minutes = u32::try_from(series.step_ms() / 60_000)
            .expect("a grid step should fit in u32 minutes");
        let mut profile = WeekdayProfile::new(step_minutes);
        for (instant, value) in series.iter().take_while(|(instant, _)| *instant < until_ms) {
            profile.add(series.local(instant), value.rate());
        }
        profile
    }

    /// Adds one observation.
    pub fn add(&mut self, local: NaiveDateTime, rate: f64) {
        let cell = self.cells.entry(self.key(local)).or_insert((0.0, 0));
        cell.0 += rate;
        cell.1 += 1;
    }

    /// The mean rate at a local time, if the profile saw that weekday and slot.
    pub fn at(&self, local: NaiveDateTime) -> Option<f64> {
        self.cells
            .get(&self.key(local))
            .map(|(sum, count)| sum / f64::from(*count))
    }

    /// The raw cell at a local time: (sum of rates, count). The feature paths need the parts to leave
    /// one observation out exactly the same way.
    pub fn cell(&self, local: NaiveDateTime) -> Option<(f64, u32)> {
        self.cells.get(&self.key(local)).copied()
    }

    /// Every cell as (weekday from Monday = 0, slot of day, sum of rates, count), sorted: the form a
    /// model file stores.
    pub fn cells(&self) -> Vec<(u32, u32, f64, u32)> {
        let mut cells: Vec<_> = self
            .cells
            .iter()
            .map(|(&(weekday, slot), &(sum, count))| (weekday, slot, sum, count))
            .collect();
        cells.sort_by_key(|&(weekday, slot, _, _)| (weekday, slot));
        cells
    }

    /// A profile from [`WeekdayProfile::cells`] output.
    pub fn from_cells(
        step_minutes: u32,
        cells: impl IntoIterator<Item = (u32, u32, f64, u32)>,
    ) -> Self {
        WeekdayProfile {
            step_minutes: step_minutes.max(1),
            cells: cells
                .into_iter()
                .map(|(weekday, slot, sum, count)| ((weekday, slot), (sum, count)))
                .collect(),
        }
    }

    /// The grid step the profile was fitted on, minutes.
    pub fn step_minutes(&self) -> u32 {
        self.step_minutes
    }

    fn key(&self, local: NaiveDateTime) -> (u32, u32) {
        (
            local.weekday().num_days_from_monday(),
            slot_of_day(local, self.step_minutes),
        )
    }
}

/// The baselines that are always trained and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Baseline {
    /// The last value: y(origin).
    Persistence,
    /// The same local time `days` before the target (or a multiple of it, at or before the origin).
    SeasonalNaive {
        /// Season length in days (1: yesterday, 7: last week).
        days: u32,
    },
    /// The weekday x time-of-day profile at the target.
    WeekdayProfile,
    /// The last value plus the profile's change from origin to target, clipped to [0, 1].
    PersistencePlusProfileChange,
}

impl Baseline {
    /// Every baseline, in report order.
    pub const ALL: [Baseline; 5] = [
        Baseline::Persistence,
        Baseline::SeasonalNaive { days: 1 },
        Baseline::SeasonalNaive { days: 7 },
        Baseline::WeekdayProfile,
        Baseline::PersistencePlusProfileChange,
    ];

    /// Name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Baseline::Persistence => "persistence",
            Baseline::SeasonalNaive { days: 1 } => "seasonal naive 1 day",
            Baseline::SeasonalNaive { days: 7 } => "seasonal naive 1 week",
            Baseline::SeasonalNaive { .. } => "seasonal naive",
            Baseline::WeekdayProfile => "weekday x time profile",
            Baseline::PersistencePlusProfileChange => "persistence + profile change",
        }
    }

    /// The rate forecast for `target_ms` made at `origin_ms`, or `None` when the inputs it needs are
    /// missing (no value at the origin, no profile cell, no value a season back).
    pub fn forecast(
        &self,
        series: &GridSeries,
        profile: &WeekdayProfile,
        origin_ms: i64,
        target_ms: i64,
    ) -> Option<f64> {
        match self {
            Baseline::Persistence => series.rate_at(origin_ms),
            Baseline::SeasonalNaive { days } => {
                let mut seasons = 1;
                loop {
                    let back = local_days_back(series, target_ms, days.saturating_mul(seasons))?;
                    if back <= origin_ms {
                        return series.rate_at(back);
                    }
                    seasons += 1;
                }
            }
            Baseline::WeekdayProfile => profile.at(series.local(target_ms)),
            Baseline::PersistencePlusProfileChange => {
                let last = series.rate_at(origin_ms)?;
                let change =
                    profile.at(series.local(target_ms))? - profile.at(series.local(origin_ms))?;
                Some((last + change).clamp(0.0, 1.0))
            }
        }
    }
}

/// The grid instant at the same local wall-clock time `days` earlier (DST-aware).
fn local_days_back(series: &GridSeries, instant_ms: i64, days: u32) -> Option<i64> {
    let local = series
        .local(instant_ms)
        .checked_sub_days(Days::new(u64::from(days)))?;
    let earlier = series.timezone().from_local_datetime(&local).earliest()?;
    Some(nearest_instant(
        earlier.timestamp_millis(),
        series.step_ms(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    /// A series with rate = hour of day / 100 every hour for `days` days from 2024-01-01 (a Monday).
    fn daily_pattern(days: i64) -> GridSeries {
        let start = chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
            .and_then(|date| date.and_hms_opt(0, 0, 0))
            .expect("valid")
            .and_utc()
            .timestamp_millis();
        let mut series = GridSeries::new(HOUR, chrono_tz::UTC);
        for hour in 0..days * 24 {
            series.push(start + hour * HOUR, (hour % 24) as f64, 100.0);
        }
        series
    }

    #[test]
    fn each_baseline_reads_only_what_it_may() {
        let series = daily_pattern(14);
        let first_instant = series.iter().next().expect("non-empty").0;
        let origin = first_instant + (13 * 24 + 8) * HOUR; // day 13, 08:00
        let target = origin + 3 * HOUR; // 11:00
        let profile = WeekdayProfile::fit(&series, origin);
        let forecast = |baseline: Baseline| {
            baseline
                .forecast(&series, &profile, origin, target)
                .expect("predicts")
        };
        assert_eq!(forecast(Baseline::Persistence), 0.08);
        assert_eq!(forecast(Baseline::SeasonalNaive { days: 1 }), 0.11);
        assert_eq!(forecast(Baseline::SeasonalNaive { days: 7 }), 0.11);
        assert!((forecast(Baseline::WeekdayProfile) - 0.11).abs() < 1e-12);
        assert!((forecast(Baseline::PersistencePlusProfileChange) - 0.11).abs() < 1e-12);
    }

    #[test]
    fn seasonal_naive_never_looks_past_the_origin() {
        let series = daily_pattern(10);
        let first_instant = series.iter().next().expect("non-empty").0;
        let origin = first_instant + (8 * 24) * HOUR;
        let target = origin + 30 * HOUR; // more than a day ahead: yesterday's value is after the origin
        let back = local_days_back(&series, target, 2).expect("exists");
        assert!(back <= origin);
        let profile = WeekdayProfile::default();
        assert_eq!(
            Baseline::SeasonalNaive { days: 1 }.forecast(&series, &profile, origin, target),
            series.rate_at(back)
        );
    }

    #[test]
    fn missing_inputs_give_no_forecast() {
        let series = daily_pattern(2);
        let profile = WeekdayProfile::new(60);
        let first_instant = series.iter().next().expect("non-empty").0;
        assert_eq!(
            Baseline::WeekdayProfile.forecast(
                &series,
                &profile,
                first_instant,
                first_instant + HOUR
            ),
            None
        );
        assert_eq!(
            Baseline::Persistence.forecast(&series, &profile, first_instant - HOUR, first_instant),
            None
        );
    }
}
