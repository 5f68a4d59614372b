//! lightgbm3 on the probe table that `cargo run --release -p parkcast-gbm --example probe` writes
//! (target/gbm-probe/table.csv): the same fits as the Python side, timed the same way.
//!
//! Prints `name|mae30|mae60|mae120|fit_seconds|predict_seconds` lines.

use std::time::Instant;

use lightgbm3::{Booster, Dataset};
use serde_json::json;

const TEST_FIRST: f64 = 17_148.0;
const VALIDATION_FIRST: f64 = 17_134.0;
const TEST_LAST: f64 = 17_154.0;
const HORIZONS: [f64; 3] = [1.0, 2.0, 4.0];

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Table {
    day: Vec<f64>,
    horizon: Vec<f64>,
    target: Vec<f64>,
    features: Vec<Vec<f64>>,
}

fn read(path: &str) -> Result<Table> {
    let text = std::fs::read_to_string(path)?;
    let mut table = Table {
        day: Vec::new(),
        horizon: Vec::new(),
        target: Vec::new(),
        features: Vec::new(),
    };
    for line in text.lines().skip(1) {
        let values: Vec<f64> = line
            .split(',')
            .map(|field| field.parse::<f64>())
            .collect::<std::result::Result<_, _>>()?;
        table.day.push(values[0]);
        table.horizon.push(values[1]);
        table.target.push(values[2]);
        table.features.push(values[3..].to_vec());
    }
    Ok(table)
}

fn params(objective: &str) -> serde_json::Value {
    json!({
        "objective": objective,
        "num_iterations": 500,
        "num_leaves": 31,
        "learning_rate": 0.05,
        "min_data_in_leaf": 20,
        "num_threads": 2,
        "verbose": -1,
        "seed": 0,
        "deterministic": true,
    })
}

fn select(table: &Table, keep: impl Fn(usize) -> bool) -> (Vec<f64>, Vec<f64>, Vec<f64>, usize) {
    let (mut flat, mut targets, mut horizons) = (Vec::new(), Vec::new(), Vec::new());
    let columns = table.features[0].len();
    for row in (0..table.day.len()).filter(|row| keep(*row)) {
        flat.extend_from_slice(&table.features[row]);
        targets.push(table.target[row]);
        horizons.push(table.horizon[row]);
    }
    (flat, targets, horizons, columns)
}

fn mae(predictions: &[f64], targets: &[f64], horizons: &[f64]) -> [f64; 3] {
    HORIZONS.map(|h| {
        let errors: Vec<f64> = predictions
            .iter()
            .zip(targets)
            .zip(horizons)
            .filter(|(_, horizon)| **horizon == h)
            .map(|((p, t), _)| (p - t).abs())
            .collect();
        errors.iter().sum::<f64>() / errors.len() as f64
    })
}

fn fit(objective: &str, flat: &[f64], targets: &[f64], columns: usize) -> Result<(Booster, f64)> {
    let labels: Vec<f32> = targets.iter().map(|t| *t as f32).collect();
    let started = Instant::now();
    let dataset = Dataset::from_slice(flat, &labels, columns as i32, true)?;
    let booster = Booster::train(dataset, &params(objective))?;
    Ok((booster, started.elapsed().as_secs_f64()))
}

fn main() -> Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../../../target/gbm-probe/table.csv".to_owned());
    let table = read(&path)?;
    let (train, train_y, _, columns) = select(&table, |row| table.day[row] < TEST_FIRST);
    let (test, test_y, test_h, _) = select(&table, |row| table.day[row] >= TEST_FIRST);
    for (name, objective) in [("lightgbm3 L2", "regression"), ("lightgbm3 L1", "regression_l1")] {
        let (booster, fit_seconds) = fit(objective, &train, &train_y, columns)?;
        let started = Instant::now();
        let predictions = booster.predict_with_params(&test, columns as i32, true, "num_threads=2")?;
        let predict_seconds = started.elapsed().as_secs_f64();
        let [m30, m60, m120] = mae(&predictions, &test_y, &test_h);
        println!("{name}|{m30}|{m60}|{m120}|{fit_seconds}|{predict_seconds}");
    }
    let (mut fit_total, mut predict_total) = (0.0, 0.0);
    let (mut all_p, mut all_t, mut all_h) = (Vec::new(), Vec::new(), Vec::new());
    for h in HORIZONS {
        for (until, from, to) in [
            (VALIDATION_FIRST, VALIDATION_FIRST, TEST_FIRST - 1.0),
            (TEST_FIRST, TEST_FIRST, TEST_LAST),
        ] {
            let (x, y, _, _) = select(&table, |row| table.horizon[row] == h && table.day[row] < until);
            let (sx, sy, sh, _) = select(&table, |row| {
                table.horizon[row] == h && table.day[row] >= from && table.day[row] <= to
            });
            let (booster, fit_seconds) = fit("regression_l1", &x, &y, columns)?;
            fit_total += fit_seconds;
            let started = Instant::now();
            let predictions = booster.predict_with_params(&sx, columns as i32, true, "num_threads=2")?;
            predict_total += started.elapsed().as_secs_f64();
            if from == TEST_FIRST {
                all_p.extend(predictions);
                all_t.extend(sy);
                all_h.extend(sh);
            }
        }
    }
    let [m30, m60, m120] = mae(&all_p, &all_t, &all_h);
    println!("pipeline: lightgbm3 L1, 3 horizons x 2 fits|{m30}|{m60}|{m120}|{fit_total}|{predict_total}");
    Ok(())
}
