//! Replicas of one consumer group answering for each other: who owns which lot, and forwarding a
//! request to the owner.
//!
//! Kafka already splits the input partitions (hence the lots: producers key events by lot id)
//! among the replicas of the serving group. What a replica lacks is the others' ownership, so this
//! module adds it the way Kafka Streams' interactive queries do, with Kafka as the only
//! coordinator:
//!
//! - **Advertisements.** Every replica writes a [`ReplicaInfo`] (its gRPC address, the partitions
//!   it owns with the time each was assigned, and the lots it has seen on each) to a compacted
//!   topic (`replicas.topic`, one partition, key `<group id>/<replica id>`): whenever its
//!   ownership changes (a rebalance, a lot's first event) and every `heartbeat_interval_ms`; a
//!   tombstone when it stops cleanly. Each replica reads the whole topic from the beginning and
//!   keeps the newest advertisement per replica of its own group. (librdkafka offers no custom
//!   assignor or member user data to carry this in the group protocol itself, so it rides a topic;
//!   compaction keeps the topic as small as the group.)
//! - **The owner of a lot** is the replica with the newest claim on it: of two replicas listing a
//!   lot (the old owner's advertisement not yet replaced after a rebalance, or a replica killed
//!   before it could say it left) the later assignment wins. Replicas silent for longer than
//!   `expire_after_ms` are not asked. Assignment and heartbeat times come from each replica's
//!   clock, so the rule assumes clocks agree to well within those intervals (as NTP keeps them).
//! - **Routing** ([`Router::route`]) needs no lock of ingestion: a lot this replica holds
//!   ([`Holdings`]) or that nobody has claimed (no events seen anywhere: every replica's answer is
//!   the same) is answered here; a lot another replica claims is forwarded there; a lot whose
//!   newest claim is this replica's own but which it no longer holds is moving.
//! - **Forwarding** ([`Router::call`]) sends the client's own request to the owner with a deadline
//!   (`forward_timeout_ms`) and the metadata [`FORWARDED_BY`], so the owner answers from what it
//!   holds and never forwards again. A failure that may be a move (the owner unreachable, timed
//!   out, or answering that it no longer owns the lot) is retried once after `retry_delay_ms` with
//!   a fresh look at the ownership; a second failure is `UNAVAILABLE` naming the owner. A refusal
//!   from the owner (a bad request) is passed on as it is.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use parkcast_kafka::{KafkaConfig, now_ms};
use parkcast_proto::v1::availability_client::AvailabilityClient;
use parkcast_proto::v1::{ListReplicasResponse, ReplicaInfo, ReplicaPartition};
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::background::Background;
use crate::metrics::{ForwardOutcome, ReplicaMetrics, Rpc};
use crate::ownership::Holdings;
use crate::status::ServiceError;
use crate::topology::{LotIndex, TopologyIndex};

/// The metadata key of a forwarded request: the id of the replica that forwarded it.
pub const FORWARDED_BY: &str = "x-parkcast-forwarded-by";

/// The replicas topic's default name.
pub const DEFAULT_TOPIC: &str = "parkcast.replicas.v1";

/// The largest advertisement the topic is created to hold: a replica's lot ids (a 10,000-lot
/// city on one replica is about 200 KB).
const MAX_ADVERT_BYTES: usize = 8 << 20;

/// Settings of the replicas of one consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicasConfig {
    /// Advertise this replica's ownership and forward requests for lots it does not own. Off, a
    /// server answers every lot from its own state (right for a single server).
    pub enabled: bool,
    /// The compacted topic of the advertisements (shared by groups: records are keyed by group).
    pub topic: String,
    /// This replica's id, unique in the group (empty: its advertised address).
    pub replica_id: String,
    /// `host:port` other replicas reach this one's gRPC port at (empty: the bound gRPC address,
    /// which must then not be a wildcard such as `0.0.0.0`).
    pub advertise_addr: String,
    /// How often the advertisement is written when nothing changes, ms.
    pub heartbeat_interval_ms: u64,
    /// A replica not heard from for this long is not asked, ms.
    pub expire_after_ms: u64,
    /// The deadline of one forwarded request, ms.
    pub forward_timeout_ms: u64,
    /// The pause before the one retry of a failed forward, ms.
    pub retry_delay_ms: u64,
    /// Keep every lot's forecast inputs warm: publish this replica's to `inputs_topic` and apply
    /// the others' ([`crate::standby`]). Off, a replica taking a lot over forecasts it from the
    /// warehouse's history until its own inputs refill.
    pub standby: bool,
    /// The group's topic of forecast inputs (empty: `<group_id>.inputs`).
    pub inputs_topic: String,
}

impl Default for ReplicasConfig {
    fn default() -> Self {
        ReplicasConfig {
            enabled: false,
            topic: DEFAULT_TOPIC.to_owned(),
            replica_id: String::new(),
            advertise_addr: String::new(),
            heartbeat_interval_ms: 2_000,
            expire_after_ms: 30_000,
            forward_timeout_ms: 1_000,
            retry_delay_ms: 200,
            standby: true,
            inputs_topic: String::new(),
        }
    }
}

/// What is wrong with a replicas config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicasConfigError {
    /// A topic name Kafka would refuse.
    #[error("replicas.{0} {1:?} is not a legal Kafka topic name (1-249 of [a-zA-Z0-9._-])")]
    BadTopic(&'static str, String),
    /// A zero interval.
    #[error("replicas.{0} must be positive")]
    Zero(&'static str),
    /// An expiry that a heartbeat or two late would cross.
    #[error("replicas.expire_after_ms must be at least three heartbeats ({min} ms)")]
    ShortExpiry {
        /// Three heartbeats.
        min: u64,
    },
    /// No address to advertise.
    #[error(
        "replicas.advertise_addr is needed: the gRPC port listens on {0}, which other replicas cannot dial"
    )]
    NoAdvertiseAddr(SocketAddr),
    /// An address that is no `host:port`.
    #[error("replicas.advertise_addr {0:?} is not host:port")]
    BadAdvertiseAddr(String),
}

impl ReplicasConfig {
    /// Checks the settings without touching the network.
    pub fn validate(&self) -> Result<(), ReplicasConfigError> {
        let legal = parkcast_kafka::legal_topic_name;
        if !legal(&self.topic) {
            return Err(ReplicasConfigError::BadTopic("topic", self.topic.clone()));
        }
        if !self.inputs_topic.is_empty() && !legal(&self.inputs_topic) {
            return Err(ReplicasConfigError::BadTopic(
                "inputs_topic",
                self.inputs_topic.clone(),
            ));
        }
        for (name, value) in [
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("forward_timeout_ms", self.forward_timeout_ms),
        ] {
            if value == 0 {
                return Err(ReplicasConfigError::Zero(name));
            }
        }
        let min = self.heartbeat_interval_ms.saturating_mul(3);
        if self.expire_after_ms < min {
            return Err(ReplicasConfigError::ShortExpiry { min });
        }
        let address = self.advertise_addr.trim();
        if !address.is_empty()
            && address
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        {
            return Err(ReplicasConfigError::BadAdvertiseAddr(address.to_owned()));
        }
        Ok(())
    }

    /// The topic of the group's forecast inputs.
    pub fn inputs_topic(&self, group_id: &str) -> String {
        if self.inputs_topic.is_empty() {
            format!("{group_id}.inputs")
        } else {
            self.inputs_topic.clone()
        }
    }

    /// This replica's id and address, once its gRPC port is bound at `bound`.
    pub fn identity(
        &self,
        group_id: &str,
        bound: SocketAddr,
    ) -> Result<Identity, ReplicasConfigError> {
        let address = match self.advertise_addr.trim() {
            "" if bound.ip().is_unspecified() => {
                return Err(ReplicasConfigError::NoAdvertiseAddr(bound));
            }
            "" => bound.to_string(),
            address => address.to_owned(),
        };
        let replica_id = match self.replica_id.trim() {
            "" => address.clone(),
            id => id.to_owned(),
        };
        Ok(Identity {
            replica_id,
            address,
            group_id: group_id.to_owned(),
        })
    }
}

/// Who this replica is to the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Unique in the group.
    pub replica_id: String,
    /// `host:port` of its gRPC port.
    pub address: String,
    /// The consumer group.
    pub group_id: String,
}

impl Identity {
    /// The key of its advertisement on the replicas topic.
    fn key(&self) -> String {
        format!("{}/{}", self.group_id, self.replica_id)
    }
}

/// Another replica, as requests reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its id.
    pub replica_id: String,
    /// `host:port` of its gRPC port.
    pub address: String,
}

/// Where a request for a lot goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Answered here: this replica holds the lot, or nobody has claimed it.
    Local,
    /// Forwarded to the owner.
    Remote(Peer),
    /// This replica's claim is the newest, but the lot has left it: a rebalance in progress.
    Moving,
}

/// The owner of every lot, from the advertisements.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// Index into `peers` per lot ([`Routes::NONE`]: unclaimed, [`Routes::MOVING`]: between
    /// owners).
    owner: Vec<u32>,
    peers: Vec<Peer>,
}

/// The owner of a lot, as the advertisements say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'routes> {
    /// No replica has claimed the lot (no events seen anywhere).
    Nobody,
    /// The replica with the newest claim.
    Replica(&'routes Peer),
    /// Its last owner let it go (or went silent) and no replica has claimed it since.
    Moving,
}

impl Routes {
    const NONE: u32 = u32::MAX;
    const MOVING: u32 = u32::MAX - 1;

    /// Who owns `lot`.
    pub fn owner(&self, lot: LotIndex) -> Owner<'_> {
        match self.owner.get(lot as usize).copied() {
            None | Some(Self::NONE) => Owner::Nobody,
            Some(Self::MOVING) => Owner::Moving,
            Some(index) => self
                .peers
                .get(index as usize)
                .map_or(Owner::Nobody, Owner::Replica),
        }
    }
}

/// The newest advertisement of every replica of one group, and the lots recently let go.
#[derive(Debug, Clone, Default)]
pub struct ReplicaTable {
    adverts: BTreeMap<String, ReplicaInfo>,
    /// Lots a replica stopped listing (a rebalance took their partition, or it left), and when:
    /// until another claims them they are moving, not unclaimed (whose answer would be "no event
    /// received", which is not true of them).
    released: HashMap<String, i64>,
    /// Lots of replicas forgotten after a long silence and not claimed since: moving until a
    /// replica claims them (bounded by the topology, where the adverts of replicas that never
    /// come back would not be).
    orphaned: std::collections::HashSet<String>,
}

/// An advertisement silent for this many expiries is dropped from the table (its lots stay moving
/// until claimed).
const FORGET_AFTER_EXPIRIES: i64 = 10;

impl ReplicaTable {
    /// Takes a replica's advertisement (replacing its earlier one) heard at `now_ms`.
    pub fn apply(&mut self, info: ReplicaInfo, now_ms: i64) {
        if let Some(earlier) = self.adverts.remove(&info.replica_id) {
            let kept: std::collections::HashSet<&str> = info
                .partitions
                .iter()
                .flat_map(|partition| partition.lot_ids.iter().map(String::as_str))
                .collect();
            for lot_id in earlier
                .partitions
                .into_iter()
                .flat_map(|partition| partition.lot_ids)
            {
                if !kept.contains(lot_id.as_str()) {
                    self.released.insert(lot_id, now_ms);
                }
            }
        }
        self.adverts.insert(info.replica_id.clone(), info);
    }

    /// Forgets a replica that left cleanly at `now_ms` (its lots are moving until claimed).
    pub fn remove(&mut self, replica_id: &str, now_ms: i64) {
        if let Some(earlier) = self.adverts.remove(replica_id) {
            for lot_id in earlier
                .partitions
                .into_iter()
                .flat_map(|partition| partition.lot_ids)
            {
                self.released.insert(lot_id, now_ms);
            }
        }
    }

    fn alive(info: &ReplicaInfo, now_ms: i64, expire_after_ms: i64) -> bool {
        now_ms.saturating_sub(info.updated_ms) <= expire_after_ms
    }

    /// The owner of every lot of `topology`: of the live replicas claiming a lot, the one assigned
    /// its partition last (ties: the larger replica id, so every replica picks the same). A lot no
    /// live replica claims is moving if its last owner went silent (whether or not it is still in
    /// the table) or let it go within the expiry; nobody's only if no replica ever claimed it:
    /// answering a lot whose owner died as if no event had ever come would be a false answer.
    pub fn routes(
        &mut self,
        topology: &TopologyIndex,
        now_ms: i64,
        expire_after_ms: i64,
    ) -> Routes {
        let forget_ms = expire_after_ms.saturating_mul(FORGET_AFTER_EXPIRIES);
        let orphaned = &mut self.orphaned;
        self.adverts.retain(|_, info| {
            let keep = now_ms.saturating_sub(info.updated_ms) <= forget_ms;
            if !keep {
                orphaned.extend(
                    info.partitions
                        .iter()
                        .flat_map(|partition| partition.lot_ids.iter().cloned()),
                );
            }
            keep
        });
        self.released
            .retain(|_, at| now_ms.saturating_sub(*at) <= expire_after_ms);
        let mut owner = vec![Routes::NONE; topology.lots().len()];
        for lot_id in self.released.keys().chain(&self.orphaned) {
            if let Some(lot) = topology.lot(lot_id) {
                owner[lot as usize] = Routes::MOVING;
            }
        }
        for info in self.adverts.values() {
            if Self::alive(info, now_ms, expire_after_ms) {
                continue;
            }
            for lot_id in info
                .partitions
                .iter()
                .flat_map(|partition| &partition.lot_ids)
            {
                if let Some(lot) = topology.lot(lot_id) {
                    owner[lot as usize] = Routes::MOVING;
                }
            }
        }
        let mut claimed_at = vec![i64::MIN; topology.lots().len()];
        let mut peers = Vec::new();
        for info in self.adverts.values() {
            if !Self::alive(info, now_ms, expire_after_ms) {
                continue;
            }
            let Ok(index) = u32::try_from(peers.len()) else {
                break;
            };
            peers.push(Peer {
                replica_id: info.replica_id.clone(),
                address: info.grpc_address.clone(),
            });
            for partition in &info.partitions {
                for lot_id in &partition.lot_ids {
                    let Some(lot) = topology.lot(lot_id) else {
                        continue;
                    };
                    let lot = lot as usize;
                    // Adverts iterate in replica-id order, so `>=` lets the larger id win a tie.
                    if partition.assigned_ms >= claimed_at[lot] {
                        claimed_at[lot] = partition.assigned_ms;
                        owner[lot] = index;
                    }
                }
            }
        }
        // A lot claimed again is no orphan any more.
        self.orphaned.retain(|lot_id| {
            topology
                .lot(lot_id)
                .is_none_or(|lot| owner[lot as usize] == Routes::MOVING)
        });
        Routes { owner, peers }
    }

    /// Every replica heard from, marked alive or not.
    pub fn list(&self, now_ms: i64, expire_after_ms: i64) -> Vec<ReplicaInfo> {
        self.adverts
            .values()
            .map(|info| ReplicaInfo {
                alive: Self::alive(info, now_ms, expire_after_ms),
                ..info.clone()
            })
            .collect()
    }
}

/// This replica's advertisement of `holdings`.
pub fn advertisement(
    identity: &Identity,
    holdings: &Holdings,
    topology: &TopologyIndex,
    now_ms: i64,
) -> ReplicaInfo {
    ReplicaInfo {
        replica_id: identity.replica_id.clone(),
        group_id: identity.group_id.clone(),
        grpc_address: identity.address.clone(),
        partitions: holdings
            .snapshot()
            .into_iter()
            .map(|held| ReplicaPartition {
                partition: held.partition,
                assigned_ms: held.assigned_ms,
                lot_ids: held
                    .lots
                    .iter()
                    .map(|lot| topology.lots()[*lot as usize].lot_id.clone())
                    .collect(),
            })
            .collect(),
        updated_ms: now_ms,
        alive: true,
    }
}

/// The owner `peer` of lot `lot_id` did not answer (`reason`): the error a client gets after the
/// retry.
pub fn unreachable(lot_id: &str, peer: &Peer, reason: String) -> ServiceError {
    ServiceError::OwnerUnreachable {
        lot_id: lot_id.to_owned(),
        replica: peer.replica_id.clone(),
        address: peer.address.clone(),
        reason,
    }
}

/// Routes requests to the owners of their lots and forwards them (cheap to share: one per server).
#[derive(Debug)]
pub struct Router {
    identity: Identity,
    holdings: Arc<Holdings>,
    routes: RwLock<Arc<Routes>>,
    listed: RwLock<Vec<ReplicaInfo>>,
    channels: Mutex<HashMap<String, Channel>>,
    forward_timeout: Duration,
    retry_delay: Duration,
    metrics: Option<ReplicaMetrics>,
}

impl Router {
    /// A router for this replica; nothing is known of the others until [`Router::install`].
    pub fn new(
        identity: Identity,
        holdings: Arc<Holdings>,
        config: &ReplicasConfig,
        metrics: Option<ReplicaMetrics>,
    ) -> Router {
        Router {
            identity,
            holdings,
            routes: RwLock::new(Arc::new(Routes::default())),
            listed: RwLock::new(Vec::new()),
            channels: Mutex::new(HashMap::new()),
            forward_timeout: Duration::from_millis(config.forward_timeout_ms),
            retry_delay: Duration::from_millis(config.retry_delay_ms),
            metrics,
        }
    }

    /// This replica's id.
    pub fn replica_id(&self) -> &str {
        &self.identity.replica_id
    }

    /// Whether this replica holds the lot (a forwarded request is answered only for those).
    pub fn holds(&self, lot: LotIndex) -> bool {
        self.holdings.holds(lot)
    }

    /// Where a request for `lot` goes now.
    pub fn route(&self, lot: LotIndex) -> Route {
        if self.holdings.holds(lot) {
            return Route::Local;
        }
        let routes = Arc::clone(&self.routes.read().unwrap_or_else(PoisonError::into_inner));
        match routes.owner(lot) {
            Owner::Nobody => Route::Local,
            Owner::Moving => Route::Moving,
            Owner::Replica(peer) if peer.replica_id == self.identity.replica_id => Route::Moving,
            Owner::Replica(peer) => Route::Remote(peer.clone()),
        }
    }

    /// Replaces the ownership picture (the advertiser, on every change).
    pub fn install(&self, routes: Routes, listed: Vec<ReplicaInfo>) {
        if let Some(metrics) = &self.metrics {
            let alive = listed.iter().filter(|info| info.alive).count();
            metrics
                .replicas_alive
                .set(i64::try_from(alive).unwrap_or(i64::MAX));
        }
        *self.routes.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(routes);
        *self.listed.write().unwrap_or_else(PoisonError::into_inner) = listed;
    }

    /// `ListReplicas`' answer.
    pub fn replicas(&self) -> ListReplicasResponse {
        ListReplicasResponse {
            this_replica: self.identity.replica_id.clone(),
            replicas: self
                .listed
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// A client of a peer, over one lazily connected channel per address (HTTP/2 multiplexes
    /// every forwarded request over it). Unary calls carry their own deadline; a watch stream has
    /// none.
    pub fn client(&self, peer: &Peer) -> Result<AvailabilityClient<Channel>, String> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(channel) = channels.get(&peer.address) {
            return Ok(AvailabilityClient::new(channel.clone()));
        }
        let channel = Endpoint::from_shared(format!("http://{}", peer.address))
            .map_err(|error| format!("bad address {:?}: {error}", peer.address))?
            .connect_timeout(self.forward_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(peer.address.clone(), channel.clone());
        Ok(AvailabilityClient::new(channel))
    }

    /// Sends `request` about `lot` (named `lot_id` in errors) to its owner with `send`, retried
    /// once after a fresh look at the ownership if the owner fails or the lot is moving. `None`:
    /// the lot is this replica's to answer (it was, or it came here meanwhile).
    pub async fn call<Req, Resp, Call, Fut>(
        &self,
        rpc: Rpc,
        lot: LotIndex,
        lot_id: &str,
        request: &Req,
        call: Call,
    ) -> Result<Option<Resp>, ServiceError>
    where
        Req: Clone,
        Call: Fn(AvailabilityClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let moving = || ServiceError::Moving {
            lot_id: lot_id.to_owned(),
        };
        let mut failure = moving();
        for attempt in 0..2 {
            if attempt > 0 {
                tokio::time::sleep(self.retry_delay).await;
            }
            let peer = match self.route(lot) {
                Route::Local if attempt == 0 => return Ok(None),
                Route::Local => {
                    self.count(rpc, ForwardOutcome::CameHere, None);
                    return Ok(None);
                }
                Route::Moving => {
                    failure = moving();
                    continue;
                }
                Route::Remote(peer) => peer,
            };
            match self.send_to(&peer, request, &call).await {
                Ok(answer) => {
                    let outcome = ForwardOutcome::answered(attempt);
                    self.count(rpc, outcome, None);
                    return Ok(Some(answer));
                }
                Err(Ok(reason)) => failure = unreachable(lot_id, &peer, reason),
                Err(Err(refusal)) => {
                    self.count(rpc, ForwardOutcome::Refused, None);
                    return Err(ServiceError::Peer(refusal));
                }
            }
        }
        self.count(rpc, ForwardOutcome::Failed, None);
        Err(failure)
    }

    /// One forwarded request to `peer`: its answer, `Err(Ok(reason))` for a failure worth a retry
    /// (unreachable, too slow, the lot moved), `Err(Err(status))` for the owner's refusal.
    pub async fn send_to<Req, Resp, Call, Fut>(
        &self,
        peer: &Peer,
        request: &Req,
        call: &Call,
    ) -> Sent<Resp>
    where
        Req: Clone,
        Call: Fn(AvailabilityClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let client = self.client(peer).map_err(Ok)?;
        let mut forwarded = self.forwarded(request.clone());
        forwarded.set_timeout(self.forward_timeout);
        let started = Instant::now();
        let result = tokio::time::timeout(self.forward_timeout, call(client, forwarded)).await;
        if let Some(metrics) = &self.metrics {
            metrics
                .forward_duration
                .observe(started.elapsed().as_secs_f64());
        }
        match result {
            Ok(Ok(answer)) => Ok(answer.into_inner()),
            Ok(Err(status)) if retryable(status.code()) => Err(Ok(format!(
                "{}: {}",
                crate::metrics::CodeLabel::from(status.code()).label(),
                status.message()
            ))),
            Ok(Err(status)) => Err(Err(status)),
            Err(_) => Err(Ok(format!(
                "no answer within {} ms",
                self.forward_timeout.as_millis()
            ))),
        }
    }

    /// `message` as a request forwarded by this replica (marked with [`FORWARDED_BY`]).
    pub fn forwarded<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Ok(value) = self.identity.replica_id.parse() {
            request.metadata_mut().insert(FORWARDED_BY, value);
        }
        request
    }

    /// Counts a forward's outcome (`count` requests of a batch at once).
    pub fn count(&self, rpc: Rpc, outcome: ForwardOutcome, count: Option<u64>) {
        if let Some(metrics) = &self.metrics {
            metrics.forwarded(rpc, outcome, count.unwrap_or(1));
        }
    }

    /// The retry delay, for callers that retry a scattered request themselves.
    pub fn retry_delay(&self) -> Duration {
        self.retry_delay
    }
}

/// How one forwarded call ended: the answer, `Err(Ok(reason))` for a failure worth a retry
/// (unreachable, too slow, the lot moved), `Err(Err(status))` for the owner's refusal.
pub type Sent<R> = Result<R, Result<String, Status>>;

/// One round of a request scattered over the owners of its items' lots ([`Router::scatter`]).
#[derive(Debug)]
pub struct Round<I, R> {
    /// Items whose lot is answered here (held here, or claimed by nobody).
    pub here: Vec<I>,
    /// Items whose lot is moving between replicas.
    pub moving: Vec<I>,
    /// Each owner's share of the items and how its call ended.
    pub shares: Vec<(Peer, Vec<I>, Sent<R>)>,
}

/// Items placed by where their lots are answered ([`Router::place`]).
#[derive(Debug)]
pub struct Placement<I> {
    /// Answered here (held here, or claimed by nobody).
    pub here: Vec<I>,
    /// Moving between replicas.
    pub moving: Vec<I>,
    /// Each owner's share, by replica id.
    pub owners: BTreeMap<String, (Peer, Vec<I>)>,
}

impl Router {
    /// Places `items` (by the lot `lot_of` names) here, with their owners, or as moving.
    pub fn place<I>(&self, items: Vec<I>, lot_of: impl Fn(&I) -> LotIndex) -> Placement<I> {
        let mut placement = Placement {
            here: Vec::new(),
            moving: Vec::new(),
            owners: BTreeMap::new(),
        };
        for item in items {
            match self.route(lot_of(&item)) {
                Route::Local => placement.here.push(item),
                Route::Moving => placement.moving.push(item),
                Route::Remote(peer) => placement
                    .owners
                    .entry(peer.replica_id.clone())
                    .or_insert_with(|| (peer, Vec::new()))
                    .1
                    .push(item),
            }
        }
        placement
    }

    /// Places `items` and sends each owner the request `request_for` makes of its share, with
    /// `call` ([`Router::send_to`]), all owners at once; returns what is to be answered here, what
    /// is moving, and each share's outcome. The callers' retry: a second round over the failed
    /// shares and the moving items.
    pub async fn scatter<I, Req, Resp, Call, Fut>(
        self: &Arc<Self>,
        items: Vec<I>,
        lot_of: impl Fn(&I) -> LotIndex,
        request_for: impl Fn(&[I]) -> Req,
        call: Call,
    ) -> Result<Round<I, Resp>, tokio::task::JoinError>
    where
        I: Send + 'static,
        Req: Clone + Send + Sync + 'static,
        Resp: Send + 'static,
        Call: Fn(AvailabilityClient<Channel>, Request<Req>) -> Fut + Copy + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<Resp>, Status>> + Send,
    {
        let Placement {
            here,
            moving,
            owners,
        } = self.place(items, lot_of);
        let mut calls = tokio::task::JoinSet::new();
        for (peer, share) in owners.into_values() {
            let (router, request) = (Arc::clone(self), request_for(&share));
            calls.spawn(async move {
                let sent = router.send_to(&peer, &request, &call).await;
                (peer, share, sent)
            });
        }
        let mut shares = Vec::new();
        while let Some(done) = calls.join_next().await {
            shares.push(done?);
        }
        Ok(Round {
            here,
            moving,
            shares,
        })
    }
}

/// Codes that say the owner is gone, slow or no longer the owner, rather than that the request
/// is wrong.
fn retryable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
            | tonic::Code::Aborted
    )
}

/// Whether a request came forwarded from another replica (it is then answered from what this
/// replica holds, never forwarded again).
pub fn forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_BY)
}

/// The advertiser: writes this replica's advertisement and reads everyone's, on its own thread.
pub struct Advertiser {
    thread: Background,
}

impl std::fmt::Debug for Advertiser {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Advertiser").finish_non_exhaustive()
    }
}

/// Errors of starting the advertiser.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdvertiserError {
    /// The topic could not be created or read.
    #[error("replicas topic {topic:?}: {source}")]
    Topic {
        /// The topic.
        topic: String,
        /// Why.
        source: parkcast_kafka::TopicError,
    },
    /// A Kafka client could not be created.
    #[error("replicas topic: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The thread could not start.
    #[error("could not start the replicas advertiser: {0}")]
    Thread(std::io::Error),
}

impl Advertiser {
    /// Creates the topic if needed, then advertises `router`'s replica and keeps `router`'s
    /// picture of the others current until [`Advertiser::stop`].
    pub fn start(
        config: &ReplicasConfig,
        kafka: &KafkaConfig,
        topology: Arc<TopologyIndex>,
        holdings: Arc<Holdings>,
        router: Arc<Router>,
    ) -> Result<Advertiser, AdvertiserError> {
        let topic = config.topic.clone();
        parkcast_kafka::create_compacted_topic(
            kafka,
            &topic,
            1,
            MAX_ADVERT_BYTES,
            Duration::from_secs(10),
        )
        .map_err(|source| AdvertiserError::Topic {
            topic: topic.clone(),
            source,
        })?;
        let mut producer_config = kafka.producer_config();
        producer_config.set("message.max.bytes", MAX_ADVERT_BYTES.to_string());
        let producer: ThreadedProducer<DefaultProducerContext> = producer_config.create()?;
        // Read whole from the beginning on every start.
        let mut consumer_config = kafka.reader_config(&format!(
            "{}.replicas.{}",
            router.identity.group_id, router.identity.replica_id
        ));
        consumer_config
            .set("fetch.max.bytes", (MAX_ADVERT_BYTES * 2).to_string())
            .set("max.partition.fetch.bytes", MAX_ADVERT_BYTES.to_string())
            .set(
                "receive.message.max.bytes",
                (MAX_ADVERT_BYTES * 2 + 512).to_string(),
            );
        let consumer: BaseConsumer = consumer_config.create()?;
        let partitions =
            parkcast_kafka::partition_count(&consumer, &topic, Duration::from_secs(10)).map_err(
                |source| AdvertiserError::Topic {
                    topic: topic.clone(),
                    source,
                },
            )?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment
                .add_partition_offset(&topic, partition, Offset::Beginning)
                .map_err(AdvertiserError::Kafka)?;
        }
        consumer.assign(&assignment)?;
        let mut worker = Worker {
            topic,
            heartbeat: Duration::from_millis(config.heartbeat_interval_ms),
            expire_after_ms: i64::try_from(config.expire_after_ms).unwrap_or(i64::MAX),
            topology,
            holdings,
            router,
            producer,
            consumer,
            table: ReplicaTable::default(),
        };
        // The others' advertisements are read before the gRPC port opens: with an empty table every
        // lot would look unclaimed and be answered here, with no data.
        worker.catch_up(partitions, CATCH_UP);
        let thread = Background::spawn("parkcast-replicas", move |stop| worker.run(stop))
            .map_err(AdvertiserError::Thread)?;
        Ok(Advertiser { thread })
    }

    /// Writes the tombstone (this replica leaves) and stops.
    pub fn stop(self) {
        self.thread.stop();
    }
}

/// The advertiser thread's state.
struct Worker {
    topic: String,
    heartbeat: Duration,
    expire_after_ms: i64,
    topology: Arc<TopologyIndex>,
    holdings: Arc<Holdings>,
    router: Arc<Router>,
    producer: ThreadedProducer<DefaultProducerContext>,
    consumer: BaseConsumer,
    table: ReplicaTable,
}

/// How often the thread looks at the holdings and the topic.
const TICK: Duration = Duration::from_millis(50);

/// How long start-up waits to read the advertisements already on the topic.
const CATCH_UP: Duration = Duration::from_secs(10);

impl Worker {
    /// Reads the topic up to its current end (or until `limit`), then installs the routes.
    fn catch_up(&mut self, partitions: i32, limit: Duration) {
        let (table, identity) = (&mut self.table, &self.router.identity);
        let read = parkcast_kafka::read_to_end(
            &self.consumer,
            &self.topic,
            partitions,
            limit,
            |message| {
                take(table, identity, message.key(), message.payload());
            },
        );
        match read {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "the replicas topic was not read to its end in time; routes fill in as it is"
            ),
            Err(error) => tracing::warn!(
                error = %error,
                "reading the replicas topic failed; routes fill in as it is read"
            ),
        }
        self.install();
    }

    fn run(&mut self, stop: &AtomicBool) {
        let key = self.router.identity.key();
        let mut published: Option<u64> = None;
        let mut last_sent = Instant::now();
        let mut last_install = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let generation = self.holdings.generation();
            if published != Some(generation) || last_sent.elapsed() >= self.heartbeat {
                let info = advertisement(
                    &self.router.identity,
                    &self.holdings,
                    &self.topology,
                    now_ms(),
                );
                let payload = info.encode_to_vec();
                match self
                    .producer
                    .send(BaseRecord::to(&self.topic).key(&key).payload(&payload))
                {
                    Ok(()) => {
                        published = Some(generation);
                        last_sent = Instant::now();
                        if let Some(metrics) = &self.router.metrics {
                            metrics.adverts_published.inc();
                        }
                    }
                    Err((error, _)) => {
                        tracing::warn!(error = %error, "could not queue the replica advertisement");
                    }
                }
                // Its own advertisement counts at once, not after the round trip.
                self.table.apply(info, now_ms());
                self.install();
                last_install = Instant::now();
            }
            let mut changed = false;
            while let Some(message) =
                self.consumer
                    .poll(if changed { Duration::ZERO } else { TICK })
            {
                match message {
                    Ok(message) => {
                        changed |= take(
                            &mut self.table,
                            &self.router.identity,
                            message.key(),
                            message.payload(),
                        );
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "reading the replicas topic failed");
                        break;
                    }
                }
            }
            // Expiry moves with time alone: look again every heartbeat.
            if changed || last_install.elapsed() >= self.heartbeat {
                self.install();
                last_install = Instant::now();
            }
        }
        if let Err((error, _)) = self
            .producer
            .send(BaseRecord::<String, [u8]>::to(&self.topic).key(&key))
        {
            tracing::warn!(error = %error, "could not queue the replica's tombstone");
        }
        if let Err(error) = self.producer.flush(Duration::from_secs(5)) {
            tracing::warn!(error = %error, "the replica's tombstone was not delivered");
        }
    }

    fn install(&mut self) {
        let now = now_ms();
        self.router.install(
            self.table.routes(&self.topology, now, self.expire_after_ms),
            self.table.list(now, self.expire_after_ms),
        );
        if let Some(metrics) = &self.router.metrics {
            let held: usize = self
                .holdings
                .snapshot()
                .iter()
                .map(|held| held.lots.len())
                .sum();
            metrics
                .lots_held
                .set(i64::try_from(held).unwrap_or(i64::MAX));
        }
    }
}

/// Takes one record of the replicas topic into `table`; whether it changed it. Records of other
/// groups, this replica's own (applied when sent) and undecodable ones are skipped.
fn take(
    table: &mut ReplicaTable,
    identity: &Identity,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
) -> bool {
    let Some(key) = key.and_then(|key| std::str::from_utf8(key).ok()) else {
        return false;
    };
    let Some((group, replica_id)) = key.split_once('/') else {
        return false;
    };
    if group != identity.group_id || replica_id == identity.replica_id {
        return false;
    }
    match payload {
        None => {
            table.remove(replica_id, now_ms());
            true
        }
        Some(bytes) => match ReplicaInfo::decode(bytes) {
            Ok(info) if info.replica_id == replica_id => {
                table.apply(info, now_ms());
                true
            }
            Ok(_) => false,
            Err(error) => {
                tracing::warn!(error = %error, key, "undecodable replica advertisement; ignored");
                false
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> TopologyIndex {
        TopologyIndex::new(["a", "b", "c"].map(|lot| (lot.to_owned(), vec![format!("{lot}1")])))
            .expect("valid")
    }

    fn advert(id: &str, updated_ms: i64, partitions: &[(i32, i64, &[&str])]) -> ReplicaInfo {
        ReplicaInfo {
            replica_id: id.to_owned(),
            group_id: "g".to_owned(),
            grpc_address: format!("{id}:50051"),
            partitions: partitions
                .iter()
                .map(|(partition, assigned_ms, lots)| ReplicaPartition {
                    partition: *partition,
                    assigned_ms: *assigned_ms,
                    lot_ids: lots.iter().map(|lot| (*lot).to_owned()).collect(),
                })
                .collect(),
            updated_ms,
            alive: true,
        }
    }

    fn owner(routes: &Routes, lot: LotIndex) -> Option<&str> {
        match routes.owner(lot) {
            Owner::Replica(peer) => Some(peer.replica_id.as_str()),
            Owner::Moving => Some("moving"),
            Owner::Nobody => None,
        }
    }

    #[test]
    fn the_newest_claim_owns_a_lot_and_silent_replicas_are_not_asked() {
        let topology = topology();
        let mut table = ReplicaTable::default();
        table.apply(advert("r1", 10_000, &[(0, 1_000, &["a", "b"])]), 10_000);
        table.apply(
            advert("r2", 10_000, &[(1, 2_000, &["c", "nosuch"])]),
            10_000,
        );
        let routes = table.routes(&topology, 10_000, 30_000);
        assert_eq!(
            [0, 1, 2].map(|lot| owner(&routes, lot)),
            [Some("r1"), Some("r1"), Some("r2")]
        );
        // r3 took partition 0 over after a rebalance; r1 still lists it (killed before it could
        // say otherwise): the later assignment wins.
        table.apply(advert("r3", 12_000, &[(0, 11_000, &["a"])]), 12_000);
        let routes = table.routes(&topology, 12_000, 30_000);
        assert_eq!(owner(&routes, 0), Some("r3"));
        assert_eq!(owner(&routes, 1), Some("r1"), "r3 has not seen b yet");
        // r1 silent past the expiry: its unclaimed lot is moving (its owner may be dead, its
        // successor not there yet), not nobody's.
        table.apply(advert("r2", 45_000, &[(1, 2_000, &["c"])]), 45_000);
        table.apply(advert("r3", 45_000, &[(0, 11_000, &["a"])]), 45_000);
        let routes = table.routes(&topology, 45_000, 30_000);
        assert_eq!(
            [0, 1, 2].map(|lot| owner(&routes, lot)),
            [Some("r3"), Some("moving"), Some("r2")]
        );
        let listed = table.list(45_000, 30_000);
        assert_eq!(
            listed
                .iter()
                .map(|info| (info.replica_id.as_str(), info.alive))
                .collect::<Vec<_>>(),
            [("r1", false), ("r2", true), ("r3", true)]
        );
        // Silent for ten expiries: forgotten, its lot still moving until someone claims it.
        table.apply(advert("r2", 400_000, &[(1, 2_000, &["c"])]), 400_000);
        table.apply(advert("r3", 400_000, &[(0, 11_000, &["a"])]), 400_000);
        let routes = table.routes(&topology, 400_000, 30_000);
        assert_eq!(owner(&routes, 1), Some("moving"));
        assert_eq!(table.list(400_000, 30_000).len(), 2);
        table.apply(advert("r2", 401_000, &[(1, 2_000, &["b", "c"])]), 401_000);
        assert_eq!(
            owner(&table.routes(&topology, 401_000, 30_000), 1),
            Some("r2")
        );
        table.apply(advert("r2", 402_000, &[(1, 2_000, &["c"])]), 402_000);
        assert_eq!(
            owner(&table.routes(&topology, 433_000, 30_000), 1),
            None,
            "let go cleanly and not claimed for an expiry: nobody's"
        );
        // A clean leave is a tombstone: its lots are moving until claimed, for one expiry.
        table.remove("r3", 400_000);
        assert_eq!(
            owner(&table.routes(&topology, 400_000, 30_000), 0),
            Some("moving")
        );
        assert_eq!(owner(&table.routes(&topology, 431_000, 30_000), 0), None);
    }

    #[test]
    fn a_lot_let_go_in_a_rebalance_is_moving_until_claimed() {
        let topology = topology();
        let mut table = ReplicaTable::default();
        table.apply(advert("r1", 1_000, &[(0, 500, &["a", "b"])]), 1_000);
        // The rebalance revoked partition 0 from r1; r2 has it but not yet lot b's first event.
        table.apply(advert("r1", 2_000, &[]), 2_000);
        table.apply(advert("r2", 2_100, &[(0, 2_050, &["a"])]), 2_100);
        let routes = table.routes(&topology, 2_200, 30_000);
        assert_eq!(owner(&routes, 0), Some("r2"));
        assert_eq!(owner(&routes, 1), Some("moving"));
        table.apply(advert("r2", 2_300, &[(0, 2_050, &["a", "b"])]), 2_300);
        assert_eq!(
            owner(&table.routes(&topology, 2_300, 30_000), 1),
            Some("r2")
        );
    }

    #[test]
    fn equal_claims_resolve_the_same_way_everywhere() {
        let topology = topology();
        let mut one = ReplicaTable::default();
        let mut other = ReplicaTable::default();
        let (first, second) = (
            advert("r1", 5_000, &[(0, 1_000, &["a"])]),
            advert("r2", 5_000, &[(0, 1_000, &["a"])]),
        );
        one.apply(first.clone(), 5_000);
        one.apply(second.clone(), 5_000);
        other.apply(second, 5_000);
        other.apply(first, 5_000);
        assert_eq!(owner(&one.routes(&topology, 5_000, 30_000), 0), Some("r2"));
        assert_eq!(
            owner(&other.routes(&topology, 5_000, 30_000), 0),
            Some("r2")
        );
    }

    #[test]
    fn a_router_answers_what_it_holds_and_forwards_the_rest() {
        let topology = topology();
        let holdings = Arc::new(Holdings::new(3));
        let identity = Identity {
            replica_id: "me".to_owned(),
            address: "127.0.0.1:1".to_owned(),
            group_id: "g".to_owned(),
        };
        let router = Router::new(
            identity.clone(),
            Arc::clone(&holdings),
            &ReplicasConfig::default(),
            None,
        );
        holdings.own(0, 1_000);
        holdings.set_lot(0, 0);
        let mut table = ReplicaTable::default();
        table.apply(advertisement(&identity, &holdings, &topology, 5_000), 5_000);
        table.apply(advert("r2", 5_000, &[(1, 2_000, &["b"])]), 5_000);
        router.install(table.routes(&topology, 5_000, 30_000), Vec::new());
        assert_eq!(router.route(0), Route::Local);
        assert!(matches!(router.route(1), Route::Remote(peer) if peer.replica_id == "r2"));
        assert_eq!(router.route(2), Route::Local, "nobody has seen c");
        // Partition 0 leaves this replica; its own advertisement still claims lot a.
        holdings.disown(0);
        assert_eq!(router.route(0), Route::Moving);
    }

    #[test]
    fn configs_are_checked() {
        assert_eq!(ReplicasConfig::default().validate(), Ok(()));
        let short = ReplicasConfig {
            expire_after_ms: 1_000,
            ..ReplicasConfig::default()
        };
        assert_eq!(
            short.validate(),
            Err(ReplicasConfigError::ShortExpiry { min: 6_000 })
        );
        let bad = ReplicasConfig {
            advertise_addr: "nohost".to_owned(),
            ..ReplicasConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(ReplicasConfigError::BadAdvertiseAddr(_))
        ));
        let bad_inputs = ReplicasConfig {
            inputs_topic: "g/inputs".to_owned(),
            ..ReplicasConfig::default()
        };
        let error = bad_inputs.validate().expect_err("a slash");
        assert!(
            error.to_string().contains("replicas.inputs_topic"),
            "{error}"
        );
        assert_eq!(ReplicasConfig::default().inputs_topic("g"), "g.inputs");
        assert_eq!(bad_inputs.inputs_topic("g"), "g/inputs");
        let wildcard = SocketAddr::from(([0, 0, 0, 0], 50_051));
        assert_eq!(
            ReplicasConfig::default().identity("g", wildcard),
            Err(ReplicasConfigError::NoAdvertiseAddr(wildcard))
        );
        let bound = SocketAddr::from(([127, 0, 0, 1], 50_051));
        let identity = ReplicasConfig::default()
            .identity("g", bound)
            .expect("a specific address");
        assert_eq!(
            (identity.replica_id.as_str(), identity.address.as_str()),
            ("127.0.0.1:50051", "127.0.0.1:50051")
        );
    }
}
