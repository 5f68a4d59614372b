//! Ingestion against the real broker that `scripts/test.sh` starts: bad input dead-lettered with its
//! reason while good input is applied, and recovery (clean stop, crash, rebalancing) ending in the
//! same state as an uninterrupted run.

use std::time::Duration;

use crate::common;

use common::city::*;

use parkcast_kafka::now_ms;
use parkcast_kafka::testing::{fresh_config, unique_name, wait_until};
use parkcast_proto::SCHEMA_VERSION;
use parkcast_proto::v1::{SensorReading, SessionEvent, SessionEventKind};
use parkcast_serving::decode::Reason;
use parkcast_serving::ingest::IngestConfig;
use parkcast_serving::live::Applied;
use parkcast_serving::metrics::InputTopic;
use prost::Message as _;
use rdkafka::producer::Producer;

#[test]
fn bad_messages_are_dead_lettered_with_their_reason_and_good_ones_applied() {
    parkcast_kafka::require_broker!();
    let kafka = fresh_config("badinput", 2);
    let topology = topology(3, 4);
    let producer = producer(&kafka);
    let now = now_ms();
    let base = now - 30 * 60_000;
    let sensor = kafka.topics.sensor.clone();
    let mut valid = 0;
    // Good readings: every slot free, then slot 0 of every lot occupied.
    for lot in 0..3 {
        for slot in 0..4 {
            let good = reading(lot, slot, false, 1, base + 1_000 * slot as i64);
            send(&producer, &sensor, &good.lot_id, &good.encode_to_vec());
            valid += 1;
        }
        let arrival = reading(lot, 0, true, 2, base + 60_000);
        send(
            &producer,
            &sensor,
            &arrival.lot_id,
            &arrival.encode_to_vec(),
        );
        valid += 1;
    }
    // Bad ones, each with the reason it must be dead-lettered for.
    let arrival = reading(1, 0, true, 2, base + 60_000);
    let bytes = arrival.encode_to_vec();
    let wrong_schema = SensorReading {
        schema_version: 7,
        ..reading(0, 1, true, 5, base + 120_000)
    };
    let unknown_lot = SensorReading {
        lot_id: "lot-zz".into(),
        slot_id: "lot-zz:s0".into(),
        ..reading(0, 1, true, 5, base + 120_000)
    };
    let out_of_order = reading(2, 0, false, 1, base + 30_000);
    let far_future = reading(0, 2, true, 9, now + 3_600_000);
    let session_on_sensor_topic = SessionEvent {
        schema_version: SCHEMA_VERSION,
        session_id: "s-1".into(),
        lot_id: "lot-0".into(),
        slot_id: "lot-0:s1".into(),
        kind: SessionEventKind::Entry as i32,
        event_time_ms: base,
        vehicle_id: String::new(),
        customer_id: String::new(),
    };
    let bad: Vec<(&str, Vec<u8>, Reason)> = vec![
        (
            "lot-1",
            bytes[..bytes.len() - 4].to_vec(),
            Reason::Malformed,
        ),
        ("lot-0", vec![0xff; 16], Reason::Malformed),
        (
            "lot-0",
            wrong_schema.encode_to_vec(),
            Reason::UnsupportedSchema,
        ),
        ("lot-zz", unknown_lot.encode_to_vec(), Reason::UnknownLot),
        ("lot-1", bytes.clone(), Reason::Duplicate),
        ("lot-2", out_of_order.encode_to_vec(), Reason::OutOfOrder),
        ("lot-0", far_future.encode_to_vec(), Reason::FarFuture),
        // Another topic's message: its string fields land on the reading's enum fields.
        (
            "lot-0",
            session_on_sensor_topic.encode_to_vec(),
            Reason::Malformed,
        ),
    ];
    for (key, value, _) in &bad {
        send(&producer, &sensor, key, value);
    }
    // Good ones after the bad ones are still applied: the consumer never stops on input.
    let departure = reading(0, 0, false, 3, base + 180_000);
    send(&producer, &sensor, "lot-0", &departure.encode_to_vec());
    valid += 1;
    // Sessions: two good, one without a session id.
    let session = |kind: SessionEventKind, id: &str| SessionEvent {
        schema_version: SCHEMA_VERSION,
        session_id: id.into(),
        lot_id: "lot-2".into(),
        slot_id: "lot-2:s3".into(),
        kind: kind as i32,
        event_time_ms: base + 200_000,
        vehicle_id: String::new(),
        customer_id: String::new(),
    };
    for event in [
        session(SessionEventKind::Entry, "a"),
        session(SessionEventKind::Exit, "a"),
    ] {
        send(
            &producer,
            &kafka.topics.session,
            "lot-2",
            &event.encode_to_vec(),
        );
        valid += 1;
    }
    let nameless = session(SessionEventKind::Entry, "").encode_to_vec();
    send(&producer, &kafka.topics.session, "lot-2", &nameless);
    producer
        .flush(Duration::from_secs(10))
        .expect("the broker should take the messages");

    let dir = tempfile::tempdir().expect("temporary folder");
    let ingest = start(
        ingest_config(&kafka, &unique_name("badinput"), dir.path()),
        &topology,
    );
    let total = valid + bad.len() as u64 + 1;
    assert!(
        wait_until(WAIT, || ingest.metrics().handled() >= total),
        "handled {} of {total}",
        ingest.metrics().handled()
    );
    let metrics = ingest.metrics().clone();
    let snapshots = ingest.lot_snapshots(Some(base + 300_000));
    let summary = ingest.stop().expect("a clean stop");
    assert_eq!(summary.handled, total, "nothing lost, nothing twice");

    // The valid ones are applied: lot 0 had its car leave, lots 1 and 2 still hold one.
    let occupied: Vec<u32> = snapshots.values().map(|lot| lot.occupied).collect();
    assert_eq!(occupied, vec![0, 1, 1]);
    assert_eq!(snapshots["lot-0"].departures_last_hour, 1);
    assert_eq!(snapshots["lot-2"].entries_last_hour, 1);
    assert_eq!(snapshots["lot-2"].exits_last_hour, 1);
    let applied: u64 = [Applied::Changed, Applied::Confirmed]
        .iter()
        .map(|outcome| metrics.applied_count(InputTopic::Sensor, *outcome))
        .sum::<u64>()
        + metrics.applied_count(InputTopic::Session, Applied::Counted);
    assert_eq!(applied, valid);

    // Each bad one is in the dead-letter topic with its reason, its bytes and its source offset.
    let letters = dead_letters(&kafka, bad.len() + 1);
    assert_eq!(letters.len(), bad.len() + 1);
    for (key, value, reason) in &bad {
        let letter = letters
            .iter()
            .find(|letter| letter.original_value == *value && letter.original_key == key.as_bytes())
            .unwrap_or_else(|| panic!("no dead letter for a {} message", reason.code()));
        assert_eq!(letter.reason, reason.code(), "{}", letter.detail);
        assert_eq!(letter.source_topic, sensor);
        assert!(letter.source_offset >= 0 && !letter.detail.is_empty());
        assert!(metrics.rejected_count(InputTopic::Sensor, *reason) >= 1);
    }
    let nameless_letter = letters
        .iter()
        .find(|letter| letter.source_topic == kafka.topics.session)
        .expect("the nameless session is dead-lettered");
    assert_eq!(
        (
            nameless_letter.reason.as_str(),
            &nameless_letter.original_value
        ),
        ("invalid_value", &nameless)
    );
}

/// The stream arrives in three parts: the first run reads the first (and checkpoints it) and the
/// second, then stops or crashes; the third arrives while it is down; a restart reads on.
fn interrupted_run(abort: bool) {
    let partitions = 3;
    let kafka = fresh_config(if abort { "kill" } else { "stop" }, partitions);
    let stream = city_stream(6, 25, 40);
    let total = stream.messages.len();
    let (first_part, rest) = stream.messages.split_at(total / 2);
    let (second_part, third_part) = rest.split_at(total / 4);

    let dir = tempfile::tempdir().expect("temporary folder");
    let group = unique_name("recovering");
    let config = IngestConfig {
        checkpoint_interval_ms: 1_000,
        ..ingest_config(&kafka, &group, dir.path())
    };
    produce(&kafka, first_part);
    let first = start(config.clone(), &stream.topology);
    assert!(wait_until(WAIT, || first.metrics().handled()
        >= first_part.len() as u64
        && first.metrics().checkpoints.get() >= 1));
    produce(&kafka, second_part);
    let read = (first_part.len() + second_part.len()) as u64;
    assert!(wait_until(WAIT, || first.metrics().handled() >= read));
    if abort {
        first.abort().expect("the aborted run ends");
    } else {
        first.stop().expect("a clean stop");
    }
    produce(&kafka, third_part);

    let reference = uninterrupted(&kafka, &stream, partitions as u64);
    assert_eq!(reference.len(), 6);
    let second = start(config, &stream.topology);
    assert!(caught_up(&second, partitions as u64));
    assert!(
        second.metrics().lots_restored.get() > 0,
        "the restart resumed from checkpoints"
    );
    assert!(second.metrics().handled() >= third_part.len() as u64);
    if !abort {
        assert_eq!(
            second.metrics().handled(),
            third_part.len() as u64,
            "after a clean stop nothing is read twice"
        );
    }
    let recovered = second.lot_snapshots(Some(stream.last_event_ms));
    let rejected: u64 = Reason::ALL
        .iter()
        .map(|reason| second.metrics().rejected_count(InputTopic::Sensor, *reason))
        .sum();
    second.stop().expect("a clean stop");
    assert_eq!(
        rejected, 0,
        "no event was applied twice (it would be a duplicate)"
    );
    assert_eq!(recovered, reference);
}

#[test]
fn a_clean_stop_mid_stream_resumes_to_the_uninterrupted_state() {
    parkcast_kafka::require_broker!();
    interrupted_run(false);
}

#[test]
fn a_crash_mid_stream_resumes_to_the_uninterrupted_state() {
    parkcast_kafka::require_broker!();
    interrupted_run(true);
}

#[test]
fn rebalancing_moves_lots_between_replicas_without_loss_or_double_application() {
    parkcast_kafka::require_broker!();
    let partitions = 4;
    let kafka = fresh_config("rebalance", partitions);
    let stream = city_stream(8, 20, 30);
    produce_all(&kafka, &stream);
    let reference = uninterrupted(&kafka, &stream, partitions as u64);

    let dir = tempfile::tempdir().expect("temporary folder");
    let config = ingest_config(&kafka, &unique_name("replicas"), dir.path());
    let one = start(config.clone(), &stream.topology);
    assert!(wait_until(WAIT, || one.metrics().handled() >= 200));
    // A second replica joins: the group splits the partitions, and each moved partition is
    // checkpointed by its old owner and restored by the new one.
    let two = start(config.clone(), &stream.topology);
    assert!(wait_until(WAIT, || {
        let (a, b) = (one.status(), two.status());
        a.assigned_partitions == 2
            && b.assigned_partitions == 2
            && a.lag == Some(0)
            && b.lag == Some(0)
    }));
    let mut union = one.lot_snapshots(Some(stream.last_event_ms));
    let from_two = two.lot_snapshots(Some(stream.last_event_ms));
    assert!(!union.is_empty() && !from_two.is_empty());
    for (lot, snapshot) in from_two {
        assert!(
            union.insert(lot.clone(), snapshot).is_none(),
            "{lot} owned twice"
        );
    }
    assert_eq!(union, reference);
    // The first replica leaves: the second takes every partition over.
    one.stop().expect("a clean stop");
    assert!(caught_up(&two, partitions as u64));
    assert_eq!(two.lot_snapshots(Some(stream.last_event_ms)), reference);
    two.stop().expect("a clean stop");
}

#[test]
fn a_partition_moved_to_a_machine_without_its_files_is_restored_from_the_changelog() {
    parkcast_kafka::require_broker!();
    let partitions = 4;
    let kafka = fresh_config("changelog", partitions);
    let stream = city_stream(8, 20, 30);
    produce_all(&kafka, &stream);
    let reference = uninterrupted(&kafka, &stream, partitions as u64);

    // Two machines: a state folder each, one changelog topic between them.
    let (first_disk, second_disk) = (
        tempfile::tempdir().expect("temporary folder"),
        tempfile::tempdir().expect("temporary folder"),
    );
    let group = unique_name("changelog");
    let with_changelog = |disk: &std::path::Path| IngestConfig {
        changelog_topic: format!("{group}.checkpoints"),
        ..ingest_config(&kafka, &group, disk)
    };
    let first = start(with_changelog(first_disk.path()), &stream.topology);
    assert!(caught_up(&first, partitions as u64));
    assert_eq!(first.lot_snapshots(Some(stream.last_event_ms)), reference);
    // Its clean stop checkpoints every partition to its disk and the changelog.
    first.stop().expect("a clean stop");

    let second = start(with_changelog(second_disk.path()), &stream.topology);
    assert!(caught_up(&second, partitions as u64));
    assert_eq!(second.lot_snapshots(Some(stream.last_event_ms)), reference);
    let metrics = second.metrics();
    assert_eq!(
        metrics.restored_from_changelog.get(),
        partitions as u64,
        "every partition came from the changelog"
    );
    assert!(metrics.lots_restored.get() >= 8);
    assert_eq!(
        metrics.handled(),
        0,
        "nothing was replayed: the changelog held the state at the end of the log"
    );
    second.stop().expect("a clean stop");
    // The second machine's own files now exist and are at least as new: a third start on it
    // takes them (the changelog is not newer).
    let third = start(with_changelog(second_disk.path()), &stream.topology);
    assert!(caught_up(&third, partitions as u64));
    assert_eq!(third.lot_snapshots(Some(stream.last_event_ms)), reference);
    assert_eq!(third.metrics().restored_from_changelog.get(), 0);
    third.stop().expect("a clean stop");
}

/// Consumes a backlog produced before the consumer starts; whether it read it all within
/// [`BACKLOG_WAIT`].
fn consumes_backlog() -> bool {
    let partitions = 2;
    let kafka = fresh_config("backlog", partitions);
    // 1.6 M readings, about 150 MB: many 16 MiB fetches, as after a restart on a busy city.
    let stream = city_stream(40, 100, 400);
    for chunk in stream.messages.chunks(100_000) {
        produce(&kafka, chunk);
    }
    let dir = tempfile::tempdir().expect("temporary folder");
    let ingest = start(
        ingest_config(&kafka, &unique_name("backlog"), dir.path()),
        &stream.topology,
    );
    let total = stream.messages.len() as u64;
    let done = wait_until(BACKLOG_WAIT, || ingest.metrics().handled() >= total);
    ingest.abort().expect("the run ends");
    done
}

/// How long a backlog may take (it takes 5-20 s on an idle 2-core machine).
const BACKLOG_WAIT: Duration = Duration::from_secs(180);

/// A broker may answer a fetch with more than `fetch.max.bytes` (the test broker sent 22 MB to a
/// 16 MiB fetch of a 200-lot backlog); librdkafka drops a response above
/// `receive.message.max.bytes` and retries the same fetch forever, so the consumer's default
/// must leave room for that. It once was the fetch size plus a record (17,891,328 bytes): with
/// that limit (and `fetch.max.bytes` 16 MiB, both set in `librdkafka_options`) this backlog was
/// still unread after 60 s; with the default it is read in about 10 s.
#[test]
fn a_backlog_larger_than_a_fetch_is_consumed_to_its_end() {
    parkcast_kafka::require_broker!();
    assert!(consumes_backlog(), "the backlog was not consumed");
}

/// Checkpoint files are written off the consumer's state lock: while the writer is stuck on the
/// disk (its temporary file is a FIFO nobody reads yet, so creating it blocks), readings keep being
/// applied; once the disk answers, the checkpoint lands, and a clean stop's final one holds every
/// offset. (When the consumer wrote the files itself, under the lock, it stopped applying and
/// scoring for as long as an fsync took: up to 0.97 s every 10 s on a shared disk.)
#[test]
fn readings_are_applied_while_a_checkpoint_file_is_being_written() {
    use std::io::Read as _;
    use std::os::unix::fs::FileTypeExt as _;

    parkcast_kafka::require_broker!();
    let kafka = fresh_config("slowdisk", 1);
    let stream = city_stream(3, 10, 20);
    let (first_part, second_part) = stream.messages.split_at(stream.messages.len() / 2);
    let dir = tempfile::tempdir().expect("temporary folder");
    let store = parkcast_serving::checkpoint::CheckpointStore::open(dir.path()).expect("store");
    let tmp = parkcast_durable::sibling_tmp(&store.path(0));
    let made = std::process::Command::new("mkfifo")
        .arg(&tmp)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", tmp.display());
    let config = ingest_config(&kafka, &unique_name("slowdisk"), dir.path());
    produce(&kafka, first_part);
    let ingest = start(config, &stream.topology);
    // The first part is applied and its checkpoint handed to the writer, which now waits on the FIFO.
    let handed_over = wait_until(WAIT, || {
        ingest.metrics().handled() >= first_part.len() as u64
            && ingest.metrics().checkpoints_taken.get() >= 1
    });
    produce(&kafka, second_part);
    let total = stream.messages.len() as u64;
    let applied_meanwhile = handed_over && wait_until(WAIT, || ingest.metrics().handled() >= total);
    let written_meanwhile = ingest.metrics().checkpoints.get();

    // The disk answers: read the FIFO to its end and take it away, so the retry writes a file. (Done
    // before asserting: a consumer stuck on the FIFO could not be stopped.)
    let unstick = std::thread::spawn(move || {
        while std::fs::symlink_metadata(&tmp).is_ok_and(|meta| meta.file_type().is_fifo()) {
            let mut fifo = std::fs::File::open(&tmp).expect("the FIFO opens for reading");
            std::fs::remove_file(&tmp).expect("the FIFO is removed");
            let mut sink = Vec::new();
            fifo.read_to_end(&mut sink)
                .expect("the FIFO reads to its end");
        }
    });
    unstick.join().expect("the FIFO reader ends");
    assert!(
        handed_over,
        "a checkpoint was taken and handed to the writer"
    );
    assert!(
        applied_meanwhile,
        "readings are applied while the checkpoint file waits on the disk ({} of {total})",
        ingest.metrics().handled()
    );
    assert_eq!(
        written_meanwhile, 0,
        "the stuck checkpoint was not reported written"
    );
    assert!(wait_until(WAIT, || ingest.metrics().checkpoints.get() >= 1));
    assert!(
        ingest.metrics().checkpoint_failures.get() >= 1,
        "the FIFO's write failed"
    );
    ingest.stop().expect("a clean stop");
    let checkpoint = store
        .load(0)
        .expect("the checkpoint reads")
        .expect("a checkpoint exists");
    let sensor = stream
        .messages
        .iter()
        .filter(|(sensor, _, _)| *sensor)
        .count() as i64;
    let session = stream.messages.len() as i64 - sensor;
    assert_eq!(
        (checkpoint.sensor_next, checkpoint.session_next),
        (sensor, session),
        "the final checkpoint holds every offset"
    );
}
