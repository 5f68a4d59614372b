//! A warehouse's events in event-time order, as the wire messages the field would send.
//!
//! `parkcast replay` produces these into Kafka, so the live consumer and the archiver can be run
//! against a simulated city or a real imported day as if sensors, gates and payment terminals were
//! sending them now. Each fact row becomes the message its producer would have sent: a
//! `fact_slot_status` row a [`SensorReading`], a `fact_parking_session` row an ENTRY [`SessionEvent`]
//! and, once it has an exit, an EXIT one, a `fact_customer_scan` row a [`CustomerScan`] and a
//! `fact_payment` row a [`PaymentSlip`]. Every message is keyed by its lot id, so one lot's events
//! stay ordered on one partition.
//!
//! # Streaming
//!
//! A simulated city is 200 lots x 365 days; its facts do not fit in memory at once. Fact tables are
//! hive-partitioned by the UTC date of their partition column, so reading the files of one date and
//! sorting them gives every event of that date, and dates in order give the global order. The one
//! exception is a session's exit, which falls after its entry's partition: exits wait in a min-heap
//! until their date comes. Memory is one date of facts plus the stays open across midnight.
//!
//! Events at the same instant come readings first, then exits, entries, scans and payments (an exit
//! at the same instant as its own entry comes after it), each group by lot, then as in the files.
//!
//! # Heartbeats for sources without them
//!
//! Melbourne's bay sensors only report changes, and a consumer that treats silent slots as unknown
//! would see every bay go unknown. With [`SourceConfig::heartbeat_minutes`], every slot of `dim_slot`
//! gets synthesized heartbeats, as a field sensor would send them:
//!
//! - a first one at the lot's start instant, repeating the slot's status so far (free when it has
//!   none: the import's assumption that every bay is free at the grid start). The start is
//!   [`SourceConfig::start_ms`], else the lot's first `fact_lot_occupancy` instant (local midnight of
//!   the first day for Melbourne), else local midnight (`dim_lot.timezone`) of the first event's day;
//! - then one every period on a fixed per-slot phase (from a hash of the slot id, whole seconds), so
//!   a city's sensors do not all report at the same millisecond;
//! - until [`SourceConfig::end_ms`], else local midnight after the last event's day (exclusive).
//!
//! A heartbeat at the same instant as a change of its slot comes first, so the change wins. While
//! synthesizing, `sensor_seq` is renumbered per slot in emission order (1, 2, ...), so it increases
//! with event time as the proto promises; otherwise the rows' own sequence numbers are kept.
//!
//! # Window and lots
//!
//! [`SourceConfig::start_ms`] and [`SourceConfig::end_ms`] keep the events in `[start, end)`; a
//! session belongs to the window when its entry does (the exit of a stay that began before the window
//! is not sent: a consumer could not match it). [`SourceConfig::lots`] keeps the events of some lots.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::fs::File;
use std::iter::FusedIterator;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Days, NaiveDate, Utc};
use chrono_tz::Tz;
use parkcast_proto::v1::{
    CustomerScan, PaymentSlip, ReadingKind, ScanDirection, SensorReading, SessionEvent,
    SessionEventKind, SlotReport,
};
use parkcast_proto::{SCHEMA_VERSION, Topic};
use parkcast_warehouse::rows::{CustomerScanRow, LotRow, ParkingSessionRow, PaymentRow};
use parkcast_warehouse::schema::Table;
use parkcast_warehouse::topology::{Topology, TopologyError};
use parkcast_warehouse::{FrameRow, Warehouse, WarehouseError, partition_date_of};
use polars::prelude::{DataFrame, ParquetReader, PolarsError, SerReader, col};
use prost::Message;

/// Longest heartbeat period accepted, in minutes: one day, as the simulator allows.
pub const MAX_HEARTBEAT_MINUTES: u32 = 1_440;

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 24 * 60 * MINUTE_MS;

/// The fact tables replayed, in the order their files are listed per date.
const FACT_TABLES: [Table; 4] = [
    Table::FactSlotStatus,
    Table::FactParkingSession,
    Table::FactCustomerScan,
    Table::FactPayment,
];

/// Errors of reading a warehouse as events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The warehouse could not be read.
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    /// `dim_slot` is not a topology.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// A file could not be opened.
    #[error("opening {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// polars failed to read data.
    #[error("{context}: {source}")]
    Polars {
        /// What was being read.
        context: String,
        /// The underlying error.
        source: PolarsError,
    },
    /// The heartbeat period is 0 or longer than a day.
    #[error(
        "heartbeat period must be 1 to {MAX_HEARTBEAT_MINUTES} minutes, not {heartbeat_minutes}"
    )]
    InvalidHeartbeat {
        /// The period given.
        heartbeat_minutes: u32,
    },
    /// The window's start is not before its end.
    #[error("the replay window is empty: start {start_ms} ms is not before end {end_ms} ms")]
    EmptyWindow {
        /// The start given.
        start_ms: i64,
        /// The end given.
        end_ms: i64,
    },
    /// A time that is not a valid timestamp (a window bound, or an event time in a file).
    #[error("{ms} ms is outside the range of valid timestamps")]
    TimeOutOfRange {
        /// The time, Unix ms.
        ms: i64,
    },
    /// The lot filter is empty: nothing would be replayed.
    #[error("the lot filter names no lot")]
    EmptyLotFilter,
    /// The lot filter names a lot the warehouse does not have.
    #[error("lot {lot_id:?} is in neither dim_lot nor dim_slot")]
    UnknownLot {
        /// The lot.
        lot_id: String,
    },
    /// A lot's time zone, needed for synthesized heartbeats, is not an IANA name.
    #[error("lot {lot_id:?} has time zone {timezone:?}, which is not an IANA time zone")]
    UnknownTimezone {
        /// The lot.
        lot_id: String,
        /// The time zone given.
        timezone: String,
    },
    /// A required value is null.
    #[error("{path}: {table}.{column} holds a null value")]
    NullValue {
        /// The table.
        table: Table,
        /// The column.
        column: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A text column holds a value outside its vocabulary.
    #[error("{path}: {table}.{column} holds {value:?}, expected {expected}")]
    UnexpectedValue {
        /// The table.
        table: Table,
        /// The column.
        column: &'static str,
        /// The value found.
        value: String,
        /// What the column may hold.
        expected: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A session exits before it enters, which no order of events can express.
    #[error("session {session_id:?} exits at {exit_ms} ms, before its entry at {entry_ms} ms")]
    ExitBeforeEntry {
        /// The session.
        session_id: String,
        /// Entry time, Unix ms.
        entry_ms: i64,
        /// Exit time, Unix ms.
        exit_ms: i64,
    },
    /// A fact file outside a `date=YYYY-MM-DD` folder.
    #[error("{path} is not in a date=YYYY-MM-DD partition folder")]
    NotPartitioned {
        /// The file.
        path: PathBuf,
    },
}

/// What to replay, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceConfig {
    /// Synthesize a heartbeat for every slot of `dim_slot` every this many minutes (for sources with
    /// status changes only, such as Melbourne); `None` replays the sensor rows as they are.
    pub heartbeat_minutes: Option<u32>,
    /// Replay events at or after this instant (Unix ms); `None`: from the first event.
    pub start_ms: Option<i64>,
    /// Replay events before this instant (Unix ms); `None`: to the last event.
    pub end_ms: Option<i64>,
    /// Replay only the events of these lots; `None`: every lot.
    pub lots: Option<BTreeSet<String>>,
}

impl SourceConfig {
    /// Checks the settings without IO.
    pub fn validate(&self) -> Result<(), SourceError> {
        if let Some(heartbeat_minutes) = self.heartbeat_minutes
            && !(1..=MAX_HEARTBEAT_MINUTES).contains(&heartbeat_minutes)
        {
            return Err(SourceError::InvalidHeartbeat { heartbeat_minutes });
        }
        for ms in self.start_ms.into_iter().chain(self.end_ms) {
            if !valid_time(ms) {
                return Err(SourceError::TimeOutOfRange { ms });
            }
        }
        if let (Some(start_ms), Some(end_ms)) = (self.start_ms, self.end_ms)
            && start_ms >= end_ms
        {
            return Err(SourceError::EmptyWindow { start_ms, end_ms });
        }
        if self.lots.as_ref().is_some_and(BTreeSet::is_empty) {
            return Err(SourceError::EmptyLotFilter);
        }
        Ok(())
    }

    fn in_window(&self, ts_ms: i64) -> bool {
        self.start_ms.is_none_or(|start| ts_ms >= start)
            && self.end_ms.is_none_or(|end| ts_ms < end)
    }
}

/// One event ready to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireEvent {
    /// Where it goes.
    pub topic: Topic,
    /// The message key: the lot id.
    pub key: String,
    /// The encoded protobuf message of the topic.
    pub value: Vec<u8>,
    /// Its event time (Unix ms), for pacing a replay and for the record timestamp.
    pub event_time_ms: i64,
}

/// How many events of each kind were emitted so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Sensor readings from `fact_slot_status`.
    pub readings: u64,
    /// Heartbeats synthesized.
    pub synthesized_heartbeats: u64,
    /// Session entries and exits.
    pub session_events: u64,
    /// Customer scans.
    pub scans: u64,
    /// Payment slips.
    pub payments: u64,
}

/// Whether `ts_ms` is a timestamp chrono (and so the warehouse) can hold, with a day to spare so
/// that local midnights around it exist too.
fn valid_time(ts_ms: i64) -> bool {
    let first = DateTime::<Utc>::MIN_UTC.timestamp_millis() + DAY_MS;
    let last = DateTime::<Utc>::MAX_UTC.timestamp_millis() - DAY_MS;
    (first..=last).contains(&ts_ms)
}

/// The start of the local day of `ts_ms` in `timezone` ([`parkcast_localtime::day_start`]). `ts_ms`
/// must be a [`valid_time`].
fn day_start_ms(ts_ms: i64, timezone: Tz) -> i64 {
    parkcast_localtime::start_of_day_ms(timezone, ts_ms).unwrap_or_default()
}

/// The start of the local day after the day of `ts_ms` in `timezone`. `ts_ms` must be a
/// [`valid_time`].
fn day_end_ms(ts_ms: i64, timezone: Tz) -> i64 {
    parkcast_localtime::local_date(timezone, ts_ms).map_or(i64::MAX, |date| {
        parkcast_localtime::day_end_ms(timezone, date)
    })
}

/// The heartbeat phase of a slot within `period_ms`: FNV-1a of its id, in whole seconds, so it is the
/// same on every run and every machine.
fn heartbeat_phase_ms(slot_id: &str, period_ms: i64) -> i64 {
    let hash = slot_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    let seconds = u64::try_from(period_ms / 1_000).unwrap_or(1).max(1);
    i64::try_from(hash % seconds).map_or(0, |phase| phase * 1_000)
}

/// The first heartbeat instant strictly after `after_ms` on the slot's phase.
fn next_heartbeat_ms(after_ms: i64, phase_ms: i64, period_ms: i64) -> Option<i64> {
    let next = after_ms.checked_add((phase_ms - after_ms).rem_euclid(period_ms))?;
    if next == after_ms {
        next.checked_add(period_ms)
    } else {
        Some(next)
    }
}

/// Order of event groups at one instant.
const RANK_READING: u8 = 0;
const RANK_EXIT: u8 = 1;
const RANK_ENTRY: u8 = 2;
/// The exit of a stay that ends the instant it begins, after its entry.
const RANK_INSTANT_EXIT: u8 = 3;
const RANK_SCAN: u8 = 4;
const RANK_PAYMENT: u8 = 5;

/// What an event of the current date carries until it is emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Payload {
    /// A sensor reading: encoded at emission, when its sequence number is known.
    Reading { occupied: bool, heartbeat: bool },
    /// Any other message, encoded when read.
    Message { topic: Topic, value: Vec<u8> },
}

/// One event of the current date. Lots and slots are indexes into the source's tables.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    time_ms: i64,
    rank: u8,
    lot: usize,
    slot: usize,
    seq: u64,
    payload: Payload,
}

/// A session exit waiting for its date; ordered by time, then by when it was read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct PendingExit {
    time_ms: i64,
    order: u64,
    rank: u8,
    lot: usize,
    value: Vec<u8>,
}

/// The files of one partition date, per replayed fact table (in [`FACT_TABLES`] order).
#[derive(Debug, Clone, Default)]
struct DateFiles {
    date: NaiveDate,
    files: [Vec<PathBuf>; 4],
}

#[derive(Debug, Clone)]
struct LotEntry {
    lot_id: String,
    /// Whether the lot filter keeps its events.
    wanted: bool,
    /// From `dim_lot`; UTC for lots without a row (their slots get no heartbeats anyway).
    timezone: Tz,
    /// Its first `fact_lot_occupancy` instant, when heartbeats are synthesized without a start.
    occupancy_start_ms: Option<i64>,
    /// Synthesized heartbeats stop before this instant; `i64::MAX` until the end is known.
    heartbeat_end_ms: i64,
}

#[derive(Debug, Clone)]
struct SlotEntry {
    slot_id: String,
    lot: usize,
    /// The status last emitted, which heartbeats repeat.
    occupied: bool,
    /// The sequence number last emitted, when synthesizing.
    last_seq: u64,
    phase_ms: i64,
}

/// A warehouse's events as wire messages, in non-decreasing event time, read one partition date at
/// a time. See the module docs for the order, heartbeats and the window.
#[derive(Debug)]
pub struct EventSource {
    warehouse: Warehouse,
    config: SourceConfig,
    topology: Topology,
    /// Heartbeat period, when synthesizing.
    heartbeat_period_ms: Option<i64>,
    dates: VecDeque<DateFiles>,
    lots: Vec<LotEntry>,
    lot_index: HashMap<String, usize>,
    slots: Vec<SlotEntry>,
    slot_index: HashMap<String, usize>,
    /// Slots `0..topology_slots` are those of the topology, the ones that get heartbeats.
    topology_slots: usize,
    /// Events of the current date, sorted.
    current: VecDeque<Pending>,
    exits: BinaryHeap<Reverse<PendingExit>>,
    exits_read: u64,
    /// Next heartbeat of each synthesizing slot: (time, slot).
    heartbeats: BinaryHeap<Reverse<(i64, usize)>>,
    last_event_ms: Option<i64>,
    started: bool,
    exhausted: bool,
    done: bool,
    /// Reused for every reading, so encoding one allocates only its bytes.
    scratch: SensorReading,
    stats: SourceStats,
}

impl EventSource {
    /// A source over `warehouse`. Reads the dimensions (and, to synthesize heartbeats without a
    /// start, each lot's first `fact_lot_occupancy` instant) and lists the fact files; facts are read
    /// as the iteration reaches their date.
    pub fn new(warehouse: &Warehouse, config: SourceConfig) -> Result<EventSource, SourceError> {
        config.validate()?;
        let mut topology = Topology::read(warehouse)?;
        let lot_rows: Vec<LotRow> = if warehouse.has_table(Table::DimLot) {
            warehouse.read_rows()?
        } else {
            Vec::new()
        };
        if let Some(wanted) = &config.lots {
            for lot_id in wanted {
                let known = lot_rows.iter().any(|row| row.lot_id == *lot_id)
                    || topology.lots().iter().any(|lot| lot.lot_id == *lot_id);
                if !known {
                    return Err(SourceError::UnknownLot {
                        lot_id: lot_id.clone(),
                    });
                }
            }
            topology.retain_lots(wanted);
        }
        let heartbeat_period_ms = config
            .heartbeat_minutes
            .map(|minutes| i64::from(minutes) * MINUTE_MS);
        let occupancy_starts = if heartbeat_period_ms.is_some() && config.start_ms.is_none() {
            occupancy_starts(warehouse)?
        } else {
            HashMap::new()
        };
        let timezones: HashMap<&str, &str> = lot_rows
            .iter()
            .map(|row| (row.lot_id.as_str(), row.timezone.as_str()))
            .collect();

        let mut source = EventSource {
            warehouse: warehouse.clone(),
            heartbeat_period_ms,
            dates: list_dates(warehouse, &config)?,
            lots: Vec::with_capacity(topology.lots().len()),
            lot_index: HashMap::with_capacity(topology.lots().len()),
            slots: Vec::with_capacity(topology.slot_count()),
            slot_index: HashMap::with_capacity(topology.slot_count()),
            topology_slots: topology.slot_count(),
            current: VecDeque::new(),
            exits: BinaryHeap::new(),
            exits_read: 0,
            heartbeats: BinaryHeap::new(),
            last_event_ms: None,
            started: false,
            exhausted: false,
            done: false,
            scratch: SensorReading {
                schema_version: SCHEMA_VERSION,
                ..SensorReading::default()
            },
            stats: SourceStats::default(),
            config,
            topology: Topology::default(),
        };
        for lot in topology.lots() {
            let lot_index = source.intern_lot(&lot.lot_id);
            let timezone = match (heartbeat_period_ms, timezones.get(lot.lot_id.as_str())) {
                (Some(_), Some(name)) => {
                    name.parse::<Tz>()
                        .map_err(|_| SourceError::UnknownTimezone {
                            lot_id: lot.lot_id.clone(),
                            timezone: (*name).to_owned(),
                        })?
                }
                _ => Tz::UTC,
            };
            let entry = &mut source.lots[lot_index];
            entry.timezone = timezone;
            entry.occupancy_start_ms = occupancy_starts.get(&lot.lot_id).copied();
            for slot_id in &lot.slot_ids {
                source.intern_slot(slot_id, lot_index);
            }
        }
        source.topology = topology;
        Ok(source)
    }

    /// The lots replayed and their slots, from `dim_slot` (lot filter applied).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Events emitted so far, by kind.
    pub fn stats(&self) -> SourceStats {
        self.stats
    }

    /// About how many events the iteration yields, for a progress bar: the fact rows from the
    /// Parquet footers (every session counted with an exit, the window and lot filter ignored), plus,
    /// when synthesizing, one heartbeat per slot and period over the dates of the facts.
    pub fn total_hint(&self) -> Result<u64, SourceError> {
        let summaries = self.warehouse.summary()?;
        let mut total = 0_u64;
        let mut dates: Option<(NaiveDate, NaiveDate)> = None;
        for summary in summaries
            .iter()
            .filter(|summary| FACT_TABLES.contains(&summary.table))
        {
            let per_row = if summary.table == Table::FactParkingSession {
                2
            } else {
                1
            };
            total = total.saturating_add(summary.rows.saturating_mul(per_row));
            if let Some((first, last)) = summary.date_range {
                dates = Some(dates.map_or((first, last), |(known_first, known_last)| {
                    (known_first.min(first), known_last.max(last))
                }));
            }
        }
        if let (Some(period_ms), Some((first, last))) = (self.heartbeat_period_ms, dates) {
            let days = u64::try_from((last - first).num_days() + 1).unwrap_or(0);
            let per_slot = days * 1_440 * MINUTE_MS as u64 / period_ms.max(1) as u64 + 1;
            total = total.saturating_add(per_slot.saturating_mul(self.topology_slots as u64));
        }
        Ok(total)
    }

    fn intern_lot(&mut self, lot_id: &str) -> usize {
        if let Some(&lot) = self.lot_index.get(lot_id) {
            return lot;
        }
        let lot = self.lots.len();
        self.lots.push(LotEntry {
            lot_id: lot_id.to_owned(),
            wanted: self
                .config
                .lots
                .as_ref()
                .is_none_or(|wanted| wanted.contains(lot_id)),
            timezone: Tz::UTC,
            occupancy_start_ms: None,
            heartbeat_end_ms: self.config.end_ms.unwrap_or(i64::MAX),
        });
        self.lot_index.insert(lot_id.to_owned(), lot);
        lot
    }

    /// The index of a slot, added on first sight when `dim_slot` does not have it (it then gets no
    /// heartbeats).
    fn intern_slot(&mut self, slot_id: &str, lot: usize) -> usize {
        if let Some(&slot) = self.slot_index.get(slot_id) {
            return slot;
        }
        let slot = self.slots.len();
        self.slots.push(SlotEntry {
            slot_id: slot_id.to_owned(),
            lot,
            occupied: false,
            last_seq: 0,
            phase_ms: self
                .heartbeat_period_ms
                .map_or(0, |period_ms| heartbeat_phase_ms(slot_id, period_ms)),
        });
        self.slot_index.insert(slot_id.to_owned(), slot);
        slot
    }

    fn step(&mut self) -> Result<Option<WireEvent>, SourceError> {
        if !self.started {
            self.begin()?;
        }
        loop {
            if self.current.is_empty() && !self.exhausted && !self.load_next_date()? {
                self.on_exhausted();
            }
            let next_real_ms = self.current.front().map(|pending| pending.time_ms);
            if let Some(period_ms) = self.heartbeat_period_ms
                && let Some(&Reverse((time_ms, slot))) = self.heartbeats.peek()
                && next_real_ms.is_none_or(|real_ms| time_ms <= real_ms)
            {
                self.heartbeats.pop();
                if time_ms >= self.lots[self.slots[slot].lot].heartbeat_end_ms {
                    continue;
                }
                return Ok(Some(self.emit_heartbeat(time_ms, slot, period_ms)));
            }
            return Ok(self.current.pop_front().map(|pending| self.emit(pending)));
        }
    }

    /// Reads the first date with events and schedules every slot's first heartbeat.
    fn begin(&mut self) -> Result<(), SourceError> {
        self.started = true;
        if !self.load_next_date()? {
            self.on_exhausted();
        }
        if self.heartbeat_period_ms.is_none() {
            return Ok(());
        }
        let first_event_ms = self.current.front().map(|pending| pending.time_ms);
        for slot in 0..self.topology_slots {
            let lot = &self.lots[self.slots[slot].lot];
            let start_ms =
                self.config.start_ms.or(lot.occupancy_start_ms).or_else(|| {
                    first_event_ms.map(|first_ms| day_start_ms(first_ms, lot.timezone))
                });
            if let Some(start_ms) = start_ms
                && start_ms < lot.heartbeat_end_ms
            {
                self.heartbeats.push(Reverse((start_ms, slot)));
            }
        }
        Ok(())
    }

    /// Every fact has been emitted: heartbeats now know where to stop.
    fn on_exhausted(&mut self) {
        self.exhausted = true;
        if self.config.end_ms.is_some() {
            return;
        }
        for lot in &mut self.lots {
            lot.heartbeat_end_ms = self
                .last_event_ms
                .map_or(i64::MIN, |last_ms| day_end_ms(last_ms, lot.timezone));
        }
    }

    /// Reads the next date that has events into `current`; after the last date, the exits still
    /// waiting. Returns whether there are events.
    fn load_next_date(&mut self) -> Result<bool, SourceError> {
        while let Some(date) = self.dates.pop_front() {
            let date_end_ms = date
                .date
                .checked_add_days(Days::new(1))
                .map_or(i64::MAX, |next| {
                    next.and_time(chrono::NaiveTime::MIN)
                        .and_utc()
                        .timestamp_millis()
                });
            let mut pending = Vec::new();
            let [status, sessions, scans, payments] = &date.files;
            for path in status {
                self.read_readings(path, &mut pending)?;
            }
            for path in sessions {
                self.read_sessions(path, &mut pending)?;
            }
            for path in scans {
                self.read_scans(path, &mut pending)?;
            }
            for path in payments {
                self.read_payments(path, &mut pending)?;
            }
            while let Some(Reverse(exit)) = self.exits.peek()
                && exit.time_ms < date_end_ms
            {
                if let Some(Reverse(exit)) = self.exits.pop() {
                    pending.push(exit_pending(exit));
                }
            }
            if !pending.is_empty() {
                self.set_current(pending);
                return Ok(true);
            }
        }
        if self.exits.is_empty() {
            return Ok(false);
        }
        let pending: Vec<Pending> = std::mem::take(&mut self.exits)
            .into_sorted_vec()
            .into_iter()
            .rev()
            .map(|Reverse(exit)| exit_pending(exit))
            .collect();
        self.set_current(pending);
        Ok(true)
    }

    fn set_current(&mut self, mut pending: Vec<Pending>) {
        // Stable: ties keep file order, which is deterministic (files are read sorted by path).
        pending.sort_by_key(|event| (event.time_ms, event.rank, event.lot, event.slot, event.seq));
        self.current = pending.into();
    }

    fn read_readings(
        &mut self,
        path: &Path,
        pending: &mut Vec<Pending>,
    ) -> Result<(), SourceError> {
        const TABLE: Table = Table::FactSlotStatus;
        let columns = ["ts", "slot_id", "lot_id", "occupied", "kind", "sensor_seq"];
        let frame = read_file(&self.warehouse, TABLE, path, Some(&columns))?;
        let context = || format!("reading {}", path.display());
        let column = |name: &str| {
            frame.column(name).map_err(|source| SourceError::Polars {
                context: context(),
                source,
            })
        };
        let polars_error = |source| SourceError::Polars {
            context: context(),
            source,
        };
        let times = column("ts")?.datetime().map_err(polars_error)?.physical();
        let slot_ids = column("slot_id")?.str().map_err(polars_error)?;
        let lot_ids = column("lot_id")?.str().map_err(polars_error)?;
        let occupied_flags = column("occupied")?.bool().map_err(polars_error)?;
        let kinds = column("kind")?.str().map_err(polars_error)?;
        let seqs = column("sensor_seq")?.u64().map_err(polars_error)?;
        let null = |column: &'static str| SourceError::NullValue {
            table: TABLE,
            column,
            path: path.to_path_buf(),
        };
        let rows = times
            .iter()
            .zip(slot_ids.iter())
            .zip(lot_ids.iter())
            .zip(occupied_flags.iter())
            .zip(kinds.iter())
            .zip(seqs.iter());
        for (((((time_ms, slot_id), lot_id), occupied), kind), seq) in rows {
            let time_ms = time_ms.ok_or_else(|| null("ts"))?;
            check_time(time_ms)?;
            if !self.config.in_window(time_ms) {
                continue;
            }
            let lot = self.intern_lot(lot_id.ok_or_else(|| null("lot_id"))?);
            if !self.lots[lot].wanted {
                continue;
            }
            let heartbeat = match kind.ok_or_else(|| null("kind"))? {
                "change" => false,
                "heartbeat" => true,
                other => {
                    return Err(SourceError::UnexpectedValue {
                        table: TABLE,
                        column: "kind",
                        value: other.to_owned(),
                        expected: "change or heartbeat",
                        path: path.to_path_buf(),
                    });
                }
            };
            let slot = self.intern_slot(slot_id.ok_or_else(|| null("slot_id"))?, lot);
            pending.push(Pending {
                time_ms,
                rank: RANK_READING,
                lot,
                slot,
                seq: seq.ok_or_else(|| null("sensor_seq"))?,
                payload: Payload::Reading {
                    occupied: occupied.ok_or_else(|| null("occupied"))?,
                    heartbeat,
                },
            });
        }
        Ok(())
    }

    fn read_sessions(
        &mut self,
        path: &Path,
        pending: &mut Vec<Pending>,
    ) -> Result<(), SourceError> {
        let frame = read_file(&self.warehouse, Table::FactParkingSession, path, None)?;
        for row in ParkingSessionRow::from_frame(&frame)? {
            let entry_ms = row.entry_ts.timestamp_millis();
            let exit_ms = row.exit_ts.map(|exit| exit.timestamp_millis());
            check_time(entry_ms)?;
            if let Some(exit_ms) = exit_ms {
                check_time(exit_ms)?;
            }
            if !self.config.in_window(entry_ms) {
                continue;
            }
            let lot = self.intern_lot(&row.lot_id);
            if !self.lots[lot].wanted {
                continue;
            }
            if let Some(exit_ms) = exit_ms
                && exit_ms < entry_ms
            {
                return Err(SourceError::ExitBeforeEntry {
                    session_id: row.session_id,
                    entry_ms,
                    exit_ms,
                });
            }
            let mut message = SessionEvent {
                schema_version: SCHEMA_VERSION,
                session_id: row.session_id,
                lot_id: row.lot_id,
                slot_id: row.slot_id,
                kind: SessionEventKind::Entry as i32,
                event_time_ms: entry_ms,
                vehicle_id: row.vehicle_id.unwrap_or_default(),
                customer_id: row.customer_id.unwrap_or_default(),
            };
            pending.push(Pending {
                time_ms: entry_ms,
                rank: RANK_ENTRY,
                lot,
                slot: 0,
                seq: 0,
                payload: Payload::Message {
                    topic: Topic::Session,
                    value: message.encode_to_vec(),
                },
            });
            if let Some(exit_ms) = exit_ms
                && self.config.in_window(exit_ms)
            {
                message.kind = SessionEventKind::Exit as i32;
                message.event_time_ms = exit_ms;
                self.exits.push(Reverse(PendingExit {
                    time_ms: exit_ms,
                    order: self.exits_read,
                    rank: if exit_ms == entry_ms {
                        RANK_INSTANT_EXIT
                    } else {
                        RANK_EXIT
                    },
                    lot,
                    value: message.encode_to_vec(),
                }));
                self.exits_read += 1;
            }
        }
        Ok(())
    }

    fn read_scans(&mut self, path: &Path, pending: &mut Vec<Pending>) -> Result<(), SourceError> {
        let frame = read_file(&self.warehouse, Table::FactCustomerScan, path, None)?;
        for row in CustomerScanRow::from_frame(&frame)? {
            let time_ms = row.ts.timestamp_millis();
            check_time(time_ms)?;
            if !self.config.in_window(time_ms) {
                continue;
            }
            let lot = self.intern_lot(&row.lot_id);
            if !self.lots[lot].wanted {
                continue;
            }
            let direction = match row.direction.as_str() {
                "entry" => ScanDirection::Entry,
                "exit" => ScanDirection::Exit,
                _ => {
                    return Err(SourceError::UnexpectedValue {
                        table: Table::FactCustomerScan,
                        column: "direction",
                        value: row.direction,
                        expected: "entry or exit",
                        path: path.to_path_buf(),
                    });
                }
            };
            let message = CustomerScan {
                schema_version: SCHEMA_VERSION,
                customer_id: row.customer_id,
                vehicle_id: row.vehicle_id.unwrap_or_default(),
                lot_id: row.lot_id,
                gate: row.gate,
                direction: direction as i32,
                session_id: row.session_id.unwrap_or_default(),
                event_time_ms: time_ms,
            };
            pending.push(Pending {
                time_ms,
                rank: RANK_SCAN,
                lot,
                slot: 0,
                seq: 0,
                payload: Payload::Message {
                    topic: Topic::Scan,
                    value: message.encode_to_vec(),
                },
            });
        }
        Ok(())
    }

    fn read_payments(
        &mut self,
        path: &Path,
        pending: &mut Vec<Pending>,
    ) -> Result<(), SourceError> {
        let frame = read_file(&self.warehouse, Table::FactPayment, path, None)?;
        for row in PaymentRow::from_frame(&frame)? {
            let time_ms = row.paid_ts.timestamp_millis();
            check_time(time_ms)?;
            if !self.config.in_window(time_ms) {
                continue;
            }
            let lot = self.intern_lot(&row.lot_id);
            if !self.lots[lot].wanted {
                continue;
            }
            let message = PaymentSlip {
                schema_version: SCHEMA_VERSION,
                slip_id: row.slip_id,
                session_id: row.session_id,
                customer_id: row.customer_id.unwrap_or_default(),
                lot_id: row.lot_id,
                tariff_id: row.tariff_id,
                amount_cents: row.amount_cents,
                penalty_cents: row.penalty_cents,
                currency: row.currency,
                paid_time_ms: time_ms,
            };
            pending.push(Pending {
                time_ms,
                rank: RANK_PAYMENT,
                lot,
                slot: 0,
                seq: 0,
                payload: Payload::Message {
                    topic: Topic::Payment,
                    value: message.encode_to_vec(),
                },
            });
        }
        Ok(())
    }

    fn emit(&mut self, pending: Pending) -> WireEvent {
        self.last_event_ms = Some(pending.time_ms);
        match pending.payload {
            Payload::Reading {
                occupied,
                heartbeat,
            } => {
                self.stats.readings += 1;
                let slot = &mut self.slots[pending.slot];
                slot.occupied = occupied;
                let seq = if self.heartbeat_period_ms.is_some() {
                    slot.last_seq += 1;
                    slot.last_seq
                } else {
                    pending.seq
                };
                let kind = if heartbeat {
                    ReadingKind::Heartbeat
                } else {
                    ReadingKind::Change
                };
                self.reading_event(pending.lot, pending.slot, pending.time_ms, seq, kind)
            }
            Payload::Message { topic, value } => {
                match topic {
                    Topic::Sensor => self.stats.readings += 1,
                    Topic::Session => self.stats.session_events += 1,
                    Topic::Scan => self.stats.scans += 1,
                    Topic::Payment => self.stats.payments += 1,
                    // Facts become input messages only; forecasts and dead letters are outputs.
                    Topic::Forecast | Topic::DeadLetter => {}
                }
                WireEvent {
                    topic,
                    key: self.lots[pending.lot].lot_id.clone(),
                    value,
                    event_time_ms: pending.time_ms,
                }
            }
        }
    }

    fn emit_heartbeat(&mut self, time_ms: i64, slot: usize, period_ms: i64) -> WireEvent {
        self.stats.synthesized_heartbeats += 1;
        let entry = &mut self.slots[slot];
        entry.last_seq += 1;
        let (lot, seq) = (entry.lot, entry.last_seq);
        if let Some(next_ms) = next_heartbeat_ms(time_ms, entry.phase_ms, period_ms)
            && next_ms < self.lots[lot].heartbeat_end_ms
        {
            self.heartbeats.push(Reverse((next_ms, slot)));
        }
        self.reading_event(lot, slot, time_ms, seq, ReadingKind::Heartbeat)
    }

    /// Encodes a reading of the slot's current status.
    fn reading_event(
        &mut self,
        lot: usize,
        slot: usize,
        time_ms: i64,
        seq: u64,
        kind: ReadingKind,
    ) -> WireEvent {
        let lot_id = &self.lots[lot].lot_id;
        let entry = &self.slots[slot];
        let message = &mut self.scratch;
        message.lot_id.clear();
        message.lot_id.push_str(lot_id);
        message.slot_id.clear();
        message.slot_id.push_str(&entry.slot_id);
        message.report = if entry.occupied {
            SlotReport::Occupied as i32
        } else {
            SlotReport::Free as i32
        };
        message.kind = kind as i32;
        message.sensor_seq = seq;
        message.event_time_ms = time_ms;
        WireEvent {
            topic: Topic::Sensor,
            key: lot_id.clone(),
            value: message.encode_to_vec(),
            event_time_ms: time_ms,
        }
    }
}

impl Iterator for EventSource {
    type Item = Result<WireEvent, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(event)) => Some(Ok(event)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(error) => {
                // An error ends the iteration: the order of what would follow is not known.
                self.done = true;
                Some(Err(error))
            }
        }
    }
}

impl FusedIterator for EventSource {}

fn exit_pending(exit: PendingExit) -> Pending {
    Pending {
        time_ms: exit.time_ms,
        rank: exit.rank,
        lot: exit.lot,
        slot: 0,
        seq: 0,
        payload: Payload::Message {
            topic: Topic::Session,
            value: exit.value,
        },
    }
}

fn check_time(ms: i64) -> Result<(), SourceError> {
    if valid_time(ms) {
        Ok(())
    } else {
        Err(SourceError::TimeOutOfRange { ms })
    }
}

/// The fact files of the replayed tables by partition date, dates outside the window left out.
fn list_dates(
    warehouse: &Warehouse,
    config: &SourceConfig,
) -> Result<VecDeque<DateFiles>, SourceError> {
    let mut by_date: BTreeMap<NaiveDate, DateFiles> = BTreeMap::new();
    for (position, table) in FACT_TABLES.into_iter().enumerate() {
        if !warehouse.has_table(table) {
            continue;
        }
        for path in warehouse.table_files(table)? {
            let date = partition_date_of(&path)
                .ok_or_else(|| SourceError::NotPartitioned { path: path.clone() })?;
            let start_ms = date
                .and_time(chrono::NaiveTime::MIN)
                .and_utc()
                .timestamp_millis();
            let before_window = config
                .start_ms
                .is_some_and(|window_start| start_ms.saturating_add(DAY_MS) <= window_start);
            let after_window = config
                .end_ms
                .is_some_and(|window_end| start_ms >= window_end);
            if before_window || after_window {
                continue;
            }
            by_date
                .entry(date)
                .or_insert_with(|| DateFiles {
                    date,
                    ..DateFiles::default()
                })
                .files[position]
                .push(path);
        }
    }
    Ok(by_date.into_values().collect())
}

/// Reads one Parquet file of a table (some columns, or all), after checking its schema.
fn read_file(
    warehouse: &Warehouse,
    table: Table,
    path: &Path,
    columns: Option<&[&str]>,
) -> Result<DataFrame, SourceError> {
    warehouse.check_file_schema(table, path)?;
    let file = File::open(path).map_err(|source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    ParquetReader::new(file)
        .with_columns(columns.map(|columns| columns.iter().map(|&name| name.to_owned()).collect()))
        .finish()
        .map_err(|source| SourceError::Polars {
            context: format!("reading {}", path.display()),
            source,
        })
}

/// The first `fact_lot_occupancy` instant of every lot.
fn occupancy_starts(warehouse: &Warehouse) -> Result<HashMap<String, i64>, SourceError> {
    if !warehouse.has_table(Table::FactLotOccupancy) {
        return Ok(HashMap::new());
    }
    let polars_error = |source| SourceError::Polars {
        context: "finding the first fact_lot_occupancy instant of each lot".to_owned(),
        source,
    };
    let frame = warehouse
        .scan(Table::FactLotOccupancy)?
        .group_by([col("lot_id")])
        .agg([col("ts").min()])
        .collect()
        .map_err(polars_error)?;
    let lot_ids = frame
        .column("lot_id")
        .and_then(|column| column.str())
        .map_err(polars_error)?;
    let starts = frame
        .column("ts")
        .and_then(|column| column.datetime())
        .map_err(polars_error)?;
    Ok(lot_ids
        .iter()
        .zip(starts.physical().iter())
        .filter_map(|(lot_id, start)| Some((lot_id?.to_owned(), start?)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_follow_the_phase_strictly_after_the_last_one() {
        let period = 15 * MINUTE_MS;
        assert_eq!(next_heartbeat_ms(0, 0, period), Some(period));
        assert_eq!(next_heartbeat_ms(0, 7_000, period), Some(7_000));
        assert_eq!(
            next_heartbeat_ms(7_000, 7_000, period),
            Some(7_000 + period)
        );
        assert_eq!(
            next_heartbeat_ms(8_000, 7_000, period),
            Some(7_000 + period)
        );
        assert_eq!(next_heartbeat_ms(-1, 0, period), Some(0));
        assert_eq!(next_heartbeat_ms(i64::MAX - 1, 0, period), None);
    }

    #[test]
    fn phases_are_whole_seconds_within_the_period_and_spread() {
        let period = 15 * MINUTE_MS;
        let phases: BTreeSet<i64> = (0..200)
            .map(|slot| heartbeat_phase_ms(&format!("mel:{slot}"), period))
            .collect();
        assert!(
            phases
                .iter()
                .all(|phase| (0..period).contains(phase) && phase % 1_000 == 0)
        );
        assert!(phases.len() > 150, "{} distinct phases", phases.len());
        assert_eq!(
            heartbeat_phase_ms("mel:1", period),
            heartbeat_phase_ms("mel:1", period)
        );
    }

    #[test]
    fn local_days_follow_the_lot_time_zone() {
        let melbourne: Tz = "Australia/Melbourne".parse().expect("a known zone");
        // 2014-06-12 09:00 AEST.
        let morning = DateTime::parse_from_rfc3339("2014-06-11T23:00:00Z")
            .expect("valid")
            .timestamp_millis();
        let midnight = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .expect("valid")
                .timestamp_millis()
        };
        assert_eq!(
            day_start_ms(morning, melbourne),
            midnight("2014-06-11T14:00:00Z")
        );
        assert_eq!(
            day_end_ms(morning, melbourne),
            midnight("2014-06-12T14:00:00Z")
        );
        // São Paulo skipped midnight on 2018-11-04: the day began at 01:00 local (03:00 UTC).
        let sao_paulo: Tz = "America/Sao_Paulo".parse().expect("a known zone");
        let date = NaiveDate::from_ymd_opt(2018, 11, 4).expect("valid");
        assert_eq!(
            parkcast_localtime::day_start_ms(sao_paulo, date),
            midnight("2018-11-04T03:00:00Z")
        );
    }

    #[test]
    fn invalid_settings_are_refused() {
        let invalid = |config: SourceConfig| config.validate().expect_err("should be refused");
        assert!(matches!(
            invalid(SourceConfig {
                heartbeat_minutes: Some(0),
                ..SourceConfig::default()
            }),
            SourceError::InvalidHeartbeat {
                heartbeat_minutes: 0
            }
        ));
        assert!(matches!(
            invalid(SourceConfig {
                start_ms: Some(10),
                end_ms: Some(10),
                ..SourceConfig::default()
            }),
            SourceError::EmptyWindow { .. }
        ));
        assert!(matches!(
            invalid(SourceConfig {
                end_ms: Some(i64::MAX),
                ..SourceConfig::default()
            }),
            SourceError::TimeOutOfRange { .. }
        ));
        assert!(matches!(
            invalid(SourceConfig {
                lots: Some(BTreeSet::new()),
                ..SourceConfig::default()
            }),
            SourceError::EmptyLotFilter
        ));
        SourceConfig {
            heartbeat_minutes: Some(15),
            start_ms: Some(0),
            end_ms: Some(1),
            lots: Some(BTreeSet::from(["a".to_owned()])),
        }
        .validate()
        .expect("valid settings should pass");
    }

    #[test]
    fn events_of_one_instant_are_ordered_readings_exits_entries() {
        let event = |time_ms: i64, rank: u8, lot: usize| Pending {
            time_ms,
            rank,
            lot,
            slot: 0,
            seq: 0,
            payload: Payload::Message {
                topic: Topic::Session,
                value: vec![rank],
            },
        };
        let mut events = [
            event(5, RANK_INSTANT_EXIT, 0),
            event(5, RANK_ENTRY, 1),
            event(5, RANK_ENTRY, 0),
            event(5, RANK_EXIT, 0),
            event(4, RANK_PAYMENT, 0),
            event(5, RANK_READING, 2),
        ];
        events.sort_by_key(|event| (event.time_ms, event.rank, event.lot, event.slot, event.seq));
        let order: Vec<(i64, u8, usize)> = events
            .iter()
            .map(|event| (event.time_ms, event.rank, event.lot))
            .collect();
        assert_eq!(
            order,
            vec![
                (4, RANK_PAYMENT, 0),
                (5, RANK_READING, 2),
                (5, RANK_EXIT, 0),
                (5, RANK_ENTRY, 0),
                (5, RANK_ENTRY, 1),
                (5, RANK_INSTANT_EXIT, 0),
            ]
        );
    }

    #[test]
    fn partition_dates_come_from_the_folder_name() {
        assert_eq!(
            partition_date_of(Path::new(
                "w/fact_slot_status/date=2014-06-11/part-melbourne-0.parquet"
            )),
            NaiveDate::from_ymd_opt(2014, 6, 11)
        );
        assert_eq!(
            partition_date_of(Path::new("w/dim_slot/part-sim-0.parquet")),
            None
        );
    }
}
