//! A synthetic city for the ingestion benchmarks: lots of numbered slots and their readings, at any
//! scale, with no warehouse behind them.

use anyhow::{Context, Result};
use parkcast_proto::v1::{ReadingKind, SensorReading, SlotReport};
use parkcast_serving::topology::TopologyIndex;

/// `lots` lots of `slots` slots each: `lot00042`, `lot00042:s00007`.
pub fn topology(lots: u32, slots: u32) -> Result<TopologyIndex> {
    TopologyIndex::new((0..lots).map(|lot| {
        (
            format!("lot{lot:05}"),
            (0..slots)
                .map(|slot| format!("lot{lot:05}:s{slot:05}"))
                .collect(),
        )
    }))
    .context("invalid topology")
}

/// Reading `round` of a slot of [`topology`] (a third free, one second apart from `start_ms`),
/// keyed by its lot.
pub fn reading(
    lot: u64,
    slot: u64,
    round: u64,
    heartbeat: bool,
    start_ms: i64,
) -> (String, SensorReading) {
    let lot_id = format!("lot{lot:05}");
    let reading = SensorReading {
        schema_version: parkcast_proto::SCHEMA_VERSION,
        lot_id: lot_id.clone(),
        slot_id: format!("{lot_id}:s{slot:05}"),
        report: if (round + slot).is_multiple_of(3) {
            SlotReport::Free as i32
        } else {
            SlotReport::Occupied as i32
        },
        kind: if heartbeat {
            ReadingKind::Heartbeat as i32
        } else {
            ReadingKind::Change as i32
        },
        sensor_seq: round + 1,
        event_time_ms: start_ms + i64::try_from(round).unwrap_or(i64::MAX / 2_000) * 1_000,
    };
    (lot_id, reading)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_name_slots_of_the_topology() {
        let topology = topology(3, 4).expect("a valid topology");
        assert_eq!(topology.slot_count(), 12);
        let (lot_id, reading) = reading(2, 3, 1, false, 1_000);
        assert_eq!(lot_id, "lot00002");
        assert_eq!(reading.slot_id, "lot00002:s00003");
        assert_eq!(reading.sensor_seq, 2);
        assert_eq!(reading.event_time_ms, 2_000);
        assert_eq!(reading.report, SlotReport::Occupied as i32);
    }
}
