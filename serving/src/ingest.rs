//! The Kafka consumer: sensor and session topics into live state, with dead letters, checkpoints
//! and rebalancing, supervised so that it never stops silently.
//!
//! One dedicated thread polls a `BaseConsumer` (ingestion is CPU-bound and librdkafka's poll blocks,
//! so it stays off the async runtime). Per message: decode and validate ([`crate::decode`]), apply
//! ([`crate::live`]), or dead-letter with the reason; never stop on bad input. A record larger than
//! `max_message_bytes` is dead-lettered as `too_large` without being decoded, and fetch sizes are
//! derived from that same bound, so no record the topics can hold wedges a fetch.
//!
//! **Exactly-once application.** The state of the lots of one partition and that partition's next
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
//! **A log that went backwards.** Offsets only mean something while the log is the one the state
//! was built from. A broker that lost acknowledged data, or a topic deleted and recreated, leaves a
//! log shorter than the checkpoint, or a different log of any length. Three checks catch it: a
//! restart reads the last checkpointed message again and compares its fingerprint; a message whose
//! offset lies below the position (librdkafka reset to the earliest offset after "offset out of
//! range") is never skipped as "already applied"; and the probe flags a high watermark below the
//! position. Each raises `parkcast_ingest_log_regressions_total` and an ERROR log, and the
//! partition's lots are rebuilt from what the log holds now (both topics read from the beginning).
//! Messages deleted by retention before they were read are a gap, not a regression: counted in
//! `parkcast_ingest_log_gaps_total`, and reading goes on.
//!
//! **Liveness on its own client.** Lag and broker contact are measured by a probe thread with a
//! client of its own, so a long-poll fetch on the consumer's connection cannot hold the probe back
//! (librdkafka queues requests to one broker on one connection). Lag is unknown (`None`) after every
//! assignment change until a probe measured the new assignment: readiness never rests on a lag of an
//! empty or older assignment.
//!
//! **Supervision.** Whatever ends the consumer thread (an error it cannot step over, a panic), the
//! supervisor logs it at ERROR at once, marks the state stale with the reason (health turns
//! NOT_SERVING, answers say why), drops the consumer without checkpointing (the state since the
//! last checkpoint may be half-applied), and starts a new one with exponential backoff (1 s doubling
//! to `restart_backoff_max_ms`). The new consumer rejoins the group and restores each partition it
//! gets from its checkpoint. After `max_restarts` consecutive failures (a run that stays up for a
//! minute resets the count) the supervisor gives up and [`Ingest::failed`] turns true, so the server
//! exits non-zero and an orchestrator restarts the process.
//!
//! **Clocks.** Event times are judged against the serving clock ([`TimeReference`]): the wall clock
//! in production; in a replay of the past, the stream's own clock, which one sensor with a broken
//! clock cannot move (a jump needs lots that agree).
//!
//! Broker outages: librdkafka reconnects on its own; the state stays as it was, and
//! [`IngestStatus`] says it is stale with the time since the broker last answered.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parkcast_kafka::{
    DeadLetterError, DeadLetterSink, KafkaConfig, SourcePosition, next_offset, now_ms,
    partition_count,
};
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::TopicPartitionListElem;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use serde::{Deserialize, Serialize};

use crate::changelog::{ChangelogError, ChangelogReader, ChangelogWriter};
use crate::checkpoint::{
    CHECKPOINT_VERSION, CheckpointError, CheckpointStore, CheckpointWriter, PartitionCheckpoint,
    WrittenBatch, message_fingerprint, slot_ids_hash,
};
use crate::decode::{Reason, Rejection, TimeRules, decode_sensor, decode_session};
use crate::live::{GridRule, LiveRules, LiveState, LotSnapshot};
use crate::metrics::{IngestMetrics, InputTopic};
use crate::ownership::Holdings;
use crate::topology::{LotIndex, TopologyIndex};

/// Settings of the live consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// The broker and topics.
    pub kafka: KafkaConfig,
    /// Consumer group of the serving replicas.
    pub group_id: String,
    /// Static group membership (`group.instance.id`): a name unique to this replica and stable
    /// across its restarts (a StatefulSet pod name, a host name). A replica restarted with the same
    /// name takes its partitions back at once instead of waiting for the broker to expire the dead
    /// member. Empty: dynamic membership.
    pub instance_id: String,
    /// Folder of the checkpoint files (this replica's; a shared folder also works).
    pub state_dir: PathBuf,
    /// Also write every checkpoint to this compacted topic (one partition per input partition),
    /// so a partition that moves to another machine is restored from it instead of replayed from
    /// the beginning ([`crate::changelog`]). Empty: files only.
    pub changelog_topic: String,
    /// The largest checkpoint record the changelog takes, bytes (one partition's state: about 60
    /// bytes per slot, before compression).
    pub changelog_max_message_bytes: usize,
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
    /// The largest record the input topics hold, bytes (set it to the topics' `max.message.bytes`;
    /// Kafka's default is about 1 MiB). Larger records are dead-lettered as `too_large` without
    /// being decoded, and the consumer's fetch sizes are derived from it (see
    /// [`IngestConfig::fetch_sizes`]).
    pub max_message_bytes: usize,
    /// Readiness: after an assignment ingestion counts as caught up once it has read what the
    /// owned partitions held when first measured (their high watermarks at the assignment's first
    /// probe), or a probe measured no lag at all; from then on it stays so while the lag is at
    /// most this many messages (a stream under load is rarely at lag 0 at the instant of a probe),
    /// and turns not ready beyond.
    pub ready_max_lag: u64,
    /// Consecutive failed restarts of the consumer after which the process gives up (and the
    /// server exits non-zero for its orchestrator to restart it); 0 restarts forever.
    pub max_restarts: u32,
    /// The longest wait between two restarts of a failed consumer, ms (the wait starts at 1 s and
    /// doubles).
    pub restart_backoff_max_ms: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        let time = TimeRules::default();
        let live = LiveRules::default();
        IngestConfig {
            kafka: KafkaConfig::default(),
            group_id: "parkcast-serving".to_owned(),
            instance_id: String::new(),
            state_dir: PathBuf::from("out/serving-state"),
            changelog_topic: String::new(),
            changelog_max_message_bytes: 32 << 20,
            checkpoint_interval_ms: 10_000,
            probe_interval_ms: 1_000,
            stale_after_ms: 10_000,
            max_clock_skew_ms: time.max_skew_ms,
            max_lateness_ms: live.max_lateness_ms,
            silence_ms: live.silence_ms,
            max_message_bytes: 1 << 20,
            ready_max_lag: 10_000,
            max_restarts: 10,
            restart_backoff_max_ms: 60_000,
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
    /// The message size bound is outside what Kafka can hold.
    #[error("max_message_bytes must be 1024 to 1000000000, got {value}")]
    MessageSize {
        /// Its value.
        value: usize,
    },
    /// A changelog topic name Kafka would refuse.
    #[error("changelog_topic {0:?} is not a legal Kafka topic name (1-249 of [a-zA-Z0-9._-])")]
    ChangelogTopic(String),
    /// The changelog record bound is outside what Kafka can hold.
    #[error("changelog_max_message_bytes must be 1024 to 1000000000, got {0}")]
    ChangelogSize(usize),
    /// A fetch size set in `kafka.librdkafka_options` cannot carry the records the topics hold.
    #[error("kafka.librdkafka_options.{key} = {value} must be at least {minimum} ({why})")]
    FetchSize {
        /// The option.
        key: &'static str,
        /// Its value.
        value: String,
        /// The least that works.
        minimum: usize,
        /// Why.
        why: &'static str,
    },
}

/// The consumer's fetch sizes, bytes (see [`IngestConfig::fetch_sizes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchSizes {
    /// `max.partition.fetch.bytes`: one partition's share of a fetch.
    pub partition: usize,
    /// `fetch.max.bytes`: a whole fetch response.
    pub fetch: usize,
    /// `receive.message.max.bytes`: the largest response librdkafka accepts off the wire.
    pub receive: usize,
}

/// librdkafka requires `receive.message.max.bytes >= fetch.max.bytes + 512`; a little more leaves
/// room for protocol framing of many partitions.
const RECEIVE_MARGIN: usize = 64 * 1024;

/// librdkafka's own default `receive.message.max.bytes`, the least the consumer accepts.
///
/// A broker may answer a fetch with more than `fetch.max.bytes` (noida-db, the test broker, sent
/// 22 MB to a 16 MiB fetch of a 200-lot backlog): below this, librdkafka drops every such response
/// and retries the same fetch forever, so ingestion stalls on the first backlog after a restart.
/// The limit only bounds a buffer; memory follows the responses actually received.
const LIBRDKAFKA_DEFAULT_RECEIVE: usize = 100_000_000;

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
            (
                "restart_backoff_max_ms",
                i64::try_from(self.restart_backoff_max_ms).unwrap_or(i64::MAX),
            ),
        ];
        for (field, value) in positive {
            if value <= 0 {
                return Err(IngestConfigError::NotPositive { field, value });
            }
        }
        if !(1_024..=1_000_000_000).contains(&self.max_message_bytes) {
            return Err(IngestConfigError::MessageSize {
                value: self.max_message_bytes,
            });
        }
        let topic = &self.changelog_topic;
        if !topic.is_empty() && !parkcast_kafka::legal_topic_name(topic) {
            return Err(IngestConfigError::ChangelogTopic(topic.clone()));
        }
        if !(1_024..=1_000_000_000).contains(&self.changelog_max_message_bytes) {
            return Err(IngestConfigError::ChangelogSize(
                self.changelog_max_message_bytes,
            ));
        }
        self.fetch_sizes().map(|_| ())
    }

    /// The consumer's fetch sizes: one partition's share holds the largest record
    /// (`max_message_bytes`), a whole fetch at least 16 MiB, and librdkafka accepts a response of a
    /// whole fetch plus one more record (brokers return a record larger than the asked size rather
    /// than stall: KIP-74), and never less than its own default ([`LIBRDKAFKA_DEFAULT_RECEIVE`]).
    /// Values set in `kafka.librdkafka_options` win when they are consistent with that, and are
    /// refused when they are not.
    pub fn fetch_sizes(&self) -> Result<FetchSizes, IngestConfigError> {
        let option = |key: &'static str| -> Result<Option<usize>, IngestConfigError> {
            let Some(value) = self.kafka.librdkafka_options.get(key) else {
                return Ok(None);
            };
            value
                .trim()
                .parse::<usize>()
                .map(Some)
                .map_err(|_| IngestConfigError::FetchSize {
                    key,
                    value: value.clone(),
                    minimum: 1,
                    why: "a number of bytes",
                })
        };
        let largest = self.max_message_bytes;
        let partition = option("max.partition.fetch.bytes")?.unwrap_or(largest);
        let fetch = option("fetch.max.bytes")?.unwrap_or((16 << 20).max(partition));
        let receive = option("receive.message.max.bytes")?.unwrap_or_else(|| {
            fetch
                .saturating_add(largest)
                .saturating_add(RECEIVE_MARGIN)
                .max(LIBRDKAFKA_DEFAULT_RECEIVE)
        });
        let checks = [
            (
                "max.partition.fetch.bytes",
                partition,
                largest,
                "max_message_bytes: a partition's fetch holds its largest record",
            ),
            (
                "fetch.max.bytes",
                fetch,
                partition,
                "max.partition.fetch.bytes",
            ),
            (
                "receive.message.max.bytes",
                receive,
                fetch.saturating_add(largest).saturating_add(512),
                "fetch.max.bytes + max_message_bytes + 512: a response may carry one record past the fetch size",
            ),
        ];
        for (key, value, minimum, why) in checks {
            if value < minimum {
                return Err(IngestConfigError::FetchSize {
                    key,
                    value: value.to_string(),
                    minimum,
                    why,
                });
            }
        }
        Ok(FetchSizes {
            partition,
            fetch,
            receive,
        })
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

    /// The consumer's librdkafka settings: the group, manual offsets, the range assignor, fetch
    /// sizes, static membership when configured.
    fn consumer_config(&self) -> Result<ClientConfig, IngestConfigError> {
        let sizes = self.fetch_sizes()?;
        let mut client = self.kafka.client_config();
        client
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range")
            .set("max.partition.fetch.bytes", sizes.partition.to_string())
            .set("fetch.max.bytes", sizes.fetch.to_string())
            .set("receive.message.max.bytes", sizes.receive.to_string());
        if !self.instance_id.trim().is_empty() {
            client.set("group.instance.id", self.instance_id.trim());
        }
        Ok(client)
    }

    /// The probe's client: no group, its own connections, the consumer's client id with `-probe`.
    fn probe_config(&self) -> ClientConfig {
        let mut client = self.kafka.client_config();
        client.set("client.id", format!("{}-probe", self.kafka.client_id));
        client
    }
}

/// What event times are judged against: the serving clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeReference {
    /// The wall clock (production): event times up to `max_clock_skew_ms` ahead are clamped to it
    /// (sensor clocks drift), further ahead refused as `far_future`.
    #[default]
    Wall,
    /// The stream's own clock, for replays of the past (`serve.clock = "stream"`): the newest
    /// accepted event time, or `start_ms` before the first. An event further ahead than the skew is
    /// refused as `far_future` unless [`STREAM_JUMP_QUORUM`] lots report times that agree within
    /// the skew (a replay that really skipped ahead), so one sensor with a broken clock cannot move
    /// the serving clock and leave every other lot silent.
    Stream {
        /// Where the replay starts, if known (events before the first judge nothing until then).
        start_ms: Option<i64>,
    },
}

/// Lots that must agree before a stream clock jumps further ahead than the skew (fewer when the
/// topology has fewer lots).
pub const STREAM_JUMP_QUORUM: usize = 3;

/// How long a lot's vote for a stream clock jump counts, wall time.
const STREAM_JUMP_WINDOW: Duration = Duration::from_secs(60);

/// Votes of lots that reported times beyond the stream clock.
#[derive(Debug, Default)]
struct StreamJumps {
    votes: Vec<(LotIndex, i64, Instant)>,
}

impl StreamJumps {
    /// Whether an event of `lot` at `time_ms`, ahead of the clock `clock_ms` by more than `skew_ms`,
    /// is corroborated by enough other lots to move the clock there.
    fn corroborated(
        &mut self,
        lot: LotIndex,
        time_ms: i64,
        clock_ms: i64,
        skew_ms: i64,
        lots: usize,
    ) -> bool {
        self.votes.retain(|(voter, voted_ms, at)| {
            *voter != lot && *voted_ms > clock_ms + skew_ms && at.elapsed() < STREAM_JUMP_WINDOW
        });
        self.votes.push((lot, time_ms, Instant::now()));
        let agreeing = self
            .votes
            .iter()
            .filter(|(_, voted_ms, _)| voted_ms.abs_diff(time_ms) <= skew_ms.unsigned_abs())
            .count();
        if agreeing >= STREAM_JUMP_QUORUM.min(lots.max(1)) {
            self.votes.clear();
            return true;
        }
        false
    }
}

/// Options of [`Ingest::start_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestOptions {
    /// Sample lots onto this forecasting grid from the first event on (so a replay consumed before
    /// the first model is active still yields grid values).
    pub grid: Option<GridRule>,
    /// What event times are judged against.
    pub time: TimeReference,
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
    /// The changelog topic could not be created or its clients started.
    #[error(transparent)]
    Changelog(Box<ChangelogError>),
    /// The consumer thread could not start or panicked.
    #[error("the consumer thread {0}")]
    Thread(String),
    /// The consumer failed `attempts` times in a row; the last failure is `last`.
    #[error("the consumer failed {attempts} times in a row; the last failure: {last}")]
    GaveUp {
        /// Consecutive failures.
        attempts: u32,
        /// What ended the last run.
        last: String,
    },
}

/// Next offsets of one partition number in both topics, and fingerprints of the last messages
/// applied from each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    sensor_next: i64,
    session_next: i64,
    sensor_last: Option<u64>,
    session_last: Option<u64>,
}

impl Progress {
    fn next(&self, topic: InputTopic) -> i64 {
        match topic {
            InputTopic::Sensor => self.sensor_next,
            InputTopic::Session => self.session_next,
        }
    }

    fn last(&self, topic: InputTopic) -> Option<u64> {
        match topic {
            InputTopic::Sensor => self.sensor_last,
            InputTopic::Session => self.session_last,
        }
    }

    /// Records the message at `offset` as applied (or dead-lettered).
    fn advance(&mut self, topic: InputTopic, offset: i64, fingerprint: u64) {
        let (next, last) = match topic {
            InputTopic::Sensor => (&mut self.sensor_next, &mut self.sensor_last),
            InputTopic::Session => (&mut self.session_next, &mut self.session_last),
        };
        *next = next_offset(offset);
        *last = Some(fingerprint);
    }

    /// Where to start reading `topic`: the last applied message again when its fingerprint is
    /// known (to check the log is still the one the state was built from), else the next one.
    fn start(&self, topic: InputTopic) -> i64 {
        let next = self.next(topic);
        match self.last(topic) {
            Some(_) if next > 0 => next - 1,
            _ => next,
        }
    }
}

/// Live health of the consumer, readable from any thread.
#[derive(Debug)]
pub struct IngestStatus {
    last_contact_ms: AtomicI64,
    lag: AtomicI64,
    assigned: AtomicU64,
    /// Bumped on every assignment change: a lag measured for an older assignment is dropped.
    generation: AtomicU64,
    /// Why the consumer is down while the supervisor restarts it.
    down: Mutex<Option<String>>,
    /// The supervisor gave up.
    gave_up: AtomicBool,
    /// The current consumer has caught up at least once (so its failure starts the backoff afresh).
    proven: AtomicBool,
    /// The current assignment has read the backlog it was given (the high watermarks of its first
    /// probe) or was measured at lag 0 once: from then on a lag up to `ready_max_lag` still counts
    /// as caught up.
    recovered: AtomicBool,
    ready_max_lag: i64,
    stale_after_ms: i64,
}

/// A reading of [`IngestStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusView {
    /// Milliseconds since the broker last answered (`None`: never yet).
    pub contact_age_ms: Option<i64>,
    /// The state may be out of date: the broker has not answered for longer than allowed, or the
    /// consumer is down.
    pub stale: bool,
    /// Messages behind the high watermarks of the owned partitions (`None`: not measured for the
    /// current assignment yet).
    pub lag: Option<i64>,
    /// Partitions owned.
    pub assigned_partitions: u64,
    /// Why the consumer is down (`None`: it runs).
    pub down: Option<String>,
    /// Ready to serve: partitions owned, nothing stale, the backlog found at this assignment's
    /// first probe read (or a lag of 0 measured), and the lag at most `ready_max_lag` now.
    pub caught_up: bool,
    /// Assignments (and revocations) the consumer has been through; 0 until the group first
    /// assigned it, even nothing.
    pub rebalances: u64,
}

impl StatusView {
    /// A replica the group gave no partition (more replicas than partitions) that is otherwise
    /// healthy: it holds no lot, and answers every request by forwarding it to the owner.
    pub fn idle_in_group(&self) -> bool {
        self.assigned_partitions == 0 && self.rebalances > 0 && !self.stale && self.down.is_none()
    }
}

impl IngestStatus {
    fn touch(&self) {
        self.last_contact_ms.store(now_ms(), Ordering::Relaxed);
    }

    fn set_down(&self, reason: Option<String>) {
        *self.down.lock().unwrap_or_else(PoisonError::into_inner) = reason;
    }

    /// The assignment changed: its lag is unknown until measured.
    fn reassigned(&self, partitions: usize) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.recovered.store(false, Ordering::SeqCst);
        self.lag.store(-1, Ordering::SeqCst);
        self.assigned.store(partitions as u64, Ordering::SeqCst);
    }

    /// The current reading.
    pub fn view(&self) -> StatusView {
        let last = self.last_contact_ms.load(Ordering::Relaxed);
        let contact_age_ms = (last > 0).then(|| (now_ms() - last).max(0));
        let lag = self.lag.load(Ordering::SeqCst);
        let down = self
            .down
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let stale = down.is_some() || contact_age_ms.is_none_or(|age| age > self.stale_after_ms);
        let assigned_partitions = self.assigned.load(Ordering::SeqCst);
        let within =
            lag == 0 || (self.recovered.load(Ordering::SeqCst) && lag <= self.ready_max_lag);
        StatusView {
            contact_age_ms,
            stale,
            lag: (lag >= 0).then_some(lag),
            assigned_partitions,
            down,
            caught_up: assigned_partitions > 0 && !stale && lag >= 0 && within,
            rebalances: self.generation.load(Ordering::SeqCst),
        }
    }
}

const RUNNING: u8 = 0;
const STOPPING: u8 = 1;
const ABORTING: u8 = 2;

/// A message to verify after an assignment: the last one applied before the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expected {
    offset: i64,
    fingerprint: u64,
}

/// Everything the consumer thread mutates, shared with the rebalance callback (which runs inside
/// `poll`, on the same thread, while the loop holds no lock).
struct Core {
    config: IngestConfig,
    topology: Arc<TopologyIndex>,
    live: LiveState,
    owned: BTreeMap<i32, Progress>,
    /// The partition of each lot (so a partition's lots can be checkpointed and handed over), and
    /// the owned partitions mirrored, in a form request handlers read without this lock
    /// ([`Holdings`]).
    holdings: Arc<Holdings>,
    dirty: BTreeSet<i32>,
    /// The first message of each (topic, partition) after an assignment, to compare with the
    /// checkpoint's last.
    verify: BTreeMap<(InputTopic, i32), Expected>,
    /// Partitions to rebuild from the beginning of their logs (found while handling a message; the
    /// consumer thread seeks them).
    rebuild: BTreeSet<i32>,
    /// Partitions owned when the consumer last failed: their lots keep the last known state
    /// (flagged stale) until the new consumer's first assignment, which drops those it does not get.
    orphaned: BTreeSet<i32>,
    store: CheckpointStore,
    /// Reads a newly assigned partition's newest checkpoint from the changelog, when configured.
    changelog: Option<ChangelogReader>,
    /// Writes the checkpoint files off the state lock ([`CheckpointWriter`]).
    writer: CheckpointWriter,
    deadletters: DeadLetterSink,
    metrics: IngestMetrics,
    time: TimeReference,
    jumps: StreamJumps,
    /// How checkpoints commit the group's offsets: asynchronously while running (a commit never
    /// holds the state lock, even with the broker gone), synchronously on a clean stop, not at all
    /// on a stop while the broker is gone.
    commit_mode: Option<rdkafka::consumer::CommitMode>,
}

/// A partition the probe found behind its position: the log holds less than was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shrunk {
    partition: i32,
    topic: InputTopic,
    high: i64,
}

struct Shared {
    core: Mutex<Core>,
    control: AtomicU8,
    /// Set while a failed consumer is torn down: its revocation must not checkpoint a state that
    /// may be half-applied.
    failing: AtomicBool,
    status: IngestStatus,
    metrics: IngestMetrics,
    /// Found by the probe thread, acted on by the consumer thread.
    shrunk: Mutex<Vec<Shrunk>>,
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

    fn running(&self) -> bool {
        self.control.load(Ordering::Relaxed) == RUNNING
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
                let starts: Vec<(String, i32, i64)> = {
                    let mut core = self.shared.core();
                    let progress = core.on_assign(&numbers);
                    partitions
                        .elements()
                        .iter()
                        .filter_map(|element| {
                            let topic = core.input_topic(element.topic())?;
                            let progress = progress.get(&element.partition())?;
                            Some((
                                element.topic().to_owned(),
                                element.partition(),
                                progress.start(topic),
                            ))
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
                if self.shared.failing.load(Ordering::SeqCst) {
                    // A failed consumer leaving: keep the last known state (stale) for the next
                    // assignment to settle, and checkpoint nothing (it may be half-applied).
                    self.shared.core().on_failure();
                } else {
                    self.shared
                        .core()
                        .on_revoke(consumer, &numbers, !aborting && !lost);
                }
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
        let owned = self.shared.core().owned.len();
        self.shared.status.reassigned(owned);
        self.shared.metrics.assigned_partitions.set(owned as i64);
    }
}

fn partition_numbers(elements: &[TopicPartitionListElem<'_>]) -> BTreeSet<i32> {
    elements.iter().map(|element| element.partition()).collect()
}

/// What handling a message asks of the consumer thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handled {
    /// Nothing more.
    Done,
    /// The partition's log is not the one its state was built from: rebuild it.
    Rebuild(i32),
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

    fn topic_name(&self, topic: InputTopic) -> &str {
        match topic {
            InputTopic::Sensor => &self.config.kafka.topics.sensor,
            InputTopic::Session => &self.config.kafka.topics.session,
        }
    }

    fn forget_lots(&mut self, partition: i32) {
        for lot in self.holdings.lots_of(partition) {
            self.live.reset_lot(lot);
            self.holdings.set_lot(lot, -1);
        }
    }

    /// Loads the checkpoints of newly assigned partitions; returns where to start reading.
    fn on_assign(&mut self, partitions: &BTreeSet<i32>) -> BTreeMap<i32, Progress> {
        // A file still being written is read whole or not at all (renamed into place), but the
        // batch's outcome belongs to the ownership it was written under: settle it first. No
        // consumer here, so nothing is committed; the files are the truth.
        if let Err(error) = self.settle_in_flight(None) {
            tracing::error!(error = %error, "checkpoint failed; the previous one stays in force");
        }
        // After a failed consumer: the lots of partitions this replica no longer gets go.
        let orphaned = std::mem::take(&mut self.orphaned);
        for &partition in orphaned.difference(partitions) {
            self.forget_lots(partition);
        }
        let mut starts = BTreeMap::new();
        for &partition in partitions {
            let started = Instant::now();
            self.forget_lots(partition);
            let file = match self.store.load(partition) {
                Ok(file) => file,
                Err(error) => {
                    tracing::error!(
                        error = %error,
                        partition,
                        "checkpoint refused; rebuilding the partition from the changelog or the beginning"
                    );
                    if let Err(error) = self.store.quarantine(partition) {
                        tracing::warn!(error = %error, "could not move the refused checkpoint aside");
                    }
                    None
                }
            };
            let progress = match newest(file, self.changelog_checkpoint(partition)) {
                Some((checkpoint, from_changelog)) => {
                    if from_changelog {
                        self.metrics.restored_from_changelog.inc();
                    }
                    tracing::info!(
                        partition,
                        from_changelog,
                        lots = checkpoint.lots.len(),
                        "restoring the partition's checkpoint"
                    );
                    self.restore(&checkpoint)
                }
                None => Progress::default(),
            };
            self.metrics
                .restore_seconds
                .observe(started.elapsed().as_secs_f64());
            for topic in InputTopic::ALL {
                self.verify.remove(&(topic, partition));
                if let Some(fingerprint) = progress.last(topic)
                    && progress.next(topic) > 0
                {
                    self.verify.insert(
                        (topic, partition),
                        Expected {
                            offset: progress.next(topic) - 1,
                            fingerprint,
                        },
                    );
                }
            }
            tracing::info!(
                partition,
                sensor_next = progress.sensor_next,
                session_next = progress.session_next,
                "partition assigned"
            );
            self.owned.insert(partition, progress);
            self.holdings.own(partition, now_ms());
            starts.insert(partition, progress);
        }
        starts
    }

    /// The partition's newest checkpoint on the changelog, when there is one (a record that cannot
    /// be read or refuses to decode is logged and passed over: the file, or a replay, serves).
    fn changelog_checkpoint(&self, partition: i32) -> Option<PartitionCheckpoint> {
        let changelog = self.changelog.as_ref()?;
        match changelog.load(partition) {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(error = %error, partition, "changelog checkpoint not usable");
                None
            }
        }
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
            self.holdings.set_lot(lot, checkpoint.partition);
            restored += 1;
        }
        self.metrics.lots_restored.inc_by(restored);
        Progress {
            sensor_next: checkpoint.sensor_next,
            session_next: checkpoint.session_next,
            sensor_last: checkpoint.sensor_last,
            session_last: checkpoint.session_last,
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
            self.forget_lots(partition);
            self.owned.remove(&partition);
            self.holdings.disown(partition);
            self.dirty.remove(&partition);
            self.rebuild.remove(&partition);
            for topic in InputTopic::ALL {
                self.verify.remove(&(topic, partition));
            }
            tracing::info!(partition, saved = save, "partition revoked");
        }
    }

    /// After the consumer failed: nothing is owned any more, but the lots keep their last known
    /// state (stale) until the next assignment says which partitions come back.
    fn on_failure(&mut self) {
        let owned: Vec<i32> = self.owned.keys().copied().collect();
        self.orphaned.extend(owned);
        self.owned.clear();
        self.holdings.disown_all();
        self.dirty.clear();
        self.rebuild.clear();
        self.verify.clear();
    }

    /// Makes the dead letters durable, writes the partitions' checkpoints, then commits their
    /// offsets, waiting for all of it (a revocation, a clean stop). A failure before the files are
    /// written leaves the previous checkpoint in force.
    fn checkpoint(
        &mut self,
        consumer: &BaseConsumer<IngestContext>,
        partitions: &[i32],
    ) -> Result<(), IngestError> {
        // The batch in flight first: files are written in the order their states were taken.
        let earlier = self.settle_in_flight(Some(consumer));
        if partitions.is_empty() {
            return earlier;
        }
        self.hand_over(partitions)?;
        self.settle_in_flight(Some(consumer))
    }

    /// The periodic checkpoint: makes the dead letters durable and copies the partitions' state
    /// under the lock, and hands the files to the writer; their offsets are committed when
    /// [`Core::collect_written`] finds them durable. While the previous batch is still being
    /// written nothing is taken (the partitions stay dirty for the next interval).
    fn checkpoint_in_background(&mut self, partitions: &[i32]) -> Result<(), IngestError> {
        if partitions.is_empty() || self.writer.busy() {
            return Ok(());
        }
        self.hand_over(partitions)
    }

    /// Takes the partitions' checkpoints ([`Core::capture`]) and hands them to the writer.
    fn hand_over(&mut self, partitions: &[i32]) -> Result<(), IngestError> {
        let checkpoints = self.capture(partitions)?;
        if self.writer.submit(checkpoints) {
            Ok(())
        } else {
            Err(writer_stopped())
        }
    }

    /// Waits for the batch the writer has in flight, if any, and settles it ([`Core::settle`]).
    fn settle_in_flight(
        &mut self,
        consumer: Option<&BaseConsumer<IngestContext>>,
    ) -> Result<(), IngestError> {
        if !self.writer.busy() {
            return Ok(());
        }
        match self.writer.wait() {
            Some(batch) => self.settle(consumer, batch),
            None => Err(writer_stopped()),
        }
    }

    /// Commits the offsets of a background batch the writer has finished (never waits).
    fn collect_written(
        &mut self,
        consumer: &BaseConsumer<IngestContext>,
    ) -> Result<(), IngestError> {
        match self.writer.finished() {
            Some(batch) => self.settle(Some(consumer), batch),
            None => Ok(()),
        }
    }

    /// Dead letters made durable, then each partition's state as a checkpoint (the partitions
    /// leave `dirty`). Runs under the state lock: copies, no I/O but the dead letters' flush.
    fn capture(&mut self, partitions: &[i32]) -> Result<Vec<PartitionCheckpoint>, IngestError> {
        let started = Instant::now();
        self.deadletters.flush(Duration::from_secs(30))?;
        let mut checkpoints = Vec::with_capacity(partitions.len());
        for &partition in partitions {
            let Some(progress) = self.owned.get(&partition).copied() else {
                continue;
            };
            // A partition waiting to be rebuilt has no state worth keeping yet.
            if self.rebuild.contains(&partition) {
                continue;
            }
            let lots = self
                .holdings
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
            checkpoints.push(PartitionCheckpoint {
                version: CHECKPOINT_VERSION,
                partition,
                sensor_next: progress.sensor_next,
                session_next: progress.session_next,
                written_ms: now_ms(),
                lots,
                sensor_last: progress.sensor_last,
                session_last: progress.session_last,
            });
            self.dirty.remove(&partition);
        }
        self.metrics
            .checkpoint_capture_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.checkpoints_taken.inc();
        Ok(checkpoints)
    }

    /// Takes in a finished batch: a partition whose file failed is dirty again (the previous file
    /// stays in force), and the offsets of the durable files of partitions still owned are
    /// committed (with a consumer; the files are the truth, the commit only feeds the group's
    /// lag). Returns the first failure.
    fn settle(
        &mut self,
        consumer: Option<&BaseConsumer<IngestContext>>,
        batch: WrittenBatch,
    ) -> Result<(), IngestError> {
        let mut offsets = TopicPartitionList::new();
        let mut failure = None;
        for written in batch.partitions {
            let owned = self.owned.contains_key(&written.partition);
            match written.result {
                Ok(_) if owned => {
                    for (topic, next) in [
                        (&self.config.kafka.topics.sensor, written.sensor_next),
                        (&self.config.kafka.topics.session, written.session_next),
                    ] {
                        offsets.add_partition_offset(
                            topic,
                            written.partition,
                            Offset::Offset(next),
                        )?;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    if owned {
                        self.dirty.insert(written.partition);
                    }
                    failure.get_or_insert(IngestError::Checkpoint(error));
                }
            }
        }
        if let Some(failure) = failure {
            self.metrics.checkpoint_failures.inc();
            return Err(failure);
        }
        self.metrics.checkpoints.inc();
        self.metrics
            .checkpoint_seconds
            .observe(batch.took.as_secs_f64());
        let Some(consumer) = consumer else {
            return Ok(());
        };
        // The files are the truth; a failed commit only delays the lag the group reports.
        let Some(mode) = self.commit_mode else {
            tracing::warn!(
                "the broker is unreachable: offsets not committed (checkpoints written)"
            );
            return Ok(());
        };
        if offsets.count() > 0
            && let Err(error) = consumer.commit(&offsets, mode)
        {
            tracing::warn!(error = %error, "committing checkpointed offsets failed");
        }
        Ok(())
    }

    /// Compares the first message after an assignment with the checkpoint's last; `Some(handled)`
    /// when the message is settled by the check (already applied, or the log is another one).
    fn verify_first(
        &mut self,
        topic: InputTopic,
        partition: i32,
        offset: i64,
        fingerprint: u64,
    ) -> Option<Handled> {
        let expected = self.verify.remove(&(topic, partition))?;
        let label = topic.label();
        if offset == expected.offset {
            if fingerprint == expected.fingerprint {
                self.metrics.log_verified.inc();
                return Some(Handled::Done);
            }
            tracing::error!(
                topic = label,
                partition,
                offset,
                "the log holds another message where the checkpoint's last one was (the topic was recreated or the broker lost data): rebuilding the partition from the log"
            );
            return Some(self.regressed(partition));
        }
        if offset < expected.offset {
            tracing::error!(
                topic = label,
                partition,
                offset,
                checkpoint_next = expected.offset + 1,
                "the log is shorter than the checkpoint (the broker lost data, or the topic was recreated): rebuilding the partition from the log"
            );
            return Some(self.regressed(partition));
        }
        if offset > expected.offset + 1 {
            tracing::error!(
                topic = label,
                partition,
                first_offset = offset,
                checkpoint_next = expected.offset + 1,
                lost = offset - expected.offset - 1,
                "messages were deleted by retention before they were read: the lots carry on without them"
            );
            self.metrics.log_gaps.inc();
        }
        // The checkpoint's last message is gone (retention, compaction): nothing to compare.
        None
    }

    fn regressed(&mut self, partition: i32) -> Handled {
        self.metrics.log_regressions.inc();
        self.rebuild.insert(partition);
        Handled::Rebuild(partition)
    }

    /// Forgets a partition's lots and reads both of its topics again from the beginning.
    fn rebuild_from_start(&mut self, consumer: &BaseConsumer<IngestContext>, partition: i32) {
        if !self.owned.contains_key(&partition) {
            self.rebuild.remove(&partition);
            return;
        }
        for topic in InputTopic::ALL {
            let name = self.topic_name(topic).to_owned();
            if let Err(error) =
                consumer.seek(&name, partition, Offset::Beginning, Duration::from_secs(10))
            {
                // Stays in `rebuild`: tried again on the next round.
                tracing::warn!(error = %error, topic = %name, partition, "seek for the rebuild failed; retrying");
                return;
            }
        }
        self.forget_lots(partition);
        self.owned.insert(partition, Progress::default());
        for topic in InputTopic::ALL {
            self.verify.remove(&(topic, partition));
        }
        self.rebuild.remove(&partition);
        self.dirty.insert(partition);
        tracing::warn!(
            partition,
            "partition rebuilding from the beginning of its log"
        );
    }

    /// Applies or dead-letters one message.
    fn handle(
        &mut self,
        topic: InputTopic,
        topic_name: &str,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Handled, IngestError> {
        let Some(progress) = self.owned.get(&partition).copied() else {
            // Delivered after its revocation: the next owner reads it.
            return Ok(Handled::Done);
        };
        if self.rebuild.contains(&partition) {
            // Read from the old position before the rebuild's seek took effect.
            return Ok(Handled::Done);
        }
        let fingerprint = message_fingerprint(key, value);
        if let Some(handled) = self.verify_first(topic, partition, offset, fingerprint) {
            return Ok(handled);
        }
        if offset < progress.next(topic) {
            // Offsets never go back by themselves: librdkafka reset to the earliest offset because
            // the position was past the end of the log.
            tracing::error!(
                topic = topic.label(),
                partition,
                offset,
                next = progress.next(topic),
                "the log went back below the position (the broker lost data, or the topic was recreated): rebuilding the partition from the log"
            );
            return Ok(self.regressed(partition));
        }
        if let Some(progress) = self.owned.get_mut(&partition) {
            progress.advance(topic, offset, fingerprint);
        }
        self.dirty.insert(partition);
        fail::fail_point!("ingest-handle", |detail| {
            Err(IngestError::Thread(format!(
                "failed at the `ingest-handle` fail point: {}",
                detail.unwrap_or_default()
            )))
        });
        let result = if value.len() > self.config.max_message_bytes {
            Err(Rejection::new(
                Reason::TooLarge,
                format!(
                    "{} bytes, more than max_message_bytes ({})",
                    value.len(),
                    self.config.max_message_bytes
                ),
            ))
        } else {
            self.apply(topic, partition, key, value)
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
        Ok(Handled::Done)
    }

    fn apply(
        &mut self,
        topic: InputTopic,
        partition: i32,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<crate::live::Applied, Rejection> {
        let rules = self.config.time_rules();
        let wall = match self.time {
            TimeReference::Wall => Some(now_ms()),
            TimeReference::Stream { .. } => None,
        };
        match topic {
            InputTopic::Sensor => {
                let event = decode_sensor(&self.topology, &rules, key, value, wall)?;
                self.admit(event.lot, event.event_time_ms)?;
                if event.clamped {
                    self.metrics.clamped(topic);
                }
                self.holdings.set_lot(event.lot, partition);
                self.live.apply_sensor(&event)
            }
            InputTopic::Session => {
                let mark = decode_session(&self.topology, &rules, key, value, wall)?;
                self.admit(mark.lot, mark.event_time_ms)?;
                if mark.clamped {
                    self.metrics.clamped(topic);
                }
                self.holdings.set_lot(mark.lot, partition);
                self.live.apply_session(&mark)
            }
        }
    }

    /// The stream clock's rule (wall-clock times were judged while decoding).
    fn admit(&mut self, lot: LotIndex, time_ms: i64) -> Result<(), Rejection> {
        let TimeReference::Stream { start_ms } = self.time else {
            return Ok(());
        };
        let Some(clock_ms) = self.live.stream_time_ms().or(start_ms) else {
            return Ok(());
        };
        let skew_ms = self.config.max_clock_skew_ms;
        let ahead = time_ms.saturating_sub(clock_ms);
        if ahead <= skew_ms
            || self
                .jumps
                .corroborated(lot, time_ms, clock_ms, skew_ms, self.topology.lots().len())
        {
            return Ok(());
        }
        Err(Rejection::new(
            Reason::FarFuture,
            format!(
                "event time is {ahead} ms ahead of the stream clock (at most {skew_ms} allowed unless {} lots agree)",
                STREAM_JUMP_QUORUM.min(self.topology.lots().len().max(1))
            ),
        ))
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
    holdings: Arc<Holdings>,
    topology: Arc<TopologyIndex>,
    thread: Mutex<Option<JoinHandle<Result<IngestSummary, IngestError>>>>,
    probe: Mutex<Option<JoinHandle<()>>>,
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
    /// thread, judging event times by the wall clock.
    pub fn start(
        config: IngestConfig,
        topology: Arc<TopologyIndex>,
        metrics: IngestMetrics,
    ) -> Result<Ingest, IngestError> {
        Ingest::start_with(config, topology, metrics, IngestOptions::default())
    }

    /// [`Ingest::start`] with a forecasting grid and a time reference.
    pub fn start_with(
        config: IngestConfig,
        topology: Arc<TopologyIndex>,
        metrics: IngestMetrics,
        options: IngestOptions,
    ) -> Result<Ingest, IngestError> {
        config.validate()?;
        let store = CheckpointStore::open(&config.state_dir)?;
        let (changelog_writer, changelog) = open_changelog(&config)?.unzip();
        let writer = CheckpointWriter::spawn(store.clone(), changelog_writer).map_err(|error| {
            IngestError::Thread(format!("for checkpoints could not start: {error}"))
        })?;
        let deadletters =
            DeadLetterSink::new(&config.kafka)?.on_recreated(metrics.deadletter_hook());
        let mut live = LiveState::new(&topology, config.live_rules());
        live.set_grid(options.grid);
        let served_topology = Arc::clone(&topology);
        let stale_after_ms = i64::try_from(config.stale_after_ms).unwrap_or(i64::MAX);
        let holdings = Arc::new(Holdings::new(topology.lots().len()));
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                holdings: Arc::clone(&holdings),
                config: config.clone(),
                topology,
                live,
                owned: BTreeMap::new(),
                dirty: BTreeSet::new(),
                verify: BTreeMap::new(),
                rebuild: BTreeSet::new(),
                orphaned: BTreeSet::new(),
                store,
                changelog,
                writer,
                deadletters,
                metrics: metrics.clone(),
                time: options.time,
                jumps: StreamJumps::default(),
                commit_mode: Some(rdkafka::consumer::CommitMode::Async),
            }),
            control: AtomicU8::new(RUNNING),
            failing: AtomicBool::new(false),
            status: IngestStatus {
                last_contact_ms: AtomicI64::new(0),
                lag: AtomicI64::new(-1),
                assigned: AtomicU64::new(0),
                generation: AtomicU64::new(0),
                down: Mutex::new(None),
                gave_up: AtomicBool::new(false),
                proven: AtomicBool::new(false),
                recovered: AtomicBool::new(false),
                ready_max_lag: i64::try_from(config.ready_max_lag).unwrap_or(i64::MAX),
                stale_after_ms,
            },
            metrics,
            shrunk: Mutex::new(Vec::new()),
            news: News::default(),
        });
        let consumer = new_consumer(&shared, &config)?;
        let probe_client: BaseConsumer = config.probe_config().create()?;
        let thread_shared = Arc::clone(&shared);
        let thread_config = config.clone();
        let thread = std::thread::Builder::new()
            .name("parkcast-ingest".to_owned())
            .spawn(move || supervise(&thread_shared, consumer, &thread_config))
            .map_err(|error| IngestError::Thread(format!("could not start: {error}")))?;
        let probe_shared = Arc::clone(&shared);
        let probe = std::thread::Builder::new()
            .name("parkcast-ingest-probe".to_owned())
            .spawn(move || probe_loop(&probe_shared, &probe_client, &config))
            .map_err(|error| IngestError::Thread(format!("could not start the probe: {error}")))?;
        Ok(Ingest {
            shared,
            holdings,
            topology: served_topology,
            thread: Mutex::new(Some(thread)),
            probe: Mutex::new(Some(probe)),
        })
    }

    /// What this replica owns, readable without the state lock.
    pub fn holdings(&self) -> &Arc<Holdings> {
        &self.holdings
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
    pub fn with_state<R>(&self, read: impl FnOnce(&LiveState, &TopologyIndex) -> R) -> R {
        let core = self.shared.core();
        read(&core.live, &core.topology)
    }

    /// The picture of every lot this replica owns, at `as_of_ms` (default: the newest event time
    /// over those lots, which makes the result independent of the wall clock).
    pub fn lot_snapshots(&self, as_of_ms: Option<i64>) -> BTreeMap<String, LotSnapshot> {
        let core = self.shared.core();
        owned_snapshots(&core, as_of_ms)
    }

    /// Whether the supervisor has given up (the consumer failed `max_restarts` times in a row):
    /// the process should exit non-zero. [`Ingest::stop`] returns the failure.
    pub fn failed(&self) -> bool {
        self.shared.status.gave_up.load(Ordering::SeqCst)
    }

    /// Watches ingestion until `stop` resolves, the consumer ends, or, with `until_caught_up`,
    /// every owned partition has been read to its end for a second (several probes: nothing more
    /// is waiting); logs progress every 5 s. What `parkcast ingest` runs between start and stop.
    pub async fn watch(&self, until_caught_up: bool, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut ticker = tokio::time::interval(std::time::Duration::from_millis(200));
        let mut last_log = std::time::Instant::now();
        let mut last_handled = 0;
        let mut caught_up_since: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = ticker.tick() => {}
            }
            let status = self.status();
            let handled = self.metrics().handled();
            if last_log.elapsed() >= std::time::Duration::from_secs(5) {
                tracing::info!(
                    handled,
                    per_second = (handled - last_handled) as f64 / last_log.elapsed().as_secs_f64(),
                    lag = ?status.lag,
                    partitions = status.assigned_partitions,
                    stale = status.stale,
                    "ingesting"
                );
                last_handled = handled;
                last_log = std::time::Instant::now();
            }
            if self.is_finished() {
                return;
            }
            if until_caught_up && status.assigned_partitions > 0 && status.lag == Some(0) {
                let since = *caught_up_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= std::time::Duration::from_secs(1) {
                    return;
                }
            } else {
                caught_up_since = None;
            }
        }
    }

    /// Whether the consumer thread has ended (stopped, or the supervisor gave up).
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
        if let Some(probe) = self
            .probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = probe.join();
        }
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
    fn topology(&self) -> &TopologyIndex {
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
        if let Some(down) = status.down {
            return Some(format!("ingestion is down ({down}); restarting it"));
        }
        status.stale.then(|| match status.contact_age_ms {
            Some(age) => format!("the broker has not answered for {} s", age / 1_000),
            None => "ingestion has not reached the broker yet".to_owned(),
        })
    }

    fn caught_up(&self) -> bool {
        self.status().caught_up
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
    let owned: Vec<usize> = (0..core.topology.lots().len())
        .filter(|&lot| {
            LotIndex::try_from(lot).is_ok_and(|lot| core.holdings.partition_of(lot).is_some())
        })
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

/// Of a partition's checkpoint file and its changelog record, the newer by the offsets each is
/// consistent with (the file on a tie: it is local); `true` when it is the changelog's.
fn newest(
    file: Option<PartitionCheckpoint>,
    changelog: Option<PartitionCheckpoint>,
) -> Option<(PartitionCheckpoint, bool)> {
    let position = |checkpoint: &PartitionCheckpoint| {
        checkpoint.sensor_next.max(0) + checkpoint.session_next.max(0)
    };
    match (file, changelog) {
        (Some(file), Some(changelog)) if position(&changelog) > position(&file) => {
            Some((changelog, true))
        }
        (Some(file), _) => Some((file, false)),
        (None, Some(changelog)) => Some((changelog, true)),
        (None, None) => None,
    }
}

/// The changelog's writer and reader when `changelog_topic` is set, after creating the topic with
/// the input topics' partition count.
fn open_changelog(
    config: &IngestConfig,
) -> Result<Option<(ChangelogWriter, ChangelogReader)>, IngestError> {
    if config.changelog_topic.is_empty() {
        return Ok(None);
    }
    let probe: BaseConsumer = config.probe_config().create()?;
    let partitions = partition_count(&probe, &config.kafka.topics.sensor, Duration::from_secs(10))?;
    let (topic, max_bytes) = (
        config.changelog_topic.as_str(),
        config.changelog_max_message_bytes,
    );
    let changelog = || -> Result<_, ChangelogError> {
        crate::changelog::create(&config.kafka, topic, partitions, max_bytes)?;
        Ok((
            ChangelogWriter::new(&config.kafka, topic, max_bytes)?,
            ChangelogReader::new(&config.kafka, &config.group_id, topic, max_bytes)?,
        ))
    };
    changelog()
        .map(Some)
        .map_err(|error| IngestError::Changelog(Box::new(error)))
}

/// A consumer in the group, subscribed to both input topics, after checking they exist with the
/// same partition count.
fn new_consumer(
    shared: &Arc<Shared>,
    config: &IngestConfig,
) -> Result<BaseConsumer<IngestContext>, IngestError> {
    let consumer: BaseConsumer<IngestContext> =
        config
            .consumer_config()?
            .create_with_context(IngestContext {
                shared: Arc::clone(shared),
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
    Ok(consumer)
}

/// A run that lasted this long was healthy, like one that caught up: the next failure starts the
/// backoff afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Runs the consumer, and a new one whenever it fails, until told to stop or out of attempts.
fn supervise(
    shared: &Arc<Shared>,
    first: BaseConsumer<IngestContext>,
    config: &IngestConfig,
) -> Result<IngestSummary, IngestError> {
    let mut next = Some(first);
    let mut failures: u32 = 0;
    loop {
        let started = Instant::now();
        let consumer = match next.take().map_or_else(|| new_consumer(shared, config), Ok) {
            Ok(consumer) => consumer,
            Err(error) => {
                failures += 1;
                let reason = error.to_string();
                tracing::error!(error = %reason, attempt = failures, "could not start a new consumer");
                shared.status.set_down(Some(reason.clone()));
                if let Some(gave_up) = give_up(shared, config, failures, reason) {
                    return Err(gave_up);
                }
                if !wait_to_restart(shared, config, failures) {
                    return Ok(summary(shared));
                }
                continue;
            }
        };
        shared.failing.store(false, Ordering::SeqCst);
        shared.status.proven.store(false, Ordering::SeqCst);
        shared.status.set_down(None);
        shared.metrics.consumer_down.set(0);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(shared, &consumer, config)));
        let reason = match outcome {
            Ok(Ok(summary)) => return Ok(summary),
            Ok(Err(error)) => error.to_string(),
            Err(panic) => format!("the consumer thread panicked: {}", panic_text(&*panic)),
        };
        if started.elapsed() >= HEALTHY_RUN || shared.status.proven.load(Ordering::SeqCst) {
            failures = 0;
        }
        failures += 1;
        tracing::error!(error = %reason, attempt = failures, "ingestion stopped; the state is stale until a new consumer catches up");
        // The dead consumer's partitions, assignment and lag go before `down` is published:
        // leaving the group below can take seconds, and meanwhile a status that says down must
        // not show the partitions and zero lag of a consumer that no longer runs (nor may the lag
        // probe measure them: it reads the partitions owned, now none). Nothing is checkpointed:
        // the state since the last checkpoint may be half-applied, and whoever gets the
        // partitions restores the checkpoints.
        shared.failing.store(true, Ordering::SeqCst);
        shared.core().on_failure();
        shared.status.reassigned(0);
        shared.metrics.assigned_partitions.set(0);
        shared.status.set_down(Some(reason.clone()));
        shared.metrics.consumer_down.set(1);
        shared.metrics.consumer_restarts.inc();
        // Leaving the group takes a while on a busy broker; the fault tests stretch it.
        fail::fail_point!("ingest-leave");
        drop(consumer);
        if let Some(gave_up) = give_up(shared, config, failures, reason) {
            return Err(gave_up);
        }
        if !wait_to_restart(shared, config, failures) {
            return Ok(summary(shared));
        }
    }
}

fn give_up(
    shared: &Shared,
    config: &IngestConfig,
    failures: u32,
    last: String,
) -> Option<IngestError> {
    if config.max_restarts == 0 || failures <= config.max_restarts {
        return None;
    }
    tracing::error!(attempts = failures, "the consumer keeps failing; giving up");
    shared.status.gave_up.store(true, Ordering::SeqCst);
    Some(IngestError::GaveUp {
        attempts: failures,
        last,
    })
}

/// Sleeps the backoff before restart number `failures`; false when told to stop meanwhile.
fn wait_to_restart(shared: &Shared, config: &IngestConfig, failures: u32) -> bool {
    let backoff = Duration::from_secs(1)
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(Duration::from_millis(config.restart_backoff_max_ms));
    tracing::info!(
        seconds = backoff.as_secs_f64(),
        "restarting the consumer after a pause"
    );
    let until = Instant::now() + backoff;
    while Instant::now() < until {
        if !shared.running() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    shared.running()
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

fn run(
    shared: &Shared,
    consumer: &BaseConsumer<IngestContext>,
    config: &IngestConfig,
) -> Result<IngestSummary, IngestError> {
    let checkpoint_every = Duration::from_millis(config.checkpoint_interval_ms);
    let mut next_checkpoint = Instant::now() + checkpoint_every;
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
                let handled = core.handle(
                    topic,
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    message.key(),
                    message.payload().unwrap_or_default(),
                )?;
                if let Handled::Rebuild(partition) = handled {
                    core.rebuild_from_start(consumer, partition);
                }
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
        let shrunk =
            std::mem::take(&mut *shared.shrunk.lock().unwrap_or_else(PoisonError::into_inner));
        let mut core = shared.core();
        for Shrunk {
            partition,
            topic,
            high,
        } in shrunk
        {
            let still = core
                .owned
                .get(&partition)
                .is_some_and(|progress| progress.next(topic) > high);
            if still && !core.rebuild.contains(&partition) {
                tracing::error!(
                    topic = topic.label(),
                    partition,
                    high_watermark = high,
                    "the log ends below the position (the broker lost data, or the topic was recreated): rebuilding the partition from the log"
                );
                core.regressed(partition);
            }
        }
        let pending: Vec<i32> = core.rebuild.iter().copied().collect();
        for partition in pending {
            core.rebuild_from_start(consumer, partition);
        }
        if let Err(error) = core.collect_written(consumer) {
            tracing::error!(error = %error, "checkpoint failed; retrying at the next interval");
        }
        let now = Instant::now();
        if now >= next_checkpoint {
            let dirty: Vec<i32> = core.dirty.iter().copied().collect();
            if let Err(error) = core.checkpoint_in_background(&dirty) {
                tracing::error!(error = %error, "checkpoint failed; retrying at the next interval");
            }
            next_checkpoint = now + checkpoint_every;
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

/// The checkpoint writer's thread is gone (it only ends when the channel closes, so: it panicked).
fn writer_stopped() -> IngestError {
    IngestError::Thread("for checkpoints has stopped".to_owned())
}

fn summary(shared: &Shared) -> IngestSummary {
    IngestSummary {
        handled: shared.metrics.handled(),
        deadletters_delivered: shared.core().deadletters.delivered(),
    }
}

/// Every `probe_interval_ms`, on a client of its own: the high watermarks of the owned
/// partitions (the lag, proof the broker answers, and logs that shrank below the position).
fn probe_loop(shared: &Shared, client: &BaseConsumer, config: &IngestConfig) {
    let every = Duration::from_millis(config.probe_interval_ms);
    let mut backlog = Backlog::default();
    while shared.running() {
        let started = Instant::now();
        probe(shared, client, config, &mut backlog);
        while shared.running() && started.elapsed() < every {
            std::thread::sleep(
                every
                    .saturating_sub(started.elapsed())
                    .min(Duration::from_millis(50)),
            );
        }
    }
}

/// The high watermarks an assignment's first probe found. Once every owned partition's position
/// has reached them, the backlog the assignment came with has been read and readiness may accept a
/// small lag: a stream produced without pause (a city at rush hour, the demo's fast replay) can go
/// minutes without a probe landing on lag 0, and readiness waiting for one would keep a server that
/// is current out of its load balancer.
#[derive(Debug, Default)]
struct Backlog {
    generation: Option<u64>,
    ends: BTreeMap<(i32, InputTopic), i64>,
}

/// One owned (partition, topic) as a probe found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    partition: i32,
    topic: InputTopic,
    /// The next offset the consumer will read.
    next: i64,
    high: i64,
}

impl Backlog {
    /// Whether `marks`, measured for the assignment `generation`, have read the backlog: the first
    /// measurement of a generation sets its ends (and has read them only at lag 0).
    fn read(&mut self, generation: u64, marks: &[Mark]) -> bool {
        if self.generation != Some(generation) {
            self.generation = Some(generation);
            self.ends = marks
                .iter()
                .map(|mark| ((mark.partition, mark.topic), mark.high))
                .collect();
        }
        marks.iter().all(|mark| {
            self.ends
                .get(&(mark.partition, mark.topic))
                .is_some_and(|end| mark.next >= *end)
        })
    }
}

fn probe(shared: &Shared, client: &BaseConsumer, config: &IngestConfig, backlog: &mut Backlog) {
    // The assignment the measurement is for, read together with the positions.
    let (generation, owned) = {
        let core = shared.core();
        let generation = shared.status.generation.load(Ordering::SeqCst);
        let owned: Vec<(i32, Progress)> = core
            .owned
            .iter()
            .map(|(partition, progress)| (*partition, *progress))
            .collect();
        (generation, owned)
    };
    let timeout = Duration::from_millis(config.probe_interval_ms.clamp(200, 5_000));
    let topics = &config.kafka.topics;
    if owned.is_empty() {
        // Nothing owned: metadata still proves the broker answers; the lag stays unknown.
        if client.fetch_metadata(Some(&topics.sensor), timeout).is_ok() {
            shared.status.touch();
        }
        update_contact_age(shared);
        return;
    }
    let mut lag = 0;
    let mut shrunk = Vec::new();
    let mut marks = Vec::with_capacity(owned.len() * 2);
    for (partition, progress) in owned {
        for (topic, name) in [
            (InputTopic::Sensor, &topics.sensor),
            (InputTopic::Session, &topics.session),
        ] {
            match client.fetch_watermarks(name, partition, timeout) {
                Ok((_, high)) => {
                    let next = progress.next(topic);
                    if high < next {
                        shrunk.push(Shrunk {
                            partition,
                            topic,
                            high,
                        });
                    }
                    lag += (high - next).max(0);
                    marks.push(Mark {
                        partition,
                        topic,
                        next,
                        high,
                    });
                }
                Err(_) => {
                    update_contact_age(shared);
                    return;
                }
            }
        }
    }
    shared.status.touch();
    if !shrunk.is_empty() {
        shared
            .shrunk
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(shrunk);
    } else if shared.status.generation.load(Ordering::SeqCst) == generation {
        // A lag of an assignment that changed meanwhile would say nothing about the new one.
        shared.status.lag.store(lag, Ordering::SeqCst);
        shared.metrics.lag_messages.set(lag);
        if backlog.read(generation, &marks) || lag == 0 {
            shared.status.proven.store(true, Ordering::SeqCst);
            shared.status.recovered.store(true, Ordering::SeqCst);
        }
    }
    update_contact_age(shared);
}

fn update_contact_age(shared: &Shared) {
    if let Some(age) = shared.status.view().contact_age_ms {
        shared.metrics.broker_contact_age_ms.set(age);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(partition: i32, topic: InputTopic, next: i64, high: i64) -> Mark {
        Mark {
            partition,
            topic,
            next,
            high,
        }
    }

    #[test]
    fn the_backlog_is_read_once_every_partition_reaches_its_first_high_watermark() {
        let mut backlog = Backlog::default();
        // The first probe of an assignment: 500 and 20 messages behind.
        let first = [
            mark(0, InputTopic::Sensor, 100, 600),
            mark(0, InputTopic::Session, 5, 25),
        ];
        assert!(!backlog.read(1, &first));
        // Production goes on: the sensor topic passed its first end, the session topic not yet;
        // never at lag 0.
        let later = [
            mark(0, InputTopic::Sensor, 650, 700),
            mark(0, InputTopic::Session, 24, 30),
        ];
        assert!(!backlog.read(1, &later));
        let read = [
            mark(0, InputTopic::Sensor, 720, 790),
            mark(0, InputTopic::Session, 25, 31),
        ];
        assert!(backlog.read(1, &read), "both reached the ends first seen");
        // A new assignment measures its own backlog: the old ends do not count.
        let reassigned = [
            mark(0, InputTopic::Sensor, 720, 900),
            mark(0, InputTopic::Session, 25, 31),
            mark(1, InputTopic::Sensor, 0, 10),
            mark(1, InputTopic::Session, 0, 0),
        ];
        assert!(!backlog.read(2, &reassigned));
        // A first probe at lag 0 has read its backlog.
        assert!(Backlog::default().read(3, &[mark(0, InputTopic::Sensor, 790, 790)]));
    }

    #[test]
    fn fetch_sizes_follow_the_largest_record_and_refuse_what_cannot_carry_it() {
        let config = IngestConfig::default();
        let sizes = config.fetch_sizes().expect("consistent defaults");
        assert_eq!(sizes.partition, 1 << 20);
        assert_eq!(sizes.fetch, 16 << 20);
        assert!(sizes.receive >= sizes.fetch + (1 << 20) + 512);
        assert!(
            sizes.receive >= LIBRDKAFKA_DEFAULT_RECEIVE,
            "what a backlog may need"
        );
        let mut big = IngestConfig {
            max_message_bytes: 64 << 20,
            ..IngestConfig::default()
        };
        let sizes = big.fetch_sizes().expect("consistent");
        assert_eq!((sizes.partition, sizes.fetch), (64 << 20, 64 << 20));
        big.kafka
            .librdkafka_options
            .insert("receive.message.max.bytes".into(), "1000000".into());
        assert!(matches!(
            big.validate(),
            Err(IngestConfigError::FetchSize {
                key: "receive.message.max.bytes",
                ..
            })
        ));
        let tiny = IngestConfig {
            max_message_bytes: 10,
            ..IngestConfig::default()
        };
        assert!(matches!(
            tiny.validate(),
            Err(IngestConfigError::MessageSize { value: 10 })
        ));
    }

    #[test]
    fn a_stream_clock_jumps_only_when_lots_agree() {
        let mut jumps = StreamJumps::default();
        let (clock, skew) = (1_000_000, 300_000);
        let day_ahead = clock + 86_400_000;
        // One lot, however often it insists, does not move the clock.
        for _ in 0..5 {
            assert!(!jumps.corroborated(0, day_ahead, clock, skew, 20));
        }
        // Two others far from it do not agree with it.
        assert!(!jumps.corroborated(1, clock + 3_600_000, clock, skew, 20));
        assert!(!jumps.corroborated(2, clock + 3_700_000, clock, skew, 20));
        // A third near those two makes a quorum of three within the skew.
        assert!(jumps.corroborated(3, clock + 3_650_000, clock, skew, 20));
        // A city of two lots needs both.
        let mut small = StreamJumps::default();
        assert!(!small.corroborated(0, day_ahead, clock, skew, 2));
        assert!(small.corroborated(1, day_ahead + 1_000, clock, skew, 2));
    }

    #[test]
    fn progress_starts_at_the_last_message_when_it_can_check_it() {
        let mut progress = Progress::default();
        assert_eq!(progress.start(InputTopic::Sensor), 0);
        progress.advance(InputTopic::Sensor, 41, 7);
        assert_eq!(progress.next(InputTopic::Sensor), 42);
        assert_eq!(progress.start(InputTopic::Sensor), 41);
        assert_eq!(progress.start(InputTopic::Session), 0);
    }
}
