//! Three `parkcast serve --replicas` processes in one consumer group on the real broker, each with
//! its own state folder (as if on separate machines): every replica answers every lot, its own
//! from its state and the others' forwarded to their owners, and they agree; `ListReplicas` shows
//! the group's partitions split among them; a batch and a search through any replica gather the
//! answers of all three.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use parkcast_kafka::testing::fresh_config;
use parkcast_proto::v1::availability_client::AvailabilityClient;
use parkcast_proto::v1::{
    BatchGetAvailabilityRequest, GetAvailabilityRequest, ListReplicasRequest, ListReplicasResponse,
    LotAvailability, ReadingKind, SearchNearbyRequest, SensorReading, SlotReport,
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
fn lots(warehouse: &Path) -> Vec<(String, Vec<String>)> {
    let warehouse = Warehouse::open(warehouse).expect("the warehouse opens");
    Topology::read_served(&warehouse)
        .expect("dim_slot")
        .lots()
        .iter()
        .map(|lot| (lot.lot_id.clone(), lot.slot_ids.clone()))
        .collect()
}

/// One reading per slot, keyed by lot (how producers partition: by lot id).
fn produce(kafka: &parkcast_kafka::KafkaConfig, lots: &[(String, Vec<String>)]) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        kafka.producer_config().create().expect("a producer");
    let now = parkcast_kafka::now_ms();
    for (lot_index, (lot_id, slots)) in lots.iter().enumerate() {
        for (slot_index, slot_id) in slots.iter().enumerate() {
            let report = if occupied(lot_index, slot_index) {
                SlotReport::Occupied
            } else {
                SlotReport::Free
            };
            let reading = SensorReading {
                schema_version: parkcast_proto::SCHEMA_VERSION,
                lot_id: lot_id.clone(),
                slot_id: slot_id.clone(),
                report: report as i32,
                kind: ReadingKind::Change as i32,
                sensor_seq: 1,
                event_time_ms: now - 1_000,
            };
            producer
                .send(
                    BaseRecord::to(&kafka.topics.sensor)
                        .key(lot_id.as_bytes())
                        .payload(&reading.encode_to_vec()),
                )
                .map_err(|(error, _)| error)
                .expect("queued");
        }
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");
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
    let warehouse = dir.path().join("city");
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
    let lot_ids: Vec<String> = city.iter().map(|(lot_id, _)| lot_id.clone()).collect();
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
