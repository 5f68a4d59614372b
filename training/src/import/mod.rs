//! Importers of real parking data into the warehouse.
//!
//! Each source has its own adapter; all of them write the same star-schema tables, prefix their ids
//! with the source (`bhm:`, `mlg:`, `mel:`, `csv-<name>:`), store every timestamp as UTC with
//! millisecond precision and write with [`Warehouse::replace`] under the source's writer name, so
//! importing the same source again replaces its rows instead of duplicating them.
//!
//! | source | input | fills |
//! | --- | --- | --- |
//! | [`ImportSource::Birmingham`] | UCI Parking Birmingham counters | `fact_lot_occupancy`, `dim_lot`, `dim_zone`, `dim_calendar` (GB-ENG) |
//! | [`ImportSource::Malaga`] | municipal garages of Málaga | the same, `dim_calendar` for ES-AN |
//! | [`ImportSource::Melbourne`] | one day of on-street bay stays | `fact_parking_session`, `fact_slot_status`, derived `fact_lot_occupancy`, `dim_slot`, `dim_lot`, `dim_zone`, `dim_calendar` (AU-VIC) |
//! | [`ImportSource::Csv`] | the generic counter CSV (format below) | as Birmingham, `dim_calendar` only with a holiday region |
//!
//! # Structural errors and cleaning rules
//!
//! Input that cannot be read as the format says (an unparsable number or timestamp, a wrong number
//! of fields, a missing header column) stops the import with an [`ImportError`] that names the file,
//! the 1-based line (the header is line 1) and the column. The known defects of real data are not
//! errors but *cleaning rules*: no row is dropped or changed silently, every dropped or changed row
//! is counted under a named rule in [`ImportReport::rules`], and every rule an adapter applies is
//! listed, in the order it is applied, also when its count is 0.
//!
//! Rules that drop rows ([`RuleEffect::Dropped`]) make the report reconcile:
//!
//! ```text
//! rows_read = rows_kept + rows_dropped
//! ```
//!
//! where `rows_kept` ([`ImportReport::rows_kept`]) is the number of rows written to
//! `fact_lot_occupancy` for the counter sources (Birmingham, Málaga, generic CSV: one occupancy row
//! per kept counter reading) and to `fact_parking_session` for Melbourne (one session per kept stay),
//! and `rows_dropped` ([`ImportReport::rows_dropped`]) is the sum of the dropping rules. Rules that
//! change a row ([`RuleEffect::Changed`]) count rows that were kept with a value altered; rules that
//! only note a fact ([`RuleEffect::Noted`]) count things, not rows to reconcile (capacity changes,
//! bays).
//!
//! ## Local time
//!
//! Sources that give local wall-clock times are converted with chrono-tz. An ambiguous local time
//! (the repeated hour of the autumn fall-back) takes the earlier offset, unless that instant would
//! not be later than the same lot's previous reading, in which case it takes the later offset
//! (`dst_ambiguous_resolved`, counting every ambiguous time read). A local time that does not exist
//! (the skipped hour of the spring change) is shifted forward by the length of the gap
//! (`dst_gap_shifted`). "Previous reading" is the previous row of the lot in file order for
//! Birmingham, Melbourne and the generic CSV, whose rows of one lot are written chronologically; the
//! Málaga file is shuffled within each day, so its rows are put in local-time order per lot first.
//!
//! ## Counter series (Birmingham, Málaga, generic CSV)
//!
//! Counter readings keep their raw timestamps (the trainer aligns them to a grid). Per lot, in time
//! order (ties in file order), the rules run in this order, after the source's own row drops:
//!
//! 1. `negative_dropped`: a negative count (occupied, or free for sources that count free slots)
//!    is dropped. It runs first so that an invalid reading never wins a duplicate below.
//! 2. `exact_duplicate_dropped` / `conflicting_duplicate_kept_last`: of the readings of one lot at
//!    one instant, the last in file order is kept; each other one is dropped, counted as an exact
//!    duplicate when its count and capacity (as the file gives them) equal the kept one's, as a
//!    conflicting one otherwise.
//! 3. `frozen_value_dropped` (Málaga): a free count unchanged for more than 24 hours is a frozen
//!    feed; the run's first reading is kept, the rest dropped.
//! 4. `capacity_filled_from_lot` (Málaga, generic CSV): a reading without a capacity takes the
//!    lot's nearest known capacity in time (the earlier one on a tie); then, Málaga only,
//!    `capacity_inferred_from_max_free`: a lot that never reports a capacity gets the largest free
//!    count it ever reported (every such reading is counted; the lots are named in a log line).
//! 5. `free_above_capacity_clipped` (free counts): occupied = capacity - free, and a free count
//!    above the capacity gives occupied 0.
//! 6. `above_capacity_clipped`: an occupied count above the capacity is set to the capacity.
//! 7. `capacity_changed` (noted): a lot's capacity differs from its previous kept reading.
//!
//! Lots get `dim_lot.capacity` from their latest kept reading; a lot without any kept reading is
//! left out of `dim_lot` and named in a warning.
//!
//! # Sources
//!
//! - **Birmingham** (`parking_birmingham.csv`, columns `SystemCodeNumber,Capacity,Occupancy,
//!   LastUpdated`, local time Europe/London): lot `bhm:<SystemCodeNumber>`, named by its code, kind
//!   `garage`. Only the shared rules apply. The whole file reads 35,717 rows and keeps 35,489: 216
//!   exact duplicates at 160 distinct (lot, time) pairs and 12 negative counts dropped, 373 counts
//!   above capacity clipped.
//! - **Málaga** (`free_spaces_long.csv.gz`, columns `scrape_time_local,lot_key,lot_name,capacity,
//!   free_spaces,...`, local time Europe/Madrid, plus `lots.csv` with names and coordinates of the
//!   two-letter garages): lot `mlg:<lot_key>`, kind `garage`, named by `lots.csv`, else by the
//!   rows' `lot_name`, else by its key. `no_data_sentinel_dropped` drops a free count of `-1` or
//!   empty first; a capacity of `None`, `-1` or empty is missing and filled as above. The source
//!   served stale values for long stretches (every two-letter garage repeats one value from 27 May
//!   2022 to 21 Aug 2023, and all garages freeze together for days several times), hence
//!   `frozen_value_dropped`. The whole file reads 1,585,514 rows and keeps 857,329: 259,620 are "no
//!   data" (every row of poi138, poi139, poi140 and poi142) and 468,565 a frozen feed.
//! - **Melbourne** (`bay_events_<date>.csv`, columns `bay_id,in_violation,arrival_time,
//!   departure_time`, local time Australia/Melbourne, plus `bay_locations.json`): see
//!   [Melbourne](#melbourne) below.
//! - **Generic CSV**: see [the format](#generic-csv-format) below.
//!
//! ## Melbourne
//!
//! A lot is a street block, `(Street, BetweenStreet1, BetweenStreet2)` of the bay's location, with
//! id `mel:<street>--<between 1>--<between 2>` (slugs); a bay without a location goes to
//! `mel:unlocated`. Every bay that has a stay becomes a `dim_slot` row (`mel:<bay_id>`), every kept
//! stay a `fact_parking_session` row (`mel:<bay_id>:<n>`, n counting the bay's stays from 1 in time
//! order), and every arrival and departure a `fact_slot_status` change (`sensor_seq` from 1 per bay
//! in time order). Rules, in order:
//!
//! 1. `departure_missing_kept_open`: a departure of `1900-01-01 00:00:00` (the source's null) or
//!    empty is unknown: the stay is kept open (`exit_ts` null, no departure event).
//! 2. `departure_before_arrival_dropped`: a departure before the arrival drops the stay.
//! 3. `overlapping_stay_trimmed`: a stay that starts before the bay's previous stay ended ends that
//!    previous stay at its arrival (also an open one).
//! 4. `bay_without_location` (noted, counts bays): the bay is not in the location file.
//! 5. `initial_free_assumed` (noted, counts bays): the source only has stays that begin on the
//!    day, so every bay is assumed free at the start of the grid when deriving occupancy. This
//!    reading is an assumption, not an observation, and is not written to `fact_slot_status`.
//!
//! `fact_lot_occupancy` is derived with [`parkcast_features::occupancy::lot_occupancy`] on a grid
//! of `interval_minutes` from local midnight of the first arrival's day to local midnight after the
//! last event's day, with no silence limit (this source has no heartbeats), so the occupancy of a
//! lot at an instant is the number of its kept stays with `arrival <= t < departure`; capacity is
//! the number of bays in the lot. Bays of the location file without any stay that day are left out
//! (nothing says they had a sensor).
//!
//! The source records stays within parking restrictions: in the 12 June 2014 file about 1,300 stays
//! start at 07:30:10-11 (cars already parked when the restriction began) and about 2,800 end at
//! exactly 18:30, 19:30 or 20:30 (when it ended). They are kept as they are, so the derived
//! occupancy misses those cars before 07:30 and after those times.
//!
//! ## Generic CSV format
//!
//! One counter reading per row, UTF-8, comma-separated, with a header row:
//!
//! ```text
//! lot_id,timestamp,occupied,capacity
//! north-garage,2024-03-01 08:00,120,400
//! north-garage,2024-03-01T08:15:00+01:00,131,
//! ```
//!
//! - `lot_id` (required): any non-empty text; stored as `csv-<name>:<lot_id>` and used as the lot's
//!   name.
//! - `timestamp` (required): RFC 3339 with an offset (`2024-03-01T08:15:00+01:00`,
//!   `2024-03-01T07:15:00Z`) or a naive local time `YYYY-MM-DD HH:MM[:SS]` (a `T` may replace the
//!   space), which needs `--timezone` (an IANA name such as `Europe/London`); naive times follow the
//!   local-time rules above.
//! - exactly one of `occupied` (occupied slots) or `free` (free slots, occupied = capacity - free):
//!   non-negative integers; negative counts are dropped (`negative_dropped`), free above capacity
//!   gives occupied 0 (`free_above_capacity_clipped`).
//! - `capacity` (required column, value optional): a positive integer; an empty value takes the
//!   lot's nearest known capacity in time (`capacity_filled_from_lot`); a lot without any capacity
//!   is an error naming the lot.
//! - Other columns are ignored; header names are matched ignoring case and surrounding spaces.
//!
//! Rows of one lot should be in time order, as a logger writes them: a repeated local time in the
//! fall-back hour is read as the second pass only if it follows the first one in the file. Lots get
//! kind `unknown`, the holiday region given (`dim_calendar` is written only with one), and the time
//! zone given (`UTC` when none is, which then only allows RFC 3339 timestamps).
//!
//! A calendar file (`--calendar-file`, format in [`parkcast_features::calendar::CalendarFile`])
//! adds a region of the user's own or replaces an embedded region's public or school holidays; it
//! is checked before the counters are read, used for `dim_calendar`, and kept in the warehouse as
//! `calendars/<writer>.csv`, which the trainer applies (and a re-import without the flag removes).
//!//! ## Sources that write only changes (`--fill-forward`)
//!
//! Some loggers write a lot's count only when it changes ("112 occupied" at 08:03, "113" at 08:41,
//! nothing in between). The trainer puts readings on a grid, each at its nearest instant, and an
//! instant without a reading is a gap, so such a source leaves every step where the count stood still
//! empty, and the backtest keeps only pairs near a change: fewer, and biased. On a generated city
//! whose counts stand still at 40% of the quarters (`tests/cli_fill_forward.rs`), persistence +
//! profile change at 30 minutes kept 1,053 of the sampled city's 4,032 pairs, with an MAE of rate
//! of 0.0271 against 0.0336 sampled (the pairs near a change are not the typical ones); with
//! `--fill-forward 2h` it has 4,019 pairs and 0.0337.
//!
//! `--fill-forward <DURATION>` (`2h`, `90m`, `1h30m`, `1d`; 1 minute to 7 days) says the source's
//! readings hold until the next one, for at most that long. The import writes the readings as they are
//! and records the fact in `dim_lot.hold_minutes` (warehouse format 3); the trainer fills each lot's
//! grid from it when it loads the lots (`GridSeries::fill_forward`): an empty instant takes the value
//! of the latest instant with a reading when that is at most the hold before it, nothing is filled
//! before a lot's first reading, a gap longer than the hold is filled only for its first part, and
//! after the last reading the value holds for the hold. The fill is the trainer's reading of the
//! facts, not a fact: rows written at import would be readings nobody made, seen as observed by the
//! notebooks, the archive and every later reader, and another hold would need the raw file again.
//! So facts stay what was observed, a re-import with another hold (or none) changes only the
//! dimension row, and older warehouses, whose `dim_lot` lacks the column, read it as null: no fill. Serving is unaffected (live sensors report every second); it
//! seeds a lot's history through the same loading, so it sees the grid training saw.
//!
//! Every generic CSV import measures each lot on the grid the trainer would choose (the protocol's
//! step for the source's cadence, else 15 minutes): the share of steps between its first and last
//! reading without one, and the share of consecutive readings that repeat a value (a sampled feed
//! repeats often, every quiet night; a change-only feed never does). A lot with at least 20
//! consecutive readings, 10% or more of its steps empty in gaps of at most 2 hours (a count that stood
//! still; longer gaps are nights without readings and outages, as in Birmingham, whose garages
//! report 08:00-16:30 and leave 66% of a 30-minute grid empty) and at most 1% repeats looks
//! change-only; when a lot does and no fill was asked, the import logs a warning and its summary
//! says, e.g.:
//!
//! ```text
//! warning: csv-town: 48% of 15-min steps between first and last reading have no reading, and consecutive readings never repeat a value (all 3 lots): the source looks like it writes only changes; import again with --fill-forward <max gap> (e.g. 2h) so a value holds until the next
//! ```
//!
//! With a fill the summary says what it covers (`csv-town: --fill-forward 2h holds readings over 5790
//! empty 15-min steps in 3 of 3 lots; 26 steps stay empty (0.2% of 12086: gaps longer than 2h)`).
//! When the trainer loads a source whose grid still lacks more than 20% of its steps, it warns
//! (`csv-town: 48% of 15-min grid steps lack a value; pairs are built only where both ends have
//! one`), with the hint to import it with `--fill-forward` when it has no fill, if at least 10% of
//! the steps lie in gaps of at most 2 hours; gaps that are mostly longer (Birmingham's nights) get
//! an info line that says so instead.
//!
//! A source's cadence is the lower quartile of the gaps between a lot's readings (median over lots):
//! the median would count the stand-stills of a change-only source and choose too coarse a grid.

mod birmingham;
mod common;
mod counter;
pub mod coverage;
mod generic_csv;
pub(crate) mod local_time;
mod malaga;
mod melbourne;
mod rules;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use parkcast_features::calendar::CalendarError;
use parkcast_warehouse::schema::Table;
use parkcast_warehouse::{Warehouse, WarehouseError, WriteStats};

use crate::progress::Progress;

pub use coverage::{GridCoverage, HoldError};
pub use rules::RuleEffect;

/// A real data set to import.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportSource {
    /// UCI Parking Birmingham: parking_birmingham.csv (SystemCodeNumber,Capacity,Occupancy,LastUpdated), local time Europe/London.
    Birmingham {
        /// `parking_birmingham.csv`.
        csv: PathBuf,
    },
    /// Málaga: free_spaces_long.csv.gz (+ lots.csv with names/coordinates), local time Europe/Madrid.
    Malaga {
        /// `free_spaces_long.csv.gz`.
        free_spaces_csv_gz: PathBuf,
        /// `lots.csv`: garage id, name, address, latitude, longitude.
        lots_csv: PathBuf,
    },
    /// Melbourne bay stays of one day (+ bay_locations.json), local time Australia/Melbourne.
    Melbourne {
        /// `bay_events_<date>.csv`: one row per stay.
        events_csv: PathBuf,
        /// `bay_locations.json`: GeoJSON points of the bays.
        locations_json: PathBuf,
        /// Step of the derived `fact_lot_occupancy` grid, in minutes (at least 1).
        interval_minutes: u32,
    },
    /// The documented generic CSV.
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// Names the source: the writer is `csv-<name>` and lot ids are `csv-<name>:<lot_id>`.
        name: String,
        /// Time zone of naive timestamps and of the lots; `UTC` when absent.
        timezone: Option<chrono_tz::Tz>,
        /// Holiday region of the lots (`GB-ENG`, ...); no calendar is written when absent.
        holiday_region: Option<String>,
        /// A calendar file (README, "Importing your data") that adds regions or replaces embedded
        /// ones; kept in the warehouse (`calendars/<writer>.csv`) so training sees it too.
        calendar_file: Option<PathBuf>,
        /// For a source that writes only changes (`--fill-forward`): a reading holds until the
        /// next one, for at most this many minutes (1 to 7 days). Stored as
        /// `dim_lot.hold_minutes`; the trainer fills its grid from it.
        hold_minutes: Option<u32>,
    },
}

impl ImportSource {
    /// The warehouse writer name of the source: `birmingham`, `malaga`, `melbourne` or
    /// `csv-<sanitized name>` (lowercase ASCII letters, digits, `-` and `_`; other characters become
    /// `-`), which is also the id prefix and the `source` column of the rows.
    pub fn writer_name(&self) -> String {
        match self {
            ImportSource::Birmingham { .. } => birmingham::WRITER.to_owned(),
            ImportSource::Malaga { .. } => malaga::WRITER.to_owned(),
            ImportSource::Melbourne { .. } => melbourne::WRITER.to_owned(),
            ImportSource::Csv { name, .. } => generic_csv::writer_name(name),
        }
    }
}

/// How many rows (or things, for noted rules) one cleaning rule affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleCount {
    /// The rule's name, e.g. `exact_duplicate_dropped`.
    pub rule: &'static str,
    /// What the rule does, in one sentence.
    pub description: &'static str,
    /// How many rows it dropped or changed (or, for noted rules, how many things it counted).
    pub count: u64,
}

impl RuleCount {
    /// Whether the rule drops, changes or only notes; [`RuleEffect::Noted`] for a name no adapter uses.
    pub fn effect(&self) -> RuleEffect {
        rules::Rule::from_name(self.rule).map_or(RuleEffect::Noted, rules::Rule::effect)
    }
}

/// What an import read, cleaned and wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportReport {
    /// The writer name of the source.
    pub source: String,
    /// Data rows read from the main input (header excluded): counter readings, or stays for Melbourne.
    pub rows_read: u64,
    /// Every rule the adapter applies, in the order it applies them, also those with count 0.
    pub rules: Vec<RuleCount>,
    /// Rows, files and bytes written per table.
    pub written: Vec<(Table, WriteStats)>,
    /// Lots written to `dim_lot`.
    pub lots: usize,
    /// The earliest instant of the written facts.
    pub first_ts: Option<DateTime<Utc>>,
    /// The latest instant of the written facts.
    pub last_ts: Option<DateTime<Utc>>,
    /// How the readings cover the trainer's grid, and what a fill covers (generic CSV only).
    pub coverage: Option<GridCoverage>,
}

impl ImportReport {
    /// The count of a rule, if the adapter applies it.
    pub fn rule_count(&self, rule: &str) -> Option<u64> {
        self.rules
            .iter()
            .find(|rule_count| rule_count.rule == rule)
            .map(|rule_count| rule_count.count)
    }

    /// Rows written to a table (0 if the import did not write it).
    pub fn rows_written(&self, table: Table) -> u64 {
        self.written
            .iter()
            .filter(|(written, _)| *written == table)
            .map(|(_, stats)| stats.rows)
            .sum()
    }

    /// Input rows dropped by cleaning rules.
    pub fn rows_dropped(&self) -> u64 {
        self.rules
            .iter()
            .filter(|rule_count| rule_count.effect() == RuleEffect::Dropped)
            .map(|rule_count| rule_count.count)
            .sum()
    }

    /// Input rows kept: the sessions written for a stay source (Melbourne), else the occupancy rows
    /// written for a counter source. `rows_read == rows_kept() + rows_dropped()` for every import.
    pub fn rows_kept(&self) -> u64 {
        let wrote_sessions = self
            .written
            .iter()
            .any(|(table, _)| *table == Table::FactParkingSession);
        if wrote_sessions {
            self.rows_written(Table::FactParkingSession)
        } else {
            self.rows_written(Table::FactLotOccupancy)
        }
    }
}

/// Errors of an import.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A file could not be opened or read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A value or row that does not follow the format.
    #[error("{path}: line {line}, column {column}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line in the file (the header is line 1).
        line: u64,
        /// The column's header name.
        column: String,
        /// What is wrong, and how to fix it when the fix is the user's.
        message: String,
    },
    /// The header lacks a required column.
    #[error("{path}: the header has no column {column:?}")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column, as the format names it.
        column: String,
    },
    /// The header has two columns of which exactly one is allowed (`occupied` and `free`).
    #[error("{path}: the header has both {first:?} and {second:?}; give exactly one of them")]
    ConflictingColumns {
        /// The file.
        path: PathBuf,
        /// The first column.
        first: String,
        /// The second column.
        second: String,
    },
    /// The file has a header but no data row.
    #[error("{path}: no data rows after the header")]
    NoRows {
        /// The file.
        path: PathBuf,
    },
    /// A lot of the generic CSV has no capacity on any row, so occupancy cannot be bounded.
    #[error(
        "{path}: lot {lot_id:?} has no capacity on any row; give its capacity on at least one row"
    )]
    LotWithoutCapacity {
        /// The file.
        path: PathBuf,
        /// The lot, as written in the file.
        lot_id: String,
    },
    /// The bay location file is not the expected GeoJSON.
    #[error("{path}: not a GeoJSON FeatureCollection of bay points: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error (with its line and column).
        source: serde_json::Error,
    },
    /// The occupancy grid step is 0.
    #[error("the occupancy interval must be at least 1 minute, got {interval_minutes}")]
    InvalidInterval {
        /// The step given.
        interval_minutes: u32,
    },
    /// Writing the warehouse failed.
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    /// The holiday region is unknown or its data unreadable.
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    /// A `--fill-forward` hold of 0 or longer than 7 days.
    #[error("--fill-forward: {0}")]
    Hold(#[from] HoldError),
}

/// Imports a source into the warehouse, replacing the rows an earlier import of it wrote.
///
/// ```no_run
/// use parkcast_warehouse::Warehouse;
/// use parkcast_training::import::{ImportSource, import};
/// use parkcast_training::progress::NoProgress;
///
/// let warehouse = Warehouse::create("/tmp/city")?;
/// let source = ImportSource::Birmingham { csv: "parking_birmingham.csv".into() };
/// let report = import(&source, &warehouse, &NoProgress)?;
/// for rule in &report.rules {
///     println!("{:<32} {:>8}  {}", rule.rule, rule.count, rule.description);
/// }
/// assert_eq!(report.rows_read, report.rows_kept() + report.rows_dropped());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn import(
    source: &ImportSource,
    warehouse: &Warehouse,
    progress: &dyn Progress,
) -> Result<ImportReport, ImportError> {
    match source {
        ImportSource::Birmingham { csv } => birmingham::import(csv, warehouse, progress),
        ImportSource::Malaga {
            free_spaces_csv_gz,
            lots_csv,
        } => malaga::import(free_spaces_csv_gz, lots_csv, warehouse, progress),
        ImportSource::Melbourne {
            events_csv,
            locations_json,
            interval_minutes,
        } => melbourne::import(
            events_csv,
            locations_json,
            *interval_minutes,
            warehouse,
            progress,
        ),
        ImportSource::Csv {
            path,
            name,
            timezone,
            holiday_region,
            calendar_file,
            hold_minutes,
        } => {
            let hold_minutes = hold_minutes
                .map(|minutes| coverage::check_hold(u64::from(minutes)))
                .transpose()?;
            let options = generic_csv::CsvOptions {
                writer: generic_csv::writer_name(name),
                timezone: *timezone,
                holiday_region: holiday_region.clone(),
                calendar_file: calendar_file.clone(),
                hold_minutes,
            };
            generic_csv::import(path, &options, warehouse, progress)
        }
    }
}
