//! `parkcast backtest`: every baseline and learned model, per horizon, on a source's lot occupancy.

use std::collections::HashMap;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use clap::{Args, ValueEnum};
use comfy_table::{Cell, CellAlignment};
use parkcast_features::calendar::DayType;
use parkcast_features::conformal::CalibrationScope;
use parkcast_features::vector::FEATURE_NAMES;
use parkcast_training::backtest::{self, BacktestConfig, BacktestReport, ModelChoice};
use parkcast_training::frozen::{FrozenConfig, LoadedConfig, ObjectiveSpec};
use parkcast_training::model::Objective;
use parkcast_training::protocol;
use parkcast_warehouse::Warehouse;

use super::duration::parse_minutes;
use super::{GlobalArgs, WarehouseLocation};
use crate::progress::BarProgress;
use crate::report;

/// Named protocols: the published reference set-ups of the real data sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// Birmingham: 30-minute grid, 30 min / 1 h / 2 h, test week 13-19 Dec 2016, same-day pairs.
    Birmingham,
    /// Málaga: 15-minute grid, 15 min / 1 h / 24 h, test Jul 2025 - Jun 2026 in quarterly rolling
    /// windows, pairs across midnight.
    Malaga,
}

/// Which residuals calibrate the intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Calibration {
    /// The residuals of the target's day type.
    DayType,
    /// All residuals.
    Pooled,
}

/// Which learned models to train next to the baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Models {
    /// Baselines only.
    Baselines,
    /// Baselines and the elastic net.
    Linear,
    /// Baselines and the gradient-boosted trees.
    Gbm,
    /// Baselines, elastic net and trees.
    All,
}

/// The evaluation protocol, shared by `backtest` and `train`.
#[derive(Debug, Args, Clone)]
pub struct ProtocolArgs {
    #[command(flatten)]
    pub location: WarehouseLocation,
    /// Start from a named protocol; the options below override its parts. Default: the data set's
    /// own (birmingham, malaga); for any other source the protocol comes from its data (its cadence
    /// gives the grid, its last week is the test window, earlier weeks are rolling origins).
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// `fact_lot_occupancy.source` to evaluate (birmingham, malaga, melbourne, simulated, csv-<name>).
    /// Default: the preset's data set, else the warehouse's only source, else birmingham.
    #[arg(long)]
    pub source: Option<String>,
    /// Grid step, minutes.
    #[arg(long)]
    pub step: Option<u32>,
    /// Horizons, comma-separated durations (`15m`, `1h`, `24h`, `7d`), multiples of the step.
    #[arg(long, value_delimiter = ',')]
    pub horizons: Option<Vec<String>>,
    /// First local date of the test period.
    #[arg(long)]
    pub test_start: Option<NaiveDate>,
    /// Last local date of the test period (inclusive).
    #[arg(long)]
    pub test_end: Option<NaiveDate>,
    /// Split the test period into rolling windows of this many days, each forecast by models fitted
    /// before its own start.
    #[arg(long)]
    pub window_days: Option<u32>,
    /// Also evaluate this many earlier windows as long as the test period (ignored with
    /// --window-days).
    #[arg(long)]
    pub windows: Option<u32>,
    /// Pair origins and targets across midnight too.
    #[arg(long)]
    pub across_days: bool,
    /// Days before each window that calibrate the conformal intervals.
    #[arg(long)]
    pub calibration_days: Option<u32>,
    /// Which residuals calibrate the intervals: those of the target's day type (weekday, Saturday,
    /// Sunday or holiday; pooled while a day type has fewer than 200) or all of them. Default: the
    /// configuration's `intervals.calibration`.
    #[arg(long, value_enum)]
    pub calibration: Option<Calibration>,
    /// Train on at most this many days before each window (default: all history).
    #[arg(long)]
    pub training_days: Option<u32>,
    /// Cap on training rows per horizon (origins are thinned evenly).
    #[arg(long, default_value_t = 400_000)]
    pub max_training_rows: usize,
    /// Learned models to train next to the baselines.
    #[arg(long, value_enum, default_value = "all")]
    pub models: Models,
    /// The frozen modelling configuration (TOML; default: the one built in,
    /// training/config/parkcast-2.toml). The --gbm-* and --calibration flags override its knobs,
    /// and a trained model's report says which.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Score the validation days only (the calibration days before each window, by models fitted
    /// before them): no test window is fitted or read.
    #[arg(long)]
    pub validation_only: bool,
    /// Boosting rounds of the trees.
    #[arg(long)]
    pub gbm_iterations: Option<usize>,
    /// Learning rate of the trees.
    #[arg(long)]
    pub gbm_learning_rate: Option<f32>,
    /// The trees' loss (default l1).
    #[arg(long, value_enum)]
    pub gbm_objective: Option<GbmObjectiveArg>,
    /// Ensembles per horizon over bagging seeds, averaged (default 1).
    #[arg(long)]
    pub gbm_bagging_seeds: Option<usize>,
    /// Features the trees leave out, comma-separated names (see `parkcast_features::vector`).
    #[arg(long, value_delimiter = ',')]
    pub gbm_exclude: Vec<String>,
}

/// `--gbm-objective`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GbmObjectiveArg {
    /// Absolute error: the trees fit the median correction.
    L1,
    /// Squared error: the trees fit the mean correction.
    L2,
}

fn objective_of(objective: GbmObjectiveArg) -> Objective {
    match objective {
        GbmObjectiveArg::L1 => Objective::L1,
        GbmObjectiveArg::L2 => Objective::L2,
    }
}

impl ProtocolArgs {
    /// The source to evaluate: `--source`, else the preset's data set, else the warehouse's only
    /// source, else Birmingham when the warehouse holds it (the demo's warehouse holds several).
    fn source_name(&self, warehouse: &Warehouse) -> Result<String> {
        if let Some(source) = &self.source {
            return Ok(source.clone());
        }
        match self.preset {
            Some(Preset::Birmingham) => return Ok("birmingham".to_owned()),
            Some(Preset::Malaga) => return Ok("malaga".to_owned()),
            None => {}
        }
        let held = protocol::sources(warehouse)?;
        match held.as_slice() {
            [only] => Ok(only.source.clone()),
            _ if held.iter().any(|summary| summary.source == "birmingham") => {
                Ok("birmingham".to_owned())
            }
            [] => bail!("the warehouse's fact_lot_occupancy is empty: import a data set first"),
            _ => bail!(
                "the warehouse holds several sources ({}): pick one with --source",
                held.iter()
                    .map(|summary| summary.source.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// The backtest configuration these arguments describe, and where it came from (printed, so a
    /// run says which protocol it evaluated).
    pub fn config(
        &self,
        warehouse: &Warehouse,
        frozen: &FrozenConfig,
    ) -> Result<(BacktestConfig, String)> {
        let date = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("preset dates are valid");
        let source = self.source_name(warehouse)?;
        let source = source.as_str();
        let summary = protocol::source(warehouse, source)?;
        let Some(summary) = summary else {
            let available: Vec<String> = protocol::sources(warehouse)?
                .into_iter()
                .map(|source| format!("{} ({} lots)", source.source, source.lots))
                .collect();
            bail!(
                "no source {source:?} in the warehouse's fact_lot_occupancy; it holds: {}",
                if available.is_empty() {
                    "nothing (import a data set first)".to_owned()
                } else {
                    available.join(", ")
                }
            );
        };
        let preset = self.preset.or(match source {
            "birmingham" => Some(Preset::Birmingham),
            "malaga" => Some(Preset::Malaga),
            _ => None,
        });
        let mut origin = match preset {
            Some(Preset::Birmingham) => "preset birmingham".to_owned(),
            Some(Preset::Malaga) => "preset malaga".to_owned(),
            None => format!(
                "from the data of {source}: {} lots, {} to {}, a reading every {:.1} min",
                summary.lots, summary.first_day, summary.last_day, summary.cadence_minutes
            ),
        };
        let (mut config, mut horizons_minutes) = match preset {
            None => {
                let window_given = self.test_start.is_some() && self.test_end.is_some();
                let config = match summary.protocol() {
                    Ok(config) => config,
                    Err(protocol::ProtocolError::TooShort { .. }) if window_given => {
                        summary.unchecked_protocol()
                    }
                    Err(protocol::ProtocolError::TooCoarse { .. })
                        if window_given && self.step.is_some() =>
                    {
                        summary.unchecked_protocol()
                    }
                    Err(error) => return Err(error.into()),
                };
                let minutes = config
                    .horizons
                    .iter()
                    .map(|steps| steps * config.step_minutes)
                    .collect();
                (config, minutes)
            }
            Some(Preset::Birmingham) => (BacktestConfig::birmingham(), vec![30, 60, 120]),
            Some(Preset::Malaga) => (
                BacktestConfig {
                    source: "malaga".to_owned(),
                    step_minutes: 15,
                    test_start: date(2025, 7, 1),
                    test_end: date(2026, 6, 30),
                    window_days: Some(91),
                    same_day: false,
                    training_days: Some(365),
                    ..BacktestConfig::birmingham()
                },
                vec![15, 60, 1_440],
            ),
        };
        if let Some(source) = &self.source {
            config.source = source.clone();
        }
        if let Some(step) = self.step {
            config.step_minutes = step;
        }
        if let Some(horizons) = &self.horizons {
            horizons_minutes = horizons
                .iter()
                .map(|text| parse_minutes(text))
                .collect::<Result<_>>()?;
        }
        config.horizons = horizons_minutes
            .iter()
            .map(|minutes| {
                if config.step_minutes == 0 || minutes % config.step_minutes != 0 {
                    bail!(
                        "horizon {minutes} min is not a multiple of the {}-minute step",
                        config.step_minutes
                    );
                }
                Ok(minutes / config.step_minutes)
            })
            .collect::<Result<_>>()?;
        if let Some(start) = self.test_start {
            config.test_start = start;
        }
        if let Some(end) = self.test_end {
            config.test_end = end;
        }
        if self.window_days.is_some() {
            config.window_days = self.window_days;
        }
        if let Some(windows) = self.windows {
            config.windows = windows;
        }
        if self.across_days {
            config.same_day = false;
        }
        if let Some(days) = self.calibration_days {
            config.calibration_days = days;
        }
        if self.training_days.is_some() {
            config.training_days = self.training_days;
        }
        config.max_training_rows = self.max_training_rows;
        config.calibration = match self.calibration {
            None => frozen.calibration(),
            Some(Calibration::DayType) => CalibrationScope::DayType,
            Some(Calibration::Pooled) => CalibrationScope::Pooled,
        };
        config.validation_only = self.validation_only;
        let windows = config.windows();
        origin.push_str(&format!(
            "; {}-min grid, horizons {}, {} window{}: {}",
            config.step_minutes,
            horizons_minutes
                .iter()
                .map(|minutes| format_minutes(*minutes))
                .collect::<Vec<_>>()
                .join(" / "),
            windows.len(),
            if windows.len() == 1 { "" } else { "s" },
            windows
                .iter()
                .map(|(start, end)| format!("{start}..{end}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        Ok((config, origin))
    }

    /// The frozen configuration: `--config FILE`, or the one built in.
    pub fn frozen(&self) -> Result<LoadedConfig> {
        let Some(path) = &self.config else {
            return Ok(LoadedConfig::embedded());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read the configuration {}", path.display()))?;
        Ok(LoadedConfig::from_text(&path.display().to_string(), &text)?)
    }

    /// The knobs these flags set differently from the configuration, as the report lists them
    /// (`gbm.iterations = 80 (--gbm-iterations; the configuration says 300)`).
    pub fn overrides(&self, frozen: &FrozenConfig) -> Vec<String> {
        let mut overrides = Vec::new();
        let mut note = |key: &str, flag: &str, ours: String, theirs: String| {
            if ours != theirs {
                overrides.push(format!(
                    "{key} = {ours} ({flag}; the configuration says {theirs})"
                ));
            }
        };
        let gbm = &frozen.gbm;
        if let Some(iterations) = self.gbm_iterations {
            note(
                "gbm.iterations",
                "--gbm-iterations",
                iterations.to_string(),
                gbm.iterations.to_string(),
            );
        }
        if let Some(rate) = self.gbm_learning_rate {
            note(
                "gbm.learning_rate",
                "--gbm-learning-rate",
                f64::from(rate).to_string(),
                gbm.learning_rate.to_string(),
            );
        }
        if let Some(objective) = self.gbm_objective {
            note(
                "gbm.objective",
                "--gbm-objective",
                ObjectiveSpec(objective_of(objective)).to_string(),
                gbm.objective.to_string(),
            );
        }
        if let Some(seeds) = self.gbm_bagging_seeds {
            note(
                "gbm.bagging_seeds",
                "--gbm-bagging-seeds",
                seeds.to_string(),
                gbm.bagging_seeds.to_string(),
            );
        }
        if !self.gbm_exclude.is_empty() {
            overrides.push(format!(
                "gbm.excluded_features += {} (--gbm-exclude)",
                self.gbm_exclude.join(", ")
            ));
        }
        if let Some(calibration) = self.calibration {
            let ours = match calibration {
                Calibration::DayType => CalibrationScope::DayType,
                Calibration::Pooled => CalibrationScope::Pooled,
            };
            if ours != frozen.calibration() {
                overrides.push(format!(
                    "intervals.calibration = {ours:?} (--calibration; the configuration says {:?})",
                    frozen.calibration()
                ));
            }
        }
        overrides
    }

    /// The learned models these arguments ask for: the configuration's hyperparameters with the
    /// flags' overrides.
    pub fn models(&self, frozen: &FrozenConfig) -> Result<ModelChoice> {
        let mut gbm = frozen.gbm_params();
        if let Some(iterations) = self.gbm_iterations {
            gbm.iterations = iterations;
        }
        if let Some(rate) = self.gbm_learning_rate {
            gbm.learning_rate = f64::from(rate);
        }
        if let Some(objective) = self.gbm_objective {
            gbm.objective = objective_of(objective);
        }
        if let Some(seeds) = self.gbm_bagging_seeds {
            gbm.bagging_seeds = seeds;
        }
        for name in &self.gbm_exclude {
            let position = FEATURE_NAMES
                .iter()
                .position(|feature| feature == name)
                .with_context(|| {
                    format!(
                        "--gbm-exclude: no feature {name:?}; features: {}",
                        FEATURE_NAMES.join(", ")
                    )
                })?;
            if !gbm.excluded_features.contains(&position) {
                gbm.excluded_features.push(position);
            }
        }
        let linear = frozen.linear_params();
        Ok(match self.models {
            Models::Baselines => ModelChoice::default(),
            Models::Linear => ModelChoice {
                linear: Some(linear),
                gbm: None,
            },
            Models::Gbm => ModelChoice {
                linear: None,
                gbm: Some(gbm),
            },
            Models::All => ModelChoice {
                linear: Some(linear),
                gbm: Some(gbm),
            },
        })
    }
}

/// Arguments of `parkcast backtest`. Defaults are the Birmingham protocol of the reference figures.
#[derive(Debug, Args)]
pub struct BacktestArgs {
    #[command(flatten)]
    pub protocol: ProtocolArgs,
    /// Also print each lot's MAE for the best learned model and persistence + profile change, worst
    /// lots first.
    #[arg(long)]
    pub per_lot: bool,
}

/// `90` -> `1h30`, `60` -> `1h`, `15` -> `15 min`, `1440` -> `24h`.
fn format_minutes(minutes: u32) -> String {
    match (minutes / 60, minutes % 60) {
        (0, rest) => format!("{rest} min"),
        (hours, 0) => format!("{hours}h"),
        (hours, rest) => format!("{hours}h{rest:02}"),
    }
}

pub fn run(args: BacktestArgs, global: &GlobalArgs) -> Result<()> {
    let warehouse = args.protocol.location.open()?;
    let frozen = args.protocol.frozen()?;
    let (config, origin) = args.protocol.config(&warehouse, &frozen.config)?;
    println!("protocol: {origin}");
    print_configuration(&frozen, &args.protocol.overrides(&frozen.config));
    let models = args.protocol.models(&frozen.config)?;
    let progress = BarProgress::new(global.quiet);
    let started = std::time::Instant::now();
    let outcome = backtest::backtest(&warehouse, &config, &models, &progress);
    progress.finish();
    let outcome = outcome.context("backtest failed")?;
    print_summary(&outcome, &config);
    println!("({:.1} s)", started.elapsed().as_secs_f64());
    if args.per_lot {
        println!("{}", per_lot_table(&outcome, &config));
    }
    Ok(())
}

/// Which configuration a run uses, and what the flags overrode.
pub fn print_configuration(frozen: &LoadedConfig, overrides: &[String]) {
    println!(
        "configuration: {} ({}, sha256 {})",
        frozen.config.name,
        frozen.origin,
        &frozen.sha256()[..12]
    );
    for knob in overrides {
        println!("  overridden: {knob}");
    }
}

/// The header line and the metrics table of a backtest.
pub fn print_summary(outcome: &BacktestReport, config: &BacktestConfig) {
    let first_start = outcome
        .windows
        .first()
        .map_or(config.test_start, |window| window.0);
    let origins = if config.same_day {
        ", same-day origins"
    } else {
        ""
    };
    println!(
        "source {}: {} lots, {} window(s) from {first_start} to {}, {}-minute grid{origins}",
        config.source,
        outcome.lots.len(),
        outcome.windows.len(),
        config.test_end,
        config.step_minutes,
    );
    if !outcome.excluded_lots.is_empty() {
        println!(
            "left out for too little training data: {}",
            outcome.excluded_lots.join(", ")
        );
    }
    if !outcome.training_rows.is_empty() {
        let rows: Vec<String> = outcome
            .training_rows
            .iter()
            .map(|(minutes, rows)| format!("{minutes} min: {}", report::thousands(*rows as u64)))
            .collect();
        println!("training rows (last window): {}", rows.join(", "));
    }
    if !outcome.validation_mae.is_empty() {
        let mut lines: Vec<String> = Vec::new();
        for model in &outcome.models {
            let maes: Vec<String> = outcome
                .validation_mae
                .iter()
                .filter(|(name, _, _)| name == model)
                .map(|(_, _, mae)| format!("{mae:.4}"))
                .collect();
            lines.push(format!("{model} {}", maes.join("/")));
        }
        println!(
            "validation MAE (the {} calibration days before each window, by horizon): {}",
            config.calibration_days,
            lines.join("; ")
        );
    }
    if config.validation_only {
        println!(
            "validation days only: no test window was fitted or read (drop --validation-only for the test figures)"
        );
        return;
    }
    println!("{}", metrics_table(outcome));
    println!("{}", versus_table(outcome, config));
    if outcome.windows.len() > 1 {
        println!("{}", windows_table(outcome, config));
    }
    if !outcome.per_day_type.is_empty() {
        println!("{}", day_type_table(outcome));
    }
}

/// The model the summary's extra tables follow: the last learned one (the baselines come first).
fn followed_model(outcome: &BacktestReport) -> &str {
    outcome
        .models
        .last()
        .map_or(VERSUS_BASELINE, String::as_str)
}

const VERSUS_BASELINE: &str = "persistence + profile change";

/// MAE of the followed model and the baseline per rolling window and horizon, with the window
/// dates: one good week must not hide a bad one.
fn windows_table(outcome: &BacktestReport, config: &BacktestConfig) -> comfy_table::Table {
    let model = followed_model(outcome);
    let mut header = vec![format!("window ({model} vs {VERSUS_BASELINE})")];
    header.extend(
        config
            .horizons
            .iter()
            .map(|h| format!("{} min", h * config.step_minutes)),
    );
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = report::new_table(&header_refs);
    let find = |window: usize, name: &str, horizon: u32| {
        outcome
            .per_window
            .iter()
            .find(|(index, metrics)| {
                *index == window && metrics.model == name && metrics.horizon_steps == horizon
            })
            .map(|(_, metrics)| metrics)
    };
    for (window, (start, end)) in outcome.windows.iter().enumerate() {
        let mut row = vec![Cell::new(format!("{start} .. {end}"))];
        for &horizon in &config.horizons {
            let text = match (
                find(window, model, horizon),
                find(window, VERSUS_BASELINE, horizon),
            ) {
                (Some(ours), Some(theirs)) if theirs.mae_rate > 0.0 => format!(
                    "{:.4} vs {:.4} ({:+.1}%)",
                    ours.mae_rate,
                    theirs.mae_rate,
                    100.0 * (ours.mae_rate / theirs.mae_rate - 1.0)
                ),
                _ => "n/a".to_owned(),
            };
            row.push(Cell::new(text).set_alignment(CellAlignment::Right));
        }
        table.add_row(row);
    }
    table
}

/// Coverage of the followed model's 80% and 95% intervals and its MAE per horizon and day type of
/// the target: where exchangeability breaks (Saturdays, Sundays and holidays) pooled intervals
/// miss, and this is where it shows.
fn day_type_table(outcome: &BacktestReport) -> comfy_table::Table {
    let model = followed_model(outcome);
    let mut table = report::new_table(&[
        &format!("{model}: day type"),
        "horizon",
        "pairs",
        "MAE rate",
        "80% covers",
        "95% covers",
        "80% width",
    ]);
    let percent = |share: Option<f64>| {
        share.map_or_else(
            || "n/a".to_owned(),
            |share| format!("{:.1}%", 100.0 * share),
        )
    };
    let right = |text: String| Cell::new(text).set_alignment(CellAlignment::Right);
    let mut rows: Vec<_> = outcome
        .per_day_type
        .iter()
        .filter(|(_, metrics)| metrics.model == model)
        .collect();
    rows.sort_by_key(|(day_type, metrics)| (metrics.horizon_steps, *day_type));
    for (day_type, metrics) in rows {
        table.add_row(vec![
            Cell::new(day_type_name(*day_type)),
            right(format!("{} min", metrics.horizon_minutes)),
            right(report::thousands(metrics.pairs)),
            right(format!("{:.4}", metrics.mae_rate)),
            right(percent(metrics.coverage_80)),
            right(percent(metrics.coverage_95)),
            right(
                metrics
                    .width_80
                    .map_or_else(|| "n/a".to_owned(), |width| format!("{width:.3}")),
            ),
        ]);
    }
    table
}

fn day_type_name(day_type: DayType) -> &'static str {
    match day_type {
        DayType::Weekday => "weekday",
        DayType::Saturday => "Saturday",
        DayType::SundayOrHoliday => "Sunday or holiday",
    }
}

fn metrics_table(outcome: &BacktestReport) -> comfy_table::Table {
    let mut table = report::new_table(&[
        "model",
        "horizon",
        "MAE rate",
        "RMSE rate",
        "MAE slots",
        "RMSE slots",
        "80% covers",
        "95% covers",
        "80% width",
        "pairs",
        "fallbacks",
    ]);
    let percent = |share: Option<f64>| {
        share.map_or_else(
            || "n/a".to_owned(),
            |share| format!("{:.1}%", 100.0 * share),
        )
    };
    let right = |text: String| Cell::new(text).set_alignment(CellAlignment::Right);
    let mut rows: Vec<_> = outcome.metrics.iter().collect();
    rows.sort_by_key(|metrics| metrics.horizon_steps);
    for metrics in rows {
        table.add_row(vec![
            Cell::new(&metrics.model),
            right(format!("{} min", metrics.horizon_minutes)),
            right(format!("{:.4}", metrics.mae_rate)),
            right(format!("{:.4}", metrics.rmse_rate)),
            right(format!("{:.2}", metrics.mae_slots)),
            right(format!("{:.2}", metrics.rmse_slots)),
            right(percent(metrics.coverage_80)),
            right(percent(metrics.coverage_95)),
            right(
                metrics
                    .width_80
                    .map_or_else(|| "n/a".to_owned(), |width| format!("{width:.3}")),
            ),
            right(report::thousands(metrics.pairs)),
            right(report::thousands(metrics.fallbacks)),
        ]);
    }
    table
}

/// Each model's MAE change against persistence + profile change, per horizon: the promotion view.
fn versus_table(outcome: &BacktestReport, config: &BacktestConfig) -> comfy_table::Table {
    const BASELINE: &str = VERSUS_BASELINE;
    let mut header = vec!["MAE rate vs persistence + profile change".to_owned()];
    header.extend(
        config
            .horizons
            .iter()
            .map(|h| format!("{} min", h * config.step_minutes)),
    );
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = report::new_table(&header_refs);
    for model in &outcome.models {
        let mut row = vec![Cell::new(model)];
        for &horizon in &config.horizons {
            let text = match (outcome.get(model, horizon), outcome.get(BASELINE, horizon)) {
                (Some(model), Some(baseline)) if baseline.mae_rate > 0.0 => format!(
                    "{:.4} ({:+.1}%)",
                    model.mae_rate,
                    100.0 * (model.mae_rate / baseline.mae_rate - 1.0)
                ),
                _ => "n/a".to_owned(),
            };
            row.push(Cell::new(text).set_alignment(CellAlignment::Right));
        }
        table.add_row(row);
    }
    // The product's aim (the accuracy issue): the learned model 25% below the baseline at every
    // horizon. Where it falls short, the table says so rather than leaving it to arithmetic.
    let model = followed_model(outcome);
    if model != BASELINE {
        let mut row = vec![Cell::new(format!(
            "{model}: aim {:.0}% at every horizon",
            -100.0 * AIM_GAIN
        ))];
        for &horizon in &config.horizons {
            let text = match (outcome.get(model, horizon), outcome.get(BASELINE, horizon)) {
                (Some(ours), Some(baseline)) if baseline.mae_rate > 0.0 => {
                    let change = ours.mae_rate / baseline.mae_rate - 1.0;
                    if change <= -AIM_GAIN {
                        "met".to_owned()
                    } else {
                        format!("short by {:.1} pts", 100.0 * (change + AIM_GAIN))
                    }
                }
                _ => "n/a".to_owned(),
            };
            row.push(Cell::new(text).set_alignment(CellAlignment::Right));
        }
        table.add_row(row);
    }
    table
}

/// The gain over persistence + profile change the learned models aim at, at every horizon.
const AIM_GAIN: f64 = 0.25;

/// MAE per lot and horizon for the last model and persistence + profile change, worst lots first.
fn per_lot_table(outcome: &BacktestReport, config: &BacktestConfig) -> comfy_table::Table {
    const MAIN: &str = VERSUS_BASELINE;
    let best = outcome.models.last().map_or(MAIN, String::as_str);
    let mut header = vec!["lot".to_owned()];
    for horizon in &config.horizons {
        let minutes = horizon * config.step_minutes;
        header.push(format!("{best} {minutes} min"));
        if best != MAIN {
            header.push(format!("{MAIN} {minutes} min"));
        }
    }
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = report::new_table(&header_refs);
    // Index once: the table looks every (lot, model, horizon) up, and the sort does so repeatedly.
    let by_key: HashMap<(&str, &str, u32), f64> = outcome
        .per_lot
        .iter()
        .map(|entry| {
            (
                (
                    entry.lot_id.as_str(),
                    entry.metrics.model.as_str(),
                    entry.metrics.horizon_steps,
                ),
                entry.metrics.mae_rate,
            )
        })
        .collect();
    let mae = |lot: &str, model: &str, horizon: u32| by_key.get(&(lot, model, horizon)).copied();
    let last_horizon = *config
        .horizons
        .last()
        .expect("validated horizons are non-empty");
    let mut lots = outcome.lots.clone();
    lots.sort_by(|left, right| {
        mae(right, best, last_horizon)
            .unwrap_or(0.0)
            .total_cmp(&mae(left, best, last_horizon).unwrap_or(0.0))
    });
    let models: Vec<&str> = if best == MAIN {
        vec![MAIN]
    } else {
        vec![best, MAIN]
    };
    for lot in &lots {
        let mut row = vec![Cell::new(lot)];
        for &horizon in &config.horizons {
            for model in &models {
                let text = mae(lot, model, horizon)
                    .map_or_else(|| "n/a".to_owned(), |value| format!("{value:.4}"));
                row.push(Cell::new(text).set_alignment(CellAlignment::Right));
            }
        }
        table.add_row(row);
    }
    table
}
