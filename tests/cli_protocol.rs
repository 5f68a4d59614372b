//! A user's own source as a new user meets it: `parkcast backtest --source csv-<name>` evaluates the
//! protocol its data suggests (not Birmingham's December 2016 week) and says which; a source that is
//! not there is named as missing, with the sources that are.

use crate::common;

use common::{import_town, parkcast};

#[test]
fn a_users_source_gets_the_protocol_of_its_data_and_a_missing_one_is_named() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let (warehouse, _) = import_town(dir.path());

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
