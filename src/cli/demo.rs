//! `parkcast demo`: the product end to end on built-in data.
//!
//! A simulated city plus the three real data sets in one warehouse; a model trained and backtested
//! on Birmingham (or on the simulated city without the real data) and published to the demo's
//! registry; then the live path on an in-process Kafka broker: the city's last day replayed into the
//! topics, consumed into live per-slot state, and archived into a second warehouse. The server joins
//! this command when it lands.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use parkcast_training::backtest::{BacktestConfig, ModelChoice};
use parkcast_training::registry::Registry;
use parkcast_training::simulate;
use parkcast_training::train::{TrainConfig, train};

use super::GlobalArgs;
use super::import::{SourceArgs, import_one, print_report};
use super::simulate::SimulateArgs;
use crate::progress::BarProgress;
use crate::report;

/// Arguments of `parkcast demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Folder for the demo's warehouse.
    #[arg(long, default_value = "out/demo/warehouse")]
    pub out: PathBuf,
    /// Lots of the simulated city.
    #[arg(long, default_value_t = 20)]
    pub lots: u32,
    /// Days of the simulated city.
    #[arg(long, default_value_t = 28)]
    pub days: u32,
    /// Skip the real data sets (for machines without ../shared/datasets).
    #[arg(long)]
    pub no_real_data: bool,
    /// Model registry of the demo.
    #[arg(long, default_value = "out/demo/models")]
    pub models: PathBuf,
}

pub fn run(args: DemoArgs, global: &GlobalArgs) -> Result<()> {
    let warehouse = super::create_warehouse(&args.out)?;

    println!(
        "1/4  simulating {} lots for {} days into {}",
        args.lots,
        args.days,
        args.out.display()
    );
    let simulate_args = SimulateArgs {
        out: args.out.clone(),
        lots: args.lots,
        days: args.days,
        seed: 42,
        start: demo_start(),
        interval: 5,
        heartbeat: 120,
        silence: DEMO_SILENCE_MINUTES,
        timezone: chrono_tz::Europe::London,
        region: "GB-ENG".to_owned(),
        pii_key: std::env::var("PARKCAST_PII_KEY")
            .unwrap_or_else(|_| "parkcast-simulator".to_owned()),
    };
    let checked = simulate_args
        .params()
        .check()
        .context("invalid simulation parameters")?;
    let progress = BarProgress::new(global.quiet);
    let result = simulate::simulate(&checked, &warehouse, &progress);
    progress.finish();
    let outcome = result.context("simulation failed")?;
    println!("{}", report::simulation_table(&outcome));

    if args.no_real_data {
        println!("2/4  skipping the real data sets (--no-real-data)");
    } else {
        println!("2/4  importing the real data sets (Birmingham, Málaga, Melbourne)");
        for source in SourceArgs::All.sources() {
            let report = import_one(&source, &warehouse, global)?;
            print_report(&report);
        }
    }

    println!("\nThe warehouse at {} now holds:", args.out.display());
    println!(
        "{}",
        report::warehouse_table(
            &warehouse
                .summary()
                .context("failed to read the warehouse")?
        )
    );

    // Train: Birmingham's reference protocol, or the simulated city's last week.
    let backtest = if args.no_real_data {
        let last = args.days.saturating_sub(1);
        let first = simulate_args.start + chrono::Days::new(u64::from(last.saturating_sub(6)));
        BacktestConfig {
            source: simulate::SOURCE.to_owned(),
            step_minutes: 15,
            horizons: vec![1, 4, 8],
            test_start: first,
            test_end: simulate_args.start + chrono::Days::new(u64::from(last)),
            same_day: false,
            calibration_days: 7,
            ..BacktestConfig::birmingham()
        }
    } else {
        BacktestConfig::birmingham()
    };
    println!(
        "3/4  training on {}: backtest of every baseline and model, then the promoted model to {}",
        backtest.source,
        args.models.display()
    );
    let config = TrainConfig {
        name: backtest.source.clone(),
        backtest,
        models: ModelChoice::all(),
    };
    let progress = BarProgress::new(global.quiet);
    let outcome = train(
        &warehouse,
        &Registry::open(&args.models),
        &config,
        &progress,
    );
    progress.finish();
    let outcome = outcome.context("training failed")?;
    super::backtest::print_summary(&outcome.backtest, &config.backtest);
    let manifest = &outcome.published.manifest;
    println!(
        "promoted {}: published {} v{} to {} (report.md with plots inside)",
        outcome.promoted,
        manifest.name,
        manifest.version,
        outcome.published.dir.display()
    );
    live_stage(&args, &warehouse, global)?;
    println!(
        "Next: `parkcast models list --registry {}`, `parkcast backtest -w {} --per-lot`, or read the warehouse with polars (see notebooks/).",
        args.models.display(),
        args.out.display()
    );
    Ok(())
}

/// Step 4: the city's last day through an embedded broker into live state and the archive.
fn live_stage(
    args: &DemoArgs,
    warehouse: &parkcast_features::warehouse::Warehouse,
    global: &GlobalArgs,
) -> Result<()> {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use parkcast_archive::replay::Speed;
    use parkcast_archive::source::{EventSource, SourceConfig};
    use parkcast_kafka::KafkaConfig;
    use parkcast_serving::ingest::{Ingest, IngestConfig};
    use parkcast_serving::metrics::IngestMetrics;
    use parkcast_serving::topology::Topology;

    let mut kafka = KafkaConfig::default();
    let _broker = super::stream::start_embedded(&mut kafka, 4)?;
    let last_day_start = local_day_start(args)?;
    println!(
        "4/4  live: the simulated city's last day through an in-process Kafka broker ({}) into live state and the archive",
        kafka.bootstrap_servers
    );
    let source = EventSource::new(
        warehouse,
        SourceConfig {
            start_ms: Some(last_day_start),
            lots: Some(
                parkcast_archive::source::Topology::read(warehouse)?
                    .lots()
                    .iter()
                    .map(|lot| lot.lot_id.clone())
                    .filter(|lot| lot.starts_with("sim:"))
                    .collect(),
            ),
            ..SourceConfig::default()
        },
    )
    .context("failed to read the city's events")?;
    let topology_pairs: Vec<_> = source.topology().pairs().collect();
    let total = source.total_hint().ok();
    let stats =
        super::replay::replay_with_bar(&kafka, source, Speed::Unlimited, total, global.quiet)?;
    println!(
        "     replayed {} messages in {:.1} s ({} msg/s)",
        report::thousands(stats.total()),
        stats.elapsed.as_secs_f64(),
        report::thousands(stats.rate() as u64)
    );

    let topology = Arc::new(Topology::new(topology_pairs.clone()).context("invalid topology")?);
    let state_dir = args.out.with_file_name("serving-state");
    let _ = std::fs::remove_dir_all(&state_dir);
    let config = IngestConfig {
        kafka: kafka.clone(),
        group_id: "parkcast-demo".to_owned(),
        state_dir,
        probe_interval_ms: 200,
        // The simulated sensors repeat themselves every 120 minutes; silence as the simulation.
        silence_ms: i64::from(DEMO_SILENCE_MINUTES) * 60_000,
        ..IngestConfig::default()
    };
    let metrics = IngestMetrics::register(&mut prometheus_client::registry::Registry::default());
    let started = Instant::now();
    let ingest = Ingest::start(config, topology, metrics).context("failed to start ingestion")?;
    let expected = stats.messages[0] + stats.messages[1];
    while !(ingest.metrics().handled() >= expected && ingest.status().lag == Some(0)) {
        if started.elapsed() > Duration::from_secs(300) || ingest.is_finished() {
            anyhow::bail!("ingestion did not catch up within 5 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let seconds = started.elapsed().as_secs_f64();
    let snapshots = ingest.lot_snapshots(None);
    let status = ingest.status();
    ingest.stop().context("ingestion stopped with an error")?;
    println!(
        "     ingested {} messages in {seconds:.1} s (group join included); {} lots live, stale: {}",
        report::thousands(expected),
        snapshots.len(),
        status.stale
    );
    let mut table = report::new_table(&[
        "lot (live, end of day)",
        "occupied",
        "free",
        "unknown",
        "arrivals last hour",
        "median dwell",
    ]);
    for (lot, snapshot) in snapshots.iter().take(8) {
        let mut dwell = snapshot.dwell_minutes.clone();
        dwell.sort_by(f64::total_cmp);
        let median = dwell
            .get(dwell.len() / 2)
            .map_or_else(|| "-".to_owned(), |minutes| format!("{minutes:.0} min"));
        table.add_row(vec![
            lot.clone(),
            snapshot.occupied.to_string(),
            snapshot.free.to_string(),
            snapshot.unknown.to_string(),
            snapshot.arrivals_last_hour.to_string(),
            median,
        ]);
    }
    println!("{table}");

    let archive_dir = args.out.with_file_name("archive");
    let _ = std::fs::remove_dir_all(&archive_dir);
    let archive = super::create_warehouse(&archive_dir)?;
    super::archive::copy_dimensions(warehouse, &archive)?;
    let archive_args = super::archive::ArchiveArgs {
        warehouse: archive_dir.clone(),
        dimensions_from: None,
        until_idle: Some(2.0),
        flush_seconds: 30.0,
        flush_rows: 500_000,
        interval: 15,
        lateness_minutes: 60,
        silence_minutes: 300,
        group: "parkcast-demo-archive".to_owned(),
        config: None,
        broker: super::stream::BrokerArgs::default(),
    };
    let archive_config = super::archive::archive_config(&archive_args, kafka);
    let summary = super::archive::archive_with_spinner(
        &archive,
        &archive_config,
        topology_pairs,
        global.quiet,
    )?;
    println!("     archived into {}:", archive_dir.display());
    super::archive::print_summary(&summary);
    Ok(())
}

/// The simulated city's silence limit, minutes: live state uses the simulator's own.
const DEMO_SILENCE_MINUTES: u32 = 300;

/// First day of the simulated city.
fn demo_start() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2025, 11, 3).expect("the demo start date should be valid")
}

/// Local midnight (UTC ms) of the simulated city's last day.
fn local_day_start(args: &DemoArgs) -> Result<i64> {
    use chrono::TimeZone;
    let last = demo_start() + chrono::Days::new(u64::from(args.days.saturating_sub(1)));
    let midnight = chrono_tz::Europe::London
        .from_local_datetime(&last.and_time(chrono::NaiveTime::MIN))
        .earliest()
        .context("local midnight should exist")?;
    Ok(midnight.timestamp_millis())
}
