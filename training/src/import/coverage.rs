//! How a counter source's readings cover the trainer's grid, and whether it writes only changes.
//!
//! A sampled feed reports every few minutes whether or not the count moved, so consecutive
//! readings often repeat a value (every quiet night does) and almost every grid step has a
//! reading. A feed that writes only changes never repeats a value and leaves every step without a
//! change empty: imported as is, its grid is full of gaps and the backtest runs only on pairs near a
//! change. `GridCoverage::measure` puts each lot's readings on the grid the trainer would use
//! (the protocol's step for the source's cadence, [`crate::protocol::typical_gap`], else 15
//! minutes) and counts both; the import
//! warns when a lot looks change-only and no `--fill-forward` was given, and with one says what the
//! fill covers.

use parkcast_features::grid::short_gap_steps;
use std::fmt;

use parkcast_features::grid::GridSeries;

use super::counter::CounterReading;
use crate::protocol::{grid_step_minutes, typical_gap};

/// Grid step when the cadence gives none (readings further apart than an hour, or a single one).
const FALLBACK_STEP_MINUTES: u32 = 15;
/// Consecutive readings a lot needs before it is judged: a handful of daily readings says nothing.
const MIN_PAIRS: u64 = 20;
/// A lot looks change-only when at least this share of its steps has no reading and lies in a
/// short gap (a busy lot that writes only changes still misses one step in ten: its count stood
/// still then)...
const CHANGE_ONLY_EMPTY_SHARE: f64 = 0.1;
/// ...and at most this share of its consecutive readings repeat the previous value.
const CHANGE_ONLY_REPEAT_SHARE: f64 = 0.01;
/// The longest hold `--fill-forward` accepts: 7 days.
pub const MAX_HOLD_MINUTES: u32 = 7 * 24 * 60;

/// Grid steps and consecutive readings, summed over lots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LotTotals {
    /// Lots counted.
    pub lots: usize,
    /// Grid steps from each lot's first to its last reading, both counted.
    pub steps: u64,
    /// Those of them without a reading.
    pub empty_steps: u64,
    /// Those of the empty steps that lie in gaps of at most [`parkcast_features::grid::SHORT_GAP_MINUTES`].
    pub short_gap_steps: u64,
    /// Pairs of consecutive readings of a lot.
    pub pairs: u64,
    /// Pairs whose second reading repeats the first's occupied count and capacity.
    pub repeated_pairs: u64,
}

impl LotTotals {
    fn add(&mut self, other: &LotTotals) {
        self.lots += other.lots;
        self.steps += other.steps;
        self.empty_steps += other.empty_steps;
        self.short_gap_steps += other.short_gap_steps;
        self.pairs += other.pairs;
        self.repeated_pairs += other.repeated_pairs;
    }

    /// Share of steps without a reading (0 without steps).
    pub fn empty_share(&self) -> f64 {
        share(self.empty_steps, self.steps)
    }

    /// Share of consecutive readings that repeat a value (0 without pairs).
    pub fn repeat_share(&self) -> f64 {
        share(self.repeated_pairs, self.pairs)
    }

    /// Share of steps without a reading in a short gap (0 without steps).
    pub fn short_gap_share(&self) -> f64 {
        share(self.short_gap_steps, self.steps)
    }

    /// Whether these readings look like a feed that writes only changes.
    fn looks_change_only(&self) -> bool {
        self.pairs >= MIN_PAIRS
            && self.short_gap_share() >= CHANGE_ONLY_EMPTY_SHARE
            && self.repeat_share() <= CHANGE_ONLY_REPEAT_SHARE
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// What `--fill-forward` covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillCoverage {
    /// The hold, minutes.
    pub hold_minutes: u32,
    /// Lots with at least one step filled.
    pub lots: usize,
    /// Steps filled (including those after a lot's last reading, up to the hold).
    pub filled_steps: u64,
    /// Steps between a lot's first and last reading that stay empty: gaps longer than the hold.
    pub empty_steps: u64,
}

/// How a counter source's readings cover the grid; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct GridCoverage {
    /// The writer name of the source.
    pub source: String,
    /// The grid step the readings were put on, minutes.
    pub step_minutes: u32,
    /// Every lot.
    pub all: LotTotals,
    /// The lots that look change-only (enough readings, at least 10% of steps empty in gaps of at
    /// most [`parkcast_features::grid::SHORT_GAP_MINUTES`], at most 1% of consecutive readings repeating a value).
    pub change_only: LotTotals,
    /// What the fill covers, when one was asked.
    pub fill: Option<FillCoverage>,
}

impl GridCoverage {
    /// Measures `readings` (sorted by lot and time) of `source`; `hold_minutes` is the import's
    /// `--fill-forward`. `None` without readings.
    pub(crate) fn measure(
        source: &str,
        readings: &[CounterReading],
        hold_minutes: Option<u32>,
    ) -> Option<GridCoverage> {
        let lots: Vec<&[CounterReading]> = readings
            .chunk_by(|first, second| first.lot == second.lot)
            .collect();
        let mut cadences: Vec<i64> = lots
            .iter()
            .filter_map(|lot| {
                let mut gaps: Vec<i64> = lot
                    .windows(2)
                    .map(|pair| (pair[1].ts - pair[0].ts).num_milliseconds())
                    .filter(|gap| *gap > 0)
                    .collect();
                typical_gap(&mut gaps)
            })
            .collect();
        let step_minutes = lower_median(&mut cadences)
            .and_then(|gap| grid_step_minutes(gap as f64 / 60_000.0))
            .unwrap_or(FALLBACK_STEP_MINUTES);
        let step_ms = i64::from(step_minutes) * 60_000;

        let mut coverage = GridCoverage {
            source: source.to_owned(),
            step_minutes,
            all: LotTotals::default(),
            change_only: LotTotals::default(),
            fill: hold_minutes.map(|hold_minutes| FillCoverage {
                hold_minutes,
                lots: 0,
                filled_steps: 0,
                empty_steps: 0,
            }),
        };
        for lot in &lots {
            let mut series = GridSeries::new(step_ms, chrono_tz::UTC);
            for reading in lot.iter() {
                series.push(
                    reading.ts.timestamp_millis(),
                    f64::from(reading.occupied),
                    f64::from(reading.capacity),
                );
            }
            let totals = LotTotals {
                lots: 1,
                steps: series.span_instants() as u64,
                empty_steps: series.empty_instants() as u64,
                short_gap_steps: series.empty_instants_in_short_gaps(short_gap_steps(step_minutes))
                    as u64,
                pairs: lot.len().saturating_sub(1) as u64,
                repeated_pairs: lot
                    .windows(2)
                    .filter(|pair| {
                        (pair[0].occupied, pair[0].capacity) == (pair[1].occupied, pair[1].capacity)
                    })
                    .count() as u64,
            };
            coverage.all.add(&totals);
            if totals.looks_change_only() {
                coverage.change_only.add(&totals);
            }
            if let Some(fill) = coverage.fill.as_mut() {
                let filled = series.fill_forward(i64::from(fill.hold_minutes) * 60_000);
                fill.lots += usize::from(filled > 0);
                fill.filled_steps += filled as u64;
                // The fill covers every step after the last reading it reaches, so what stays empty
                // lies between the first and last reading.
                fill.empty_steps += series.empty_instants() as u64;
            }
        }
        (coverage.all.lots > 0).then_some(coverage)
    }

    /// Whether some lot looks change-only and no fill was asked: the import should warn.
    pub fn looks_change_only(&self) -> bool {
        self.fill.is_none() && self.change_only.lots > 0
    }

    /// The warning for a source that looks change-only, or `None`.
    pub fn warning(&self) -> Option<String> {
        if !self.looks_change_only() {
            return None;
        }
        let lots = &self.change_only;
        let repeats = if lots.repeated_pairs == 0 {
            "consecutive readings never repeat a value".to_owned()
        } else {
            format!(
                "consecutive readings repeat a value only {:.1}% of the time",
                100.0 * lots.repeat_share()
            )
        };
        let which = if lots.lots == self.all.lots {
            format!("all {} lots", lots.lots)
        } else {
            format!("{} of {} lots", lots.lots, self.all.lots)
        };
        Some(format!(
            "{}: {:.0}% of {}-min steps between first and last reading have no reading, and {repeats} \
             ({which}): the source looks like it writes only changes; import again with \
             --fill-forward <max gap> (e.g. 2h) so a value holds until the next",
            self.source,
            100.0 * lots.empty_share(),
            self.step_minutes,
        ))
    }

    /// What the fill covers, in a sentence, when one was asked.
    pub fn fill_summary(&self) -> Option<String> {
        let fill = self.fill.as_ref()?;
        let hold = format_minutes(fill.hold_minutes);
        Some(format!(
            "{}: --fill-forward {hold} holds readings over {} empty {}-min steps in {} of {} lots; \
             {} steps stay empty ({:.1}% of {}: gaps longer than {hold})",
            self.source,
            fill.filled_steps,
            self.step_minutes,
            fill.lots,
            self.all.lots,
            fill.empty_steps,
            100.0 * share(fill.empty_steps, self.all.steps),
            self.all.steps,
        ))
    }
}

impl fmt::Display for GridCoverage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}: {:.0}% of {}-min steps without a reading, {:.1}% of consecutive readings repeat a value",
            self.source,
            100.0 * self.all.empty_share(),
            self.step_minutes,
            100.0 * self.all.repeat_share()
        )
    }
}

/// The median of `values` (the lower one of an even count); `None` when empty.
fn lower_median(values: &mut [i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let middle = (values.len() - 1) / 2;
    Some(*values.select_nth_unstable(middle).1)
}

/// Why a `--fill-forward` duration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HoldError {
    /// Not a duration (humantime's syntax), or not whole minutes.
    #[error(
        "{text:?} is not a whole number of minutes; write a number and a unit: 90m, 2h, 1h30m, 1d"
    )]
    Unreadable {
        /// The text given.
        text: String,
    },
    /// Zero, or longer than [`MAX_HOLD_MINUTES`].
    #[error("{minutes} minutes is out of range: a reading can hold for 1 minute to 7 days (7d)")]
    OutOfRange {
        /// The minutes given.
        minutes: u64,
    },
}

/// Reads a hold such as `2h`, `90m`, `90min`, `1h30m` or `1d` (humantime's syntax) as minutes, in 1 to
/// 7 days' worth; a duration that is not whole minutes is unreadable.
pub fn parse_hold(text: &str) -> Result<u32, HoldError> {
    let unreadable = || HoldError::Unreadable {
        text: text.to_owned(),
    };
    let duration = humantime::parse_duration(text.trim()).map_err(|_| unreadable())?;
    if duration.subsec_nanos() != 0 || duration.as_secs() % 60 != 0 {
        return Err(unreadable());
    }
    check_hold(duration.as_secs() / 60)
}

/// `minutes` as a hold, if it is 1 minute to 7 days.
pub fn check_hold(minutes: u64) -> Result<u32, HoldError> {
    match u32::try_from(minutes) {
        Ok(minutes) if (1..=MAX_HOLD_MINUTES).contains(&minutes) => Ok(minutes),
        _ => Err(HoldError::OutOfRange { minutes }),
    }
}

/// A hold as the flag takes it: `2h`, `1h30m`, `45m`, `1d`.
pub fn format_minutes(minutes: u32) -> String {
    let (days, hours, rest) = (minutes / 1440, minutes % 1440 / 60, minutes % 60);
    let mut text = String::new();
    for (value, unit) in [(days, "d"), (hours, "h"), (rest, "m")] {
        if value > 0 {
            text.push_str(&format!("{value}{unit}"));
        }
    }
    if text.is_empty() {
        "0m".to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(minute * 60, 0).expect("test instants should be in range")
    }

    fn reading(lot: u32, minute: i64, occupied: i32) -> CounterReading {
        CounterReading {
            lot,
            ts: at(minute),
            occupied,
            capacity: 100,
        }
    }

    /// A day of a 15-minute count that moves at three steps of four: sampled, it repeats every
    /// fourth value; written on change only, every fourth step has no reading and nothing repeats.
    fn day(lot: u32, change_only: bool) -> Vec<CounterReading> {
        let mut readings = Vec::new();
        let mut occupied = 50;
        for step in 0..96_i64 {
            let moved = step % 4 != 0;
            if moved {
                occupied += if step % 2 == 0 { 1 } else { -2 };
            }
            if moved || !change_only || step == 0 {
                // Loggers write a few minutes after the quarter.
                readings.push(reading(lot, step * 15 + step % 4, occupied));
            }
        }
        readings
    }

    #[test]
    fn a_feed_that_writes_only_changes_is_told_from_a_sampled_one() {
        let sampled = GridCoverage::measure("csv-a", &day(0, false), None).expect("readings");
        assert_eq!(sampled.step_minutes, 15);
        assert_eq!(sampled.all.empty_steps, 0);
        assert!(sampled.all.repeat_share() > 0.2, "{sampled}");
        assert!(!sampled.looks_change_only());
        assert_eq!(sampled.warning(), None);

        let mut readings = day(0, true);
        readings.extend(day(1, true));
        let changes = GridCoverage::measure("csv-b", &readings, None).expect("readings");
        assert_eq!(changes.step_minutes, 15, "the median gap is still a step");
        assert_eq!(changes.change_only.lots, 2);
        assert_eq!(changes.all.repeated_pairs, 0);
        let warning = changes.warning().expect("a warning");
        assert!(
            warning.starts_with(
                "csv-b: 24% of 15-min steps between first and last reading have no reading, and \
                 consecutive readings never repeat a value (all 2 lots): the source looks like it \
                 writes only changes; import again with --fill-forward"
            ),
            "{warning}"
        );
        assert_eq!(changes.fill_summary(), None);
    }

    #[test]
    fn with_a_fill_there_is_no_warning_but_what_it_covers() {
        let mut readings = day(0, true);
        // A second lot with a 3-hour outage (no reading at steps 40 to 52): a 2-hour hold covers
        // its first 8 steps, 5 stay empty.
        readings.extend(
            day(1, true)
                .into_iter()
                .filter(|reading| !(600..780).contains(&reading.ts.timestamp().div_euclid(60))),
        );
        let filled = GridCoverage::measure("csv-c", &readings, Some(120)).expect("readings");
        assert_eq!(filled.warning(), None);
        let fill = filled.fill.expect("a fill");
        assert_eq!(fill.lots, 2);
        assert_eq!(fill.empty_steps, 5, "{fill:?}");
        assert!(fill.filled_steps > 60, "{fill:?}");
        let summary = filled.fill_summary().expect("a summary");
        assert!(
            summary.starts_with("csv-c: --fill-forward 2h holds readings over"),
            "{summary}"
        );
    }

    #[test]
    fn nights_without_readings_are_no_sign_of_change_only() {
        // Birmingham's way: every half hour from 08:00 to 16:30, a count that always moves, no
        // reading at night. Two thirds of the steps are empty, but in 15-hour gaps.
        let readings: Vec<_> = (0..14_i64)
            .flat_map(|day| {
                (0..18_i64).map(move |slot| {
                    reading(0, day * 1440 + 480 + slot * 30, (day * 18 + slot) as i32)
                })
            })
            .collect();
        let coverage = GridCoverage::measure("csv-f", &readings, None).expect("readings");
        assert_eq!(coverage.step_minutes, 30);
        assert!(coverage.all.empty_share() > 0.6, "{coverage}");
        assert_eq!(coverage.all.short_gap_steps, 0);
        assert_eq!(coverage.all.repeated_pairs, 0);
        assert_eq!(coverage.warning(), None);
    }

    #[test]
    fn few_readings_are_not_judged() {
        // A reading a day (the cadence gives no grid step: 15 minutes) never repeats, but seven
        // days say nothing about the feed.
        let readings: Vec<_> = (0..7)
            .map(|day| reading(0, day * 1440, day as i32))
            .collect();
        let coverage = GridCoverage::measure("csv-d", &readings, None).expect("readings");
        assert_eq!(coverage.step_minutes, 15);
        assert!(coverage.all.empty_share() > 0.9);
        assert_eq!(coverage.warning(), None);
        assert_eq!(GridCoverage::measure("csv-e", &[], None), None);
    }

    #[test]
    fn holds_read_as_the_flag_writes_them() {
        assert_eq!(parse_hold("2h"), Ok(120));
        assert_eq!(parse_hold("90m"), Ok(90));
        assert_eq!(parse_hold("90min"), Ok(90));
        assert_eq!(parse_hold(" 1h30m "), Ok(90));
        assert_eq!(parse_hold("7d"), Ok(MAX_HOLD_MINUTES));
        assert_eq!(parse_hold("2 hours"), Ok(120));
        assert_eq!(parse_hold("1.5h"), Ok(90));
        assert_eq!(parse_hold("0h"), Err(HoldError::OutOfRange { minutes: 0 }));
        assert_eq!(
            parse_hold("7d1m"),
            Err(HoldError::OutOfRange { minutes: 10_081 })
        );
        for text in ["", "2", "h", "-2h", "2s", "99999999999999999999d"] {
            assert!(
                matches!(parse_hold(text), Err(HoldError::Unreadable { .. })),
                "{text:?}"
            );
        }
        for minutes in [1, 45, 90, 120, 1440, 1530, MAX_HOLD_MINUTES] {
            assert_eq!(parse_hold(&format_minutes(minutes)), Ok(minutes));
        }
    }
}
