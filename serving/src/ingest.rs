//! The Kafka consumer: sensor and session topics into live state, with dead letters, checkpoints
//! and rebalancing.
//!
//! One dedicated thread polls a `BaseConsumer` (ingestion is CPU-bound and librdkafka's poll blocks,
//! so it stays off the async runtime). Per message: decode and validate ([`crate::decode`]), apply
//! ([`crate::live`]), or dead-letter with the reason; never stop on bad input.
//!
//! Exactly-once application: the state of the lots of one partition and that partition's next
//! offsets are checkpointed together ([`crate::checkpoint`]); the group's offsets are committed after
//! the checkpoint is durable, and only then. When the group assigns a partition, the consumer loads
//! its checkpoint and starts reading at the checkpoint's offsets (set in the assignment itself), so
//! every event is applied once: before the checkpoint it is in the restored state, after it is read
//! again. A partition without a checkpoint is read from the beginning. Before a partition is revoked
//! (a rebalance moves it to another replica) it is checkpointed, and the next owner resumes from
//! that; an assignment lost to a session timeout is not checkpointed, since another replica may
//! already own it. The range assignor keeps partition `p` of both topics on one replica, as both
//! are keyed by lot id with the same partition count (checked at start).
//!
//! Broker outages: librdkafka reconnects on its own; the state stays as it was, and
//! [`IngestStatus::stale`] says so with the time since the broker last answered.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parkcast_kafka::{
    DeadLetterError, DeadLetterSink, KafkaConfig, SourcePosition, next_offset, now_ms,
    partition_count,
};
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::TopicPartitionListElem;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{
    CHECKPOINT_VERSION, CheckpointError, CheckpointStore, PartitionCheckpoint, slot_ids_hash,
};
use crate::decode::{TimeRules, decode_sensor, decode_session};
use crate::live::{LiveRules, LiveState, LotSnapshot};
use crate::metrics::{IngestMetrics, InputTopic};
use crate::topology::{LotIndex, Topology};

/// Settings of the live consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// The broker and topics.
    pub kafka: KafkaConfig,
    /// Consumer group of the serving replicas.
    pub group_id: String,
    /// Folder of the checkpoint files, shared by the replicas of the group.
    pub state_dir: PathBuf,
    /// How often the owned partitions are checkpointed and their offsets committed, ms. Shorter
    /// means less to replay after a crash and more disk writes.
    pub checkpoint_interval_ms: u64,
    /// How often the broker is asked for the high watermarks (lag, liveness), ms.
    pub probe_interval_ms: u64,
    /// State is flagged stale when the broker has not answered for this long, ms.
    pub stale_after_ms: u64,
    /// Event times at most this far ahead of the clock are clamped, further ahead refused, ms.
    pub max_clock_skew_ms: i64,
    /// Events older than their lot's newest by more than this are refused, ms.
    pub max_lateness_ms: i64,
    /// A slot silent for longer is unknown, ms.
    pub silence_ms: i64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let time = TimeRules::default();
        let live = LiveRules::default();
        IngestConfig {
            kafka: KafkaConfig::default(),
            group_id: "parkcast-serving".to_owned(),
            state_dir: PathBuf::from("out/serving-state"),
            checkpoint_interval_ms: 10_000,
            probe_interval_ms: 1_000,
            stale_after_ms: 10_000,
            max_clock_skew_ms: time.max_skew_ms,
            max_lateness_ms: live.max_lateness_ms,
            silence_ms: live.silence_ms,
        }
    }
}

/// What is wrong with an ingest config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IngestConfigError {
    /// The Kafka part.
    #[error(transparent)]
    Kafka(#[from] parkcast_kafka::KafkaConfigError),
    /// No group id.
    #[error("group_id is empty")]
    NoGroup,
    /// A duration that must be positive is not.
    #[error("{field} must be positive, got {value}")]
    NotPositive {
        /// The field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
}

impl IngestConfig {
    /// Checks the settings without touching the network.
    pub fn validate(&self) -> Result<(), IngestConfigError> {
        self.kafka.validate()?;
        if self.group_id.trim().is_empty() {
            return Err(IngestConfigError::NoGroup);
        }
        let positive = [
            (
                "checkpoint_interval_ms",
                i64::try_from(self.checkpoint_interval_ms).unwrap_or(i64::MAX),
            ),
            (
                "probe_interval_ms",
                i64::try_from(self.probe_interval_ms).unwrap_or(i64::MAX),
            ),
            (
                "stale_after_ms",
                i64::try_from(self.stale_after_ms).unwrap_or(i64::MAX),
            ),
            ("max_clock_skew_ms", self.max_clock_skew_ms),
            ("max_lateness_ms", self.max_lateness_ms),
            ("silence_ms", self.silence_ms),
        ];
        for (field, value) in positive {
            if value <= 0 {
                return Err(IngestConfigError::NotPositive { field, value });
            }
        }
        Ok(())
    }

    fn time_rules(&self) -> TimeRules {
        TimeRules {
            max_skew_ms: self.max_clock_skew_ms,
        }
    }

    fn live_rules(&self) -> LiveRules {
        LiveRules {
            silence_ms: self.silence_ms,
            max_lateness_ms: self.max_lateness_ms,
        }
    }
}

/// Errors that stop ingestion (bad messages never do).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] IngestConfigError),
    /// The broker refused or could not be reached at start.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A topic is missing.
    #[error(transparent)]
    Topic(#[from] parkcast_kafka::TopicError),
    /// The sensor and session topics have different partition counts, so a lot's events would
    /// land on different partition numbers.
    #[error(
        "topics {sensor_topic} ({sensor} partitions) and {session_topic} ({session} partitions) must have the same partition count"
    )]
    PartitionMismatch {
        /// The sensor topic.
        sensor_topic: String,
        /// Its partitions.
        sensor: i32,
        /// The session topic.
        session_topic: String,
        /// Its partitions.
        session: i32,
    },
    /// Dead letters could not be delivered (the source offsets stay uncommitted).
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    /// A checkpoint could not be written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The consumer thread could not start or panicked.
    #[error("the consumer thread {0}")]
    Thread(String),
}

/// Next offsets of one partition number in both topics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    sensor_next: i64,
    session_next: i64,
}

impl Progress {
    fn next_mut(&mut self, topic: InputTopic) -> &mut i64 {
        match topic {
            InputTopic::Sensor => &mut self.sensor_next,
            InputTopic::Session => &mut self.session_next,
        }
    }
}

/// Live health of the consumer, readable from any thread.
#[derive(Debug)]
pub struct IngestStatus {
    last_contact_ms: AtomicI64,
    lag: AtomicI64,
    assigned: AtomicU64,
    stale_after_ms: i64,
}

/// A reading of [`IngestStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusView {
    /// Milliseconds since the broker last answered (`None`: never yet).
    pub contact_age_ms: Option<i64>,
    /// The state may be out of date: the broker has not answered for longer than allowed.
    pub stale: bool,
    /// Messages behind the high watermarks of the owned partitions (`None`: not measured yet).
    pub lag: Option<i64>,
    /// Partitions owned.
    pub assigned_partitions: u64,
}

impl IngestStatus {
    fn touch(&self) {
        self.last_contact_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The current reading.
    pub fn view(&self) -> StatusView {
        let last = self.last_contact_ms.load(Ordering::Relaxed);
        let contact_age_ms = (last > 0).then(|| (now_ms() - last).max(0));
        let lag = self.lag.load(Ordering::Relaxed);
        StatusView {
            contact_age_ms,
            stale: contact_age_ms.is_none_or(|age| age > self.stale_after_ms),
            lag: (lag >= 0).then_some(lag),
            assigned_partitions: self.assigned.load(Ordering::Relaxed),
        }
    }
}

const RUNNING: u8 = 0;
const STOPPING: u8 = 1;
const ABORTING: u8 = 2;

/// Everything the consumer thread mutates, shared with the rebalance callback (which runs inside
/// `poll`, on the same thread, while the loop holds no lock).
struct Core {
    config: IngestConfig,
    topology: Arc<Topology>,
    live: LiveState,
    /// Partition of each lot (-1: none seen), so a partition's lots can be checkpointed and handed
    /// over.
    lot_partition: Vec<i32>,
    owned: BTreeMap<i32, Progress>,
    dirty: BTreeSet<i32>,
    store: CheckpointStore,
    deadletters: DeadLetterSink,
    metrics: IngestMetrics,
    /// How checkpoints commit the group's offsets: asynchronously while running (a commit never
    /// holds the state lock, even with the broker gone), synchronously on a clean stop, not at all
    /// on a stop while the broker is gone.
    commit_mode: Option<rdkafka::consumer::CommitMode>,
}

struct Shared {
    core: Mutex<Core>,
    control: AtomicU8,
    status: IngestStatus,
    metrics: IngestMetrics,
    news: News,
}

/// Messages handled, for the scorer to sleep on ([`crate::scoring::LiveSource::wait_for_news`])
/// instead of polling. The consumer pays two atomic operations per message; it takes the lock and
/// wakes the scorer only while the scorer waits.
#[derive(Debug, Default)]
struct News {
    handled: AtomicU64,
    waiting: AtomicU64,
    lock: Mutex<()>,
    ready: std::sync::Condvar,
}

impl News {
    fn bump(&self) {
        // SeqCst on both sides: either the waiter sees the new count before it sleeps, or this
        // sees the waiter and wakes it (under the lock, so not between its check and its sleep).
        self.handled.fetch_add(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            let _lock = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.ready.notify_all();
        }
    }

    fn wait(&self, seen: u64, timeout: Duration) -> u64 {
        let lock = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let waited = self.ready.wait_timeout_while(lock, timeout, |_| {
            self.handled.load(Ordering::SeqCst) == seen
        });
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        drop(waited);
        self.handled.load(Ordering::SeqCst)
    }
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct IngestContext {
    shared: Arc<Shared>,
}

impl ClientContext for IngestContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.shared.metrics.consumer_errors.inc();
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

impl ConsumerContext for IngestContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        error: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        match error {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let numbers = partition_numbers(&partitions.elements());
                let progress = self.shared.core().on_assign(&numbers);
                let starts: Vec<(String, i32, i64)> = {
                    let core = self.shared.core();
                    partitions
                        .elements()
                        .iter()
                        .filter_map(|element| {
                            let topic = core.input_topic(element.topic())?;
                            let mut next = progress.get(&element.partition()).copied()?;
                            let offset = *next.next_mut(topic);
                            Some((element.topic().to_owned(), element.partition(), offset))
                        })
                        .collect()
                };
                for (topic, partition, offset) in starts {
                    if let Err(error) =
                        partitions.set_partition_offset(&topic, partition, Offset::Offset(offset))
                    {
                        tracing::error!(error = %error, "could not set a start offset");
                    }
                }
                if let Err(error) = consumer.assign(partitions) {
                    tracing::error!(error = %error, "assigning partitions failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let numbers = partition_numbers(&partitions.elements());
                let aborting = self.shared.control.load(Ordering::Relaxed) == ABORTING;
                let lost = consumer.assignment_lost();
                self.shared
                    .core()
                    .on_revoke(consumer, &numbers, !aborting && !lost);
                if let Err(error) = consumer.unassign() {
                    tracing::error!(error = %error, "unassigning partitions failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed; dropping the assignment");
                let numbers = partition_numbers(&partitions.elements());
                self.shared.core().on_revoke(consumer, &numbers, false);
                if let Err(error) = consumer.unassign() {
                    tracing::error!(error = %error, "unassigning partitions failed");
                }
            }
        }
        self.shared
            .status
            .assigned
            .store(self.shared.core().owned.len() as u64, Ordering::Relaxed);
        self.shared
            .metrics
            .assigned_partitions
            .set(self.shared.core().owned.len() as i64);
    }
}

fn partition_numbers(elements: &[TopicPartitionListElem<'_>]) -> BTreeSet<i32> {
    elements.iter().map(|element| element.partition()).collect()
}

impl Core {
    fn input_topic(&self, topic: &str) -> Option<InputTopic> {
        if topic == self.config.kafka.topics.sensor {
            Some(InputTopic::Sensor)
        } else if topic == self.config.kafka.topics.session {
            Some(InputTopic::Session)
        } else {
            None
        }
    }

    fn lots_of(&self, partition: i32) -> Vec<LotIndex> {
        self.lot_partition
            .iter()
            .enumerate()
            .filter(|(_, owner)| **owner == partition)
            .filter_map(|(lot, _)| LotIndex::try_from(lot).ok())
            .collect()
    }

    /// Loads the checkpoints of newly assigned partitions; returns where to start reading.
    fn on_assign(&mut self, partitions: &BTreeSet<i32>) -> BTreeMap<i32, Progress> {
        let mut starts = BTreeMap::new();
        for &partition in partitions {
            for lot in self.lots_of(partition) {
                self.live.reset_lot(lot);
                self.lot_partition[lot as usize] = -1;
            }
            let progress = match self.store.load(partition) {
                Ok(Some(checkpoint)) => self.restore(&checkpoint),
                Ok(None) => Progress::default(),
                Err(error) => {
                    tracing::error!(
                        error = %error,
                        partition,
                        "checkpoint refused; rebuilding the partition from the beginning"
                    );
                    if let Err(error) = self.store.quarantine(partition) {
                        tracing::warn!(error = %error, "could not move the refused checkpoint aside");
                    }
                    Progress::default()
                }
            };
            tracing::info!(
                partition,
                sensor_next = progress.sensor_next,
                session_next = progress.session_next,
                "partition assigned"
            );
            self.owned.insert(partition, progress);
            starts.insert(partition, progress);
        }
        starts
    }

    fn restore(&mut self, checkpoint: &PartitionCheckpoint) -> Progress {
        let mut restored = 0;
        for (lot_id, hash, record) in &checkpoint.lots {
            let Some(lot) = self.topology.lot(lot_id) else {
                tracing::warn!(
                    lot_id,
                    "checkpointed lot no longer in the topology; dropped"
                );
                continue;
            };
            let slot_ids = &self.topology.lots()[lot as usize].slot_ids;
            if slot_ids_hash(slot_ids) != *hash || !self.live.import_lot(lot, record) {
                tracing::warn!(
                    lot_id,
                    "the lot's slots changed since the checkpoint; its state rebuilds from new readings"
                );
                continue;
            }
            self.lot_partition[lot as usize] = checkpoint.partition;
            restored += 1;
        }
        self.metrics.lots_restored.inc_by(restored);
        Progress {
            sensor_next: checkpoint.sensor_next,
            session_next: checkpoint.session_next,
        }
    }

    /// Checkpoints (when `save`) and forgets partitions leaving this replica.
    fn on_revoke(
        &mut self,
        consumer: &BaseConsumer<IngestContext>,
        partitions: &BTreeSet<i32>,
        save: bool,
    ) {
        if save {
            let owned: Vec<i32> = partitions
                .iter()
                .copied()
                .filter(|partition| self.owned.contains_key(partition))
                .collect();
            if let Err(error) = self.checkpoint(consumer, &owned) {
                tracing::error!(error = %error, "checkpoint before handing partitions over failed");
            }
        }
        for &partition in partitions {
            for lot in self.lots_of(partition) {
                self.live.reset_lot(lot);
                self.lot_partition[lot as usize] = -1;
            }
            self.owned.remove(&partition);
            self.dirty.remove(&partition);
            tracing::info!(partition, saved = save, "partition revoked");
        }
    }

    /// Makes the dead letters durable, writes the partitions' checkpoints, then commits their
    /// offsets. A failure before the files are written leaves the previous checkpoint in force.
    fn checkpoint(
        &mut self,
        consumer: &BaseConsumer<IngestContext>,
        partitions: &[i32],
    ) -> Result<(), IngestError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let result = self.checkpoint_inner(consumer, partitions);
        match &result {
            Ok(()) => {
                self.metrics.checkpoints.inc();
                self.metrics
                    .checkpoint_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            Err(_) => {
                self.metrics.checkpoint_failures.inc();
            }
        }
        result
    }

    fn checkpoint_inner(
        &mut self,
        consumer: &BaseConsumer<IngestContext>,
        partitions: &[i32],
    ) -> Result<(), IngestError> {
        self.deadletters.flush(Duration::from_secs(30))?;
        let mut offsets = TopicPartitionList::new();
        for &partition in partitions {
            let Some(progress) = self.owned.get(&partition).copied() else {
                continue;
            };
            let lots = self
                .lots_of(partition)
                .into_iter()
                .filter_map(|lot| {
                    let topology = &self.topology.lots()[lot as usize];
                    Some((
                        topology.lot_id.clone(),
                        slot_ids_hash(&topology.slot_ids),
                        self.live.export_lot(lot)?,
                    ))
                })
                .collect();
            self.store.save(&PartitionCheckpoint {
                version: CHECKPOINT_VERSION,
                partition,
                sensor_next: progress.sensor_next,
                session_next: progress.session_next,
                written_ms: now_ms(),
                lots,
            })?;
            self.dirty.remove(&partition);
            for (topic, next) in [
                (&self.config.kafka.topics.sensor, progress.sensor_next),
                (&self.config.kafka.topics.session, progress.session_next),
            ] {
                offsets.add_partition_offset(topic, partition, Offset::Offset(next))?;
            }
        }
        // The files are the truth; a failed commit only delays the lag the group reports.
        let Some(mode) = self.commit_mode else {
            tracing::warn!(
                "the broker is unreachable: offsets not committed (checkpoints written)"
            );
            return Ok(());
        };
        if let Err(error) = consumer.commit(&offsets, mode) {
            tracing::warn!(error = %error, "committing checkpointed offsets failed");
        }
        Ok(())
    }

    fn handle(
        &mut self,
        topic: InputTopic,
        topic_name: &str,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<(), IngestError> {
        let Some(progress) = self.owned.get_mut(&partition) else {
            // Delivered after its revocation: the next owner reads it.
            return Ok(());
        };
        let next = progress.next_mut(topic);
        if offset < *next {
            self.metrics.skipped_replayed.inc();
            return Ok(());
        }
        *next = next_offset(offset);
        self.dirty.insert(partition);
        let now = now_ms();
        let rules = self.config.time_rules();
        let result = match topic {
            InputTopic::Sensor => {
                decode_sensor(&self.topology, &rules, key, value, now).and_then(|event| {
                    if event.clamped {
                        self.metrics.clamped(topic);
                    }
                    self.lot_partition[event.lot as usize] = partition;
                    self.live.apply_sensor(&event)
                })
            }
            InputTopic::Session => decode_session(&self.topology, &rules, key, value, now)
                .and_then(|mark| {
                    if mark.clamped {
                        self.metrics.clamped(topic);
                    }
                    self.lot_partition[mark.lot as usize] = partition;
                    self.live.apply_session(&mark)
                }),
        };
        match result {
            Ok(applied) => self.metrics.applied(topic, applied),
            Err(rejection) => {
                self.metrics.rejected(topic, rejection.reason);
                self.deadletters.send(
                    SourcePosition {
                        topic: topic_name,
                        partition,
                        offset,
                    },
                    key,
                    value,
                    rejection.reason.code(),
                    &rejection.detail,
                )?;
                self.metrics.deadletters.inc();
            }
        }
        Ok(())
    }
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestSummary {
    /// Messages handled (applied, rejected or skipped as already restored).
    pub handled: u64,
    /// Dead letters delivered.
    pub deadletters_delivered: u64,
}

/// A running consumer. Dropping it aborts like [`Ingest::abort`].
pub struct Ingest {
    shared: Arc<Shared>,
    topology: Arc<Topology>,
    thread: Mutex<Option<JoinHandle<Result<IngestSummary, IngestError>>>>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Ingest")
            .field("status", &self.shared.status.view())
            .finish()
    }
}

impl Ingest {
    /// Validates the config, checks the topics, joins the group and starts consuming on its own
    /// thread.
    pub fn start(
        config: IngestConfig,
        topology: Arc<Topology>,
        metrics: IngestMetrics,
    ) -> Result<Ingest, IngestError> {
        Ingest::start_with_grid(config, topology, metrics, None)
    }

    /// [`Ingest::start`], sampling lots onto a forecasting grid from the first event on (so a
    /// replay consumed before the first model is active still yields grid values).
    pub fn start_with_grid(
        config: IngestConfig,
        topology: Arc<Topology>,
        metrics: IngestMetrics,
        grid: Option<crate::live::GridRule>,
    ) -> Result<Ingest, IngestError> {
        config.validate()?;
        let store = CheckpointStore::open(&config.state_dir)?;
        let deadletters = DeadLetterSink::new(&config.kafka)?;
        let mut live = LiveState::new(&topology, config.live_rules());
        live.set_grid(grid);
        let served_topology = Arc::clone(&topology);
        let stale_after_ms = i64::try_from(config.stale_after_ms).unwrap_or(i64::MAX);
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                lot_partition: vec![-1; topology.lots().len()],
                config: config.clone(),
                topology,
                live,
                owned: BTreeMap::new(),
                dirty: BTreeSet::new(),
                store,
                deadletters,
                metrics: metrics.clone(),
                commit_mode: Some(rdkafka::consumer::CommitMode::Async),
            }),
            control: AtomicU8::new(RUNNING),
            status: IngestStatus {
                last_contact_ms: AtomicI64::new(0),
                lag: AtomicI64::new(-1),
                assigned: AtomicU64::new(0),
                stale_after_ms,
            },
            metrics,
            news: News::default(),
        });
        let mut client = config.kafka.client_config();
        client
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range");
        let consumer: BaseConsumer<IngestContext> = client.create_with_context(IngestContext {
            shared: Arc::clone(&shared),
        })?;
        let timeout = Duration::from_secs(10);
        let topics = &config.kafka.topics;
        let sensor = partition_count(&consumer, &topics.sensor, timeout)?;
        let session = partition_count(&consumer, &topics.session, timeout)?;
        if sensor != session {
            return Err(IngestError::PartitionMismatch {
                sensor_topic: topics.sensor.clone(),
                sensor,
                session_topic: topics.session.clone(),
                session,
            });
        }
        shared.status.touch();
        consumer.subscribe(&[&topics.sensor, &topics.session])?;
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("parkcast-ingest".to_owned())
            .spawn(move || run(&thread_shared, &consumer, &config))
            .map_err(|error| IngestError::Thread(format!("could not start: {error}")))?;
        Ok(Ingest {
            shared,
            topology: served_topology,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Health of the consumer.
    pub fn status(&self) -> StatusView {
        self.shared.status.view()
    }

    /// The metrics handle.
    pub fn metrics(&self) -> &IngestMetrics {
        &self.shared.metrics
    }

    /// Reads the live state (briefly blocks ingestion).
    pub fn with_state<R>(&self, read: impl FnOnce(&LiveState, &Topology) -> R) -> R {
        let core = self.shared.core();
        read(&core.live, &core.topology)
    }

    /// The picture of every lot this replica owns, at `as_of_ms` (default: the newest event time
    /// over those lots, which makes the result independent of the wall clock).
    pub fn lot_snapshots(&self, as_of_ms: Option<i64>) -> BTreeMap<String, LotSnapshot> {
        let core = self.shared.core();
        owned_snapshots(&core, as_of_ms)
    }

    /// Whether the consumer thread has ended (after an error).
    pub fn is_finished(&self) -> bool {
        self.thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_none_or(JoinHandle::is_finished)
    }

    /// Stops cleanly: checkpoints every owned partition, commits, leaves the group. Callable
    /// through a shared handle (the gRPC services may still hold one while shutting down); a
    /// second call gets an error.
    pub fn stop(&self) -> Result<IngestSummary, IngestError> {
        self.shared.control.store(STOPPING, Ordering::Relaxed);
        self.join()
    }

    /// Stops like a crash would: no final checkpoint, no commit. State since the last checkpoint
    /// is lost and read again by whoever takes the partitions over.
    pub fn abort(&self) -> Result<IngestSummary, IngestError> {
        self.shared.control.store(ABORTING, Ordering::Relaxed);
        self.join()
    }

    fn join(&self) -> Result<IngestSummary, IngestError> {
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(thread) = thread else {
            return Err(IngestError::Thread("was already joined".to_owned()));
        };
        thread
            .join()
            .map_err(|_| IngestError::Thread("panicked".to_owned()))?
    }
}

impl crate::scoring::LiveSource for Ingest {
    fn topology(&self) -> &Topology {
        &self.topology
    }

    fn set_grid(&self, rule: Option<crate::live::GridRule>) {
        self.shared.core().live.set_grid(rule);
    }

    fn take_changes(
        &self,
        now_ms: Option<i64>,
        all: bool,
        out: &mut Vec<crate::live::LotChange>,
    ) -> Option<i64> {
        let mut core = self.shared.core();
        let newest = core.live.stream_time_ms();
        let now_ms = now_ms.or(newest).unwrap_or_else(parkcast_kafka::now_ms);
        core.live.take_changes(now_ms, all, out);
        newest
    }

    fn stale_reason(&self) -> Option<String> {
        let status = self.status();
        status.stale.then(|| match status.contact_age_ms {
            Some(age) => format!("the broker has not answered for {} s", age / 1_000),
            None => "ingestion has not reached the broker yet".to_owned(),
        })
    }

    fn caught_up(&self) -> bool {
        let status = self.status();
        status.assigned_partitions > 0 && status.lag == Some(0) && !status.stale
    }

    fn wait_for_news(&self, seen: u64, timeout: Duration) -> u64 {
        self.shared.news.wait(seen, timeout)
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        let running = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if running {
            self.shared.control.store(ABORTING, Ordering::Relaxed);
            let _ = self.join();
        }
    }
}

fn owned_snapshots(core: &Core, as_of_ms: Option<i64>) -> BTreeMap<String, LotSnapshot> {
    let owned: Vec<usize> = core
        .lot_partition
        .iter()
        .enumerate()
        .filter(|(_, partition)| **partition >= 0)
        .map(|(lot, _)| lot)
        .collect();
    let newest = owned
        .iter()
        .filter_map(|&lot| core.live.newest_event_ms(LotIndex::try_from(lot).ok()?))
        .max();
    let Some(as_of) = as_of_ms.or(newest) else {
        return BTreeMap::new();
    };
    owned
        .into_iter()
        .filter_map(|lot| {
            let index = LotIndex::try_from(lot).ok()?;
            Some((
                core.topology.lots()[lot].lot_id.clone(),
                core.live.lot(index, as_of)?,
            ))
        })
        .collect()
}

fn run(
    shared: &Shared,
    consumer: &BaseConsumer<IngestContext>,
    config: &IngestConfig,
) -> Result<IngestSummary, IngestError> {
    let checkpoint_every = Duration::from_millis(config.checkpoint_interval_ms);
    let probe_every = Duration::from_millis(config.probe_interval_ms);
    let mut next_checkpoint = Instant::now() + checkpoint_every;
    let mut next_probe = Instant::now();
    let mut error_logged_at: Option<Instant> = None;
    loop {
        match shared.control.load(Ordering::Relaxed) {
            ABORTING => return Ok(summary(shared)),
            STOPPING => break,
            _ => {}
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                shared.status.touch();
                let mut core = shared.core();
                let Some(topic) = core.input_topic(message.topic()) else {
                    shared.metrics.foreign_topic.inc();
                    continue;
                };
                core.handle(
                    topic,
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    message.key(),
                    message.payload().unwrap_or_default(),
                )?;
                shared.news.bump();
            }
            Some(Err(error)) => {
                shared.metrics.consumer_errors.inc();
                // librdkafka repeats errors while the broker is down: log once a minute.
                if error_logged_at.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(error = %error, "consumer error; retrying");
                    error_logged_at = Some(Instant::now());
                }
            }
            None => {}
        }
        let now = Instant::now();
        if now >= next_checkpoint {
            let mut core = shared.core();
            let dirty: Vec<i32> = core.dirty.iter().copied().collect();
            if let Err(error) = core.checkpoint(consumer, &dirty) {
                tracing::error!(error = %error, "checkpoint failed; retrying at the next interval");
            }
            next_checkpoint = now + checkpoint_every;
        }
        if now >= next_probe {
            probe(shared, consumer, config);
            next_probe = Instant::now() + probe_every;
        }
    }
    let mut core = shared.core();
    // With the broker gone a synchronous commit would wait out its timeout (45 s measured); the
    // checkpoint files are the truth and committed offsets only feed the lag the group reports.
    // Gone: no answer to the last two probes.
    let answered_lately = shared.status.view().contact_age_ms.is_some_and(|age| {
        age <= 2 * i64::try_from(config.probe_interval_ms).unwrap_or(i64::MAX) + 500
    });
    core.commit_mode = answered_lately.then_some(rdkafka::consumer::CommitMode::Sync);
    let owned: Vec<i32> = core.owned.keys().copied().collect();
    core.checkpoint(consumer, &owned)?;
    // Leaving the group revokes the partitions; they are checkpointed already.
    core.dirty.clear();
    drop(core);
    consumer.unsubscribe();
    Ok(summary(shared))
}

fn summary(shared: &Shared) -> IngestSummary {
    IngestSummary {
        handled: shared.metrics.handled(),
        deadletters_delivered: shared.core().deadletters.delivered(),
    }
}

/// Asks the broker for the high watermarks of the owned partitions: the lag, and proof the broker
/// answers (which clears the stale flag).
fn probe(shared: &Shared, consumer: &BaseConsumer<IngestContext>, config: &IngestConfig) {
    let owned: Vec<(i32, Progress)> = shared
        .core()
        .owned
        .iter()
        .map(|(partition, progress)| (*partition, *progress))
        .collect();
    let timeout = Duration::from_millis(config.probe_interval_ms.clamp(100, 1_000));
    let topics = &config.kafka.topics;
    let mut lag = 0;
    if owned.is_empty() {
        // Nothing owned yet: metadata still proves the broker answers.
        if consumer
            .fetch_metadata(Some(&topics.sensor), timeout)
            .is_ok()
        {
            shared.status.touch();
        }
    }
    for (partition, progress) in owned {
        for (topic, next) in [
            (&topics.sensor, progress.sensor_next),
            (&topics.session, progress.session_next),
        ] {
            match consumer.fetch_watermarks(topic, partition, timeout) {
                Ok((_, high)) => lag += (high - next).max(0),
                Err(_) => {
                    update_contact_age(shared);
                    return;
                }
            }
        }
    }
    shared.status.touch();
    shared.status.lag.store(lag, Ordering::Relaxed);
    shared.metrics.lag_messages.set(lag);
    update_contact_age(shared);
}

fn update_contact_age(shared: &Shared) {
    if let Some(age) = shared.status.view().contact_age_ms {
        shared.metrics.broker_contact_age_ms.set(age);
    }
}
