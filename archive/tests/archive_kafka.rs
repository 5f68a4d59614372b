//! Replay and archive through the real broker that `scripts/test.sh` starts: a slice of the real
//! Melbourne day produced into Kafka and archived gives the import's per-lot occupancy, and a crash
//! between writing files and the checkpoint neither loses nor duplicates a row.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::melbourne;
use parkcast_archive::archiver::{ArchiveConfig, ArchiveError, ArchiveSummary, SOURCE, archive};
use parkcast_archive::replay::{Background, Speed, replay};
use parkcast_archive::rollup::RollupConfig;
use parkcast_archive::source::{EventSource, SourceConfig};
use parkcast_kafka::KafkaConfig;
use parkcast_kafka::testing::{fresh_config, unique_name};
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::rows::{
    LotOccupancyRow, LotRow, ParkingSessionRow, SlotRow, SlotStatusRow,
};
use parkcast_warehouse::topology::Topology;

/// Replays the Melbourne slice (heartbeats every 15 minutes) into fresh topics.
fn replayed(prefix: &str) -> (KafkaConfig, u64, Topology) {
    let kafka = fresh_config(prefix, 3);
    let fixture = melbourne();
    let source = EventSource::new(
        &fixture.warehouse,
        SourceConfig {
            heartbeat_minutes: Some(15),
            ..SourceConfig::default()
        },
    )
    .expect("the slice should be readable");
    let topology = source.topology().clone();
    let stats = replay(&kafka, source, Speed::Unlimited, &mut |_| {}).expect("replay");
    (kafka, stats.messages[0], topology)
}

fn archive_warehouse(dir: &tempfile::TempDir) -> Warehouse {
    let warehouse = Warehouse::create(dir.path().join("archive")).expect("a warehouse");
    let fixture = melbourne();
    let lots: Vec<LotRow> = fixture.warehouse.read_rows().expect("lots");
    warehouse.replace("dims", &lots).expect("lots written");
    let slots: Vec<SlotRow> = fixture.warehouse.read_rows().expect("slots");
    warehouse.replace("dims", &slots).expect("slots written");
    warehouse
}

fn config(
    kafka: &KafkaConfig,
    flush_rows: usize,
    fail_after_files: Option<usize>,
) -> ArchiveConfig {
    ArchiveConfig {
        kafka: kafka.clone(),
        group_id: unique_name("archive"),
        flush_rows,
        flush_interval: Duration::from_secs(60),
        stop_when_idle: Some(Duration::from_secs(2)),
        rollup: RollupConfig {
            step_minutes: 15,
            lateness_ms: 3_600_000,
            silence_ms: 3 * 3_600_000,
            source: SOURCE.to_owned(),
        },
        fail_after_files,
    }
}

fn run(
    warehouse: &Warehouse,
    config: &ArchiveConfig,
    topology: &Topology,
) -> Result<ArchiveSummary, ArchiveError> {
    archive(warehouse, config, topology.pairs().collect(), &mut |_| {})
}

type OccupancyKey = (String, i64);

fn occupancy(rows: Vec<LotOccupancyRow>) -> BTreeMap<OccupancyKey, (i32, i32, i32)> {
    let mut map = BTreeMap::new();
    for row in rows {
        let key = (row.lot_id, row.ts.timestamp_millis());
        assert!(
            map.insert(key.clone(), (row.occupied, row.unknown, row.capacity))
                .is_none(),
            "occupancy of {key:?} written twice"
        );
    }
    map
}

#[test]
fn the_replayed_melbourne_slice_archives_to_the_occupancy_of_its_stays() {
    parkcast_kafka::require_broker!();
    let (kafka, readings, topology) = replayed("melbourne");
    let dir = tempfile::tempdir().expect("temporary folder");
    let warehouse = archive_warehouse(&dir);
    let summary = run(&warehouse, &config(&kafka, 20_000, None), &topology).expect("archive");
    assert_eq!(summary.totals.invalid, 0);
    assert_eq!(summary.totals.rows[0], readings, "every reading archived");

    // Stays closed within the day are sessions; the import's open stays stay open here.
    let fixture = melbourne();
    let sessions: Vec<ParkingSessionRow> = warehouse.read_rows().expect("sessions");
    let closed = fixture
        .sessions
        .iter()
        .filter(|session| session.exit_ts.is_some())
        .count();
    assert_eq!(sessions.len(), closed);
    assert_eq!(summary.open_stays, fixture.sessions.len() - closed);
    let changes: Vec<SlotStatusRow> = warehouse.read_rows().expect("slot status");
    assert_eq!(
        changes.iter().filter(|row| row.kind == "change").count(),
        fixture.status.len()
    );

    // Every archived instant equals the import's, which counts the stays covering it; the archive
    // holds every instant up to an hour (the lateness bound) before the day's last event.
    let expected = occupancy(fixture.occupancy.clone());
    let archived = occupancy(warehouse.read_rows().expect("occupancy"));
    let lots: BTreeSet<&String> = archived.keys().map(|(lot, _)| lot).collect();
    assert_eq!(lots.len(), topology.lots().len());
    for (key, value) in &archived {
        assert_eq!(expected.get(key), Some(value), "{key:?}");
    }
    assert!(
        archived.len() as f64 >= 0.9 * expected.len() as f64,
        "{} of {} instants archived",
        archived.len(),
        expected.len()
    );
}

#[test]
fn a_crash_between_files_and_checkpoint_leaves_every_row_exactly_once() {
    parkcast_kafka::require_broker!();
    let (kafka, readings, topology) = replayed("crash");
    let reference_dir = tempfile::tempdir().expect("temporary folder");
    let reference = archive_warehouse(&reference_dir);
    run(&reference, &config(&kafka, 5_000, None), &topology).expect("the reference archive");

    let dir = tempfile::tempdir().expect("temporary folder");
    let warehouse = archive_warehouse(&dir);
    // Crash in the middle of a flush, twice at different points, then run to the end.
    for fail_after in [5, 12] {
        let error = run(
            &warehouse,
            &config(&kafka, 5_000, Some(fail_after)),
            &topology,
        )
        .expect_err("the crash hook fires");
        assert!(matches!(error, ArchiveError::SimulatedCrash(_)), "{error}");
    }
    let summary = run(&warehouse, &config(&kafka, 5_000, None), &topology).expect("archive");
    assert!(
        summary.removed_uncommitted_files > 0,
        "the files of the interrupted flush were found and removed"
    );

    let status: Vec<SlotStatusRow> = warehouse.read_rows().expect("slot status");
    assert_eq!(status.len() as u64, readings, "every reading exactly once");
    let unique: BTreeSet<(String, u64)> = status
        .iter()
        .map(|row| (row.slot_id.clone(), row.sensor_seq))
        .collect();
    assert_eq!(unique.len(), status.len(), "no reading twice");
    let sessions: Vec<ParkingSessionRow> = warehouse.read_rows().expect("sessions");
    let reference_sessions: Vec<ParkingSessionRow> = reference.read_rows().expect("sessions");
    assert_eq!(sessions.len(), reference_sessions.len());
    assert_eq!(
        occupancy(warehouse.read_rows().expect("occupancy")),
        occupancy(reference.read_rows().expect("occupancy"))
    );
}

#[test]
fn a_background_replay_stops_at_its_next_event_and_reports_what_it_sent() {
    parkcast_kafka::require_broker!();
    let kafka = fresh_config("background", 1);
    let fixture = melbourne();
    let source = || {
        EventSource::new(&fixture.warehouse, SourceConfig::default())
            .expect("the slice should be readable")
    };
    let total = source().count() as u64;
    // An hour of event time per wall second: the day would take about 24 s, far longer than the
    // time it takes to see the first messages arrive.
    let replay = Background::spawn(kafka, source(), Speed::Factor(3_600.0)).expect("a replay");
    assert!(
        parkcast_kafka::testing::wait_until(Duration::from_secs(60), || replay.sent() > 0),
        "no message was sent within a minute"
    );
    assert!(!replay.is_finished());
    let stats = replay
        .stop(Duration::from_secs(60))
        .expect("the replay should stop within a minute")
        .expect("the replay should succeed");
    assert!(stats.total() > 0);
    assert!(
        stats.total() < total,
        "stopped after {} of {total} events",
        stats.total()
    );
}
