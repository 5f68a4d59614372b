//! `parkcast tune`: a seeded search with a fixed budget over the trees' hyperparameters, scored on
//! the validation days only of one or more sources, an optional ablation, and a candidate
//! configuration file with its selection log.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use comfy_table::{Cell, CellAlignment};
use parkcast_training::backtest::{self, validation_sets};
use parkcast_training::frozen::LoadedConfig;
use parkcast_training::progress::Progress;
use parkcast_training::tune::{
    SearchSpace, SourceSets, TrialResult, ablation_variants, describe_params, run_trial,
    selection_log, source_cell, winner,
};

use super::backtest::{Models, ProtocolArgs, print_configuration};
use super::{GlobalArgs, WarehouseLocation};
use crate::progress::BarProgress;
use crate::report;

/// Arguments of `parkcast tune`.
#[derive(Debug, Args)]
pub struct TuneArgs {
    #[command(flatten)]
    pub location: WarehouseLocation,
    /// Sources to score on, repeated (`--source birmingham --source malaga --source simulated`):
    /// each with its own protocol (its preset, or one from its data), one score across all.
    #[arg(long = "source", default_value = "birmingham")]
    pub sources: Vec<String>,
    /// The configuration to tune (default: the one built in). Trial 0 is this configuration.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Trials, the configuration itself included.
    #[arg(long, default_value_t = 12)]
    pub trials: usize,
    /// Start no new trial after this many minutes (the trials run are then the first ones of the
    /// same seeded sequence).
    #[arg(long)]
    pub budget_minutes: Option<f64>,
    /// Seed of the search.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also measure, on the winner, what leaving out each feature group and changing the loss and
    /// the bagging moves (validation days only).
    #[arg(long)]
    pub ablation: bool,
    /// Cap on training rows per horizon and window (origins are thinned evenly), as in backtest.
    #[arg(long, default_value_t = 400_000)]
    pub max_training_rows: usize,
    /// Write the winner as a configuration file with its selection log (its `name` is the file's
    /// stem).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(args: TuneArgs, global: &GlobalArgs) -> Result<()> {
    if args.trials == 0 {
        bail!("--trials must be at least 1 (trial 0 is the configuration itself)");
    }
    let warehouse = args.location.open()?;
    let protocol = |source: &str| ProtocolArgs {
        location: args.location.clone(),
        preset: None,
        source: Some(source.to_owned()),
        step: None,
        horizons: None,
        test_start: None,
        test_end: None,
        window_days: None,
        windows: None,
        across_days: false,
        calibration_days: None,
        calibration: None,
        training_days: None,
        max_training_rows: args.max_training_rows,
        models: Models::Gbm,
        gbm_iterations: None,
        gbm_learning_rate: None,
        gbm_objective: None,
        gbm_bagging_seeds: None,
        gbm_exclude: Vec::new(),
        config: args.config.clone(),
        validation_only: true,
    };
    let frozen = protocol("").frozen()?;
    print_configuration(&frozen, &[]);
    let progress = BarProgress::new(global.quiet);
    let started = Instant::now();

    // Each source's validation days, read once.
    let mut sources = Vec::new();
    let mut protocols = Vec::new();
    for source in &args.sources {
        let (config, origin) = protocol(source)
            .config(&warehouse, &frozen.config)
            .with_context(|| format!("failed to set up the protocol of {source}"))?;
        let (lots, _excluded) = backtest::prepare(&warehouse, &config)
            .with_context(|| format!("failed to read {source}"))?;
        let sets = validation_sets(&lots, &config, &progress)
            .with_context(|| format!("failed to build the validation days of {source}"))?;
        progress.finish();
        println!(
            "{source}: {origin}; validation days: the {} before each window, {} pairs, {} training rows",
            config.calibration_days,
            report::thousands(sets.pairs() as u64),
            report::thousands(sets.training_rows() as u64)
        );
        protocols.push(format!("{source} ({origin})"));
        sources.push(SourceSets {
            source: source.clone(),
            sets,
        });
    }
    let read_seconds = started.elapsed().as_secs_f64();

    // The search.
    let base = frozen.config.gbm_params();
    let space = SearchSpace::default();
    let candidates = space.trials(&base, args.trials, args.seed);
    progress.stage("trials", Some(candidates.len() as u64));
    let search_started = Instant::now();
    let mut trials: Vec<TrialResult> = Vec::new();
    for (index, params) in candidates.iter().enumerate() {
        if let Some(budget) = args.budget_minutes
            && index > 0
            && search_started.elapsed().as_secs_f64() > budget * 60.0
        {
            tracing::info!(trials = index, budget_minutes = budget, "time budget spent");
            break;
        }
        let trial = run_trial(&sources, &index.to_string(), params)
            .with_context(|| format!("trial {index} failed"))?;
        trials.push(trial);
        progress.advance(1);
    }
    progress.finish();
    println!("{}", trials_table(&trials));
    let best = winner(&trials).context("no trial has a finite score")?;
    println!(
        "winner: trial {} ({}), score {:+.2}% (trial 0, the configuration as given: {:+.2}%)",
        best.label,
        describe_params(&best.params),
        100.0 * best.score,
        100.0 * trials[0].score
    );
    let mean_seconds = trials.iter().map(|trial| trial.seconds).sum::<f64>() / trials.len() as f64;
    println!(
        "{} trial(s), {:.1} s each on average; validation days read in {read_seconds:.1} s",
        trials.len(),
        mean_seconds
    );

    // The ablation, on the winner.
    let ablation = if args.ablation {
        let variants = ablation_variants(&best.params);
        progress.stage("ablation", Some(variants.len() as u64));
        let mut results = Vec::new();
        for (label, params) in &variants {
            results.push(
                run_trial(&sources, label, params)
                    .with_context(|| format!("ablation {label:?} failed"))?,
            );
            progress.advance(1);
        }
        progress.finish();
        println!("{}", ablation_table(best, &results));
        Some(results)
    } else {
        None
    };

    let header = format!(
        "Search by `parkcast tune`: {} of {} trial(s) run (seed {}{}), validation days only (the \
         calibration days before each backtest window, forecast by trees fitted before them; no \
         test window read). Score: the mean over sources and horizons of the trees' MAE change \
         against persistence + profile change. Tuned: {} (sha256 {}). Sources: {}. Space: {}. \
         {} build, {:.1} s per trial on average.",
        trials.len(),
        candidates.len(),
        args.seed,
        args.budget_minutes
            .map_or_else(String::new, |minutes| format!(", budget {minutes} min")),
        frozen.config.name,
        &frozen.sha256()[..12],
        protocols.join("; "),
        space.describe().join("; "),
        if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        },
        mean_seconds,
    );
    let log = selection_log(
        &header,
        &trials,
        ablation.as_deref().map(|results| (best, results)),
    );
    if let Some(out) = &args.out {
        write_candidate(out, &frozen, best, &trials[0], log)?;
        println!("candidate configuration: {}", out.display());
    }
    println!("({:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// Writes the winner as a configuration: the tuned one with the winner's `[gbm]`, named after the
/// file, with the selection log.
fn write_candidate(
    out: &std::path::Path,
    frozen: &LoadedConfig,
    best: &TrialResult,
    base: &TrialResult,
    log: String,
) -> Result<()> {
    let mut candidate = frozen.config.clone();
    candidate.set_gbm(&best.params);
    candidate.name = out
        .file_stem()
        .and_then(|stem| stem.to_str())
        .map_or_else(|| format!("{}-tuned", frozen.config.name), str::to_owned);
    candidate.selection.summary = format!(
        "Chosen by parkcast tune on validation days only: trial {} scored {:+.2}% against \
         persistence + profile change ({} as given: {:+.2}%).",
        best.label,
        100.0 * best.score,
        frozen.config.name,
        100.0 * base.score
    );
    candidate.selection.command = std::env::args()
        .map(|arg| {
            if arg.contains(' ') {
                format!("'{arg}'")
            } else {
                arg
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    candidate.selection.log = log;
    let text = candidate.to_toml()?;
    // What is written must read back (a candidate that `--config` refuses is no candidate).
    LoadedConfig::from_text(&out.display().to_string(), &text)
        .context("the written configuration does not read back")?;
    let preamble = format!(
        "# parkcast frozen modelling configuration, written by parkcast tune from {}.\n\
         # Review the selection log below, then commit it (training/config/) or pass it with --config.\n\n",
        frozen.origin
    );
    std::fs::write(out, preamble + &text)
        .with_context(|| format!("failed to write {}", out.display()))?;
    Ok(())
}

fn trials_table(trials: &[TrialResult]) -> comfy_table::Table {
    let mut header = vec!["trial".to_owned(), "parameters".to_owned()];
    if let Some(first) = trials.first() {
        for (source, scores) in &first.scores {
            header.push(format!(
                "{source} validation MAE {}",
                scores
                    .iter()
                    .map(|score| format!("{} min", score.horizon_minutes))
                    .collect::<Vec<_>>()
                    .join(" / ")
            ));
        }
    }
    header.push("score".to_owned());
    header.push("seconds".to_owned());
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = report::new_table(&header_refs);
    let right = |text: String| Cell::new(text).set_alignment(CellAlignment::Right);
    for trial in trials {
        let mut row = vec![
            Cell::new(&trial.label),
            Cell::new(describe_params(&trial.params)),
        ];
        for (_, scores) in &trial.scores {
            row.push(right(source_cell(scores)));
        }
        row.push(right(format!("{:+.2}%", 100.0 * trial.score)));
        row.push(right(format!("{:.1}", trial.seconds)));
        table.add_row(row);
    }
    table
}

fn ablation_table(base: &TrialResult, variants: &[TrialResult]) -> comfy_table::Table {
    let mut header = vec!["ablation (validation days only)".to_owned()];
    for (source, _) in &base.scores {
        header.push(source.clone());
    }
    header.push("score".to_owned());
    header.push("vs chosen".to_owned());
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = report::new_table(&header_refs);
    let right = |text: String| Cell::new(text).set_alignment(CellAlignment::Right);
    let mut base_row = vec![Cell::new("as chosen")];
    for (_, scores) in &base.scores {
        base_row.push(right(source_cell(scores)));
    }
    base_row.push(right(format!("{:+.2}%", 100.0 * base.score)));
    base_row.push(right(String::new()));
    table.add_row(base_row);
    for variant in variants {
        let mut row = vec![Cell::new(&variant.label)];
        for (_, scores) in &variant.scores {
            row.push(right(source_cell(scores)));
        }
        row.push(right(format!("{:+.2}%", 100.0 * variant.score)));
        row.push(right(format!(
            "{:+.2} points",
            100.0 * (variant.score - base.score)
        )));
        table.add_row(row);
    }
    table
}
