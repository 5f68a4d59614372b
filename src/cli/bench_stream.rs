//! Streaming benchmarks: ingestion end to end through a real broker, restart time (checkpoint +
//! replay vs replay alone), and the whole Melbourne day replayed and archived.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use comfy_table::{Cell, CellAlignment};
use parkcast_archive::replay::{self, Speed};
use parkcast_archive::source::{EventSource, SourceConfig};
use parkcast_kafka::{KafkaConfig, TopicNames, create_topics, now_ms};
use parkcast_serving::ingest::{Ingest, IngestConfig};
use parkcast_serving::metrics::IngestMetrics;
use parkcast_warehouse::rows::LotOccupancyRow;
use parkcast_warehouse::topology::Topology as SourceTopology;
use prometheus_client::registry::Registry;
use prost::Message;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};

use crate::report;
use parkcast_archive::dimensions::copy_dimensions;

/// Fresh topics (`partitions` each) on the broker at `bootstrap`.
fn broker(bootstrap: &str, partitions: i32) -> Result<KafkaConfig> {
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

fn value_row(table: &mut comfy_table::Table, name: &str, value: String) {
    table.add_row(vec![
        Cell::new(name),
        Cell::new(value).set_alignment(CellAlignment::Right),
    ]);
}

fn rate(count: u64, seconds: f64) -> String {
    format!(
        "{}/s",
        report::thousands((count as f64 / seconds.max(1e-9)) as u64)
    )
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

/// Sensor messages of `lots` x `slots` slots, `rounds` readings each, through the broker into live
/// state; then the restart times.
pub fn bench_ingest_kafka(
    bootstrap: &str,
    lots: u32,
    slots: u32,
    rounds: u32,
    partitions: i32,
) -> Result<()> {
    let kafka = broker(bootstrap, partitions)?;
    let topology = Arc::new(super::bench::synthetic_topology(lots, slots)?);
    let start_ms = now_ms() - 3_600_000;
    let total = u64::from(lots) * u64::from(slots) * u64::from(rounds);
    let producer: ThreadedProducer<parkcast_kafka::CountingContext> = kafka
        .producer_config()
        .create_with_context(parkcast_kafka::CountingContext::default())?;
    let produce_started = Instant::now();
    for round in 0..rounds {
        for lot in 0..lots {
            for slot in 0..slots {
                let (lot_id, reading) = super::bench::synthetic_reading(
                    u64::from(lot),
                    u64::from(slot),
                    u64::from(round),
                    round % 4 == 0,
                    start_ms,
                );
                let bytes = reading.encode_to_vec();
                parkcast_kafka::send_with_backpressure(
                    &producer,
                    BaseRecord::to(&kafka.topics.sensor)
                        .key(lot_id.as_bytes())
                        .payload(bytes.as_slice()),
                )?;
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let produce_seconds = produce_started.elapsed().as_secs_f64();

    let state = tempfile::tempdir()?;
    let config = IngestConfig {
        kafka: kafka.clone(),
        group_id: format!("bench-{}", now_ms()),
        state_dir: state.path().to_owned(),
        probe_interval_ms: 100,
        ..IngestConfig::default()
    };
    let metrics = IngestMetrics::register(&mut Registry::default());
    let consume_started = Instant::now();
    let ingest = Ingest::start(config.clone(), Arc::clone(&topology), metrics)?;
    wait_caught_up(&ingest, total, Duration::from_secs(1_800))?;
    let consume_seconds = consume_started.elapsed().as_secs_f64();
    let heap = ingest.with_state(|live, _| live.heap_bytes());
    ingest.stop()?;

    // Restart from the checkpoints the clean stop wrote: nothing left to replay.
    let restart_started = Instant::now();
    let metrics = IngestMetrics::register(&mut Registry::default());
    let restarted = Ingest::start(config.clone(), Arc::clone(&topology), metrics)?;
    wait_caught_up(&restarted, 0, Duration::from_secs(600))?;
    let restart_seconds = restart_started.elapsed().as_secs_f64();
    restarted.stop()?;
    // Replay alone: a new group with no checkpoints reads the whole topic again.
    let replay_state = tempfile::tempdir()?;
    let replay_config = IngestConfig {
        group_id: format!("bench-replay-{}", now_ms()),
        state_dir: replay_state.path().to_owned(),
        ..config
    };
    let replay_started = Instant::now();
    let metrics = IngestMetrics::register(&mut Registry::default());
    let replaying = Ingest::start(replay_config, Arc::clone(&topology), metrics)?;
    wait_caught_up(&replaying, total, Duration::from_secs(1_800))?;
    let replay_seconds = replay_started.elapsed().as_secs_f64();
    replaying.stop()?;

    let mut table = report::new_table(&["measure", "value"]);
    value_row(&mut table, "broker", bootstrap.to_owned());
    value_row(
        &mut table,
        "slots / partitions",
        format!(
            "{} / {partitions}",
            report::thousands(topology.slot_count() as u64)
        ),
    );
    value_row(&mut table, "messages", report::thousands(total));
    value_row(&mut table, "produce", rate(total, produce_seconds));
    value_row(
        &mut table,
        "consume + decode + validate + apply (end to end)",
        rate(total, consume_seconds),
    );
    value_row(&mut table, "live state heap", report::bytes(heap as u64));
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
    println!("{table}");
    Ok(())
}

/// The whole Melbourne day: replayed at full speed, archived, and its rolled-up occupancy compared
/// with the import's (derived from the stays directly).
pub fn bench_melbourne(bootstrap: &str, partitions: i32) -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let imported = parkcast_training::datasets::melbourne_day(&scratch.path().join("import"))
        .context("failed to import the Melbourne day")?;
    let kafka = broker(bootstrap, partitions)?;
    let source = EventSource::new(
        &imported,
        SourceConfig {
            heartbeat_minutes: Some(15),
            ..SourceConfig::default()
        },
    )?;
    let replay_started = Instant::now();
    let stats = replay::replay(&kafka, source, Speed::Unlimited, &mut |_| {})?;
    let replay_seconds = replay_started.elapsed().as_secs_f64();

    let archive = super::create_warehouse(&scratch.path().join("archive"))?;
    copy_dimensions(&imported, &archive)?;
    let topology: Vec<_> = SourceTopology::read(&archive)?.pairs().collect();
    let args = super::archive::ArchiveArgs {
        warehouse: archive.root().to_owned(),
        dimensions_from: None,
        until_idle: Some(3.0),
        flush_seconds: 30.0,
        flush_rows: 500_000,
        interval: 15,
        lateness_minutes: 60,
        silence_minutes: 180,
        group: format!("bench-archive-{}", now_ms()),
        config: None,
        broker: super::BrokerArgs::default(),
    };
    let config = super::archive::archive_config(&args, kafka);
    let archive_started = Instant::now();
    let summary = parkcast_archive::archiver::archive(&archive, &config, topology, &mut |_| {})?;
    // The idle wait is not work.
    let archive_seconds = archive_started.elapsed().as_secs_f64() - 3.0;

    let expected: Vec<LotOccupancyRow> = imported.read_rows()?;
    let archived: Vec<LotOccupancyRow> = archive.read_rows()?;
    let expected: std::collections::HashMap<(String, i64), (i32, i32)> = expected
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

    println!("{}", crate::report::archive_table(&summary));
    let mut table = report::new_table(&["Melbourne day", "value"]);
    value_row(
        &mut table,
        "messages replayed",
        report::thousands(stats.total()),
    );
    value_row(
        &mut table,
        "replay (produce, full speed)",
        format!(
            "{replay_seconds:.1} s, {}",
            rate(stats.total(), replay_seconds)
        ),
    );
    value_row(
        &mut table,
        "archive (consume, write Parquet, roll up)",
        format!(
            "{archive_seconds:.1} s, {}",
            rate(summary.totals.messages, archive_seconds)
        ),
    );
    value_row(
        &mut table,
        "occupancy rows equal to the import's",
        format!(
            "{} of {} archived ({} in the import)",
            report::thousands(matching as u64),
            report::thousands(archived.len() as u64),
            report::thousands(expected.len() as u64)
        ),
    );
    println!("{table}");
    if matching != archived.len() {
        bail!(
            "{} archived occupancy rows differ from the import",
            archived.len() - matching
        );
    }
    Ok(())
}
