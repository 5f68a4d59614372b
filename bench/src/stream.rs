//! Streaming benchmarks through a real broker: ingestion end to end, restart time (checkpoints vs
//! replaying the topic alone), and the whole Melbourne day replayed and archived.
//!
//! Both need a broker with room for the volume: the embedded broker keeps about 5 MiB per
//! partition, too little here (`scripts/test.sh` shows how to start noida-db).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use parkcast_archive::archiver::{self, ArchiveConfig, ArchiveSummary};
use parkcast_archive::dimensions::copy_dimensions;
use parkcast_archive::replay::{self, Speed};
use parkcast_archive::rollup::RollupConfig;
use parkcast_archive::source::{EventSource, SourceConfig};
use parkcast_kafka::{CountingContext, KafkaConfig, TopicNames, create_topics, now_ms};
use parkcast_serving::ingest::{Ingest, IngestConfig};
use parkcast_serving::metrics::IngestMetrics;
use parkcast_warehouse::Warehouse;
use parkcast_warehouse::rows::LotOccupancyRow;
use parkcast_warehouse::topology::Topology as SourceTopology;
use prometheus_client::registry::Registry;
use prost::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use crate::table::{bytes, new_table, per_second, thousands, value_row};
use crate::{Error, Report, synthetic};

/// Sensor messages of a synthetic city through a broker into live state.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct IngestKafkaOptions {
    /// Brokers (`host:port,...`).
    #[arg(long, env = "PARKCAST_KAFKA_BOOTSTRAP")]
    pub bootstrap: String,
    /// Lots.
    #[arg(long, default_value_t = 200)]
    pub lots: u32,
    /// Slots per lot.
    #[arg(long, default_value_t = 500)]
    pub slots: u32,
    /// Readings per slot.
    #[arg(long, default_value_t = 20)]
    pub rounds: u32,
    /// Partitions of each fresh topic.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
}

/// The Melbourne day replayed and archived.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct MelbourneOptions {
    /// Brokers (`host:port,...`).
    #[arg(long, env = "PARKCAST_KAFKA_BOOTSTRAP")]
    pub bootstrap: String,
    /// Partitions of each fresh topic.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
}

/// What the Melbourne benchmark found. A difference from the import is a finding to print with the
/// figures, so it is counted here, and the caller decides whether it fails the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MelbourneReport {
    /// The archiver's own summary, as `parkcast archive` prints it.
    pub archive: ArchiveSummary,
    /// Replay and archive throughput, and the comparison with the import.
    pub report: Report,
    /// Archived occupancy rows that differ from the import's (0 when the archive is right).
    pub differing_rows: usize,
}

/// Produces `rounds` readings of every slot, consumes them end to end, then restarts twice: from
/// the checkpoints the clean stop wrote, and as a new group replaying the topic alone.
pub fn ingest_kafka(options: &IngestKafkaOptions) -> Result<Report, Error> {
    let IngestKafkaOptions {
        ref bootstrap,
        lots,
        slots,
        rounds,
        partitions,
    } = *options;
    let kafka = fresh_topics(bootstrap, partitions)?;
    let topology = Arc::new(synthetic::topology(lots, slots)?);
    let start_ms = now_ms() - 3_600_000;
    let total = u64::from(lots) * u64::from(slots) * u64::from(rounds);
    let producer: ThreadedProducer<CountingContext> = kafka
        .producer_config()
        .create_with_context(CountingContext::default())
        .context("failed to create the Kafka producer")?;
    let produce_started = Instant::now();
    for round in 0..rounds {
        for lot in 0..lots {
            for slot in 0..slots {
                let (lot_id, reading) = synthetic::reading(
                    u64::from(lot),
                    u64::from(slot),
                    u64::from(round),
                    round % 4 == 0,
                    start_ms,
                );
                let payload = reading.encode_to_vec();
                parkcast_kafka::send_with_backpressure(
                    &producer,
                    BaseRecord::to(&kafka.topics.sensor)
                        .key(lot_id.as_bytes())
                        .payload(payload.as_slice()),
                )
                .context("failed to produce a sensor reading")?;
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .context("the broker did not take every reading")?;
    let produce_seconds = produce_started.elapsed().as_secs_f64();

    let state = tempfile::tempdir().context("failed to create a checkpoint folder")?;
    let config = IngestConfig {
        kafka: kafka.clone(),
        group_id: format!("bench-{}", now_ms()),
        state_dir: state.path().to_owned(),
        probe_interval_ms: 100,
        ..IngestConfig::default()
    };
    let consume_started = Instant::now();
    let ingest = start_ingest(config.clone(), &topology)?;
    wait_caught_up(&ingest, total, Duration::from_secs(1_800))?;
    let consume_seconds = consume_started.elapsed().as_secs_f64();
    let heap = ingest.with_state(|live, _| live.heap_bytes());
    ingest.stop().context("ingestion failed")?;

    // Restart from the checkpoints the clean stop wrote: nothing left to replay.
    let restart_started = Instant::now();
    let restarted = start_ingest(config.clone(), &topology)?;
    wait_caught_up(&restarted, 0, Duration::from_secs(600))?;
    let restart_seconds = restart_started.elapsed().as_secs_f64();
    restarted
        .stop()
        .context("ingestion failed after the restart")?;
    // Replay alone: a new group with no checkpoints reads the whole topic again.
    let replay_state = tempfile::tempdir().context("failed to create a checkpoint folder")?;
    let replay_config = IngestConfig {
        group_id: format!("bench-replay-{}", now_ms()),
        state_dir: replay_state.path().to_owned(),
        ..config
    };
    let replay_started = Instant::now();
    let replaying = start_ingest(replay_config, &topology)?;
    wait_caught_up(&replaying, total, Duration::from_secs(1_800))?;
    let replay_seconds = replay_started.elapsed().as_secs_f64();
    replaying
        .stop()
        .context("ingestion failed while replaying")?;

    let mut table = new_table(&["measure", "value"]);
    let slots_and_partitions =
        format!("{} / {partitions}", thousands(topology.slot_count() as u64));
    value_row(&mut table, "broker", bootstrap.clone());
    value_row(&mut table, "slots / partitions", slots_and_partitions);
    value_row(&mut table, "messages", thousands(total));
    value_row(&mut table, "produce", per_second(total, produce_seconds));
    value_row(
        &mut table,
        "consume + decode + validate + apply (end to end)",
        per_second(total, consume_seconds),
    );
    value_row(&mut table, "live state heap", bytes(heap as u64));
    value_row(
        &mut table,
        "restart from checkpoints to caught up",
        format!("{restart_seconds:.2} s"),
    );
    value_row(
        &mut table,
        "restart by replaying the topic alone",
        format!("{replay_seconds:.2} s"),
    );
    let mut report = Report::new();
    report.push(table);
    Ok(report)
}

/// The whole Melbourne day: replayed at full speed, archived, and its rolled-up occupancy compared
/// with the import's (derived from the stays directly).
pub fn melbourne(options: &MelbourneOptions) -> Result<MelbourneReport, Error> {
    let scratch = tempfile::tempdir().context("failed to create a scratch folder")?;
    let imported = parkcast_training::datasets::melbourne_day(&scratch.path().join("import"))
        .context("failed to import the Melbourne day")?;
    let kafka = fresh_topics(&options.bootstrap, options.partitions)?;
    let source = EventSource::new(
        &imported,
        SourceConfig {
            heartbeat_minutes: Some(15),
            ..SourceConfig::default()
        },
    )
    .context("failed to read the Melbourne day's events")?;
    let replay_started = Instant::now();
    let stats = replay::replay(&kafka, source, Speed::Unlimited, &mut |_| {})
        .context("failed to replay the Melbourne day")?;
    let replay_seconds = replay_started.elapsed().as_secs_f64();

    let archive_path = scratch.path().join("archive");
    let archive = Warehouse::create(&archive_path).with_context(|| {
        format!(
            "failed to create the warehouse at {}",
            archive_path.display()
        )
    })?;
    copy_dimensions(&imported, &archive).context("failed to copy the dimension tables")?;
    let topology: Vec<_> = SourceTopology::read(&archive)
        .context("failed to read dim_slot")?
        .pairs()
        .collect();
    let idle = Duration::from_secs(3);
    let config = archive_config(kafka, idle);
    let archive_started = Instant::now();
    let summary =
        archiver::archive(&archive, &config, topology, &mut |_| {}).context("archiving failed")?;
    // The idle wait is not work.
    let archive_seconds = archive_started.elapsed().as_secs_f64() - idle.as_secs_f64();

    let expected: Vec<LotOccupancyRow> = imported
        .read_rows()
        .context("failed to read the import's occupancy")?;
    let archived: Vec<LotOccupancyRow> = archive
        .read_rows()
        .context("failed to read the archived occupancy")?;
    let expected: HashMap<(String, i64), (i32, i32)> = expected
        .into_iter()
        .map(|row| {
            (
                (row.lot_id, row.ts.timestamp_millis()),
                (row.occupied, row.capacity),
            )
        })
        .collect();
    let matching = archived
        .iter()
        .filter(|row| {
            expected.get(&(row.lot_id.clone(), row.ts.timestamp_millis()))
                == Some(&(row.occupied, row.capacity))
        })
        .count();

    let mut table = new_table(&["Melbourne day", "value"]);
    value_row(&mut table, "messages replayed", thousands(stats.total()));
    value_row(
        &mut table,
        "replay (produce, full speed)",
        format!(
            "{replay_seconds:.1} s, {}",
            per_second(stats.total(), replay_seconds)
        ),
    );
    value_row(
        &mut table,
        "archive (consume, write Parquet, roll up)",
        format!(
            "{archive_seconds:.1} s, {}",
            per_second(summary.totals.messages, archive_seconds)
        ),
    );
    value_row(
        &mut table,
        "occupancy rows equal to the import's",
        format!(
            "{} of {} archived ({} in the import)",
            thousands(matching as u64),
            thousands(archived.len() as u64),
            thousands(expected.len() as u64)
        ),
    );
    let mut report = Report::new();
    report.push(table);
    Ok(MelbourneReport {
        archive: summary,
        report,
        differing_rows: archived.len() - matching,
    })
}

/// The archiver as `parkcast archive --until-idle` runs it by default (15-minute grid, an hour of
/// lateness, three hours of silence), in a group of its own, stopping after `idle` without a
/// message.
fn archive_config(kafka: KafkaConfig, idle: Duration) -> ArchiveConfig {
    ArchiveConfig {
        kafka,
        group_id: format!("bench-archive-{}", now_ms()),
        flush_rows: 500_000,
        flush_interval: Duration::from_secs(30),
        stop_when_idle: Some(idle),
        rollup: RollupConfig {
            step_minutes: 15,
            lateness_ms: 60 * 60_000,
            silence_ms: 180 * 60_000,
            source: archiver::SOURCE.to_owned(),
        },
        fail_after_files: None,
    }
}

/// Fresh topics (`partitions` each) on the broker at `bootstrap`.
fn fresh_topics(bootstrap: &str, partitions: i32) -> Result<KafkaConfig> {
    let kafka = KafkaConfig {
        bootstrap_servers: bootstrap.to_owned(),
        topics: TopicNames::with_prefix(&format!("bench-{}", now_ms())),
        ..KafkaConfig::default()
    };
    create_topics(
        &kafka,
        &kafka.topics.all(),
        partitions,
        Duration::from_secs(30),
    )
    .context("failed to create the benchmark topics")?;
    Ok(kafka)
}

/// Starts ingestion with metrics of its own (each run counts from zero).
fn start_ingest(
    config: IngestConfig,
    topology: &Arc<parkcast_serving::topology::TopologyIndex>,
) -> Result<Ingest> {
    let metrics = IngestMetrics::register(&mut Registry::default());
    Ingest::start(config, Arc::clone(topology), metrics).context("failed to start ingestion")
}

/// Waits (with a deadline) until `ingest` has read everything it owns.
fn wait_caught_up(ingest: &Ingest, expected: u64, deadline: Duration) -> Result<()> {
    let started = Instant::now();
    let mut idle_since: Option<Instant> = None;
    loop {
        let status = ingest.status();
        let handled = ingest.metrics().handled();
        if handled >= expected && status.lag == Some(0) {
            return Ok(());
        }
        if ingest.is_finished() {
            bail!("ingestion stopped early");
        }
        // Nothing left to read, yet messages missing: the broker dropped them.
        if status.lag == Some(0) && status.assigned_partitions > 0 {
            if idle_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(5) {
                bail!(
                    "read everything the broker holds, but only {handled} of {expected} messages: \
                     the broker dropped some (the embedded broker keeps about 5 MiB per partition; \
                     use --bootstrap for large runs)"
                );
            }
        } else {
            idle_since = None;
        }
        if started.elapsed() > deadline {
            bail!(
                "not caught up after {deadline:?}: handled {handled} of {expected}, lag {:?}",
                status.lag
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
