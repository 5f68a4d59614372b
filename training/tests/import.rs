//! Imports of slices of the real data sets, and of small generic CSVs, into temporary warehouses.
//!
//! The expected rule counts of each slice were verified independently of this code (awk and a
//! Python re-implementation of the documented rules, run on the same slice).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, Utc};
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use parkcast_training::datasets::datasets_dir;
use parkcast_training::import::{ImportError, ImportReport, ImportSource, import};
use parkcast_training::progress::NoProgress;
use parkcast_warehouse::Table;
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::rows::{
    CalendarRow, LotOccupancyRow, LotRow, ParkingSessionRow, SlotRow, SlotStatusRow, ZoneRow,
};
use tempfile::TempDir;

fn utc(text: &str) -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .expect("test times should parse")
        .and_utc()
}

fn rule_counts(report: &ImportReport) -> Vec<(&'static str, u64)> {
    report
        .rules
        .iter()
        .map(|rule| (rule.rule, rule.count))
        .collect()
}

fn assert_reconciles(report: &ImportReport) {
    assert_eq!(
        report.rows_read,
        report.rows_kept() + report.rows_dropped(),
        "rows read should be rows kept plus rows dropped: {report:#?}"
    );
}

fn new_warehouse(dir: &TempDir) -> Warehouse {
    Warehouse::create(dir.path().join("warehouse"))
        .expect("a warehouse should be created in a temporary folder")
}

/// The lines of a text file with their line ends, numbered from 1.
fn numbered_lines(path: &Path) -> Vec<(usize, String)> {
    let text = fs::read_to_string(path)
        .expect("the data set should be readable (see shared/datasets/README.md)");
    text.split_inclusive('\n')
        .enumerate()
        .map(|(index, line)| (index + 1, line.to_owned()))
        .collect()
}

fn write_text(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, text).expect("temporary files should be writable");
    path
}

/// Birmingham lines 1-3700 (header, the first car parks with 18 exact duplicate rows and 13 counts
/// above capacity) and 23880-24040 (NIA North with all 12 negative counts).
fn birmingham_slice(dir: &TempDir) -> PathBuf {
    let source = datasets_dir()
        .join("birmingham")
        .join("parking_birmingham.csv");
    let slice: String = numbered_lines(&source)
        .into_iter()
        .filter(|(number, _)| *number <= 3700 || (23880..=24040).contains(number))
        .map(|(_, line)| line)
        .collect();
    write_text(dir, "parking_birmingham.csv", &slice)
}

#[test]
fn birmingham_slice_is_cleaned_by_the_shared_rules() {
    let dir = TempDir::new().expect("temporary folder");
    let warehouse = new_warehouse(&dir);
    let source = ImportSource::Birmingham {
        csv: birmingham_slice(&dir),
    };
    assert_eq!(source.writer_name(), "birmingham");
    let report =
        import(&source, &warehouse, &NoProgress).expect("the Birmingham slice should import");

    assert_eq!(report.source, "birmingham");
    assert_eq!(report.rows_read, 3860);
    assert_eq!(
        rule_counts(&report),
        vec![
            ("dst_ambiguous_resolved", 0),
            ("dst_gap_shifted", 0),
            ("negative_dropped", 12),
            ("exact_duplicate_dropped", 18),
            ("conflicting_duplicate_kept_last", 0),
            ("above_capacity_clipped", 13),
            ("capacity_changed", 0),
        ]
    );
    assert_eq!(report.rows_kept(), 3830);
    assert_reconciles(&report);
    assert_eq!(report.lots, 5);
    // 07:59:42 BST and 16:30:35 GMT.
    assert_eq!(report.first_ts, Some(utc("2016-10-04 06:59:42")));
    assert_eq!(report.last_ts, Some(utc("2016-12-19 16:30:35")));

    let occupancy: Vec<LotOccupancyRow> =
        warehouse.read_rows().expect("occupancy should read back");
    assert_eq!(occupancy.len(), 3830);
    assert!(
        occupancy
            .iter()
            .all(|row| row.lot_id.starts_with("bhm:") && row.source == "birmingham")
    );
    assert!(
        occupancy
            .iter()
            .all(|row| (0..=row.capacity).contains(&row.occupied) && row.unknown == 0)
    );
    let at = |lot_id: &str, ts: DateTime<Utc>| {
        occupancy
            .iter()
            .filter(|row| row.lot_id == lot_id && row.ts == ts)
            .map(|row| row.occupied)
            .collect::<Vec<_>>()
    };
    // Line 1398: 320 of 317 at 14:03:38 BST, clipped.
    assert_eq!(at("bhm:BHMBCCPST01", utc("2016-10-08 13:03:38")), vec![317]);
    // Line 3712: -3 dropped; the other car parks' readings of that instant stay.
    assert_eq!(
        at("bhm:NIA North", utc("2016-10-16 14:57:16")),
        Vec::<i32>::new()
    );
    assert_eq!(at("bhm:BHMBCCMKT01", utc("2016-10-16 14:57:16")), vec![173]);

    let lots: Vec<LotRow> = warehouse.read_rows().expect("lots should read back");
    let nia_north = lots
        .iter()
        .find(|lot| lot.lot_id == "bhm:NIA North")
        .expect("NIA North should be a lot");
    assert_eq!(
        (
            nia_north.name.as_str(),
            nia_north.kind.as_str(),
            nia_north.capacity
        ),
        ("NIA North", "garage", 480)
    );
    assert_eq!(
        (
            nia_north.timezone.as_str(),
            nia_north.holiday_region.as_str()
        ),
        ("Europe/London", "GB-ENG")
    );
    let zones: Vec<ZoneRow> = warehouse.read_rows().expect("zones should read back");
    assert_eq!(zones.len(), 1);
    let calendar: Vec<CalendarRow> = warehouse.read_rows().expect("calendar should read back");
    assert_eq!(calendar.len(), 77, "4 Oct to 19 Dec 2016");
    assert!(calendar.iter().all(|row| row.region == "GB-ENG"));
    // The data lies in the embedded 2016/17 school year: every day says whether schools are
    // closed, the autumn half term (22-30 October with its weekends) and the first Christmas days.
    assert!(calendar.iter().all(|row| row.is_school_holiday.is_some()));
    let school_days_off = |name: &str| {
        let mut days: Vec<NaiveDate> = calendar
            .iter()
            .filter(|row| row.school_holiday_name.as_deref() == Some(name))
            .map(|row| row.date)
            .collect();
        days.sort();
        days
    };
    let date = |month: u32, day: u32| NaiveDate::from_ymd_opt(2016, month, day).expect("date");
    assert_eq!(
        school_days_off("Autumn half term"),
        (22..=30).map(|day| date(10, day)).collect::<Vec<_>>()
    );
    assert_eq!(
        school_days_off("Christmas holidays"),
        (17..=19).map(|day| date(12, day)).collect::<Vec<_>>()
    );
}

#[test]
fn reimporting_replaces_the_source_and_leaves_other_sources() {
    let dir = TempDir::new().expect("temporary folder");
    let warehouse = new_warehouse(&dir);
    let birmingham = ImportSource::Birmingham {
        csv: birmingham_slice(&dir),
    };
    let other = ImportSource::Csv {
        path: write_text(
            &dir,
            "other.csv",
            "lot_id,timestamp,occupied,capacity\nx,2024-03-01T08:00:00Z,1,10\n",
        ),
        name: "Other".to_owned(),
        timezone: None,
        holiday_region: None,
        calendar_file: None,
        hold_minutes: None,
    };
    import(&other, &warehouse, &NoProgress).expect("the generic CSV should import");
    let counts = |warehouse: &Warehouse| {
        let occupancy: Vec<LotOccupancyRow> =
            warehouse.read_rows().expect("occupancy should read back");
        let lots: Vec<LotRow> = warehouse.read_rows().expect("lots should read back");
        let calendar: Vec<CalendarRow> = warehouse.read_rows().expect("calendar should read back");
        (occupancy.len(), lots.len(), calendar.len())
    };
    let first =
        import(&birmingham, &warehouse, &NoProgress).expect("the first import should succeed");
    let after_first = counts(&warehouse);
    let second =
        import(&birmingham, &warehouse, &NoProgress).expect("the second import should succeed");
    assert_eq!(counts(&warehouse), after_first);
    assert_eq!(after_first, (3830 + 1, 5 + 1, 77));
    assert_eq!(first.written, second.written);
}

/// Málaga days chosen for their defects: 2022-05-26 (MA reports more free spaces than its 256
/// capacity; SJ still at 350), 2022-10-14 (SJ capacity 350 -> 410), 2022-10-30 (fall-back hour),
/// 2023-08-21 (MA capacity 256 -> 324; CE, PA, AN stop giving a capacity), 2024-01-05 (the `short`
/// format without capacity or name starts). The poi138/139/140/142 rows are all "no data", and the
/// two-letter garages repeat one value from 27 May 2022 to 21 Aug 2023 (a frozen feed).
const MALAGA_DAYS: [&str; 5] = [
    "2022-05-26",
    "2022-10-14",
    "2022-10-30",
    "2023-08-21",
    "2024-01-05",
];

fn malaga_slice(dir: &TempDir) -> PathBuf {
    let source = datasets_dir()
        .join("malaga")
        .join("free_spaces_long.csv.gz");
    let file = fs::File::open(&source)
        .expect("the data set should be readable (see shared/datasets/README.md)");
    let mut reader = BufReader::new(GzDecoder::new(file));
    let path = dir.path().join("free_spaces_long.csv.gz");
    let mut writer = GzEncoder::new(
        fs::File::create(&path).expect("temporary file"),
        Compression::fast(),
    );
    let mut line = String::new();
    let mut number = 0;
    while reader
        .read_line(&mut line)
        .expect("the data set should decompress")
        > 0
    {
        number += 1;
        if number == 1 || MALAGA_DAYS.iter().any(|day| line.starts_with(day)) {
            writer
                .write_all(line.as_bytes())
                .expect("temporary file should be writable");
        }
        line.clear();
    }
    writer.finish().expect("the slice should compress");
    path
}

#[test]
fn malaga_slice_fills_infers_and_clips_capacities() {
    let dir = TempDir::new().expect("temporary folder");
    let warehouse = new_warehouse(&dir);
    let source = ImportSource::Malaga {
        free_spaces_csv_gz: malaga_slice(&dir),
        lots_csv: datasets_dir().join("malaga").join("lots.csv"),
    };
    let report = import(&source, &warehouse, &NoProgress).expect("the Málaga slice should import");

    assert_eq!(report.source, "malaga");
    assert_eq!(report.rows_read, 6012);
    assert_eq!(
        rule_counts(&report),
        vec![
            ("dst_ambiguous_resolved", 10),
            ("dst_gap_shifted", 0),
            ("no_data_sentinel_dropped", 1436),
            ("negative_dropped", 0),
            ("exact_duplicate_dropped", 0),
            ("conflicting_duplicate_kept_last", 0),
            ("frozen_value_dropped", 1484),
            ("capacity_filled_from_lot", 565),
            ("capacity_inferred_from_max_free", 860),
            ("free_above_capacity_clipped", 16),
            ("above_capacity_clipped", 0),
            ("capacity_changed", 2),
        ]
    );
    assert_eq!(report.rows_kept(), 3092);
    assert_reconciles(&report);
    assert_eq!(report.lots, 12, "the poi138-142 garages never have data");
    assert_eq!(report.first_ts, Some(utc("2022-05-25 22:00:00")));
    assert_eq!(report.last_ts, Some(utc("2024-01-05 22:50:00")));

    let occupancy: Vec<LotOccupancyRow> =
        warehouse.read_rows().expect("occupancy should read back");
    assert_eq!(occupancy.len(), 3092);
    assert!(
        occupancy
            .iter()
            .all(|row| (0..=row.capacity).contains(&row.occupied) && row.source == "malaga")
    );
    let at = |lot_id: &str, ts: DateTime<Utc>| {
        occupancy
            .iter()
            .filter(|row| row.lot_id == lot_id && row.ts == ts)
            .map(|row| (row.occupied, row.capacity))
            .collect::<Vec<_>>()
    };
    // 274 free of 256 at 06:48 CEST.
    assert_eq!(at("mlg:MA", utc("2022-05-26 04:48:00")), vec![(0, 256)]);
    // MA repeats 2 free from 27 May 2022 to 21 Aug 2023 13:35: in the slice the run starts at
    // 00:11 CEST on 14 Oct 2022, whose reading is kept; the rest of the run is a frozen feed.
    assert_eq!(at("mlg:MA", utc("2022-10-13 22:11:00")), vec![(254, 256)]);
    assert_eq!(at("mlg:MA", utc("2023-08-21 11:35:00")), vec![]);
    // After the capacity change the feed moves again: 324 - 14.
    assert_eq!(at("mlg:MA", utc("2023-08-21 11:56:00")), vec![(310, 324)]);
    // 02:53 on the fall-back day follows 01:59 CEST, so it is the first pass (CEST).
    assert_eq!(
        at("mlg:poi1", utc("2022-10-30 00:53:00")),
        vec![(342 - 231, 342)]
    );

    let lots: Vec<LotRow> = warehouse.read_rows().expect("lots should read back");
    let lot = |lot_id: &str| {
        lots.iter()
            .find(|lot| lot.lot_id == lot_id)
            .expect("the lot should be written")
    };
    let cervantes = lot("mlg:CE");
    assert_eq!(
        (cervantes.name.as_str(), cervantes.capacity),
        ("Cervantes", 414)
    );
    assert_eq!(
        (cervantes.latitude, cervantes.longitude),
        (Some(36.7208633), Some(-4.4119148))
    );
    assert_eq!(lot("mlg:MA").capacity, 324, "capacity is the latest");
    assert_eq!(
        (lot("mlg:poi1").name.as_str(), lot("mlg:poi1").latitude),
        ("Salitre", None)
    );
    assert_eq!(
        lot("mlg:CY").name,
        "Carlos Haya",
        "short-format lots are named by lots.csv"
    );
    assert_eq!(
        lot("mlg:AL").capacity,
        256,
        "the largest free count Alcazaba reported in the slice"
    );
    assert!(
        lots.iter()
            .all(|lot| lot.timezone == "Europe/Madrid" && lot.holiday_region == "ES-AN")
    );
}

/// Melbourne lines 1-2100 (bay 735 has two stays inside a longer one) and every stay of bays 1404
/// (one stay 07:30-20:30 covering the others), 3338 and 5506 (departure 1900-01-01) and 6167 (a
/// 1900-01-01 departure followed by later stays); the locations without bay 567.
fn melbourne_slice(dir: &TempDir) -> (PathBuf, PathBuf) {
    let source = datasets_dir().join("melbourne");
    let extra_bays = ["1404,", "3338,", "5506,", "6167,"];
    let events: String = numbered_lines(&source.join("bay_events_2014-06-12.csv"))
        .into_iter()
        .filter(|(number, line)| {
            *number <= 2100 || extra_bays.iter().any(|bay| line.starts_with(bay))
        })
        .map(|(_, line)| line)
        .collect();
    let bays: Vec<String> = events
        .lines()
        .skip(1)
        .filter_map(|line| line.split(',').next())
        .map(str::to_owned)
        .collect();
    let locations_text = fs::read_to_string(source.join("bay_locations.json"))
        .expect("the data set should be readable");
    let mut locations: serde_json::Value =
        serde_json::from_str(&locations_text).expect("the locations are JSON");
    let features = locations["features"]
        .as_array_mut()
        .expect("a FeatureCollection has features");
    features.retain(|feature| {
        let bay_id = feature["properties"]["bayId"].as_str().unwrap_or_default();
        bay_id != "567" && bays.iter().any(|bay| bay == bay_id)
    });
    (
        write_text(dir, "bay_events.csv", &events),
        write_text(dir, "bay_locations.json", &locations.to_string()),
    )
}

/// Arrival and departure (`None`: still parked) of one stay of the source file.
type SourceStay = (DateTime<Utc>, Option<DateTime<Utc>>);

#[test]
fn melbourne_slice_becomes_sessions_changes_and_matching_lot_occupancy() {
    let dir = TempDir::new().expect("temporary folder");
    let warehouse = new_warehouse(&dir);
    let (events_csv, locations_json) = melbourne_slice(&dir);
    let source = ImportSource::Melbourne {
        events_csv: events_csv.clone(),
        locations_json,
        interval_minutes: 15,
    };
    let report =
        import(&source, &warehouse, &NoProgress).expect("the Melbourne slice should import");

    assert_eq!(report.source, "melbourne");
    assert_eq!(report.rows_read, 2140);
    assert_eq!(
        rule_counts(&report),
        vec![
            ("dst_ambiguous_resolved", 0),
            ("dst_gap_shifted", 0),
            ("departure_missing_kept_open", 3),
            ("departure_before_arrival_dropped", 0),
            ("overlapping_stay_trimmed", 4),
            ("bay_without_location", 1),
            ("initial_free_assumed", 169),
        ]
    );
    assert_reconciles(&report);
    assert_eq!(report.lots, 21, "20 street blocks and the unlocated bay");
    assert_eq!(report.rows_written(Table::FactParkingSession), 2140);
    assert_eq!(
        report.rows_written(Table::FactSlotStatus),
        2140 + 2138,
        "two stays stay open"
    );
    assert_eq!(report.rows_written(Table::FactLotOccupancy), 21 * 96);

    let sessions: Vec<ParkingSessionRow> =
        warehouse.read_rows().expect("sessions should read back");
    let session = |session_id: &str| {
        sessions
            .iter()
            .find(|session| session.session_id == session_id)
            .expect("the session should be written")
    };
    // 07:30:11-10:56:47 ends at the 07:41:37 arrival of the next stay (AEST, UTC+10).
    assert_eq!(
        session("mel:735:1").exit_ts,
        Some(utc("2014-06-11 21:41:37"))
    );
    assert!(session("mel:735:1").in_violation);
    assert_eq!(session("mel:3338:1").exit_ts, None);
    assert!(
        sessions
            .iter()
            .all(|session| session.vehicle_id.is_none() && session.customer_id.is_none())
    );

    let changes: Vec<SlotStatusRow> = warehouse.read_rows().expect("slot status should read back");
    let mut last_of_bay: HashMap<&str, (DateTime<Utc>, u64)> = HashMap::new();
    let mut ordered = changes.clone();
    ordered.sort_by_key(|row| (row.slot_id.clone(), row.sensor_seq));
    for row in &ordered {
        assert_eq!(
            (row.kind.as_str(), row.received_ts, row.source.as_str()),
            ("change", row.ts, "melbourne")
        );
        if let Some((ts, seq)) = last_of_bay.insert(&row.slot_id, (row.ts, row.sensor_seq)) {
            assert!(
                row.ts >= ts && row.sensor_seq == seq + 1,
                "sequence follows time per bay: {row:?}"
            );
        }
    }

    let slots: Vec<SlotRow> = warehouse.read_rows().expect("slots should read back");
    assert_eq!(slots.len(), 169);
    let lot_of_slot: HashMap<&str, &str> = slots
        .iter()
        .map(|slot| (slot.slot_id.as_str(), slot.lot_id.as_str()))
        .collect();
    assert_eq!(lot_of_slot["mel:567"], "mel:unlocated");
    assert_eq!(
        lot_of_slot["mel:735"],
        "mel:exhibition-street--la-trobe-street--lt-lonsdale-street"
    );
    assert!(
        slots
            .iter()
            .all(|slot| slot.latitude.is_some() == (slot.slot_id != "mel:567"))
    );

    // The stays of the source file, trimmed as documented, counted per lot at every grid instant.
    let aest = |text: &str| {
        let local =
            NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").expect("source times parse");
        assert_eq!(
            local.date(),
            NaiveDate::from_ymd_opt(2014, 6, 12).expect("date"),
            "June: AEST, no DST"
        );
        local.and_utc() - Duration::hours(10)
    };
    let mut stays_of_bay: BTreeMap<String, Vec<SourceStay>> = BTreeMap::new();
    let events_text = fs::read_to_string(&events_csv).expect("the slice should be readable");
    for line in events_text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let departure = (!fields[3].starts_with("1900")).then(|| aest(fields[3]));
        stays_of_bay
            .entry(fields[0].to_owned())
            .or_default()
            .push((aest(fields[2]), departure));
    }
    for stays in stays_of_bay.values_mut() {
        stays.sort();
        for index in 1..stays.len() {
            let next_arrival = stays[index].0;
            if stays[index - 1]
                .1
                .is_none_or(|departure| next_arrival < departure)
            {
                stays[index - 1].1 = Some(next_arrival);
            }
        }
    }
    let occupancy: Vec<LotOccupancyRow> =
        warehouse.read_rows().expect("occupancy should read back");
    let mut busiest = 0;
    for row in &occupancy {
        let covering = stays_of_bay
            .iter()
            .filter(|(bay, _)| lot_of_slot[format!("mel:{bay}").as_str()] == row.lot_id)
            .flat_map(|(_, stays)| stays)
            .filter(|(arrival, departure)| {
                *arrival <= row.ts && departure.is_none_or(|departure| row.ts < departure)
            })
            .count();
        assert_eq!(
            row.occupied as usize, covering,
            "{} at {}",
            row.lot_id, row.ts
        );
        assert_eq!(row.unknown, 0);
        busiest = busiest.max(covering);
    }
    assert!(busiest > 5, "the slice should have busy lots");
    let first_instant = occupancy.iter().map(|row| row.ts).min();
    assert_eq!(
        first_instant,
        Some(utc("2014-06-11 14:00:00")),
        "local midnight of 12 June"
    );

    let lots: Vec<LotRow> = warehouse.read_rows().expect("lots should read back");
    let capacity_total: i32 = lots.iter().map(|lot| lot.capacity).sum();
    assert_eq!(capacity_total, 169);
    let calendar: Vec<CalendarRow> = warehouse.read_rows().expect("calendar should read back");
    assert_eq!(calendar.len(), 1);
    assert_eq!(
        (calendar[0].region.as_str(), calendar[0].date),
        (
            "AU-VIC",
            NaiveDate::from_ymd_opt(2014, 6, 12).expect("date")
        )
    );
}

fn csv_source(path: PathBuf, timezone: Option<chrono_tz::Tz>) -> ImportSource {
    ImportSource::Csv {
        path,
        name: "Test Lots".to_owned(),
        timezone,
        holiday_region: None,
        calendar_file: None,
        hold_minutes: None,
    }
}

#[test]
fn generic_csv_errors_name_the_line_and_column() {
    let dir = TempDir::new().expect("temporary folder");
    let warehouse = new_warehouse(&dir);
    let text = "lot_id,timestamp,occupied,capacity\n\
                a,2024-03-01T08:00:00Z,1,10\n\
                a,2024-03-01T08:15:00Z,2,10\n\
                a,2024-03-01T08:30:00Z,lots,10\n";
    let error = import(
        &csv_source(write_text(&dir, "bad.csv", text), None),
        &warehouse,
        &NoProgress,
    )
    .expect_err("a non-number should be refused");
    let ImportError::Malformed { line, column, .. } = &error else {
        panic!("expected a malformed-value error, got {error:?}");
    };
    assert_eq!((*line, column.as_str()), (4, "occupied"));
    assert!(
        error
            .to_string()
            .contains("bad.csv: line 4, column occupied: \"lots\" is not an integer"),
        "{error}"
    );

    let short_row = "lot_id,timestamp,occupied,capacity\na,2024-03-01T08:00:00Z,1\n";
    let error = import(
        &csv_source(write_text(&dir, "short.csv", short_row), None),
        &warehouse,
        &NoProgress,
    )
    .expect_err("a short row should be refused");
    assert!(
        matches!(&error, ImportError::Malformed { line: 2, column, .. } if column == "capacity"),
        "{error:?}"
    );
}

#[test]
fn generic_csv_needs_its_columns() {
    let dir = TempDir::new().expect("temporary folder");
    let warehouse = new_warehouse(&dir);
    let cases = [
        ("lot_id,timestamp,capacity\n", "occupied or free"),
        ("lot_id,timestamp,occupied\n", "capacity"),
        ("lot,timestamp,occupied,capacity\n", "lot_id"),
    ];
    for (header, missing) in cases {
        let path = write_text(
            &dir,
            "header.csv",
            &format!("{header}a,2024-03-01T08:00:00Z,1\n"),
        );
        let error = import(&csv_source(path, None), &warehouse, &NoProgress)
            .expect_err("a missing column is refused");
        assert!(
            matches!(&error, ImportError::MissingColumn { column, .. } if column == missing),
            "{error:?}"
        );
    }
    let both = write_text(
        &dir,
        "both.csv",
        "lot_id,timestamp,occupied,free,capacity\na,2024-03-01T08:00:00Z,1,2,3\n",
    );
    let error = import(&csv_source(both, None), &warehouse, &NoProgress)
        .expect_err("occupied and free is refused");
    assert!(
        matches!(error, ImportError::ConflictingColumns { .. }),
        "{error:?}"
    );
}

#[test]
fn generic_csv_naive_times_need_a_timezone() {
    let dir = TempDir::new().expect("temporary folder");
    let warehouse = new_warehouse(&dir);
    let path = write_text(
        &dir,
        "naive.csv",
        "lot_id,timestamp,occupied,capacity\na,2024-03-01 08:00,1,10\n",
    );
    let error = import(&csv_source(path, None), &warehouse, &NoProgress)
        .expect_err("naive times need a zone");
    let ImportError::Malformed {
        line,
        column,
        message,
        ..
    } = &error
    else {
        panic!("expected a malformed-value error, got {error:?}");
    };
    assert_eq!((*line, column.as_str()), (2, "timestamp"));
    assert!(message.contains("--timezone"), "{message}");
}

#[test]
fn generic_csv_resolves_the_fall_back_and_the_spring_gap() {
    let dir = TempDir::new().expect("temporary folder");
    let warehouse = new_warehouse(&dir);
    // 30 Oct 2016: 02:00 BST -> 01:00 GMT; 26 Mar 2017: 01:00 GMT -> 02:00 BST.
    let text = "lot_id,timestamp,occupied,capacity\n\
                g,2016-10-30 00:30,10,100\n\
                g,2016-10-30 01:00,11,100\n\
                g,2016-10-30 01:30,12,100\n\
                g,2016-10-30 01:30,13,100\n\
                g,2016-10-30 02:00,14,100\n\
                g,2016-10-30T03:00:00+00:00,15,100\n\
                g,2017-03-26 00:30,20,100\n\
                g,2017-03-26 01:30,21,100\n\
                g,2017-03-26 02:45,22,100\n";
    let source = ImportSource::Csv {
        path: write_text(&dir, "dst.csv", text),
        name: "Test Lots".to_owned(),
        timezone: Some(chrono_tz::Europe::London),
        holiday_region: Some("GB-ENG".to_owned()),
        calendar_file: None,
        hold_minutes: None,
    };
    assert_eq!(source.writer_name(), "csv-test-lots");
    let report = import(&source, &warehouse, &NoProgress).expect("the CSV should import");
    assert_eq!(
        report.rule_count("dst_ambiguous_resolved"),
        Some(3),
        "01:00 and twice 01:30"
    );
    assert_eq!(report.rule_count("dst_gap_shifted"), Some(1));
    assert_eq!(report.rows_kept(), 9, "no reading collides");
    assert_reconciles(&report);

    let occupancy: Vec<LotOccupancyRow> =
        warehouse.read_rows().expect("occupancy should read back");
    let mut instants: Vec<(DateTime<Utc>, i32)> =
        occupancy.iter().map(|row| (row.ts, row.occupied)).collect();
    instants.sort();
    assert_eq!(
        instants,
        vec![
            (utc("2016-10-29 23:30:00"), 10),
            (utc("2016-10-30 00:00:00"), 11),
            (utc("2016-10-30 00:30:00"), 12), // first 01:30: BST
            (utc("2016-10-30 01:30:00"), 13), // repeated 01:30: GMT
            (utc("2016-10-30 02:00:00"), 14),
            (utc("2016-10-30 03:00:00"), 15),
            (utc("2017-03-26 00:30:00"), 20),
            (utc("2017-03-26 01:30:00"), 21), // 01:30 does not exist: read as 02:30 BST
            (utc("2017-03-26 01:45:00"), 22),
        ]
    );
    assert!(
        occupancy
            .iter()
            .all(|row| row.lot_id == "csv-test-lots:g" && row.source == "csv-test-lots")
    );
    let lots: Vec<LotRow> = warehouse.read_rows().expect("lots should read back");
    assert_eq!(
        (lots[0].name.as_str(), lots[0].kind.as_str()),
        ("g", "unknown")
    );
    assert_eq!(
        (lots[0].timezone.as_str(), lots[0].holiday_region.as_str()),
        ("Europe/London", "GB-ENG")
    );
    let calendar: Vec<CalendarRow> = warehouse.read_rows().expect("calendar should read back");
    assert_eq!(calendar.len(), 148, "30 Oct 2016 to 26 Mar 2017");
}

#[test]
fn generic_csv_free_counts_and_capacity_fill() {
    let dir = TempDir::new().expect("temporary folder");
    let warehouse = new_warehouse(&dir);
    let text = "Lot_ID , timestamp,free,capacity,comment\n\
                a,2024-03-01T08:00:00Z,5,50,x\n\
                a,2024-03-01T08:10:00Z,60,,capacity from 08:00; more free than capacity\n\
                a,2024-03-01T08:20:00Z,10,,tie between 08:00 and 08:40: the earlier\n\
                a,2024-03-01T08:40:00Z,10,60,capacity changes\n\
                a,2024-03-01T08:40:00Z,10,60,exact repeat\n\
                a,2024-03-01T08:50:00Z,-1,60,negative\n";
    let report = import(
        &csv_source(write_text(&dir, "free.csv", text), None),
        &warehouse,
        &NoProgress,
    )
    .expect("the CSV should import");
    assert_eq!(
        rule_counts(&report),
        vec![
            ("dst_ambiguous_resolved", 0),
            ("dst_gap_shifted", 0),
            ("negative_dropped", 1),
            ("exact_duplicate_dropped", 1),
            ("conflicting_duplicate_kept_last", 0),
            ("capacity_filled_from_lot", 2),
            ("free_above_capacity_clipped", 1),
            ("above_capacity_clipped", 0),
            ("capacity_changed", 1),
        ]
    );
    assert_reconciles(&report);
    let occupancy: Vec<LotOccupancyRow> =
        warehouse.read_rows().expect("occupancy should read back");
    let mut values: Vec<(DateTime<Utc>, i32, i32)> = occupancy
        .iter()
        .map(|row| (row.ts, row.occupied, row.capacity))
        .collect();
    values.sort();
    let occupied: Vec<(i32, i32)> = values
        .iter()
        .map(|(_, occupied, capacity)| (*occupied, *capacity))
        .collect();
    assert_eq!(occupied, vec![(45, 50), (0, 50), (40, 50), (50, 60)]);
    let lots: Vec<LotRow> = warehouse.read_rows().expect("lots should read back");
    assert_eq!(
        (
            lots[0].timezone.as_str(),
            lots[0].holiday_region.as_str(),
            lots[0].capacity
        ),
        ("UTC", "", 60)
    );

    let without_capacity =
        "lot_id,timestamp,free,capacity\na,2024-03-01T08:00:00Z,5,50\nb,2024-03-01T08:00:00Z,5,\n";
    let error = import(
        &csv_source(write_text(&dir, "nocap.csv", without_capacity), None),
        &warehouse,
        &NoProgress,
    )
    .expect_err("a lot without capacity should be refused");
    assert!(
        matches!(&error, ImportError::LotWithoutCapacity { lot_id, .. } if lot_id == "b"),
        "{error:?}"
    );
}

const OWN_CALENDAR: &str = "\
region,kind,first_day,last_day,name,source
XX-TEST,public,2024-03-07,,Town day,town hall
XX-TEST,public,2024-03-29,,Good Friday,town hall
XX-TEST,school,2024-03-11,2024-03-15,Spring break,school board
XX-TEST,school_coverage,2024-03-01,2024-07-31,,school board
";

/// Hourly readings of one lot, 4 to 10 March 2024 (UTC).
fn week_of_counts(dir: &TempDir) -> PathBuf {
    let mut text = "lot_id,timestamp,occupied,capacity\n".to_owned();
    for day in 4..=17 {
        for hour in [8, 12, 16] {
            text.push_str(&format!(
                "a,2024-03-{day:02}T{hour:02}:00:00Z,{},50\n",
                day + hour
            ));
        }
    }
    write_text(dir, "counts.csv", &text)
}

fn own_town(counts: PathBuf, region: Option<&str>, calendar: Option<PathBuf>) -> ImportSource {
    ImportSource::Csv {
        path: counts,
        name: "Own Town".to_owned(),
        timezone: None,
        holiday_region: region.map(str::to_owned),
        calendar_file: calendar,
        hold_minutes: None,
    }
}

#[test]
fn a_calendar_file_adds_a_region_that_reaches_dim_calendar_and_training() {
    let dir = TempDir::new().expect("temporary folder");
    let warehouse = new_warehouse(&dir);
    let counts = week_of_counts(&dir);
    let calendar = write_text(&dir, "calendar.csv", OWN_CALENDAR);

    let without = import(
        &own_town(counts.clone(), Some("XX-TEST"), None),
        &warehouse,
        &NoProgress,
    )
    .expect_err("XX-TEST is no embedded region");
    assert!(
        matches!(
            without,
            ImportError::Calendar(parkcast_features::calendar::CalendarError::UnknownRegion { .. })
        ),
        "{without:?}"
    );
    assert!(
        !warehouse.has_table(Table::FactLotOccupancy),
        "refused before reading"
    );

    import(
        &own_town(counts.clone(), Some("XX-TEST"), Some(calendar.clone())),
        &warehouse,
        &NoProgress,
    )
    .expect("the calendar file makes XX-TEST known");
    let mut rows: Vec<CalendarRow> = warehouse.read_rows().expect("calendar should read back");
    rows.sort_by_key(|row| row.date);
    assert_eq!(rows.len(), 14, "4 to 17 March");
    assert!(rows.iter().all(|row| row.region == "XX-TEST"));
    let day = |day: u32| &rows[(day - 4) as usize];
    assert_eq!(day(7).holiday_name.as_deref(), Some("Town day"));
    assert_eq!(
        day(8).is_bridge_day,
        Some(true),
        "the Friday after a Thursday holiday"
    );
    assert_eq!(day(6).is_bridge_day, Some(false));
    assert_eq!(day(8).is_school_holiday, Some(false));
    // Monday to Friday 11-15 March, widened over the weekends: 9 to 17 March.
    for date in 9..=17 {
        assert_eq!(day(date).is_school_holiday, Some(true), "{date} March");
        assert_eq!(
            day(date).school_holiday_name.as_deref(),
            Some("Spring break")
        );
    }
    assert_eq!(
        day(4).days_to_major_holiday,
        Some(25),
        "Good Friday is in the Easter season"
    );
    assert_eq!(day(4).days_from_major_holiday, Some(366), "none before");

    let kept = warehouse.root().join("calendars").join("csv-own-town.csv");
    assert!(kept.is_file(), "the file is kept for training");
    let lots =
        parkcast_warehouse::lots::load_lots(&warehouse, "csv-own-town", 60).expect("lots load");
    let holidays = &lots["csv-own-town:a"].context.holidays;
    assert_eq!(holidays.region(), "XX-TEST");
    assert!(holidays.is_holiday(NaiveDate::from_ymd_opt(2024, 3, 7).expect("date")));
    assert!(holidays.is_school_holiday(NaiveDate::from_ymd_opt(2024, 3, 12).expect("date")));

    // Another source may not give XX-TEST's public holidays a second time.
    let other = ImportSource::Csv {
        path: counts.clone(),
        name: "Other Town".to_owned(),
        timezone: None,
        holiday_region: Some("XX-TEST".to_owned()),
        calendar_file: Some(calendar),
        hold_minutes: None,
    };
    let conflict = import(&other, &warehouse, &NoProgress).expect_err("two files for XX-TEST");
    assert!(
        conflict.to_string().contains("csv-own-town.csv"),
        "{conflict}"
    );

    // Re-importing without the file drops it with the source's calendar.
    import(&own_town(counts, None, None), &warehouse, &NoProgress).expect("re-import");
    assert!(!kept.exists());
    assert!(
        warehouse
            .read_rows::<CalendarRow>()
            .expect("calendar should read back")
            .is_empty()
    );
}
