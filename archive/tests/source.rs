//! The event source replays a warehouse as wire messages in event-time order: the real Melbourne
//! slice (status changes only, so heartbeats are synthesized) and a small simulated city (every
//! table, several days).

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::NaiveDate;
use common::{Decoded, decode, melbourne};
use parkcast_archive::source::{EventSource, SourceConfig, SourceError, WireEvent};
use parkcast_proto::Topic;
use parkcast_proto::v1::{ReadingKind, SessionEventKind, SlotReport};
use parkcast_training::progress::NoProgress;
use parkcast_training::simulate::{SimulationParams, simulate};
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::rows::{
    CustomerScanRow, LotOccupancyRow, ParkingSessionRow, PaymentRow, SlotRow, SlotStatusRow,
};

const MINUTE: i64 = 60_000;

fn replay(warehouse: &Warehouse, config: SourceConfig) -> Vec<WireEvent> {
    EventSource::new(warehouse, config)
        .expect("the source should open")
        .collect::<Result<_, _>>()
        .expect("the replay should read every file")
}

fn assert_time_ordered(events: &[WireEvent]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].event_time_ms <= pair[1].event_time_ms,
            "out of order: {:?} then {:?}",
            decode(&pair[0]),
            decode(&pair[1])
        );
    }
}

/// (session id, kind, time) of every session event, sorted.
fn session_marks(events: &[WireEvent]) -> Vec<(String, i32, i64)> {
    let mut marks: Vec<(String, i32, i64)> = events
        .iter()
        .filter_map(|event| match decode(event) {
            Decoded::Session(session) => {
                Some((session.session_id, session.kind, session.event_time_ms))
            }
            _ => None,
        })
        .collect();
    marks.sort();
    marks
}

/// The same from the table: an entry per row, an exit per row with one.
fn expected_marks(sessions: &[ParkingSessionRow]) -> Vec<(String, i32, i64)> {
    let mut marks = Vec::new();
    for session in sessions {
        marks.push((
            session.session_id.clone(),
            SessionEventKind::Entry as i32,
            session.entry_ts.timestamp_millis(),
        ));
        if let Some(exit) = session.exit_ts {
            marks.push((
                session.session_id.clone(),
                SessionEventKind::Exit as i32,
                exit.timestamp_millis(),
            ));
        }
    }
    marks.sort();
    marks
}

#[test]
fn melbourne_is_replayed_with_heartbeats_every_15_minutes() {
    let fixture = melbourne();
    let config = SourceConfig {
        heartbeat_minutes: Some(15),
        ..SourceConfig::default()
    };
    let source = EventSource::new(&fixture.warehouse, config).expect("the source should open");
    let hint = source.total_hint().expect("the footers should read");
    let topology = source.topology().clone();
    let events: Vec<WireEvent> = source
        .collect::<Result<_, _>>()
        .expect("the replay should read every file");
    assert_time_ordered(&events);

    // The topology is dim_slot, lots and slots sorted.
    let mut from_dim: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for slot in &fixture.slots {
        from_dim
            .entry(slot.lot_id.as_str())
            .or_default()
            .push(slot.slot_id.as_str());
    }
    for slots in from_dim.values_mut() {
        slots.sort_unstable();
    }
    let from_source: BTreeMap<&str, Vec<&str>> = topology
        .lots()
        .iter()
        .map(|lot| {
            (
                lot.lot_id.as_str(),
                lot.slot_ids.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(from_source, from_dim);
    let lot_of_slot: HashMap<&str, &str> = fixture
        .slots
        .iter()
        .map(|slot| (slot.slot_id.as_str(), slot.lot_id.as_str()))
        .collect();

    let (grid_start, grid_end) = (fixture.grid_start_ms(), fixture.grid_end_ms());
    let mut readings_of_bay: BTreeMap<String, Vec<(i64, u64, i32, bool)>> = BTreeMap::new();
    let mut changes = Vec::new();
    for event in &events {
        if let Decoded::Reading(reading) = decode(event) {
            assert_eq!(lot_of_slot[reading.slot_id.as_str()], reading.lot_id);
            let heartbeat = match reading.kind() {
                ReadingKind::Heartbeat => true,
                ReadingKind::Change => false,
                ReadingKind::Unspecified => panic!("unspecified kind: {reading:?}"),
            };
            assert_ne!(reading.report(), SlotReport::Unspecified);
            if !heartbeat {
                changes.push((
                    reading.slot_id.clone(),
                    reading.event_time_ms,
                    reading.report() == SlotReport::Occupied,
                ));
            }
            readings_of_bay.entry(reading.slot_id).or_default().push((
                reading.event_time_ms,
                reading.sensor_seq,
                reading.report,
                heartbeat,
            ));
        }
    }

    // Every change of the import, once, with its time and status.
    let mut expected_changes: Vec<(String, i64, bool)> = fixture
        .status
        .iter()
        .map(|row| (row.slot_id.clone(), row.ts.timestamp_millis(), row.occupied))
        .collect();
    expected_changes.sort();
    changes.sort();
    assert_eq!(changes.len(), 2140 + 2138, "the import's change rows");
    assert_eq!(changes, expected_changes);

    assert_eq!(readings_of_bay.len(), fixture.slots.len());
    for (bay, readings) in &readings_of_bay {
        // Renumbered 1, 2, ... in emission order, so increasing with time.
        let seqs: Vec<u64> = readings.iter().map(|reading| reading.1).collect();
        assert_eq!(
            seqs,
            (1..=readings.len() as u64).collect::<Vec<_>>(),
            "{bay}"
        );
        let heartbeats: Vec<i64> = readings
            .iter()
            .filter(|reading| reading.3)
            .map(|reading| reading.0)
            .collect();
        assert_eq!(
            heartbeats[0], grid_start,
            "{bay}: the first at the grid start"
        );
        assert!(heartbeats[1] - heartbeats[0] <= 15 * MINUTE, "{bay}");
        for pair in heartbeats[1..].windows(2) {
            assert_eq!(
                pair[1] - pair[0],
                15 * MINUTE,
                "{bay}: one every 15 minutes"
            );
        }
        let last = heartbeats[heartbeats.len() - 1];
        assert!(
            last < grid_end && last >= grid_end - 15 * MINUTE,
            "{bay}: until the end"
        );
        // A heartbeat repeats the status of the bay's previous reading (free before any).
        let mut status = SlotReport::Free as i32;
        for &(time, _, report, heartbeat) in readings {
            if heartbeat {
                assert_eq!(report, status, "{bay} at {time}");
            }
            status = report;
        }
    }
    let heartbeat_count: usize = readings_of_bay
        .values()
        .map(|readings| readings.iter().filter(|reading| reading.3).count())
        .sum();
    assert!(
        heartbeat_count >= fixture.slots.len() * 96,
        "a day of 15-minute heartbeats for every bay"
    );

    assert_eq!(session_marks(&events), expected_marks(&fixture.sessions));
    let sensor_events = events
        .iter()
        .filter(|event| event.topic == Topic::Sensor)
        .count();
    assert_eq!(sensor_events, changes.len() + heartbeat_count);
    assert!(
        hint >= events.len() as u64 * 9 / 10 && hint <= events.len() as u64 * 3,
        "hint {hint} for {} events",
        events.len()
    );
}

#[test]
fn without_heartbeats_the_rows_are_replayed_as_they_are() {
    let fixture = melbourne();
    let events = replay(&fixture.warehouse, SourceConfig::default());
    assert_time_ordered(&events);
    let mut readings: Vec<(String, i64, u64, bool)> = events
        .iter()
        .filter_map(|event| match decode(event) {
            Decoded::Reading(reading) => {
                assert_eq!(reading.kind(), ReadingKind::Change);
                Some((
                    reading.slot_id.clone(),
                    reading.event_time_ms,
                    reading.sensor_seq,
                    reading.report() == SlotReport::Occupied,
                ))
            }
            _ => None,
        })
        .collect();
    readings.sort();
    let mut expected: Vec<(String, i64, u64, bool)> = fixture
        .status
        .iter()
        .map(|row| {
            (
                row.slot_id.clone(),
                row.ts.timestamp_millis(),
                row.sensor_seq,
                row.occupied,
            )
        })
        .collect();
    expected.sort();
    assert_eq!(readings, expected);
    assert_eq!(session_marks(&events), expected_marks(&fixture.sessions));
}

#[test]
fn a_window_and_a_lot_filter_keep_their_events() {
    let fixture = melbourne();
    let lot_id = fixture.slots[0].lot_id.clone();
    let start = fixture.grid_start_ms() + 9 * 60 * MINUTE;
    let end = start + 2 * 60 * MINUTE;
    let config = SourceConfig {
        heartbeat_minutes: Some(15),
        start_ms: Some(start),
        end_ms: Some(end),
        lots: Some(BTreeSet::from([lot_id.clone()])),
    };
    let source = EventSource::new(&fixture.warehouse, config).expect("the source should open");
    assert_eq!(source.topology().lots().len(), 1);
    let bays = source.topology().slot_count();
    let events: Vec<WireEvent> = source
        .collect::<Result<_, _>>()
        .expect("the replay should read");
    assert_time_ordered(&events);
    assert!(events.iter().all(|event| event.key == lot_id));
    assert!(
        events
            .iter()
            .all(|event| (start..end).contains(&event.event_time_ms))
    );
    let first_heartbeats = events
        .iter()
        .filter(|event| event.event_time_ms == start)
        .filter(|event| matches!(decode(event), Decoded::Reading(reading) if reading.kind() == ReadingKind::Heartbeat))
        .count();
    assert_eq!(
        first_heartbeats, bays,
        "every bay starts the window with a heartbeat"
    );
    let entries_in_window = fixture
        .sessions
        .iter()
        .filter(|session| session.lot_id == lot_id)
        .filter(|session| (start..end).contains(&session.entry_ts.timestamp_millis()))
        .count();
    let entries = events
        .iter()
        .filter(|event| matches!(decode(event), Decoded::Session(session) if session.kind() == SessionEventKind::Entry))
        .count();
    assert_eq!(entries, entries_in_window);

    let unknown = EventSource::new(
        &fixture.warehouse,
        SourceConfig {
            lots: Some(BTreeSet::from(["mel:nowhere".to_owned()])),
            ..SourceConfig::default()
        },
    )
    .expect_err("an unknown lot should be refused");
    assert!(
        matches!(unknown, SourceError::UnknownLot { .. }),
        "{unknown}"
    );
}

#[test]
fn a_simulated_city_is_replayed_in_order_across_day_partitions() {
    let dir = tempfile::tempdir().expect("a temporary folder should be creatable");
    let warehouse = Warehouse::create(dir.path().join("warehouse")).expect("warehouse");
    let params = SimulationParams::default()
        .lots(8)
        .days(3)
        .check()
        .expect("test parameters should be valid");
    simulate(&params, &warehouse, &NoProgress).expect("the simulation should run");
    let status: Vec<SlotStatusRow> = warehouse.read_rows().expect("slot status");
    let sessions: Vec<ParkingSessionRow> = warehouse.read_rows().expect("sessions");
    let scans: Vec<CustomerScanRow> = warehouse.read_rows().expect("scans");
    let payments: Vec<PaymentRow> = warehouse.read_rows().expect("payments");
    let slots: Vec<SlotRow> = warehouse.read_rows().expect("slots");
    let occupancy: Vec<LotOccupancyRow> = warehouse.read_rows().expect("occupancy");
    assert!(!occupancy.is_empty());

    let source =
        EventSource::new(&warehouse, SourceConfig::default()).expect("the source should open");
    assert_eq!(source.topology().slot_count(), slots.len());
    let events: Vec<WireEvent> = source
        .collect::<Result<_, _>>()
        .expect("the replay should read every file");
    assert_time_ordered(&events);
    let dates: BTreeSet<NaiveDate> = events
        .iter()
        .filter_map(|event| chrono::DateTime::from_timestamp_millis(event.event_time_ms))
        .map(|time| time.date_naive())
        .collect();
    assert!(dates.len() >= 3, "several day partitions: {dates:?}");

    let count = |topic: Topic| events.iter().filter(|event| event.topic == topic).count();
    assert_eq!(count(Topic::Sensor), status.len());
    assert_eq!(count(Topic::Scan), scans.len());
    assert_eq!(count(Topic::Payment), payments.len());
    assert_eq!(session_marks(&events), expected_marks(&sessions));

    // The rows' own sequence numbers, heartbeats included.
    let mut readings: Vec<(String, i64, u64, bool, bool)> = events
        .iter()
        .filter_map(|event| match decode(event) {
            Decoded::Reading(reading) => Some((
                reading.slot_id.clone(),
                reading.event_time_ms,
                reading.sensor_seq,
                reading.report() == SlotReport::Occupied,
                reading.kind() == ReadingKind::Heartbeat,
            )),
            _ => None,
        })
        .collect();
    readings.sort();
    let mut expected: Vec<(String, i64, u64, bool, bool)> = status
        .iter()
        .map(|row| {
            (
                row.slot_id.clone(),
                row.ts.timestamp_millis(),
                row.sensor_seq,
                row.occupied,
                row.kind == "heartbeat",
            )
        })
        .collect();
    expected.sort();
    assert_eq!(readings, expected);

    // Every exit comes after its entry, and some stays cross a partition boundary.
    let mut entry_of: HashMap<String, (usize, i64)> = HashMap::new();
    let mut exits_on_a_later_date = 0;
    for (index, event) in events.iter().enumerate() {
        if let Decoded::Session(session) = decode(event) {
            match session.kind() {
                SessionEventKind::Entry => {
                    entry_of.insert(session.session_id, (index, session.event_time_ms));
                }
                SessionEventKind::Exit => {
                    let (entry_index, entry_ms) = entry_of
                        .get(&session.session_id)
                        .copied()
                        .expect("an exit should follow its entry");
                    assert!(entry_index < index && entry_ms <= session.event_time_ms);
                    if entry_ms.div_euclid(1_440 * MINUTE)
                        < session.event_time_ms.div_euclid(1_440 * MINUTE)
                    {
                        exits_on_a_later_date += 1;
                    }
                }
                SessionEventKind::Unspecified => panic!("unspecified kind: {session:?}"),
            }
        }
    }
    assert!(
        exits_on_a_later_date > 0,
        "some stays should cross midnight UTC"
    );
}
