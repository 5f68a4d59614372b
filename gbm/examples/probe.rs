//! The MODELS.md probe: parkcast-gbm against forust-ml and Python LightGBM on one feature table.
//!
//! Birmingham (28 lots, 30-minute grid), train 4 Oct - 12 Dec 2016, test 13-19 Dec, horizons
//! 30 min / 1 h / 2 h, features: lot, capacity, day of week and time of day of the target, horizon,
//! rate at origin and 1-2 steps before, the train-only weekday x half-hour profile at target and
//! origin and their difference, the target's slot one week before. Target: the change of rate from
//! the origin. 500 rounds, 31 leaves, learning rate 0.05, min 20 rows per leaf.
//!
//! Two protocols, both on identical rows (the table is written to CSV for the Python side):
//! - *probe*: one model over all horizons, fitted on the training days, scored on the test week;
//! - *pipeline*: what `parkcast backtest` does with its learned model: one L1 model per horizon,
//!   fitted twice (a validation fit on the days before 29 Nov scored on 29 Nov - 12 Dec, then a
//!   test fit on every training day scored on the test week).
//!
//! Rounds alternate Rust and Python so both see the same machine load; times are medians.
//!
//! ```sh
//! bash gbm/bench/probe.sh            # venv with pinned LightGBM under target/, release build, table
//! cargo run --release -p parkcast-gbm --example probe -- --python none   # Rust side only
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use parkcast_gbm::{GbmParams, Objective, RowMajor};

const FEATURES: [&str; 12] = [
    "lot",
    "capacity",
    "target_weekday",
    "target_minute",
    "horizon_minutes",
    "rate_origin",
    "rate_lag1",
    "rate_lag2",
    "profile_target",
    "profile_origin",
    "profile_change",
    "rate_week_back",
];
const HORIZONS: [u32; 3] = [1, 2, 4];
const STEP_MINUTES: u32 = 30;
/// Days since 1970-01-01 of the protocol's dates.
const TRAIN_FIRST: i64 = 17_078; // 2016-10-04
const VALIDATION_FIRST: i64 = 17_134; // 2016-11-29
const TEST_FIRST: i64 = 17_148; // 2016-12-13
const TEST_LAST: i64 = 17_154; // 2016-12-19

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// CPU seconds of this process so far (user + system, all threads), from /proc/self/stat (Linux;
/// clock ticks of 10 ms). On a machine shared with other work, CPU time says what the fit cost
/// when wall time mostly says how long it waited for a core.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => f64::NAN,
    }
}

/// Wall and CPU time of a stretch of work.
struct Timer {
    wall: Instant,
    cpu: f64,
}

impl Timer {
    fn start() -> Self {
        Timer {
            wall: Instant::now(),
            cpu: cpu_seconds(),
        }
    }

    fn stop(&self) -> Times {
        Times {
            wall: self.wall.elapsed().as_secs_f64(),
            cpu: cpu_seconds() - self.cpu,
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Times {
    wall: f64,
    cpu: f64,
}

impl std::ops::AddAssign for Times {
    fn add_assign(&mut self, other: Times) {
        self.wall += other.wall;
        self.cpu += other.cpu;
    }
}

/// One forecast pair.
#[derive(Clone)]
struct Row {
    day: i64,
    horizon: u32,
    features: [f64; 12],
    target: f64,
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
}

impl Table {
    fn select(&self, keep: impl Fn(&Row) -> bool) -> Rows {
        let (mut values, mut targets, mut horizons) = (Vec::new(), Vec::new(), Vec::new());
        for row in self.rows.iter().filter(|row| keep(row)) {
            values.extend_from_slice(&row.features);
            targets.push(row.target);
            horizons.push(row.horizon);
        }
        (values, targets, horizons)
    }
}

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Rates of one lot by (day, slot).
type Grid = BTreeMap<(i64, u32), f64>;

/// Lots by code: capacity and grid.
type Lots = BTreeMap<String, (f64, Grid)>;

/// The CSV onto a 30-minute grid per lot: slot = nearest half hour of the local reading time, the
/// last reading of a slot wins, rate = occupancy / capacity clipped to [0, 1], negatives dropped.
fn load_grid(path: &Path) -> Result<Lots> {
    let text = std::fs::read_to_string(path)?;
    let mut lots: Lots = BTreeMap::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 4 {
            continue;
        }
        let (Ok(capacity), Ok(occupancy)) = (fields[1].parse::<f64>(), fields[2].parse::<f64>())
        else {
            continue;
        };
        if capacity <= 0.0 || occupancy < 0.0 {
            continue;
        }
        let stamp = fields[3];
        let parse =
            |range: std::ops::Range<usize>| -> Option<i64> { stamp.get(range)?.parse().ok() };
        let (Some(year), Some(month), Some(day), Some(hour), Some(minute)) = (
            parse(0..4),
            parse(5..7),
            parse(8..10),
            parse(11..13),
            parse(14..16),
        ) else {
            continue;
        };
        let minutes = hour * 60 + minute;
        let slot = ((minutes as f64 / f64::from(STEP_MINUTES)).round()) as u32;
        let entry = lots
            .entry(fields[0].to_owned())
            .or_insert_with(|| (capacity, BTreeMap::new()));
        entry.0 = capacity;
        entry.1.insert(
            (days_from_civil(year, month, day), slot),
            (occupancy / capacity).clamp(0.0, 1.0),
        );
    }
    // Usable lots: readings on at least half of the training days.
    let training_days = (TEST_FIRST - TRAIN_FIRST) as usize;
    lots.retain(|_, (_, grid)| {
        let days: std::collections::BTreeSet<i64> = grid
            .keys()
            .filter(|(day, _)| *day < TEST_FIRST)
            .map(|(day, _)| *day)
            .collect();
        days.len() * 2 >= training_days
    });
    Ok(lots)
}

fn build_table(path: &Path) -> Result<Table> {
    let lots = load_grid(path)?;
    let mut table = Table::default();
    for (code, (_, (capacity, grid))) in lots.iter().enumerate() {
        // Train-only weekday x slot profile.
        let mut sums: HashMap<(i64, u32), (f64, f64)> = HashMap::new();
        for (&(day, slot), &rate) in grid.range(..(TEST_FIRST, 0)) {
            let entry = sums.entry((weekday(day), slot)).or_default();
            entry.0 += rate;
            entry.1 += 1.0;
        }
        let profile = |day: i64, slot: u32| {
            sums.get(&(weekday(day), slot))
                .map_or(f64::NAN, |(sum, count)| sum / count)
        };
        let value = |day: i64, slot: i64| {
            u32::try_from(slot)
                .ok()
                .and_then(|slot| grid.get(&(day, slot)).copied())
                .unwrap_or(f64::NAN)
        };
        for (&(day, origin), &rate_origin) in grid {
            for horizon in HORIZONS {
                let target_slot = origin + horizon;
                let Some(&actual) = grid.get(&(day, target_slot)) else {
                    continue;
                };
                if !(TRAIN_FIRST..=TEST_LAST).contains(&day) {
                    continue;
                }
                let (profile_target, profile_origin) =
                    (profile(day, target_slot), profile(day, origin));
                table.rows.push(Row {
                    day,
                    horizon,
                    features: [
                        code as f64,
                        *capacity,
                        weekday(day) as f64,
                        f64::from(target_slot * STEP_MINUTES),
                        f64::from(horizon * STEP_MINUTES),
                        rate_origin,
                        value(day, i64::from(origin) - 1),
                        value(day, i64::from(origin) - 2),
                        profile_target,
                        profile_origin,
                        profile_target - profile_origin,
                        value(day - 7, i64::from(target_slot)),
                    ],
                    target: actual - rate_origin,
                });
            }
        }
    }
    Ok(table)
}

fn weekday(day: i64) -> i64 {
    // 1970-01-01 was a Thursday; Monday = 0.
    (day + 3).rem_euclid(7)
}

fn write_csv(table: &Table, path: &Path) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "day,horizon_steps,target,{}", FEATURES.join(","))?;
    for row in &table.rows {
        write!(out, "{},{},{}", row.day, row.horizon, row.target)?;
        for value in row.features {
            write!(out, ",{value}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// MAE per horizon (30 min / 1 h / 2 h) of the change, which equals the MAE of the rate.
fn mae_by_horizon(predictions: &[f64], targets: &[f64], horizons: &[u32]) -> [f64; 3] {
    let mut sums = [(0.0, 0.0); 3];
    for ((prediction, target), horizon) in predictions.iter().zip(targets).zip(horizons) {
        let Some(slot) = HORIZONS.iter().position(|h| h == horizon) else {
            continue;
        };
        sums[slot].0 += (prediction - target).abs();
        sums[slot].1 += 1.0;
    }
    sums.map(|(sum, count)| sum / count)
}

#[derive(Clone, Default)]
struct Measured {
    mae: [f64; 3],
    fit_seconds: Vec<f64>,
    fit_cpu_seconds: Vec<f64>,
    predict_seconds: Vec<f64>,
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[sorted.len() / 2]
}

struct Split {
    train: (Vec<f64>, Vec<f64>, Vec<u32>),
    test: (Vec<f64>, Vec<f64>, Vec<u32>),
}

fn probe_params(objective: Objective) -> GbmParams {
    GbmParams::default()
        .objective(objective)
        .iterations(500)
        .learning_rate(0.05)
        .max_leaves(31)
        .min_data_in_leaf(20)
}

type Forecaster = fn(&Split) -> Result<(Vec<f64>, Times, f64)>;

fn fit_gbm(split: &Split, objective: Objective) -> Result<(Vec<f64>, Times, f64)> {
    let columns = FEATURES.len();
    let started = Timer::start();
    let model = probe_params(objective).fit(
        RowMajor::new(&split.train.0, columns)?,
        &split.train.1,
        None,
    )?;
    let fit = started.stop();
    let started = Instant::now();
    let predictions = model.predict(RowMajor::new(&split.test.0, columns)?);
    Ok((predictions, fit, started.elapsed().as_secs_f64()))
}

fn column_major(values: &[f64], columns: usize) -> Vec<f64> {
    let rows = values.len() / columns;
    let mut out = Vec::with_capacity(values.len());
    for column in 0..columns {
        out.extend((0..rows).map(|row| values[row * columns + column]));
    }
    out
}

fn fit_forust(split: &Split) -> Result<(Vec<f64>, Times, f64)> {
    use forust_ml::data::Matrix;
    use forust_ml::gradientbooster::{GradientBooster, GrowPolicy};
    use forust_ml::objective::ObjectiveType;
    let columns = FEATURES.len();
    let started = Timer::start();
    let train = column_major(&split.train.0, columns);
    let matrix = Matrix::new(&train, split.train.1.len(), columns);
    let mut booster = GradientBooster::default();
    booster.objective_type = ObjectiveType::SquaredLoss;
    booster.iterations = 500;
    booster.learning_rate = 0.05;
    booster.max_leaves = 31;
    booster.max_depth = 31;
    booster.min_leaf_weight = 20.0;
    booster.grow_policy = GrowPolicy::LossGuide;
    booster.base_score = 0.0;
    booster.initialize_base_score = true;
    booster.parallel = true;
    booster.fit_unweighted(&matrix, &split.train.1, None)?;
    let fit = started.stop();
    let started = Instant::now();
    let test = column_major(&split.test.0, columns);
    let predictions = booster.predict(&Matrix::new(&test, split.test.1.len(), columns), true);
    Ok((predictions, fit, started.elapsed().as_secs_f64()))
}

/// Test-week predictions, targets and horizons, fit times and predict seconds.
type PipelineRun = (Vec<f64>, Vec<f64>, Vec<u32>, Times, f64);

/// Selected rows: values row after row, targets, horizons.
type Rows = (Vec<f64>, Vec<f64>, Vec<u32>);

/// One fit of the pipeline protocol: its training rows, the rows it scores, and whether those are
/// the test week's.
struct PipelineJob {
    train: Rows,
    scored: Rows,
    test: bool,
}

/// The pipeline protocol's six fits: per horizon, a validation fit scored on the validation days
/// and a test fit scored on the test week.
fn pipeline_jobs(table: &Table) -> Vec<PipelineJob> {
    HORIZONS
        .into_iter()
        .flat_map(|horizon| {
            [
                (VALIDATION_FIRST, VALIDATION_FIRST, TEST_FIRST - 1),
                (TEST_FIRST, TEST_FIRST, TEST_LAST),
            ]
            .map(|(train_until, score_from, score_until)| PipelineJob {
                train: table.select(|row| row.horizon == horizon && row.day < train_until),
                scored: table.select(|row| {
                    row.horizon == horizon && (score_from..=score_until).contains(&row.day)
                }),
                test: score_from == TEST_FIRST,
            })
        })
        .collect()
}

/// Each fitted model predicts its job's scored rows; the test week's predictions, targets and
/// horizons with the fit times and the predict seconds.
fn score_pipeline(
    models: &[parkcast_gbm::GbmModel],
    jobs: &[PipelineJob],
    fit: Times,
) -> Result<PipelineRun> {
    let columns = FEATURES.len();
    let (mut predictions, mut targets, mut horizons) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    for (model, job) in models.iter().zip(jobs) {
        let forecast = model.predict(RowMajor::new(&job.scored.0, columns)?);
        if job.test {
            predictions.extend(forecast);
            targets.extend_from_slice(&job.scored.1);
            horizons.extend_from_slice(&job.scored.2);
        }
    }
    Ok((
        predictions,
        targets,
        horizons,
        fit,
        started.elapsed().as_secs_f64(),
    ))
}

/// The pipeline protocol with parkcast-gbm (L1): the six fits one after another.
fn pipeline_gbm(table: &Table) -> Result<PipelineRun> {
    let jobs = pipeline_jobs(table);
    let mut fit = Times::default();
    let mut models = Vec::new();
    for job in &jobs {
        let started = Timer::start();
        models.push(probe_params(Objective::L1).fit(
            RowMajor::new(&job.train.0, FEATURES.len())?,
            &job.train.1,
            None,
        )?);
        fit += started.stop();
    }
    score_pipeline(&models, &jobs, fit)
}

/// The six fits at once on rayon's pool, as parkcast fits a model's horizons: each fit's own
/// parallel loops then fill the gaps the others leave, instead of every small loop waking idle
/// threads.
fn pipeline_gbm_parallel(table: &Table) -> Result<PipelineRun> {
    use rayon::prelude::*;
    let jobs = pipeline_jobs(table);
    let started = Timer::start();
    let models = jobs
        .par_iter()
        .map(|job| {
            RowMajor::new(&job.train.0, FEATURES.len())
                .and_then(|rows| probe_params(Objective::L1).fit(rows, &job.train.1, None))
                .map_err(|error| error.to_string())
        })
        .collect::<std::result::Result<Vec<_>, String>>()?;
    score_pipeline(&models, &jobs, started.stop())
}

fn run_python(python: &Path, script: &Path, dir: &Path) -> Result<Vec<(String, Measured)>> {
    let output = Command::new(python).arg(script).arg(dir).output()?;
    if !output.status.success() {
        return Err(format!(
            "python probe failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let mut results = Vec::new();
    for line in String::from_utf8(output.stdout)?.lines() {
        // name|mae30|mae60|mae120|fit|fit_cpu|predict
        let fields: Vec<&str> = line.split('|').collect();
        if fields.len() != 7 {
            continue;
        }
        let number = |index: usize| fields[index].parse::<f64>();
        results.push((
            fields[0].to_owned(),
            Measured {
                mae: [number(1)?, number(2)?, number(3)?],
                fit_seconds: vec![number(4)?],
                fit_cpu_seconds: vec![number(5)?],
                predict_seconds: vec![number(6)?],
            },
        ));
    }
    Ok(results)
}

fn main() -> Result<()> {
    let mut rounds = 3usize;
    let mut only: Option<String> = None;
    let mut python: Option<PathBuf> = None;
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out_dir = manifest.join("../target/gbm-probe");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => rounds = args.next().ok_or("--rounds N")?.parse()?,
            "--python" => {
                let path = args.next().ok_or("--python PATH|none")?;
                python = (path != "none").then(|| PathBuf::from(path));
            }
            "--out" => out_dir = PathBuf::from(args.next().ok_or("--out DIR")?),
            "--only" => only = Some(args.next().ok_or("--only NAME-PART")?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let datasets = std::env::var_os("PARKCAST_DATASETS")
        .map_or_else(|| manifest.join("../../shared/datasets"), PathBuf::from);
    let table = build_table(&datasets.join("birmingham/parking_birmingham.csv"))?;
    std::fs::create_dir_all(&out_dir)?;
    write_csv(&table, &out_dir.join("table.csv"))?;
    let split = Split {
        train: table.select(|row| row.day < TEST_FIRST),
        test: table.select(|row| row.day >= TEST_FIRST),
    };
    println!(
        "probe table: {} train rows, {} test rows, {} features -> {}",
        split.train.1.len(),
        split.test.1.len(),
        FEATURES.len(),
        out_dir.join("table.csv").display()
    );
    let script = manifest.join("bench/probe_lightgbm.py");
    let forecasters: [(&str, Forecaster); 3] = [
        ("parkcast-gbm L2", |split| fit_gbm(split, Objective::L2)),
        ("parkcast-gbm L1", |split| fit_gbm(split, Objective::L1)),
        ("forust-ml 0.8.0 L2", fit_forust),
    ];
    let mut measured: BTreeMap<String, Measured> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut record = |name: &str, mae: [f64; 3], fit: Times, predict: f64| {
        if !order.iter().any(|known| known == name) {
            order.push(name.to_owned());
        }
        let entry = measured.entry(name.to_owned()).or_default();
        entry.mae = mae;
        entry.fit_seconds.push(fit.wall);
        entry.fit_cpu_seconds.push(fit.cpu);
        entry.predict_seconds.push(predict);
    };
    for round in 0..rounds {
        eprintln!("round {} of {rounds}", round + 1);
        for (name, forecaster) in forecasters {
            if only
                .as_ref()
                .is_some_and(|only| !name.contains(only.as_str()))
            {
                continue;
            }
            let (predictions, fit, predict) = forecaster(&split)?;
            record(
                name,
                mae_by_horizon(&predictions, &split.test.1, &split.test.2),
                fit,
                predict,
            );
        }
        if only.is_some() {
            continue;
        }
        let (predictions, targets, horizons, fit, predict) = pipeline_gbm(&table)?;
        record(
            "pipeline: parkcast-gbm L1, 3 horizons x 2 fits",
            mae_by_horizon(&predictions, &targets, &horizons),
            fit,
            predict,
        );
        let (predictions, targets, horizons, fit, predict) = pipeline_gbm_parallel(&table)?;
        record(
            "pipeline: parkcast-gbm L1, the 6 fits side by side",
            mae_by_horizon(&predictions, &targets, &horizons),
            fit,
            predict,
        );
        if let Some(python) = &python {
            for (name, result) in run_python(python, &script, &out_dir)? {
                record(
                    &name,
                    result.mae,
                    Times {
                        wall: result.fit_seconds[0],
                        cpu: result.fit_cpu_seconds[0],
                    },
                    result.predict_seconds[0],
                );
            }
        }
    }
    let baseline = |pick: fn(&[f64; 12]) -> f64| -> [f64; 3] {
        let (values, targets, horizons) = &split.test;
        let predictions: Vec<f64> = values
            .chunks_exact(12)
            .map(|row| {
                let row: &[f64; 12] = row.try_into().expect("rows of 12 values should be arrays");
                pick(row)
            })
            .collect();
        mae_by_horizon(&predictions, targets, horizons)
    };
    println!();
    println!(
        "| forecaster | MAE of rate 30 min / 1 h / 2 h | fit: median (fastest) | fit CPU | predict | fit vs LightGBM: wall, CPU |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let persistence = baseline(|_| 0.0);
    let profile_change = baseline(|row| if row[10].is_nan() { 0.0 } else { row[10] });
    for (name, mae) in [
        ("persistence", persistence),
        ("persistence + profile change", profile_change),
    ] {
        println!(
            "| {name} | {:.4} / {:.4} / {:.4} | | | | |",
            mae[0], mae[1], mae[2]
        );
    }
    let lightgbm_fit = |name: &str| -> Option<(f64, f64)> {
        let reference = if name.starts_with("pipeline") && name.ends_with("side by side") {
            "pipeline: LightGBM L1, the 6 fits side by side"
        } else if name.starts_with("pipeline") {
            "pipeline: LightGBM L1, 3 horizons x 2 fits"
        } else if name.contains("L1") {
            "LightGBM L1"
        } else {
            "LightGBM L2"
        };
        measured
            .get(reference)
            .map(|m| (median(&m.fit_seconds), median(&m.fit_cpu_seconds)))
    };
    for name in &order {
        let entry = &measured[name];
        let fit = median(&entry.fit_seconds);
        let cpu = median(&entry.fit_cpu_seconds);
        let ratio = lightgbm_fit(name).map_or_else(String::new, |(wall, reference_cpu)| {
            format!("{:.2}x, {:.2}x", fit / wall, cpu / reference_cpu)
        });
        println!(
            "| {name} | {:.4} / {:.4} / {:.4} | {:.3} s ({:.3} s) | {cpu:.2} s | {:.1} ms | {ratio} |",
            entry.mae[0],
            entry.mae[1],
            entry.mae[2],
            fit,
            entry
                .fit_seconds
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min),
            median(&entry.predict_seconds) * 1_000.0,
        );
    }
    println!(
        "\nmedians of {rounds} rounds (Rust and Python alternating); fit includes binning; {} threads",
        rayon::current_num_threads()
    );
    Ok(())
}
