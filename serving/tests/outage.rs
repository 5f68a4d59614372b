//! A broker outage: the consumer keeps the last known state, flags it stale with its age, reconnects
//! when the broker is back and catches up to the state of an uninterrupted run.
//!
//! Runs a broker of its own ([`OwnBroker`]: the `noida-db` binary `scripts/test.sh` installs), since
//! it kills and restarts it.

use std::sync::Arc;
use std::time::Duration;

use parkcast_kafka::testing::{OwnBroker, unique_name, wait_until};
use parkcast_kafka::{KafkaConfig, create_topics, now_ms};
use parkcast_proto::SCHEMA_VERSION;
use parkcast_proto::v1::{ReadingKind, SensorReading, SlotReport};
use parkcast_serving::ingest::{Ingest, IngestConfig};
use parkcast_serving::metrics::IngestMetrics;
use parkcast_serving::topology::TopologyIndex;
use prometheus_client::registry::Registry;
use prost::Message as _;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const WAIT: Duration = Duration::from_secs(60);

fn produce(kafka: &KafkaConfig, round: u64, start_ms: i64) {
    let producer: ThreadedProducer<DefaultProducerContext> =
        kafka.producer_config().create().expect("a producer");
    for lot in 0..4 {
        for slot in 0..10 {
            let reading = SensorReading {
                schema_version: SCHEMA_VERSION,
                lot_id: format!("lot-{lot}"),
                slot_id: format!("lot-{lot}:s{slot}"),
                report: if (slot + round).is_multiple_of(2) {
                    SlotReport::Occupied as i32
                } else {
                    SlotReport::Free as i32
                },
                kind: ReadingKind::Change as i32,
                sensor_seq: round,
                event_time_ms: start_ms + round as i64 * 60_000,
            };
            let key = format!("lot-{lot}");
            let value = reading.encode_to_vec();
            producer
                .send(
                    BaseRecord::to(&kafka.topics.sensor)
                        .key(&key)
                        .payload(&value),
                )
                .map_err(|(error, _)| error)
                .expect("the message should queue");
        }
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");
}

#[test]
fn an_outage_keeps_the_state_flags_it_stale_and_catches_up_after() {
    parkcast_kafka::require_broker!();
    let mut broker = OwnBroker::start();
    let kafka = broker.config("outage");
    create_topics(&kafka, &kafka.topics.all(), 2, Duration::from_secs(10)).expect("topics");
    let topology = Arc::new(
        TopologyIndex::new((0..4).map(|lot| {
            (
                format!("lot-{lot}"),
                (0..10).map(|slot| format!("lot-{lot}:s{slot}")).collect(),
            )
        }))
        .expect("valid"),
    );
    let start_ms = now_ms() - 30 * 60_000;
    produce(&kafka, 1, start_ms);

    let state = tempfile::tempdir().expect("temporary folder");
    let config = IngestConfig {
        kafka: kafka.clone(),
        group_id: unique_name("outage"),
        state_dir: state.path().to_owned(),
        checkpoint_interval_ms: 200,
        probe_interval_ms: 200,
        stale_after_ms: 1_000,
        ..IngestConfig::default()
    };
    let metrics = IngestMetrics::register(&mut Registry::default());
    let ingest = Ingest::start(config, Arc::clone(&topology), metrics).expect("ingestion starts");
    assert!(wait_until(WAIT, || ingest.metrics().handled() >= 40
        && ingest.status().lag == Some(0)));
    assert!(!ingest.status().stale);
    let before = ingest.lot_snapshots(Some(start_ms + 60_000));

    // The broker goes away: the state stays, flagged stale with its age.
    broker.kill();
    assert!(
        wait_until(WAIT, || ingest.status().stale),
        "the state should turn stale"
    );
    let status = ingest.status();
    assert!(
        status.contact_age_ms.is_some_and(|age| age >= 1_000),
        "{status:?}"
    );
    assert_eq!(ingest.lot_snapshots(Some(start_ms + 60_000)), before);
    assert!(!ingest.is_finished(), "an outage never stops the consumer");

    // It comes back: the consumer reconnects and reads what was produced since.
    broker.restart();
    produce(&kafka, 2, start_ms);
    assert!(
        wait_until(Duration::from_secs(120), || ingest.metrics().handled()
            >= 80
            && !ingest.status().stale
            && ingest.status().lag == Some(0)),
        "caught up after the outage: {:?}, handled {}",
        ingest.status(),
        ingest.metrics().handled()
    );
    let after = ingest.lot_snapshots(Some(start_ms + 2 * 60_000));
    for snapshot in after.values() {
        assert_eq!((snapshot.occupied, snapshot.free), (5, 5));
        assert_eq!(snapshot.newest_event_ms, Some(start_ms + 2 * 60_000));
    }
    assert_eq!(after.len(), 4);
    ingest.stop().expect("a clean stop");
}
