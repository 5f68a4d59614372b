//! The simulator writes a complete, realistic and reproducible warehouse.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc, Weekday};
use parkcast_training::progress::NoProgress;
use parkcast_training::simulate::demand::{EVENT_TARIFF, LotKind, SEASON_TICKET, tariff};
use parkcast_training::simulate::{SimulationParams, SimulationReport, simulate};
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::rows::{
    CalendarRow, CustomerRow, EventRow, LotOccupancyRow, LotRow, ParkingSessionRow, PaymentRow,
    SlotRow, SlotStatusRow, VehicleRow,
};
use parkcast_warehouse::schema::Table;

struct Fixture {
    _dir: tempfile::TempDir,
    warehouse: Warehouse,
    report: SimulationReport,
    lots: Vec<LotRow>,
    sessions: Vec<ParkingSessionRow>,
    occupancy: Vec<LotOccupancyRow>,
}

/// Eight lots (every kind, a stadium included) for two weeks from Monday 2025-11-03, simulated once
/// for all tests in this file.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temp dir should be creatable");
        let warehouse = Warehouse::create(dir.path().join("warehouse")).expect("warehouse");
        let params = SimulationParams::default()
            .lots(8)
            .days(14)
            .start_date(date(2025, 11, 3))
            .check()
            .expect("test parameters should be valid");
        let report = simulate(&params, &warehouse, &NoProgress).expect("simulation should succeed");
        let lots = warehouse.read_rows::<LotRow>().expect("dim_lot");
        let sessions = warehouse
            .read_rows::<ParkingSessionRow>()
            .expect("fact_parking_session");
        let occupancy = warehouse
            .read_rows::<LotOccupancyRow>()
            .expect("fact_lot_occupancy");
        Fixture {
            _dir: dir,
            warehouse,
            report,
            lots,
            sessions,
            occupancy,
        }
    })
}

fn date(year: i32, month: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(year, month, day).expect("test dates should be valid")
}

fn london(ts: DateTime<Utc>) -> DateTime<chrono_tz::Tz> {
    ts.with_timezone(&chrono_tz::Europe::London)
}

fn lots_of_kind(fixture: &Fixture, kind: LotKind) -> Vec<&LotRow> {
    fixture
        .lots
        .iter()
        .filter(|lot| lot.kind == kind.name())
        .collect()
}

/// Mean occupancy rate of lots of a kind at a local hour, on days that pass the filter.
fn mean_rate(
    fixture: &Fixture,
    kind: LotKind,
    hour: u32,
    day_filter: impl Fn(NaiveDate) -> bool,
) -> f64 {
    let lots: HashMap<&str, i32> = lots_of_kind(fixture, kind)
        .iter()
        .map(|lot| (lot.lot_id.as_str(), lot.capacity))
        .collect();
    let rates: Vec<f64> = fixture
        .occupancy
        .iter()
        .filter(|row| lots.contains_key(row.lot_id.as_str()))
        .filter(|row| {
            let local = london(row.ts);
            local.hour() == hour && day_filter(local.date_naive())
        })
        .map(|row| f64::from(row.occupied) / f64::from(row.capacity))
        .collect();
    assert!(
        !rates.is_empty(),
        "no occupancy rows for {kind:?} at {hour}:00"
    );
    rates.iter().sum::<f64>() / rates.len() as f64
}

fn is_weekend(date: NaiveDate) -> bool {
    matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}

#[test]
fn every_table_is_written() {
    let fixture = fixture();
    let summary = fixture.warehouse.summary().expect("summary");
    // dim_tariff comes from the operational store (`parkcast etl`), not from the simulator.
    for table in Table::ALL
        .into_iter()
        .filter(|table| *table != Table::DimTariff)
    {
        let entry = summary
            .iter()
            .find(|entry| entry.table == table)
            .unwrap_or_else(|| panic!("{table} missing"));
        assert!(entry.rows > 0, "{table} is empty");
    }
    assert_eq!(fixture.report.lots, 8);
    assert_eq!(fixture.lots.len(), 8);
    // Spot-check that every table reads back through the typed path.
    assert!(
        !fixture
            .warehouse
            .read_rows::<SlotRow>()
            .expect("dim_slot")
            .is_empty()
    );
    assert!(
        !fixture
            .warehouse
            .read_rows::<CustomerRow>()
            .expect("dim_customer")
            .is_empty()
    );
    assert!(
        !fixture
            .warehouse
            .read_rows::<VehicleRow>()
            .expect("dim_vehicle")
            .is_empty()
    );
    let mut calendar = fixture
        .warehouse
        .read_rows::<CalendarRow>()
        .expect("dim_calendar");
    calendar.sort_by_key(|row| row.date);
    assert_eq!(calendar.len(), 14);
    // 3 to 16 November 2025 in England: term time by the embedded school data (the autumn half
    // term ended on Sunday 2 November), and 52 days before Christmas on the first day.
    assert!(
        calendar
            .iter()
            .all(|row| row.is_school_holiday == Some(false) && row.is_bridge_day == Some(false)),
        "{calendar:?}"
    );
    assert_eq!(calendar[0].date, date(2025, 11, 3));
    assert_eq!(calendar[0].days_to_major_holiday, Some(52));
    let events = fixture
        .warehouse
        .read_rows::<EventRow>()
        .expect("dim_event");
    assert!(events.iter().all(|event| event.end_ts > event.start_ts));
}

#[test]
fn occupancy_stays_within_capacity() {
    let fixture = fixture();
    assert!(!fixture.occupancy.is_empty());
    for row in &fixture.occupancy {
        assert!(row.occupied >= 0 && row.unknown >= 0, "{row:?}");
        assert!(row.occupied + row.unknown <= row.capacity, "{row:?}");
    }
    // Two weeks at 5 minutes: 14 * 288 instants per lot (one 25-hour day would add 12; none in Nov).
    assert_eq!(fixture.occupancy.len(), 8 * 14 * 288);
}

#[test]
fn commuter_garages_fill_on_weekday_mornings_and_empty_at_night_and_weekends() {
    let fixture = fixture();
    let weekday_noon = mean_rate(fixture, LotKind::CommuterGarage, 12, |day| !is_weekend(day));
    let weekday_night = mean_rate(fixture, LotKind::CommuterGarage, 3, |day| !is_weekend(day));
    let weekend_noon = mean_rate(fixture, LotKind::CommuterGarage, 12, is_weekend);
    assert!(weekday_noon > 0.6, "weekday noon rate {weekday_noon}");
    assert!(weekday_night < 0.1, "weekday 03:00 rate {weekday_night}");
    assert!(
        weekday_noon > 2.0 * weekend_noon,
        "weekday {weekday_noon} vs weekend {weekend_noon}"
    );
}

#[test]
fn shopping_peaks_on_saturday_afternoon_and_nightlife_at_night() {
    let fixture = fixture();
    let saturday = mean_rate(fixture, LotKind::ShoppingCentre, 14, |day| {
        day.weekday() == Weekday::Sat
    });
    let tuesday = mean_rate(fixture, LotKind::ShoppingCentre, 14, |day| {
        day.weekday() == Weekday::Tue
    });
    let early = mean_rate(fixture, LotKind::ShoppingCentre, 7, |_| true);
    assert!(
        saturday > tuesday,
        "Saturday {saturday} vs Tuesday {tuesday}"
    );
    assert!(early < 0.1 * saturday, "07:00 {early}");
    let night = mean_rate(fixture, LotKind::Nightlife, 22, |day| {
        day.weekday() == Weekday::Sat
    });
    let morning = mean_rate(fixture, LotKind::Nightlife, 9, |day| {
        day.weekday() == Weekday::Sat
    });
    assert!(
        night > 3.0 * morning,
        "Saturday 22:00 {night} vs 09:00 {morning}"
    );
}

#[test]
fn stays_never_overlap_on_one_slot() {
    let fixture = fixture();
    let mut by_slot: BTreeMap<&str, Vec<&ParkingSessionRow>> = BTreeMap::new();
    for session in &fixture.sessions {
        by_slot
            .entry(session.slot_id.as_str())
            .or_default()
            .push(session);
        if let Some(exit) = session.exit_ts {
            assert!(exit > session.entry_ts, "{session:?}");
        }
    }
    let mut checked_pairs = 0;
    for sessions in by_slot.values_mut() {
        sessions.sort_by_key(|session| session.entry_ts);
        for pair in sessions.windows(2) {
            let exit = pair[0]
                .exit_ts
                .unwrap_or_else(|| panic!("an open stay is followed by another: {pair:?}"));
            assert!(exit <= pair[1].entry_ts, "overlap: {pair:?}");
            checked_pairs += 1;
        }
    }
    assert!(
        checked_pairs > 1_000,
        "too few consecutive stays to check: {checked_pairs}"
    );
}

#[test]
fn payments_match_sessions_and_tariffs() {
    let fixture = fixture();
    let payments = fixture
        .warehouse
        .read_rows::<PaymentRow>()
        .expect("fact_payment");
    let kinds: HashMap<&str, &str> = fixture
        .lots
        .iter()
        .map(|lot| (lot.lot_id.as_str(), lot.kind.as_str()))
        .collect();
    let sessions: HashMap<&str, &ParkingSessionRow> = fixture
        .sessions
        .iter()
        .map(|session| (session.session_id.as_str(), session))
        .collect();
    let mut slips: HashMap<&str, Vec<&PaymentRow>> = HashMap::new();
    for payment in &payments {
        let session = sessions
            .get(payment.session_id.as_str())
            .unwrap_or_else(|| panic!("payment for an unknown stay: {payment:?}"));
        assert_eq!(payment.lot_id, session.lot_id);
        assert!(payment.paid_ts >= session.entry_ts, "{payment:?}");
        slips
            .entry(payment.session_id.as_str())
            .or_default()
            .push(payment);
    }
    let mut penalties = 0;
    for session in &fixture.sessions {
        let kind = kinds[session.lot_id.as_str()];
        let found = slips
            .get(session.session_id.as_str())
            .cloned()
            .unwrap_or_default();
        let regular: Vec<_> = found
            .iter()
            .filter(|slip| slip.penalty_cents == 0)
            .collect();
        let fines: Vec<_> = found.iter().filter(|slip| slip.penalty_cents > 0).collect();
        if kind == LotKind::StreetZone.name() {
            // Prepaid at entry for the allowed time; fined only when the stay broke it.
            let allowed = session
                .allowed_minutes
                .expect("street stays have a paid time");
            assert_eq!(regular.len(), 1, "{session:?}");
            assert_eq!(
                regular[0].amount_cents,
                tariff(LotKind::StreetZone).amount_cents(i64::from(allowed))
            );
            if let Some(exit) = session.exit_ts {
                let stayed_minutes =
                    ((exit - session.entry_ts).num_milliseconds() + 59_999) / 60_000;
                assert_eq!(
                    session.in_violation,
                    stayed_minutes > i64::from(allowed),
                    "{session:?}"
                );
            }
            assert!(
                fines.len() <= 1 && (fines.is_empty() || session.in_violation),
                "{session:?}"
            );
            penalties += fines.len();
        } else {
            assert!(!session.in_violation && session.allowed_minutes.is_none());
            let Some(exit) = session.exit_ts else {
                assert!(
                    found.is_empty(),
                    "an open garage stay was paid: {session:?}"
                );
                continue;
            };
            assert_eq!(found.len(), 1, "one slip per garage stay: {session:?}");
            let slip = found[0];
            let dwell_minutes = ((exit - session.entry_ts).num_milliseconds() + 59_999) / 60_000;
            let expected = match slip.tariff_id.as_str() {
                "season" => SEASON_TICKET.amount_cents(dwell_minutes),
                "stadium_event" => EVENT_TARIFF.amount_cents(dwell_minutes),
                _ => {
                    let lot_kind = [
                        LotKind::CommuterGarage,
                        LotKind::ShoppingCentre,
                        LotKind::Nightlife,
                        LotKind::Stadium,
                    ]
                    .into_iter()
                    .find(|candidate| candidate.name() == kind)
                    .expect("a known lot kind");
                    tariff(lot_kind).amount_cents(dwell_minutes)
                }
            };
            assert_eq!(slip.amount_cents, expected, "{session:?} {slip:?}");
            assert_eq!(slip.paid_ts, exit);
        }
    }
    assert!(penalties > 0, "some street overstays should be fined");
}

/// Entry and (if it happened) exit of a stay.
type Stay = (DateTime<Utc>, Option<DateTime<Utc>>);

#[test]
fn sensor_derived_occupancy_tracks_the_true_stays() {
    let fixture = fixture();
    // Truth: stays covering each instant, per lot.
    let mut stays: HashMap<&str, Vec<Stay>> = HashMap::new();
    for session in &fixture.sessions {
        stays
            .entry(session.lot_id.as_str())
            .or_default()
            .push((session.entry_ts, session.exit_ts));
    }
    let mut total_error = 0.0;
    let mut total_capacity = 0.0;
    for row in fixture.occupancy.iter().step_by(37) {
        let truth = stays.get(row.lot_id.as_str()).map_or(0, |stays| {
            stays
                .iter()
                .filter(|(entry, exit)| *entry <= row.ts && exit.is_none_or(|exit| exit > row.ts))
                .count()
        });
        // Sensors settle for up to 15 s and some are stuck or offline: close, not exact.
        total_error += (f64::from(row.occupied) - truth as f64).abs();
        total_capacity += f64::from(row.capacity);
    }
    let relative_error = total_error / total_capacity;
    assert!(
        relative_error < 0.02,
        "sensor view deviates from the truth by {relative_error:.4} of capacity"
    );
}

#[test]
fn the_sensor_stream_has_the_defects_of_real_streams() {
    let fixture = fixture();
    let readings = fixture
        .warehouse
        .read_rows::<SlotStatusRow>()
        .expect("fact_slot_status");
    let heartbeats = readings
        .iter()
        .filter(|reading| reading.kind == "heartbeat")
        .count();
    let changes = readings
        .iter()
        .filter(|reading| reading.kind == "change")
        .count();
    let late = readings
        .iter()
        .filter(|reading| (reading.received_ts - reading.ts).num_seconds() > 60)
        .count();
    let mut seen = std::collections::HashSet::new();
    let duplicates = readings
        .iter()
        .filter(|reading| !seen.insert((reading.slot_id.as_str(), reading.sensor_seq)))
        .count();
    assert!(
        heartbeats > 0 && changes > 0,
        "heartbeats {heartbeats}, changes {changes}"
    );
    assert!(late > 0, "no late readings");
    assert!(duplicates > 0, "no duplicate deliveries");
    assert!(
        readings
            .iter()
            .all(|reading| reading.received_ts >= reading.ts)
    );
    // Per slot, sequence numbers grow with event time.
    let mut by_slot: HashMap<&str, Vec<&SlotStatusRow>> = HashMap::new();
    for reading in &readings {
        by_slot
            .entry(reading.slot_id.as_str())
            .or_default()
            .push(reading);
    }
    for slot_readings in by_slot.values_mut() {
        slot_readings.sort_by_key(|reading| (reading.sensor_seq, reading.received_ts));
        for pair in slot_readings.windows(2) {
            assert!(
                pair[0].ts <= pair[1].ts,
                "sequence and event time disagree: {pair:?}"
            );
        }
    }
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .is_some_and(|extension| extension == "parquet")
            {
                files.push(path.strip_prefix(root).expect("under root").to_path_buf());
            }
        }
    }
    files.sort();
    files
}

fn simulate_into(dir: &Path, seed: u64) {
    let warehouse = Warehouse::create(dir).expect("warehouse");
    let params = SimulationParams::default()
        .lots(4)
        .days(3)
        .seed(seed)
        .check()
        .expect("valid");
    simulate(&params, &warehouse, &NoProgress).expect("simulation");
}

#[test]
fn the_same_seed_gives_byte_identical_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, second, other) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    simulate_into(&first, 7);
    simulate_into(&second, 7);
    simulate_into(&other, 8);
    let files = files_under(&first);
    assert!(files.len() > 12, "{files:?}");
    assert_eq!(files, files_under(&second));
    for file in &files {
        let left = std::fs::read(first.join(file)).expect("read");
        let right = std::fs::read(second.join(file)).expect("read");
        assert!(
            left == right,
            "{} differs between two runs with the same seed",
            file.display()
        );
    }
    let sessions = Path::new("fact_parking_session");
    let differs = files
        .iter()
        .filter(|file| file.starts_with(sessions))
        .any(|file| std::fs::read(first.join(file)).ok() != std::fs::read(other.join(file)).ok());
    assert!(differs, "another seed should give other stays");
}

#[test]
fn simulating_again_replaces_instead_of_appending() {
    let dir = tempfile::tempdir().expect("temp dir");
    simulate_into(dir.path(), 3);
    let warehouse = Warehouse::open(dir.path()).expect("open");
    let first = warehouse
        .read_rows::<ParkingSessionRow>()
        .expect("sessions")
        .len();
    simulate_into(dir.path(), 3);
    assert_eq!(
        warehouse
            .read_rows::<ParkingSessionRow>()
            .expect("sessions")
            .len(),
        first
    );
}
