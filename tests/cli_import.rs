//! `parkcast import csv --calendar-file` as a user runs it: a region of the user's own reaches
//! `dim_calendar` and stays in the warehouse for training.

use crate::common;

use common::parkcast;

use std::path::Path;

use chrono::NaiveDate;
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::rows::CalendarRow;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("temporary files should be writable");
    path.display().to_string()
}

/// Day of month, public holiday, school holiday, bridge day.
type DaySummary<'a> = (u32, Option<&'a str>, Option<bool>, Option<bool>);

#[test]
fn import_csv_with_a_calendar_file_of_a_new_region() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let warehouse = dir.path().join("warehouse").display().to_string();
    let mut counts = "lot_id,timestamp,occupied,capacity\n".to_owned();
    for day in 4..=10 {
        counts.push_str(&format!("north,2024-03-{day:02} 09:00,{day},40\n"));
    }
    let counts = write(dir.path(), "counts.csv", &counts);
    let calendar = write(
        dir.path(),
        "calendar.csv",
        "# the town's own calendar\n\
         region,kind,first_day,last_day,name,source\n\
         XX-TEST,public,2024-03-07,,Town day,town hall\n\
         XX-TEST,school,2024-03-04,2024-03-05,Skiing days,school board\n\
         XX-TEST,school_coverage,2024-01-01,2024-12-31,,school board\n",
    );
    let base = [
        "import",
        "-w",
        &warehouse,
        "csv",
        &counts,
        "--name",
        "own-town",
        "--timezone",
        "Europe/Paris",
        "--region",
        "XX-TEST",
    ];

    let unknown = parkcast(&base);
    assert!(!unknown.status.success(), "XX-TEST is not embedded");
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("XX-TEST") && stderr.contains("calendar file"),
        "the error says what to do: {stderr}"
    );

    let no_region = parkcast(&[
        "import",
        "-w",
        &warehouse,
        "csv",
        &counts,
        "--name",
        "own-town",
        "--calendar-file",
        &calendar,
    ]);
    assert!(
        !no_region.status.success(),
        "--calendar-file needs --region"
    );

    let imported = parkcast(&[&base[..], &["--calendar-file", &calendar]].concat());
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let warehouse = Warehouse::open(&warehouse).expect("the import made a warehouse");
    let mut rows: Vec<CalendarRow> = warehouse.read_rows().expect("dim_calendar");
    rows.sort_by_key(|row| row.date);
    let date = |day: u32| NaiveDate::from_ymd_opt(2024, 3, day).expect("date");
    assert_eq!(
        rows.iter().map(|row| row.date).collect::<Vec<_>>(),
        (4..=10).map(date).collect::<Vec<_>>()
    );
    let summary: Vec<DaySummary> = rows
        .iter()
        .map(|row| {
            (
                chrono::Datelike::day(&row.date),
                row.holiday_name.as_deref(),
                row.is_school_holiday,
                row.is_bridge_day,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (4, None, Some(true), Some(false)),
            (5, None, Some(true), Some(false)),
            (6, None, Some(false), Some(false)),
            (7, Some("Town day"), Some(false), Some(false)),
            (8, None, Some(false), Some(true)),
            (9, None, Some(false), Some(false)),
            (10, None, Some(false), Some(false)),
        ]
    );
    assert!(
        warehouse
            .root()
            .join("calendars/csv-own-town.csv")
            .is_file(),
        "kept for training"
    );
}
