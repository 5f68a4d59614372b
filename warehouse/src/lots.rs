//! A source's lots as the trainer needs them: each lot's occupancy on the grid, its context (kind,
//! time zone, holidays) and its session arrivals and departures, read from the warehouse with lazy
//! scans of only the needed columns.
//!
//! A lot whose `dim_lot.hold_minutes` is set (a source that writes only changes, imported with
//! `--fill-forward`) has its grid filled forward for at most that long
//! ([`GridSeries::fill_forward`]): the warehouse keeps what was observed, the fill is the trainer's
//! reading of it. A source whose grid still lacks more than [`SPARSE_GRID_SHARE`] of its steps is
//! named in a warning when the gaps are short and scattered (they bias the pairs, which are only
//! built where both ends have a value), in an info line when they are long (nights, outages).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::error::WarehouseError;
use crate::rows::{EventRow, LotRow, TariffRow};
use crate::schema::Table;
use crate::store::Warehouse;
use chrono_tz::Tz;
use parkcast_features::calendar::{CalendarError, CalendarSource, HolidayCalendar};
use parkcast_features::grid::GridSeries;
use parkcast_features::grid::{SHORT_GAP_MINUTES, short_gap_steps};
use parkcast_features::vector::batch::LotHistory;
use parkcast_features::vector::{
    HourlyTariff, LotContext, LotProfile, ScheduledEvent, lot_kind_code,
};
use polars::prelude::*;

/// Errors of reading lots.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LotsError {
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
    /// A calendar file kept in the warehouse is unreadable or conflicts with another.
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    /// A lot's time zone is not an IANA name.
    #[error("lot {lot_id} has an unknown time zone {timezone:?}")]
    BadTimezone {
        /// The lot.
        lot_id: String,
        /// The zone found.
        timezone: String,
    },
    /// A tariff's time band does not describe one.
    #[error("tariff {tariff_id}: {reason}")]
    BadTariff {
        /// The tariff.
        tariff_id: String,
        /// What is wrong.
        reason: String,
    },
}

/// Share of empty grid steps above which loading a source warns: a sampled source with outages
/// stays well below, a source that writes only changes lands above.
pub const SPARSE_GRID_SHARE: f64 = 0.2;

/// One lot's inputs.
#[derive(Debug, Clone)]
pub struct LotInputs {
    /// The lot.
    pub lot_id: String,
    /// Its occupancy on the grid.
    pub series: GridSeries,
    /// Kind, time zone, holidays; `lot_code` is left unset (the model assigns it).
    pub context: LotContext,
    /// Session entry times, ms.
    pub arrivals_ms: Vec<i64>,
    /// Session exit times, ms.
    pub departures_ms: Vec<i64>,
    /// The lot's holiday region code (for the model file).
    pub holiday_region: String,
    /// The lot's kind (for the model file).
    pub kind: String,
    /// Whether its grid is filled forward (`dim_lot.hold_minutes` is set).
    pub filled_forward: bool,
}

impl LotInputs {
    /// The lot's inputs to the batch feature path, with a fitted profile and the context a model
    /// gives it.
    pub fn history<'a>(
        &'a self,
        profile: &'a LotProfile,
        context: &'a LotContext,
    ) -> LotHistory<'a> {
        LotHistory {
            series: &self.series,
            profile,
            context,
            arrivals_ms: &self.arrivals_ms,
            departures_ms: &self.departures_ms,
        }
    }
}

/// The columns of `fact_lot_occupancy` a read of lots needs.
pub(crate) const OCCUPANCY_COLUMNS: [&str; 4] = ["lot_id", "ts", "occupied", "capacity"];

/// The columns of `fact_parking_session` a read of lots needs.
pub(crate) const SESSION_COLUMNS: [&str; 3] = ["lot_id", "entry_ts", "exit_ts"];

pub(crate) fn polars_error(context: &'static str) -> impl Fn(PolarsError) -> LotsError {
    move |source| LotsError::Polars { context, source }
}

/// Typed reads of a collected frame's columns (polars' error names the column and its type).
pub struct Columns<'a>(pub &'a DataFrame);

impl<'a> Columns<'a> {
    /// A text column.
    pub fn text(&self, name: &str) -> Result<&'a StringChunked, LotsError> {
        self.0
            .column(name)
            .and_then(Column::str)
            .map_err(polars_error("reading a text column"))
    }

    /// A timestamp column's values, Unix ms (the unit the warehouse writes).
    pub fn timestamps(&self, name: &str) -> Result<&'a Int64Chunked, LotsError> {
        self.0
            .column(name)
            .and_then(Column::datetime)
            .map(|times| times.physical())
            .map_err(polars_error("reading a timestamp column"))
    }

    /// A 32-bit integer column.
    pub fn int32(&self, name: &str) -> Result<&'a Int32Chunked, LotsError> {
        self.0
            .column(name)
            .and_then(Column::i32)
            .map_err(polars_error("reading an integer column"))
    }
}

/// Every lot of `source` with occupancy, keyed and ordered by lot id.
pub fn load_lots(
    warehouse: &Warehouse,
    source: &str,
    step_minutes: u32,
) -> Result<BTreeMap<String, LotInputs>, LotsError> {
    load_lots_in(warehouse, source, step_minutes, None)
}

/// The ids of the lots with occupancy from `source`, in order, so a trainer can split a city into
/// groups before reading any of them. The table is read a few partitions at a time
/// ([`crate::split::FactChunks::lot_ids`]): the whole `lot_id` column of a large city decoded at
/// once was the largest allocation of a run.
pub fn lot_ids(warehouse: &Warehouse, source: &str) -> Result<Vec<String>, LotsError> {
    crate::split::FactChunks::list(warehouse, crate::split::CHUNK_ROWS)?.lot_ids(warehouse, source)
}

/// The lots of `source` among `only` (every lot when `None`), keyed and ordered by lot id. The
/// occupancy and session scans filter on `lot_id`, which polars pushes into the Parquet reader: a
/// group of a city is read without materialising the others.
pub fn load_lots_in(
    warehouse: &Warehouse,
    source: &str,
    step_minutes: u32,
    only: Option<&[String]>,
) -> Result<BTreeMap<String, LotInputs>, LotsError> {
    if only.is_some_and(<[String]>::is_empty) {
        return Ok(BTreeMap::new());
    }
    let filter = LotFilter { source, only };
    let occupancy = warehouse
        .scan(Table::FactLotOccupancy)?
        .filter(filter.predicate());
    let sessions = match warehouse.scan(Table::FactParkingSession) {
        Ok(scan) => Some(scan.filter(filter.predicate())),
        // Occupancy-only sources (most public data) have no session table at all.
        Err(WarehouseError::MissingTable { .. }) => None,
        Err(error) => return Err(error.into()),
    };
    load_lots_from(
        warehouse,
        &filter,
        step_minutes,
        FactScans {
            occupancy,
            sessions,
        },
    )
}

/// A read's fact rows, already filtered to its lots: from the warehouse, or from a
/// [`crate::split::LotSplit`].
pub(crate) struct FactScans {
    /// `lot_id`, `ts`, `occupied`, `capacity` of `fact_lot_occupancy`.
    pub(crate) occupancy: LazyFrame,
    /// `lot_id`, `entry_ts`, `exit_ts` of `fact_parking_session`, if the source has any.
    pub(crate) sessions: Option<LazyFrame>,
}

/// The lots of `filter` from their fact rows, with the warehouse's dimensions, events and
/// calendars.
pub(crate) fn load_lots_from(
    warehouse: &Warehouse,
    filter: &LotFilter<'_>,
    step_minutes: u32,
    facts: FactScans,
) -> Result<BTreeMap<String, LotInputs>, LotsError> {
    let (source, only) = (filter.source, filter.only);
    let dimension: HashMap<String, LotRow> = warehouse
        .read_rows::<LotRow>()?
        .into_iter()
        .filter(|lot| filter.keeps(&lot.lot_id))
        .map(|lot| (lot.lot_id.clone(), lot))
        .collect();
    let series = load_series(facts.occupancy, step_minutes, &dimension)?;
    let (mut arrivals, mut departures) = match facts.sessions {
        Some(sessions) => load_sessions(sessions)?,
        None => Default::default(),
    };
    let mut events = load_events(warehouse)?;
    let mut tariffs = load_tariffs(warehouse, &dimension)?;
    // The calendars the imports used: embedded data with the calendar files they kept.
    let calendar_source = CalendarSource::for_warehouse(warehouse.root())?;
    let mut calendars: HashMap<String, Arc<HolidayCalendar>> = HashMap::new();
    let mut lots = BTreeMap::new();
    for (lot_id, lot_series) in series {
        let row = dimension.get(&lot_id);
        let region_code = row.map_or("", |row| row.holiday_region.as_str()).to_owned();
        let holidays = calendars
            .entry(region_code.clone())
            .or_insert_with(|| {
                // A region no calendar knows gets no holidays rather than failing the run; the
                // day-off flag still knows weekends.
                Arc::new(calendar_source.load_or_empty(&region_code))
            })
            .clone();
        let kind = row.map_or("unknown", |row| row.kind.as_str()).to_owned();
        let lot_arrivals = arrivals.remove(&lot_id).unwrap_or_default();
        let lot_departures = departures.remove(&lot_id).unwrap_or_default();
        let context = LotContext {
            lot_code: None,
            kind_code: lot_kind_code(&kind),
            timezone: lot_series.timezone(),
            holidays,
            has_sessions: !lot_arrivals.is_empty(),
            events: Arc::from(events.remove(&lot_id).unwrap_or_default()),
            tariffs: Arc::from(tariffs.remove(&lot_id).unwrap_or_default()),
        };
        lots.insert(
            lot_id.clone(),
            LotInputs {
                lot_id,
                series: lot_series,
                context,
                arrivals_ms: lot_arrivals,
                departures_ms: lot_departures,
                holiday_region: region_code,
                kind,
                filled_forward: row.is_some_and(|row| row.hold_minutes.is_some()),
            },
        );
    }
    // A group's sparseness says nothing about the source's: only a whole read warns.
    if only.is_none() {
        let (gaps, filled) = coverage(lots.values(), step_minutes);
        warn_if_sparse(source, step_minutes, gaps, filled);
    }
    Ok(lots)
}

/// The grid gaps of `lots` and whether any of them is filled forward: what
/// [`warn_if_sparse`] reports on.
pub fn coverage<'a>(
    lots: impl IntoIterator<Item = &'a LotInputs> + Clone,
    step_minutes: u32,
) -> (GridGaps, bool) {
    let filled = lots.clone().into_iter().any(|lot| lot.filled_forward);
    (
        grid_gaps(lots.into_iter().map(|lot| &lot.series), step_minutes),
        filled,
    )
}

/// Which rows a read keeps: a source's, of every lot or of some.
pub(crate) struct LotFilter<'a> {
    pub(crate) source: &'a str,
    pub(crate) only: Option<&'a [String]>,
}

impl LotFilter<'_> {
    /// The predicate of a fact scan.
    fn predicate(&self) -> Expr {
        let source = col("source").eq(lit(self.source.to_owned()));
        match self.lots_predicate() {
            Some(lots) => source.and(lots),
            None => source,
        }
    }

    /// The predicate on `lot_id` alone (none for every lot).
    pub(crate) fn lots_predicate(&self) -> Option<Expr> {
        self.only.and_then(|ids| {
            ids.iter()
                .map(|id| col("lot_id").eq(lit(id.clone())))
                .reduce(Expr::or)
        })
    }

    fn keeps(&self, lot_id: &str) -> bool {
        self.only
            .is_none_or(|ids| ids.iter().any(|id| id == lot_id))
    }
}

/// Every lot of a filtered occupancy scan as a grid series.
fn load_series(
    occupancy: LazyFrame,
    step_minutes: u32,
    dimension: &HashMap<String, LotRow>,
) -> Result<BTreeMap<String, GridSeries>, LotsError> {
    let frame = occupancy
        .select(OCCUPANCY_COLUMNS.map(col))
        .collect()
        .map_err(polars_error("reading fact_lot_occupancy"))?;
    let columns = Columns(&frame);
    let lot_ids = columns.text("lot_id")?;
    let timestamps = columns.timestamps("ts")?;
    let occupied = columns.int32("occupied")?;
    let capacities = columns.int32("capacity")?;

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
    let step_ms = i64::from(step_minutes) * 60_000;
    let mut series: BTreeMap<String, GridSeries> = BTreeMap::new();
    for (lot_id, mut lot_readings) in readings {
        let timezone_name = dimension
            .get(lot_id)
            .map_or("UTC", |row| row.timezone.as_str());
        let timezone: Tz = timezone_name.parse().map_err(|_| LotsError::BadTimezone {
            lot_id: lot_id.to_owned(),
            timezone: timezone_name.to_owned(),
        })?;
        lot_readings.sort_by_key(|(ts, _, _)| *ts);
        let mut lot_series = GridSeries::new(step_ms, timezone);
        for (ts, occupied, capacity) in lot_readings {
            lot_series.push(ts, occupied, capacity);
        }
        if let Some(hold_minutes) = dimension
            .get(lot_id)
            .and_then(|row| row.hold_minutes)
            .filter(|minutes| *minutes > 0)
        {
            lot_series.fill_forward(i64::from(hold_minutes) * 60_000);
        }
        series.insert(lot_id.to_owned(), lot_series);
    }
    Ok(series)
}

/// Empty grid steps between each lot's first and last value, those of them in gaps of at most
/// [`SHORT_GAP_MINUTES`], and all such steps, over the lots.
pub fn grid_gaps<'a>(
    series: impl IntoIterator<Item = &'a GridSeries>,
    step_minutes: u32,
) -> GridGaps {
    let short = short_gap_steps(step_minutes);
    series.into_iter().fold(GridGaps::default(), |gaps, lot| {
        gaps.plus(GridGaps {
            empty: lot.empty_instants(),
            in_short_gaps: lot.empty_instants_in_short_gaps(short),
            steps: lot.span_instants(),
        })
    })
}

/// How a source's grid is covered: see [`grid_gaps`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GridGaps {
    /// Steps without a value between each lot's first and last.
    pub empty: usize,
    /// Those of them in gaps of at most [`SHORT_GAP_MINUTES`].
    pub in_short_gaps: usize,
    /// Steps from each lot's first to its last value.
    pub steps: usize,
}

impl GridGaps {
    /// The gaps of two sets of lots together.
    pub fn plus(self, other: GridGaps) -> GridGaps {
        GridGaps {
            empty: self.empty + other.empty,
            in_short_gaps: self.in_short_gaps + other.in_short_gaps,
            steps: self.steps + other.steps,
        }
    }
}

/// Reports a source whose grid lacks more than [`SPARSE_GRID_SHARE`] of its steps. Scattered
/// short gaps (a count that stood still, from a source that writes only changes) bias the pairs
/// and warn; long ones (nights without readings, outages) are how the source reports and are only
/// logged. `filled`: some lot of the source is filled forward (`dim_lot.hold_minutes`). A reader
/// of a city group by group adds the groups' [`grid_gaps`] and reports once.
pub fn warn_if_sparse(source: &str, step_minutes: u32, gaps: GridGaps, filled: bool) {
    if gaps.steps == 0 || (gaps.empty as f64) <= SPARSE_GRID_SHARE * gaps.steps as f64 {
        return;
    }
    let share = format!("{:.0}%", 100.0 * gaps.empty as f64 / gaps.steps as f64);
    let short_share = gaps.in_short_gaps as f64 / gaps.steps as f64;
    if short_share < SPARSE_GRID_SHARE / 2.0 {
        tracing::info!(
            source,
            share = %share,
            empty_steps = gaps.empty,
            steps = gaps.steps,
            "{source}: {share} of {step_minutes}-min grid steps lack a value, mostly in gaps longer than {SHORT_GAP_MINUTES} min (nights without readings, outages); pairs are built only where both ends have one"
        );
        return;
    }
    let hint = if filled {
        "gaps are longer than the source's --fill-forward"
    } else {
        "if the source writes only changes, import it again with --fill-forward <max gap>"
    };
    tracing::warn!(
        source,
        share = %share,
        empty_steps = gaps.empty,
        steps = gaps.steps,
        "{source}: {share} of {step_minutes}-min grid steps lack a value; pairs are built only where both ends have one ({hint})"
    );
}

type TimesByLot = HashMap<String, Vec<i64>>;

/// Scheduled events per lot; none when the warehouse has no `dim_event`.
fn load_events(warehouse: &Warehouse) -> Result<HashMap<String, Vec<ScheduledEvent>>, LotsError> {
    let rows = match warehouse.read_rows::<EventRow>() {
        Ok(rows) => rows,
        Err(WarehouseError::MissingTable { .. }) => return Ok(HashMap::new()),
        Err(error) => return Err(error.into()),
    };
    let mut events: HashMap<String, Vec<ScheduledEvent>> = HashMap::new();
    for row in rows {
        events.entry(row.lot_id).or_default().push(ScheduledEvent {
            start_ms: row.start_ts.timestamp_millis(),
            end_ms: row.end_ts.timestamp_millis(),
            expected_cars: f64::from(row.expected_cars),
        });
    }
    Ok(events)
}

/// The hourly tariffs of each of `lots` (its own and its zone's, of its source); none when the
/// warehouse has no `dim_tariff`. Flat event fees and free plans set no hourly price and are left
/// out.
pub fn load_tariffs(
    warehouse: &Warehouse,
    lots: &HashMap<String, LotRow>,
) -> Result<HashMap<String, Vec<HourlyTariff>>, LotsError> {
    if !warehouse.has_table(Table::DimTariff) {
        return Ok(HashMap::new());
    }
    let rows: Vec<TariffRow> = warehouse
        .read_rows::<TariffRow>()?
        .into_iter()
        .filter(|tariff| tariff.flat_cents.is_none() && tariff.cents_per_hour > 0)
        .collect();
    let mut by_lot: HashMap<String, Vec<HourlyTariff>> = HashMap::new();
    for row in &rows {
        let tariff = hourly_tariff(row)?;
        let applies = |lot: &LotRow| {
            lot.source == row.source
                && match &row.lot_id {
                    Some(own) => *own == lot.lot_id,
                    None => lot.zone_id == row.zone_id,
                }
        };
        for lot in lots.values().filter(|lot| applies(lot)) {
            by_lot.entry(lot.lot_id.clone()).or_default().push(tariff);
        }
    }
    Ok(by_lot)
}

/// A `dim_tariff` row as the features read it.
fn hourly_tariff(row: &TariffRow) -> Result<HourlyTariff, LotsError> {
    let bad = |reason: String| LotsError::BadTariff {
        tariff_id: row.tariff_id.clone(),
        reason,
    };
    let minute = |name: &str, value: i32| {
        u32::try_from(value)
            .ok()
            .filter(|minute| *minute <= 1_440)
            .ok_or_else(|| {
                bad(format!(
                    "{name} {value} is not a minute of the day (0 to 1440)"
                ))
            })
    };
    let mut weekdays = 0u8;
    for day in row.band_weekdays.split(',').map(str::trim) {
        match day.parse::<u8>() {
            Ok(iso @ 1..=7) => weekdays |= 1 << (iso - 1),
            _ => {
                return Err(bad(format!(
                    "band_weekdays {:?} is not a list of ISO weekdays (1 = Monday to 7)",
                    row.band_weekdays
                )));
            }
        }
    }
    Ok(HourlyTariff {
        valid_from_ms: row.valid_from.timestamp_millis(),
        valid_until_ms: row.valid_until.map(|until| until.timestamp_millis()),
        band_starts_minute: minute("band_starts_minute", row.band_starts_minute)?,
        band_ends_minute: minute("band_ends_minute", row.band_ends_minute)?,
        weekdays,
        cents_per_hour: row.cents_per_hour,
        lot_own: row.lot_id.is_some(),
    })
}

/// Session entry and exit times per lot of a filtered session scan.
fn load_sessions(sessions: LazyFrame) -> Result<(TimesByLot, TimesByLot), LotsError> {
    let frame = sessions
        .select(SESSION_COLUMNS.map(col))
        .collect()
        .map_err(polars_error("reading fact_parking_session"))?;
    let columns = Columns(&frame);
    let lot_ids = columns.text("lot_id")?;
    let entries = columns.timestamps("entry_ts")?;
    let exits = columns.timestamps("exit_ts")?;
    let (mut arrivals, mut departures): (TimesByLot, TimesByLot) = Default::default();
    for ((lot_id, entry), exit) in lot_ids.iter().zip(entries.iter()).zip(exits.iter()) {
        let Some(lot_id) = lot_id else { continue };
        if let Some(entry) = entry {
            arrivals.entry(lot_id.to_owned()).or_default().push(entry);
        }
        if let Some(exit) = exit {
            departures.entry(lot_id.to_owned()).or_default().push(exit);
        }
    }
    Ok((arrivals, departures))
}
