//! `parkcast ingest`: the live consumer on its own (sensor and session topics into live state),
//! with Prometheus metrics, until Ctrl-C or, with `--until-caught-up`, until it has read everything.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use parkcast_serving::ingest::Ingest;
use parkcast_serving::metrics::{self, IngestMetrics};
use prometheus_client::registry::Registry;

use super::GlobalArgs;
use super::LiveArgs;
use crate::report;

/// Arguments of `parkcast ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub live: LiveArgs,
    /// Serve Prometheus metrics at `http://ADDRESS/metrics`.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    /// Stop (cleanly, with a checkpoint) once every owned partition is read to its end.
    #[arg(long)]
    pub until_caught_up: bool,
    /// On stop, write every owned lot's picture as JSON here (at the newest event time).
    #[arg(long)]
    pub dump_state: Option<PathBuf>,
}

pub fn run(args: IngestArgs, _global: &GlobalArgs) -> Result<()> {
    let (config, topology) = args.live.load_with(|_| {})?;
    let config = config.ingest;
    tracing::info!(
        lots = topology.lots().len(),
        slots = topology.slot_count(),
        bootstrap = %config.kafka.bootstrap_servers,
        group = %config.group_id,
        "starting ingestion"
    );
    let mut registry = Registry::default();
    let ingest_metrics = IngestMetrics::register(&mut registry);
    let registry = Arc::new(Mutex::new(registry));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let started = Instant::now();
    let (ingest, stats) = runtime.block_on(async {
        let (bound, _server) = metrics::serve(args.metrics_addr, Arc::clone(&registry))
            .await
            .with_context(|| format!("failed to serve metrics on {}", args.metrics_addr))?;
        tracing::info!(address = %bound, "metrics at http://{bound}/metrics");
        let config = config.clone();
        let ingest = tokio::task::spawn_blocking(move || {
            Ingest::start(config, topology, ingest_metrics)
        })
        .await
        .context("the start task failed")?
        .context("failed to start ingestion")?;
        // Check often (for --until-caught-up), log every 5 s.
        let mut ticker = tokio::time::interval(Duration::from_millis(200));
        let mut last_log = Instant::now();
        let mut last_handled = 0;
        let mut caught_up_since: Option<Instant> = None;
        // SIGTERM is how service managers and Kubernetes stop a process: stop cleanly on it too.
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("failed to listen for SIGTERM")?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {
                    tracing::info!("stopping on Ctrl-C");
                    break;
                }
                _ = terminate.recv() => {
                    tracing::info!("stopping on SIGTERM");
                    break;
                }
                _ = ticker.tick() => {
                    let status = ingest.status();
                    let handled = ingest.metrics().handled();
                    if last_log.elapsed() >= Duration::from_secs(5) {
                        tracing::info!(
                            handled,
                            per_second = (handled - last_handled) as f64 / last_log.elapsed().as_secs_f64(),
                            lag = ?status.lag,
                            partitions = status.assigned_partitions,
                            stale = status.stale,
                            "ingesting"
                        );
                        last_handled = handled;
                        last_log = Instant::now();
                    }
                    if ingest.is_finished() {
                        break;
                    }
                    // Caught up for a second (several probes): nothing more is waiting.
                    if args.until_caught_up && status.assigned_partitions > 0 && status.lag == Some(0) {
                        let since = *caught_up_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= Duration::from_secs(1) {
                            break;
                        }
                    } else {
                        caught_up_since = None;
                    }
                }
            }
        }
        let snapshots = ingest.lot_snapshots(None);
        let handled = ingest.metrics().handled();
        Ok::<_, anyhow::Error>((ingest, (snapshots, handled)))
    })?;
    let (snapshots, handled) = stats;
    let summary = ingest.stop().context("ingestion stopped with an error")?;
    if let Some(path) = &args.dump_state {
        std::fs::write(path, serde_json::to_string_pretty(&snapshots)? + "\n")
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    let text = metrics::render(
        &registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let mut table = report::new_table(&["measure", "value"]);
    table.add_row(vec![
        "messages handled".to_owned(),
        report::thousands(handled),
    ]);
    table.add_row(vec![
        "dead letters delivered".to_owned(),
        report::thousands(summary.deadletters_delivered),
    ]);
    table.add_row(vec![
        "lots owned at stop".to_owned(),
        snapshots.len().to_string(),
    ]);
    table.add_row(vec!["occupied / free / unknown slots".to_owned(), {
        let (occupied, free, unknown) = snapshots.values().fold((0, 0, 0), |acc, lot| {
            (acc.0 + lot.occupied, acc.1 + lot.free, acc.2 + lot.unknown)
        });
        format!("{occupied} / {free} / {unknown}")
    }]);
    table.add_row(vec![
        "wall time".to_owned(),
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    ]);
    println!("{table}");
    let rejected: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("parkcast_ingest_rejected_total") && !line.ends_with(" 0"))
        .collect();
    if !rejected.is_empty() {
        println!("dead-lettered by reason:\n  {}", rejected.join("\n  "));
    }
    Ok(())
}
