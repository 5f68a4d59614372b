//! A user's own source as a new user meets it: `parkcast backtest --source csv-<name>` evaluates the
//! protocol its data suggests (not Birmingham's December 2016 week) and says which; a source that is
//! not there is named as missing, with the sources that are.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};

use chrono::{Duration, NaiveDate};

fn parkcast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_parkcast"))
        .args(args)
        .arg("--quiet")
        .env_remove("PARKCAST_WAREHOUSE")
        .output()
        .expect("the parkcast binary should run")
}

/// Six weeks of 15-minute counts of two lots with a daily rhythm (busier on weekdays).
fn counts(dir: &Path) -> String {
    let mut text = "lot_id,timestamp,occupied,capacity\n".to_owned();
    let first = NaiveDate::from_ymd_opt(2024, 2, 5).expect("valid date");
    for day in 0..42 {
        let date = first + Duration::days(day);
        let weekday = day % 7 < 5;
        for quarter in 0..96 {
            let hour = f64::from(quarter) / 4.0;
            let busy = (-(hour - 13.0).powi(2) / 18.0).exp() * if weekday { 0.9 } else { 0.5 };
            for (lot, capacity) in [("north", 40.0), ("south", 120.0)] {
                let occupied =
                    (busy * capacity + f64::from((quarter * 7 + day as i32) % 3)).round();
                writeln!(
                    text,
                    "{lot},{date} {:02}:{:02},{occupied},{capacity}",
                    quarter / 4,
                    (quarter % 4) * 15
                )
                .expect("writing to a string");
            }
        }
    }
    let path = dir.join("counts.csv");
    std::fs::write(&path, text).expect("temporary files should be writable");
    path.display().to_string()
}

#[test]
fn a_users_source_gets_the_protocol_of_its_data_and_a_missing_one_is_named() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let warehouse = dir.path().join("warehouse").display().to_string();
    let counts = counts(dir.path());
    let import = parkcast(&[
        "import",
        "-w",
        &warehouse,
        "csv",
        &counts,
        "--name",
        "town",
        "--timezone",
        "Europe/Paris",
        "--region",
        "FR",
    ]);
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );

    let backtest = parkcast(&[
        "backtest",
        "-w",
        &warehouse,
        "--source",
        "csv-town",
        "--models",
        "baselines",
    ]);
    let stdout = String::from_utf8_lossy(&backtest.stdout);
    assert!(
        backtest.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&backtest.stderr)
    );
    // 42 days: a test week, 14 calibration days, 14 training days and one spare week.
    assert!(
        stdout.contains(
            "protocol: from the data of csv-town: 2 lots, 2024-02-05 to 2024-03-17, a reading every 15.0 min; \
             15-min grid, horizons 30 min / 1h / 2h, 2 windows: 2024-03-04..2024-03-10, 2024-03-11..2024-03-17"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("2016"), "no Birmingham dates: {stdout}");
    // --quiet draws no bar, so the stages are logged instead: a long quiet run is not silent.
    let stderr = String::from_utf8_lossy(&backtest.stderr);
    assert!(
        stderr.contains("stage started") && stderr.contains("stage finished"),
        "{stderr}"
    );

    // Without --source, the warehouse's only source (not Birmingham, which it does not hold).
    let only = parkcast(&["backtest", "-w", &warehouse, "--models", "baselines"]);
    let stdout = String::from_utf8_lossy(&only.stdout);
    assert!(
        only.status.success() && stdout.contains("protocol: from the data of csv-town"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&only.stderr)
    );

    let missing = parkcast(&[
        "backtest",
        "-w",
        &warehouse,
        "--source",
        "csv-nosuch",
        "--models",
        "baselines",
    ]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("no source \"csv-nosuch\"") && stderr.contains("csv-town (2 lots)"),
        "{stderr}"
    );
}
