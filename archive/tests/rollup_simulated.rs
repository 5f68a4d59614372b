//! The occupancy roll-up reproduces the simulator's `fact_lot_occupancy`, which the simulator derives
//! with the batch rule from what its misbehaving sensors reported (late and duplicated deliveries,
//! outages, stuck sensors): fed the replay in event-time order, and fed the readings in the order the
//! backend received them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use parkcast_archive::rollup::{OccupancyRollup, Push, RollupConfig};
use parkcast_archive::source::{EventSource, SourceConfig};
use parkcast_proto::Topic;
use parkcast_proto::v1::{SensorReading, SlotReport};
use parkcast_training::progress::NoProgress;
use parkcast_training::simulate::{CheckedParams, SimulationParams, simulate};
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::rows::{LotOccupancyRow, SlotStatusRow};
use parkcast_warehouse::topology::Topology;
use prost::Message;

const MINUTE: i64 = 60_000;

type Summary = (String, DateTime<Utc>, i32, i32, i32);

fn summary(rows: &[LotOccupancyRow]) -> Vec<Summary> {
    let mut summary: Vec<Summary> = rows
        .iter()
        .map(|row| {
            (
                row.lot_id.clone(),
                row.ts,
                row.occupied,
                row.unknown,
                row.capacity,
            )
        })
        .collect();
    summary.sort();
    summary
}

/// Rolls readings (lot, slot, time, seq, occupied) up, draining every 1,000, to the end of the
/// simulated occupancy; none may be late.
fn roll_up(
    params: &CheckedParams,
    topology: Topology,
    readings: impl IntoIterator<Item = (String, String, i64, u64, bool)>,
    end_ms: i64,
) -> Vec<LotOccupancyRow> {
    let config = RollupConfig {
        step_minutes: params.params().occupancy_interval_minutes,
        lateness_ms: 60 * MINUTE,
        silence_ms: i64::from(params.params().silence_minutes) * MINUTE,
        source: "simulated".to_owned(),
    };
    let mut rollup = OccupancyRollup::new(config, topology).expect("the roll-up should start");
    let mut rows = Vec::new();
    for (index, (lot_id, slot_id, ts_ms, seq, occupied)) in readings.into_iter().enumerate() {
        let pushed = rollup.push(&lot_id, &slot_id, ts_ms, seq, occupied);
        assert!(
            matches!(pushed, Push::Applied | Push::Buffered),
            "{pushed:?}"
        );
        if index % 1_000 == 999 {
            rows.extend(rollup.drain_final());
        }
    }
    rows.extend(rollup.drain_final());
    rows.extend(rollup.finish(end_ms));
    let stats = rollup.stats();
    assert_eq!(
        (stats.late, stats.unknown_lot, stats.unknown_slot),
        (0, 0, 0)
    );
    assert!(stats.duplicates > 0, "the simulator duplicates deliveries");
    rows
}

/// The simulated rows from each lot's first rolled-up instant on; the earlier ones (the grid starts
/// at local midnight, before any reading) must say every slot is unknown.
fn simulated_from_first_reading(
    simulated: &[LotOccupancyRow],
    rolled: &[LotOccupancyRow],
) -> Vec<LotOccupancyRow> {
    let mut first_of_lot: HashMap<&str, DateTime<Utc>> = HashMap::new();
    for row in rolled {
        let first = first_of_lot.entry(&row.lot_id).or_insert(row.ts);
        *first = (*first).min(row.ts);
    }
    let (kept, before): (Vec<&LotOccupancyRow>, Vec<&LotOccupancyRow>) =
        simulated.iter().partition(|row| {
            first_of_lot
                .get(row.lot_id.as_str())
                .is_some_and(|first| row.ts >= *first)
        });
    assert!(
        before
            .iter()
            .all(|row| row.occupied == 0 && row.unknown == row.capacity),
        "rows before a lot's first reading should be all unknown"
    );
    assert!(
        before.len() <= first_of_lot.len() * 12,
        "{} rows before",
        before.len()
    );
    kept.into_iter().cloned().collect()
}

#[test]
fn the_roll_up_of_a_simulated_city_equals_its_occupancy() {
    let dir = tempfile::tempdir().expect("a temporary folder should be creatable");
    let warehouse = Warehouse::create(dir.path().join("warehouse")).expect("warehouse");
    let params = SimulationParams::default()
        .lots(8)
        .days(3)
        .check()
        .expect("test parameters should be valid");
    simulate(&params, &warehouse, &NoProgress).expect("the simulation should run");
    let simulated: Vec<LotOccupancyRow> = warehouse.read_rows().expect("occupancy");
    let step_ms = i64::from(params.params().occupancy_interval_minutes) * MINUTE;
    let end_ms = simulated
        .iter()
        .map(|row| row.ts.timestamp_millis())
        .max()
        .expect("the simulation should derive occupancy")
        + step_ms;
    let topology = Topology::read(&warehouse).expect("dim_slot");

    // The replay, in event-time order.
    let source = EventSource::new(&warehouse, SourceConfig::default()).expect("the source");
    let replayed = source.filter_map(|event| {
        let event = event.expect("the replay should read");
        (event.topic == Topic::Sensor).then(|| {
            let reading = SensorReading::decode(event.value.as_slice()).expect("a SensorReading");
            let occupied = reading.report() == SlotReport::Occupied;
            (
                reading.lot_id,
                reading.slot_id,
                reading.event_time_ms,
                reading.sensor_seq,
                occupied,
            )
        })
    });
    let rolled = roll_up(&params, topology.clone(), replayed, end_ms);
    assert_eq!(
        summary(&rolled),
        summary(&simulated_from_first_reading(&simulated, &rolled))
    );

    // As the backend received them: late deliveries up to 45 minutes after the fact.
    let mut status: Vec<SlotStatusRow> = warehouse.read_rows().expect("slot status");
    status.sort_by_key(|row| row.received_ts);
    let late_deliveries = status
        .iter()
        .filter(|row| row.received_ts - row.ts > chrono::Duration::minutes(1))
        .count();
    assert!(
        late_deliveries > 0,
        "the simulator delivers some readings late"
    );
    let received = status.into_iter().map(|row| {
        (
            row.lot_id,
            row.slot_id,
            row.ts.timestamp_millis(),
            row.sensor_seq,
            row.occupied,
        )
    });
    let rolled_as_received = roll_up(&params, topology, received, end_ms);
    assert_eq!(summary(&rolled_as_received), summary(&rolled));
}
