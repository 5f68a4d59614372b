//! Producers that never stop ingestion, against the real broker: dead letters of any size fit the
//! dead-letter topic and describe the original (length, SHA-256), and a dead-letter producer that
//! librdkafka declared fatal (the broker came back with an empty log, so the idempotent producer's
//! sequence numbers no longer match) is replaced and loses no letter.
//!
//! The pricing feed's producer is tested the same way in `pricing_kafka.rs`.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::city::*;
use parkcast_kafka::testing::{OwnBroker, fresh_config, unique_name, wait_until};
use parkcast_kafka::{
    DEADLETTER_SCHEMA_VERSION, DEFAULT_MESSAGE_MAX_BYTES, DeadLetterSink, KafkaConfig,
    RECORD_MARGIN, SourcePosition, create_topics, now_ms,
};
use parkcast_proto::v1::DeadLetter;
use parkcast_serving::decode::Reason;
use parkcast_serving::ingest::{Ingest, IngestConfig};
use parkcast_serving::metrics::{IngestMetrics, InputTopic};
use prometheus_client::registry::Registry;
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use sha2::{Digest, Sha256};

/// The sizes of the brief: nothing, small, medium, just under and at 1 MiB (past librdkafka's
/// default `message.max.bytes` of 1,000,000 with the letter's header) and far past it.
const SIZES: [usize; 6] = [0, 1 << 10, 100 << 10, 999 << 10, 1 << 20, 3 << 19];

/// Fuzzer garbage of `len` bytes (never a valid protobuf message: every byte has its high bit).
fn garbage(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|at| ((at % 251) as u8).wrapping_add(seed) | 0x80)
        .collect()
}

/// Every record of the dead-letter topic, as (record key, record value), until `expected` arrived.
fn dead_letter_records(kafka: &KafkaConfig, expected: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let records = dead_letter_records_until(kafka, |records| records.len() >= expected);
    assert_eq!(records.len(), expected);
    records
}

/// The records of the dead-letter topic, until `complete` holds for them.
fn dead_letter_records_until(
    kafka: &KafkaConfig,
    mut complete: impl FnMut(&[(Vec<u8>, Vec<u8>)]) -> bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", unique_name("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .set("fetch.message.max.bytes", "10000000")
        .create()
        .expect("a consumer");
    consumer
        .subscribe(&[&kafka.topics.deadletter])
        .expect("subscribe");
    let mut records = Vec::new();
    let arrived = wait_until(WAIT, || {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            records.push((
                message.key().unwrap_or_default().to_vec(),
                message.payload().unwrap_or_default().to_vec(),
            ));
        }
        complete(&records)
    });
    assert!(arrived, "{} dead letters arrived, not all", records.len());
    records
}

/// Checks a letter against the original it stands for.
fn assert_describes(letter: &DeadLetter, original: &[u8]) {
    assert_eq!(letter.schema_version, DEADLETTER_SCHEMA_VERSION);
    assert_eq!(letter.original_value_size, original.len() as u64);
    assert_eq!(
        letter.original_value_sha256,
        Sha256::digest(original).to_vec(),
        "the hash of the whole original"
    );
    assert!(
        original.starts_with(&letter.original_value),
        "the letter keeps the original's first bytes"
    );
    assert_eq!(
        letter.original_value_truncated,
        letter.original_value.len() < original.len()
    );
}

#[test]
fn dead_letters_of_every_size_arrive_within_the_limit_and_describe_the_original() {
    parkcast_kafka::require_broker!();
    let kafka = fresh_config("dlq-sizes", 1);
    let mut sink = DeadLetterSink::new(&kafka).expect("the sink starts");
    // noida-db answers DescribeConfigs with Kafka's default topic limit; the producer's is lower.
    assert!(wait_until(WAIT, || sink.budget().topic_limit.is_some()));
    let budget = sink.budget();
    assert_eq!(budget.topic_limit, Some(1_048_588));
    assert_eq!(budget.producer_limit, DEFAULT_MESSAGE_MAX_BYTES);
    let limit = DEFAULT_MESSAGE_MAX_BYTES - RECORD_MARGIN;
    assert_eq!(budget.record_bytes(), limit);
    let originals: Vec<Vec<u8>> = SIZES
        .iter()
        .enumerate()
        .map(|(index, size)| garbage(*size, index as u8))
        .collect();
    for (offset, original) in originals.iter().enumerate() {
        sink.send(
            SourcePosition {
                topic: &kafka.topics.sensor,
                partition: 0,
                offset: offset as i64,
            },
            Some(b"lot-0"),
            original,
            "undecodable",
            "not a SensorReading",
        )
        .expect("a letter of any size queues");
    }
    sink.flush(Duration::from_secs(60))
        .expect("every letter is acknowledged");
    assert_eq!(sink.delivered(), SIZES.len() as u64);

    let records = dead_letter_records(&kafka, SIZES.len());
    assert_eq!(records.len(), SIZES.len());
    for (key, value) in &records {
        assert!(
            key.len() + value.len() <= limit,
            "a record of {} bytes",
            key.len() + value.len()
        );
        assert_eq!(key, b"lot-0", "keyed like its source message");
        let letter = DeadLetter::decode(value.as_slice()).expect("a DeadLetter");
        assert_describes(&letter, &originals[letter.source_offset as usize]);
        let size = SIZES[letter.source_offset as usize];
        assert_eq!(
            letter.original_value_truncated,
            size > 100 << 10,
            "{size} bytes"
        );
    }
}

#[test]
fn dead_letters_fit_a_topic_limit_below_the_producers() {
    parkcast_kafka::require_broker!();
    let kafka = fresh_config("dlq-small-topic", 1);
    // The dead-letter topic again, with a limit of its own (the shared config created it already).
    let kafka = KafkaConfig {
        topics: parkcast_kafka::TopicNames {
            deadletter: unique_name("dlq-small-topic-300k"),
            ..kafka.topics.clone()
        },
        ..kafka
    };
    let admin: AdminClient<DefaultClientContext> =
        kafka.client_config().create().expect("an admin client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let created = runtime
        .block_on(
            admin.create_topics(
                &[
                    NewTopic::new(&kafka.topics.deadletter, 1, TopicReplication::Fixed(1))
                        .set("max.message.bytes", "300000"),
                ],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            ),
        )
        .expect("the broker answers");
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let mut sink = DeadLetterSink::new(&kafka).expect("the sink starts");
    assert!(wait_until(WAIT, || sink.budget().topic_limit.is_some()));
    assert_eq!(sink.budget().topic_limit, Some(300_000));
    let limit = 300_000 - RECORD_MARGIN;
    let originals: Vec<Vec<u8>> = [3 << 19, 200_000, 10, 299_000]
        .iter()
        .enumerate()
        .map(|(index, size)| garbage(*size, index as u8))
        .collect();
    for (offset, original) in originals.iter().enumerate() {
        sink.send(
            SourcePosition {
                topic: &kafka.topics.sensor,
                partition: 0,
                offset: offset as i64,
            },
            Some(b"lot-1"),
            original,
            "too_large",
            "past max_message_bytes",
        )
        .expect("queues");
    }
    sink.flush(Duration::from_secs(60)).expect("acknowledged");
    for (key, value) in dead_letter_records(&kafka, originals.len()) {
        assert!(key.len() + value.len() <= limit);
        let letter = DeadLetter::decode(value.as_slice()).expect("a DeadLetter");
        assert_describes(&letter, &originals[letter.source_offset as usize]);
    }
}

fn big_producer(kafka: &KafkaConfig) -> ThreadedProducer<DefaultProducerContext> {
    kafka
        .producer_config()
        .set("message.max.bytes", "20000000")
        .create()
        .expect("a producer")
}

#[test]
fn ingestion_dead_letters_garbage_of_every_size_and_goes_on() {
    parkcast_kafka::require_broker!();
    let kafka = fresh_config("dlq-ingest", 1);
    let topology = topology(1, 2);
    let producer = big_producer(&kafka);
    let base = now_ms() - 60_000;
    let sensor = kafka.topics.sensor.clone();
    // Offsets on the one partition: the garbage first, then one good reading.
    let mut originals = BTreeMap::new();
    for (index, size) in SIZES.iter().enumerate() {
        let original = garbage(*size, index as u8);
        send(&producer, &sensor, "lot-0", &original);
        originals.insert(index as i64, original);
    }
    let good = reading(0, 1, true, 1, base);
    send(&producer, &sensor, "lot-0", &good.encode_to_vec());
    producer
        .flush(Duration::from_secs(60))
        .expect("the broker takes every size");

    let state = tempfile::tempdir().expect("temporary folder");
    let config = IngestConfig {
        max_message_bytes: 1 << 20,
        ..ingest_config(&kafka, &unique_name("dlq-ingest"), state.path())
    };
    let metrics = IngestMetrics::register(&mut Registry::default());
    let ingest =
        Ingest::start(config, Arc::clone(&topology), metrics.clone()).expect("ingestion starts");
    let total = SIZES.len() as u64 + 1;
    assert!(
        wait_until(WAIT, || metrics.handled() >= total),
        "handled {} of {total}; status {:?}",
        metrics.handled(),
        ingest.status()
    );
    assert!(caught_up(&ingest, 1));
    let snapshot = ingest.lot_snapshots(Some(base + 1));
    ingest.stop().expect("a clean stop");
    assert_eq!(
        snapshot["lot-0"].occupied, 1,
        "the good reading after the garbage is applied"
    );
    assert_eq!(
        metrics.rejected_count(InputTopic::Sensor, Reason::TooLarge),
        1,
        "1.5 MiB is past max_message_bytes"
    );
    assert_eq!(
        metrics.consumer_restarts.get(),
        0,
        "the consumer never died"
    );
    let records = dead_letter_records(&kafka, SIZES.len());
    assert_eq!(records.len(), SIZES.len());
    for (key, value) in &records {
        assert!(key.len() + value.len() <= DEFAULT_MESSAGE_MAX_BYTES - RECORD_MARGIN);
        let letter = DeadLetter::decode(value.as_slice()).expect("a DeadLetter");
        assert_eq!(letter.source_topic, sensor);
        assert_describes(&letter, &originals[&letter.source_offset]);
    }
}

#[test]
fn a_fatal_dead_letter_producer_is_replaced_and_loses_no_letter() {
    parkcast_kafka::require_broker!();
    let mut broker = OwnBroker::start();
    let kafka = broker.config("dlq-fatal");
    let topics = || {
        create_topics(&kafka, &kafka.topics.all(), 1, Duration::from_secs(10)).expect("the topics");
    };
    topics();
    let replaced = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&replaced);
    let mut sink = DeadLetterSink::new(&kafka)
        .expect("the sink starts")
        .on_recreated(move || {
            counter.fetch_add(1, Ordering::Relaxed);
        });
    let send_letters = |sink: &mut DeadLetterSink, offsets: std::ops::Range<i64>| {
        for offset in offsets {
            sink.send(
                SourcePosition {
                    topic: &kafka.topics.sensor,
                    partition: 0,
                    offset,
                },
                Some(b"lot-0"),
                &garbage(100, offset as u8),
                "undecodable",
                "not a SensorReading",
            )
            .expect("queues");
        }
    };
    send_letters(&mut sink, 0..20);
    sink.flush(Duration::from_secs(30)).expect("acknowledged");

    // The broker loses its disk: acknowledged letters are gone, and the producer's next sequence
    // number is one the broker never saw (OutOfOrderSequenceNumber: fatal for librdkafka).
    broker.restart_empty();
    topics();
    send_letters(&mut sink, 20..30);
    sink.flush(Duration::from_secs(60))
        .expect("the letters are sent again on a new producer");
    assert_eq!(sink.recreated(), 1, "the fatal producer was replaced");
    assert_eq!(replaced.load(Ordering::Relaxed), 1, "and counted");
    // It keeps delivering.
    send_letters(&mut sink, 30..40);
    sink.flush(Duration::from_secs(30)).expect("acknowledged");
    assert_eq!(sink.recreated(), 1);

    let offsets: Vec<i64> = dead_letter_records(&kafka, 20)
        .iter()
        .map(|(_, value)| {
            DeadLetter::decode(value.as_slice())
                .expect("a DeadLetter")
                .source_offset
        })
        .collect();
    assert_eq!(
        offsets,
        (20..40).collect::<Vec<_>>(),
        "every letter after the loss arrived once, in order"
    );
}

#[test]
fn ingestion_replaces_a_fatal_dead_letter_producer_and_counts_it() {
    parkcast_kafka::require_broker!();
    let mut broker = OwnBroker::start();
    let kafka = broker.config("dlq-ingest-fatal");
    let topics = || {
        create_topics(&kafka, &kafka.topics.all(), 1, Duration::from_secs(10)).expect("the topics");
    };
    topics();
    let topology = topology(1, 2);
    let base = now_ms() - 60_000;
    let first = garbage(100, 1);
    let producer = big_producer(&kafka);
    send(&producer, &kafka.topics.sensor, "lot-0", &first);
    producer.flush(Duration::from_secs(30)).expect("sent");
    drop(producer);
    let state = tempfile::tempdir().expect("temporary folder");
    let config = ingest_config(&kafka, &unique_name("dlq-ingest-fatal"), state.path());
    let metrics = IngestMetrics::register(&mut Registry::default());
    let ingest =
        Ingest::start(config, Arc::clone(&topology), metrics.clone()).expect("ingestion starts");
    assert!(wait_until(WAIT, || metrics.deadletters.get() == 1));
    dead_letter_records(&kafka, 1);

    // The broker loses its disk; the dead-letter producer's next letter carries a sequence number
    // the broker never saw, and librdkafka declares it fatal.
    broker.restart_empty();
    topics();
    let second = garbage(200, 2);
    let producer = big_producer(&kafka);
    send(&producer, &kafka.topics.sensor, "lot-0", &second);
    let good = reading(0, 1, true, 1, base);
    send(
        &producer,
        &kafka.topics.sensor,
        "lot-0",
        &good.encode_to_vec(),
    );
    producer.flush(Duration::from_secs(30)).expect("sent");
    assert!(
        wait_until(WAIT, || metrics.deadletter_producer_recreated.get() == 1),
        "the fatal dead-letter producer is replaced; status {:?}",
        ingest.status()
    );
    // The log starts again at offset 0: the second garbage's letter is the one of its size.
    let letters = |records: &[(Vec<u8>, Vec<u8>)]| -> Vec<DeadLetter> {
        records
            .iter()
            .map(|(_, value)| DeadLetter::decode(value.as_slice()).expect("a DeadLetter"))
            .collect()
    };
    let records = dead_letter_records_until(&kafka, |records| {
        letters(records)
            .iter()
            .any(|letter| letter.original_value_size == second.len() as u64)
    });
    let letter = letters(&records)
        .into_iter()
        .find(|letter| letter.original_value_size == second.len() as u64)
        .expect("found above");
    assert_describes(&letter, &second);
    assert!(
        wait_until(WAIT, || ingest
            .lot_snapshots(Some(base + 1))
            .get("lot-0")
            .is_some_and(|lot| lot.occupied == 1)),
        "the good reading after it is applied"
    );
    assert_eq!(
        metrics.consumer_restarts.get(),
        0,
        "the consumer never died"
    );
    ingest.stop().expect("a clean stop");
}
