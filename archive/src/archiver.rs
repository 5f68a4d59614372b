//! Archiving the topics into the warehouse, exactly once as far as the warehouse can tell.
//!
//! The archiver reads every partition of the four input topics (by explicit assignment: it is the
//! warehouse's single writer, so it needs no group rebalancing) and appends rows to the fact tables:
//! sensor readings to `fact_slot_status`, completed stays to `fact_parking_session` (an entry is held
//! until its exit arrives), scans and slips to `fact_customer_scan` and `fact_payment`; and it rolls
//! `fact_lot_occupancy` forward from the readings ([`crate::rollup`]).
//!
//! A flush writes, for each partition read since the last flush, one file per date named by its
//! topic, partition and offset range (`part-kafka-sensor-p3-o000000001200-000000002399-0.parquet`),
//! each written to a temporary name and renamed; then the occupancy rows of that flush
//! (`part-kafka-rollup-g<generation>-0.parquet`); then, atomically, the checkpoint: the next offset of
//! every partition, the roll-up state, the open stays. The checkpoint is the commit point. On start,
//! every `kafka-*` file past the checkpoint (an offset range starting at or after the checkpointed
//! next offset, or a later roll-up generation) is the trace of a crash between writing files and
//! the checkpoint: it is deleted, and its messages are read again from the checkpointed offsets. So
//! a crash at any point neither loses nor duplicates a row. Offsets are also committed to the
//! archiver's consumer group after each checkpoint, for lag monitoring only.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parkcast_kafka::{KafkaConfig, next_offset, partition_count};
use parkcast_proto::v1::{
    CustomerScan, PaymentSlip, ReadingKind, ScanDirection, SensorReading, SessionEvent,
    SessionEventKind, SlotReport,
};
use parkcast_warehouse::TableRow;
use parkcast_warehouse::rows::{
    CustomerScanRow, LotOccupancyRow, ParkingSessionRow, PaymentRow, SlotStatusRow,
};
use parkcast_warehouse::schema::Table;
use parkcast_warehouse::{FrameRow, Warehouse, WarehouseError, by_partition_date};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, Timestamp};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use crate::rollup::{OccupancyRollup, Push, RollupConfig, RollupError};

/// `source` of archived rows.
pub const SOURCE: &str = "kafka";

/// Format version of the archive checkpoint.
pub const CHECKPOINT_VERSION: u32 = 1;

/// Folder of the checkpoint inside the warehouse (it belongs to the files it describes).
pub const STATE_DIR: &str = "_kafka_archive";

const CHECKPOINT_FILE: &str = "checkpoint.msgpack";

/// Settings of the archiver.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveConfig {
    /// The broker and topics.
    pub kafka: KafkaConfig,
    /// Consumer group the offsets are committed to (for lag monitoring).
    pub group_id: String,
    /// Flush when this many rows are buffered.
    pub flush_rows: usize,
    /// Flush at least this often while messages arrive.
    pub flush_interval: Duration,
    /// Stop after a flush once no message arrived for this long (`None`: run until stopped).
    pub stop_when_idle: Option<Duration>,
    /// The occupancy roll-up.
    pub rollup: RollupConfig,
    /// Crash test hook: fail once this run has written this many files, in the middle of a flush
    /// and before its checkpoint (the worst moment for a crash). `None` in production.
    pub fail_after_files: Option<usize>,
}

/// Errors of the archiver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// Kafka failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A topic is missing.
    #[error(transparent)]
    Topic(#[from] parkcast_kafka::TopicError),
    /// Writing the warehouse failed.
    #[error(transparent)]
    Warehouse(#[from] WarehouseError),
    /// Reading or writing the checkpoint failed.
    #[error("archive checkpoint {path}: {detail}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The checkpoint was written by a different topic set or a newer version.
    #[error("archive checkpoint {path} does not fit: {detail}")]
    IncompatibleCheckpoint {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The roll-up config or topology is invalid.
    #[error(transparent)]
    Rollup(#[from] RollupError),
    /// The crash test hook fired.
    #[error("simulated crash after writing {0} files")]
    SimulatedCrash(usize),
}

/// The four archived topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Sensor readings.
    Sensor,
    /// Session entries and exits.
    Session,
    /// Customer scans.
    Scan,
    /// Payment slips.
    Payment,
}

impl Role {
    const ALL: [Role; 4] = [Role::Sensor, Role::Session, Role::Scan, Role::Payment];

    fn tag(self) -> &'static str {
        match self {
            Role::Sensor => "sensor",
            Role::Session => "session",
            Role::Scan => "scan",
            Role::Payment => "payment",
        }
    }

    fn topic(self, kafka: &KafkaConfig) -> &str {
        match self {
            Role::Sensor => &kafka.topics.sensor,
            Role::Session => &kafka.topics.session,
            Role::Scan => &kafka.topics.scan,
            Role::Payment => &kafka.topics.payment,
        }
    }
}

/// An entry waiting for its exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OpenStay {
    lot_id: String,
    slot_id: String,
    vehicle_id: String,
    customer_id: String,
    entry_ms: i64,
}

/// Everything that must survive a restart, written atomically after the files it covers.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    /// Topic names, so a checkpoint is not applied to other topics.
    topics: [String; 4],
    /// Flushes completed; names the roll-up files.
    generation: u64,
    /// Next offset to read per (topic, partition).
    next: BTreeMap<(Role, i32), i64>,
    rollup: OccupancyRollup,
    open_stays: BTreeMap<String, OpenStay>,
    totals: ArchiveTotals,
}

/// Counts over the archive's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveTotals {
    /// Rows appended per table: slot status, sessions, scans, payments, lot occupancy.
    pub rows: [u64; 5],
    /// Messages read.
    pub messages: u64,
    /// Messages that did not decode or validate (the live consumer dead-letters them).
    pub invalid: u64,
    /// Exits whose entry was never seen (the stream began while the car was parked).
    pub orphan_exits: u64,
    /// Readings older than occupancy already rolled up for their lot (archived, not rolled up).
    pub late_for_rollup: u64,
    /// Files written.
    pub files: u64,
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Totals over the archive's life, after this run.
    pub totals: ArchiveTotals,
    /// Messages read in this run.
    pub messages_this_run: u64,
    /// Files of an interrupted flush removed at start.
    pub removed_uncommitted_files: usize,
    /// Flushes in this run.
    pub flushes: u64,
    /// Stays still open (waiting for their exit).
    pub open_stays: usize,
}

#[derive(Default)]
struct Buffers {
    /// Offset range read per (topic, partition) since the last flush.
    ranges: BTreeMap<(Role, i32), (i64, i64)>,
    status: BTreeMap<(Role, i32), Vec<SlotStatusRow>>,
    sessions: BTreeMap<(Role, i32), Vec<ParkingSessionRow>>,
    scans: BTreeMap<(Role, i32), Vec<CustomerScanRow>>,
    payments: BTreeMap<(Role, i32), Vec<PaymentRow>>,
    rows: usize,
}

/// Runs the archiver until idle (or forever); see the module docs.
pub fn archive(
    warehouse: &Warehouse,
    config: &ArchiveConfig,
    topology: Vec<(String, Vec<String>)>,
    progress: &mut dyn FnMut(&ArchiveTotals),
) -> Result<ArchiveSummary, ArchiveError> {
    config
        .kafka
        .validate()
        .map_err(|error| ArchiveError::Checkpoint {
            path: PathBuf::new(),
            detail: error.to_string(),
        })?;
    config.rollup.validate()?;
    let state_dir = warehouse.root().join(STATE_DIR);
    fs::create_dir_all(&state_dir).map_err(|error| ArchiveError::Checkpoint {
        path: state_dir.clone(),
        detail: error.to_string(),
    })?;
    let checkpoint_path = state_dir.join(CHECKPOINT_FILE);
    let topics = Role::ALL.map(|role| role.topic(&config.kafka).to_owned());
    let mut checkpoint = match load_checkpoint(&checkpoint_path)? {
        Some(checkpoint) => {
            if checkpoint.topics != topics {
                return Err(ArchiveError::IncompatibleCheckpoint {
                    path: checkpoint_path,
                    detail: format!(
                        "written for topics {:?}, configured {:?}",
                        checkpoint.topics, topics
                    ),
                });
            }
            checkpoint
        }
        None => Checkpoint {
            version: CHECKPOINT_VERSION,
            topics,
            generation: 0,
            next: BTreeMap::new(),
            rollup: OccupancyRollup::new(config.rollup.clone(), topology)?,
            open_stays: BTreeMap::new(),
            totals: ArchiveTotals::default(),
        },
    };
    let removed_uncommitted_files = remove_uncommitted(warehouse, &checkpoint)?;
    if removed_uncommitted_files > 0 {
        tracing::warn!(
            files = removed_uncommitted_files,
            "removed files of a flush interrupted before its checkpoint; reading their messages again"
        );
    }

    let mut client = config.kafka.client_config();
    client
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = client.create()?;
    let mut assignment = TopicPartitionList::new();
    let timeout = Duration::from_secs(10);
    for role in Role::ALL {
        let topic = role.topic(&config.kafka);
        for partition in 0..partition_count(&consumer, topic, timeout)? {
            let next = checkpoint
                .next
                .get(&(role, partition))
                .copied()
                .unwrap_or(0);
            assignment.add_partition_offset(topic, partition, Offset::Offset(next))?;
        }
    }
    consumer.assign(&assignment)?;

    let mut buffers = Buffers::default();
    let mut last_message = Instant::now();
    let mut last_flush = Instant::now();
    let mut messages_this_run = 0;
    let mut flushes = 0;
    let mut files_this_run = 0;
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                last_message = Instant::now();
                let Some(role) = Role::ALL
                    .into_iter()
                    .find(|role| role.topic(&config.kafka) == message.topic())
                else {
                    continue;
                };
                let key = (role, message.partition());
                let next = checkpoint.next.get(&key).copied().unwrap_or(0);
                if message.offset() < next {
                    continue;
                }
                messages_this_run += 1;
                checkpoint.totals.messages += 1;
                let range = buffers
                    .ranges
                    .entry(key)
                    .or_insert((message.offset(), message.offset()));
                range.1 = message.offset();
                checkpoint.next.insert(key, next_offset(message.offset()));
                let received_ms = match message.timestamp() {
                    Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => ms,
                    Timestamp::NotAvailable => parkcast_kafka::now_ms(),
                };
                let payload = message.payload().unwrap_or_default();
                let valid = ingest_message(
                    role,
                    key,
                    payload,
                    received_ms,
                    &mut checkpoint,
                    &mut buffers,
                );
                if !valid {
                    checkpoint.totals.invalid += 1;
                }
            }
            Some(Err(error)) => {
                tracing::warn!(error = %error, "archive consumer error");
            }
            None => {}
        }
        let idle = config
            .stop_when_idle
            .is_some_and(|idle| last_message.elapsed() >= idle);
        let due = buffers.rows >= config.flush_rows
            || (!buffers.ranges.is_empty() && last_flush.elapsed() >= config.flush_interval)
            || (idle && !buffers.ranges.is_empty());
        if due {
            flush(
                warehouse,
                config,
                &mut checkpoint,
                &mut buffers,
                &checkpoint_path,
                &mut files_this_run,
            )?;
            flushes += 1;
            last_flush = Instant::now();
            progress(&checkpoint.totals);
            commit_offsets(&consumer, config, &checkpoint);
        }
        if idle {
            break;
        }
    }
    Ok(ArchiveSummary {
        totals: checkpoint.totals,
        messages_this_run,
        removed_uncommitted_files,
        flushes,
        open_stays: checkpoint.open_stays.len(),
    })
}

fn commit_offsets(consumer: &BaseConsumer, config: &ArchiveConfig, checkpoint: &Checkpoint) {
    let mut offsets = TopicPartitionList::new();
    for ((role, partition), next) in &checkpoint.next {
        if offsets
            .add_partition_offset(role.topic(&config.kafka), *partition, Offset::Offset(*next))
            .is_err()
        {
            return;
        }
    }
    if let Err(error) = consumer.commit(&offsets, CommitMode::Async) {
        tracing::debug!(error = %error, "committing archive offsets failed (monitoring only)");
    }
}

fn utc(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// Decodes one message into rows; false when it is not a valid message of its topic.
fn ingest_message(
    role: Role,
    key: (Role, i32),
    payload: &[u8],
    received_ms: i64,
    checkpoint: &mut Checkpoint,
    buffers: &mut Buffers,
) -> bool {
    match role {
        Role::Sensor => {
            let Ok(reading) = SensorReading::decode(payload) else {
                return false;
            };
            let occupied = match SlotReport::try_from(reading.report) {
                Ok(SlotReport::Occupied) => true,
                Ok(SlotReport::Free) => false,
                _ => return false,
            };
            let kind = match ReadingKind::try_from(reading.kind) {
                Ok(ReadingKind::Change) => "change",
                Ok(ReadingKind::Heartbeat) => "heartbeat",
                _ => return false,
            };
            let (Some(ts), Some(received_ts)) = (utc(reading.event_time_ms), utc(received_ms))
            else {
                return false;
            };
            if reading.lot_id.is_empty() || reading.slot_id.is_empty() || reading.event_time_ms <= 0
            {
                return false;
            }
            let pushed = checkpoint.rollup.push(
                &reading.lot_id,
                &reading.slot_id,
                reading.event_time_ms,
                reading.sensor_seq,
                occupied,
            );
            if pushed == Push::Late {
                checkpoint.totals.late_for_rollup += 1;
            }
            buffers.status.entry(key).or_default().push(SlotStatusRow {
                ts,
                received_ts,
                slot_id: reading.slot_id,
                lot_id: reading.lot_id,
                occupied,
                kind: kind.to_owned(),
                sensor_seq: reading.sensor_seq,
                source: SOURCE.to_owned(),
            });
            buffers.rows += 1;
            true
        }
        Role::Session => {
            let Ok(event) = SessionEvent::decode(payload) else {
                return false;
            };
            if event.session_id.is_empty() || event.event_time_ms <= 0 {
                return false;
            }
            match SessionEventKind::try_from(event.kind) {
                Ok(SessionEventKind::Entry) => {
                    checkpoint.open_stays.insert(
                        event.session_id,
                        OpenStay {
                            lot_id: event.lot_id,
                            slot_id: event.slot_id,
                            vehicle_id: event.vehicle_id,
                            customer_id: event.customer_id,
                            entry_ms: event.event_time_ms,
                        },
                    );
                    true
                }
                Ok(SessionEventKind::Exit) => {
                    let Some(stay) = checkpoint.open_stays.remove(&event.session_id) else {
                        checkpoint.totals.orphan_exits += 1;
                        return true;
                    };
                    let (Some(entry_ts), Some(exit_ts)) =
                        (utc(stay.entry_ms), utc(event.event_time_ms))
                    else {
                        return false;
                    };
                    buffers
                        .sessions
                        .entry(key)
                        .or_default()
                        .push(ParkingSessionRow {
                            session_id: event.session_id,
                            slot_id: stay.slot_id,
                            lot_id: stay.lot_id,
                            vehicle_id: non_empty(&stay.vehicle_id),
                            customer_id: non_empty(&stay.customer_id),
                            entry_ts,
                            exit_ts: Some(exit_ts),
                            allowed_minutes: None,
                            in_violation: false,
                            source: SOURCE.to_owned(),
                        });
                    buffers.rows += 1;
                    true
                }
                _ => false,
            }
        }
        Role::Scan => {
            let Ok(scan) = CustomerScan::decode(payload) else {
                return false;
            };
            let direction = match ScanDirection::try_from(scan.direction) {
                Ok(ScanDirection::Entry) => "entry",
                Ok(ScanDirection::Exit) => "exit",
                _ => return false,
            };
            let Some(ts) = utc(scan.event_time_ms).filter(|_| scan.event_time_ms > 0) else {
                return false;
            };
            buffers.scans.entry(key).or_default().push(CustomerScanRow {
                ts,
                customer_id: scan.customer_id,
                vehicle_id: non_empty(&scan.vehicle_id),
                lot_id: scan.lot_id,
                gate: scan.gate,
                direction: direction.to_owned(),
                session_id: non_empty(&scan.session_id),
                source: SOURCE.to_owned(),
            });
            buffers.rows += 1;
            true
        }
        Role::Payment => {
            let Ok(slip) = PaymentSlip::decode(payload) else {
                return false;
            };
            let Some(paid_ts) = utc(slip.paid_time_ms).filter(|_| slip.paid_time_ms > 0) else {
                return false;
            };
            buffers.payments.entry(key).or_default().push(PaymentRow {
                slip_id: slip.slip_id,
                session_id: slip.session_id,
                customer_id: non_empty(&slip.customer_id),
                lot_id: slip.lot_id,
                tariff_id: slip.tariff_id,
                amount_cents: slip.amount_cents,
                penalty_cents: slip.penalty_cents,
                currency: slip.currency,
                paid_ts,
                source: SOURCE.to_owned(),
                // The slip message carries no status, refunds or paid period: those come from
                // the operational store (`parkcast etl`).
                status: None,
                refunded_cents: None,
                paid_from: None,
                paid_until: None,
            });
            buffers.rows += 1;
            true
        }
    }
}

/// The writer name of a partition's offset range: `kafka-sensor-p3-o000000001200-000000002399`.
fn range_writer(role: Role, partition: i32, first: i64, last: i64) -> String {
    format!("kafka-{}-p{partition}-o{first:012}-{last:012}", role.tag())
}

fn rollup_writer(generation: u64) -> String {
    format!("kafka-rollup-g{generation:010}")
}

/// What a `kafka-*` file name says: a partition's offset range, or a roll-up generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileOrigin {
    Range {
        role: Role,
        partition: i32,
        first: i64,
    },
    Rollup {
        generation: u64,
    },
}

fn parse_origin(file_name: &str) -> Option<FileOrigin> {
    let writer = file_name
        .strip_prefix("part-kafka-")?
        .strip_suffix(".parquet")?;
    // Drop the `-<part>` suffix that the warehouse appends.
    let writer = &writer[..writer.rfind('-')?];
    if let Some(generation) = writer.strip_prefix("rollup-g") {
        return Some(FileOrigin::Rollup {
            generation: generation.parse().ok()?,
        });
    }
    let mut pieces = writer.split('-');
    let role = match pieces.next()? {
        "sensor" => Role::Sensor,
        "session" => Role::Session,
        "scan" => Role::Scan,
        "payment" => Role::Payment,
        _ => return None,
    };
    let partition = pieces.next()?.strip_prefix('p')?.parse().ok()?;
    let first = pieces.next()?.strip_prefix('o')?.parse().ok()?;
    Some(FileOrigin::Range {
        role,
        partition,
        first,
    })
}

/// Deletes the files a crash left past the checkpoint; returns how many.
fn remove_uncommitted(
    warehouse: &Warehouse,
    checkpoint: &Checkpoint,
) -> Result<usize, ArchiveError> {
    let mut removed = 0;
    for table in [
        Table::FactSlotStatus,
        Table::FactParkingSession,
        Table::FactCustomerScan,
        Table::FactPayment,
        Table::FactLotOccupancy,
    ] {
        if !warehouse.has_table(table) {
            continue;
        }
        for path in warehouse.table_files(table)? {
            let Some(origin) = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(parse_origin)
            else {
                continue;
            };
            let uncommitted = match origin {
                FileOrigin::Range {
                    role,
                    partition,
                    first,
                } => {
                    first
                        >= checkpoint
                            .next
                            .get(&(role, partition))
                            .copied()
                            .unwrap_or(0)
                }
                FileOrigin::Rollup { generation } => generation > checkpoint.generation,
            };
            if uncommitted {
                fs::remove_file(&path).map_err(|error| ArchiveError::Checkpoint {
                    path: path.clone(),
                    detail: format!("removing an uncommitted file: {error}"),
                })?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

struct FileWriter<'a> {
    warehouse: &'a Warehouse,
    fail_after_files: Option<usize>,
    /// Files written by this run before this flush.
    earlier: usize,
    written: usize,
}

impl FileWriter<'_> {
    /// Writes rows as one file per partition date.
    fn write<R: FrameRow + TableRow>(
        &mut self,
        writer: &str,
        rows: &[R],
    ) -> Result<u64, ArchiveError> {
        let mut files = 0;
        for (date, rows) in by_partition_date(rows) {
            // Only once this flush wrote a file: the crash must leave something to clean up.
            if self
                .fail_after_files
                .is_some_and(|limit| self.written >= 1 && self.earlier + self.written >= limit)
            {
                return Err(ArchiveError::SimulatedCrash(self.earlier + self.written));
            }
            self.warehouse.write_file(writer, Some(date), 0, &rows)?;
            self.written += 1;
            files += 1;
        }
        Ok(files)
    }
}

fn flush(
    warehouse: &Warehouse,
    config: &ArchiveConfig,
    checkpoint: &mut Checkpoint,
    buffers: &mut Buffers,
    checkpoint_path: &Path,
    files_this_run: &mut usize,
) -> Result<(), ArchiveError> {
    let taken = std::mem::take(buffers);
    let mut writer = FileWriter {
        warehouse,
        fail_after_files: config.fail_after_files,
        earlier: *files_this_run,
        written: 0,
    };
    let name = |key: &(Role, i32)| {
        let (first, last) = taken.ranges[key];
        range_writer(key.0, key.1, first, last)
    };
    for (key, rows) in &taken.status {
        writer.write(&name(key), rows)?;
        checkpoint.totals.rows[0] += rows.len() as u64;
    }
    for (key, rows) in &taken.sessions {
        writer.write(&name(key), rows)?;
        checkpoint.totals.rows[1] += rows.len() as u64;
    }
    for (key, rows) in &taken.scans {
        writer.write(&name(key), rows)?;
        checkpoint.totals.rows[2] += rows.len() as u64;
    }
    for (key, rows) in &taken.payments {
        writer.write(&name(key), rows)?;
        checkpoint.totals.rows[3] += rows.len() as u64;
    }
    let occupancy: Vec<LotOccupancyRow> = checkpoint.rollup.drain_final();
    let generation = checkpoint.generation + 1;
    writer.write(&rollup_writer(generation), &occupancy)?;
    checkpoint.totals.rows[4] += occupancy.len() as u64;
    checkpoint.totals.files += writer.written as u64;
    *files_this_run += writer.written;
    checkpoint.generation = generation;
    save_checkpoint(checkpoint_path, checkpoint)
}

fn save_checkpoint(path: &Path, checkpoint: &Checkpoint) -> Result<(), ArchiveError> {
    let error = |detail: String| ArchiveError::Checkpoint {
        path: path.to_owned(),
        detail,
    };
    let bytes = rmp_serde::to_vec(checkpoint).map_err(|e| error(e.to_string()))?;
    parkcast_durable::replace_file(path, &bytes).map_err(|e| error(e.to_string()))
}

fn load_checkpoint(path: &Path) -> Result<Option<Checkpoint>, ArchiveError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(ArchiveError::Checkpoint {
                path: path.to_owned(),
                detail: error.to_string(),
            });
        }
    };
    let checkpoint: Checkpoint =
        rmp_serde::from_slice(&bytes).map_err(|error| ArchiveError::Checkpoint {
            path: path.to_owned(),
            detail: format!("undecodable (refusing to guess what was archived): {error}"),
        })?;
    if checkpoint.version > CHECKPOINT_VERSION {
        return Err(ArchiveError::IncompatibleCheckpoint {
            path: path.to_owned(),
            detail: format!(
                "version {} (this build reads up to {CHECKPOINT_VERSION})",
                checkpoint.version
            ),
        });
    }
    Ok(Some(checkpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_carry_their_origin() {
        let writer = range_writer(Role::Session, 3, 1_200, 2_399);
        let file = format!("part-{writer}-0.parquet");
        assert_eq!(
            parse_origin(&file),
            Some(FileOrigin::Range {
                role: Role::Session,
                partition: 3,
                first: 1_200
            })
        );
        let rollup = format!("part-{}-0.parquet", rollup_writer(17));
        assert_eq!(
            parse_origin(&rollup),
            Some(FileOrigin::Rollup { generation: 17 })
        );
        assert_eq!(parse_origin("part-melbourne-0.parquet"), None);
        assert_eq!(parse_origin("part-kafka-sensor-px-o1-2-0.parquet"), None);
    }
}
