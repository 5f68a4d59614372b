//! Three `parkcast serve --replicas` processes in one consumer group on the real broker, each with
//! its own state folder (as if on separate machines): every replica answers every lot, its own
//! from its state and the others' forwarded to their owners, and they agree; `ListReplicas` shows
//! the group's partitions split among them; a batch and a search through any replica gather the
//! answers of all three. Then one replica is killed with SIGKILL under load (events flowing,
//! requests at a steady rate through the others): the share of failed requests and the p99 while
//! the group rebalances, the time until every lot is fresh again, and the final state equal to
//! what the stream says (no event lost or applied out of order).
//!
//! Warm standbys: a replica that takes lots over when another stops forecasts them as a single
//! server reading every partition does, from the forecast inputs the old owner published.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parkcast_kafka::testing::fresh_config;
use parkcast_proto::v1::availability_client::AvailabilityClient;
use parkcast_proto::v1::{
    BatchGetAvailabilityRequest, GetAvailabilityRequest, ListReplicasRequest, ListReplicasResponse,
    LotAvailability, ReadingKind, SearchNearbyRequest, SensorReading, SessionEvent,
    SessionEventKind, SlotReport, WatchAvailabilityRequest,
};
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::topology::Topology;
use prost::Message as _;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use tonic::transport::Channel;

/// Replicas in the group.
const REPLICAS: usize = 3;
/// Partitions of the input topics: two per replica once the group settles.
const PARTITIONS: i32 = 6;
/// How long the group may take to settle and every answer to be right.
const SETTLE: Duration = Duration::from_secs(120);

/// The slot's reported state in this test: a fixed, lot-dependent pattern.
fn occupied(lot: usize, slot: usize) -> bool {
    !(slot + lot).is_multiple_of(3)
}

/// (lot id, its slot ids) of the simulated city.
fn lots(warehouse: &Path) -> City {
    let warehouse = Warehouse::open(warehouse).expect("the warehouse opens");
    Topology::read_served(&warehouse)
        .expect("dim_slot")
        .lots()
        .iter()
        .map(|lot| (lot.lot_id.clone(), lot.slot_ids.clone()))
        .collect()
}

/// Lot ids with their slot ids.
type City = Vec<(String, Vec<String>)>;

/// A simulated city of 9 lots in `dir`: its warehouse, its lots with their slots, the lot ids.
fn simulated_city(dir: &Path) -> (std::path::PathBuf, City, Vec<String>) {
    let warehouse = dir.join("city");
    common::succeeded(&common::parkcast(&[
        "simulate",
        "--lots",
        "9",
        "--days",
        "2",
        "--out",
        warehouse.to_str().expect("a UTF-8 path"),
    ]));
    let city = lots(&warehouse);
    let lot_ids = city.iter().map(|(lot_id, _)| lot_id.clone()).collect();
    (warehouse, city, lot_ids)
}

/// A change reading of one slot.
fn reading(lot_id: &str, slot_id: &str, busy: bool, seq: u64, at_ms: i64) -> SensorReading {
    SensorReading {
        schema_version: parkcast_proto::SCHEMA_VERSION,
        lot_id: lot_id.to_owned(),
        slot_id: slot_id.to_owned(),
        report: if busy {
            SlotReport::Occupied
        } else {
            SlotReport::Free
        } as i32,
        kind: ReadingKind::Change as i32,
        sensor_seq: seq,
        event_time_ms: at_ms,
    }
}

/// Sends `(topic, lot id, message)` records keyed by lot (how producers partition: by lot id), in
/// order, and waits until all are delivered.
fn send_all(
    kafka: &parkcast_kafka::KafkaConfig,
    records: impl IntoIterator<Item = (String, String, Vec<u8>)>,
) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        kafka.producer_config().create().expect("a producer");
    for (topic, lot_id, payload) in records {
        producer
            .send(
                BaseRecord::to(&topic)
                    .key(lot_id.as_bytes())
                    .payload(&payload),
            )
            .map_err(|(error, _)| error)
            .expect("queued");
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");
}

/// One reading per slot.
fn produce(kafka: &parkcast_kafka::KafkaConfig, lots: &[(String, Vec<String>)]) {
    let now = parkcast_kafka::now_ms();
    send_all(
        kafka,
        lots.iter()
            .enumerate()
            .flat_map(|(lot_index, (lot_id, slots))| {
                slots.iter().enumerate().map(move |(slot_index, slot_id)| {
                    let busy = occupied(lot_index, slot_index);
                    let message = reading(lot_id, slot_id, busy, 1, now - 1_000);
                    (
                        kafka.topics.sensor.clone(),
                        lot_id.clone(),
                        message.encode_to_vec(),
                    )
                })
            }),
    );
}

/// What every replica must answer for each lot: (occupied, free, unknown).
fn expected(lots: &[(String, Vec<String>)]) -> BTreeMap<String, (u32, u32, u32)> {
    lots.iter()
        .enumerate()
        .map(|(lot_index, (lot_id, slots))| {
            let busy = (0..slots.len())
                .filter(|slot| occupied(lot_index, *slot))
                .count();
            let busy = u32::try_from(busy).expect("a small lot");
            let all = u32::try_from(slots.len()).expect("a small lot");
            (lot_id.clone(), (busy, all - busy, 0))
        })
        .collect()
}

fn counts(answer: &LotAvailability) -> (u32, u32, u32) {
    (answer.occupied_now, answer.free_now, answer.unknown_now)
}

async fn client(addr: std::net::SocketAddr) -> AvailabilityClient<Channel> {
    AvailabilityClient::connect(format!("http://{addr}"))
        .await
        .expect("the client connects")
}

/// Every lot through `client`: the answers, or the first error.
async fn ask_all(
    client: &mut AvailabilityClient<Channel>,
    lot_ids: &[String],
) -> Result<BTreeMap<String, LotAvailability>, tonic::Status> {
    let mut answers = BTreeMap::new();
    for lot_id in lot_ids {
        let answer = client
            .get_availability(GetAvailabilityRequest {
                lot_id: lot_id.clone(),
                horizon_minutes: Vec::new(),
                arrival_time_ms: 0,
                price_per_hour: None,
            })
            .await?
            .into_inner();
        answers.insert(lot_id.clone(), answer);
    }
    Ok(answers)
}

/// The owner (gRPC address) of every lot if `listing` shows the group settled: every replica
/// alive, each owning partitions, none twice, all of them, and every lot owned once.
fn settled(
    listing: &ListReplicasResponse,
    lot_ids: &[String],
) -> Result<BTreeMap<String, String>, String> {
    let alive: Vec<_> = listing
        .replicas
        .iter()
        .filter(|replica| replica.alive)
        .collect();
    if alive.len() != REPLICAS || alive.iter().any(|replica| replica.partitions.is_empty()) {
        return Err(format!("not three replicas with partitions: {listing:?}"));
    }
    if !alive
        .iter()
        .any(|replica| replica.replica_id == listing.this_replica)
    {
        return Err(format!("{} does not list itself", listing.this_replica));
    }
    let mut partitions = BTreeSet::new();
    let mut owners = BTreeMap::new();
    for replica in &alive {
        for partition in &replica.partitions {
            if !partitions.insert(partition.partition) {
                return Err(format!("partition {} owned twice", partition.partition));
            }
            for lot_id in &partition.lot_ids {
                if owners
                    .insert(lot_id.clone(), replica.grpc_address.clone())
                    .is_some()
                {
                    return Err(format!("lot {lot_id} owned twice"));
                }
            }
        }
    }
    if partitions != (0..PARTITIONS).collect::<BTreeSet<_>>() {
        return Err(format!("partitions owned: {partitions:?}"));
    }
    if owners.keys().ne(lot_ids.iter()) {
        return Err(format!("lots owned: {:?}", owners.keys()));
    }
    Ok(owners)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_answers_every_lot() {
    parkcast_kafka::require_broker!();
    let dir = tempfile::tempdir().expect("temporary folder");
    let (warehouse, city, lot_ids) = simulated_city(dir.path());
    let want = expected(&city);
    let kafka = fresh_config("replicas", PARTITIONS);
    let folders: Vec<_> = (0..REPLICAS)
        .map(|replica| {
            let folder = dir.path().join(format!("replica-{replica}"));
            std::fs::create_dir_all(&folder).expect("a replica's folder");
            folder
        })
        .collect();
    let servers: Vec<common::Served> = folders
        .iter()
        .map(|folder| common::serve(&warehouse, folder, &kafka, &["--replicas"]))
        .collect();
    produce(&kafka, &city);

    let mut clients = Vec::new();
    for server in &servers {
        clients.push(client(server.addr).await);
    }
    // The group settles: every replica lists the three, each owning two partitions, every lot
    // owned by one, and all three agree on the owners.
    let deadline = Instant::now() + SETTLE;
    let owners = loop {
        let mut listings = Vec::new();
        for client in &mut clients {
            listings.push(
                client
                    .list_replicas(ListReplicasRequest {})
                    .await
                    .expect("ListReplicas")
                    .into_inner(),
            );
        }
        let settled = listings
            .iter()
            .map(|listing| settled(listing, &lot_ids))
            .collect::<Result<Vec<_>, String>>()
            .and_then(|owners| {
                if owners.iter().all(|each| each == &owners[0]) {
                    Ok(owners[0].clone())
                } else {
                    Err(format!("replicas disagree on the owners: {owners:?}"))
                }
            });
        match settled {
            Ok(owners) => break owners,
            Err(why) if Instant::now() > deadline => panic!("the group never settled: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let addresses: BTreeSet<String> = servers
        .iter()
        .map(|server| server.addr.to_string())
        .collect();
    assert_eq!(
        owners.values().cloned().collect::<BTreeSet<_>>(),
        addresses,
        "every replica owns lots"
    );

    // The same through the CLI an operator uses.
    let listed = common::succeeded(&common::parkcast(&[
        "query",
        "--addr",
        &servers[0].addr.to_string(),
        "replicas",
        "--json",
    ]));
    let replicas: Vec<serde_json::Value> = listed
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    assert_eq!(replicas.len(), REPLICAS, "{listed}");
    assert_eq!(
        replicas
            .iter()
            .filter(|replica| replica["this"] == serde_json::Value::Bool(true))
            .count(),
        1
    );

    // Every replica answers every lot with the produced counts, fresh: its own lots from its
    // state, the others' forwarded.
    let deadline = Instant::now() + SETTLE;
    let mut last = String::new();
    let all_right = loop {
        let mut right = true;
        for (replica, client) in clients.iter_mut().enumerate() {
            match ask_all(client, &lot_ids).await {
                Ok(answers) => {
                    let got: BTreeMap<String, (u32, u32, u32)> = answers
                        .iter()
                        .map(|(lot_id, answer)| (lot_id.clone(), counts(answer)))
                        .collect();
                    let fresh = answers.values().all(|answer| answer.data_age_ms.is_some());
                    if got != want || !fresh {
                        right = false;
                        last = format!("replica {replica}: {got:?}");
                    }
                }
                Err(status) => {
                    right = false;
                    last = format!("replica {replica}: {status}");
                }
            }
        }
        if right || Instant::now() > deadline {
            break right;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(all_right, "want {want:?}, last {last}");

    // A batch of every lot and a city-wide search, through every replica: the same answers.
    for client in &mut clients {
        let batch = client
            .batch_get_availability(BatchGetAvailabilityRequest {
                requests: lot_ids
                    .iter()
                    .map(|lot_id| GetAvailabilityRequest {
                        lot_id: lot_id.clone(),
                        horizon_minutes: Vec::new(),
                        arrival_time_ms: 0,
                        price_per_hour: None,
                    })
                    .collect(),
            })
            .await
            .expect("a batch")
            .into_inner();
        let got: BTreeMap<String, (u32, u32, u32)> = batch
            .lots
            .iter()
            .map(|answer| (answer.lot_id.clone(), counts(answer)))
            .collect();
        assert_eq!(got, want);
        assert_eq!(
            batch
                .lots
                .iter()
                .map(|answer| answer.lot_id.clone())
                .collect::<Vec<_>>(),
            lot_ids,
            "in request order"
        );
    }
    let mut searched = Vec::new();
    for client in &mut clients {
        let found = client
            .search_nearby(SearchNearbyRequest {
                latitude: 52.48,
                longitude: -1.90,
                radius_m: 10_000.0,
                max_results: 100,
                ..SearchNearbyRequest::default()
            })
            .await
            .expect("a search")
            .into_inner();
        let mut got: Vec<(String, (u32, u32, u32))> = found
            .lots
            .iter()
            .filter_map(|nearby| nearby.availability.as_ref())
            .map(|answer| (answer.lot_id.clone(), counts(answer)))
            .collect();
        got.sort();
        searched.push(got);
    }
    assert!(
        !searched[0].is_empty(),
        "the search found no lot: are the simulated lots near the search point?"
    );
    for got in &searched {
        assert_eq!(got, &searched[0], "every replica finds the same lots");
        for (lot_id, counts) in got {
            assert_eq!(Some(counts), want.get(lot_id));
        }
    }
    drop(servers);
}

/// Settings that make a dead replica noticed within seconds: the group's session timeout (the
/// broker's minimum), frequent checkpoints and advertisements.
const FAST_FAILOVER: &str = r#"
[ingest]
checkpoint_interval_ms = 1000

[replicas]
heartbeat_interval_ms = 500
expire_after_ms = 3000
"#;

/// Readings at a steady rate for random slots until stopped; returns the last report of each slot
/// (what every replica must end with). Each slot's sequence numbers increase.
fn steady_events(
    kafka: parkcast_kafka::KafkaConfig,
    city: City,
    per_second: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<BTreeMap<(usize, usize), (bool, u64)>> {
    std::thread::spawn(move || {
        let producer: ThreadedProducer<DefaultProducerContext> =
            kafka.producer_config().create().expect("a producer");
        let mut last: BTreeMap<(usize, usize), (bool, u64)> = BTreeMap::new();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let started = Instant::now();
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let lot = usize::try_from(state % city.len() as u64).expect("small");
            let slots = &city[lot].1;
            let slot = usize::try_from((state >> 16) % slots.len() as u64).expect("small");
            let occupied = (state >> 40).is_multiple_of(2);
            let entry = last.entry((lot, slot)).or_insert((false, 1));
            *entry = (occupied, entry.1 + 1);
            let reading = reading(
                &city[lot].0,
                &slots[slot],
                occupied,
                entry.1,
                parkcast_kafka::now_ms(),
            );
            producer
                .send(
                    BaseRecord::to(&kafka.topics.sensor)
                        .key(city[lot].0.as_bytes())
                        .payload(&reading.encode_to_vec()),
                )
                .map_err(|(error, _)| error)
                .expect("queued");
            sent += 1;
            // Paced against the start, so a slow round is made up for.
            let due = Duration::from_micros(sent * 1_000_000 / per_second);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        producer.flush(Duration::from_secs(30)).expect("delivered");
        last
    })
}

/// One request of the steady load: when it was sent (since the start) and how it went.
#[derive(Debug, Clone)]
struct Probe {
    at: Duration,
    took: Duration,
    ok: bool,
    /// Why it failed.
    error: Option<String>,
}

/// What a steady requester asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// `GetAvailability` for each lot in turn.
    EachLot,
    /// `BatchGetAvailability` of every lot (scattered over every owner).
    AllLots,
    /// `SearchNearby` around the city centre, every lot in the radius (gathered from every owner).
    Search,
}

/// Requests through `addr`, every `every`, until stopped.
fn steady_requests(
    addr: std::net::SocketAddr,
    lot_ids: Vec<String>,
    ask: Ask,
    every: Duration,
    start: Instant,
    stop: Arc<AtomicBool>,
    probes: Arc<Mutex<Vec<Probe>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = client(addr).await;
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next = 0;
        while !stop.load(Ordering::Relaxed) {
            ticks.tick().await;
            let request = |lot_id: &String| GetAvailabilityRequest {
                lot_id: lot_id.clone(),
                horizon_minutes: Vec::new(),
                arrival_time_ms: 0,
                price_per_hour: None,
            };
            let sent = Instant::now();
            let ok = match ask {
                Ask::EachLot => {
                    let lot_id = &lot_ids[next % lot_ids.len()];
                    next += 1;
                    let answer = tokio::time::timeout(
                        Duration::from_secs(5),
                        client.get_availability(request(lot_id)),
                    )
                    .await;
                    answer
                        .map_err(|_| "timed out".to_owned())
                        .and_then(|answer| answer.map(drop).map_err(|status| status.to_string()))
                }
                Ask::AllLots => {
                    let answer = tokio::time::timeout(
                        Duration::from_secs(5),
                        client.batch_get_availability(BatchGetAvailabilityRequest {
                            requests: lot_ids.iter().map(request).collect(),
                        }),
                    )
                    .await;
                    match answer {
                        Ok(Ok(batch)) if batch.get_ref().lots.len() == lot_ids.len() => Ok(()),
                        Ok(Ok(batch)) => Err(format!("{} answers", batch.get_ref().lots.len())),
                        Ok(Err(status)) => Err(status.to_string()),
                        Err(_) => Err("timed out".to_owned()),
                    }
                }
                Ask::Search => {
                    let answer = tokio::time::timeout(
                        Duration::from_secs(5),
                        client.search_nearby(SearchNearbyRequest {
                            latitude: 52.48,
                            longitude: -1.90,
                            radius_m: 10_000.0,
                            max_results: 100,
                            ..SearchNearbyRequest::default()
                        }),
                    )
                    .await;
                    match answer {
                        Ok(Ok(found)) if !found.get_ref().lots.is_empty() => Ok(()),
                        Ok(Ok(_)) => Err("no lot found".to_owned()),
                        Ok(Err(status)) => Err(status.to_string()),
                        Err(_) => Err("timed out".to_owned()),
                    }
                }
            };
            probes.lock().expect("probes").push(Probe {
                at: sent - start,
                took: sent.elapsed(),
                ok: ok.is_ok(),
                error: ok.err(),
            });
        }
    })
}

/// Share failed and p99 (ms) of the probes answered within `window` (by when the answer came: a
/// request sent just before the kill and failed by it counts after).
fn summary(probes: &[Probe], window: std::ops::Range<Duration>) -> (usize, f64, f64) {
    let mut within: Vec<&Probe> = probes
        .iter()
        .filter(|probe| window.contains(&(probe.at + probe.took)))
        .collect();
    let count = within.len();
    let failed = within.iter().filter(|probe| !probe.ok).count();
    if let Some(error) = within.iter().find_map(|probe| probe.error.as_ref()) {
        eprintln!("first failure in {window:?}: {error}");
    }
    within.sort_by_key(|probe| probe.took);
    let p99 = within
        .get((count * 99).div_ceil(100).saturating_sub(1))
        .map_or(0.0, |probe| probe.took.as_secs_f64() * 1_000.0);
    let share = if count == 0 {
        0.0
    } else {
        failed as f64 / count as f64
    };
    (count, share, p99)
}

/// Whether every lot answers through every client, fresh (its newest event at most `max_age`
/// old); else why not.
async fn all_fresh(
    clients: &mut [AvailabilityClient<Channel>],
    lot_ids: &[String],
    max_age: Duration,
) -> Result<(), String> {
    let max_age_ms = i64::try_from(max_age.as_millis()).expect("short");
    for (index, client) in clients.iter_mut().enumerate() {
        let answers = ask_all(client, lot_ids)
            .await
            .map_err(|status| format!("client {index}: {status}"))?;
        if let Some(stale) = answers
            .values()
            .find(|answer| answer.data_age_ms.is_none_or(|age| age > max_age_ms))
        {
            return Err(format!(
                "client {index}: {} is {:?} ms old ({})",
                stale.lot_id, stale.data_age_ms, stale.stale_reason
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_is_taken_over_without_losing_an_event() {
    parkcast_kafka::require_broker!();
    let dir = tempfile::tempdir().expect("temporary folder");
    let (warehouse, city, lot_ids) = simulated_city(dir.path());
    let config = dir.path().join("failover.toml");
    std::fs::write(&config, FAST_FAILOVER).expect("the config file");
    let config = config.to_str().expect("a UTF-8 path").to_owned();
    let kafka = fresh_config("failover", PARTITIONS);
    // Static members, as a StatefulSet runs them: the test broker (noida-db 0.2.3) never expires a
    // member that died without leaving (a Kafka broker does after `session.timeout.ms`), so the
    // dead replica's partitions come back when it is restarted under its name, here on an empty
    // disk (a new machine): its state then comes from the changelog.
    let start_replica = |replica: usize, disk: &str| {
        let folder = dir.path().join(disk);
        std::fs::create_dir_all(&folder).expect("a replica's folder");
        let name = format!("replica-{replica}");
        common::serve(
            &warehouse,
            &folder,
            &kafka,
            &[
                "--replicas",
                "--config",
                &config,
                "--instance-id",
                &name,
                "--replica-id",
                &name,
            ],
        )
    };
    let mut servers: Vec<common::Served> = (0..REPLICAS)
        .map(|replica| start_replica(replica, &format!("disk-{replica}")))
        .collect();
    let stop_events = Arc::new(AtomicBool::new(false));
    let events = steady_events(kafka.clone(), city.clone(), 300, Arc::clone(&stop_events));

    // Settled and fresh through every replica before the fault.
    let mut clients = Vec::new();
    for server in &servers {
        clients.push(client(server.addr).await);
    }
    let deadline = Instant::now() + SETTLE;
    loop {
        let mut listings = Vec::new();
        for client in &mut clients {
            if let Ok(listing) = client.list_replicas(ListReplicasRequest {}).await {
                listings.push(listing.into_inner());
            }
        }
        let settled = listings.len() == REPLICAS
            && listings
                .iter()
                .all(|listing| settled(listing, &lot_ids).is_ok());
        if settled
            && all_fresh(&mut clients, &lot_ids, Duration::from_secs(5))
                .await
                .is_ok()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group never settled: {listings:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A watch of every lot through a replica that stays: it must follow the killed replica's
    // lots to their next owner.
    let mut watch = clients[0]
        .watch_availability(WatchAvailabilityRequest {
            lot_ids: lot_ids.clone(),
            horizon_minutes: Vec::new(),
        })
        .await
        .expect("a watch")
        .into_inner();
    let watched = Arc::new(Mutex::new(BTreeMap::<String, LotAvailability>::new()));
    let watched_writer = Arc::clone(&watched);
    let watcher = tokio::spawn(async move {
        while let Ok(Some(answer)) = watch.message().await {
            watched_writer
                .lock()
                .expect("watched")
                .insert(answer.lot_id.clone(), answer);
        }
    });

    // Requests at a steady rate through the two replicas that stay: 100 a second each.
    let start = Instant::now();
    let probes = Arc::new(Mutex::new(Vec::new()));
    let stop_requests = Arc::new(AtomicBool::new(false));
    let mut requesters: Vec<_> = servers[..2]
        .iter()
        .map(|server| {
            steady_requests(
                server.addr,
                lot_ids.clone(),
                Ask::EachLot,
                Duration::from_millis(10),
                start,
                Arc::clone(&stop_requests),
                Arc::clone(&probes),
            )
        })
        .collect();
    // And a batch of every lot 20 times a second: one share per owner, one of them the victim.
    let batch_probes = Arc::new(Mutex::new(Vec::new()));
    requesters.push(steady_requests(
        servers[1].addr,
        lot_ids.clone(),
        Ask::AllLots,
        Duration::from_millis(50),
        start,
        Arc::clone(&stop_requests),
        Arc::clone(&batch_probes),
    ));
    // And a city-wide search 10 times a second, scattered over the owners.
    let search_probes = Arc::new(Mutex::new(Vec::new()));
    requesters.push(steady_requests(
        servers[0].addr,
        lot_ids.clone(),
        Ask::Search,
        Duration::from_millis(100),
        start,
        Arc::clone(&stop_requests),
        Arc::clone(&search_probes),
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let killed_at = start.elapsed();
    drop(servers.remove(2)); // SIGKILL: no revocation, no checkpoint, no tombstone.
    clients.truncate(2);
    // The orchestrator restarts it a second later, on another machine.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restarted = start_replica(2, "disk-2-new");

    // Until every lot answers fresh through both survivors: the dead replica's partitions were
    // reassigned, restored from the changelog and caught up.
    let deadline = Instant::now() + SETTLE;
    let fresh_at = loop {
        match all_fresh(&mut clients, &lot_ids, Duration::from_secs(5)).await {
            Ok(()) => break start.elapsed(),
            Err(why) => assert!(
                Instant::now() < deadline,
                "lots never fresh again after the kill: {why}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ended_at = start.elapsed();
    stop_requests.store(true, Ordering::Relaxed);
    for requester in requesters {
        requester.await.expect("the requester ends");
    }
    stop_events.store(true, Ordering::Relaxed);
    let last = events.join().expect("the producer ends");

    let probes = probes.lock().expect("probes").clone();
    let before = summary(&probes, Duration::ZERO..killed_at);
    let during = summary(&probes, killed_at..fresh_at);
    let after = summary(&probes, fresh_at..ended_at);
    eprintln!(
        "SIGKILL of one of {REPLICAS} replicas (restarted after 1 s on an empty disk), {PARTITIONS} partitions, 300 events/s, 200 requests/s:\n\
         before: {} requests, {:.2}% failed, p99 {:.1} ms\n\
         kill -> every lot fresh ({:.1} s): {} requests, {:.2}% failed, p99 {:.1} ms\n\
         after: {} requests, {:.2}% failed, p99 {:.1} ms",
        before.0,
        before.1 * 100.0,
        before.2,
        (fresh_at - killed_at).as_secs_f64(),
        during.0,
        during.1 * 100.0,
        during.2,
        after.0,
        after.1 * 100.0,
        after.2,
    );
    // A replica that misroutes fails a whole share of the lots, every time; a stray timeout on a
    // loaded machine is not that.
    assert!(before.1 < 0.01, "failures before the kill: {before:?}");
    assert!(
        after.1 < 0.01,
        "failures once every lot is fresh again: {after:?}"
    );
    assert!(after.0 > 0 && during.0 > 0);
    for (what, probes) in [
        ("batches of every lot, 20/s", &batch_probes),
        ("city-wide searches, 10/s", &search_probes),
    ] {
        let probes = probes.lock().expect("probes").clone();
        let windows = [
            summary(&probes, Duration::ZERO..killed_at),
            summary(&probes, killed_at..fresh_at),
            summary(&probes, fresh_at..ended_at),
        ];
        eprintln!(
            "{what}: before {} ({:.2}% failed, p99 {:.1} ms), kill -> fresh {} ({:.2}% failed, \
             p99 {:.1} ms), after {} ({:.2}% failed, p99 {:.1} ms)",
            windows[0].0,
            windows[0].1 * 100.0,
            windows[0].2,
            windows[1].0,
            windows[1].1 * 100.0,
            windows[1].2,
            windows[2].0,
            windows[2].1 * 100.0,
            windows[2].2,
        );
        assert!(
            windows[0].1 < 0.01 && windows[2].1 < 0.01 && windows[2].0 > 0,
            "{what} fail outside the takeover: {windows:?}"
        );
    }

    // The final state, through both survivors, is the stream's: every slot's last reading.
    let want: BTreeMap<String, (u32, u32, u32)> = city
        .iter()
        .enumerate()
        .map(|(lot, (lot_id, slots))| {
            let (mut occupied, mut free, mut unknown) = (0, 0, 0);
            for slot in 0..slots.len() {
                match last.get(&(lot, slot)) {
                    Some((true, _)) => occupied += 1,
                    Some((false, _)) => free += 1,
                    None => unknown += 1,
                }
            }
            (lot_id.clone(), (occupied, free, unknown))
        })
        .collect();
    let deadline = Instant::now() + SETTLE;
    let mut got = Vec::new();
    loop {
        got.clear();
        for client in &mut clients {
            let answers = ask_all(client, &lot_ids).await.expect("every lot answers");
            got.push(
                answers
                    .iter()
                    .map(|(lot_id, answer)| (lot_id.clone(), counts(answer)))
                    .collect::<BTreeMap<_, _>>(),
            );
        }
        if got.iter().all(|each| each == &want) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for each in &got {
        assert_eq!(each, &want, "the survivors' state is the stream's");
    }
    // The watch's newest answer of every lot is the final state too.
    let deadline = Instant::now() + SETTLE;
    let last_watched = loop {
        let last: BTreeMap<String, (u32, u32, u32)> = watched
            .lock()
            .expect("watched")
            .iter()
            .map(|(lot_id, answer)| (lot_id.clone(), counts(answer)))
            .collect();
        if last == want || Instant::now() > deadline {
            break last;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        last_watched, want,
        "the watch followed every lot across the move"
    );
    watcher.abort();
    drop(restarted);
    drop(servers);
}

/// Where the takeover test's history ends: the end of the simulated city's last day, 2025-10-06
/// in London (a backtest needs 35 days).
const HISTORY_UNTIL: &str = "2025-10-06T23:00:00Z";

/// Whether slot `slot` of lot `lot` is occupied at step `step` of the takeover test: a
/// lot-dependent wave, the lots filling and emptying at their own pace.
fn busy_at(lot: usize, slot: usize, step: i64) -> bool {
    (slot + lot * 3 + usize::try_from(step).expect("a step") * (lot + 1)) % 7 < 4
}

/// The start of grid step `step` of the takeover test, ms (five-minute steps from
/// [`HISTORY_UNTIL`]).
fn step_ms(step: i64) -> i64 {
    chrono::DateTime::parse_from_rfc3339(HISTORY_UNTIL)
        .expect("a time")
        .timestamp_millis()
        + step * 300_000
}

/// Readings of every slot at every step of `steps`, in time order per lot.
fn produce_readings(
    kafka: &parkcast_kafka::KafkaConfig,
    city: &[(String, Vec<String>)],
    steps: std::ops::Range<i64>,
) {
    let mut records = Vec::new();
    for step in steps {
        for (lot_index, (lot_id, slots)) in city.iter().enumerate() {
            for (slot_index, slot_id) in slots.iter().enumerate() {
                let at_ms = step_ms(step) + i64::try_from(slot_index % 200).expect("small") * 1_000;
                let seq = u64::try_from(step + 1).expect("a step");
                let message = reading(
                    lot_id,
                    slot_id,
                    busy_at(lot_index, slot_index, step),
                    seq,
                    at_ms,
                );
                records.push((
                    kafka.topics.sensor.clone(),
                    lot_id.clone(),
                    message.encode_to_vec(),
                ));
            }
        }
    }
    send_all(kafka, records);
}

/// An entry and an exit per lot at every step of `steps`. Sent once the steps' readings are
/// applied, so the test can wait for the sessions to show in the forecasts before a handover.
fn produce_sessions(
    kafka: &parkcast_kafka::KafkaConfig,
    city: &[(String, Vec<String>)],
    steps: std::ops::Range<i64>,
) {
    let mut records = Vec::new();
    for step in steps {
        for (lot_id, slots) in city {
            for (offset_ms, kind) in [
                (60_000, SessionEventKind::Entry),
                (120_000, SessionEventKind::Exit),
            ] {
                let event = SessionEvent {
                    schema_version: parkcast_proto::SCHEMA_VERSION,
                    session_id: format!("{lot_id}-{step}"),
                    lot_id: lot_id.clone(),
                    slot_id: slots[0].clone(),
                    kind: kind as i32,
                    event_time_ms: step_ms(step) + offset_ms,
                    ..SessionEvent::default()
                };
                records.push((
                    kafka.topics.session.clone(),
                    lot_id.clone(),
                    event.encode_to_vec(),
                ));
            }
        }
    }
    send_all(kafka, records);
}

/// Polls until every lot through `client` counts the occupied slots of step `step`'s readings.
async fn wait_for_step(
    client: &mut AvailabilityClient<Channel>,
    city: &[(String, Vec<String>)],
    step: i64,
) {
    let deadline = Instant::now() + SETTLE;
    'poll: loop {
        assert!(
            Instant::now() < deadline,
            "step {step}'s readings never all applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        for (lot_index, (lot_id, slots)) in city.iter().enumerate() {
            let busy = (0..slots.len())
                .filter(|slot| busy_at(lot_index, *slot, step))
                .count();
            let answer = client
                .get_availability(GetAvailabilityRequest {
                    lot_id: lot_id.clone(),
                    horizon_minutes: Vec::new(),
                    arrival_time_ms: 0,
                    price_per_hour: None,
                })
                .await;
            let applied = answer.is_ok_and(|answer| {
                usize::try_from(answer.into_inner().occupied_now).ok() == Some(busy)
            });
            if !applied {
                continue 'poll;
            }
        }
        return;
    }
}

/// What a lot's answer must equal between two servers: the counts, the model and the point
/// forecasts (target, horizon, expected free slots). Not the intervals: their live adaptation
/// ([`parkcast_serving::quality`]) scores every forecast a server issued on the way, and how many
/// it issued while an hour of events streamed in depends on its timing.
fn forecast_view(answer: &LotAvailability) -> (u32, u32, u32, u32, Vec<[f64; 3]>) {
    (
        answer.occupied_now,
        answer.free_now,
        answer.unknown_now,
        answer.model_version,
        answer
            .forecasts
            .iter()
            .map(|forecast| {
                [
                    forecast.target_time_ms as f64,
                    f64::from(forecast.horizon_minutes),
                    forecast.expected_free,
                ]
            })
            .collect(),
    )
}

/// Polls `client`'s `ListReplicas` until `settled(this replica, partitions owned by each alive
/// replica's address)`, or panics with `what`.
async fn wait_for_owners(
    client: &mut AvailabilityClient<Channel>,
    what: &str,
    settled: impl Fn(&str, &BTreeMap<String, usize>) -> bool,
) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let listing = client
            .list_replicas(ListReplicasRequest {})
            .await
            .expect("ListReplicas")
            .into_inner();
        let owned: BTreeMap<String, usize> = listing
            .replicas
            .iter()
            .filter(|replica| replica.alive)
            .map(|replica| (replica.grpc_address.clone(), replica.partitions.len()))
            .collect();
        if settled(&listing.this_replica, &owned) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {listing:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every lot's [`forecast_view`] through `client` (an empty map if a request fails).
async fn views(
    client: &mut AvailabilityClient<Channel>,
    lot_ids: &[String],
) -> BTreeMap<String, (u32, u32, u32, u32, Vec<[f64; 3]>)> {
    let mut views = BTreeMap::new();
    for lot_id in lot_ids {
        let request = GetAvailabilityRequest {
            lot_id: lot_id.clone(),
            horizon_minutes: vec![15, 60],
            arrival_time_ms: 0,
            price_per_hour: None,
        };
        match client.get_availability(request).await {
            Ok(answer) => views.insert(lot_id.clone(), forecast_view(&answer.into_inner())),
            Err(_) => return BTreeMap::new(),
        };
    }
    views
}

/// The lots whose answers through `replica` differ from `single`'s (with the two answers), or the
/// error of asking.
async fn differences(
    replica: &mut AvailabilityClient<Channel>,
    single: &mut AvailabilityClient<Channel>,
    lot_ids: &[String],
) -> Result<Vec<String>, tonic::Status> {
    let mut differ = Vec::new();
    for lot_id in lot_ids {
        let request = GetAvailabilityRequest {
            lot_id: lot_id.clone(),
            horizon_minutes: vec![15, 60],
            arrival_time_ms: 0,
            price_per_hour: None,
        };
        let got = replica
            .get_availability(request.clone())
            .await?
            .into_inner();
        let want = single.get_availability(request).await?.into_inner();
        let (got, want) = (forecast_view(&got), forecast_view(&want));
        let same = (got.0, got.1, got.2, got.3) == (want.0, want.1, want.2, want.3)
            && !want.4.is_empty()
            && got.4.len() == want.4.len()
            && got.4.iter().zip(&want.4).all(|(got, want)| {
                got.iter()
                    .zip(want)
                    .all(|(got, want)| (got - want).abs() <= 1e-9 * want.abs().max(1.0))
            });
        if !same {
            differ.push(format!("{lot_id}: {got:?} where one server says {want:?}"));
        }
    }
    Ok(differ)
}

/// Polls until every lot through `replica` answers as through `single`, or panics naming `what`.
async fn answer_alike(
    replica: &mut AvailabilityClient<Channel>,
    single: &mut AvailabilityClient<Channel>,
    lot_ids: &[String],
    what: &str,
) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let why = match differences(replica, single, lot_ids).await {
            Ok(differ) if differ.is_empty() => return,
            Ok(differ) => differ.join("\n"),
            Err(status) => format!("{status}"),
        };
        assert!(Instant::now() < deadline, "{what}:\n{why}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A simulated city of 9 lots over 36 days in `dir` (ending [`HISTORY_UNTIL`]) with a model
/// trained on it, and one folder per name, each holding a copy of the model registry: the
/// warehouse, the lots with their slots, the lot ids, the folders.
fn trained_city(
    dir: &Path,
    names: &[&str],
) -> (
    std::path::PathBuf,
    City,
    Vec<String>,
    Vec<std::path::PathBuf>,
) {
    let warehouse = dir.join("city");
    let warehouse_arg = warehouse.to_str().expect("a UTF-8 path");
    common::succeeded(&common::parkcast(&[
        "simulate",
        "--lots",
        "9",
        "--days",
        "36",
        "--start",
        "2025-09-01",
        "--interval",
        "5",
        "--out",
        warehouse_arg,
    ]));
    let city = lots(&warehouse);
    let lot_ids: Vec<String> = city.iter().map(|(lot_id, _)| lot_id.clone()).collect();
    let folders: Vec<_> = names.iter().map(|name| dir.join(name)).collect();
    let registry = dir.join("models");
    let mut train = vec![
        "train",
        "-w",
        warehouse_arg,
        "--registry",
        registry.to_str().expect("a UTF-8 path"),
        "--force",
    ];
    train.extend_from_slice(&common::LOOP_TRAIN);
    common::succeeded(&common::parkcast(&train));
    for folder in &folders {
        std::fs::create_dir_all(folder).expect("a folder");
        let copied = std::process::Command::new("cp")
            .arg("-r")
            .arg(&registry)
            .arg(folder.join("models"))
            .status()
            .expect("cp runs");
        assert!(copied.success(), "the registry is copied");
    }
    (warehouse, city, lot_ids, folders)
}

/// Warm standbys. Two replicas and one single server (its own consumer group) read the same topics
/// with the same model; the replica that stays takes the other's lots over when it stops, and from
/// then on forecasts them as the single server does (the same forecast inputs, no session counted
/// twice), though the grid values since the warehouse's end were never on its disk: they came from
/// the inputs topic the old owner published to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_taking_lots_over_forecasts_them_as_one_server_would() {
    parkcast_kafka::require_broker!();
    let dir = tempfile::tempdir().expect("temporary folder");
    let (warehouse, city, lot_ids, folders) =
        trained_city(dir.path(), &["single", "replica-a", "replica-b"]);
    let kafka = fresh_config("standby", PARTITIONS);
    let stream = [
        "--model",
        "simulated",
        "--clock",
        "stream",
        "--history-until",
        HISTORY_UNTIL,
    ];
    let single_group = format!("{}-single", common::topic_prefix(&kafka));
    let single = common::serve_in_group(&warehouse, &folders[0], &kafka, &single_group, &stream);
    let replica_args: Vec<&str> = stream.iter().copied().chain(["--replicas"]).collect();
    let replica_a = common::serve(&warehouse, &folders[1], &kafka, &replica_args);
    let replica_b = common::serve(&warehouse, &folders[2], &kafka, &replica_args);
    let mut single_client = client(single.addr).await;
    let mut b = client(replica_b.addr).await;

    // The group settles: both replicas own partitions, all of them between the two.
    wait_for_owners(&mut b, "the group never settled", |_, owned| {
        owned.len() == 2
            && owned.values().all(|count| *count > 0)
            && owned.values().sum::<usize>() == PARTITIONS as usize
    })
    .await;

    // An hour of readings and sessions: through B, B's lots and A's (forwarded) answer as the
    // single server does.
    produce_readings(&kafka, &city, 0..12);
    wait_for_step(&mut single_client, &city, 11).await;
    wait_for_step(&mut b, &city, 11).await;
    let before_sessions = views(&mut single_client, &lot_ids).await;
    produce_sessions(&kafka, &city, 0..12);
    // The sessions count in the last hour's arrivals and departures: the forecasts move.
    let deadline = Instant::now() + SETTLE;
    while views(&mut single_client, &lot_ids).await == before_sessions {
        assert!(
            Instant::now() < deadline,
            "the sessions never changed a forecast"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    answer_alike(&mut b, &mut single_client, &lot_ids, "before the handover").await;

    // A stops; B takes its partitions over, restoring their slots from the changelog.
    let a_address = replica_a.addr.to_string();
    assert!(
        replica_a.terminate(SETTLE),
        "replica A stops cleanly on SIGTERM"
    );
    wait_for_owners(&mut b, "B never took A's partitions", |this, owned| {
        !owned.contains_key(&a_address) && owned.get(this) == Some(&(PARTITIONS as usize))
    })
    .await;
    // A's lots now forecast from B's own state: with the grid values and sessions of the last
    // hour, which only A's ingestion saw.
    answer_alike(
        &mut b,
        &mut single_client,
        &lot_ids,
        "after B took A's lots over",
    )
    .await;

    // Another half hour: B's own inputs for A's old lots continue the history, none twice.
    produce_readings(&kafka, &city, 12..18);
    wait_for_step(&mut single_client, &city, 17).await;
    wait_for_step(&mut b, &city, 17).await;
    produce_sessions(&kafka, &city, 12..18);
    answer_alike(
        &mut b,
        &mut single_client,
        &lot_ids,
        "half an hour after the handover",
    )
    .await;
    drop(replica_b);
    drop(single);
}

/// More replicas than partitions: the replica the group gives nothing holds no lot, reports
/// SERVING all the same (it answers every lot by forwarding), and answers as the owner does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_given_no_partition_serves_by_forwarding() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    parkcast_kafka::require_broker!();
    let dir = tempfile::tempdir().expect("temporary folder");
    let (warehouse, city, lot_ids, folders) = trained_city(dir.path(), &["replica-a", "replica-b"]);
    let kafka = fresh_config("idle", 1);
    let args = [
        "--model",
        "simulated",
        "--clock",
        "stream",
        "--history-until",
        HISTORY_UNTIL,
        "--replicas",
    ];
    let replicas: Vec<common::Served> = folders
        .iter()
        .map(|folder| common::serve(&warehouse, folder, &kafka, &args))
        .collect();
    produce_readings(&kafka, &city, 0..1);
    let mut clients = Vec::new();
    for replica in &replicas {
        clients.push(client(replica.addr).await);
    }
    // One owns the partition, the other nothing.
    wait_for_owners(&mut clients[0], "the group never settled", |_, owned| {
        owned.len() == 2 && owned.values().sum::<usize>() == 1
    })
    .await;
    for replica in &replicas {
        let channel = Channel::from_shared(format!("http://{}", replica.addr))
            .expect("a valid address")
            .connect()
            .await
            .expect("the server accepts connections");
        let mut health = HealthClient::new(channel);
        let deadline = Instant::now() + SETTLE;
        loop {
            let status = health
                .check(HealthCheckRequest {
                    service: "parkcast.v1.Availability".to_owned(),
                })
                .await
                .map(|answer| answer.into_inner().status());
            if matches!(status, Ok(ServingStatus::Serving)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "replica {} never SERVING: {status:?}",
                replica.addr
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (first, second) = clients.split_at_mut(1);
    wait_for_step(&mut first[0], &city, 0).await;
    answer_alike(&mut second[0], &mut first[0], &lot_ids, "the idle replica").await;
}
