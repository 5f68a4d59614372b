//! A small city's event stream on a real broker, for the ingestion tests: topologies, readings,
//! producing, reading dead letters back, and the reference state of an uninterrupted run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parkcast_kafka::testing::{unique_name, wait_until};
use parkcast_kafka::{KafkaConfig, now_ms};
use parkcast_proto::SCHEMA_VERSION;
use parkcast_proto::v1::{
    DeadLetter, ReadingKind, SensorReading, SessionEvent, SessionEventKind, SlotReport,
};
use parkcast_serving::ingest::{Ingest, IngestConfig};
use parkcast_serving::live::LotSnapshot;
use parkcast_serving::metrics::IngestMetrics;
use parkcast_serving::topology::TopologyIndex;
use prometheus_client::registry::Registry;
use prost::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

/// How long a test waits for a condition before it fails.
pub const WAIT: Duration = Duration::from_secs(60);

pub fn topology(lots: usize, slots: usize) -> Arc<TopologyIndex> {
    Arc::new(
        TopologyIndex::new((0..lots).map(|lot| {
            (
                format!("lot-{lot}"),
                (0..slots)
                    .map(|slot| format!("lot-{lot}:s{slot}"))
                    .collect(),
            )
        }))
        .expect("valid topology"),
    )
}

pub fn ingest_config(
    kafka: &KafkaConfig,
    group: &str,
    state_dir: &std::path::Path,
) -> IngestConfig {
    IngestConfig {
        kafka: kafka.clone(),
        group_id: group.to_owned(),
        state_dir: state_dir.to_owned(),
        checkpoint_interval_ms: 200,
        probe_interval_ms: 200,
        ..IngestConfig::default()
    }
}

pub fn start(config: IngestConfig, topology: &Arc<TopologyIndex>) -> Ingest {
    let metrics = IngestMetrics::register(&mut Registry::default());
    Ingest::start(config, Arc::clone(topology), metrics).expect("ingestion should start")
}

pub fn producer(kafka: &KafkaConfig) -> ThreadedProducer<DefaultProducerContext> {
    kafka
        .producer_config()
        .create()
        .expect("a producer should start")
}

pub fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &str,
    value: &[u8],
) {
    producer
        .send(BaseRecord::to(topic).key(key.as_bytes()).payload(value))
        .map_err(|(error, _)| error)
        .expect("the message should queue");
}

pub fn reading(lot: usize, slot: usize, occupied: bool, seq: u64, time_ms: i64) -> SensorReading {
    SensorReading {
        schema_version: SCHEMA_VERSION,
        lot_id: format!("lot-{lot}"),
        slot_id: format!("lot-{lot}:s{slot}"),
        report: if occupied {
            SlotReport::Occupied as i32
        } else {
            SlotReport::Free as i32
        },
        kind: ReadingKind::Change as i32,
        sensor_seq: seq,
        event_time_ms: time_ms,
    }
}

/// Every dead letter of the topic (reads until `expected` arrived).
pub fn dead_letters(kafka: &KafkaConfig, expected: usize) -> Vec<DeadLetter> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", unique_name("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("a consumer");
    consumer
        .subscribe(&[&kafka.topics.deadletter])
        .expect("subscribe");
    let mut letters = Vec::new();
    let complete = wait_until(WAIT, || {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            letters.push(
                DeadLetter::decode(message.payload().unwrap_or_default())
                    .expect("dead letters decode"),
            );
        }
        letters.len() >= expected
    });
    assert!(
        complete,
        "only {} of {expected} dead letters arrived",
        letters.len()
    );
    letters
}

/// A small city's stream: readings of every slot in time order with heartbeats, and sessions.
pub struct Stream {
    pub topology: Arc<TopologyIndex>,
    pub messages: Vec<(bool, String, Vec<u8>)>,
    pub last_event_ms: i64,
}

pub fn city_stream(lots: usize, slots: usize, rounds: u64) -> Stream {
    let topology = topology(lots, slots);
    let start = now_ms() - 20 * 60_000;
    let mut messages = Vec::new();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut last_event_ms = start;
    for round in 0..rounds {
        for lot in 0..lots {
            for slot in 0..slots {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let time = start + (round as i64) * 1_000 + slot as i64;
                last_event_ms = last_event_ms.max(time);
                let mut message = reading(lot, slot, state.is_multiple_of(3), round + 1, time);
                if state.is_multiple_of(5) {
                    message.kind = ReadingKind::Heartbeat as i32;
                }
                messages.push((true, format!("lot-{lot}"), message.encode_to_vec()));
                if state.is_multiple_of(7) {
                    let event = SessionEvent {
                        schema_version: SCHEMA_VERSION,
                        session_id: format!("{lot}-{slot}-{round}"),
                        lot_id: format!("lot-{lot}"),
                        slot_id: format!("lot-{lot}:s{slot}"),
                        kind: if state.is_multiple_of(2) {
                            SessionEventKind::Entry as i32
                        } else {
                            SessionEventKind::Exit as i32
                        },
                        event_time_ms: time,
                        vehicle_id: String::new(),
                        customer_id: String::new(),
                    };
                    messages.push((false, format!("lot-{lot}"), event.encode_to_vec()));
                }
            }
        }
    }
    Stream {
        topology,
        messages,
        last_event_ms,
    }
}

pub fn produce(kafka: &KafkaConfig, messages: &[(bool, String, Vec<u8>)]) {
    let producer = producer(kafka);
    for (sensor, key, value) in messages {
        let topic = if *sensor {
            &kafka.topics.sensor
        } else {
            &kafka.topics.session
        };
        send(&producer, topic, key, value);
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("the broker should take the stream");
}

pub fn produce_all(kafka: &KafkaConfig, stream: &Stream) {
    produce(kafka, &stream.messages);
}

/// Waits until the replica runs (not down), owns `partitions` partitions and has read all of them.
pub fn caught_up(ingest: &Ingest, partitions: u64) -> bool {
    wait_until(WAIT, || {
        let status = ingest.status();
        status.down.is_none() && status.assigned_partitions == partitions && status.lag == Some(0)
    })
}

pub fn uninterrupted(
    kafka: &KafkaConfig,
    stream: &Stream,
    partitions: u64,
) -> BTreeMap<String, LotSnapshot> {
    let dir = tempfile::tempdir().expect("temporary folder");
    let ingest = start(
        ingest_config(kafka, &unique_name("reference"), dir.path()),
        &stream.topology,
    );
    assert!(
        wait_until(WAIT, || ingest.metrics().handled()
            >= stream.messages.len() as u64),
        "the reference run handled {} of {}",
        ingest.metrics().handled(),
        stream.messages.len()
    );
    assert!(caught_up(&ingest, partitions));
    let snapshots = ingest.lot_snapshots(Some(stream.last_event_ms));
    ingest.stop().expect("a clean stop");
    snapshots
}
