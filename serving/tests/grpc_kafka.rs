//! End to end on the real broker: events produced to the sensor topic show up, scored, in
//! `GetAvailability` over real gRPC; the server stops gracefully.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use parkcast_kafka::testing::{fresh_config, unique_name};
use parkcast_proto::v1::availability_client::AvailabilityClient;
use parkcast_proto::v1::availability_server::AvailabilityServer;
use parkcast_proto::v1::{GetAvailabilityRequest, ReadingKind, SensorReading, SlotReport};
use parkcast_serving::grpc::{AvailabilityService, LotDirectory, ServiceContext};
use parkcast_serving::ingest::{Ingest, IngestConfig};
use parkcast_serving::metrics::IngestMetrics;
use parkcast_serving::models::ModelManager;
use parkcast_serving::requests::RequestLimits;
use parkcast_serving::scoring::{Clock, LiveSource, Scoring, ScoringConfig};
use parkcast_serving::topology::TopologyIndex;
use prost::Message as _;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produced_events_are_visible_and_scored_over_grpc() {
    parkcast_kafka::require_broker!();
    let kafka = fresh_config("grpc", 2);
    let topology = Arc::new(
        TopologyIndex::new([(
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
    let now = parkcast_kafka::now_ms();
    let scoring = Arc::new(Scoring::new(
        Arc::clone(&ingest) as Arc<dyn LiveSource>,
        Clock::Wall,
        ScoringConfig::default(),
    ));
    scoring.seed(
        "north",
        common::history(4, now - 9 * common::DAY_MS, now),
        [],
        [],
    );
    let registry = tempfile::tempdir().expect("temporary folder");
    common::publish(
        registry.path(),
        "toy",
        &[("north", 4)],
        now - common::DAY_MS,
    );
    ModelManager::new(registry.path(), Arc::clone(&scoring), None)
        .activate("toy", 0)
        .expect("the model activates");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scorer = scoring.spawn(Arc::clone(&stop)).expect("the scorer starts");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("bound");
    let service = AvailabilityService::new(ServiceContext {
        directory: Arc::new(LotDirectory::new(&topology, Default::default())),
        scoring: Arc::clone(&scoring),
        limits: RequestLimits::default(),
        stale_after_ms: 600_000,
        metrics: None,
    });
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

    let request = GetAvailabilityRequest {
        lot_id: "north".to_owned(),
        horizon_minutes: vec![30, 60],
        arrival_time_ms: 0,
        price_per_hour: None,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let answer = client
            .get_availability(request.clone())
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
    assert!(answer.data_age_ms.is_some_and(|age| age < 60_000));
    assert_eq!(
        (answer.model_name.as_str(), answer.model_version),
        ("toy", 1)
    );
    assert_eq!(answer.forecasts.len(), 2);
    for forecast in &answer.forecasts {
        assert!((0.0..=4.0).contains(&forecast.expected_free));
        assert!(forecast.free_low_80 <= forecast.expected_free);
    }
    assert!(scoring.ready(), "a model is active and ingestion caught up");

    // Graceful shutdown: the server and the scorer let go of the live state, then ingestion
    // stops cleanly.
    drop(client);
    let _ = shutdown.send(());
    server.await.expect("the server stops");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    scorer.join().expect("the scorer stops");
    drop(scoring);
    Arc::try_unwrap(ingest)
        .map_err(|_| "still shared")
        .expect("nothing else holds the live state")
        .stop()
        .expect("a clean stop");
}
