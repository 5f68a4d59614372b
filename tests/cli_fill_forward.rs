//! A source that writes only changes, as a user meets it: imported as is, `parkcast import csv`
//! warns that it looks change-only, the backtest warns that its grid lacks values and runs on a
//! fraction of the pairs; imported again with `--fill-forward 2h`, the import says what the fill
//! covers, nothing warns, and the backtest runs on about the pairs of the same city sampled every
//! 15 minutes, with about its MAE.

use crate::common;

use common::parkcast;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Output;

use chrono::{Duration, NaiveDate};

fn succeeded(output: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr)
}

/// Six weeks of three lots' counts every 15 minutes (busier on weekdays), where a count stands
/// still at about 40% of the quarters. Sampled, every quarter is written; written on change only,
/// a row is written a few minutes after a quarter whose count moved, and none otherwise.
fn counts(dir: &Path, change_only: bool) -> String {
    let mut text = "lot_id,timestamp,occupied,capacity\n".to_owned();
    let first = NaiveDate::from_ymd_opt(2024, 2, 5).expect("valid date");
    let mut state: u64 = 12_345;
    for (lot, capacity) in [("north", 40_i64), ("south", 120), ("east", 300)] {
        let mut occupied: Option<i64> = None;
        for day in 0..42 {
            let date = first + Duration::days(day);
            let weekday = day % 7 < 5;
            for quarter in 0..96_i64 {
                // A fixed linear congruential generator: the same file on every run.
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let draw = state >> 33;
                let hour = quarter as f64 / 4.0;
                let busy = (-(hour - 13.0).powi(2) / 18.0).exp() * if weekday { 0.9 } else { 0.5 };
                let target = (busy * capacity as f64 + 0.1 * capacity as f64).round() as i64;
                let next = match occupied {
                    Some(previous) if draw % 10 < 4 => previous,
                    _ => (target + [-1, 1, -2, 2][(draw / 10 % 4) as usize]).clamp(0, capacity),
                };
                let changed = occupied != Some(next);
                occupied = Some(next);
                if change_only && !changed {
                    continue;
                }
                let minute = (quarter % 4) * 15 + if change_only { (draw % 4) as i64 } else { 0 };
                writeln!(
                    text,
                    "{lot},{date} {:02}:{minute:02},{next},{capacity}",
                    quarter / 4
                )
                .expect("writing to a string");
            }
        }
    }
    let name = if change_only {
        "changes.csv"
    } else {
        "sampled.csv"
    };
    let path = dir.join(name);
    std::fs::write(&path, text).expect("temporary files should be writable");
    path.display().to_string()
}

fn import(warehouse: &str, csv: &str, name: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "import",
        "-w",
        warehouse,
        "csv",
        csv,
        "--name",
        name,
        "--timezone",
        "Europe/Paris",
        "--region",
        "FR",
    ];
    args.extend_from_slice(extra);
    parkcast(&args)
}

/// Pairs and MAE of rate of persistence + profile change at 30 minutes, and the run's output.
fn backtest(warehouse: &str, source: &str) -> (u64, f64, String, String) {
    let (stdout, stderr) = succeeded(&parkcast(&[
        "backtest",
        "-w",
        warehouse,
        "--source",
        source,
        "--models",
        "baselines",
    ]));
    let row = stdout
        .lines()
        .find(|line| line.contains("persistence + profile change ┆  30 min"))
        .unwrap_or_else(|| panic!("no row of persistence + profile change at 30 min: {stdout}"));
    let cells: Vec<&str> = row
        .trim_matches(|character| character == '│' || character == ' ')
        .split('┆')
        .map(str::trim)
        .collect();
    // model, horizon, MAE rate, RMSE rate, MAE slots, RMSE slots, 80%, 95%, 80% width, pairs, ...
    let mae: f64 = cells[2].parse().expect("MAE rate is a number");
    let pairs: u64 = cells[9]
        .replace(',', "")
        .parse()
        .expect("pairs is a number");
    (pairs, mae, stdout, stderr)
}

const CHANGE_ONLY: &str = "the source looks like it writes only changes";
const SPARSE_GRID: &str = "of 15-min grid steps lack a value; pairs are built only where both ends";

#[test]
fn a_source_that_writes_only_changes_warns_and_fill_forward_restores_its_pairs() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let warehouse = dir.path().join("warehouse").display().to_string();
    let sampled = counts(dir.path(), false);
    let changes = counts(dir.path(), true);

    // The same city sampled every quarter: the reference, and no warning.
    let (stdout, stderr) = succeeded(&import(&warehouse, &sampled, "sampled", &[]));
    assert!(!stdout.contains(CHANGE_ONLY) && !stderr.contains(CHANGE_ONLY));
    let (sampled_pairs, sampled_mae, _, stderr) = backtest(&warehouse, "csv-sampled");
    assert!(!stderr.contains(SPARSE_GRID), "{stderr}");

    // Imported as is: the import warns in its summary and its log, and says how to fix it.
    let (stdout, stderr) = succeeded(&import(&warehouse, &changes, "town", &[]));
    let warning = common::line_starting(&stdout, "warning: csv-town: ");
    assert!(
        warning.contains("of 15-min steps between first and last reading have no reading")
            && warning.contains("consecutive readings never repeat a value (all 3 lots)")
            && warning.contains(CHANGE_ONLY)
            && warning.contains("--fill-forward <max gap> (e.g. 2h)"),
        "{warning}"
    );
    assert!(stderr.contains(CHANGE_ONLY), "a WARN log too: {stderr}");
    eprintln!("{warning}");
    let (raw_pairs, raw_mae, stdout, stderr) = backtest(&warehouse, "csv-town");
    eprintln!(
        "{}",
        stderr
            .lines()
            .find(|line| line.contains(SPARSE_GRID))
            .unwrap_or_default()
    );
    assert!(
        stdout.contains("a reading every 15.0 min; 15-min grid"),
        "the stand-stills do not coarsen the grid: {stdout}"
    );
    assert!(stderr.contains(SPARSE_GRID), "{stderr}");
    assert!(
        (raw_pairs as f64) < 0.6 * sampled_pairs as f64,
        "without a fill only pairs near a change survive: {raw_pairs} of {sampled_pairs}"
    );

    // Imported again with a fill: no warning, the summary says what the fill covers, and the
    // backtest runs on about the sampled city's pairs with about its error.
    let (stdout, stderr) = succeeded(&import(
        &warehouse,
        &changes,
        "town",
        &["--fill-forward", "2h"],
    ));
    assert!(
        !stdout.contains(CHANGE_ONLY) && !stderr.contains(CHANGE_ONLY),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("csv-town: --fill-forward 2h holds readings over")
            && stdout.contains("empty 15-min steps in 3 of 3 lots"),
        "{stdout}"
    );
    eprintln!(
        "{}",
        stdout
            .lines()
            .find(|line| line.contains("holds readings over"))
            .unwrap_or_default()
    );
    let (filled_pairs, filled_mae, _, stderr) = backtest(&warehouse, "csv-town");
    assert!(!stderr.contains(SPARSE_GRID), "{stderr}");
    assert!(
        filled_pairs as f64 >= 0.98 * sampled_pairs as f64 && filled_pairs <= sampled_pairs,
        "{filled_pairs} pairs with the fill, {sampled_pairs} sampled"
    );
    assert!(
        (filled_mae - sampled_mae).abs() <= 0.1 * sampled_mae && filled_mae < 0.05,
        "MAE {filled_mae} with the fill, {sampled_mae} sampled"
    );
    eprintln!(
        "persistence + profile change, 30 min: sampled {sampled_pairs} pairs MAE {sampled_mae}; \
         change-only as is {raw_pairs} pairs MAE {raw_mae}; with --fill-forward 2h \
         {filled_pairs} pairs MAE {filled_mae}"
    );
}

#[test]
fn fill_forward_takes_a_duration_of_a_minute_to_seven_days() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let warehouse = dir.path().join("warehouse").display().to_string();
    let csv = dir.path().join("counts.csv");
    std::fs::write(
        &csv,
        "lot_id,timestamp,occupied,capacity\nnorth,2024-03-04T09:00:00Z,3,40\n",
    )
    .expect("temporary files should be writable");
    let csv = csv.display().to_string();
    for (duration, message) in [
        ("0m", "out of range"),
        ("8d", "out of range"),
        ("2 fortnights", "is not a whole number of minutes"),
        ("90", "is not a whole number of minutes"),
        ("90s", "is not a whole number of minutes"),
    ] {
        let output = import(&warehouse, &csv, "town", &["--fill-forward", duration]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "a usage error: {stderr}");
        assert!(
            stderr.contains("--fill-forward") && stderr.contains(message),
            "{duration}: {stderr}"
        );
    }
    for duration in ["90m", "1h30m", "2 hours", "7d"] {
        succeeded(&import(
            &warehouse,
            &csv,
            "town",
            &["--fill-forward", duration],
        ));
    }
}
