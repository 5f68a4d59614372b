//! Prometheus metrics of ingestion and serving, and the `/metrics` endpoint.
//!
//! Ingestion counters are created once, up front, for every label value (topics x outcomes, topics
//! x reasons), so the hot path increments an atomic and never looks a label set up; and every reason
//! shows up in the scrape with 0 before it first happens, which is what alert rules need. Serving's
//! labels are typed ([`Rpc`], [`CodeLabel`], [`ActivationOutcome`]), and their series too are all
//! created at registration. Labels have few values: topics, outcomes, reasons, RPCs, status codes;
//! never a lot or slot id.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::decode::Reason;
use crate::live::Applied;
use crate::quality::{Drifting, WindowQuality};

/// The input topics ingestion reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InputTopic {
    /// Sensor readings.
    Sensor,
    /// Session entries and exits.
    Session,
}

impl InputTopic {
    /// Both, in label order.
    pub const ALL: [InputTopic; 2] = [InputTopic::Sensor, InputTopic::Session];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            InputTopic::Sensor => "sensor",
            InputTopic::Session => "session",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

const OUTCOMES: [(Applied, &str); 3] = [
    (Applied::Changed, "changed"),
    (Applied::Confirmed, "confirmed"),
    (Applied::Counted, "counted"),
];

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

/// Ingestion metrics (cheap to clone: every handle shares its atomics).
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    applied: Vec<[Counter; 3]>,
    rejected: Vec<Vec<Counter>>,
    clamped: Vec<Counter>,
    /// Messages below a partition's checkpointed offset, already in the restored state.
    pub skipped_replayed: Counter,
    /// Messages of topics ingestion does not read (a misconfigured subscription).
    pub foreign_topic: Counter,
    /// Dead letters queued.
    pub deadletters: Counter,
    /// Consumer errors (broker down, fetch errors).
    pub consumer_errors: Counter,
    /// Checkpoints taken: states copied and handed to the writer (taken - written - failed = in
    /// flight; a gap that grows is a disk slower than the interval).
    pub checkpoints_taken: Counter,
    /// Checkpoints written.
    pub checkpoints: Counter,
    /// Checkpoints that failed (nothing was committed).
    pub checkpoint_failures: Counter,
    /// Time from handing a checkpoint's state to the writer to its files being durable.
    pub checkpoint_seconds: Histogram,
    /// Time the consumer holds the state to copy a checkpoint (nothing is applied or scored
    /// meanwhile).
    pub checkpoint_capture_seconds: Histogram,
    /// Partitions this replica owns.
    pub assigned_partitions: Gauge,
    /// Messages behind the high watermark, over the owned partitions.
    pub lag_messages: Gauge,
    /// Milliseconds since the broker last answered.
    pub broker_contact_age_ms: Gauge,
    /// Lots restored from checkpoints.
    pub lots_restored: Counter,
    /// Partitions restored from the changelog topic (newer than this replica's file, or no file).
    pub restored_from_changelog: Counter,
    /// Time to restore one newly assigned partition (its file and changelog record read, its
    /// lots imported).
    pub restore_seconds: Histogram,
    /// Restarts that re-read the last checkpointed message and found it unchanged.
    pub log_verified: Counter,
    /// Partitions whose log no longer held what the state was built from (truncated, or deleted and
    /// recreated): their lots were rebuilt from the log.
    pub log_regressions: Counter,
    /// Partitions whose log had moved past the checkpoint unread (retention deleted messages before
    /// they were read): their lots carry on without those events.
    pub log_gaps: Counter,
    /// Times the consumer thread ended (an error or a panic) and was started again.
    pub consumer_restarts: Counter,
    /// 1 while the consumer is down and being restarted, else 0.
    pub consumer_down: Gauge,
    /// Dead-letter producers replaced after librdkafka declared them fatal.
    pub deadletter_producer_recreated: Counter,
}

impl IngestMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> IngestMetrics {
        let events = Family::<Labels, Counter>::default();
        let rejected = Family::<Labels, Counter>::default();
        let clamped = Family::<Labels, Counter>::default();
        let metrics = IngestMetrics {
            applied: InputTopic::ALL
                .iter()
                .map(|topic| {
                    OUTCOMES.map(|(_, outcome)| {
                        events
                            .get_or_create(&labels(&[
                                ("topic", topic.label()),
                                ("outcome", outcome),
                            ]))
                            .clone()
                    })
                })
                .collect(),
            rejected: InputTopic::ALL
                .iter()
                .map(|topic| {
                    Reason::ALL
                        .iter()
                        .map(|reason| {
                            rejected
                                .get_or_create(&labels(&[
                                    ("topic", topic.label()),
                                    ("reason", reason.code()),
                                ]))
                                .clone()
                        })
                        .collect()
                })
                .collect(),
            clamped: InputTopic::ALL
                .iter()
                .map(|topic| {
                    clamped
                        .get_or_create(&labels(&[("topic", topic.label())]))
                        .clone()
                })
                .collect(),
            skipped_replayed: Counter::default(),
            foreign_topic: Counter::default(),
            deadletters: Counter::default(),
            consumer_errors: Counter::default(),
            checkpoints_taken: Counter::default(),
            checkpoints: Counter::default(),
            checkpoint_failures: Counter::default(),
            checkpoint_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            checkpoint_capture_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            assigned_partitions: Gauge::default(),
            lag_messages: Gauge::default(),
            broker_contact_age_ms: Gauge::default(),
            lots_restored: Counter::default(),
            restored_from_changelog: Counter::default(),
            restore_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 18)),
            log_verified: Counter::default(),
            log_regressions: Counter::default(),
            log_gaps: Counter::default(),
            consumer_restarts: Counter::default(),
            consumer_down: Gauge::default(),
            deadletter_producer_recreated: Counter::default(),
        };
        let ingest = registry.sub_registry_with_prefix("parkcast_ingest");
        ingest.register(
            "events",
            "Messages applied to live state, by topic and outcome",
            events,
        );
        ingest.register(
            "rejected",
            "Messages dead-lettered, by topic and reason",
            rejected,
        );
        ingest.register(
            "clamped",
            "Event times ahead of the clock within the allowed skew, clamped to the clock",
            clamped,
        );
        let counters = [
            (
                "skipped_replayed",
                "Messages skipped because the restored checkpoint already holds them",
                &metrics.skipped_replayed,
            ),
            (
                "foreign_topic",
                "Messages of a topic ingestion does not read",
                &metrics.foreign_topic,
            ),
            (
                "deadletters",
                "Dead letters queued to the dead-letter topic",
                &metrics.deadletters,
            ),
            (
                "consumer_errors",
                "Consumer errors (broker unreachable, fetch failures)",
                &metrics.consumer_errors,
            ),
            (
                "checkpoints_taken",
                "Checkpoint states copied and handed to the writer",
                &metrics.checkpoints_taken,
            ),
            (
                "checkpoints",
                "Checkpoints written (state snapshot, then offsets committed)",
                &metrics.checkpoints,
            ),
            (
                "checkpoint_failures",
                "Checkpoints that failed; offsets stay uncommitted",
                &metrics.checkpoint_failures,
            ),
            (
                "lots_restored",
                "Lots whose state was restored from a checkpoint",
                &metrics.lots_restored,
            ),
            (
                "restored_from_changelog",
                "Partitions restored from the changelog topic (no file here, or an older one): state that moved between machines",
                &metrics.restored_from_changelog,
            ),
            (
                "log_verified",
                "Restarts whose re-read of the last checkpointed message found it unchanged",
                &metrics.log_verified,
            ),
            (
                "log_regressions",
                "Partitions whose log no longer held what the state was built from (truncated or recreated), rebuilt from the log",
                &metrics.log_regressions,
            ),
            (
                "log_gaps",
                "Partitions whose log had moved past the checkpoint unread (messages deleted by retention)",
                &metrics.log_gaps,
            ),
            (
                "consumer_restarts",
                "Times the consumer thread ended on an error or a panic and was started again",
                &metrics.consumer_restarts,
            ),
            (
                "deadletter_producer_recreated",
                "Dead-letter producers replaced after a fatal error (a broker that lost acknowledged writes); unacknowledged letters were sent again",
                &metrics.deadletter_producer_recreated,
            ),
        ];
        for (name, help, counter) in counters {
            ingest.register(name, help, counter.clone());
        }
        ingest.register_with_unit(
            "checkpoint_duration",
            "Time to write the owned partitions' checkpoint files (serialized and synced, off the state lock)",
            Unit::Seconds,
            metrics.checkpoint_seconds.clone(),
        );
        ingest.register_with_unit(
            "restore_duration",
            "Time to restore one newly assigned partition from its checkpoint (file or changelog)",
            Unit::Seconds,
            metrics.restore_seconds.clone(),
        );
        ingest.register_with_unit(
            "checkpoint_capture_duration",
            "Time the consumer holds the live state to copy a checkpoint (no event is applied meanwhile)",
            Unit::Seconds,
            metrics.checkpoint_capture_seconds.clone(),
        );
        let gauges = [
            (
                "assigned_partitions",
                "Partitions of the sensor topic this replica owns",
                &metrics.assigned_partitions,
            ),
            (
                "lag_messages",
                "Messages behind the high watermark over the owned partitions",
                &metrics.lag_messages,
            ),
            (
                "broker_contact_age_milliseconds",
                "Time since the broker last answered; state is stale when it grows",
                &metrics.broker_contact_age_ms,
            ),
            (
                "consumer_down",
                "1 while the consumer thread is down and being restarted (answers are stale), else 0",
                &metrics.consumer_down,
            ),
        ];
        for (name, help, gauge) in gauges {
            ingest.register(name, help, gauge.clone());
        }
        metrics
    }

    /// Counts an applied message.
    pub fn applied(&self, topic: InputTopic, applied: Applied) {
        let outcome = OUTCOMES
            .iter()
            .position(|(candidate, _)| *candidate == applied)
            .expect("every outcome should have a counter");
        self.applied[topic.index()][outcome].inc();
    }

    /// Counts a rejected message.
    pub fn rejected(&self, topic: InputTopic, reason: Reason) {
        let position = Reason::ALL
            .iter()
            .position(|candidate| *candidate == reason)
            .expect("every reason should have a counter");
        self.rejected[topic.index()][position].inc();
    }

    /// A hook for [`parkcast_kafka::DeadLetterSink::on_recreated`]: counts replaced dead-letter
    /// producers.
    pub fn deadletter_hook(&self) -> impl Fn() + Send + 'static {
        let counter = self.deadletter_producer_recreated.clone();
        move || {
            counter.inc();
        }
    }

    /// Counts a clamped event time.
    pub fn clamped(&self, topic: InputTopic) {
        self.clamped[topic.index()].inc();
    }

    /// Applied messages of a topic and outcome so far.
    pub fn applied_count(&self, topic: InputTopic, applied: Applied) -> u64 {
        OUTCOMES
            .iter()
            .position(|(candidate, _)| *candidate == applied)
            .map_or(0, |outcome| self.applied[topic.index()][outcome].get())
    }

    /// Rejected messages of a topic and reason so far.
    pub fn rejected_count(&self, topic: InputTopic, reason: Reason) -> u64 {
        Reason::ALL
            .iter()
            .position(|candidate| *candidate == reason)
            .map_or(0, |position| self.rejected[topic.index()][position].get())
    }

    /// Every message handled so far (applied, rejected or skipped as already restored).
    pub fn handled(&self) -> u64 {
        let applied: u64 = self.applied.iter().flatten().map(Counter::get).sum();
        let rejected: u64 = self.rejected.iter().flatten().map(Counter::get).sum();
        applied + rejected + self.skipped_replayed.get()
    }
}

/// The RPCs timed: the `rpc` label, the method's name as the proto spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum Rpc {
    /// `Availability.GetAvailability`.
    GetAvailability,
    /// `Availability.BatchGetAvailability`.
    BatchGetAvailability,
    /// `Availability.SearchNearby`.
    SearchNearby,
    /// `Availability.WatchAvailability` (timed to the stream's opening).
    WatchAvailability,
    /// `Models.ListModels`.
    ListModels,
    /// `Models.DescribeModel`.
    DescribeModel,
    /// `Models.ActivateModel`.
    ActivateModel,
    /// `Models.GetLiveQuality`.
    GetLiveQuality,
    /// `Models.ShadowModel`.
    ShadowModel,
    /// `Models.ClearShadow`.
    ClearShadow,
    /// `Availability.ListReplicas`.
    ListReplicas,
    /// `Availability.GetPricingBands`.
    GetPricingBands,
}

impl Rpc {
    /// Every RPC, in label order.
    pub const ALL: [Rpc; 12] = [
        Rpc::GetAvailability,
        Rpc::BatchGetAvailability,
        Rpc::SearchNearby,
        Rpc::WatchAvailability,
        Rpc::ListModels,
        Rpc::DescribeModel,
        Rpc::ActivateModel,
        Rpc::GetLiveQuality,
        Rpc::ShadowModel,
        Rpc::ClearShadow,
        Rpc::ListReplicas,
        Rpc::GetPricingBands,
    ];
}

/// The `code` label of a request: the status codes this server answers with, and `other` for the
/// rest (tonic's own refusals: a deadline, a cancelled call, an unknown method).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeLabel {
    /// `OK`.
    Ok,
    /// `INVALID_ARGUMENT`.
    InvalidArgument,
    /// `NOT_FOUND`.
    NotFound,
    /// `UNAVAILABLE`.
    Unavailable,
    /// `RESOURCE_EXHAUSTED`.
    ResourceExhausted,
    /// `UNAUTHENTICATED`.
    Unauthenticated,
    /// `FAILED_PRECONDITION`.
    FailedPrecondition,
    /// `INTERNAL`.
    Internal,
    /// Any other code.
    Other,
}

impl CodeLabel {
    /// Every code label, in label order.
    pub const ALL: [CodeLabel; 9] = [
        CodeLabel::Ok,
        CodeLabel::InvalidArgument,
        CodeLabel::NotFound,
        CodeLabel::Unavailable,
        CodeLabel::ResourceExhausted,
        CodeLabel::Unauthenticated,
        CodeLabel::FailedPrecondition,
        CodeLabel::Internal,
        CodeLabel::Other,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            CodeLabel::Ok => "ok",
            CodeLabel::InvalidArgument => "invalid_argument",
            CodeLabel::NotFound => "not_found",
            CodeLabel::Unavailable => "unavailable",
            CodeLabel::ResourceExhausted => "resource_exhausted",
            CodeLabel::Unauthenticated => "unauthenticated",
            CodeLabel::FailedPrecondition => "failed_precondition",
            CodeLabel::Internal => "internal",
            CodeLabel::Other => "other",
        }
    }
}

impl From<tonic::Code> for CodeLabel {
    fn from(code: tonic::Code) -> Self {
        match code {
            tonic::Code::Ok => CodeLabel::Ok,
            tonic::Code::InvalidArgument => CodeLabel::InvalidArgument,
            tonic::Code::NotFound => CodeLabel::NotFound,
            tonic::Code::Unavailable => CodeLabel::Unavailable,
            tonic::Code::ResourceExhausted => CodeLabel::ResourceExhausted,
            tonic::Code::Unauthenticated => CodeLabel::Unauthenticated,
            tonic::Code::FailedPrecondition => CodeLabel::FailedPrecondition,
            tonic::Code::Internal => CodeLabel::Internal,
            // Codes the services do not answer with ([`crate::status`]) share one label: each
            // label value is a series in every scrape.
            tonic::Code::Cancelled
            | tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::AlreadyExists
            | tonic::Code::PermissionDenied
            | tonic::Code::Aborted
            | tonic::Code::OutOfRange
            | tonic::Code::Unimplemented
            | tonic::Code::DataLoss => CodeLabel::Other,
        }
    }
}

impl EncodeLabelValue for CodeLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.label())
    }
}

/// How a model activation ended: the `outcome` label of `parkcast_serving_model_activations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActivationOutcome {
    /// The version serves.
    Activated,
    /// The registry or the decoder refused the files (a damaged manifest or model file, size or
    /// checksum mismatch, a file that is no model).
    Corrupt,
    /// Trained on another feature schema than this build computes.
    Schema,
    /// Forecasts on another grid step than the server samples.
    Step,
    /// The smoke prediction failed.
    Smoke,
    /// No such model line or version (or a name that cannot be one).
    NotFound,
    /// The server could not do its part (the registry unreadable: permissions, a failing disk):
    /// nothing says the version is bad, so it is not counted as `corrupt`; its status is
    /// `INTERNAL`.
    ServerError,
}

impl ActivationOutcome {
    /// Every outcome, in label order.
    pub const ALL: [ActivationOutcome; 7] = [
        ActivationOutcome::Activated,
        ActivationOutcome::Corrupt,
        ActivationOutcome::Schema,
        ActivationOutcome::Step,
        ActivationOutcome::Smoke,
        ActivationOutcome::NotFound,
        ActivationOutcome::ServerError,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            ActivationOutcome::Activated => "activated",
            ActivationOutcome::Corrupt => "corrupt",
            ActivationOutcome::Schema => "schema",
            ActivationOutcome::Step => "step",
            ActivationOutcome::Smoke => "smoke",
            ActivationOutcome::NotFound => "not_found",
            ActivationOutcome::ServerError => "server_error",
        }
    }
}

impl EncodeLabelValue for ActivationOutcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.label())
    }
}

/// How a request forwarded to another replica ended: the `outcome` label of
/// `parkcast_replicas_forwarded_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum ForwardOutcome {
    /// The owner answered.
    Answered,
    /// The owner answered the one retry (after a failure or a move).
    AnsweredOnRetry,
    /// The owner refused the request (its status passed on).
    Refused,
    /// No answer after the retry: the client got `UNAVAILABLE`.
    Failed,
    /// The lot came to this replica between the attempts: answered here.
    CameHere,
}

impl ForwardOutcome {
    /// The owner answered attempt `attempt` (0: the first, 1: the retry).
    pub fn answered(attempt: usize) -> ForwardOutcome {
        if attempt == 0 {
            ForwardOutcome::Answered
        } else {
            ForwardOutcome::AnsweredOnRetry
        }
    }

    /// Every outcome, in label order.
    pub const ALL: [ForwardOutcome; 5] = [
        ForwardOutcome::Answered,
        ForwardOutcome::AnsweredOnRetry,
        ForwardOutcome::Refused,
        ForwardOutcome::Failed,
        ForwardOutcome::CameHere,
    ];
}

/// The labels of `parkcast_replicas_forwarded_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ForwardLabels {
    rpc: Rpc,
    outcome: ForwardOutcome,
}

/// Metrics of the replicas of a group ([`crate::replicas`]): forwarded requests, their latency,
/// the replicas alive and the lots held here (cheap to clone). Owned partitions are ingestion's
/// `parkcast_ingest_assigned_partitions`.
#[derive(Debug, Clone)]
pub struct ReplicaMetrics {
    forwarded: Family<ForwardLabels, Counter>,
    /// Time of one forwarded call to another replica (each attempt).
    pub forward_duration: Histogram,
    /// Replicas of the group heard from within the expiry, this one included.
    pub replicas_alive: Gauge,
    /// Lots this replica holds state for.
    pub lots_held: Gauge,
    /// Advertisements written (changes and heartbeats).
    pub adverts_published: Counter,
    /// Messages of this replica's forecast inputs queued for the inputs topic.
    pub inputs_published: Counter,
    /// Messages of forecast inputs that could not be queued or delivered.
    pub inputs_lost: Counter,
    /// Messages of the other replicas' forecast inputs applied to this one's warm copies.
    pub standby_applied: Counter,
    /// Messages on the inputs topic that could not be applied (undecodable, or a lot not served).
    pub standby_refused: Counter,
}

impl ReplicaMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> ReplicaMetrics {
        let forwarded = Family::<ForwardLabels, Counter>::default();
        for rpc in [
            Rpc::GetAvailability,
            Rpc::BatchGetAvailability,
            Rpc::SearchNearby,
        ] {
            for outcome in ForwardOutcome::ALL {
                drop(forwarded.get_or_create(&ForwardLabels { rpc, outcome }));
            }
        }
        let metrics = ReplicaMetrics {
            forwarded: forwarded.clone(),
            // 100 us .. 1.6 s.
            forward_duration: Histogram::new(exponential_buckets(0.000_1, 2.0, 15)),
            replicas_alive: Gauge::default(),
            lots_held: Gauge::default(),
            adverts_published: Counter::default(),
            inputs_published: Counter::default(),
            inputs_lost: Counter::default(),
            standby_applied: Counter::default(),
            standby_refused: Counter::default(),
        };
        let replicas = registry.sub_registry_with_prefix("parkcast_replicas");
        replicas.register(
            "forwarded_requests",
            "Requests (or a batch's lots, or a search's owners) forwarded to the replica owning the lot, by RPC and outcome",
            forwarded,
        );
        replicas.register_with_unit(
            "forward_duration",
            "Time of one forwarded call to another replica",
            Unit::Seconds,
            metrics.forward_duration.clone(),
        );
        replicas.register(
            "alive",
            "Replicas of the group heard from within replicas.expire_after_ms, this one included",
            metrics.replicas_alive.clone(),
        );
        replicas.register(
            "lots_held",
            "Lots this replica holds the live state of",
            metrics.lots_held.clone(),
        );
        replicas.register(
            "adverts_published",
            "Advertisements of this replica's ownership written to the replicas topic",
            metrics.adverts_published.clone(),
        );
        let standby = [
            (
                "inputs_published",
                "Messages of this replica's forecast inputs (one lot's, one scoring round's) queued for the group's inputs topic",
                &metrics.inputs_published,
            ),
            (
                "inputs_lost",
                "Messages of this replica's forecast inputs that could not be queued or delivered (the other replicas' copies of those lots miss them)",
                &metrics.inputs_lost,
            ),
            (
                "standby_applied",
                "Messages of the other replicas' forecast inputs applied to this replica's warm copies of their lots",
                &metrics.standby_applied,
            ),
            (
                "standby_refused",
                "Messages on the inputs topic that could not be applied (undecodable, or a lot this replica does not serve)",
                &metrics.standby_refused,
            ),
        ];
        for (name, help, counter) in standby {
            replicas.register(name, help, counter.clone());
        }
        metrics
    }

    /// Counts `count` forwarded requests of `rpc` that ended in `outcome`.
    pub fn forwarded(&self, rpc: Rpc, outcome: ForwardOutcome, count: u64) {
        self.forwarded
            .get_or_create(&ForwardLabels { rpc, outcome })
            .inc_by(count);
    }

    /// Forwarded requests of `rpc` that ended in `outcome` so far.
    pub fn forwarded_count(&self, rpc: Rpc, outcome: ForwardOutcome) -> u64 {
        self.forwarded
            .get_or_create(&ForwardLabels { rpc, outcome })
            .get()
    }
}

/// The labels of `parkcast_grpc_request_duration_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RpcLabels {
    rpc: Rpc,
}

/// The labels of `parkcast_grpc_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    rpc: Rpc,
    code: CodeLabel,
}

/// The labels of `parkcast_serving_model_activations_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ActivationLabels {
    outcome: ActivationOutcome,
}

/// The labels of the live-accuracy gauges: the model (`active`, or `shadow` for the candidate
/// scored beside it), one of its horizons and a window ([`crate::quality::WINDOWS`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QualityLabels {
    model: String,
    horizon_minutes: String,
    window: String,
}

/// A gauge of a real number.
type RealGauge = Gauge<f64, AtomicU64>;

/// Serving metrics: requests, models, forecasts, the pricing feed (cheap to clone).
///
/// Every series of the labelled families is created at registration, so each shows up with 0
/// before it first happens; a request then looks its series up in the family (a read lock and a
/// hash, next to a whole gRPC call).
#[derive(Debug, Clone)]
pub struct ServingMetrics {
    latency: Family<RpcLabels, Histogram>,
    requests: Family<RequestLabels, Counter>,
    activations: Family<ActivationLabels, Counter>,
    /// The active model's version (0: none).
    pub model_version: Gauge,
    /// Age of the oldest lot forecast origin, seconds, by the serving clock.
    pub forecast_age_seconds: Gauge,
    /// `WatchAvailability` streams open.
    pub watch_streams: Gauge,
    /// Time of one scoring round.
    pub scoring_round_seconds: Histogram,
    /// Pricing messages delivered.
    pub pricing_messages: Counter,
    /// Pricing messages the broker refused or lost.
    pub pricing_failures: Counter,
    /// Pricing producers replaced after librdkafka declared them fatal.
    pub pricing_producer_recreated: Counter,
    /// Session inputs dropped as replays of what another replica already published.
    pub replayed_session_inputs: Counter,
    live_mae: Family<QualityLabels, RealGauge>,
    live_coverage: Family<QualityLabels, RealGauge>,
    live_pairs: Family<QualityLabels, Gauge>,
    /// The shadow's series last published, removed when the shadow is cleared.
    shadow_labels: Arc<std::sync::Mutex<Vec<QualityLabels>>>,
    /// Lots drifting at some horizon ([`crate::quality`]).
    pub drifting_lots: Gauge,
    /// Horizons at which the city as a whole drifts.
    pub drifting_city_horizons: Gauge,
}

impl ServingMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> ServingMetrics {
        let latency = Family::<RpcLabels, Histogram>::new_with_constructor(|| {
            // 25 us .. 0.4 s.
            Histogram::new(exponential_buckets(0.000_025, 2.0, 15))
        });
        let requests = Family::<RequestLabels, Counter>::default();
        let activations = Family::<ActivationLabels, Counter>::default();
        // Created now, so that every series is scraped with 0 before it first happens.
        for rpc in Rpc::ALL {
            drop(latency.get_or_create(&RpcLabels { rpc }));
            for code in CodeLabel::ALL {
                drop(requests.get_or_create(&RequestLabels { rpc, code }));
            }
        }
        for outcome in ActivationOutcome::ALL {
            drop(activations.get_or_create(&ActivationLabels { outcome }));
        }
        let metrics = ServingMetrics {
            latency: latency.clone(),
            requests: requests.clone(),
            activations: activations.clone(),
            model_version: Gauge::default(),
            forecast_age_seconds: Gauge::default(),
            watch_streams: Gauge::default(),
            scoring_round_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 14)),
            pricing_messages: Counter::default(),
            pricing_failures: Counter::default(),
            pricing_producer_recreated: Counter::default(),
            replayed_session_inputs: Counter::default(),
            live_mae: Family::default(),
            live_coverage: Family::default(),
            live_pairs: Family::default(),
            shadow_labels: Arc::default(),
            drifting_lots: Gauge::default(),
            drifting_city_horizons: Gauge::default(),
        };
        let grpc = registry.sub_registry_with_prefix("parkcast_grpc");
        grpc.register_with_unit(
            "request_duration",
            "Time to answer a request, by RPC (a watch: to open it)",
            Unit::Seconds,
            latency,
        );
        grpc.register(
            "requests",
            "Requests answered, by RPC and status code",
            requests,
        );
        let serving = registry.sub_registry_with_prefix("parkcast_serving");
        serving.register(
            "model_activations",
            "Model activations, by outcome (refusals keep the old model serving)",
            activations,
        );
        let gauges = [
            (
                "model_version",
                "Version of the active model (0: none)",
                &metrics.model_version,
            ),
            (
                "forecast_age_seconds",
                "Age of the oldest lot forecast's origin by the serving clock",
                &metrics.forecast_age_seconds,
            ),
            (
                "watch_streams",
                "WatchAvailability streams open (at most limits.max_watch_streams)",
                &metrics.watch_streams,
            ),
        ];
        for (name, help, gauge) in gauges {
            serving.register(name, help, gauge.clone());
        }
        serving.register_with_unit(
            "scoring_round_duration",
            "Time of one scoring round (take changes, re-forecast, publish answers)",
            Unit::Seconds,
            metrics.scoring_round_seconds.clone(),
        );
        let counters = [
            (
                "pricing_messages",
                "Pricing-feed messages delivered to the forecast topic",
                &metrics.pricing_messages,
            ),
            (
                "pricing_failures",
                "Pricing-feed messages the broker refused or lost",
                &metrics.pricing_failures,
            ),
            (
                "pricing_producer_recreated",
                "Pricing-feed producers replaced after a fatal error (a broker that lost acknowledged writes); every lot's bands were published again",
                &metrics.pricing_producer_recreated,
            ),
            (
                "replayed_session_inputs",
                "Session entries and exits not fed to the forecasts twice: an owner's replay after a handover of what the old owner had already published to the inputs topic (replicas)",
                &metrics.replayed_session_inputs,
            ),
        ];
        for (name, help, counter) in counters {
            serving.register(name, help, counter.clone());
        }
        let quality = registry.sub_registry_with_prefix("parkcast_live");
        quality.register(
            "mae_rate",
            "MAE of the occupancy rate of the model's forecasts scored on live actuals, city-wide, by model (active, shadow), horizon and window (hour, day)",
            metrics.live_mae.clone(),
        );
        quality.register(
            "coverage_80",
            "Share of live actuals inside the forecasts' 80% intervals, by horizon and window",
            metrics.live_coverage.clone(),
        );
        quality.register(
            "scored_pairs",
            "Forecasts scored on live actuals, by horizon and window",
            metrics.live_pairs.clone(),
        );
        quality.register(
            "drifting_lots",
            "Lots whose live MAE stayed above the backtest's by quality.drift_factor for quality.drift_hours hours, at some horizon",
            metrics.drifting_lots.clone(),
        );
        quality.register(
            "drifting_city_horizons",
            "Horizons at which the city's live MAE stayed above the backtest's (the drift alarm)",
            metrics.drifting_city_horizons.clone(),
        );
        metrics
    }

    /// Publishes the live accuracy and the drift found ([`crate::scoring::Scoring::quality`]),
    /// and the candidate's in shadow (its series go when it does).
    pub fn quality(
        &self,
        summary: &[WindowQuality],
        drifting: &[Drifting],
        shadow: Option<&[WindowQuality]>,
    ) {
        self.publish_quality("active", summary);
        let mut shadow_labels = self
            .shadow_labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for labels in shadow_labels.drain(..) {
            self.live_mae.remove(&labels);
            self.live_coverage.remove(&labels);
            self.live_pairs.remove(&labels);
        }
        if let Some(shadow) = shadow {
            *shadow_labels = self.publish_quality("shadow", shadow);
        }
        let mut lots: Vec<usize> = drifting.iter().filter_map(|drift| drift.lot).collect();
        lots.sort_unstable();
        lots.dedup();
        self.drifting_lots.set(lots.len() as i64);
        self.drifting_city_horizons
            .set(drifting.iter().filter(|drift| drift.lot.is_none()).count() as i64);
    }

    /// Sets the live-accuracy gauges of one model; returns their labels.
    fn publish_quality(&self, model: &str, summary: &[WindowQuality]) -> Vec<QualityLabels> {
        summary
            .iter()
            .map(|quality| {
                let labels = QualityLabels {
                    model: model.to_owned(),
                    horizon_minutes: quality.horizon_minutes.to_string(),
                    window: quality.window.to_owned(),
                };
                self.live_mae.get_or_create(&labels).set(quality.city.mae());
                self.live_coverage
                    .get_or_create(&labels)
                    .set(quality.city.coverage());
                self.live_pairs
                    .get_or_create(&labels)
                    .set(i64::try_from(quality.city.pairs).unwrap_or(i64::MAX));
                labels
            })
            .collect()
    }

    /// Records one request: its RPC, duration and status code.
    pub fn request(&self, rpc: Rpc, seconds: f64, code: tonic::Code) {
        self.latency
            .get_or_create(&RpcLabels { rpc })
            .observe(seconds);
        let code = CodeLabel::from(code);
        self.requests
            .get_or_create(&RequestLabels { rpc, code })
            .inc();
    }

    /// Requests of an RPC answered with a code so far.
    pub fn request_count(&self, rpc: Rpc, code: tonic::Code) -> u64 {
        let code = CodeLabel::from(code);
        self.requests
            .get(&RequestLabels { rpc, code })
            .map_or(0, |counter| counter.get())
    }

    /// Counts an activation outcome.
    pub fn activation(&self, outcome: ActivationOutcome) {
        self.activations
            .get_or_create(&ActivationLabels { outcome })
            .inc();
    }

    /// Activations of an outcome so far.
    pub fn activation_count(&self, outcome: ActivationOutcome) -> u64 {
        self.activations
            .get(&ActivationLabels { outcome })
            .map_or(0, |counter| counter.get())
    }
}

/// The registry as Prometheus text.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    encode(&mut text, registry).expect("writing to a String should not fail");
    text
}

/// Serves `GET /metrics` on `address` until the task is dropped; returns the bound address (port 0
/// picks a free one).
pub async fn serve(
    address: SocketAddr,
    registry: Arc<Mutex<Registry>>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_with(address, registry, axum::Router::new()).await
}

/// [`serve`] with more routes beside `/metrics` (the server's REST face).
pub async fn serve_with(
    address: SocketAddr,
    registry: Arc<Mutex<Registry>>,
    routes: axum::Router,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let app = routes.route(
        "/metrics",
        axum::routing::get(move || {
            let registry = Arc::clone(&registry);
            async move {
                let text = {
                    let registry = registry
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    render(&registry)
                };
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    );
    // TCP_NODELAY on every accepted connection, as on the gRPC port (`Server::start` says why):
    // an answer written in more than one piece must not wait for the client's ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY on an HTTP connection");
        }
    });
    let task = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(error = %error, "metrics endpoint stopped");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_exported_before_it_happens() {
        let mut registry = Registry::default();
        let metrics = IngestMetrics::register(&mut registry);
        metrics.rejected(InputTopic::Sensor, Reason::FarFuture);
        metrics.applied(InputTopic::Session, Applied::Counted);
        let text = render(&registry);
        assert!(
            text.contains(
                "parkcast_ingest_rejected_total{topic=\"sensor\",reason=\"far_future\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "parkcast_ingest_rejected_total{topic=\"session\",reason=\"malformed\"} 0"
            )
        );
        assert_eq!(
            metrics.applied_count(InputTopic::Session, Applied::Counted),
            1
        );
        assert_eq!(metrics.handled(), 2);
    }

    #[test]
    fn serving_label_values_are_the_exported_names() {
        let mut registry = Registry::default();
        let metrics = ServingMetrics::register(&mut registry);
        metrics.request(Rpc::ActivateModel, 0.01, tonic::Code::PermissionDenied);
        metrics.activation(ActivationOutcome::NotFound);
        let text = render(&registry);
        // Spelled out rather than taken from the enums: dashboards read these values.
        let rpcs = [
            "GetAvailability",
            "BatchGetAvailability",
            "SearchNearby",
            "WatchAvailability",
            "ListModels",
            "DescribeModel",
            "ActivateModel",
        ];
        let codes = [
            "ok",
            "invalid_argument",
            "not_found",
            "unavailable",
            "resource_exhausted",
            "unauthenticated",
            "failed_precondition",
            "internal",
            "other",
        ];
        for rpc in rpcs {
            let duration = format!("parkcast_grpc_request_duration_seconds_count{{rpc=\"{rpc}\"}}");
            assert!(text.contains(&duration), "{duration}\n{text}");
            for code in codes {
                let series =
                    format!("parkcast_grpc_requests_total{{rpc=\"{rpc}\",code=\"{code}\"}}");
                assert!(text.contains(&series), "{series}\n{text}");
            }
        }
        for outcome in [
            "activated",
            "corrupt",
            "schema",
            "step",
            "smoke",
            "not_found",
            "server_error",
        ] {
            let series =
                format!("parkcast_serving_model_activations_total{{outcome=\"{outcome}\"}}");
            assert!(text.contains(&series), "{series}\n{text}");
        }
        assert!(
            text.contains("parkcast_grpc_requests_total{rpc=\"ActivateModel\",code=\"other\"} 1")
        );
        assert!(text.contains("parkcast_serving_model_activations_total{outcome=\"not_found\"} 1"));
        assert_eq!(
            metrics.request_count(Rpc::ActivateModel, tonic::Code::Aborted),
            1,
            "codes the services do not answer with share `other`"
        );
        assert_eq!(metrics.activation_count(ActivationOutcome::NotFound), 1);
    }
}
