//! The dead-letter topic: every message the consumer could not apply, with the reason and where it
//! came from, so nothing is lost and an operator can fix and replay it.
//!
//! Dead letters are delivered at least once: the consumer flushes them before it commits the source
//! offsets, and a crash between the two repeats them. `source_topic`, `source_partition` and
//! `source_offset` identify a message, so readers can drop repeats.
//!
//! **A letter always fits.** Input of any size reaches the topics (a fuzzer, a broken gateway), and a
//! letter carries the original bytes plus a header, so a letter for a record near the limit would be
//! refused with `MessageSizeTooLarge`, and one refusal used to stop ingestion for good. The sink
//! knows its size budget ([`DeadLetterSink::budget`]): the producer's `message.max.bytes`
//! (librdkafka's default 1,000,000) and the dead-letter topic's `max.message.bytes` as the broker
//! answers DescribeConfigs, less [`RECORD_MARGIN`]. The topic is described on a thread of its own,
//! so a broker that never answers (librdkafka's mock cluster, the demo's broker, times the request
//! out after 5 s) does not hold ingestion's start; until the answer, and without one, letters are
//! sized by the producer's limit. noida-db answers it (Kafka's default 1,048,588, or the topic's
//! own setting), though it does not enforce it. Batches of letters are kept to [`BATCH_BYTES`], so
//! several letters together fit any topic limit from that size up. A letter that would not fit keeps the first bytes of the original value
//! (and, only if still needed, of the key and the detail) and says so, with the original's full
//! length and SHA-256. A broker that still refuses a letter for size (a topic limit the broker did
//! not tell) gets it again at half the size, down to [`MIN_BUDGET`].
//!
//! **A fatal producer is replaced.** The producers are idempotent; when a broker loses writes it had
//! acknowledged (a broker back with an empty log), the sequence numbers no longer match
//! (`OutOfOrderSequenceNumber`) and librdkafka declares the producer fatal: it refuses every later
//! send. [`RecoveringProducer`] notices (`fatal_error()` after each send and flush), logs it at
//! ERROR once, builds a new producer from the same config and counts it. The sink keeps every letter
//! until the broker acknowledged it, and sends those a dead producer left unacknowledged again on the
//! new one, so a replacement loses nothing and the source offsets can still be committed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use parkcast_proto::v1::DeadLetter;
use prost::Message;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use sha2::{Digest, Sha256};

use crate::{KafkaConfig, now_ms};

/// Version of the `DeadLetter` fields this sink fills (2: the original's size and hash).
pub const DEADLETTER_SCHEMA_VERSION: u32 = 2;

/// librdkafka's `message.max.bytes` when the config does not set it.
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// Bytes kept free below the size limit for what wraps a record: librdkafka counts at most 36 bytes
/// of record framing against `message.max.bytes`, the broker counts the record batch's 61-byte
/// header against `max.message.bytes`; the rest is room to spare.
pub const RECORD_MARGIN: usize = 512;

/// The smallest budget a letter is cut to when the broker keeps refusing it for size.
pub const MIN_BUDGET: usize = 4 << 10;

/// What is kept of an oversized key, and of the detail, when cutting the value alone is not enough.
const KEY_AND_DETAIL_KEEP: usize = 1 << 10;

/// How long the sink waits for the broker to describe the dead-letter topic.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The dead-letter producer's `batch.size` (unless configured smaller): dead letters are rare, and
/// a batch this small fits the topic whatever limit it has from this size up, known or not (one
/// letter larger than this goes alone, within the budget).
pub const BATCH_BYTES: usize = 64 << 10;

/// Replacements of a fatal producer within one flush before the flush gives up (the letters stay
/// queued for the next flush).
const MAX_RECOVERIES_PER_FLUSH: u32 = 3;

/// Where a message was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePosition<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset of the message.
    pub offset: i64,
}

/// Errors of the dead-letter sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterError {
    /// The producer could not be created or a send failed for good.
    #[error("dead-letter producer: {0}")]
    Kafka(#[from] KafkaError),
    /// Some dead letters were not acknowledged by the broker.
    #[error("{failed} dead letters were not delivered to {topic}")]
    Undelivered {
        /// The topic.
        topic: String,
        /// How many.
        failed: u64,
    },
    /// The producer turned fatal again and again within one flush; the unacknowledged letters stay
    /// queued and are sent again on the next producer.
    #[error(
        "the dead-letter producer failed for good {recoveries} times in one flush ({code}: {reason}); {pending} letters wait"
    )]
    KeepsFailing {
        /// Replacements within the flush.
        recoveries: u32,
        /// The last fatal error.
        code: RDKafkaErrorCode,
        /// librdkafka's description of it.
        reason: String,
        /// Letters not acknowledged yet.
        pending: usize,
    },
}

/// Counts acknowledged and failed deliveries.
#[derive(Debug, Default)]
pub struct DeliveryCounts {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl DeliveryCounts {
    /// Messages the broker acknowledged.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Messages that failed for good.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// A producer context that counts deliveries (shared with whoever reports them, and with the
/// producers that replace a fatal one: clones share the counts).
#[derive(Debug, Clone, Default)]
pub struct CountingContext {
    /// The counts.
    pub counts: Arc<DeliveryCounts>,
}

impl ClientContext for CountingContext {
    fn error(&self, error: KafkaError, reason: &str) {
        // A fatal error is logged once at ERROR by whoever replaces the producer.
        tracing::warn!(error = %error, reason, "kafka producer error");
    }
}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        match result {
            Ok(_) => self.counts.delivered.fetch_add(1, Ordering::Relaxed),
            Err((error, _)) => {
                tracing::warn!(error = %error, "kafka delivery failed");
                self.counts.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Sends a record, waiting while librdkafka's queue is full (back-pressure, not an error).
pub fn send_with_backpressure<C: ProducerContext>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'_, [u8], [u8], C::DeliveryOpaque>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                record = returned;
                std::thread::sleep(Duration::from_millis(1));
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// A producer that is replaced by a new one, built from the same config, when librdkafka declares
/// it fatal (an idempotent producer whose sequence numbers the broker no longer knows refuses every
/// later send: without a replacement it would stay dead until the process restarts).
///
/// The owner calls [`RecoveringProducer::recover`] after sends and flushes; the context is cloned
/// into the new producer, so state it shares (delivery counts) carries on.
pub struct RecoveringProducer<C: ProducerContext + Clone + 'static> {
    config: ClientConfig,
    context: C,
    producer: ThreadedProducer<C>,
    name: &'static str,
    recreated: u64,
}

impl<C: ProducerContext + Clone + 'static> std::fmt::Debug for RecoveringProducer<C> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RecoveringProducer")
            .field("name", &self.name)
            .field("recreated", &self.recreated)
            .finish()
    }
}

impl<C: ProducerContext + Clone + 'static> RecoveringProducer<C> {
    /// Creates the first producer; `name` labels the logs (`deadletter`, `pricing`).
    pub fn new(
        config: ClientConfig,
        context: C,
        name: &'static str,
    ) -> Result<RecoveringProducer<C>, KafkaError> {
        let producer = config.create_with_context(context.clone())?;
        Ok(RecoveringProducer {
            config,
            context,
            producer,
            name,
            recreated: 0,
        })
    }

    /// The current producer.
    pub fn producer(&self) -> &ThreadedProducer<C> {
        &self.producer
    }

    /// Producers replaced so far.
    pub fn recreated(&self) -> u64 {
        self.recreated
    }

    /// The fatal error librdkafka raised on the current producer, if any.
    pub fn fatal_error(&self) -> Option<(RDKafkaErrorCode, String)> {
        self.producer.client().fatal_error()
    }

    /// When the current producer is fatal: logs it at ERROR, replaces it with a new one from the
    /// same config and returns the error. The dead producer is purged and dropped first, so every
    /// delivery report it owed has been served when this returns (what it did not acknowledge is
    /// the owner's to send again). `None` when the producer is healthy.
    pub fn recover(&mut self) -> Result<Option<(RDKafkaErrorCode, String)>, KafkaError> {
        let Some((code, reason)) = self.fatal_error() else {
            return Ok(None);
        };
        tracing::error!(
            producer = self.name,
            code = %code,
            reason = %reason,
            replaced = self.recreated + 1,
            "kafka producer failed for good (fatal error); replacing it with a new one"
        );
        let fresh = self.config.create_with_context(self.context.clone())?;
        // Dropping purges what it still holds and serves the delivery reports of the purge.
        drop(std::mem::replace(&mut self.producer, fresh));
        self.recreated += 1;
        Ok(Some((code, reason)))
    }
}

/// The largest record (key plus value) the sink writes, and where that limit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeBudget {
    /// The producer's `message.max.bytes`.
    pub producer_limit: usize,
    /// The topic's `max.message.bytes`, when the broker told it.
    pub topic_limit: Option<usize>,
}

impl SizeBudget {
    /// Key plus value of one record: the smaller limit less [`RECORD_MARGIN`].
    pub fn record_bytes(&self) -> usize {
        self.producer_limit
            .min(self.topic_limit.unwrap_or(usize::MAX))
            .saturating_sub(RECORD_MARGIN)
    }
}

/// The producer's `message.max.bytes` in `config` (librdkafka's default when unset or unreadable).
pub fn producer_message_limit(config: &ClientConfig) -> usize {
    config
        .get("message.max.bytes")
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
}

/// The topic's `max.message.bytes` as the broker answers DescribeConfigs; `None` when the broker
/// does not answer it, does not know the topic, or is not reachable within `timeout`.
pub fn topic_message_limit(config: &KafkaConfig, topic: &str, timeout: Duration) -> Option<usize> {
    let admin: AdminClient<DefaultClientContext> = match config.client_config().create() {
        Ok(admin) => admin,
        Err(error) => {
            tracing::warn!(error = %error, "no admin client to read the topic's max.message.bytes");
            return None;
        }
    };
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let resources = [ResourceSpecifier::Topic(topic)];
    let answer = futures_executor::block_on(admin.describe_configs(&resources, &options));
    let limit = match answer {
        Ok(results) => results
            .into_iter()
            .filter_map(Result::ok)
            .find_map(|resource| {
                resource
                    .get("max.message.bytes")
                    .and_then(|entry| entry.value.as_deref())
                    .and_then(|value| value.trim().parse().ok())
            }),
        Err(error) => {
            tracing::warn!(topic, error = %error, "the broker did not describe the topic");
            None
        }
    };
    if limit.is_none() {
        tracing::warn!(
            topic,
            "the topic's max.message.bytes is unknown; dead letters are sized by the producer's message.max.bytes"
        );
    }
    limit
}

/// A dead letter for `value` (with `key`, `reason`, `detail`) that fits `budget` bytes of record
/// key plus value, and the record key to send it with.
///
/// The size and SHA-256 of the original value are always filled. When the whole letter would not
/// fit, `original_value` keeps its first bytes; if key and detail alone leave no room, the key
/// (in the letter and as the record's key) and the detail keep their first
/// [`KEY_AND_DETAIL_KEEP`] bytes too.
pub fn fit_letter(
    source: SourcePosition<'_>,
    key: Option<&[u8]>,
    value: &[u8],
    reason: &str,
    detail: &str,
    budget: usize,
) -> (DeadLetter, Option<Vec<u8>>) {
    let key_bytes = key.unwrap_or_default();
    let mut letter = DeadLetter {
        schema_version: DEADLETTER_SCHEMA_VERSION,
        source_topic: source.topic.to_owned(),
        source_partition: source.partition,
        source_offset: source.offset,
        reason: reason.to_owned(),
        detail: detail.to_owned(),
        original_key: key_bytes.to_vec(),
        original_value: Vec::new(),
        dead_lettered_time_ms: now_ms(),
        original_value_size: value.len() as u64,
        original_value_sha256: Sha256::digest(value).to_vec(),
        original_value_truncated: false,
        original_key_size: key_bytes.len() as u64,
        original_key_truncated: false,
    };
    let mut record_key = key.map(<[u8]>::to_vec);
    if record_bytes(&letter, record_key.as_deref()) + value_field_len(value.len()) <= budget {
        letter.original_value = value.to_vec();
        return (letter, record_key);
    }
    letter.original_value_truncated = true;
    if record_bytes(&letter, record_key.as_deref()) > budget / 2 {
        // A garbage key or a huge detail: keep their first bytes, so the value keeps some room.
        if key_bytes.len() > KEY_AND_DETAIL_KEEP {
            letter.original_key.truncate(KEY_AND_DETAIL_KEEP);
            letter.original_key_truncated = true;
            record_key = Some(letter.original_key.clone());
        }
        letter.detail = cut_text(detail, KEY_AND_DETAIL_KEEP);
    }
    letter.original_value = value[..value.len().min(budget)].to_vec();
    cut_value(&mut letter, record_key.as_deref(), budget);
    (letter, record_key)
}

/// Record key plus encoded letter, in bytes.
fn record_bytes(letter: &DeadLetter, record_key: Option<&[u8]>) -> usize {
    record_key.map_or(0, <[u8]>::len) + letter.encoded_len()
}

/// What a `bytes` field of `len` bytes adds to an encoded letter (nothing when empty).
fn value_field_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        1 + prost::encoding::encoded_len_varint(len as u64) + len
    }
}

/// Cuts `original_value` to its first bytes until the record fits `budget` (marking it cut); a
/// record that fits is left alone.
fn cut_value(letter: &mut DeadLetter, record_key: Option<&[u8]>, budget: usize) {
    if record_bytes(letter, record_key) <= budget {
        return;
    }
    let value_len = letter.original_value.len();
    let fixed = record_bytes(letter, record_key) - value_field_len(value_len);
    // The value's tag and a length prefix as long as the budget's are an upper bound.
    let room = budget
        .saturating_sub(fixed)
        .saturating_sub(1 + prost::encoding::encoded_len_varint(budget as u64));
    letter.original_value.truncate(room);
    letter.original_value_truncated = true;
}

/// The first at most `max` bytes of `text`, cut at a character boundary, marked as cut.
fn cut_text(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... (cut at {end} of {} bytes)", &text[..end], text.len())
}

/// A letter not acknowledged yet.
#[derive(Debug)]
struct Pending {
    letter: DeadLetter,
    record_key: Option<Vec<u8>>,
    /// The budget it was cut to (halved when the broker refuses it for size).
    budget: usize,
    /// Why its last delivery failed (`None`: queued or in flight).
    failure: Option<KafkaError>,
}

/// What the sink and its producers' delivery callbacks share.
#[derive(Debug, Default)]
struct SinkShared {
    counts: DeliveryCounts,
    /// Letters by id until the broker acknowledged them.
    pending: Mutex<BTreeMap<usize, Pending>>,
}

impl SinkShared {
    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The dead-letter producer's context: acknowledgements drop a letter, failures mark it.
#[derive(Debug, Clone, Default)]
struct SinkContext {
    shared: Arc<SinkShared>,
}

impl ClientContext for SinkContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "dead-letter producer error");
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        let mut pending = self.shared.pending();
        match result {
            Ok(_) => {
                if pending.remove(&id).is_some() {
                    self.shared.counts.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err((error, _)) => {
                tracing::warn!(error = %error, "dead letter not delivered");
                if let Some(letter) = pending.get_mut(&id) {
                    letter.failure = Some(error.clone());
                }
            }
        }
    }
}

/// Producer of `parkcast.deadletter.v1`.
pub struct DeadLetterSink {
    producer: RecoveringProducer<SinkContext>,
    shared: Arc<SinkShared>,
    topic: String,
    producer_limit: usize,
    /// The topic's `max.message.bytes` once the broker told it; 0 while unknown.
    topic_limit: Arc<AtomicUsize>,
    next_id: usize,
    on_recreated: Option<Box<dyn Fn() + Send>>,
}

impl std::fmt::Debug for DeadLetterSink {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DeadLetterSink")
            .field("topic", &self.topic)
            .field("budget", &self.budget())
            .field("delivered", &self.shared.counts.delivered())
            .field("recreated", &self.producer.recreated())
            .finish()
    }
}

impl DeadLetterSink {
    /// A sink writing to the config's dead-letter topic. Asks the broker for the topic's
    /// `max.message.bytes` on a thread of its own (at most 5 s); until it answers, and if it does
    /// not, letters are sized by the producer's `message.max.bytes` alone.
    pub fn new(config: &KafkaConfig) -> Result<DeadLetterSink, DeadLetterError> {
        let sink = DeadLetterSink::with_topic_limit(config, None)?;
        let topic_limit = Arc::clone(&sink.topic_limit);
        let describe = config.clone();
        let spawned = std::thread::Builder::new()
            .name("parkcast-dlq-limit".to_owned())
            .spawn(move || {
                let topic = &describe.topics.deadletter;
                if let Some(limit) = topic_message_limit(&describe, topic, DESCRIBE_TIMEOUT) {
                    tracing::debug!(topic, limit, "dead-letter topic's max.message.bytes");
                    topic_limit.store(limit, Ordering::Relaxed);
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(error = %error, "could not ask for the dead-letter topic's size limit");
        }
        Ok(sink)
    }

    /// A sink with the topic's `max.message.bytes` given (`None`: unknown) instead of asked for.
    pub fn with_topic_limit(
        config: &KafkaConfig,
        topic_limit: Option<usize>,
    ) -> Result<DeadLetterSink, DeadLetterError> {
        let mut producer_config = config.producer_config();
        let producer_limit = producer_message_limit(&producer_config);
        let batch_size = producer_config
            .get("batch.size")
            .and_then(|value| value.trim().parse::<usize>().ok())
            .unwrap_or(BATCH_BYTES)
            .min(BATCH_BYTES);
        producer_config.set("batch.size", batch_size.to_string());
        let context = SinkContext::default();
        let shared = Arc::clone(&context.shared);
        let producer = RecoveringProducer::new(producer_config, context, "deadletter")?;
        Ok(DeadLetterSink {
            producer,
            shared,
            topic: config.topics.deadletter.clone(),
            producer_limit,
            topic_limit: Arc::new(AtomicUsize::new(topic_limit.unwrap_or(0))),
            next_id: 0,
            on_recreated: None,
        })
    }

    /// Calls `hook` each time a fatal producer is replaced (to count it in a metric).
    #[must_use]
    pub fn on_recreated(mut self, hook: impl Fn() + Send + 'static) -> DeadLetterSink {
        self.on_recreated = Some(Box::new(hook));
        self
    }

    /// The size limits letters are cut to now.
    pub fn budget(&self) -> SizeBudget {
        let topic_limit = self.topic_limit.load(Ordering::Relaxed);
        SizeBudget {
            producer_limit: self.producer_limit,
            topic_limit: (topic_limit > 0).then_some(topic_limit),
        }
    }

    /// Queues one dead letter (keyed like its source message, so a lot's dead letters stay in
    /// order), cut to fit the size budget. A fatal producer is replaced on the way; other errors
    /// are returned.
    pub fn send(
        &mut self,
        source: SourcePosition<'_>,
        key: Option<&[u8]>,
        value: &[u8],
        reason: &str,
        detail: &str,
    ) -> Result<(), DeadLetterError> {
        self.recover()?;
        let budget = self.budget().record_bytes();
        let (letter, record_key) = fit_letter(source, key, value, reason, detail, budget);
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.shared.pending().insert(
            id,
            Pending {
                letter,
                record_key,
                budget,
                failure: None,
            },
        );
        match self.transmit(id) {
            Ok(()) => Ok(()),
            // Replacing the producer sends every pending letter again, this one included.
            Err(_) if self.recover()? => Ok(()),
            Err(error) => {
                self.shared.pending().remove(&id);
                Err(error.into())
            }
        }
    }

    /// Hands one pending letter to the producer.
    fn transmit(&self, id: usize) -> Result<(), KafkaError> {
        let encoded = {
            let pending = self.shared.pending();
            let Some(letter) = pending.get(&id) else {
                return Ok(());
            };
            (letter.letter.encode_to_vec(), letter.record_key.clone())
        };
        let (payload, record_key) = encoded;
        let mut record = BaseRecord::with_opaque_to(&self.topic, id).payload(payload.as_slice());
        if let Some(key) = &record_key {
            record = record.key(key.as_slice());
        }
        // Not under the lock: a full queue waits for delivery reports, which take it.
        send_with_backpressure(self.producer.producer(), record)
    }

    /// Replaces a fatal producer and sends every letter it left unacknowledged again, in order;
    /// true if it did.
    fn recover(&mut self) -> Result<bool, DeadLetterError> {
        if self.producer.recover()?.is_none() {
            return Ok(false);
        }
        if let Some(hook) = &self.on_recreated {
            hook();
        }
        let ids: Vec<usize> = {
            let mut pending = self.shared.pending();
            for letter in pending.values_mut() {
                letter.failure = None;
            }
            pending.keys().copied().collect()
        };
        tracing::info!(
            letters = ids.len(),
            "sending unacknowledged dead letters again"
        );
        self.resend(&ids);
        Ok(true)
    }

    /// Hands pending letters to the producer again; one it refuses is marked failed (so the next
    /// flush reports it rather than waiting for it forever).
    fn resend(&self, ids: &[usize]) {
        for &id in ids {
            if let Err(error) = self.transmit(id) {
                tracing::warn!(error = %error, "dead letter not queued again");
                if let Some(letter) = self.shared.pending().get_mut(&id) {
                    letter.failure = Some(error);
                }
            }
        }
    }

    /// Letters the broker refused for size, cut to half their budget and sent again (down to
    /// [`MIN_BUDGET`]); true if any was.
    fn shrink_refused(&mut self) -> bool {
        let ids: Vec<usize> = {
            let mut pending = self.shared.pending();
            pending
                .iter_mut()
                .filter(|(_, letter)| letter.budget > MIN_BUDGET && refused_for_size(letter))
                .map(|(id, letter)| {
                    letter.budget = (letter.budget / 2).max(MIN_BUDGET);
                    letter.failure = None;
                    tracing::warn!(
                        budget = letter.budget,
                        source_offset = letter.letter.source_offset,
                        "the broker refused a dead letter for size; sending it again smaller"
                    );
                    // Cutting what is left again: the size and hash still describe the original.
                    cut_value(
                        &mut letter.letter,
                        letter.record_key.as_deref(),
                        letter.budget,
                    );
                    *id
                })
                .collect()
        };
        self.resend(&ids);
        !ids.is_empty()
    }

    /// Waits until every queued dead letter is acknowledged; an error if any failed since the last
    /// flush (then the source offsets must not be committed). A fatal producer is replaced and its
    /// unacknowledged letters are sent again on the new one, within the same flush.
    pub fn flush(&mut self, timeout: Duration) -> Result<(), DeadLetterError> {
        let deadline = Instant::now() + timeout;
        let mut recoveries = 0;
        loop {
            let flushed = self
                .producer
                .producer()
                .flush(deadline.saturating_duration_since(Instant::now()));
            if let Some((code, reason)) = self.producer.fatal_error() {
                recoveries += 1;
                if recoveries > MAX_RECOVERIES_PER_FLUSH {
                    return Err(DeadLetterError::KeepsFailing {
                        recoveries: recoveries - 1,
                        code,
                        reason,
                        pending: self.shared.pending().len(),
                    });
                }
                self.recover()?;
                continue;
            }
            flushed?;
            if !self.shrink_refused() {
                break;
            }
        }
        let failed = {
            let mut pending = self.shared.pending();
            let before = pending.len();
            pending.retain(|_, letter| letter.failure.is_none());
            (before - pending.len()) as u64
        };
        if failed > 0 {
            self.shared
                .counts
                .failed
                .fetch_add(failed, Ordering::Relaxed);
            return Err(DeadLetterError::Undelivered {
                topic: self.topic.clone(),
                failed,
            });
        }
        Ok(())
    }

    /// Dead letters acknowledged so far.
    pub fn delivered(&self) -> u64 {
        self.shared.counts.delivered()
    }

    /// Dead letters given up on so far (each made a flush fail).
    pub fn failed(&self) -> u64 {
        self.shared.counts.failed()
    }

    /// Fatal producers replaced so far.
    pub fn recreated(&self) -> u64 {
        self.producer.recreated()
    }
}

fn refused_for_size(letter: &Pending) -> bool {
    matches!(
        letter
            .failure
            .as_ref()
            .and_then(KafkaError::rdkafka_error_code),
        Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: SourcePosition<'static> = SourcePosition {
        topic: "parkcast.sensor.v1",
        partition: 3,
        offset: 41,
    };

    fn garbage(len: usize) -> Vec<u8> {
        (0..len).map(|at| (at % 251) as u8 | 0x80).collect()
    }

    fn record_len(letter: &DeadLetter, key: &Option<Vec<u8>>) -> usize {
        record_bytes(letter, key.as_deref())
    }

    #[test]
    fn small_letters_are_whole_and_large_ones_cut_to_the_budget_with_size_and_hash() {
        let budget = SizeBudget {
            producer_limit: DEFAULT_MESSAGE_MAX_BYTES,
            topic_limit: None,
        }
        .record_bytes();
        assert_eq!(budget, 999_488);
        for len in [
            0,
            1,
            1 << 10,
            100 << 10,
            999 << 10,
            1 << 20,
            3 << 19,
            5 << 20,
        ] {
            let value = garbage(len);
            let (letter, key) =
                fit_letter(SOURCE, Some(b"lot-7"), &value, "undecodable", "bad", budget);
            assert!(record_len(&letter, &key) <= budget, "{len} bytes");
            assert_eq!(letter.original_value_size, len as u64);
            assert_eq!(
                letter.original_value_sha256,
                Sha256::digest(&value).to_vec()
            );
            assert_eq!(letter.schema_version, DEADLETTER_SCHEMA_VERSION);
            assert_eq!(key.as_deref(), Some(&b"lot-7"[..]));
            assert_eq!(letter.original_key, b"lot-7");
            assert!(value.starts_with(&letter.original_value));
            assert_eq!(
                letter.original_value_truncated,
                letter.original_value.len() < len
            );
            if len <= 100 << 10 {
                assert!(!letter.original_value_truncated, "{len} bytes fit whole");
            } else {
                // Cut to the byte: nothing of the budget is wasted but the length prefix's slack.
                assert!(record_len(&letter, &key) + 4 >= budget, "{len} bytes");
            }
        }
    }

    #[test]
    fn a_huge_key_and_detail_are_cut_too() {
        let key = garbage(2 << 20);
        let detail = "é".repeat(600_000);
        let budget = 100_000;
        let (letter, record_key) = fit_letter(
            SOURCE,
            Some(&key),
            &garbage(10),
            "too_large",
            &detail,
            budget,
        );
        assert!(record_len(&letter, &record_key) <= budget);
        assert!(letter.original_key_truncated);
        assert_eq!(letter.original_key_size, key.len() as u64);
        assert_eq!(letter.original_key.len(), KEY_AND_DETAIL_KEEP);
        assert_eq!(record_key.as_deref(), Some(&key[..KEY_AND_DETAIL_KEEP]));
        assert!(letter.detail.len() < 2 * KEY_AND_DETAIL_KEEP);
        assert!(letter.detail.ends_with("of 1200000 bytes)"));
        assert_eq!(
            letter.original_value.len(),
            10,
            "the value still fits whole"
        );
    }

    #[test]
    fn the_budget_is_the_smaller_limit_less_the_margin() {
        let budget = SizeBudget {
            producer_limit: 1_000_000,
            topic_limit: Some(300_000),
        };
        assert_eq!(budget.record_bytes(), 300_000 - RECORD_MARGIN);
        let mut config = KafkaConfig::default();
        assert_eq!(
            producer_message_limit(&config.producer_config()),
            DEFAULT_MESSAGE_MAX_BYTES
        );
        config
            .librdkafka_options
            .insert("message.max.bytes".into(), "2000000".into());
        assert_eq!(producer_message_limit(&config.producer_config()), 2_000_000);
    }
}
