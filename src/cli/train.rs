//! `parkcast train`: backtest every forecaster, promote the best learned model, refit it on all data
//! and publish it (model file, manifest, report with plots) to the model registry.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use parkcast_training::registry::Registry;
use parkcast_training::train::{TrainConfig, train};

use super::GlobalArgs;
use parkcast_training::summary;

use super::args::ProtocolArgs;
use crate::progress::BarProgress;

/// Arguments of `parkcast train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub protocol: ProtocolArgs,
    /// Model registry folder.
    #[arg(long, env = "PARKCAST_MODELS", default_value = "models")]
    pub registry: PathBuf,
    /// Name of the model line in the registry (default: the source).
    #[arg(long)]
    pub name: Option<String>,
    /// Publish the promoted model even when it does not beat persistence + profile change at every
    /// horizon on the test window(s); without it such a model is refused (nothing is published).
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: TrainArgs, global: &GlobalArgs) -> Result<()> {
    let warehouse = args.protocol.location.open()?;
    let frozen = args.protocol.frozen()?;
    let (backtest, origin) = args.protocol.config(&warehouse, &frozen.config)?;
    println!("protocol: {origin}");
    let overrides = args.protocol.overrides(&frozen.config);
    println!("{}", summary::configuration(&frozen, &overrides));
    let models = args.protocol.models(&frozen.config)?;
    let name = args.name.clone().unwrap_or_else(|| {
        backtest
            .source
            .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    });
    let config = TrainConfig {
        backtest,
        models,
        name,
        publish_losing: args.force,
        frozen: Some(frozen.record(overrides)),
    };
    let registry = Registry::open(&args.registry);
    let started = std::time::Instant::now();
    let outcome = BarProgress::run(global.quiet, |progress| {
        train(&warehouse, &registry, &config, progress)
    })
    .context("training failed")?;
    println!("{}", summary::backtest(&outcome.backtest, &config.backtest));
    let manifest = &outcome.published.manifest;
    println!(
        "promoted {} ({} persistence + profile change at every horizon)",
        outcome.promoted,
        if outcome.beats_baseline {
            "beats"
        } else {
            "does NOT beat"
        }
    );
    println!(
        "published {} v{} ({} model, {} bytes, sha256 {}) to {}",
        manifest.card.name,
        manifest.version,
        manifest.card.model_kind,
        manifest.model_bytes,
        &manifest.model_sha256[..12],
        outcome.published.dir.display()
    );
    println!(
        "report: {}",
        outcome.published.dir.join("report.md").display()
    );
    println!(
        "{}",
        summary::run(
            &outcome.backtest.run,
            outcome.backtest.lots.len(),
            parkcast_bench::measure::peak_rss_kib().map(|kib| kib * 1024)
        )
    );
    println!("({:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}
