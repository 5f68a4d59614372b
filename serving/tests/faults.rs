//! The fault suite: what an operator's own tooling does to a server (poison messages of every size,
//! a broker that comes back with a shorter log, a topic recreated and refilled, a long-poll fetch
//! on the consumer's connection, a sensor clock a day ahead, a consumer read while its assignment
//! is new), against a real broker. In each the fault is visible within seconds (status, stale
//! reason, metric, dead letter), ingestion goes on, and the state converges to an uninterrupted
//! run's wherever the log still holds the events.
//!
//! A consumer thread that dies is in `supervision.rs` (fail points are process-wide).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common;

use common::city::*;
use parkcast_kafka::testing::{OwnBroker, fresh_config, unique_name, wait_until};
use parkcast_kafka::{EmbeddedBroker, KafkaConfig, create_topics, now_ms};
use parkcast_proto::v1::DeadLetter;
use parkcast_serving::decode::Reason;
use parkcast_serving::ingest::{Ingest, IngestConfig, IngestOptions, TimeReference};
use parkcast_serving::metrics::{IngestMetrics, InputTopic};
use parkcast_serving::scoring::LiveSource;
use prometheus_client::registry::Registry;
use prost::Message as _;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};

/// Seconds within which a fault must show.
const NOTICED: Duration = Duration::from_secs(15);

fn big_producer(kafka: &KafkaConfig) -> ThreadedProducer<DefaultProducerContext> {
    kafka
        .producer_config()
        .set("message.max.bytes", "20000000")
        .create()
        .expect("a producer")
}

#[test]
fn poison_messages_of_every_size_are_dead_lettered_and_ingestion_goes_on() {
    parkcast_kafka::require_broker!();
    let kafka = fresh_config("poison", 1);
    let topology = topology(1, 2);
    let producer = big_producer(&kafka);
    let base = now_ms() - 60_000;
    let sensor = kafka.topics.sensor.clone();
    let state = tempfile::tempdir().expect("temporary folder");
    let config = IngestConfig {
        max_message_bytes: 1 << 20,
        ..ingest_config(&kafka, &unique_name("poison"), state.path())
    };
    // Garbage from a fuzzer, every size from nothing to past the topics' bound (`max_message_bytes`,
    // 1 MiB here; noida-db itself takes records of tens of MB): around the dead-letter producer's
    // own limit (1,000,000 bytes, where the letter with its header would not fit) and far past it.
    let sizes = [
        0usize,
        1,
        100,
        10 << 10,
        500 << 10,
        999_000,
        999_950,
        1 << 20,
        (1 << 20) + 1,
        5 << 20,
    ];
    let mut good = 0;
    for (index, size) in sizes.iter().enumerate() {
        let ok = reading(
            0,
            index % 2,
            index % 3 == 0,
            index as u64 + 1,
            base + index as i64,
        );
        send(&producer, &sensor, "lot-0", &ok.encode_to_vec());
        good += 1;
        let garbage: Vec<u8> = (0..*size).map(|at| (at % 251) as u8 | 0x80).collect();
        send(&producer, &sensor, "lot-0", &garbage);
    }
    let last = reading(0, 1, true, 99, base + 1_000);
    send(&producer, &sensor, "lot-0", &last.encode_to_vec());
    good += 1;
    producer
        .flush(Duration::from_secs(60))
        .expect("the broker takes every size");

    let ingest = start(config, &topology);
    let total = good + sizes.len() as u64;
    assert!(
        wait_until(WAIT, || ingest.metrics().handled() >= total),
        "handled {} of {total}; status {:?}",
        ingest.metrics().handled(),
        ingest.status()
    );
    assert!(caught_up(&ingest, 1));
    let metrics = ingest.metrics().clone();
    assert_eq!(
        metrics.consumer_restarts.get(),
        0,
        "no poison ends the consumer"
    );
    let snapshot = ingest.lot_snapshots(Some(base + 2_000));
    ingest.stop().expect("a clean stop");
    assert_eq!(
        snapshot["lot-0"].occupied, 1,
        "the last good reading applied"
    );
    assert_eq!(
        metrics.rejected_count(InputTopic::Sensor, Reason::TooLarge),
        2,
        "past max_message_bytes: not decoded"
    );
    let letters = dead_letters(&kafka, sizes.len());
    assert_eq!(letters.len(), sizes.len());
    for letter in &letters {
        assert!(
            letter.encoded_len() <= 1_000_000,
            "a dead letter fits the dead-letter producer's limit: {} bytes",
            letter.encoded_len()
        );
        assert_eq!(letter.source_topic, sensor);
        assert!(!letter.detail.is_empty());
    }
    let too_large: Vec<&DeadLetter> = letters
        .iter()
        .filter(|letter| letter.reason == "too_large")
        .collect();
    assert_eq!(too_large.len(), 2);
}

/// A city stream whose events carry the time at which it is produced, and its uninterrupted
/// state on a broker of the test's own.
fn own_topics(broker: &OwnBroker, prefix: &str, partitions: i32) -> KafkaConfig {
    let kafka = broker.config(prefix);
    create_topics(
        &kafka,
        &kafka.topics.all(),
        partitions,
        Duration::from_secs(10),
    )
    .expect("topics");
    kafka
}

#[test]
fn a_broker_back_with_an_empty_log_is_noticed_and_the_state_rebuilt_from_what_it_holds() {
    parkcast_kafka::require_broker!();
    let mut broker = OwnBroker::start();
    let partitions = 2;
    let kafka = own_topics(&broker, "shorter", partitions);
    let stream = city_stream(4, 10, 20);
    let before = &stream.messages[..stream.messages.len() / 2];
    produce(&kafka, before);
    let state = tempfile::tempdir().expect("temporary folder");
    let config = ingest_config(&kafka, &unique_name("shorter"), state.path());
    let ingest = start(config, &stream.topology);
    assert!(wait_until(WAIT, || ingest.metrics().handled()
        >= before.len() as u64
        && ingest.metrics().checkpoints.get() >= 1));
    assert!(caught_up(&ingest, partitions as u64));

    // The broker loses its disk: every topic comes back empty.
    broker.restart_empty();
    create_topics(
        &kafka,
        &kafka.topics.all(),
        partitions,
        Duration::from_secs(10),
    )
    .expect("topics");
    let noticed_from = Instant::now();
    assert!(
        wait_until(NOTICED, || ingest.metrics().log_regressions.get() >= 1),
        "a log shorter than the position is noticed: {:?}",
        ingest.status()
    );
    eprintln!("regression noticed in {:?}", noticed_from.elapsed());
    // The state follows the log: empty now, then whatever is produced again.
    produce(&kafka, &stream.messages);
    assert!(
        wait_until(WAIT, || ingest.lot_snapshots(Some(stream.last_event_ms))
            == uninterrupted(&kafka, &stream, partitions as u64)),
        "the rebuilt state equals an uninterrupted run over the log as it is now"
    );
    ingest.stop().expect("a clean stop");
}

#[test]
fn a_topic_recreated_and_refilled_past_the_checkpoint_is_not_taken_for_the_old_one() {
    parkcast_kafka::require_broker!();
    let mut broker = OwnBroker::start();
    let partitions = 2;
    let kafka = own_topics(&broker, "refilled", partitions);
    let old = city_stream(4, 10, 10);
    produce(&kafka, &old.messages);
    let state = tempfile::tempdir().expect("temporary folder");
    let group = unique_name("refilled");
    let config = ingest_config(&kafka, &group, state.path());
    let first = start(config.clone(), &old.topology);
    assert!(caught_up(&first, partitions as u64));
    first.stop().expect("a clean stop, checkpointed");

    // While the server is down the topics are deleted and recreated, and another stream, longer
    // than the old one, is produced: every checkpointed offset exists again, holding other events.
    broker.restart_empty();
    create_topics(
        &kafka,
        &kafka.topics.all(),
        partitions,
        Duration::from_secs(10),
    )
    .expect("topics");
    let new = city_stream(4, 10, 30);
    produce(&kafka, &new.messages);
    let second = start(config, &new.topology);
    assert!(caught_up(&second, partitions as u64));
    assert!(
        second.metrics().log_regressions.get() >= 1,
        "the restart re-read the checkpoint's last message and found another"
    );
    let recovered = second.lot_snapshots(Some(new.last_event_ms));
    second.stop().expect("a clean stop");
    assert_eq!(
        recovered,
        uninterrupted(&kafka, &new, partitions as u64),
        "the state is the new log's, not a mix"
    );
}

#[test]
fn a_restart_on_an_unchanged_log_verifies_it_and_reads_nothing_twice() {
    parkcast_kafka::require_broker!();
    let kafka = fresh_config("verified", 2);
    let stream = city_stream(4, 10, 10);
    let (first_part, second_part) = stream.messages.split_at(stream.messages.len() / 2);
    produce(&kafka, first_part);
    let state = tempfile::tempdir().expect("temporary folder");
    let config = ingest_config(&kafka, &unique_name("verified"), state.path());
    let first = start(config.clone(), &stream.topology);
    assert!(caught_up(&first, 2));
    first.stop().expect("a clean stop");
    produce(&kafka, second_part);
    let second = start(config, &stream.topology);
    assert!(caught_up(&second, 2));
    assert_eq!(second.metrics().log_regressions.get(), 0);
    assert!(
        second.metrics().log_verified.get() >= 2,
        "both topics' partitions verified"
    );
    assert_eq!(second.metrics().handled(), second_part.len() as u64);
    assert_eq!(
        second.lot_snapshots(Some(stream.last_event_ms)),
        uninterrupted(&kafka, &stream, 2)
    );
    second.stop().expect("a clean stop");
}

#[test]
fn readiness_waits_for_a_lag_measured_on_the_current_assignment() {
    parkcast_kafka::require_broker!();
    let kafka = fresh_config("ready", 3);
    let stream = city_stream(6, 25, 60);
    produce_all(&kafka, &stream);
    let total = stream.messages.len() as u64;
    let state = tempfile::tempdir().expect("temporary folder");
    let config = IngestConfig {
        probe_interval_ms: 50,
        ..ingest_config(&kafka, &unique_name("ready"), state.path())
    };
    let ingest = start(config, &stream.topology);
    // Watch as closely as a health check could: caught up must never be claimed early.
    let mut claimed = false;
    let deadline = Instant::now() + WAIT;
    while !claimed && Instant::now() < deadline {
        if ingest.caught_up() {
            claimed = true;
            let handled = ingest.metrics().handled();
            assert!(
                handled >= total,
                "caught up claimed after {handled} of {total} messages: {:?}",
                ingest.status()
            );
        }
    }
    assert!(claimed, "caught up in time: {:?}", ingest.status());
    ingest.stop().expect("a clean stop");
}

#[test]
fn a_long_poll_fetch_does_not_hold_the_liveness_probe_back() {
    parkcast_kafka::require_broker!();
    // The in-process broker of `parkcast demo` holds a fetch until data arrives or
    // fetch.wait.max.ms passes; requests to that broker on the same connection queue behind it.
    let broker = EmbeddedBroker::start().expect("the embedded broker starts");
    let mut kafka = KafkaConfig {
        bootstrap_servers: broker.bootstrap_servers(),
        topics: parkcast_kafka::TopicNames::with_prefix(&unique_name("longpoll")),
        ..KafkaConfig::default()
    };
    broker
        .create_topics(&kafka.topics.all(), 1)
        .expect("topics");
    kafka
        .librdkafka_options
        .insert("fetch.wait.max.ms".into(), "20000".into());
    let stream = city_stream(2, 4, 3);
    produce_all(&kafka, &stream);
    let state = tempfile::tempdir().expect("temporary folder");
    let config = IngestConfig {
        stale_after_ms: 3_000,
        probe_interval_ms: 200,
        ..ingest_config(&kafka, &unique_name("longpoll"), state.path())
    };
    let ingest = start(config, &stream.topology);
    assert!(caught_up(&ingest, 1));
    // Nothing more arrives: the consumer's fetch now waits 20 s at the broker. The probe must keep
    // proving contact meanwhile.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(8) {
        let status = ingest.status();
        assert!(
            !status.stale && status.lag == Some(0),
            "stale while the broker answers, {:?} after caught up: {status:?}",
            watched.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ingest.stop().expect("a clean stop");
}

#[test]
fn a_reading_a_day_ahead_cannot_move_a_replays_stream_clock() {
    parkcast_kafka::require_broker!();
    let kafka = fresh_config("clock", 1);
    let topology = topology(4, 2);
    // A replay of a past day: times are far behind the wall clock.
    let base = now_ms() - 30 * 86_400_000;
    let producer = producer(&kafka);
    let sensor = kafka.topics.sensor.clone();
    let mut expected_letters = 0;
    for lot in 0..4 {
        let value = reading(lot, 0, true, 1, base + lot as i64 * 1_000);
        send(
            &producer,
            &sensor,
            &format!("lot-{lot}"),
            &value.encode_to_vec(),
        );
    }
    // One sensor's clock is a day ahead.
    let broken = reading(0, 1, true, 2, base + 86_400_000);
    send(&producer, &sensor, "lot-0", &broken.encode_to_vec());
    expected_letters += 1;
    // The replay goes on: every lot, lot 0 included, a minute later.
    for lot in 0..4 {
        let value = reading(lot, 1, false, 3, base + 60_000 + lot as i64);
        send(
            &producer,
            &sensor,
            &format!("lot-{lot}"),
            &value.encode_to_vec(),
        );
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");
    let state = tempfile::tempdir().expect("temporary folder");
    let metrics = IngestMetrics::register(&mut Registry::default());
    let ingest = Ingest::start_with(
        ingest_config(&kafka, &unique_name("clock"), state.path()),
        Arc::clone(&topology),
        metrics,
        IngestOptions {
            grid: None,
            time: TimeReference::Stream {
                start_ms: Some(base),
            },
        },
    )
    .expect("ingestion starts");
    assert!(caught_up(&ingest, 1));
    assert_eq!(
        ingest
            .metrics()
            .rejected_count(InputTopic::Sensor, Reason::FarFuture),
        1,
        "the day-ahead reading is refused against the stream clock"
    );
    let stream_time = ingest.with_state(|live, _| live.stream_time_ms());
    assert_eq!(
        stream_time,
        Some(base + 60_003),
        "the clock stayed with the replay"
    );
    let snapshots = ingest.lot_snapshots(None);
    for (lot, snapshot) in &snapshots {
        assert_eq!(
            (snapshot.occupied, snapshot.free, snapshot.unknown),
            (1, 1, 0),
            "{lot}: every later valid reading applied, no lot left behind"
        );
    }
    // A real jump (the replay skips an hour) moves the clock once three lots agree.
    for lot in 0..3 {
        let value = reading(lot, 0, false, 10, base + 3_600_000 + lot as i64 * 1_000);
        send(
            &producer,
            &sensor,
            &format!("lot-{lot}"),
            &value.encode_to_vec(),
        );
        expected_letters += usize::from(lot < 2);
    }
    producer.flush(Duration::from_secs(30)).expect("delivered");
    assert!(wait_until(WAIT, || ingest
        .with_state(|live, _| live.stream_time_ms())
        == Some(base + 3_602_000)));
    ingest.stop().expect("a clean stop");
    let letters = dead_letters(&kafka, expected_letters);
    assert!(letters.iter().all(|letter| letter.reason == "far_future"));
}
