//! The occupancy roll-up, fed the replay of a real Melbourne slice, reproduces the import's
//! `fact_lot_occupancy` exactly: in order, perturbed (lots interleaved differently, readings delayed,
//! duplicated) and across a checkpoint.

use crate::common;

use std::collections::{BTreeMap, HashMap};

use common::{Decoded, Noise, decode, melbourne};
use parkcast_archive::rollup::{OccupancyRollup, Push, RollupConfig};
use parkcast_archive::source::{EventSource, SourceConfig};
use parkcast_warehouse::rows::LotOccupancyRow;
use parkcast_warehouse::topology::Topology;

const MINUTE: i64 = 60_000;

/// One sensor reading as the archiver sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reading {
    lot_id: String,
    slot_id: String,
    ts_ms: i64,
    seq: u64,
    occupied: bool,
}

fn config() -> RollupConfig {
    RollupConfig {
        step_minutes: 15,
        lateness_ms: 60 * MINUTE,
        silence_ms: 180 * MINUTE,
        source: "melbourne".to_owned(),
    }
}

/// The replay of the slice with 15-minute heartbeats: its sensor readings and its topology.
fn replay() -> (Vec<Reading>, Topology) {
    let fixture = melbourne();
    let config = SourceConfig {
        heartbeat_minutes: Some(15),
        ..SourceConfig::default()
    };
    let source = EventSource::new(&fixture.warehouse, config).expect("the source should open");
    let topology = source.topology().clone();
    let mut readings = Vec::new();
    for event in source {
        let event = event.expect("the replay should read");
        if let Decoded::Reading(reading) = decode(&event) {
            readings.push(Reading {
                occupied: reading.report() == parkcast_proto::v1::SlotReport::Occupied,
                lot_id: reading.lot_id,
                slot_id: reading.slot_id,
                ts_ms: reading.event_time_ms,
                seq: reading.sensor_seq,
            });
        }
    }
    (readings, topology)
}

/// The readings with lots interleaved differently, every 7th delayed by up to 30 minutes and every
/// 10th sent twice (the copy up to 30 minutes later).
fn perturbed(readings: &[Reading], topology: &Topology) -> Vec<Reading> {
    let mut noise = Noise(0x5eed);
    let offset_of_lot: HashMap<&str, i64> = topology
        .lots()
        .iter()
        .map(|lot| (lot.lot_id.as_str(), noise.next(41) as i64 - 20))
        .collect();
    let mut keyed = Vec::with_capacity(readings.len() * 11 / 10 + 1);
    for (index, reading) in readings.iter().enumerate() {
        let lot_key = reading.ts_ms + offset_of_lot[reading.lot_id.as_str()] * MINUTE;
        let delay = if index % 7 == 0 {
            (1 + noise.next(30) as i64) * MINUTE
        } else {
            0
        };
        keyed.push((lot_key + delay, reading.clone()));
        if index % 10 == 0 {
            keyed.push((lot_key + noise.next(31) as i64 * MINUTE, reading.clone()));
        }
    }
    keyed.sort_by_key(|(key, _)| *key);
    keyed.into_iter().map(|(_, reading)| reading).collect()
}

/// Pushes readings, draining every 100; none may be refused or late.
fn feed(rollup: &mut OccupancyRollup, readings: &[Reading], rows: &mut Vec<LotOccupancyRow>) {
    for (index, reading) in readings.iter().enumerate() {
        let pushed = rollup.push(
            &reading.lot_id,
            &reading.slot_id,
            reading.ts_ms,
            reading.seq,
            reading.occupied,
        );
        assert!(
            matches!(pushed, Push::Applied | Push::Buffered),
            "{reading:?}: {pushed:?}"
        );
        if index % 100 == 99 {
            rows.extend(rollup.drain_final());
        }
    }
    rows.extend(rollup.drain_final());
}

type Summary = (String, i64, i32, i32, i32);

fn summary(rows: &[LotOccupancyRow]) -> Vec<Summary> {
    let mut summary: Vec<Summary> = rows
        .iter()
        .map(|row| {
            (
                row.lot_id.clone(),
                row.ts.timestamp_millis(),
                row.occupied,
                row.unknown,
                row.capacity,
            )
        })
        .collect();
    summary.sort();
    summary
}

fn expected() -> Vec<Summary> {
    summary(&melbourne().occupancy)
}

/// Each lot's rows come in time order, one per instant.
fn assert_in_order_per_lot(rows: &[LotOccupancyRow]) {
    let mut last_of_lot: BTreeMap<&str, i64> = BTreeMap::new();
    for row in rows {
        let ts = row.ts.timestamp_millis();
        if let Some(last) = last_of_lot.insert(&row.lot_id, ts) {
            assert_eq!(ts, last + 15 * MINUTE, "{row:?}");
        }
        assert_eq!(row.source, "melbourne");
    }
}

#[test]
fn the_replayed_stream_in_order_rolls_up_to_the_import() {
    let fixture = melbourne();
    let (readings, topology) = replay();
    let mut rollup =
        OccupancyRollup::new(config(), topology.clone()).expect("the roll-up should start");
    let mut rows = Vec::new();
    feed(&mut rollup, &readings, &mut rows);
    let streamed = rows.len();
    let tail = rollup.finish(fixture.grid_end_ms());
    assert!(
        tail.len() <= topology.lots().len() * 6,
        "most rows should be final before the end: {} of {}",
        tail.len(),
        streamed + tail.len()
    );
    rows.extend(tail);
    assert_in_order_per_lot(&rows);
    assert_eq!(summary(&rows), expected());
    let stats = rollup.stats();
    assert_eq!(
        (stats.late, stats.duplicates, stats.unknown_slot),
        (0, 0, 0)
    );
    // Readings after the last instant (13:45 to 14:00 UTC) stay buffered: no instant uses them.
    assert!(rollup.buffered_len() <= 2 * topology.slot_count());
}

#[test]
fn the_perturbed_stream_rolls_up_to_the_import() {
    let fixture = melbourne();
    let (readings, topology) = replay();
    let shuffled = perturbed(&readings, &topology);
    assert_ne!(shuffled[..readings.len()], readings[..]);
    let mut rollup = OccupancyRollup::new(config(), topology).expect("the roll-up should start");
    let mut rows = Vec::new();
    feed(&mut rollup, &shuffled, &mut rows);
    rows.extend(rollup.finish(fixture.grid_end_ms()));
    assert_in_order_per_lot(&rows);
    assert_eq!(summary(&rows), expected());
    let stats = rollup.stats();
    assert_eq!(stats.late, 0);
    // A copy counts as a duplicate (or as out of order, had a newer reading of its bay come between)
    // once applied; copies after the last instant are never applied.
    let last_instant = fixture.grid_end_ms() - 15 * MINUTE;
    let applied_copies = readings
        .iter()
        .step_by(10)
        .filter(|reading| reading.ts_ms <= last_instant)
        .count();
    assert_eq!(stats.duplicates + stats.out_of_order, applied_copies as u64);
}

#[test]
fn a_checkpoint_in_the_middle_gives_identical_output() {
    let fixture = melbourne();
    let (readings, topology) = replay();
    let shuffled = perturbed(&readings, &topology);

    let (first, second) = shuffled.split_at(shuffled.len() / 2);
    let mut rollup = OccupancyRollup::new(config(), topology).expect("the roll-up should start");
    let mut rows = Vec::new();
    feed(&mut rollup, first, &mut rows);

    // The same pushes and drains without the checkpoint.
    let mut straight = rollup.clone();
    let mut expected_rows = rows.clone();
    feed(&mut straight, second, &mut expected_rows);
    expected_rows.extend(straight.finish(fixture.grid_end_ms()));

    assert!(
        rollup.buffered_len() > 0,
        "the checkpoint should hold buffered readings"
    );
    let bytes = rmp_serde::to_vec(&rollup).expect("the roll-up should serialize");
    drop(rollup);
    let mut resumed: OccupancyRollup =
        rmp_serde::from_slice(&bytes).expect("the checkpoint should deserialize");
    feed(&mut resumed, second, &mut rows);
    rows.extend(resumed.finish(fixture.grid_end_ms()));
    assert_eq!(rows, expected_rows);
    assert_eq!(resumed.stats(), straight.stats());
    assert_eq!(summary(&rows), expected());
}

#[test]
fn a_too_late_reading_is_counted_and_changes_nothing_emitted() {
    let fixture = melbourne();
    let (readings, topology) = replay();
    let mut rollup = OccupancyRollup::new(config(), topology).expect("the roll-up should start");
    let mut rows = Vec::new();
    feed(&mut rollup, &readings, &mut rows);
    let emitted = rows.clone();

    // A bay reported occupied at 08:00 local, long after 08:00 was emitted for its lot.
    let bay = &readings[readings.len() / 2];
    let late_ts = fixture.grid_start_ms() + 8 * 60 * MINUTE;
    assert!(
        rollup
            .next_instant_ms(&bay.lot_id)
            .is_some_and(|next| next > late_ts + 60 * MINUTE)
    );
    let pushed = rollup.push(&bay.lot_id, &bay.slot_id, late_ts, 1, true);
    assert_eq!(pushed, Push::Late);
    assert_eq!(rollup.stats().late, 1);
    assert_eq!(rollup.stats().out_of_order, 1, "the bay has newer readings");
    assert!(rollup.drain_final().is_empty(), "nothing newly final");
    rows.extend(rollup.finish(fixture.grid_end_ms()));
    assert_eq!(rows[..emitted.len()], emitted[..]);
    assert_eq!(summary(&rows), expected());
}
