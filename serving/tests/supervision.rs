//! A consumer thread that dies (a panic, an error it cannot step over) is noticed at once (an ERROR
//! log, a stale reason, no readiness, a metric), restarted with backoff from the checkpoints, and
//! ends in the state of an uninterrupted run; one that keeps dying makes ingestion give up, so the
//! server exits non-zero for its orchestrator.
//!
//! Faults are injected with fail points (`fail` crate, the `failpoints` feature the serving tests
//! turn on). Fail points are process-wide, so this file holds one test.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::common;

use common::city::*;
use parkcast_kafka::testing::{fresh_config, unique_name, wait_until};
use parkcast_serving::ingest::{IngestConfig, IngestError};
use parkcast_serving::scoring::LiveSource;

/// Log lines written while the test runs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

/// Waits until ingestion says it is down, and checks every way it says so.
fn noticed(ingest: &parkcast_serving::ingest::Ingest, logs: &Captured, injected: &str) {
    let from = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || ingest.status().down.is_some()),
        "a dead consumer is noticed within seconds: {:?}",
        ingest.status()
    );
    eprintln!("noticed in {:?}", from.elapsed());
    let status = ingest.status();
    assert!(status.stale && !ingest.caught_up(), "{status:?}");
    let reason = ingest.stale_reason().expect("answers are stale");
    assert!(
        reason.contains("ingestion is down") && reason.contains(injected),
        "{reason}"
    );
    let log = logs.text();
    assert!(
        log.lines()
            .any(|line| line.contains("ERROR") && line.contains(injected)),
        "logged at ERROR when it happened:\n{log}"
    );
}

#[test]
fn a_dying_consumer_is_noticed_restarted_and_converges_and_one_that_keeps_dying_gives_up() {
    parkcast_kafka::require_broker!();
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .init();

    let partitions = 2;
    let kafka = fresh_config("supervised", partitions);
    let stream = city_stream(4, 10, 20);
    let third = stream.messages.len() / 3;
    produce(&kafka, &stream.messages[..third]);
    let state = tempfile::tempdir().expect("temporary folder");
    let config = IngestConfig {
        max_restarts: 2,
        restart_backoff_max_ms: 2_000,
        ..ingest_config(&kafka, &unique_name("supervised"), state.path())
    };
    let ingest = start(config, &stream.topology);
    assert!(caught_up(&ingest, partitions as u64));
    assert!(wait_until(WAIT, || ingest.metrics().checkpoints.get() >= 1));

    // A panic in the middle of the next messages; the dead consumer then takes 3 s to leave.
    fail::cfg("ingest-leave", "1*sleep(3000)->off").expect("a fail point");
    fail::cfg("ingest-handle", "20*off->1*panic(injected panic)->off").expect("a fail point");
    produce(&kafka, &stream.messages[third..2 * third]);
    noticed(&ingest, &logs, "injected panic");
    // While it leaves, the status shows no partitions and no lag of its: a replica that is down
    // never looks caught up.
    let status = ingest.status();
    assert_eq!(
        (status.assigned_partitions, status.lag),
        (0, None),
        "{status:?}"
    );
    assert_eq!(ingest.metrics().consumer_restarts.get(), 1);
    assert_eq!(ingest.metrics().consumer_down.get(), 1);
    // Restarted after its backoff: it restores the checkpoints and catches up.
    assert!(
        caught_up(&ingest, partitions as u64),
        "{:?}",
        ingest.status()
    );
    assert_eq!(ingest.status().down, None);
    assert_eq!(ingest.metrics().consumer_down.get(), 0);

    // An error the consumer cannot step over.
    fail::cfg("ingest-handle", "1*return(injected error)->off").expect("a fail point");
    produce(&kafka, &stream.messages[2 * third..]);
    noticed(&ingest, &logs, "injected error");
    assert!(caught_up(&ingest, partitions as u64));
    assert_eq!(ingest.metrics().consumer_restarts.get(), 2);
    assert_eq!(
        ingest.lot_snapshots(Some(stream.last_event_ms)),
        uninterrupted(&kafka, &stream, partitions as u64),
        "two deaths later, the state is an uninterrupted run's: nothing lost, nothing twice"
    );

    // One that fails on every message: after `max_restarts` it gives up.
    fail::cfg("ingest-handle", "return(broken for good)").expect("a fail point");
    produce(&kafka, &stream.messages[..10]);
    assert!(
        wait_until(WAIT, || ingest.failed()),
        "gives up after max_restarts: {:?}",
        ingest.status()
    );
    fail::remove("ingest-handle");
    match ingest.stop() {
        Err(IngestError::GaveUp { attempts, last }) => {
            assert_eq!(attempts, 3);
            assert!(last.contains("broken for good"), "{last}");
        }
        other => panic!("stopping a consumer that gave up reports it: {other:?}"),
    }
}
