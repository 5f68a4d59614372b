//! Cleaning and writing of counter series: sources that report, per lot and instant, how many slots
//! are occupied (or free) out of a capacity (Birmingham, Málaga, the generic CSV).
//!
//! The steps run in a fixed order (see the module docs of `import`): drop invalid counts and
//! duplicates on the values as the file gives them, drop frozen runs, fill missing capacities, turn
//! free counts into occupied ones, clip to capacity, note capacity changes. An adapter parses its
//! file, resolves local times and then configures one [`CounterCleaning`], which runs the steps in
//! that order and lists the rules it applies, so the adapters cannot drift apart.

use chrono::{DateTime, TimeDelta, Utc};
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::rows::{LotOccupancyRow, LotRow};

use super::common::{SourceSite, TableWriter};
use super::coverage::GridCoverage;
use super::local_time::DstCounts;
use super::rules::{Rule, RuleTally};
use super::{ImportError, ImportReport};
use crate::progress::Progress;

/// One counter reading as the source gives it, its time already in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawCount {
    /// Index of the lot in the adapter's lot list.
    pub(crate) lot: u32,
    /// The instant.
    pub(crate) ts: DateTime<Utc>,
    /// Occupied or free slots, as [`CountKind`] says.
    pub(crate) count: i32,
    /// Capacity, when the row gives one.
    pub(crate) capacity: Option<i32>,
    /// 1-based line in the file, to keep file order among equal instants.
    pub(crate) line: u64,
}

/// What the count of a [`RawCount`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CountKind {
    /// Occupied slots.
    Occupied,
    /// Free slots: occupied = capacity - free.
    Free,
}

/// A cleaned reading, ready to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CounterReading {
    /// Index of the lot in the adapter's lot list.
    pub(crate) lot: u32,
    /// The instant.
    pub(crate) ts: DateTime<Utc>,
    /// Occupied slots, within `[0, capacity]`.
    pub(crate) occupied: i32,
    /// Capacity.
    pub(crate) capacity: i32,
}

/// Sorts readings by lot and time (file order among equal instants), drops negative counts, then
/// keeps the last reading in file order of every lot and instant. Counts `negative_dropped`,
/// `exact_duplicate_dropped` (same count and capacity as the kept one) and
/// `conflicting_duplicate_kept_last`.
fn drop_negative_and_duplicates(mut rows: Vec<RawCount>, tally: &mut RuleTally) -> Vec<RawCount> {
    rows.sort_unstable_by_key(|row| (row.lot, row.ts, row.line));
    let before = rows.len();
    rows.retain(|row| row.count >= 0);
    tally.add(Rule::NegativeDropped, (before - rows.len()) as u64);

    let mut kept: Vec<RawCount> = Vec::with_capacity(rows.len());
    let (mut exact, mut conflicting) = (0_u64, 0_u64);
    let mut start = 0;
    while start < rows.len() {
        let mut end = start + 1;
        while end < rows.len() && (rows[end].lot, rows[end].ts) == (rows[start].lot, rows[start].ts)
        {
            end += 1;
        }
        let last = rows[end - 1];
        for dropped in &rows[start..end - 1] {
            if (dropped.count, dropped.capacity) == (last.count, last.capacity) {
                exact += 1;
            } else {
                conflicting += 1;
            }
        }
        kept.push(last);
        start = end;
    }
    tally.add(Rule::ExactDuplicateDropped, exact);
    tally.add(Rule::ConflictingDuplicateKeptLast, conflicting);
    kept
}

/// The index ranges of each lot's run in rows sorted by lot.
fn lot_runs(rows: &[RawCount]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    for index in 1..=rows.len() {
        if index == rows.len() || rows[index].lot != rows[start].lot {
            runs.push(start..index);
            start = index;
        }
    }
    runs
}

/// Drops the readings of a frozen feed: when a lot's count stays the same for longer than
/// `longest_unchanged`, the run's first reading is kept (the last value known to be fresh) and the
/// rest are dropped, counting `frozen_value_dropped`. Rows must be sorted by lot and time.
fn drop_frozen_runs(
    rows: Vec<RawCount>,
    longest_unchanged: TimeDelta,
    tally: &mut RuleTally,
) -> Vec<RawCount> {
    let mut kept = Vec::with_capacity(rows.len());
    let mut start = 0;
    while start < rows.len() {
        let first = rows[start];
        let mut end = start + 1;
        while end < rows.len() && rows[end].lot == first.lot && rows[end].count == first.count {
            end += 1;
        }
        let last = rows[end - 1];
        if last.ts - first.ts > longest_unchanged {
            kept.push(first);
        } else {
            kept.extend_from_slice(&rows[start..end]);
        }
        start = end;
    }
    tally.add(Rule::FrozenValueDropped, (rows.len() - kept.len()) as u64);
    kept
}

/// Gives every reading without a capacity the lot's nearest known capacity in time (the earlier one
/// on a tie), counting `capacity_filled_from_lot`. Rows must be sorted by lot and time. Returns the
/// lots that have no capacity on any row; their rows are left without one.
fn fill_capacities_from_lot(rows: &mut [RawCount], tally: &mut RuleTally) -> Vec<u32> {
    let mut filled = 0_u64;
    let mut lots_without_capacity = Vec::new();
    for run in lot_runs(rows) {
        let lot_rows = &mut rows[run];
        if lot_rows.iter().all(|row| row.capacity.is_none()) {
            lots_without_capacity.extend(lot_rows.first().map(|row| row.lot));
            continue;
        }
        // The nearest known capacity before each row, then after it.
        let mut before: Vec<Option<(DateTime<Utc>, i32)>> = Vec::with_capacity(lot_rows.len());
        let mut last_known = None;
        for row in lot_rows.iter() {
            if let Some(capacity) = row.capacity {
                last_known = Some((row.ts, capacity));
            }
            before.push(last_known);
        }
        let mut next_known = None;
        for (row, before) in lot_rows.iter_mut().zip(before).rev() {
            if let Some(capacity) = row.capacity {
                next_known = Some((row.ts, capacity));
                continue;
            }
            let nearest = match (before, next_known) {
                (Some((before_ts, before_capacity)), Some((after_ts, after_capacity))) => {
                    if after_ts - row.ts < row.ts - before_ts {
                        after_capacity
                    } else {
                        before_capacity
                    }
                }
                (known_before, known_after) => known_before
                    .or(known_after)
                    .map(|(_, capacity)| capacity)
                    .expect(
                        "a lot with a known capacity should have one before or after every row",
                    ),
            };
            row.capacity = Some(nearest);
            filled += 1;
        }
    }
    tally.add(Rule::CapacityFilledFromLot, filled);
    lots_without_capacity
}

/// Gives the rows of `lots` (which report no capacity at all) the largest free count each lot ever
/// reported as capacity, counting `capacity_inferred_from_max_free` per row. Rows must be sorted by
/// lot and hold free counts.
fn infer_capacity_from_max_free(rows: &mut [RawCount], lots: &[u32], tally: &mut RuleTally) {
    let mut inferred = 0_u64;
    for run in lot_runs(rows) {
        let lot_rows = &mut rows[run];
        if !lot_rows.first().is_some_and(|row| lots.contains(&row.lot)) {
            continue;
        }
        let max_free = lot_rows.iter().map(|row| row.count).max().unwrap_or(0);
        for row in lot_rows.iter_mut() {
            row.capacity = Some(max_free);
            inferred += 1;
        }
    }
    tally.add(Rule::CapacityInferredFromMaxFree, inferred);
}

/// Turns counts into occupied readings within capacity: a free count above capacity gives occupied
/// 0 (`free_above_capacity_clipped`, free counts only), an occupied count above capacity is set to
/// the capacity (`above_capacity_clipped`), and each change of a lot's capacity from its previous
/// reading is noted (`capacity_changed`). Rows must be sorted by lot and time and all have a
/// capacity.
fn into_occupied(
    rows: Vec<RawCount>,
    kind: CountKind,
    tally: &mut RuleTally,
) -> Vec<CounterReading> {
    let (mut free_clipped, mut occupied_clipped, mut capacity_changes) = (0_u64, 0_u64, 0_u64);
    let mut readings: Vec<CounterReading> = Vec::with_capacity(rows.len());
    for row in rows {
        let capacity = row
            .capacity
            .expect("every reading should have a capacity before conversion");
        let counted_occupied = match kind {
            CountKind::Occupied => row.count,
            CountKind::Free if row.count > capacity => {
                free_clipped += 1;
                0
            }
            CountKind::Free => capacity - row.count,
        };
        let occupied = if counted_occupied > capacity {
            occupied_clipped += 1;
            capacity
        } else {
            counted_occupied
        };
        if let Some(previous) = readings.last()
            && previous.lot == row.lot
            && previous.capacity != capacity
        {
            capacity_changes += 1;
        }
        readings.push(CounterReading {
            lot: row.lot,
            ts: row.ts,
            occupied,
            capacity,
        });
    }
    if kind == CountKind::Free {
        tally.add(Rule::FreeAboveCapacityClipped, free_clipped);
    }
    tally.add(Rule::AboveCapacityClipped, occupied_clipped);
    tally.add(Rule::CapacityChanged, capacity_changes);
    readings
}

/// Where the capacities of a counter source come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capacities {
    /// Every row gives one (the adapter refuses a row without).
    Given,
    /// A row without one takes its lot's nearest in time; a lot that never gives one is returned
    /// by [`CounterCleaning::run`] for the adapter to refuse.
    FromLot,
    /// As [`Capacities::FromLot`], and a lot that never gives one takes the largest free count it
    /// reported (free counts only).
    FromLotElseMaxFree,
}

/// One counter source's cleaning: which optional steps run. The steps, their order and the rules
/// they count are the same for every source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CounterCleaning {
    /// The source's own rules, counted by its adapter while parsing (reported after the DST ones).
    pub(crate) source_rules: &'static [Rule],
    /// Whether the source may give free counts (occupied = capacity - free).
    pub(crate) free_counts: bool,
    /// Drop runs of one unchanged value that last longer than this (a stuck counter).
    pub(crate) longest_unchanged: Option<TimeDelta>,
    /// Where capacities come from.
    pub(crate) capacities: Capacities,
}

/// What [`CounterCleaning::run`] leaves.
#[derive(Debug)]
pub(crate) struct Cleaned {
    /// Readings within capacity, sorted by lot and time.
    pub(crate) readings: Vec<CounterReading>,
    /// Lots that never reported a capacity: with [`Capacities::FromLot`] their readings are
    /// dropped (the adapter refuses them); with [`Capacities::FromLotElseMaxFree`] they got their
    /// largest free count.
    pub(crate) lots_without_capacity: Vec<u32>,
}

impl CounterCleaning {
    /// The rules this cleaning counts, in report order.
    pub(crate) fn rules(&self) -> Vec<Rule> {
        let mut rules = vec![Rule::DstAmbiguousResolved, Rule::DstGapShifted];
        rules.extend_from_slice(self.source_rules);
        rules.extend([
            Rule::NegativeDropped,
            Rule::ExactDuplicateDropped,
            Rule::ConflictingDuplicateKeptLast,
        ]);
        if self.longest_unchanged.is_some() {
            rules.push(Rule::FrozenValueDropped);
        }
        if self.capacities != Capacities::Given {
            rules.push(Rule::CapacityFilledFromLot);
        }
        if self.capacities == Capacities::FromLotElseMaxFree {
            rules.push(Rule::CapacityInferredFromMaxFree);
        }
        if self.free_counts {
            rules.push(Rule::FreeAboveCapacityClipped);
        }
        rules.extend([Rule::AboveCapacityClipped, Rule::CapacityChanged]);
        rules
    }

    /// An empty tally of [`CounterCleaning::rules`], for the adapter's own rules while parsing.
    pub(crate) fn tally(&self) -> RuleTally {
        RuleTally::new(&self.rules())
    }

    /// Cleans `rows` (counts of `kind`, times resolved with `dst`) in the fixed order.
    pub(crate) fn run(
        &self,
        rows: Vec<RawCount>,
        kind: CountKind,
        dst: DstCounts,
        tally: &mut RuleTally,
    ) -> Cleaned {
        debug_assert!(self.free_counts || kind == CountKind::Occupied);
        tally.add(Rule::DstAmbiguousResolved, dst.ambiguous);
        tally.add(Rule::DstGapShifted, dst.gap);
        let mut kept = drop_negative_and_duplicates(rows, tally);
        if let Some(longest) = self.longest_unchanged {
            kept = drop_frozen_runs(kept, longest, tally);
        }
        let mut lots_without_capacity = Vec::new();
        match self.capacities {
            Capacities::Given => {}
            Capacities::FromLot => {
                lots_without_capacity = fill_capacities_from_lot(&mut kept, tally);
                kept.retain(|row| row.capacity.is_some());
            }
            Capacities::FromLotElseMaxFree => {
                lots_without_capacity = fill_capacities_from_lot(&mut kept, tally);
                infer_capacity_from_max_free(&mut kept, &lots_without_capacity, tally);
            }
        }
        Cleaned {
            readings: into_occupied(kept, kind, tally),
            lots_without_capacity,
        }
    }
}

/// A lot of a counter source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CounterLot {
    /// Prefixed lot id.
    pub(crate) lot_id: String,
    /// Human-readable name.
    pub(crate) name: String,
    /// `garage`, `unknown`, ...
    pub(crate) kind: &'static str,
    /// WGS84 latitude, when known.
    pub(crate) latitude: Option<f64>,
    /// WGS84 longitude, when known.
    pub(crate) longitude: Option<f64>,
}

/// What a counter adapter hands over for writing.
pub(crate) struct CounterImport<'a> {
    /// Where the data is from.
    pub(crate) site: &'a SourceSite,
    /// The lots, indexed by [`CounterReading::lot`].
    pub(crate) lots: &'a [CounterLot],
    /// Cleaned readings, sorted by lot and time.
    pub(crate) readings: &'a [CounterReading],
    /// Rule counts.
    pub(crate) tally: RuleTally,
    /// Data rows read.
    pub(crate) rows_read: u64,
    /// How long a reading holds, for a source that writes only changes (`dim_lot.hold_minutes`).
    pub(crate) hold_minutes: Option<u32>,
    /// How the readings cover the grid, for the report.
    pub(crate) coverage: Option<GridCoverage>,
}

/// Writes `fact_lot_occupancy`, `dim_lot` (capacity of the latest reading), `dim_zone` and
/// `dim_calendar`, replacing the writer's earlier rows, and builds the report.
pub(crate) fn write_counter_import(
    import: CounterImport<'_>,
    warehouse: &Warehouse,
    progress: &dyn Progress,
) -> Result<ImportReport, ImportError> {
    let CounterImport {
        site,
        lots,
        readings,
        tally,
        rows_read,
        hold_minutes,
        coverage,
    } = import;
    let mut latest_capacity: Vec<Option<i32>> = vec![None; lots.len()];
    for reading in readings {
        latest_capacity[reading.lot as usize] = Some(reading.capacity);
    }
    let first_ts = readings.iter().map(|reading| reading.ts).min();
    let last_ts = readings.iter().map(|reading| reading.ts).max();

    let occupancy_rows: Vec<LotOccupancyRow> = readings
        .iter()
        .map(|reading| LotOccupancyRow {
            lot_id: lots[reading.lot as usize].lot_id.clone(),
            ts: reading.ts,
            occupied: reading.occupied,
            unknown: 0,
            capacity: reading.capacity,
            source: site.writer.clone(),
        })
        .collect();
    let mut lots_without_readings = Vec::new();
    let lot_rows: Vec<LotRow> = lots
        .iter()
        .zip(&latest_capacity)
        .filter_map(|(lot, capacity)| {
            let Some(capacity) = capacity else {
                lots_without_readings.push(lot.lot_id.as_str());
                return None;
            };
            Some(LotRow {
                lot_id: lot.lot_id.clone(),
                zone_id: site.zone_id.clone(),
                name: lot.name.clone(),
                kind: lot.kind.to_owned(),
                capacity: *capacity,
                latitude: lot.latitude,
                longitude: lot.longitude,
                timezone: site.timezone.name().to_owned(),
                holiday_region: site.holiday_region_text(),
                source: site.writer.clone(),
                hold_minutes: hold_minutes.map(|minutes| {
                    i32::try_from(minutes).expect("a checked hold should fit in i32")
                }),
            })
        })
        .collect();
    if !lots_without_readings.is_empty() {
        tracing::warn!(
            source = %site.writer,
            lots = %lots_without_readings.join(", "),
            "lots without any kept reading are left out of dim_lot"
        );
    }
    let calendar_rows = match (first_ts, last_ts) {
        (Some(first), Some(last)) => site.calendar_rows(warehouse, first, last)?,
        _ => None,
    };

    let mut writer = TableWriter::new(warehouse, &site.writer, 4, progress);
    writer.replace(&occupancy_rows)?;
    writer.replace(&lot_rows)?;
    writer.replace(&[site.zone_row()])?;
    writer.replace_calendar(calendar_rows, site.calendar_file.as_ref())?;
    Ok(ImportReport {
        source: site.writer.clone(),
        rows_read,
        rules: tally.into_counts(),
        written: writer.finish(),
        lots: lot_rows.len(),
        first_ts,
        last_ts,
        coverage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARED_RULES: [Rule; 7] = [
        Rule::NegativeDropped,
        Rule::ExactDuplicateDropped,
        Rule::ConflictingDuplicateKeptLast,
        Rule::CapacityFilledFromLot,
        Rule::FreeAboveCapacityClipped,
        Rule::AboveCapacityClipped,
        Rule::CapacityChanged,
    ];

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(minute * 60, 0).expect("test instants should be in range")
    }

    fn raw(lot: u32, minute: i64, count: i32, capacity: Option<i32>, line: u64) -> RawCount {
        RawCount {
            lot,
            ts: at(minute),
            count,
            capacity,
            line,
        }
    }

    #[test]
    fn duplicates_keep_the_last_in_file_order_and_tell_exact_from_conflicting() {
        let mut tally = RuleTally::new(&SHARED_RULES);
        let rows = vec![
            raw(0, 10, 5, Some(9), 2),
            raw(0, 10, 5, Some(9), 3), // exact repeat of line 2
            raw(0, 20, 7, Some(9), 4),
            raw(0, 20, 8, Some(9), 5), // conflicts with line 4, wins as the later one
            raw(1, 10, 1, Some(9), 6), // another lot at the same instant is no duplicate
            raw(0, 30, -2, Some(9), 7), // negative: dropped before duplicates are looked at
            raw(0, 30, 4, Some(9), 8),
        ];
        let kept = drop_negative_and_duplicates(rows, &mut tally);
        let lines: Vec<u64> = kept.iter().map(|row| row.line).collect();
        assert_eq!(lines, vec![3, 5, 8, 6]);
        assert_eq!(tally.get(Rule::NegativeDropped), 1);
        assert_eq!(tally.get(Rule::ExactDuplicateDropped), 1);
        assert_eq!(tally.get(Rule::ConflictingDuplicateKeptLast), 1);
    }

    #[test]
    fn a_repeat_matching_the_kept_value_is_exact_even_after_a_conflict() {
        let mut tally = RuleTally::new(&SHARED_RULES);
        let rows = vec![
            raw(0, 10, 5, Some(9), 2),
            raw(0, 10, 6, Some(9), 3),
            raw(0, 10, 5, Some(9), 4),
        ];
        let kept = drop_negative_and_duplicates(rows, &mut tally);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].line, 4);
        assert_eq!(tally.get(Rule::ExactDuplicateDropped), 1);
        assert_eq!(tally.get(Rule::ConflictingDuplicateKeptLast), 1);
    }

    #[test]
    fn a_count_unchanged_for_too_long_keeps_only_its_first_reading() {
        let mut tally = RuleTally::new(&[Rule::FrozenValueDropped]);
        let rows = vec![
            raw(0, 0, 5, None, 2),
            raw(0, 30, 5, None, 3),
            raw(0, 61, 5, None, 4), // 61 minutes unchanged: frozen, only the first stays
            raw(0, 70, 6, None, 5),
            raw(0, 130, 6, None, 6), // exactly the limit: kept
            raw(1, 140, 6, None, 7), // another lot starts its own run
        ];
        let kept = drop_frozen_runs(rows, TimeDelta::minutes(60), &mut tally);
        let lines: Vec<u64> = kept.iter().map(|row| row.line).collect();
        assert_eq!(lines, vec![2, 5, 6, 7]);
        assert_eq!(tally.get(Rule::FrozenValueDropped), 2);
    }

    #[test]
    fn missing_capacities_take_the_nearest_known_one_in_time() {
        let mut tally = RuleTally::new(&SHARED_RULES);
        let mut rows = vec![
            raw(0, 0, 1, None, 2), // only a later capacity: 100
            raw(0, 10, 1, Some(100), 3),
            raw(0, 14, 1, None, 4), // 4 after 100, 6 before 200: 100
            raw(0, 15, 1, None, 5), // tie: the earlier, 100
            raw(0, 16, 1, None, 6), // 4 before 200: 200
            raw(0, 20, 1, Some(200), 7),
            raw(0, 90, 1, None, 8), // only an earlier capacity: 200
            raw(1, 0, 1, None, 9),  // a lot without any capacity
        ];
        let without = fill_capacities_from_lot(&mut rows, &mut tally);
        let capacities: Vec<Option<i32>> = rows.iter().map(|row| row.capacity).collect();
        assert_eq!(
            capacities,
            vec![
                Some(100),
                Some(100),
                Some(100),
                Some(100),
                Some(200),
                Some(200),
                Some(200),
                None
            ]
        );
        assert_eq!(without, vec![1]);
        assert_eq!(tally.get(Rule::CapacityFilledFromLot), 5);
    }

    #[test]
    fn lots_without_capacity_get_their_largest_free_count() {
        let mut tally = RuleTally::new(&[Rule::CapacityInferredFromMaxFree]);
        let mut rows = vec![
            raw(0, 0, 3, Some(9), 2),
            raw(1, 0, 40, None, 3),
            raw(1, 1, 55, None, 4),
        ];
        infer_capacity_from_max_free(&mut rows, &[1], &mut tally);
        let capacities: Vec<Option<i32>> = rows.iter().map(|row| row.capacity).collect();
        assert_eq!(capacities, vec![Some(9), Some(55), Some(55)]);
        assert_eq!(tally.get(Rule::CapacityInferredFromMaxFree), 2);
    }

    #[test]
    fn counts_are_clipped_to_capacity_and_capacity_changes_noted() {
        let mut tally = RuleTally::new(&SHARED_RULES);
        let free = vec![
            raw(0, 0, 12, Some(10), 2),
            raw(0, 1, 4, Some(10), 3),
            raw(0, 2, 4, Some(12), 4),
        ];
        let readings = into_occupied(free, CountKind::Free, &mut tally);
        let occupied: Vec<(i32, i32)> = readings
            .iter()
            .map(|reading| (reading.occupied, reading.capacity))
            .collect();
        assert_eq!(occupied, vec![(0, 10), (6, 10), (8, 12)]);
        assert_eq!(tally.get(Rule::FreeAboveCapacityClipped), 1);
        assert_eq!(tally.get(Rule::CapacityChanged), 1);

        let occupied_rows = vec![raw(0, 0, 12, Some(10), 2), raw(1, 0, 3, Some(5), 3)];
        let readings = into_occupied(occupied_rows, CountKind::Occupied, &mut tally);
        assert_eq!(readings[0].occupied, 10);
        assert_eq!(tally.get(Rule::AboveCapacityClipped), 1);
        assert_eq!(
            tally.get(Rule::CapacityChanged),
            1,
            "a new lot is not a capacity change"
        );
    }
}
