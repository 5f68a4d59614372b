//! What a lot's live error is held to: its backtest error by day type and local hour of the target.
//!
//! A lot's error is not flat over the day. A commuter garage fills at 08:00 and empties at 17:00,
//! and its forecasts are worst then and near perfect at night; a street zone is hardest at lunch. A
//! day average as the reference makes every lot look bad in its own rush hour and a shifted lot look
//! fine at night. The trainer therefore sums each lot's backtest errors per horizon by the target's
//! day type ([`DayType`]) and local hour ([`HourlyError`]), and the model file carries them resolved
//! to one MAE per day type and hour ([`HourlyError::resolve`]); the server's live-accuracy monitor
//! judges each hour of a lot against the same hour of the same kind of day.
//!
//! A lot's error also varies from day to day, and more for some lots than others: a commuter
//! garage's forecasts are fine on a day its office workers come as usual and twice as bad on a day
//! a third of them do not, while a street zone's turnover averages out. The same tally keeps the
//! spread of the lot's daily MAE over the backtest's days ([`HourlyError::spread`]), so the monitor
//! allows a lot the bad days the backtest saw it have.
//!
//! A test week has one Saturday, so a single hour of it holds few pairs (12 on a 5-minute grid, 2 on
//! a 30-minute one). Resolution pools the hour with its neighbours (the error of 09:00 is much like
//! that of 08:00 and 10:00), then falls back to the hour over every day type, then to the lot's
//! whole-day figure, so that no reference rests on fewer than [`MIN_REFERENCE_PAIRS`] pairs.

use parkcast_features::calendar::DayType;

/// Hours in a day.
pub const HOURS: usize = 24;

/// Entries of a resolved reference: one per day type and hour, `day_type.index() * 24 + hour`.
pub const REFERENCE_LEN: usize = DayType::ALL.len() * HOURS;

/// Pairs below which a pooled hour is not trusted as a reference.
pub const MIN_REFERENCE_PAIRS: u32 = 24;

/// Pairs a day needs to count in the spread (a lot on a 30-minute grid open 08:00-16:30 has 18).
pub const MIN_DAY_PAIRS: u32 = 8;

/// Days the spread needs before it is trusted.
pub const MIN_SPREAD_DAYS: u32 = 3;

/// A lot's backtest errors at one horizon, summed by the target's day type and local hour.
#[derive(Debug, Clone, PartialEq)]
pub struct HourlyError {
    sums: [f64; REFERENCE_LEN],
    pairs: [u32; REFERENCE_LEN],
    /// Days with a daily MAE, their sum, and the sum of their squares.
    days: (u32, f64, f64),
}

impl Default for HourlyError {
    fn default() -> Self {
        HourlyError {
            sums: [0.0; REFERENCE_LEN],
            pairs: [0; REFERENCE_LEN],
            days: (0, 0.0, 0.0),
        }
    }
}

/// The index of a day type and hour (0-23) in a resolved reference.
pub fn reference_index(day_type: DayType, hour: u32) -> usize {
    day_type.index() * HOURS + (hour as usize % HOURS)
}

impl HourlyError {
    /// Adds the absolute error of one pair whose target fell on `day_type` at local `hour`.
    pub fn record(&mut self, day_type: DayType, hour: u32, absolute_error: f64) {
        if absolute_error.is_finite() {
            let index = reference_index(day_type, hour);
            self.sums[index] += absolute_error;
            self.pairs[index] += 1;
        }
    }

    /// Adds another tally's sums.
    pub fn merge(&mut self, other: &HourlyError) {
        for index in 0..REFERENCE_LEN {
            self.sums[index] += other.sums[index];
            self.pairs[index] += other.pairs[index];
        }
        self.days.0 += other.days.0;
        self.days.1 += other.days.1;
        self.days.2 += other.days.2;
    }

    /// Adds one day's MAE, from `pairs` pairs (a day with fewer than [`MIN_DAY_PAIRS`] is left
    /// out: its MAE says more about chance than about the day).
    pub fn record_day(&mut self, mae: f64, pairs: u32) {
        if mae.is_finite() && pairs >= MIN_DAY_PAIRS {
            self.days.0 += 1;
            self.days.1 += mae;
            self.days.2 += mae * mae;
        }
    }

    /// How much worse than its average an ordinary bad day of the lot is: the mean daily MAE plus
    /// two standard deviations, over the mean (at least 1; NaN with fewer than
    /// [`MIN_SPREAD_DAYS`] days or no error at all).
    pub fn spread(&self) -> f64 {
        let (days, sum, sum_sq) = self.days;
        if days < MIN_SPREAD_DAYS || sum <= 0.0 {
            return f64::NAN;
        }
        let count = f64::from(days);
        let mean = sum / count;
        let variance = ((sum_sq - sum * mean) / (count - 1.0)).max(0.0);
        ((mean + 2.0 * variance.sqrt()) / mean).max(1.0)
    }

    /// Pairs recorded.
    pub fn pairs(&self) -> u64 {
        self.pairs.iter().map(|pairs| u64::from(*pairs)).sum()
    }

    /// One MAE per day type and hour ([`reference_index`] order): the hour pooled with the hours
    /// either side on the same day type when they hold [`MIN_REFERENCE_PAIRS`], else the same three
    /// hours on every day type, else the lot's whole-day MAE; NaN for a lot without pairs.
    pub fn resolve(&self) -> Vec<f32> {
        let (sum, pairs) = (self.sums.iter().sum::<f64>(), self.pairs());
        let whole_day = if pairs == 0 {
            f64::NAN
        } else {
            sum / pairs as f64
        };
        let pooled = |day_types: &[DayType], hour: usize| {
            let mut total = (0.0, 0u32);
            for day_type in day_types {
                for offset in [HOURS - 1, 0, 1] {
                    let index = reference_index(*day_type, ((hour + offset) % HOURS) as u32);
                    total.0 += self.sums[index];
                    total.1 += self.pairs[index];
                }
            }
            (total.1 >= MIN_REFERENCE_PAIRS).then(|| total.0 / f64::from(total.1))
        };
        let mut out = Vec::with_capacity(REFERENCE_LEN);
        for day_type in DayType::ALL {
            for hour in 0..HOURS {
                let mae = pooled(&[day_type], hour)
                    .or_else(|| pooled(&DayType::ALL, hour))
                    .unwrap_or(whole_day);
                out.push(mae as f32);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_is_pooled_with_its_neighbours_on_its_own_day_type() {
        let mut error = HourlyError::default();
        // Weekdays: 0.10 at 08:00, 0.04 at 07:00 and 09:00, 10 pairs each; 0.01 elsewhere.
        for hour in 0..24 {
            let mae = match hour {
                8 => 0.10,
                7 | 9 => 0.04,
                _ => 0.01,
            };
            for _ in 0..10 {
                error.record(DayType::Weekday, hour, mae);
            }
        }
        let resolved = error.resolve();
        assert_eq!(resolved.len(), REFERENCE_LEN);
        let at = |day_type, hour| f64::from(resolved[reference_index(day_type, hour)]);
        assert!((at(DayType::Weekday, 8) - 0.06).abs() < 1e-6);
        assert!((at(DayType::Weekday, 7) - 0.05).abs() < 1e-6);
        assert!((at(DayType::Weekday, 3) - 0.01).abs() < 1e-6);
        // Midnight pools with 23:00 and 01:00.
        assert!((at(DayType::Weekday, 0) - 0.01).abs() < 1e-6);
        // No Saturday pairs: the weekday hour stands in.
        assert!((at(DayType::Saturday, 8) - 0.06).abs() < 1e-6);
    }

    #[test]
    fn too_few_pairs_fall_back_to_every_day_type_then_the_whole_day() {
        let mut error = HourlyError::default();
        // A Saturday hour with 6 pairs is not enough on its own.
        for _ in 0..6 {
            error.record(DayType::Saturday, 12, 0.2);
        }
        for _ in 0..30 {
            error.record(DayType::Weekday, 12, 0.02);
        }
        let resolved = error.resolve();
        let at = |day_type, hour| f64::from(resolved[reference_index(day_type, hour)]);
        let pooled = (6.0 * 0.2 + 30.0 * 0.02) / 36.0;
        assert!((at(DayType::Saturday, 12) - pooled).abs() < 1e-6);
        assert!((at(DayType::Weekday, 12) - 0.02).abs() < 1e-6);
        // 03:00 has no pairs at all: the whole day.
        assert!((at(DayType::SundayOrHoliday, 3) - pooled).abs() < 1e-6);
        assert!(
            HourlyError::default()
                .resolve()
                .iter()
                .all(|mae| mae.is_nan())
        );
        assert!(HourlyError::default().spread().is_nan());
        // Not-finite errors are not pairs.
        error.record(DayType::Weekday, 1, f64::NAN);
        assert_eq!(error.pairs(), 36);
    }

    #[test]
    fn the_spread_is_how_far_a_bad_day_is_above_the_mean() {
        let mut steady = HourlyError::default();
        let mut erratic = HourlyError::default();
        for day in 0..6 {
            steady.record_day(0.05, 100);
            erratic.record_day(if day % 2 == 0 { 0.01 } else { 0.03 }, 100);
        }
        assert!((steady.spread() - 1.0).abs() < 1e-6);
        // Mean 0.02, sample sd 0.01095: (0.02 + 0.0219) / 0.02.
        let expected = (0.02 + 2.0 * (0.0006f64 / 5.0).sqrt()) / 0.02;
        assert!(
            (erratic.spread() - expected).abs() < 1e-9,
            "{}",
            erratic.spread()
        );
        // Days of too few pairs do not count; two days are not enough.
        let mut young = HourlyError::default();
        young.record_day(0.9, 3);
        young.record_day(0.01, 100);
        young.record_day(0.03, 100);
        assert!(young.spread().is_nan());
        let mut merged = HourlyError::default();
        merged.merge(&erratic);
        assert_eq!(merged.spread(), erratic.spread());
    }
}
