//! Occupancy on a regular time grid.
//!
//! Counters report at irregular instants (Birmingham at 07:59:42, 08:25:42, ...). Forecasting works on
//! a grid: each reading goes to the *nearest* grid instant, and a later reading of the same instant
//! replaces an earlier one. This is the protocol of the published Birmingham figures (MODELS.md
//! reproduces them exactly with it).
//!
//! Point in time: a grid value at instant `t` may come from a reading up to half a step after `t`.
//! A forecast "from origin `t`" is therefore issued at `t + step/2` at the latest and uses only grid
//! values at or before `t`; horizons count grid steps from `t`.
//!
//! A source that writes only changes (a counter feed that logs "112 occupied" at 08:03 and "113" at
//! 08:41, nothing in between) leaves every instant without a change empty. Its readings hold until
//! the next one, which [`GridSeries::fill_forward`] applies for at most a maximum gap (the lot's
//! `dim_lot.hold_minutes`, given at import). The fill only copies a value to later instants, so it
//! keeps the point-in-time rule: a filled instant's value was read before it.

use chrono::{DateTime, NaiveDateTime, Timelike, Utc};
use chrono_tz::Tz;

/// Gaps up to this long are short: a count standing still. Longer ones are nights without
/// readings (Birmingham's garages report 08:00 to 16:30 only) and outages, which leave a sampled
/// feed just as empty and which no hold should bridge.
pub const SHORT_GAP_MINUTES: u32 = 120;

/// Grid steps in a short gap ([`SHORT_GAP_MINUTES`]) at a step, at least 1.
pub fn short_gap_steps(step_minutes: u32) -> usize {
    (SHORT_GAP_MINUTES / step_minutes.max(1)).max(1) as usize
}

/// The grid instant nearest to `ts_ms` (ties go to the later instant).
pub fn nearest_instant(ts_ms: i64, step_ms: i64) -> i64 {
    (ts_ms + step_ms / 2).div_euclid(step_ms) * step_ms
}

/// One grid value: occupied slots and the capacity then.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridValue {
    /// Occupied slots.
    pub occupied: f64,
    /// Capacity at that instant.
    pub capacity: f64,
}

impl GridValue {
    /// Occupancy rate, occupied / capacity (0 for a zero capacity).
    pub fn rate(&self) -> f64 {
        if self.capacity > 0.0 {
            self.occupied / self.capacity
        } else {
            0.0
        }
    }
}

/// One lot's occupancy on a grid, with gaps where no reading fell.
///
/// Stored densely from the first to the last instant with a value: O(1) lookups, 24 bytes per instant
/// (a tree map took about 60 per value, and the trainer reads every instant many times over).
#[derive(Debug, Clone, PartialEq)]
pub struct GridSeries {
    step_ms: i64,
    timezone: Tz,
    start_ms: i64,
    values: Vec<Option<GridValue>>,
    count: usize,
}

impl GridSeries {
    /// An empty series with a step (ms, > 0) and the lot's time zone.
    pub fn new(step_ms: i64, timezone: Tz) -> Self {
        assert!(step_ms > 0, "a grid step should be positive");
        GridSeries {
            step_ms,
            timezone,
            start_ms: 0,
            values: Vec::new(),
            count: 0,
        }
    }

    /// Adds a reading. Readings should come in time order (then growth is amortised O(1)); the later of
    /// two readings of one grid instant is kept.
    pub fn push(&mut self, ts_ms: i64, occupied: f64, capacity: f64) {
        let instant = nearest_instant(ts_ms, self.step_ms);
        if self.values.is_empty() {
            self.start_ms = instant;
        } else if instant < self.start_ms {
            let missing = usize::try_from((self.start_ms - instant) / self.step_ms)
                .expect("a shift should fit in usize");
            self.values.splice(0..0, std::iter::repeat_n(None, missing));
            self.start_ms = instant;
        }
        let index = self
            .index(instant)
            .expect("an instant at or after the start should have an index");
        if index >= self.values.len() {
            self.values.resize(index + 1, None);
        }
        if self.values[index].is_none() {
            self.count += 1;
        }
        self.values[index] = Some(GridValue { occupied, capacity });
    }

    /// Position of a grid instant in `values`, if it is on the grid and not before the start.
    fn index(&self, instant_ms: i64) -> Option<usize> {
        let offset = instant_ms.checked_sub(self.start_ms)?;
        if offset < 0 || offset % self.step_ms != 0 {
            return None;
        }
        usize::try_from(offset / self.step_ms).ok()
    }

    /// The grid step, ms.
    pub fn step_ms(&self) -> i64 {
        self.step_ms
    }

    /// The lot's time zone.
    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// The value at a grid instant.
    pub fn at(&self, instant_ms: i64) -> Option<GridValue> {
        self.values.get(self.index(instant_ms)?).copied().flatten()
    }

    /// The rate at a grid instant.
    pub fn rate_at(&self, instant_ms: i64) -> Option<f64> {
        self.at(instant_ms).map(|value| value.rate())
    }

    /// Grid instants with a value, in order, with their values.
    pub fn iter(&self) -> impl Iterator<Item = (i64, GridValue)> + '_ {
        let (start_ms, step_ms) = (self.start_ms, self.step_ms);
        self.values
            .iter()
            .enumerate()
            .filter_map(move |(index, value)| {
                value.map(|value| (start_ms + index as i64 * step_ms, value))
            })
    }

    /// Number of instants with a value.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no instant has a value.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Grid instants from the first to the last with a value, both counted (0 when empty): the
    /// span over which [`GridSeries::empty_instants`] counts gaps.
    pub fn span_instants(&self) -> usize {
        self.values.len()
    }

    /// Grid instants between the first and the last value that have none.
    pub fn empty_instants(&self) -> usize {
        self.values.len() - self.count
    }

    /// Empty instants between the first and the last value that lie in gaps of at most
    /// `max_gap_instants` instants: the scattered gaps a source that writes only changes leaves,
    /// as opposed to the long ones of nights without readings and outages.
    pub fn empty_instants_in_short_gaps(&self, max_gap_instants: usize) -> usize {
        self.values
            .chunk_by(|first, second| first.is_none() == second.is_none())
            .filter(|run| run[0].is_none() && run.len() <= max_gap_instants)
            .map(<[Option<GridValue>]>::len)
            .sum()
    }

    /// Holds every value forward over the empty instants after it, for at most `max_gap_ms`, as a
    /// source that writes only changes means its readings: an empty instant `t` takes the value of
    /// the latest instant `s < t` that had one before the fill, when `t - s <= max_gap_ms`.
    ///
    /// A gap longer than `max_gap_ms` is filled only for its first `max_gap_ms` (the source said a
    /// value holds that long, no longer); nothing is filled before the first value; after the last
    /// value the series grows by up to `max_gap_ms`. Returns the number of instants filled; a gap
    /// shorter than a step fills nothing.
    pub fn fill_forward(&mut self, max_gap_ms: i64) -> usize {
        let Ok(hold_steps) = usize::try_from(max_gap_ms / self.step_ms) else {
            return 0;
        };
        if hold_steps == 0 || self.values.is_empty() {
            return 0;
        }
        // The series ends at its last value; the hold reaches beyond it.
        self.values.resize(self.values.len() + hold_steps, None);
        let mut filled = 0;
        let mut last_observed: Option<(usize, GridValue)> = None;
        for index in 0..self.values.len() {
            // Instants are only written at their own index, so `values[index]` is still as read.
            match self.values[index] {
                Some(value) => last_observed = Some((index, value)),
                None => {
                    if let Some((observed, value)) = last_observed
                        && index - observed <= hold_steps
                    {
                        self.values[index] = Some(value);
                        filled += 1;
                    }
                }
            }
        }
        // The tail always fills (its instants are within the hold of the last value), so no empty
        // instant trails the last value.
        debug_assert!(self.values.last().is_some_and(Option::is_some));
        self.count += filled;
        filled
    }

    /// Local wall-clock time of a grid instant.
    pub fn local(&self, instant_ms: i64) -> NaiveDateTime {
        DateTime::<Utc>::from_timestamp_millis(instant_ms)
            .expect("grid instants should be in chrono's range")
            .with_timezone(&self.timezone)
            .naive_local()
    }
}

/// Index of a local time within its day on a grid of `step_minutes` (0 = the slot starting at midnight).
pub fn slot_of_day(local: NaiveDateTime, step_minutes: u32) -> u32 {
    (local.hour() * 60 + local.minute()) / step_minutes.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HALF_HOUR: i64 = 30 * 60_000;

    #[test]
    fn readings_go_to_the_nearest_instant_and_later_ones_win() {
        let base = 1_480_000_000_000 / HALF_HOUR * HALF_HOUR;
        let mut series = GridSeries::new(HALF_HOUR, chrono_tz::UTC);
        series.push(base - 18_000, 10.0, 100.0); // 18 s before: nearest is `base`
        series.push(base + 14 * 60_000, 20.0, 100.0); // 14 min after: still `base`, replaces
        series.push(base + 16 * 60_000, 30.0, 100.0); // 16 min after: the next instant
        assert_eq!(series.rate_at(base), Some(0.2));
        assert_eq!(series.rate_at(base + HALF_HOUR), Some(0.3));
        assert_eq!(series.len(), 2);
        assert_eq!(
            nearest_instant(base + HALF_HOUR / 2, HALF_HOUR),
            base + HALF_HOUR
        );
        assert_eq!(nearest_instant(-1, HALF_HOUR), 0);
    }

    #[test]
    fn gaps_and_earlier_readings_keep_every_value_in_place() {
        let mut series = GridSeries::new(HALF_HOUR, chrono_tz::UTC);
        series.push(10 * HALF_HOUR, 10.0, 100.0);
        series.push(14 * HALF_HOUR, 14.0, 100.0); // a gap of three instants
        series.push(7 * HALF_HOUR, 7.0, 100.0); // before the start: the store grows at the front
        let instants: Vec<_> = series
            .iter()
            .map(|(instant, value)| (instant / HALF_HOUR, value.occupied))
            .collect();
        assert_eq!(instants, vec![(7, 7.0), (10, 10.0), (14, 14.0)]);
        assert_eq!(series.len(), 3);
        assert_eq!(series.at(12 * HALF_HOUR), None, "a gap");
        assert_eq!(series.at(20 * HALF_HOUR), None, "after the end");
        assert_eq!(series.at(HALF_HOUR), None, "before the start");
        assert_eq!(series.at(10 * HALF_HOUR + 1), None, "off the grid");
        assert!(GridSeries::new(HALF_HOUR, chrono_tz::UTC).is_empty());
    }

    fn occupied_by_instant(series: &GridSeries) -> Vec<(i64, f64)> {
        series
            .iter()
            .map(|(instant, value)| (instant / HALF_HOUR, value.occupied))
            .collect()
    }

    #[test]
    fn fill_forward_holds_values_for_at_most_the_gap() {
        let mut series = GridSeries::new(HALF_HOUR, chrono_tz::UTC);
        series.push(10 * HALF_HOUR, 10.0, 100.0);
        series.push(13 * HALF_HOUR, 13.0, 100.0); // a gap of two instants: filled whole
        series.push(20 * HALF_HOUR, 20.0, 100.0); // a gap of six: only the first two are
        series.push(21 * HALF_HOUR, 21.0, 100.0);
        let filled = series.fill_forward(2 * HALF_HOUR);
        assert_eq!(
            occupied_by_instant(&series),
            vec![
                (10, 10.0),
                (11, 10.0),
                (12, 10.0),
                (13, 13.0),
                (14, 13.0),
                (15, 13.0),
                (20, 20.0),
                (21, 21.0),
                (22, 21.0), // after the last reading: for the gap, no longer
                (23, 21.0),
            ]
        );
        assert_eq!(filled, 6);
        assert_eq!(series.len(), 10);
        assert_eq!(series.at(16 * HALF_HOUR), None, "never across a longer gap");
        assert_eq!(series.at(24 * HALF_HOUR), None, "never past the last + gap");
        assert_eq!(series.at(9 * HALF_HOUR), None, "never before the first");
        assert_eq!(series.span_instants(), 14);
        assert_eq!(series.empty_instants(), 4);
    }

    #[test]
    fn short_gaps_are_told_from_long_ones() {
        let mut series = GridSeries::new(HALF_HOUR, chrono_tz::UTC);
        for instant in [0, 2, 3, 6, 20, 21] {
            series.push(instant * HALF_HOUR, 1.0, 10.0);
        }
        // Gaps of 1 (instant 1), 2 (4-5) and 13 (7-19) instants.
        assert_eq!(series.empty_instants(), 16);
        assert_eq!(series.empty_instants_in_short_gaps(0), 0);
        assert_eq!(series.empty_instants_in_short_gaps(1), 1);
        assert_eq!(series.empty_instants_in_short_gaps(4), 3);
        assert_eq!(series.empty_instants_in_short_gaps(13), 16);
    }

    #[test]
    fn filled_values_are_not_held_again_and_small_gaps_fill_nothing() {
        let mut series = GridSeries::new(HALF_HOUR, chrono_tz::UTC);
        series.push(0, 1.0, 10.0);
        series.push(5 * HALF_HOUR, 5.0, 10.0);
        let before = series.clone();
        assert_eq!(series.fill_forward(HALF_HOUR - 1), 0, "less than a step");
        assert_eq!(series.fill_forward(0), 0);
        assert_eq!(series.fill_forward(-HALF_HOUR), 0);
        assert_eq!(series, before);
        // One step of hold: instant 1 takes instant 0's value, instant 2 does not take instant 1's.
        assert_eq!(series.fill_forward(HALF_HOUR + 1), 2);
        assert_eq!(
            occupied_by_instant(&series),
            vec![(0, 1.0), (1, 1.0), (5, 5.0), (6, 5.0)]
        );
        let mut empty = GridSeries::new(HALF_HOUR, chrono_tz::UTC);
        assert_eq!(empty.fill_forward(4 * HALF_HOUR), 0);
        assert!(empty.is_empty());
        assert_eq!(empty.span_instants(), 0);
    }

    #[test]
    fn local_slots_follow_the_lots_time_zone() {
        let series = GridSeries::new(HALF_HOUR, chrono_tz::Europe::London);
        // 2016-07-01 07:30 UTC is 08:30 in London (BST).
        let instant = DateTime::parse_from_rfc3339("2016-07-01T07:30:00Z")
            .expect("valid")
            .timestamp_millis();
        let local = series.local(instant);
        assert_eq!(local.hour(), 8);
        assert_eq!(slot_of_day(local, 30), 17);
    }
}
