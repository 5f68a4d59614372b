//! A real city brought as a planner would bring it: Málaga's garages exported as an hourly CSV of
//! free counts (naive local times, each lot's capacity on its first row only), ten weeks of it,
//! imported with `parkcast import csv` and backtested with the protocol its data suggests. The
//! trees must beat persistence + profile change at every horizon on the validation days, and the
//! summary must say that the city, short of history, would borrow rows from the real data sets
//! the configuration names, and how to let it; with Birmingham imported beside it, it does.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use parkcast_training::datasets::{MALAGA_FREE_SPACES_CSV_GZ, datasets_dir};

use crate::common::{line_starting, parkcast, succeeded};

/// The first local day exported: ten weeks before the data set's end (22 August 2026).
const FROM: &str = "2026-06-10";

/// Málaga's readings from [`FROM`] as `Lot_ID,Timestamp,Free,Capacity`: the last reading of each
/// lot and hour, stamped on the hour, the capacity (the most free spaces the lot reported) on the
/// lot's first row only.
fn hourly_csv(dir: &std::path::Path) -> String {
    let path = datasets_dir().join(MALAGA_FREE_SPACES_CSV_GZ);
    let file = std::fs::File::open(&path)
        .unwrap_or_else(|error| panic!("{}: {error} (../shared/datasets)", path.display()));
    let mut reader = csv::Reader::from_reader(flate2::read::GzDecoder::new(file));
    let header = reader.headers().expect("a header").clone();
    let column = |name: &str| {
        header
            .iter()
            .position(|column| column == name)
            .unwrap_or_else(|| panic!("column {name} in {header:?}"))
    };
    let (time, lot, free) = (
        column("scrape_time_local"),
        column("lot_key"),
        column("free_spaces"),
    );
    // (lot, hour) -> the hour's last free count (the file is in scrape order); lot -> most free.
    let mut hours: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut capacity: BTreeMap<String, u32> = BTreeMap::new();
    for record in reader.records() {
        let record = record.expect("a readable record");
        let (Some(stamp), Some(lot), Some(free)) =
            (record.get(time), record.get(lot), record.get(free))
        else {
            continue;
        };
        // `-1` or empty: the source had no data.
        let (Some(hour), Ok(free)) = (stamp.get(..13), free.parse::<u32>()) else {
            continue;
        };
        if hour < FROM {
            continue;
        }
        hours.insert((lot.to_owned(), hour.replace('T', " ")), free);
        let most = capacity.entry(lot.to_owned()).or_default();
        *most = (*most).max(free);
    }
    let mut text = "Lot_ID,Timestamp,Free,Capacity\n".to_owned();
    let mut previous = String::new();
    for ((lot, hour), free) in &hours {
        let first = *lot != previous;
        let capacity = if first {
            capacity[lot].to_string()
        } else {
            String::new()
        };
        writeln!(text, "{lot},{hour}:00,{free},{capacity}").expect("writing to a string");
        previous.clone_from(lot);
    }
    let out = dir.join("hourly.csv");
    std::fs::write(&out, text).expect("temporary files should be writable");
    out.display().to_string()
}

/// The validation MAE of `model` per horizon from a backtest's summary line.
fn validation_mae(stdout: &str, model: &str) -> Vec<f64> {
    let line = line_starting(stdout, "validation MAE");
    let (_, figures) = line
        .split_once("): ")
        .unwrap_or_else(|| panic!("figures in {line}"));
    let figures = figures
        .split("; ")
        .find_map(|part| part.strip_prefix(&format!("{model} ")))
        .unwrap_or_else(|| panic!("{model} in {line}"));
    figures
        .split('/')
        .map(|value| value.trim().parse().expect("a number"))
        .collect()
}

fn backtest(warehouse: &str) -> String {
    succeeded(&parkcast(&[
        "backtest",
        "-w",
        warehouse,
        "--source",
        "csv-hourly",
        "--models",
        "gbm",
        "--validation-only",
    ]))
}

#[test]
fn an_hourly_csv_of_a_real_city_beats_the_rule_and_is_told_where_to_borrow_rows() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let warehouse = dir.path().join("warehouse").display().to_string();
    let csv = hourly_csv(dir.path());
    let import = succeeded(&parkcast(&[
        "import",
        "-w",
        &warehouse,
        "csv",
        &csv,
        "--name",
        "hourly",
        "--timezone",
        "Europe/Madrid",
        "--region",
        "ES-AN",
    ]));
    assert!(import.contains("capacity_filled_from_lot"), "{import}");

    let alone = backtest(&warehouse);
    assert!(
        alone.contains("a reading every 60.0 min; 60-min grid, horizons 1h / 2h / 4h"),
        "{alone}"
    );
    let rule = validation_mae(&alone, "persistence + profile change");
    let trees = validation_mae(&alone, "gradient-boosted trees");
    assert_eq!(rule.len(), 3, "{alone}");
    for (horizon, (trees, rule)) in trees.iter().zip(&rule).enumerate() {
        assert!(
            trees < rule,
            "horizon {horizon}: trees {trees} vs {rule}\n{alone}"
        );
    }
    assert!(
        alone.contains("prior: none, though ")
            && alone.contains(
                "would have borrowed (skipped birmingham: not in the warehouse; malaga: not in \
                 the warehouse); `parkcast import birmingham` and `parkcast import malaga` into \
                 this warehouse would lend rows"
            ),
        "{alone}"
    );

    succeeded(&parkcast(&["import", "-w", &warehouse, "birmingham"]));
    let lent = backtest(&warehouse);
    let line = line_starting(&lent, "prior: ");
    assert!(
        line.starts_with("prior: rows from birmingham (")
            && line.contains("taken by 12 of 12 horizon fits"),
        "{line}"
    );
    let trees = validation_mae(&lent, "gradient-boosted trees");
    for (horizon, (trees, rule)) in trees.iter().zip(&rule).enumerate() {
        assert!(
            trees < rule,
            "horizon {horizon}: trees {trees} vs {rule}\n{lent}"
        );
    }
}
