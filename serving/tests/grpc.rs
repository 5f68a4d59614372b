//! The `Availability` service over real gRPC on loopback: live state answered, each bad request
//! refused with its code and a message naming what is wrong.

use std::sync::{Arc, Mutex};

use parkcast_proto::v1::availability_client::AvailabilityClient;
use parkcast_proto::v1::availability_server::AvailabilityServer;
use parkcast_proto::v1::{BatchGetAvailabilityRequest, GetAvailabilityRequest};
use parkcast_serving::decode::SensorEvent;
use parkcast_serving::grpc::{AvailabilityService, LiveView};
use parkcast_serving::live::{LiveRules, LiveState, LotSnapshot};
use parkcast_serving::requests::RequestLimits;
use parkcast_serving::topology::{LotIndex, Topology};
use tonic::Code;

const NOW: i64 = 1_764_000_000_000;

/// Real live state behind a lock, as the server reads it.
struct State {
    topology: Topology,
    live: Mutex<LiveState>,
}

impl LiveView for State {
    fn topology(&self) -> &Topology {
        &self.topology
    }

    fn lot(&self, lot: LotIndex, now_ms: i64) -> Option<(LotSnapshot, Option<String>)> {
        let live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        live.lot(lot, now_ms).map(|snapshot| (snapshot, None))
    }
}

fn state() -> Arc<State> {
    let topology = Topology::new([
        (
            "north".to_owned(),
            (0..4).map(|slot| format!("n{slot}")).collect(),
        ),
        (
            "south".to_owned(),
            (0..2).map(|slot| format!("s{slot}")).collect(),
        ),
    ])
    .expect("valid");
    let mut live = LiveState::new(&topology, LiveRules::default());
    for (slot, occupied) in [(0, true), (1, true), (2, false)] {
        live.apply_sensor(&SensorEvent {
            lot: 0,
            slot,
            occupied,
            heartbeat: false,
            seq: 1,
            event_time_ms: NOW - 120_000,
            clamped: false,
        })
        .expect("applies");
    }
    Arc::new(State {
        topology,
        live: Mutex::new(live),
    })
}

async fn client() -> AvailabilityClient<tonic::transport::Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("bound");
    let service =
        AvailabilityService::new(state(), RequestLimits::default(), 600_000).with_clock(|| NOW);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(AvailabilityServer::new(service))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .expect("the server runs");
    });
    AvailabilityClient::connect(format!("http://{address}"))
        .await
        .expect("the client connects")
}

fn get(lot: &str, horizons: &[u32], arrival: i64) -> GetAvailabilityRequest {
    GetAvailabilityRequest {
        lot_id: lot.to_owned(),
        horizon_minutes: horizons.to_vec(),
        arrival_time_ms: arrival,
    }
}

#[tokio::test]
async fn the_live_picture_is_answered_with_its_age_and_staleness() {
    let mut client = client().await;
    let north = client
        .get_availability(get("north", &[], 0))
        .await
        .expect("an answer")
        .into_inner();
    assert_eq!(
        (
            north.capacity,
            north.occupied_now,
            north.free_now,
            north.unknown_now
        ),
        (4, 2, 1, 1)
    );
    assert_eq!((north.as_of_ms, north.data_age_ms), (NOW, 120_000));
    assert!(!north.stale, "{}", north.stale_reason);
    let south = client
        .get_availability(get("south", &[], 0))
        .await
        .expect("an answer")
        .into_inner();
    assert!(south.stale && south.stale_reason.contains("no event"));
    assert_eq!(south.unknown_now, 2);
}

#[tokio::test]
async fn bad_requests_get_their_code_and_a_message_saying_what_is_wrong() {
    let mut client = client().await;
    let cases = [
        (get("nowhere", &[], 0), Code::NotFound, "\"nowhere\""),
        (get("", &[], 0), Code::InvalidArgument, "lot_id is empty"),
        (
            get("north", &[45], 0),
            Code::InvalidArgument,
            "horizon 45 min",
        ),
        (
            get("north", &[], NOW - 1_000),
            Code::InvalidArgument,
            "in the past",
        ),
        (
            get("north", &[], NOW + 86_400_000),
            Code::InvalidArgument,
            "at most 120 min",
        ),
        (get("north", &[30], 0), Code::Unavailable, "not served yet"),
    ];
    for (request, code, says) in cases {
        let status = client
            .get_availability(request.clone())
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{request:?}: {}", status.message());
        assert!(status.message().contains(says), "{}", status.message());
    }
    let empty = client
        .batch_get_availability(BatchGetAvailabilityRequest { requests: vec![] })
        .await
        .expect_err("refused");
    assert_eq!(empty.code(), Code::InvalidArgument);
    let oversized = client
        .batch_get_availability(BatchGetAvailabilityRequest {
            requests: vec![get("north", &[], 0); 101],
        })
        .await
        .expect_err("refused");
    assert_eq!(oversized.code(), Code::InvalidArgument);
    assert!(oversized.message().contains("at most 100"));
    let batch = client
        .batch_get_availability(BatchGetAvailabilityRequest {
            requests: vec![get("south", &[], 0), get("north", &[], 0)],
        })
        .await
        .expect("an answer")
        .into_inner();
    let order: Vec<_> = batch.lots.iter().map(|lot| lot.lot_id.as_str()).collect();
    assert_eq!(order, vec!["south", "north"]);
}

/// Events produced to the real broker show up in `GetAvailability` over real gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produced_events_are_visible_over_grpc() {
    use parkcast_kafka::testing::{fresh_config, unique_name};
    use parkcast_proto::v1::{ReadingKind, SensorReading, SlotReport};
    use parkcast_serving::ingest::{Ingest, IngestConfig};
    use parkcast_serving::metrics::IngestMetrics;
    use prost::Message as _;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use std::time::{Duration, Instant};

    let kafka = fresh_config("grpc", 2);
    let topology = Arc::new(
        Topology::new([(
            "north".to_owned(),
            (0..4).map(|slot| format!("n{slot}")).collect(),
        )])
        .expect("valid"),
    );
    let state = tempfile::tempdir().expect("temporary folder");
    let config = IngestConfig {
        kafka: kafka.clone(),
        group_id: unique_name("grpc"),
        state_dir: state.path().to_owned(),
        probe_interval_ms: 200,
        ..IngestConfig::default()
    };
    let ingest = Arc::new(
        Ingest::start(
            config,
            Arc::clone(&topology),
            IngestMetrics::register(&mut prometheus_client::registry::Registry::default()),
        )
        .expect("ingestion starts"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("bound");
    let service = AvailabilityService::new(Arc::clone(&ingest), RequestLimits::default(), 600_000);
    let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(AvailabilityServer::new(service))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .expect("the server runs");
    });
    let mut client = AvailabilityClient::connect(format!("http://{address}"))
        .await
        .expect("the client connects");

    let producer: ThreadedProducer<DefaultProducerContext> =
        kafka.producer_config().create().expect("a producer");
    let now = parkcast_kafka::now_ms();
    for slot in 0..3 {
        let reading = SensorReading {
            schema_version: parkcast_proto::SCHEMA_VERSION,
            lot_id: "north".into(),
            slot_id: format!("n{slot}"),
            report: SlotReport::Occupied as i32,
            kind: ReadingKind::Change as i32,
            sensor_seq: 1,
            event_time_ms: now - 1_000,
        };
        producer
            .send(
                BaseRecord::to(&kafka.topics.sensor)
                    .key("north")
                    .payload(&reading.encode_to_vec()),
            )
            .map_err(|(error, _)| error)
            .expect("queued");
    }
    producer.flush(Duration::from_secs(10)).expect("delivered");

    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let answer = client
            .get_availability(get("north", &[], 0))
            .await
            .expect("an answer")
            .into_inner();
        if answer.occupied_now == 3 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (answer.occupied_now, answer.free_now, answer.unknown_now),
        (3, 0, 1)
    );
    assert!(!answer.stale, "{}", answer.stale_reason);
    assert!(answer.data_age_ms < 60_000);
    // Graceful shutdown: the server lets go of the live state, then ingestion stops cleanly.
    drop(client);
    let _ = shutdown.send(());
    server.await.expect("the server stops");
    Arc::try_unwrap(ingest)
        .map_err(|_| "still shared")
        .expect("the server released the live state")
        .stop()
        .expect("a clean stop");
}
