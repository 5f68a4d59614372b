//! `parkcast tune`: a seeded search with a fixed budget over the trees' hyperparameters, scored on
//! the validation days only of one or more sources, an optional ablation, and a candidate
//! configuration file with its selection log.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use parkcast_training::backtest::{self, validation_sets};
use parkcast_training::frozen::LoadedConfig;
use parkcast_training::prior::Prior;
use parkcast_training::protocol::ProtocolRequest;
use parkcast_training::summary;
use parkcast_training::tune::{
    SearchOptions, SourceSets, describe_params, search, selection_log, write_candidate,
};

use super::GlobalArgs;
use super::args::WarehouseLocation;
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
    let warehouse = args.location.open()?;
    let frozen = LoadedConfig::load(args.config.as_deref())?;
    println!("{}", summary::configuration(&frozen, &[]));
    let progress = BarProgress::new(global.quiet);
    let started = Instant::now();

    // Each source's validation days, read once, with its own protocol.
    let mut sources = Vec::new();
    let mut protocols = Vec::new();
    for source in &args.sources {
        let request = ProtocolRequest {
            source: Some(source.clone()),
            max_training_rows: args.max_training_rows,
            validation_only: true,
            ..ProtocolRequest::default()
        };
        let (config, origin) = request
            .resolve(&warehouse, frozen.config.calibration())
            .with_context(|| format!("failed to set up the protocol of {source}"))?;
        let (lots, _excluded) = backtest::prepare(&warehouse, &config, &progress)
            .with_context(|| format!("failed to read {source}"))?;
        let mut sets = validation_sets(&lots, &config, &progress)
            .with_context(|| format!("failed to build the validation days of {source}"))?;
        if let Some(spec) = &frozen.config.prior {
            let prior = Prior::build(&warehouse, &config, spec, &progress)
                .with_context(|| format!("failed to read the prior of {source}"))?;
            sets = sets.with_prior(&prior);
            println!("{source}: {}", prior.describe());
        }
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

    let options = SearchOptions {
        trials: args.trials,
        seed: args.seed,
        budget_minutes: args.budget_minutes,
        ablation: args.ablation,
    };
    let found = search(&sources, &frozen.config.gbm_params(), &options, &progress);
    progress.finish();
    let found = found?;
    let best = found.best();
    println!("{}", summary::trials_table(&found.trials));
    println!(
        "winner: trial {} ({}), score {:+.2}% (trial 0, the configuration as given: {:+.2}%)",
        best.label,
        describe_params(&best.params),
        100.0 * best.score,
        100.0 * found.trials[0].score
    );
    println!(
        "{} trial(s), {:.1} s each on average; validation days read in {read_seconds:.1} s",
        found.trials.len(),
        found.mean_seconds()
    );
    if let Some(results) = &found.ablation {
        println!("{}", summary::ablation_table(best, results));
    }

    let header = format!(
        "Search by `parkcast tune`: {} of {} trial(s) run (seed {}{}), validation days only (the \
         calibration days before each backtest window, forecast by trees fitted before them; no \
         test window read). Score: the mean over sources and horizons of the trees' MAE change \
         against persistence + profile change. Tuned: {} (sha256 {}). Sources: {}. Space: {}. \
         {} build, {:.1} s per trial on average.",
        found.trials.len(),
        found.planned,
        args.seed,
        args.budget_minutes
            .map_or_else(String::new, |minutes| format!(", budget {minutes} min")),
        frozen.config.name,
        &frozen.sha256()[..12],
        protocols.join("; "),
        found.space.describe().join("; "),
        if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        },
        found.mean_seconds(),
    );
    let log = selection_log(
        &header,
        &found.trials,
        found.ablation.as_deref().map(|results| (best, results)),
    );
    if let Some(out) = &args.out {
        let command = std::env::args()
            .map(|arg| {
                if arg.contains(' ') {
                    format!("'{arg}'")
                } else {
                    arg
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        write_candidate(out, &frozen, &found, log, command)?;
        println!("candidate configuration: {}", out.display());
    }
    println!("({:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}
