//! Rows written to the warehouse come back identical through polars lazy scans, and bad files are
//! refused with an error that names the file, the table and the column.

use chrono::{DateTime, NaiveDate, Utc};
use parkcast_warehouse::rows::{
    CalendarRow, LotOccupancyRow, LotRow, ParkingSessionRow, SlotStatusRow,
};
use parkcast_warehouse::schema::{ColumnType, Table};
use parkcast_warehouse::{FORMAT_VERSION, FrameRow, Warehouse, WarehouseError};
use polars::prelude::*;
use proptest::prelude::*;

/// Millisecond instants between 2000 and 2040 (the warehouse stores milliseconds).
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (946_684_800_000i64..2_208_988_800_000)
        .prop_map(|millis| DateTime::from_timestamp_millis(millis).expect("in range"))
}

fn text() -> impl Strategy<Value = String> {
    // Any Unicode, including the empty string and characters that need escaping elsewhere.
    "\\PC{0,12}"
}

fn slot_status_row() -> impl Strategy<Value = SlotStatusRow> {
    (
        instant(),
        0i64..3_600_000,
        text(),
        text(),
        any::<bool>(),
        prop_oneof!["change", "heartbeat"],
        any::<u64>(),
        text(),
    )
        .prop_map(
            |(ts, delay, slot_id, lot_id, occupied, kind, sensor_seq, source)| SlotStatusRow {
                ts,
                received_ts: ts + chrono::Duration::milliseconds(delay),
                slot_id,
                lot_id,
                occupied,
                kind: kind.to_owned(),
                sensor_seq,
                source,
            },
        )
}

fn session_row() -> impl Strategy<Value = ParkingSessionRow> {
    (
        (text(), text(), text()),
        (proptest::option::of(text()), proptest::option::of(text())),
        instant(),
        proptest::option::of(0i64..86_400_000),
        proptest::option::of(any::<i32>()),
        any::<bool>(),
    )
        .prop_map(
            |(
                (session_id, slot_id, lot_id),
                (vehicle_id, customer_id),
                entry_ts,
                stay,
                allowed_minutes,
                in_violation,
            )| {
                ParkingSessionRow {
                    session_id,
                    slot_id,
                    lot_id,
                    vehicle_id,
                    customer_id,
                    entry_ts,
                    exit_ts: stay.map(|stay| entry_ts + chrono::Duration::milliseconds(stay)),
                    allowed_minutes,
                    in_violation,
                    source: "test".to_owned(),
                }
            },
        )
}

fn lot_row() -> impl Strategy<Value = LotRow> {
    (
        text(),
        any::<i32>(),
        proptest::option::of(-90.0f64..90.0),
        proptest::option::of(-180.0f64..180.0),
        proptest::option::of(1i32..=10_080),
    )
        .prop_map(
            |(name, capacity, latitude, longitude, hold_minutes)| LotRow {
                lot_id: format!("lot-{name}"),
                zone_id: "zone".to_owned(),
                name,
                kind: "garage".to_owned(),
                capacity,
                latitude,
                longitude,
                timezone: "Europe/London".to_owned(),
                holiday_region: "GB-ENG".to_owned(),
                source: "test".to_owned(),
                hold_minutes,
            },
        )
}

/// Rows of a partitioned table come back in partition order; sort both sides the same way.
fn sorted_by<R: Clone, K: Ord>(rows: &[R], key: impl Fn(&R) -> K) -> Vec<R> {
    let mut rows = rows.to_vec();
    rows.sort_by_key(|row| key(row));
    rows
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn sensor_rows_round_trip(rows in proptest::collection::vec(slot_status_row(), 0..200)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let warehouse = Warehouse::create(dir.path()).expect("warehouse");
        warehouse.replace("test", &rows).expect("write");
        let back = warehouse.read_rows::<SlotStatusRow>().expect("read");
        let key = |row: &SlotStatusRow| (row.ts, row.sensor_seq, row.slot_id.clone(), row.received_ts, row.lot_id.clone(), row.occupied, row.source.clone());
        prop_assert_eq!(sorted_by(&back, key), sorted_by(&rows, key));
    }

    #[test]
    fn session_rows_with_nulls_round_trip(rows in proptest::collection::vec(session_row(), 0..100)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let warehouse = Warehouse::create(dir.path()).expect("warehouse");
        warehouse.replace("test", &rows).expect("write");
        let back = warehouse.read_rows::<ParkingSessionRow>().expect("read");
        let key = |row: &ParkingSessionRow| (row.entry_ts, row.session_id.clone(), row.slot_id.clone(), row.exit_ts, row.vehicle_id.clone(), row.customer_id.clone(), row.allowed_minutes, row.in_violation);
        prop_assert_eq!(sorted_by(&back, key), sorted_by(&rows, key));
    }

    #[test]
    fn dimension_rows_round_trip_in_order(rows in proptest::collection::vec(lot_row(), 0..50)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let warehouse = Warehouse::create(dir.path()).expect("warehouse");
        warehouse.replace("test", &rows).expect("write");
        prop_assert_eq!(warehouse.read_rows::<LotRow>().expect("read"), rows);
    }
}

fn occupancy(lot: &str, day: u32, hour: u32, occupied: i32) -> LotOccupancyRow {
    let ts = NaiveDate::from_ymd_opt(2026, 3, day)
        .and_then(|date| date.and_hms_opt(hour, 0, 0))
        .expect("valid")
        .and_utc();
    LotOccupancyRow {
        lot_id: lot.to_owned(),
        ts,
        occupied,
        unknown: 0,
        capacity: 100,
        source: "test".to_owned(),
    }
}

#[test]
fn facts_are_hive_partitioned_by_utc_date_and_prune_by_date() {
    let dir = tempfile::tempdir().expect("temp dir");
    let warehouse = Warehouse::create(dir.path()).expect("warehouse");
    let rows = vec![
        occupancy("a", 1, 8, 10),
        occupancy("a", 1, 23, 20),
        occupancy("b", 2, 0, 30),
        occupancy("b", 3, 12, 40),
    ];
    let stats = warehouse.replace("test", &rows).expect("write");
    assert_eq!(stats.files, 3);
    for day in ["2026-03-01", "2026-03-02", "2026-03-03"] {
        let path = dir
            .path()
            .join("fact_lot_occupancy")
            .join(format!("date={day}"))
            .join("part-test-0.parquet");
        assert!(path.is_file(), "{} missing", path.display());
    }
    let frame = warehouse
        .scan(Table::FactLotOccupancy)
        .expect("scan")
        .filter(col("date").gt_eq(lit(NaiveDate::from_ymd_opt(2026, 3, 2).expect("valid"))))
        .select([col("lot_id"), col("occupied"), col("date")])
        .sort(["occupied"], SortMultipleOptions::default())
        .collect()
        .expect("collect");
    assert_eq!(frame.height(), 2);
    assert_eq!(
        frame.column("date").expect("date column").dtype(),
        &DataType::Date
    );
    let occupied: Vec<Option<i32>> = frame
        .column("occupied")
        .expect("occupied")
        .i32()
        .expect("i32")
        .iter()
        .collect();
    assert_eq!(occupied, vec![Some(30), Some(40)]);
}

#[test]
fn writers_replace_their_own_files_and_leave_others_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let warehouse = Warehouse::create(dir.path()).expect("warehouse");
    warehouse
        .replace("alpha", &[occupancy("a", 1, 8, 1), occupancy("a", 2, 8, 2)])
        .expect("write");
    warehouse
        .replace("beta", &[occupancy("b", 1, 8, 3)])
        .expect("write");
    warehouse
        .replace("alpha", &[occupancy("a", 3, 8, 4)])
        .expect("rewrite");
    let mut occupied: Vec<i32> = warehouse
        .read_rows::<LotOccupancyRow>()
        .expect("read")
        .iter()
        .map(|row| row.occupied)
        .collect();
    occupied.sort_unstable();
    assert_eq!(occupied, vec![3, 4]);
    assert!(
        !dir.path()
            .join("fact_lot_occupancy/date=2026-03-02")
            .exists(),
        "emptied partitions are removed"
    );
    assert!(matches!(
        warehouse.replace("../escape", &[occupancy("a", 1, 8, 1)]),
        Err(WarehouseError::BadWriterName { .. })
    ));
}

#[test]
fn an_empty_table_scans_to_an_empty_frame_with_the_schema() {
    let dir = tempfile::tempdir().expect("temp dir");
    let warehouse = Warehouse::create(dir.path()).expect("warehouse");
    warehouse
        .replace::<CalendarRow>("test", &[])
        .expect("write");
    warehouse
        .replace::<LotOccupancyRow>("test", &[])
        .expect("write");
    assert!(
        warehouse
            .read_rows::<CalendarRow>()
            .expect("read")
            .is_empty()
    );
    let frame = warehouse
        .scan(Table::FactLotOccupancy)
        .expect("scan")
        .collect()
        .expect("collect");
    assert_eq!(frame.height(), 0);
    assert!(frame.column("date").is_ok() && frame.column("capacity").is_ok());
}

/// Writes a frame as a Parquet file into a table folder, bypassing the warehouse's checks.
fn plant_file(dir: &std::path::Path, table: Table, frame: &mut DataFrame) -> std::path::PathBuf {
    let folder = dir.join(table.name()).join("date=2026-03-01");
    std::fs::create_dir_all(&folder).expect("folder");
    let path = folder.join("part-other-0.parquet");
    let file = std::fs::File::create(&path).expect("create");
    ParquetWriter::new(file).finish(frame).expect("write");
    path
}

#[test]
fn a_file_with_a_wrong_column_type_is_named_in_the_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let warehouse = Warehouse::create(dir.path()).expect("warehouse");
    warehouse
        .replace("test", &[occupancy("a", 1, 8, 1)])
        .expect("write");
    let mut frame = LotOccupancyRow::to_frame(&[occupancy("b", 1, 9, 2)]).expect("frame");
    frame
        .with_column(Column::new("occupied".into(), ["two"]))
        .expect("replace column");
    let bad = plant_file(dir.path(), Table::FactLotOccupancy, &mut frame);
    let Err(error) = warehouse.scan(Table::FactLotOccupancy) else {
        panic!("a text occupancy column must be refused");
    };
    match &error {
        WarehouseError::WrongColumnType {
            table,
            column,
            expected,
            path,
            ..
        } => {
            assert_eq!(
                (*table, *column, *expected),
                (Table::FactLotOccupancy, "occupied", ColumnType::Int32)
            );
            assert_eq!(path, &bad);
        }
        other => panic!("unexpected error {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains("occupied") && message.contains("part-other-0.parquet"),
        "{message}"
    );
}

#[test]
fn a_file_missing_a_column_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let warehouse = Warehouse::create(dir.path()).expect("warehouse");
    let mut frame = LotOccupancyRow::to_frame(&[occupancy("b", 1, 9, 2)])
        .expect("frame")
        .drop("capacity")
        .expect("drop");
    plant_file(dir.path(), Table::FactLotOccupancy, &mut frame);
    let error = warehouse
        .read_rows::<LotOccupancyRow>()
        .expect_err("missing capacity must be refused");
    assert!(
        matches!(
            error,
            WarehouseError::MissingColumn {
                column: "capacity",
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn missing_tables_and_foreign_folders_get_clear_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert!(matches!(
        Warehouse::open(dir.path()),
        Err(WarehouseError::NotAWarehouse { .. })
    ));
    let warehouse = Warehouse::create(dir.path()).expect("warehouse");
    let Err(error) = warehouse.scan(Table::FactPayment) else {
        panic!("no payments were written");
    };
    assert!(
        matches!(
            error,
            WarehouseError::MissingTable {
                table: Table::FactPayment,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("fact_payment"));
    std::fs::write(
        dir.path().join("warehouse.json"),
        r#"{"format_version": 99, "partitioning": "hive:date(utc)"}"#,
    )
    .expect("write");
    assert!(matches!(
        Warehouse::open(dir.path()),
        Err(WarehouseError::UnsupportedVersion { found: 99, .. })
    ));
}

/// A `dim_calendar` row as format 2 writes it.
fn calendar_row(day: u32, school: Option<bool>) -> CalendarRow {
    CalendarRow {
        date: NaiveDate::from_ymd_opt(2016, 12, day).expect("date"),
        region: "GB-ENG".to_owned(),
        day_of_week: 1,
        is_weekend: false,
        holiday_name: None,
        days_to_holiday: 3,
        days_from_holiday: 40,
        is_school_holiday: school,
        school_holiday_name: school
            .filter(|school| *school)
            .map(|_| "Christmas".to_owned()),
        is_bridge_day: Some(false),
        days_to_major_holiday: Some(3),
        days_from_major_holiday: Some(200),
    }
}

#[test]
fn a_format_1_calendar_file_reads_its_new_columns_as_null() {
    // Both file orders: polars takes a scan's schema from its first file unless told otherwise.
    for (old_name, new_writer) in [
        ("part-aa-old-0.parquet", "zz-new"),
        ("part-zz-old-0.parquet", "aa-new"),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("warehouse.json"),
            r#"{"format_version": 1, "partitioning": "hive:date(utc)"}"#,
        )
        .expect("an old manifest");
        // What format 1 wrote: the calendar without the columns format 2 added.
        let added: Vec<&str> = Table::DimCalendar
            .columns()
            .iter()
            .filter(|column| column.added_in_format > 1)
            .map(|column| column.name)
            .collect();
        assert_eq!(added.len(), 5);
        let mut old = CalendarRow::to_frame(&[calendar_row(1, None), calendar_row(2, None)])
            .expect("frame")
            .drop_many(added.iter().copied());
        let folder = dir.path().join(Table::DimCalendar.name());
        std::fs::create_dir_all(&folder).expect("folder");
        let file = std::fs::File::create(folder.join(old_name)).expect("create");
        ParquetWriter::new(file).finish(&mut old).expect("write");

        let reader = Warehouse::open(dir.path()).expect("format 1 opens");
        assert_eq!(reader.format_version().expect("version"), 1);
        let rows: Vec<CalendarRow> = reader.read_rows().expect("an old file reads");
        assert_eq!(
            rows,
            [calendar_row(1, None), calendar_row(2, None)].map(|row| CalendarRow {
                is_bridge_day: None,
                days_to_major_holiday: None,
                days_from_major_holiday: None,
                ..row
            })
        );

        // A newer import writes files of this format beside it, and marks the warehouse.
        let writer = Warehouse::create(dir.path()).expect("opens for writing");
        assert_eq!(writer.format_version().expect("version"), FORMAT_VERSION);
        let new_rows = [calendar_row(19, Some(true)), calendar_row(20, Some(false))];
        writer.replace(new_writer, &new_rows).expect("write");
        let mut rows: Vec<CalendarRow> = writer.read_rows().expect("two formats read together");
        rows.sort_by_key(|row| row.date);
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows.iter()
                .map(|row| row.is_school_holiday)
                .collect::<Vec<_>>(),
            [None, None, Some(true), Some(false)]
        );
        assert_eq!(rows[0].days_to_major_holiday, None);
        assert_eq!(rows[2], new_rows[0]);
        let lazy = writer
            .scan(Table::DimCalendar)
            .expect("scan")
            .filter(col("is_school_holiday").eq(lit(true)))
            .collect()
            .expect("a filter on a new column works across formats");
        assert_eq!(lazy.height(), 1);
    }
}

fn lot(id: &str, hold_minutes: Option<i32>) -> LotRow {
    LotRow {
        lot_id: id.to_owned(),
        zone_id: "zone".to_owned(),
        name: id.to_owned(),
        kind: "unknown".to_owned(),
        capacity: 40,
        latitude: None,
        longitude: None,
        timezone: "Europe/Paris".to_owned(),
        holiday_region: "FR".to_owned(),
        source: "csv-town".to_owned(),
        hold_minutes,
    }
}

#[test]
fn a_format_2_lot_file_reads_no_hold_beside_a_newer_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("warehouse.json"),
        r#"{"format_version": 2, "partitioning": "hive:date(utc)"}"#,
    )
    .expect("an old manifest");
    // What format 2 wrote: dim_lot without hold_minutes.
    let mut old = LotRow::to_frame(&[lot("csv-old:a", None)])
        .expect("frame")
        .drop_many(["hold_minutes"]);
    let folder = dir.path().join(Table::DimLot.name());
    std::fs::create_dir_all(&folder).expect("folder");
    let file = std::fs::File::create(folder.join("part-csv-old-0.parquet")).expect("create");
    ParquetWriter::new(file).finish(&mut old).expect("write");

    let reader = Warehouse::open(dir.path()).expect("format 2 opens");
    let rows: Vec<LotRow> = reader.read_rows().expect("an old file reads");
    assert_eq!(
        rows,
        [lot("csv-old:a", None)],
        "a missing column means no fill"
    );

    let writer = Warehouse::create(dir.path()).expect("opens for writing");
    assert_eq!(
        writer.format_version().expect("version"),
        parkcast_warehouse::FORMAT_VERSION
    );
    writer
        .replace("csv-new", &[lot("csv-new:b", Some(120))])
        .expect("write");
    let mut rows: Vec<LotRow> = writer.read_rows().expect("two formats read together");
    rows.sort_by(|a, b| a.lot_id.cmp(&b.lot_id));
    assert_eq!(rows, [lot("csv-new:b", Some(120)), lot("csv-old:a", None)]);
}

#[test]
fn an_old_file_missing_an_original_column_is_still_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let warehouse = Warehouse::create(dir.path()).expect("warehouse");
    let mut frame = CalendarRow::to_frame(&[calendar_row(1, None)])
        .expect("frame")
        .drop_many(["is_school_holiday", "days_to_holiday"]);
    let folder = dir.path().join(Table::DimCalendar.name());
    std::fs::create_dir_all(&folder).expect("folder");
    let file = std::fs::File::create(folder.join("part-old-0.parquet")).expect("create");
    ParquetWriter::new(file).finish(&mut frame).expect("write");
    let error = warehouse
        .read_rows::<CalendarRow>()
        .expect_err("days_to_holiday has been there since format 1");
    assert!(
        matches!(
            error,
            WarehouseError::MissingColumn {
                column: "days_to_holiday",
                ..
            }
        ),
        "{error:?}"
    );
}

/// A split of a simulated city (sessions included) read back group by group equals the
/// warehouse's own filtered reads, for single lots and for reads across group boundaries, with
/// one partition per chunk and a file per chunk and group, so several chunks and files keep each
/// lot's rows in the warehouse's order.
#[test]
fn a_split_by_lot_group_reads_every_lot_as_the_warehouse_does() {
    use parkcast_training::progress::NoProgress;
    use parkcast_training::simulate::{SimulationParams, simulate};
    use parkcast_warehouse::lots::{LotInputs, load_lots_in, lot_ids};
    use parkcast_warehouse::split::{FactChunks, LotSplit, SplitOptions};

    let dir = tempfile::tempdir().expect("temp dir");
    let warehouse = Warehouse::create(dir.path()).expect("warehouse");
    let params = SimulationParams::default()
        .lots(5)
        .days(6)
        .check()
        .expect("valid parameters");
    simulate(&params, &warehouse, &NoProgress).expect("simulation");
    let ids = lot_ids(&warehouse, "simulated").expect("ids");
    assert_eq!(ids.len(), 5);
    let scratch = tempfile::tempdir().expect("scratch");
    let options = SplitOptions {
        buffer_bytes: 1,
        ..SplitOptions::new(2)
    };
    let fact_chunks = FactChunks::list(&warehouse, 1).expect("chunks");
    assert_eq!(
        fact_chunks.lot_ids(&warehouse, "simulated").expect("ids"),
        ids
    );
    let chunks = std::cell::Cell::new(0);
    let split = LotSplit::write(
        &warehouse,
        "simulated",
        ids.clone(),
        options,
        &fact_chunks,
        scratch.path(),
        &|| chunks.set(chunks.get() + 1),
    )
    .expect("split");
    assert_eq!(split.ids(), ids);
    assert_eq!(chunks.get(), fact_chunks.len());
    assert!(chunks.get() >= 12, "one chunk per day and table");
    let files = std::fs::read_dir(scratch.path().join("fact_parking_session"))
        .expect("session files")
        .count();
    assert!(files >= 3 * 6, "a file per group and chunk, found {files}");

    let summary = |lot: &LotInputs| {
        (
            lot.series.iter().collect::<Vec<_>>(),
            lot.arrivals_ms.clone(),
            lot.departures_ms.clone(),
            lot.kind.clone(),
            lot.holiday_region.clone(),
            lot.filled_forward,
            lot.series.timezone(),
        )
    };
    for wanted in [&ids[..1], &ids[1..4], &ids[4..], &ids[..]] {
        let from_split = split
            .load(&warehouse, "simulated", 15, wanted)
            .expect("split read");
        let direct = load_lots_in(&warehouse, "simulated", 15, Some(wanted)).expect("direct read");
        assert_eq!(
            from_split.keys().collect::<Vec<_>>(),
            wanted.iter().collect::<Vec<_>>()
        );
        for (id, lot) in &direct {
            assert!(!lot.arrivals_ms.is_empty(), "{id} has sessions");
            assert_eq!(summary(&from_split[id]), summary(lot), "{id}");
        }
    }
}
