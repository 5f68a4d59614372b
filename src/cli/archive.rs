//! `parkcast archive`: the topics into a warehouse's fact tables, exactly once, with
//! `fact_lot_occupancy` rolled forward, so `parkcast train` learns from what the live system saw.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use parkcast_archive::archiver::{self, ArchiveConfig, ArchiveSummary};
use parkcast_archive::rollup::RollupConfig;
use parkcast_kafka::KafkaConfig;
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::schema::Table;

use super::GlobalArgs;
use super::args::BrokerArgs;
use crate::report;
use parkcast_serving::config::ServiceConfig;
use parkcast_serving::config::load_config;
use parkcast_warehouse::topology::Topology;

/// Arguments of `parkcast archive`.
#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// Warehouse to append to (created if missing).
    #[arg(long, short = 'w', default_value = "out/archive")]
    pub warehouse: PathBuf,
    /// Copy the dimensions (lots, zones, slots, calendar, events) from this warehouse first: the
    /// archive needs the lots and slots it rolls occupancy up for, and the trainer needs the rest.
    #[arg(long)]
    pub dimensions_from: Option<PathBuf>,
    /// Stop once no message arrived for this many seconds (after a final flush); without it the
    /// archiver runs until stopped.
    #[arg(long)]
    pub until_idle: Option<f64>,
    /// Flush (write files, checkpoint) at least every this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub flush_seconds: f64,
    /// Flush when this many rows are buffered.
    #[arg(long, default_value_t = 500_000)]
    pub flush_rows: usize,
    /// Grid of the rolled-up lot occupancy, minutes.
    #[arg(long, default_value_t = 15)]
    pub interval: u32,
    /// Occupancy at an instant is final once the lot's newest event is this many minutes past it.
    #[arg(long, default_value_t = 60)]
    pub lateness_minutes: i64,
    /// A slot silent for longer than this many minutes counts as unknown.
    #[arg(long, default_value_t = 180)]
    pub silence_minutes: i64,
    /// Consumer group the archived offsets are committed to (for lag monitoring).
    #[arg(long, default_value = "parkcast-archive")]
    pub group: String,
    /// Config file (the server's, see serving/config.example.toml: its `[ingest.kafka]` table);
    /// `PARKCAST__INGEST__KAFKA__...` variables override it.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// The archiver's config from the arguments.
fn archive_config(args: &ArchiveArgs, kafka: KafkaConfig) -> ArchiveConfig {
    ArchiveConfig {
        kafka,
        group_id: args.group.clone(),
        flush_rows: args.flush_rows,
        flush_interval: Duration::from_secs_f64(args.flush_seconds.max(0.1)),
        stop_when_idle: args
            .until_idle
            .map(|seconds| Duration::from_secs_f64(seconds.max(0.1))),
        rollup: RollupConfig {
            step_minutes: args.interval,
            lateness_ms: args.lateness_minutes * 60_000,
            silence_ms: args.silence_minutes * 60_000,
            source: archiver::SOURCE.to_owned(),
        },
        fail_after_files: None,
    }
}

pub fn run(args: ArchiveArgs, global: &GlobalArgs) -> Result<()> {
    let mut kafka = load_config::<ServiceConfig>(args.config.as_deref())?
        .ingest
        .kafka;
    args.broker.apply(&mut kafka);
    kafka.validate().context("invalid kafka configuration")?;
    let warehouse = super::args::create_warehouse(&args.warehouse)?;
    if let Some(from) = &args.dimensions_from {
        let source = Warehouse::open(from)
            .with_context(|| format!("failed to open the warehouse at {}", from.display()))?;
        parkcast_archive::dimensions::copy_dimensions(&source, &warehouse)
            .context("failed to copy the dimension tables")?;
    }
    if !warehouse.has_table(Table::DimSlot) {
        bail!(
            "the archive warehouse has no dim_slot: pass --dimensions-from a warehouse with the lots and slots"
        );
    }
    let topology: Vec<(String, Vec<String>)> =
        Topology::read_served(&warehouse)?.into_iter().collect();
    let config = archive_config(&args, kafka);
    let summary = archive_with_spinner(&warehouse, &config, topology, global.quiet)?;
    println!("{}", report::archive_table(&summary));
    Ok(())
}

/// Runs the archiver with a spinner of rows written.
fn archive_with_spinner(
    warehouse: &Warehouse,
    config: &ArchiveConfig,
    topology: Vec<(String, Vec<String>)>,
    quiet: bool,
) -> Result<ArchiveSummary> {
    let bar = crate::progress::bar(quiet, None, "{spinner} archiving: {msg} ({elapsed})");
    let result = archiver::archive(warehouse, config, topology, &mut |totals| {
        bar.set_message(format!(
            "{} messages, {} slot readings, {} occupancy rows",
            report::thousands(totals.messages),
            report::thousands(totals.rows[0]),
            report::thousands(totals.rows[4]),
        ));
    });
    bar.finish_and_clear();
    result.context("archiving failed")
}
