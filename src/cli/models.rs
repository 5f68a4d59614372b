//! `parkcast models list|show`: what the model registry holds; `parkcast models activate`: switch a
//! running server to a version; `parkcast models shadow|unshadow`: score a candidate beside it.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use parkcast_client::Output;
use parkcast_training::registry::Registry;
use parkcast_training::summary;

use super::client_runtime;

/// Arguments of `parkcast models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Model registry folder.
    #[arg(long, env = "PARKCAST_MODELS", default_value = "models", global = true)]
    pub registry: PathBuf,
    #[command(subcommand)]
    pub command: ModelsCommand,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Every version of every model line, newest last.
    List,
    /// One version's manifest: training data, hyperparameters, backtest metrics, checksum.
    Show {
        /// The model line.
        name: String,
        /// The version (default: the latest).
        version: Option<u32>,
        /// Also verify the model file against the manifest (size, sha256).
        #[arg(long)]
        verify: bool,
    },
    /// Ask a running server to load, check and serve a version (ActivateModel); a version that fails
    /// its checks is refused and the active model keeps serving.
    Activate(ActivateArgs),
    /// Ask a running server to load, check and score a version beside the active model on the same
    /// live stream, never serving it (ShadowModel); `parkcast query quality` then shows both.
    Shadow(ActivateArgs),
    /// Ask a running server to stop scoring the candidate in shadow (ClearShadow).
    Unshadow(AdminArgs),
    /// Recompute a version's live accuracy from the warehouse (the archive of the live streams):
    /// the server's monitor fed the archived values in the order the server met them, every hour's
    /// MAE per horizon, city-wide and per lot, against the lot's backtest reference, and the drift
    /// alarm, written as CSV; a summary table and the drift episodes printed.
    Quality(QualityArgs),
}

/// Arguments of `parkcast models quality`.
#[derive(Debug, Args)]
pub struct QualityArgs {
    /// The model line.
    pub name: String,
    /// The version (default: the newest).
    pub version: Option<u32>,
    #[command(flatten)]
    pub location: super::args::WarehouseLocation,
    /// First local date reported (default: the day after the model's training data ends). The
    /// monitor runs from that day after the training data on regardless, as a server that
    /// activated the model then would have, so a later date meets the interval scales the days
    /// between taught.
    #[arg(long)]
    pub from: Option<chrono::NaiveDate>,
    /// Last local date scored, inclusive (default: the data's last).
    #[arg(long)]
    pub to: Option<chrono::NaiveDate>,
    /// The CSV written: one row per hour, horizon and lot (`lot_id` empty: the city).
    #[arg(long, default_value = "out/live-quality.csv")]
    pub out: PathBuf,
}

/// Arguments of an admin call that names no version.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Server address (`http://host:port`; a bare `host:port` means http).
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "PARKCAST_GRPC_ADDR"
    )]
    pub addr: String,
    /// The server's admin token, sent as `authorization: Bearer <token>` (prefer the environment
    /// variable: a flag shows in the process list).
    #[arg(long, env = "PARKCAST_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Print the model as one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `parkcast models activate`.
#[derive(Debug, Args)]
pub struct ActivateArgs {
    /// The model line.
    pub name: String,
    /// The version (default: the newest).
    pub version: Option<u32>,
    /// Server address (`http://host:port`; a bare `host:port` means http).
    #[arg(
        long,
        default_value = "http://127.0.0.1:50051",
        env = "PARKCAST_GRPC_ADDR"
    )]
    pub addr: String,
    /// The server's admin token, sent as `authorization: Bearer <token>` (prefer the environment
    /// variable: a flag shows in the process list).
    #[arg(long, env = "PARKCAST_ADMIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Print the activated model as one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `parkcast models`.
pub fn run(args: ModelsArgs) -> Result<()> {
    let registry = Registry::open(&args.registry);
    match args.command {
        ModelsCommand::List => list(&registry),
        ModelsCommand::Show {
            name,
            version,
            verify,
        } => show(&registry, &name, version, verify),
        ModelsCommand::Activate(activate_args) => activate(&activate_args),
        ModelsCommand::Shadow(shadow_args) => shadow(&shadow_args),
        ModelsCommand::Unshadow(admin_args) => unshadow(&admin_args),
        ModelsCommand::Quality(quality_args) => quality(&registry, &quality_args),
    }
}

/// Recomputes a version's live accuracy over days of the warehouse (`parkcast models quality`).
fn quality(registry: &Registry, args: &QualityArgs) -> Result<()> {
    use std::fmt::Write as _;

    use parkcast_serving::quality::{HOUR_MS, QualityConfig};
    use parkcast_serving::scoring::ServedModel;

    let version = match args.version {
        Some(version) => version,
        None => registry
            .latest(&args.name)?
            .with_context(|| format!("no version of {} in the registry", args.name))?,
    };
    let (manifest, bytes) = registry
        .load(&args.name, version, None)
        .with_context(|| format!("failed to load {} v{version}", args.name))?;
    let served = ServedModel::decode(manifest, &bytes)
        .with_context(|| format!("{} v{version} does not load", args.name))?;
    let warehouse = args.location.open()?;
    let lots = parkcast_warehouse::lots::load_lots(
        &warehouse,
        &served.manifest.card.source,
        served.model.step_minutes(),
    )
    .context("failed to load the lots")?;
    let timezone = lots
        .values()
        .next()
        .map(|lot| lot.series.timezone())
        .context("the warehouse has no lot of the model's source")?;
    // The monitor runs from the first day the model did not learn from, as on a server that
    // activated it then: the adaptive interval scales a report from a later day meets are the
    // ones those days taught, not 1 (a report reaching into the training days starts there).
    let unseen = served.manifest.card.training_end + chrono::Days::new(1);
    let from = args.from.unwrap_or(unseen);
    let start = from.min(unseen);
    let from_ms = parkcast_localtime::day_start_ms(timezone, from);
    let until_ms = match args.to {
        Some(to) => parkcast_localtime::day_start_ms(timezone, to + chrono::Days::new(1)),
        None => i64::MAX,
    };
    let lot_ids: Vec<&String> = lots.keys().collect();
    let mut csv = String::from(
        "hour_end_ms,horizon_minutes,lot_id,pairs,mae_rate,coverage_80,reference_mae,drifting\n",
    );
    // Drift episodes: (lot or city, horizon) -> (first named, last named).
    let mut episodes: std::collections::BTreeMap<(String, u32), (i64, i64)> =
        std::collections::BTreeMap::new();
    let monitor = parkcast_serving::recompute::recompute(
        &served,
        &lots,
        parkcast_serving::recompute::Period {
            start_ms: parkcast_localtime::day_start_ms(timezone, start),
            report_from_ms: from_ms,
            until_ms,
        },
        QualityConfig::default(),
        |now_ms, monitor| {
            let hour_end = now_ms.div_euclid(HOUR_MS) * HOUR_MS;
            let drifting = monitor.drift(now_ms);
            for drift in &drifting {
                let who = drift
                    .lot
                    .map_or_else(String::new, |lot| lot_ids[lot].clone());
                let episode = episodes
                    .entry((who, drift.horizon_minutes))
                    .or_insert((now_ms, now_ms));
                episode.1 = now_ms;
            }
            for (index, quality) in monitor
                .summary(hour_end)
                .iter()
                .filter(|quality| quality.window == "hour")
                .enumerate()
            {
                let named = |lot: Option<usize>| {
                    drifting.iter().any(|drift| {
                        drift.lot == lot && drift.horizon_minutes == quality.horizon_minutes
                    })
                };
                let _ = writeln!(
                    csv,
                    "{hour_end},{},,{},{},{},{},{}",
                    quality.horizon_minutes,
                    quality.city.pairs,
                    quality.city.mae(),
                    quality.city.coverage(),
                    quality.backtest_mae,
                    named(None)
                );
                for (lot, tally) in quality.lots.iter().enumerate() {
                    let _ = writeln!(
                        csv,
                        "{hour_end},{},{},{},{},{},{},{}",
                        quality.horizon_minutes,
                        lot_ids[lot],
                        tally.pairs,
                        tally.mae(),
                        tally.coverage(),
                        monitor.reference(lot, index, hour_end - HOUR_MS),
                        named(Some(lot))
                    );
                }
            }
        },
    );
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
    }
    std::fs::write(&args.out, csv)
        .with_context(|| format!("failed to write {}", args.out.display()))?;
    println!(
        "{} v{version} recomputed from {from} on{}, {} lots: the last day's live accuracy",
        args.name,
        if start < from {
            format!(" (monitored from {start}, the day after its training data ends)")
        } else {
            String::new()
        },
        lots.len()
    );
    let mut table = parkcast_tables::new_table(&[
        "horizon",
        "scored",
        "live MAE",
        "backtest MAE",
        "80% covers",
    ]);
    let last_ms = lots
        .values()
        .filter_map(|lot| lot.series.iter().last().map(|(instant, _)| instant))
        .max()
        .unwrap_or(from_ms)
        .min(until_ms);
    for quality in monitor
        .summary(last_ms)
        .iter()
        .filter(|quality| quality.window == "day")
    {
        table.add_row(vec![
            format!("{} min", quality.horizon_minutes),
            quality.city.pairs.to_string(),
            format!("{:.4}", quality.city.mae()),
            format!("{:.4}", quality.backtest_mae),
            format!("{:.1}%", 100.0 * quality.city.coverage()),
        ]);
    }
    println!("{table}");
    if episodes.is_empty() {
        println!("no drift alarm over the period");
    }
    for ((who, minutes), (first, last)) in &episodes {
        let when = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms).map_or_else(
                || ms.to_string(),
                |time| time.format("%Y-%m-%d %H:%M UTC").to_string(),
            )
        };
        println!(
            "drift: {} at {minutes} min, named from {} to {}",
            if who.is_empty() {
                "the city".to_owned()
            } else {
                format!("lot {who}")
            },
            when(*first),
            when(*last)
        );
    }
    println!("hourly figures written to {}", args.out.display());
    Ok(())
}

/// Calls `ShadowModel` with the bearer token and prints the candidate, or the refusal.
fn shadow(args: &ActivateArgs) -> Result<()> {
    let request = parkcast_client::shadow_request(&args.name, args.version, &args.token)?;
    let output = Output::json_if(args.json);
    let candidate = client_runtime()?.block_on(async {
        let channel = parkcast_client::connect(&args.addr).await?;
        parkcast_client::shadow_model(channel, request, output).await
    })?;
    if args.json {
        print!("{candidate}");
    } else {
        print!("in shadow (scored, never served): {candidate}");
    }
    Ok(())
}

/// Calls `ClearShadow` with the bearer token and prints the candidate that was in shadow.
fn unshadow(args: &AdminArgs) -> Result<()> {
    let request = parkcast_client::clear_shadow_request(&args.token)?;
    let output = Output::json_if(args.json);
    let cleared = client_runtime()?.block_on(async {
        let channel = parkcast_client::connect(&args.addr).await?;
        parkcast_client::clear_shadow(channel, request, output).await
    })?;
    if args.json {
        print!("{cleared}");
    } else {
        print!("no longer in shadow: {cleared}");
    }
    Ok(())
}

/// Calls `ActivateModel` with the bearer token and prints the activated model, or the refusal as an
/// error.
fn activate(args: &ActivateArgs) -> Result<()> {
    let request = parkcast_client::activation_request(&args.name, args.version, &args.token)?;
    let output = Output::json_if(args.json);
    let activated = client_runtime()?.block_on(async {
        let channel = parkcast_client::connect(&args.addr).await?;
        parkcast_client::activate_model(channel, request, output).await
    })?;
    print!("{activated}");
    Ok(())
}

fn list(registry: &Registry) -> Result<()> {
    let entries = registry.list().context("failed to read the registry")?;
    if entries.is_empty() {
        println!(
            "no models in {} (train one with `parkcast train`)",
            registry.root().display()
        );
    } else {
        println!("{}", summary::registry_table(&entries));
    }
    Ok(())
}

fn show(registry: &Registry, name: &str, version: Option<u32>, verify: bool) -> Result<()> {
    let version = match version {
        Some(version) => version,
        None => registry
            .latest(name)?
            .with_context(|| format!("no versions of model {name:?}"))?,
    };
    let manifest = if verify {
        registry
            .load(name, version, None)
            .with_context(|| format!("model {name} v{version} failed verification"))?
            .0
    } else {
        registry.manifest(name, version)?
    };
    println!("{}", summary::manifest_text(&manifest, verify));
    Ok(())
}
