//! `parkcast replay`: a warehouse's events (a simulated city, or the real Melbourne day) into the
//! Kafka topics, in real time or accelerated.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use parkcast_archive::replay::{self, ReplayStats, Speed};
use parkcast_archive::source::{EventSource, SourceConfig};
use parkcast_kafka::{KafkaConfig, create_topics};
use parkcast_warehouse::Warehouse;

use super::GlobalArgs;
use super::args::BrokerArgs;
use crate::report;
use parkcast_serving::config::ServiceConfig;
use parkcast_serving::config::load_config;

/// Arguments of `parkcast replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Warehouse to replay (from `parkcast simulate`, or any import with slot readings).
    #[arg(
        long,
        conflicts_with = "melbourne",
        required_unless_present = "melbourne"
    )]
    pub from: Option<PathBuf>,
    /// Replay the real Melbourne day (12 June 2014, 4,544 bays): imported into `--scratch` first,
    /// its stays turned into per-bay status changes with a heartbeat every 15 minutes.
    #[arg(long)]
    pub melbourne: bool,
    /// Where `--melbourne` imports the day.
    #[arg(long, default_value = "out/melbourne-replay")]
    pub scratch: PathBuf,
    /// Speed: `1` is real time, `60` an hour per minute, `max` as fast as the broker takes it.
    #[arg(long, default_value = "max", value_parser = parse_speed)]
    pub speed: SpeedArg,
    /// Synthesize a heartbeat per slot every this many minutes (for sources without heartbeats;
    /// `--melbourne` sets 15).
    #[arg(long)]
    pub heartbeat_minutes: Option<u32>,
    /// Replay only these lots (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    pub lots: Vec<String>,
    /// Replay the first this many lots (by id) only.
    #[arg(long)]
    pub max_lots: Option<usize>,
    /// Replay events from this instant on (RFC 3339, e.g. 2025-11-30T00:00:00Z).
    #[arg(long)]
    pub start: Option<chrono::DateTime<chrono::Utc>>,
    /// Config file (the server's, see serving/config.example.toml: its `[ingest.kafka]` table);
    /// `PARKCAST__INGEST__KAFKA__...` variables override it.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Create the topics first with this many partitions each (existing topics are left alone).
    #[arg(long)]
    pub create_topics: Option<i32>,
}

/// `--speed`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeedArg(pub Speed);

fn parse_speed(text: &str) -> Result<SpeedArg, String> {
    if text == "max" {
        return Ok(SpeedArg(Speed::Unlimited));
    }
    let factor: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is neither `max` nor a number"))?;
    if !(factor.is_finite() && factor > 0.0) {
        return Err(format!("speed must be positive, got {factor}"));
    }
    Ok(SpeedArg(Speed::Factor(factor)))
}

pub fn run(args: ReplayArgs, global: &GlobalArgs) -> Result<()> {
    let mut kafka = load_config::<ServiceConfig>(args.config.as_deref())?
        .ingest
        .kafka;
    args.broker.apply(&mut kafka);
    kafka.validate().context("invalid kafka configuration")?;
    let (warehouse, heartbeat_minutes) = if args.melbourne {
        (
            parkcast_training::datasets::melbourne_day(&args.scratch)
                .context("failed to import the Melbourne day")?,
            Some(args.heartbeat_minutes.unwrap_or(15)),
        )
    } else {
        let path = args.from.as_ref().context("--from or --melbourne")?;
        (
            Warehouse::open(path)
                .with_context(|| format!("failed to open the warehouse at {}", path.display()))?,
            args.heartbeat_minutes,
        )
    };
    let mut lots: Option<BTreeSet<String>> =
        (!args.lots.is_empty()).then(|| args.lots.iter().cloned().collect());
    if let Some(max_lots) = args.max_lots {
        let topology = parkcast_warehouse::topology::Topology::read(&warehouse)?;
        let first: BTreeSet<String> = topology
            .lots()
            .iter()
            .map(|lot| lot.lot_id.clone())
            .filter(|lot| lots.as_ref().is_none_or(|wanted| wanted.contains(lot)))
            .take(max_lots)
            .collect();
        lots = Some(first);
    }
    let source = EventSource::new(
        &warehouse,
        SourceConfig {
            heartbeat_minutes,
            lots,
            start_ms: args.start.map(|start| start.timestamp_millis()),
            ..SourceConfig::default()
        },
    )
    .context("failed to read the events to replay")?;
    if source.topology().lots().is_empty() {
        bail!("nothing to replay: the warehouse has no slots");
    }
    if let Some(partitions) = args.create_topics {
        create_topics(
            &kafka,
            &kafka.topics.all(),
            partitions,
            Duration::from_secs(30),
        )
        .context("failed to create the topics")?;
    }
    let total = source.total_hint().ok();
    let summary = replay_with_bar(&kafka, source, args.speed.0, total, global.quiet)?;
    print_summary(&summary, &kafka);
    Ok(())
}

/// Replays with a progress bar showing the event clock and the rate.
fn replay_with_bar(
    kafka: &KafkaConfig,
    source: EventSource,
    speed: Speed,
    total: Option<u64>,
    quiet: bool,
) -> Result<ReplayStats> {
    let bar = crate::progress::bar(
        quiet,
        total,
        "{spinner} replaying [{bar:30}] {human_pos}/{human_len} {per_sec} event time {msg}",
    );
    tracing::info!(bootstrap = %kafka.bootstrap_servers, ?speed, "replaying");
    let result = replay::replay(kafka, source, speed, &mut |stats| {
        bar.set_position(stats.total());
        if let Some((_, last)) = stats.event_time_range
            && let Some(time) = chrono::DateTime::from_timestamp_millis(last)
        {
            bar.set_message(time.format("%Y-%m-%d %H:%M UTC").to_string());
        }
    });
    bar.finish_and_clear();
    result.context("replay failed")
}

fn print_summary(stats: &ReplayStats, kafka: &KafkaConfig) {
    let mut table = report::new_table(&["topic", "messages"]);
    for (topic, count) in kafka.topics.inputs().iter().zip(stats.messages) {
        table.add_row(vec![(*topic).to_owned(), report::thousands(count)]);
    }
    table.add_row(vec!["total".to_owned(), report::thousands(stats.total())]);
    table.add_row(vec!["payload".to_owned(), report::bytes(stats.bytes)]);
    if let Some((first, last)) = stats.event_time_range {
        let format = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms).map_or_else(
                || ms.to_string(),
                |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
            )
        };
        table.add_row(vec![
            "event time (UTC)".to_owned(),
            format!("{} .. {}", format(first), format(last)),
        ]);
    }
    table.add_row(vec![
        "wall time".to_owned(),
        format!("{:.1} s", stats.elapsed.as_secs_f64()),
    ]);
    table.add_row(vec![
        "rate".to_owned(),
        format!("{} msg/s", report::thousands(stats.rate() as u64)),
    ]);
    println!("{table}");
}
